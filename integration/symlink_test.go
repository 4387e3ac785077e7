package integration

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/regfs/regfs/internal/fixture"
	"github.com/regfs/regfs/internal/testenv"
)

// TestSymlinkTargets checks that symlinks are served as stored, and that
// with --rebase-symlinks an absolute target points into the same rootfs/ on
// the host, so that a plain tool following it reads the image's file.
func TestSymlinkTargets(t *testing.T) {
	srv := testenv.InProcessRegistry(t)
	set, err := fixture.Features(fixture.FeatureOptions{LargeSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := set.Push(context.Background(), srv.DirectHost()); err != nil {
		t.Fatal(err)
	}
	rootfs := []string{fixture.FeaturesOCIRepo, fixture.FeaturesTag, "linux", "arm64", "v8", "rootfs"}
	tool := "#!/bin/sh\necho tool\n"

	for _, tc := range []struct {
		rebase bool
		link   string
		want   func(root string) string
	}{
		{false, "bin/abs", func(string) string { return "/usr/bin/tool" }},
		{false, "bin/rel", func(string) string { return "../usr/bin/tool" }},
		{true, "bin/abs", func(root string) string { return filepath.Join(root, "usr/bin/tool") }},
		{true, "bin/rel", func(string) string { return "../usr/bin/tool" }},
		{true, "bin/dangling", func(root string) string { return filepath.Join(root, "nonexistent/target") }},
	} {
		m := mountRegfs(t, mountConfig{registry: srv.Host(), rebase: tc.rebase})
		root := m.path(rootfs...)
		p := filepath.Join(root, tc.link)
		got, err := os.Readlink(p)
		if err != nil {
			t.Fatal(err)
		}
		if want := tc.want(root); got != want {
			t.Errorf("rebase=%v: readlink %s = %q, want %q", tc.rebase, tc.link, got, want)
		}
		st, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() != int64(len(got)) {
			t.Errorf("rebase=%v: lstat %s size %d, want len(target) %d", tc.rebase, tc.link, st.Size(), len(got))
		}
		if tc.rebase && tc.link != "bin/dangling" {
			if b := readFile(t, p); b != tool {
				t.Errorf("rebase: reading through %s gave %q, want the image's %q", tc.link, b, tool)
			}
		}
		m.unmount(t)
	}
}
