package cache

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies keeps the cache free of HTTP and FUSE code (see DESIGN.md, section 2).
func TestDependencies(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not found")
	}
	out, err := exec.Command(goBin, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if dep == "net/http" || strings.HasPrefix(dep, "github.com/hanwen/go-fuse") {
			t.Errorf("cache depends on %s", dep)
		}
	}
}
