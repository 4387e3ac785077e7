package tree

import (
	"archive/tar"
	"bytes"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

func reg(name string) Entry {
	return Entry{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: 1, ModTime: t0}
}

func dir(name string) Entry {
	return Entry{Name: name, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: t0}
}

func sym(name, target string) Entry {
	return Entry{Name: name, Typeflag: tar.TypeSymlink, Linkname: target, Mode: 0o777, ModTime: t0}
}

func hard(name, target string) Entry {
	return Entry{Name: name, Typeflag: tar.TypeLink, Linkname: target, Mode: 0o644, ModTime: t0}
}

func withMode(e Entry, mode int64) Entry { e.Mode = mode; return e }

// warnLog returns a logger that records warnings in a buffer.
func warnLog() (*slog.Logger, *bytes.Buffer) {
	var buf bytes.Buffer
	return slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn})), &buf
}

func merge(t *testing.T, layers ...[]Entry) (*Tree, []string) {
	t.Helper()
	log, buf := warnLog()
	tr, err := Merge(layers, log)
	if err != nil {
		t.Fatalf("Merge: %v", err)
	}
	checkInvariants(t, tr)
	var warns []string
	for l := range strings.Lines(buf.String()) {
		warns = append(warns, strings.TrimSpace(l))
	}
	return tr, warns
}

// describe renders a node compactly: "d755", "f644@1.0", "f644@1.0 n2", "l->target",
// "c1,3", "p644", with " u1:2" when owned by someone other than root.
func describe(n *Node) string {
	var s string
	switch n.Typeflag {
	case tar.TypeDir:
		s = fmt.Sprintf("d%o", n.Mode)
	case tar.TypeReg:
		s = fmt.Sprintf("f%o@%d.%d", n.Mode, n.Layer, n.Entry)
		if n.Nlink != 1 {
			s += fmt.Sprintf(" n%d", n.Nlink)
		}
	case tar.TypeSymlink:
		s = "l->" + n.Linkname
		if n.Nlink != 1 {
			s += fmt.Sprintf(" n%d", n.Nlink)
		}
	case tar.TypeChar, tar.TypeBlock:
		s = fmt.Sprintf("%c%d,%d", map[byte]byte{tar.TypeChar: 'c', tar.TypeBlock: 'b'}[n.Typeflag], n.Devmajor, n.Devminor)
	case tar.TypeFifo:
		s = fmt.Sprintf("p%o", n.Mode)
	default:
		s = fmt.Sprintf("?%q", n.Typeflag)
	}
	if n.UID != 0 || n.GID != 0 {
		s += fmt.Sprintf(" u%d:%d", n.UID, n.GID)
	}
	return s
}

// walk calls fn for every name in the tree below the root, depth-first in name order.
func walk(tr *Tree, fn func(path string, id NodeID)) {
	var rec func(prefix string, id NodeID)
	rec = func(prefix string, id NodeID) {
		for _, e := range tr.Node(id).Children {
			p := prefix + e.Name
			fn(p, e.ID)
			if tr.Node(e.ID).IsDir() {
				rec(p+"/", e.ID)
			}
		}
	}
	rec("", Root)
}

func dump(tr *Tree) map[string]string {
	m := map[string]string{}
	walk(tr, func(p string, id NodeID) { m[p] = describe(tr.Node(id)) })
	return m
}

func diffMaps(got, want map[string]string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if g, ok := got[k]; !ok {
			fmt.Fprintf(&b, "missing %s (want %s)\n", k, want[k])
		} else if g != want[k] {
			fmt.Fprintf(&b, "%s: got %s, want %s\n", k, g, want[k])
		}
	}
	for _, k := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[k]; !ok {
			fmt.Fprintf(&b, "extra %s = %s\n", k, got[k])
		}
	}
	return b.String()
}

func lookupPath(tr *Tree, p string) (NodeID, bool) {
	id := Root
	for c := range strings.SplitSeq(p, "/") {
		var ok bool
		if id, ok = tr.Lookup(id, c); !ok {
			return 0, false
		}
	}
	return id, true
}
