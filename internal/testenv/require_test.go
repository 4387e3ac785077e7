package testenv

import (
	"fmt"
	"testing"
)

// fakeTB records skips and failures instead of stopping the goroutine.
type fakeTB struct {
	testing.TB
	skipped, failed bool
	msg             string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Skipf(format string, args ...any) {
	f.skipped, f.msg = true, fmt.Sprintf(format, args...)
}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed, f.msg = true, fmt.Sprintf(format, args...)
}

func TestRequireBinarySkipOrFail(t *testing.T) {
	tests := []struct {
		env                string
		wantSkip, wantFail bool
	}{
		{"", true, false},
		{"0", true, false},
		{"1", false, true},
	}
	for _, tt := range tests {
		t.Run("env="+tt.env, func(t *testing.T) {
			t.Setenv(EnvRequire, tt.env)
			f := &fakeTB{TB: t}
			if p := RequireBinary(f, "regfs-no-such-binary"); p != "" {
				t.Errorf("RequireBinary = %q, want empty", p)
			}
			if f.skipped != tt.wantSkip || f.failed != tt.wantFail {
				t.Errorf("skipped=%v failed=%v, want %v %v (msg %q)", f.skipped, f.failed, tt.wantSkip, tt.wantFail, f.msg)
			}
		})
	}
}

func TestRequireBinaryFound(t *testing.T) {
	f := &fakeTB{TB: t}
	if p := RequireBinary(f, "sh"); p == "" || f.skipped || f.failed {
		t.Errorf("RequireBinary(sh) = %q, skipped=%v failed=%v", p, f.skipped, f.failed)
	}
}

func TestRegistryBinaryEnv(t *testing.T) {
	t.Setenv(EnvRegistry, "/opt/custom/registry")
	if got, want := RegistryBinary(), "/opt/custom/registry"; got != want {
		t.Errorf("RegistryBinary() = %q, want %q", got, want)
	}
}

func TestRequireFUSE(t *testing.T) {
	// On this machine either outcome is legitimate; the test checks that the
	// helper does not fail without REGFS_REQUIRE_FUSE=1.
	t.Setenv(EnvRequire, "")
	f := &fakeTB{TB: t}
	RequireFUSE(f)
	if f.failed {
		t.Errorf("RequireFUSE failed without %s=1: %s", EnvRequire, f.msg)
	}
}
