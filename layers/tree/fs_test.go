package tree

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"io/fs"
	"testing"
	"testing/fstest"
)

// file returns a regular file entry holding data, and data for the content table.
func file(name, data string) (Entry, []byte) {
	e := reg(name)
	e.Size = int64(len(data))
	return e, []byte(data)
}

func fsFixture(t *testing.T) (*Tree, ContentFunc) {
	t.Helper()
	var layers [][]Entry
	var data [][][]byte
	add := func(entries ...any) {
		var l []Entry
		var d [][]byte
		for _, x := range entries {
			switch x := x.(type) {
			case Entry:
				l, d = append(l, x), append(d, nil)
			case [2]any:
				l, d = append(l, x[0].(Entry)), append(d, x[1].([]byte))
			}
		}
		layers, data = append(layers, l), append(data, d)
	}
	f := func(name, s string) [2]any { e, b := file(name, s); return [2]any{e, b} }
	add(dir("etc/"), f("etc/passwd", "root:x:0:0\n"), f("etc/hosts", "lower"), dir("usr/"), dir("usr/bin/"),
		f("usr/bin/sh", "#!elf"), sym("bin", "usr/bin"), dir("tmp/"), f("tmp/gone", "x"))
	add(f("etc/hosts", "upper hosts"), hard("usr/bin/bash", "usr/bin/sh"), sym("etc/abs", "/etc/passwd"),
		sym("etc/up", "../../usr"), Entry{Name: "dev/null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3},
		Entry{Name: "fifo", Typeflag: tar.TypeFifo, Mode: 0o600}, f("empty", ""), reg("tmp/.wh.gone"))
	tr, warns := merge(t, layers...)
	if len(warns) != 0 {
		t.Fatalf("warnings: %v", warns)
	}
	return tr, func(id NodeID, n *Node) (io.ReaderAt, error) {
		return bytes.NewReader(data[n.Layer][n.Entry]), nil
	}
}

func TestFSPassesTestFS(t *testing.T) {
	tr, content := fsFixture(t)
	fsys := tr.FS(content)
	if err := fstest.TestFS(fsys, "etc/passwd", "etc/hosts", "usr/bin/sh", "usr/bin/bash", "bin", "etc/abs", "dev/null", "fifo", "empty", "tmp"); err != nil {
		t.Fatal(err)
	}
}

func TestFSReads(t *testing.T) {
	tr, content := fsFixture(t)
	fsys := tr.FS(content)
	for _, tc := range []struct{ path, want string }{
		{"etc/hosts", "upper hosts"},
		{"bin/bash", "#!elf"},       // through a relative symlinked dir, to a hardlink
		{"etc/abs", "root:x:0:0\n"}, // absolute symlink resolved inside the tree
		{"etc/up/bin/sh", "#!elf"},  // a symlink climbing out of the root is clamped
		{"bin/../etc/hosts", ""},    // invalid path
	} {
		got, err := fs.ReadFile(fsys, tc.path)
		if tc.want == "" {
			if !errors.Is(err, fs.ErrInvalid) {
				t.Errorf("ReadFile(%s) err = %v, want ErrInvalid", tc.path, err)
			}
			continue
		}
		if err != nil || string(got) != tc.want {
			t.Errorf("ReadFile(%s) = %q, %v; want %q", tc.path, got, err, tc.want)
		}
	}
	if _, err := fs.Stat(fsys, "tmp/gone"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("whited-out file: err = %v, want ErrNotExist", err)
	}
	rl := fsys.(fs.ReadLinkFS)
	if target, err := rl.ReadLink("etc/abs"); err != nil || target != "/etc/passwd" {
		t.Errorf("ReadLink = %q, %v", target, err)
	}
	if _, err := rl.ReadLink("etc/passwd"); err == nil {
		t.Error("ReadLink of a regular file succeeded")
	}
	fi, err := rl.Lstat("bin")
	if err != nil || fi.Mode().Type() != fs.ModeSymlink {
		t.Errorf("Lstat(bin) = %v, %v", fi, err)
	}
	fi, err = fs.Stat(fsys, "usr/bin/bash")
	if err != nil || fi.Sys().(*Node).Nlink != 2 || fi.Name() != "bash" {
		t.Errorf("Stat(bash) = %v, %v", fi, err)
	}
}

func TestFSSymlinkLoop(t *testing.T) {
	tr, _ := merge(t, []Entry{sym("a", "b"), sym("b", "/a"), sym("dangling", "nowhere")})
	fsys := tr.FS(nil)
	if _, err := fs.Stat(fsys, "a"); err == nil {
		t.Error("Stat of a symlink loop succeeded")
	}
	if _, err := fs.Stat(fsys, "dangling"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("dangling symlink: err = %v", err)
	}
}
