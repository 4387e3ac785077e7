package integration

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/regfs/regfs/internal/fixture"
	"github.com/regfs/regfs/internal/testenv"
)

// crashStart runs `regfs mount --registry host --cache-dir cacheDir mnt` and
// waits until mnt is mounted.
func crashStart(t *testing.T, host, cacheDir, mnt string) *exec.Cmd {
	t.Helper()
	out := &syncBuffer{}
	cmd := exec.Command(cliBinary(t), "mount", "--registry", host, "--cache-dir", cacheDir, "--timeout", "5s", mnt)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		cliDetach(mnt)
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, ok := cliMountEntry(mnt); ok {
			var st syscall.Statfs_t
			if syscall.Statfs(mnt, &st) == nil {
				return cmd
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not mounted after 20 s:\n%s", mnt, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCrashDuringReads kills the daemon with SIGKILL in the middle of reading
// a large file, then mounts again on the same (now stale) mount point with the
// same cache: the file reads back byte for byte, whatever the crash left in
// the cache.
func TestCrashDuringReads(t *testing.T) {
	testenv.RequireFUSE(t)
	const size, seed = 24 << 20, 3
	srv := testenv.InProcessRegistry(t)
	set, err := fixture.Features(fixture.FeatureOptions{LargeSize: size, Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	if err := set.Push(context.Background(), srv.DirectHost()); err != nil {
		t.Fatal(err)
	}
	cacheDir, mnt := cliDirs(t)
	big := filepath.Join(mnt, fixture.FeaturesOCIRepo, fixture.FeaturesTag, "linux", "amd64", "rootfs", "usr", "share", "big.bin")

	first := crashStart(t, srv.Host(), cacheDir, mnt)
	f, err := os.Open(big)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	if _, err := io.ReadFull(f, buf); err != nil {
		t.Fatal(err)
	}
	// Kill it while a reader is in the middle of the file.
	readErr := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, f)
		readErr <- err
	}()
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	first.Wait()
	select {
	case <-readErr:
	case <-time.After(10 * time.Second):
		t.Fatal("a reader of the killed mount hangs")
	}
	f.Close()

	crashStart(t, srv.Host(), cacheDir, mnt)
	got, err := os.ReadFile(big)
	if err != nil {
		t.Fatalf("read after the crash and a remount: %v", err)
	}
	if !bytes.Equal(got, fixture.GeneratedBytes(seed, size)) {
		t.Fatal("the file read after the crash differs from the image's")
	}
}

// TestAllowOtherMountOptions checks that --allow-other always comes with
// default_permissions (the kernel then enforces the files' modes for other
// users), and that every mount is read-only, nosuid and nodev.
func TestAllowOtherMountOptions(t *testing.T) {
	testenv.RequireFUSE(t)
	cacheDir, mnt := cliDirs(t)
	d := cliStart(t, cacheDir, mnt, "--allow-other")
	d.waitMounted(t)
	e, _ := cliMountEntry(mnt)
	opts := strings.Split(e[3], ",")
	for _, want := range []string{"ro", "nosuid", "nodev", "allow_other", "default_permissions"} {
		if !slices.Contains(opts, want) {
			t.Errorf("mount options %v lack %s", opts, want)
		}
	}
}
