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
  regfs mount [flags] MOUNTPOINT    serve the registry until unmounted or interrupted
  regfs unmount MOUNTPOINT          unmount a regfs mount (also a stale one)
  regfs version                     print the version

Examples:
  regfs mount --demo /mnt/reg                 a built-in sample registry, no network needed
  regfs mount /mnt/reg                        Docker Hub
  ls /mnt/reg/alpine/latest/                  digest  index.json  linux/
  cat /mnt/reg/alpine/latest/linux/arm64/v8/rootfs/etc/os-release
  regfs mount --registry ghcr.io /mnt/reg     names without a host go to ghcr.io
  regfs mount --registry localhost:5000 --cache-size 2GiB /mnt/reg

Run 'regfs mount --help' for the flags of mount.
Exit codes: 0 clean unmount, 1 runtime error, 2 usage error.
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
