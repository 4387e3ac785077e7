package testenv

import (
	"os"
	"os/exec"
	"testing"
)

// EnvRequire is the environment variable that turns skips into failures.
const EnvRequire = "REGFS_REQUIRE_FUSE"

// skip skips t, or fails it when REGFS_REQUIRE_FUSE=1.
func skip(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv(EnvRequire) == "1" {
		t.Fatalf(format+" ("+EnvRequire+"=1)", args...)
		return
	}
	t.Skipf(format, args...)
}

// RequireFUSE skips t unless FUSE mounts can be made: /dev/fuse opens for
// reading and writing, and we are root or fusermount3 is on PATH.
func RequireFUSE(t testing.TB) {
	t.Helper()
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		skip(t, "FUSE unavailable: %v", err)
		return
	}
	f.Close()
	if os.Geteuid() == 0 {
		return
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		skip(t, "FUSE unavailable: not root and no fusermount3: %v", err)
	}
}

// RequireBinary skips t unless the named program is on PATH (or is an
// executable path) and returns its path.
func RequireBinary(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		skip(t, "%s unavailable: %v", name, err)
	}
	return p
}
