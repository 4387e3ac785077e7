package tree

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"maps"
	"path"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The differential tests compare Merge with go-containerregistry's mutate.Extract on
// well-formed images only; DESIGN.md section 4 lists where Extract departs from the
// OCI rules, and the table tests cover those cases.

// readLayer parses an uncompressed layer tar into entries and their data.
func readLayer(t *testing.T, r io.Reader) ([]Entry, [][]byte) {
	t.Helper()
	var entries []Entry
	var data [][]byte
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return entries, data
		}
		if err != nil {
			t.Fatalf("reading layer: %v", err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("reading %s: %v", h.Name, err)
		}
		entries = append(entries, entryOf(h))
		data = append(data, b)
	}
}

func entryOf(h *tar.Header) Entry {
	e := Entry{Name: h.Name, Typeflag: h.Typeflag, Linkname: h.Linkname, Mode: h.Mode, UID: h.Uid, GID: h.Gid,
		Size: h.Size, ModTime: h.ModTime, Devmajor: h.Devmajor, Devminor: h.Devminor}
	for k, v := range h.PAXRecords {
		if x, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
			if e.Xattrs == nil {
				e.Xattrs = map[string]string{}
			}
			e.Xattrs[x] = v
		}
	}
	return e
}

type extracted struct {
	h    *tar.Header
	data []byte
}

func extractImage(t *testing.T, img v1.Image) map[string]extracted {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	out := map[string]extracted{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("mutate.Extract: %v", err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("mutate.Extract: %v", err)
		}
		p := path.Clean(h.Name)
		if _, dup := out[p]; dup {
			t.Fatalf("mutate.Extract wrote %s twice", p)
		}
		out[p] = extracted{h, b}
	}
}

// compareWithExtract merges img's layers and checks the result against mutate.Extract.
func compareWithExtract(t *testing.T, img v1.Image) {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var layers [][]Entry
	var data [][][]byte
	for _, l := range ls {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		e, d := readLayer(t, rc)
		rc.Close()
		layers, data = append(layers, e), append(data, d)
	}
	tr, warns := merge(t, layers...)
	if len(warns) > 0 {
		t.Errorf("warnings on a well-formed image:\n%s", strings.Join(warns, "\n"))
	}
	checkInvariants(t, tr)
	want := extractImage(t, img)
	got := map[string]NodeID{}
	walk(tr, func(p string, id NodeID) { got[p] = id })
	for _, p := range slices.Sorted(maps.Keys(want)) {
		x := want[p]
		id, ok := got[p]
		if !ok {
			t.Errorf("%s: in Extract's output, not in the tree", p)
			continue
		}
		n := tr.Node(id)
		if x.h.Typeflag == tar.TypeLink {
			if tid := got[path.Clean(x.h.Linkname)]; tid != id || n.IsDir() {
				t.Errorf("%s: hardlink to %s: ids %d and %d", p, x.h.Linkname, id, tid)
			}
			continue
		}
		if d := compareNode(n, x, data); d != "" {
			t.Errorf("%s: %s", p, d)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("%s = %s: in the tree, not in Extract's output", p, describe(tr.Node(got[p])))
		}
	}
}

func compareNode(n *Node, x extracted, data [][][]byte) string {
	h := x.h
	typ := h.Typeflag
	var diffs []string
	check := func(what string, got, want any) {
		if got != want {
			diffs = append(diffs, fmt.Sprintf("%s %v, Extract %v", what, got, want))
		}
	}
	check("type", n.Typeflag, typ)
	check("mode", n.Mode, h.Mode&0o7777)
	check("uid", n.UID, h.Uid)
	check("gid", n.GID, h.Gid)
	check("mtime", n.ModTime.Unix(), h.ModTime.Unix())
	check("xattrs", fmt.Sprint(n.Xattrs), fmt.Sprint(entryOf(h).Xattrs))
	switch typ {
	case tar.TypeReg:
		check("size", n.Size, h.Size)
		if n.Layer < 0 || !bytes.Equal(data[n.Layer][n.Entry], x.data) {
			diffs = append(diffs, fmt.Sprintf("content of layer %d entry %d differs", n.Layer, n.Entry))
		}
	case tar.TypeSymlink:
		check("target", n.Linkname, h.Linkname)
	case tar.TypeChar, tar.TypeBlock:
		check("dev", [2]int64{n.Devmajor, n.Devminor}, [2]int64{h.Devmajor, h.Devminor})
	}
	return strings.Join(diffs, "; ")
}

// checkInvariants checks the tree's internal consistency.
func checkInvariants(t *testing.T, tr *Tree) {
	t.Helper()
	names := map[NodeID]uint32{}
	for id := NodeID(1); int(id) <= tr.Len(); id++ {
		n := tr.Node(id)
		subdirs := uint32(0)
		for i, c := range n.Children {
			if i > 0 && n.Children[i-1].Name >= c.Name {
				t.Errorf("node %d: children not sorted: %q, %q", id, n.Children[i-1].Name, c.Name)
			}
			if c.Name == "" || c.Name == "." || c.Name == ".." || strings.Contains(c.Name, "/") || strings.HasPrefix(c.Name, ".wh.") {
				t.Errorf("node %d: child name %q", id, c.Name)
			}
			cn := tr.Node(c.ID)
			if cn == nil {
				t.Fatalf("node %d: child %q has bad id %d", id, c.Name, c.ID)
			}
			names[c.ID]++
			if cn.IsDir() {
				subdirs++
			}
		}
		if n.IsDir() && n.Nlink != 2+subdirs {
			t.Errorf("dir %d: nlink %d, want %d", id, n.Nlink, 2+subdirs)
		}
	}
	for id := NodeID(2); int(id) <= tr.Len(); id++ {
		n := tr.Node(id)
		if names[id] == 0 {
			t.Errorf("node %d is unreachable", id)
		}
		if n.IsDir() && names[id] != 1 {
			t.Errorf("dir %d has %d names", id, names[id])
		}
		if !n.IsDir() && names[id] != n.Nlink {
			t.Errorf("node %d %q: nlink %d, %d names", id, n.Name, n.Nlink, names[id])
		}
	}
}

func TestDifferentialHandMade(t *testing.T) {
	mt := time.Date(2020, 5, 6, 7, 8, 9, 0, time.UTC)
	h := func(typ byte, name string, mode int64, opt ...string) tfile {
		hd := &tar.Header{Typeflag: typ, Name: name, Mode: mode, ModTime: mt, Uid: 1, Gid: 2, Format: tar.FormatPAX}
		var data []byte
		switch typ {
		case tar.TypeReg:
			data = []byte("data of " + name + strings.Join(opt, ""))
		case tar.TypeSymlink, tar.TypeLink:
			hd.Linkname = opt[0]
		}
		return tfile{hd, data}
	}
	layers := [][]tfile{
		{h('5', "etc/", 0o755), h('0', "etc/passwd", 0o644), h('0', "etc/shadow", 0o600), h('5', "bin/", 0o755),
			h('0', "bin/busybox", 0o4755), h('1', "bin/sh", 0, "bin/busybox"), h('2', "sbin", 0o777, "bin"),
			h('5', "tmp/", 0o1777), h('0', "tmp/junk", 0o644), h('5', "var/", 0o755), h('5', "var/lib/", 0o700), h('0', "var/lib/db", 0o644),
			h('5', "dev/", 0o755), {&tar.Header{Typeflag: tar.TypeChar, Name: "dev/null", Mode: 0o666, Devmajor: 1, Devminor: 3, ModTime: mt}, nil},
			{&tar.Header{Typeflag: tar.TypeFifo, Name: "run.fifo", Mode: 0o600, ModTime: mt}, nil}},
		{h('5', "etc/", 0o750), h('0', "etc/passwd", 0o644, " v2"), h('0', "etc/.wh.shadow", 0), h('0', ".wh.tmp", 0),
			h('1', "etc/sh", 0, "bin/busybox"), h('5', "var/", 0o755), h('5', "var/lib/", 0o755), h('0', "var/lib/.wh..wh..opq", 0),
			h('0', "var/lib/new", 0o644), {&tar.Header{Typeflag: tar.TypeReg, Name: "x", Mode: 0o644, ModTime: mt,
				PAXRecords: map[string]string{"SCHILY.xattr.user.k": "v"}}, nil}},
		{h('2', "etc/passwd", 0o777, "/etc/shadow"), h('5', "tmp/", 0o755), h('0', "tmp/new", 0o600)},
	}
	var ls []v1.Layer
	for i, l := range layers {
		b := tarBytes(t, l)
		if i == 1 {
			// One layer through tarball.LayerFromOpener, as an uncompressed opener.
			layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
			if err != nil {
				t.Fatal(err)
			}
			ls = append(ls, layer)
			continue
		}
		ls = append(ls, static.NewLayer(b, types.DockerLayer))
	}
	img, err := mutate.AppendLayers(empty.Image, ls...)
	if err != nil {
		t.Fatal(err)
	}
	compareWithExtract(t, img)
}

func TestDifferentialRandomImage(t *testing.T) {
	img, err := random.Image(512, 5)
	if err != nil {
		t.Fatal(err)
	}
	compareWithExtract(t, img)
}

func TestDifferentialGenerated(t *testing.T) {
	for seed := range uint64(60) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			g := newGen(seed)
			var ls []v1.Layer
			for range 2 + g.r.IntN(4) {
				ls = append(ls, static.NewLayer(tarBytes(t, g.layer()), types.DockerLayer))
			}
			img, err := mutate.AppendLayers(empty.Image, ls...)
			if err != nil {
				t.Fatal(err)
			}
			compareWithExtract(t, img)
		})
	}
}

type tfile struct {
	h    *tar.Header
	data []byte
}

func tarBytes(t *testing.T, files []tfile) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := tar.NewWriter(&buf)
	for _, f := range files {
		f.h.Size = int64(len(f.data))
		if err := w.WriteHeader(f.h); err != nil {
			t.Fatalf("%s: %v", f.h.Name, err)
		}
		if _, err := w.Write(f.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
