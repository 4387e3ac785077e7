package tree

import (
	"archive/tar"
	"reflect"
	"testing"
	"time"
)

func TestNodeIDsAreDepthFirstInNameOrder(t *testing.T) {
	// Same result whatever the archive order and layering.
	a := [][]Entry{{dir("b/"), reg("b/y"), reg("a.b"), dir("a/"), reg("a/x"), hard("c", "a/x")}}
	b := [][]Entry{{dir("a/"), reg("a/x")}, {reg("a.b"), hard("c", "a/x"), dir("b/"), reg("b/y")}}
	want := map[string]NodeID{"a": 2, "a/x": 3, "a.b": 4, "b": 5, "b/y": 6, "c": 3}
	for i, layers := range [][][]Entry{a, b} {
		tr, _ := merge(t, layers...)
		if tr.Len() != 6 {
			t.Errorf("input %d: Len = %d, want 6", i, tr.Len())
		}
		for p, id := range want {
			if got, ok := lookupPath(tr, p); !ok || got != id {
				t.Errorf("input %d: %s has id %d (%v), want %d", i, p, got, ok, id)
			}
		}
		if n := tr.Node(3); n.Name != "x" || n.Nlink != 2 {
			t.Errorf("input %d: node 3 = %q nlink %d, want x nlink 2", i, n.Name, n.Nlink)
		}
	}
	t1, _ := merge(t, a...)
	t2, _ := merge(t, a...)
	if !reflect.DeepEqual(t1, t2) {
		t.Error("two merges of the same input differ")
	}
}

func TestLookupAndNode(t *testing.T) {
	tr, _ := merge(t, []Entry{dir("d/"), reg("d/b"), reg("d/a"), reg("d/c"), reg("f")})
	d, ok := tr.Lookup(Root, "d")
	if !ok {
		t.Fatal("d not found")
	}
	for _, tc := range []struct {
		dir  NodeID
		name string
		ok   bool
	}{
		{d, "a", true}, {d, "b", true}, {d, "c", true}, {d, "0", false}, {d, "bb", false}, {d, "", false},
		{Root, "f", true}, {Root, "a", false}, {0, "d", false}, {99, "d", false},
	} {
		id, ok := tr.Lookup(tc.dir, tc.name)
		if ok != tc.ok || (ok && tr.Node(id).Name != tc.name) {
			t.Errorf("Lookup(%d, %q) = %d, %v; want found=%v", tc.dir, tc.name, id, ok, tc.ok)
		}
	}
	f, _ := tr.Lookup(Root, "f")
	if _, ok := tr.Lookup(f, "x"); ok {
		t.Error("Lookup in a regular file succeeded")
	}
	if tr.Node(0) != nil || tr.Node(NodeID(tr.Len()+1)) != nil || tr.Node(NodeID(tr.Len())) == nil {
		t.Error("Node bounds wrong")
	}
	var names []string
	for _, c := range tr.Node(d).Children {
		names = append(names, c.Name)
	}
	if !reflect.DeepEqual(names, []string{"a", "b", "c"}) {
		t.Errorf("children = %v, want sorted", names)
	}
	root := tr.Node(Root)
	if root.Nlink != 3 || !root.IsDir() || root.Layer != -1 || tr.Node(d).Nlink != 2 {
		t.Errorf("root nlink %d layer %d, d nlink %d; want 3, -1, 2", root.Nlink, root.Layer, tr.Node(d).Nlink)
	}
}

func TestNodeKeepsMetadata(t *testing.T) {
	mt := time.Date(2001, 2, 3, 4, 5, 6, 789, time.UTC)
	x := map[string]string{"security.capability": "\x01\x00"}
	tr, _ := merge(t, []Entry{
		{Name: "bin/ping", Typeflag: tar.TypeReg, Mode: 0o104755, UID: 7, GID: 8, Size: 1234, ModTime: mt, Xattrs: x},
		{Name: "dev/tty", Typeflag: tar.TypeChar, Mode: 0o620, GID: 5, Devmajor: 5, Devminor: 0},
		{Name: "link", Typeflag: tar.TypeSymlink, Linkname: "../bin//ping/", Mode: 0o777},
	})
	id, _ := lookupPath(tr, "bin/ping")
	got := *tr.Node(id)
	want := Node{Name: "ping", Typeflag: tar.TypeReg, Mode: 0o4755, UID: 7, GID: 8, Size: 1234, ModTime: mt, Xattrs: x, Nlink: 1, Layer: 0, Entry: 0}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ping = %+v\nwant %+v", got, want)
	}
	if m := got.FileMode(); m.String() != "urwxr-xr-x" {
		t.Errorf("FileMode = %s", m)
	}
	id, _ = lookupPath(tr, "link")
	if n := tr.Node(id); n.Linkname != "../bin//ping/" || n.Size != int64(len("../bin//ping/")) {
		t.Errorf("symlink = %q size %d; want target as stored", n.Linkname, n.Size)
	}
	id, _ = lookupPath(tr, "dev/tty")
	if n := tr.Node(id); n.Devmajor != 5 || n.GID != 5 || n.FileMode().String() != "Dcrw--w----" {
		t.Errorf("tty = %+v mode %s", n, n.FileMode())
	}
	if n := tr.Node(Root); n.Xattrs != nil || n.ModTime.Unix() != 0 {
		t.Errorf("root xattrs %v mtime %v", n.Xattrs, n.ModTime)
	}
}
