// Command regfs mounts a container registry as a read-only file system.
//
//	regfs mount [flags] MOUNTPOINT     serve until unmounted, SIGINT or SIGTERM
//	regfs mount --demo MOUNTPOINT      the same, over a built-in sample registry
//	regfs unmount MOUNTPOINT           unmount (also clears a stale mount)
//	regfs version                      print the version
//
// Exit codes: 0 after a clean unmount, 1 on a runtime error, 2 on a usage error.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

// version is set with -ldflags "-X main.version=…"; else the module's.
var version = ""

const usage = `regfs mounts a container registry as a read-only file system.

Usage:
  regfs mount [flags] MOUNTPOINT    serve the registry until unmounted, SIGINT or SIGTERM
  regfs unmount MOUNTPOINT          unmount a regfs mount (also a stale one)
  regfs version                     print the version
  regfs help                        print this text ('regfs mount --help': the flags of mount)

Examples:
  regfs mount --demo /mnt/reg                 a built-in sample registry, no network needed
  regfs mount /mnt/reg                        Docker Hub
  ls /mnt/reg/alpine/latest/                  digest  index.json  linux
  ls /mnt/reg/alpine/latest/linux/            386  amd64  arm  arm64  ppc64le  riscv64  s390x
  cat /mnt/reg/alpine/latest/linux/arm64/v8/digest
  file /mnt/reg/alpine/latest/linux/arm64/v8/rootfs/bin/busybox
  ls /mnt/reg/alpine/latest@sha256:<hex>/     an image by digest
  ls /mnt/reg/arm64v8/alpine/latest/          a per-architecture repository
  ls /mnt/reg/ghcr.io/org/app/1.0/            any registry, by host
  cat /mnt/reg/.regfs/stats                   the mount's requests, cache hits, bytes
  regfs mount --registry localhost:5000 --cache-size 2GiB /mnt/reg
  regfs mount --mirror mirror.example:5000 /mnt/reg
  regfs mount --rebase-symlinks /mnt/reg      absolute symlinks stay inside the image
  regfs unmount /mnt/reg

A mount whose daemon was killed answers "transport endpoint is not connected":
'regfs unmount MOUNTPOINT' clears it, and 'regfs mount' on it detaches it first.

Exit codes:
  0  a clean unmount (regfs unmount, SIGINT or SIGTERM), or help or version printed
  1  a runtime error: no FUSE, a missing or busy mount point, a locked cache, a failed unmount
  2  a usage error: an unknown command or flag, a bad flag value, no MOUNTPOINT
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one command line and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "mount":
		err = cmdMount(ctx, args[1:], stdout, stderr)
	case "unmount", "umount":
		err = cmdUnmount(args[1:])
	case "version", "--version":
		fmt.Fprintln(stdout, "regfs", buildVersion())
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		err = usageError{fmt.Errorf("unknown command %q", args[0])}
	}
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "regfs: %v\nRun 'regfs help' for usage.\n", err)
		return 2
	default:
		fmt.Fprintf(stderr, "regfs: %v\n", err)
		return 1
	}
}

// buildVersion is the version set at link time, else the module's.
func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}
