package integration

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/regfs/regfs/internal/fixture"
	"github.com/regfs/regfs/internal/testenv"
)

// nonrootUser returns the unprivileged account named by REGFS_TEST_USER
// (.ci/run creates one). Without it the test skips, or fails when
// REGFS_REQUIRE_FUSE=1.
func nonrootUser(t *testing.T) *syscall.Credential {
	t.Helper()
	testenv.RequireFUSE(t)
	name := os.Getenv("REGFS_TEST_USER")
	if name == "" || os.Geteuid() != 0 {
		msg := "set REGFS_TEST_USER to an unprivileged account and run as root to test non-root mounts"
		if os.Getenv("REGFS_REQUIRE_FUSE") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
}

// nonrootBuild builds bin/regfs into dir.
func nonrootBuild(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "regfs")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/regfs")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestNonRootMount mounts as an ordinary user (through fusermount3), lists
// a tag as that user, compares with what root's mount lists, and unmounts
// with `regfs unmount` as that user.
func TestNonRootMount(t *testing.T) {
	cred := nonrootUser(t)
	srv := testenv.InProcessRegistry(t)
	set, err := fixture.Tree()
	if err != nil {
		t.Fatal(err)
	}
	if err := set.Push(context.Background(), srv.DirectHost()); err != nil {
		t.Fatal(err)
	}

	// A directory the user owns: binary, mount point, cache and HOME.
	home, err := os.MkdirTemp("", "regfs-nonroot-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	bin := nonrootBuild(t, home)
	mnt := filepath.Join(home, "mnt")
	for _, d := range []string{mnt, filepath.Join(home, ".cache")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{home, mnt, filepath.Join(home, ".cache"), bin} {
		if err := os.Chown(p, int(cred.Uid), int(cred.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	asUser := func(name string, args ...string) *exec.Cmd {
		c := exec.Command(name, args...)
		c.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		c.Env = []string{"HOME=" + home, "PATH=" + os.Getenv("PATH")}
		c.Dir = home
		return c
	}

	// --allow-other without user_allow_other in /etc/fuse.conf: a clear
	// message and exit 1, before anything is mounted.
	if conf, _ := os.ReadFile("/etc/fuse.conf"); !strings.Contains("\n"+string(conf), "\nuser_allow_other") {
		out, err := asUser(bin, "mount", "--allow-other", "--registry", srv.Host(), mnt).CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "user_allow_other") {
			t.Errorf("--allow-other as a user: %v, output %q; want exit 1 naming user_allow_other", err, out)
		}
	}

	daemon := asUser(bin, "mount", "--registry", srv.Host(), mnt)
	var log strings.Builder
	daemon.Stdout, daemon.Stderr = &log, &log
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- daemon.Wait() }()
	t.Cleanup(func() {
		syscall.Unmount(mnt, syscall.MNT_DETACH)
		daemon.Process.Kill()
	})
	tag := filepath.Join(mnt, fixture.TreeOCIRepo, "latest", "linux")
	deadline := time.Now().Add(10 * time.Second)
	for !isMountpoint(mnt) {
		if time.Now().After(deadline) {
			t.Fatalf("not mounted after 10 s:\n%s", log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}

	out, err := asUser("ls", tag).Output()
	if err != nil {
		t.Fatalf("ls as the user: %v\n%s", err, log.String())
	}
	got := strings.Fields(string(out))
	root := mountRegfs(t, mountConfig{registry: srv.Host()})
	if want := readDir(t, root.path(fixture.TreeOCIRepo, "latest", "linux")); !slices.Equal(got, want) {
		t.Errorf("the user's ls lists %v, root's %v", got, want)
	}
	if _, err := os.Stat(filepath.Join(home, ".cache", "regfs")); err != nil {
		t.Errorf("the cache did not follow the user's HOME: %v", err)
	}

	if out, err := asUser(bin, "unmount", mnt).CombinedOutput(); err != nil {
		t.Fatalf("regfs unmount as the user: %v\n%s", err, out)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("daemon exited with %v after unmount, want 0:\n%s", err, log.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("daemon still running 10 s after unmount:\n%s", log.String())
	}
	if isMountpoint(mnt) {
		t.Errorf("%s still mounted", mnt)
	}
}

// isMountpoint reports whether dir is a mount point.
func isMountpoint(dir string) bool {
	_, ok := cliMountEntry(dir)
	return ok
}
