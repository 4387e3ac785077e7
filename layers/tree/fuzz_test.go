package tree

import (
	"archive/tar"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// FuzzMerge merges layers decoded from the fuzz input (see fuzzLayers) and checks the
// invariants every merged tree must keep, whatever the input: no panic, names that are
// single clean components of at most 255 bytes, no whiteout entry in the tree (only a
// directory created as another entry's parent may bear a ".wh." name, as containerd
// creates it), sorted unique children that Lookup
// agrees with, every node reachable from the root, link counts that match the names,
// nodes that point back to entries of the right kind, and a result that depends on the
// input only.
//
// The seeds are the hostile inputs of DESIGN.md section 4 that reach the merge.
func FuzzMerge(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, script string) {
		layers := fuzzLayers(script)
		tr, err := Merge(layers, nil)
		if err != nil {
			t.Fatalf("Merge: %v", err)
		}
		if p := fuzzProblems(layers, tr); len(p) > 0 {
			t.Fatalf("merged tree breaks invariants:\n%s", strings.Join(p, "\n"))
		}
		again, err := Merge(layers, nil)
		if err != nil {
			t.Fatalf("second Merge: %v", err)
		}
		if !reflect.DeepEqual(tr, again) {
			t.Errorf("two merges of the same layers differ")
		}
	})
}

// fuzzSeeds are fuzzLayers scripts: DESIGN.md section 4's hostile table, then odd
// cases of the merge's own rules.
var fuzzSeeds = []string{
	// ../x, a/../../x and /abs/x are clamped inside the root.
	"f../x\nfa/../../x\nf/abs/x\nf../../../../w",
	// A parent that is a symlink (sl -> /etc, then sl/f) resolves inside the root.
	"detc/\nssl\t/etc\n=\nfsl/f",
	// Relative symlinked parents that climb out.
	"dusr/\ndusr/lib/\nslib\tusr/lib\ndd/\nsd/up\t../../..\nsd/rel\t../usr\n=\nflib/x\nfd/up/z\nfd/rel/lib/y",
	// A hardlink to ../../etc/passwd is clamped to the image's own /etc/passwd.
	"detc/\nfetc/passwd\n=\nhx\t../../etc/passwd\nhy\t/etc/passwd",
	// Hardlinks to a missing target, to a directory, to the root, through a symlink.
	"hm\tnope\ndd/\nhl\td\nhr\t/\nhdot\t.\nssl\td\nfd/f\nhvia\tsl/f\nhsl2\tsl",
	// A name component over 255 bytes is skipped; one of 255 is kept.
	"fd/\x01\x38/f\nf\x01\x37\nsy\x01\x36\t\x01\x38",
	// .wh.., bare .wh., whiteouts naming the root or an ancestor are ignored.
	"dx/\nsx/sl\t/\nfy\n=\nf.wh..\nf.wh.\nfx/sl/.wh.x\nfx/.wh..\nf/.wh.\nf./.wh.x\nfx/sl/.wh..wh..opq",
	// The same path twice in a layer: the last wins, file to dir and dir to file.
	"ff\nff\nfp\ndp/\nfp/c\ndq/\nfq/c\nfq",
	// Names and symlink targets with NUL bytes; empty names; the root named.
	"fnul\x00x\nsbad\tx\x00y\nf\nf/\nd.\nd./\nf..\nfa/..",
	// Symlink loops and chains.
	"sa\tb\nsb\ta\nss\t./s\nfa/f\nfs/g/h\nfok",
	// Whiteouts and opaque markers across layers, wherever they sit.
	"fa\nfb\nfc\ndd/\nfd/x\ndd/sub/\nfd/sub/y\n=\nfb\nf.wh.b\nf.wh.a\nf.wh.c\nfc\nfd/new\nfd/.wh..wh..opq\n=\nf.wh..wh..opq\nfz",
	// Hardlinks across layers, then their target whited out or replaced.
	"ff\nhg\tf\nhh\tg\n=\nf.wh.f\nhk\tg\n=\ndg/\nhm\th\nf.wh.h",
	// A hardlink made before its own layer whites out the lower target.
	"ft\n=\nhl\tt\nf.wh.t\nhl2\tt",
	// Odd typeflags: unknown, pre-POSIX, devices, fifos, globals.
	"xweird\n\x00old\n\x00olddir/\ncnull\nbsda\npfifo\ngvol\n5dir5\n0reg0",
	// Types replaced both ways across layers, under symlinked parents.
	"da/\nfa/x\nfb\nsc\tb\nsl\t/a\n=\nfa\ndb/\nfb/y\ndc/\nfl/z\n=\nsa\t/b\nfa/w",
	// Deep paths, and a symlink to the root used as a parent.
	"fa/b/c/d/e/f/g/h\nsr\t/\nfr/r/r/r/a/b/c/d/e/f/g/i\nhj\tr/a/b/c/d/e/f/g/h",
	// A whiteout name as a parent: found by the fuzzer; the parent is created.
	"0.wh./00\nf.wh.x/y\n=\nd.wh.x/\nf.wh.x/.wh.y\nf.wh..wh..opq/z",
	// Whiteouts through symlinked parents and of a symlink's target directory.
	"detc/\nfetc/f\nfetc/g\nssl\t/etc\n=\nfsl/.wh.f\nf.wh.etc\nfsl/n",
}

// fuzzFindings are inputs the fuzzer found that broke an invariant, with the
// bug each showed; TestFuzzMergeFindings keeps them fixed.
var fuzzFindings = []struct{ script, bug string }{
	{"2s\t\x018\n0s/0", "walk created a directory named after a symlink target's component " +
		"over 255 bytes (s -> 256 x's, then s/0)"},
}

// Limits that keep one fuzz input cheap to merge.
const (
	fuzzMaxEntries = 512
	fuzzMaxLayers  = 16
)

// fuzzLayers decodes a script into layers. Each line is one entry; a line starting with
// '=' starts a new layer. An entry line is a type byte, the name, and optionally a tab
// and the link target. Type bytes: f regular, d directory, s symlink, h hardlink, c
// character device, b block device, p fifo; any other byte is used as the typeflag
// itself. In names and targets, the byte 0x01 followed by a byte k stands for 200+k
// 'x's, so that short inputs reach the 255-byte component limit.
func fuzzLayers(script string) [][]Entry {
	layers := [][]Entry{nil}
	n := 0
	for line := range strings.SplitSeq(script, "\n") {
		if n++; n > fuzzMaxEntries {
			break
		}
		if line == "" {
			continue
		}
		if line[0] == '=' {
			if len(layers) < fuzzMaxLayers {
				layers = append(layers, nil)
			}
			continue
		}
		typ, rest := line[0], line[1:]
		if t, ok := fuzzTypes[typ]; ok {
			typ = t
		}
		name, link, _ := strings.Cut(rest, "\t")
		li := len(layers) - 1
		e := Entry{
			Name: fuzzExpand(name), Typeflag: typ, Linkname: fuzzExpand(link),
			Mode: fuzzModes[typ], Size: int64(n), // distinct per entry: a node's Size names its entry
			ModTime: time.Unix(int64(n), 0).UTC(),
		}
		if typ == tar.TypeChar || typ == tar.TypeBlock {
			e.Devmajor, e.Devminor = int64(li), int64(n)
		}
		layers[li] = append(layers[li], e)
	}
	return layers
}

var fuzzModes = map[byte]int64{tar.TypeDir: 0o755, tar.TypeSymlink: 0o777, tar.TypeReg: 0o644, tar.TypeChar: 0o620}

var fuzzTypes = map[byte]byte{
	'f': tar.TypeReg, 'd': tar.TypeDir, 's': tar.TypeSymlink, 'h': tar.TypeLink,
	'c': tar.TypeChar, 'b': tar.TypeBlock, 'p': tar.TypeFifo,
}

// fuzzExpand replaces each 0x01 k pair of s by 200+k 'x's.
func fuzzExpand(s string) string {
	if strings.IndexByte(s, 1) < 0 {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != 1 || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		i++
		b.WriteString(strings.Repeat("x", 200+int(s[i])))
	}
	return b.String()
}

// fuzzProblems checks tr, the merge of layers, against the invariants of FuzzMerge and
// returns what is wrong (nil: nothing).
func fuzzProblems(layers [][]Entry, tr *Tree) []string {
	var p []string
	errorf := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }
	root := tr.Node(Root)
	if root == nil || !root.IsDir() {
		errorf("root is %+v, want a directory", root)
		return p
	}
	if tr.Node(0) != nil || tr.Node(NodeID(tr.Len()+1)) != nil {
		errorf("Node answers IDs 0 or Len()+1")
	}
	names := make([][]string, tr.Len()+1) // by ID: the names pointing at each node
	names[Root] = []string{""}
	queue := []NodeID{Root}
	for len(queue) > 0 {
		id := queue[0]
		queue = queue[1:]
		n := tr.Node(id)
		fuzzCheckNode(errorf, layers, id, n)
		if !n.IsDir() {
			if n.Children != nil {
				errorf("node %d (%q): a non-directory with children", id, n.Name)
			}
			if _, ok := tr.Lookup(id, "x"); ok {
				errorf("node %d (%q): Lookup in a non-directory succeeds", id, n.Name)
			}
			continue
		}
		subdirs := uint32(0)
		for i, c := range n.Children {
			if i > 0 && n.Children[i-1].Name >= c.Name {
				errorf("dir %d (%q): children %q, %q not sorted and unique", id, n.Name, n.Children[i-1].Name, c.Name)
			}
			if msg := fuzzBadName(c.Name); msg != "" {
				errorf("dir %d (%q): child %q: %s", id, n.Name, c.Name, msg)
			}
			cn := tr.Node(c.ID)
			if cn == nil {
				errorf("dir %d (%q): child %q has ID %d, not in the tree", id, n.Name, c.Name, c.ID)
				return p
			}
			// Only a directory created as the parent of another entry may carry a
			// whiteout name (".wh.x/f" makes ".wh.x", as containerd's applier does).
			if strings.HasPrefix(c.Name, whiteoutPrefix) && !(cn.IsDir() && cn.Layer == -1) {
				errorf("dir %d (%q): child %q: a whiteout entry in the tree", id, n.Name, c.Name)
			}
			if got, ok := tr.Lookup(id, c.Name); !ok || got != c.ID {
				errorf("dir %d: Lookup(%q) = %d, %v; Children say %d", id, c.Name, got, ok, c.ID)
			}
			if cn.IsDir() {
				subdirs++
				if len(names[c.ID]) > 0 {
					errorf("dir %d (%q) has several names: %q and %q", c.ID, cn.Name, names[c.ID], c.Name)
					return p
				}
			}
			if len(names[c.ID]) == 0 {
				queue = append(queue, c.ID)
			}
			names[c.ID] = append(names[c.ID], c.Name)
		}
		if _, ok := tr.Lookup(id, "\x00"); ok {
			errorf("dir %d: Lookup of a NUL name succeeds", id)
		}
		if n.Nlink != 2+subdirs {
			errorf("dir %d (%q): Nlink %d, want %d", id, n.Name, n.Nlink, 2+subdirs)
		}
	}
	for id := Root; int(id) <= tr.Len(); id++ {
		n := tr.Node(id)
		switch {
		case len(names[id]) == 0:
			errorf("node %d (%q) is not reachable from the root", id, n.Name)
		case !n.IsDir() && int(n.Nlink) != len(names[id]):
			errorf("node %d (%q): Nlink %d, but %d names %q", id, n.Name, n.Nlink, len(names[id]), names[id])
		case !slices.Contains(names[id], n.Name):
			errorf("node %d: Name %q is none of its names %q", id, n.Name, names[id])
		}
	}
	return p
}

// fuzzCheckNode checks one node's fields against the entry it says it comes from and
// reports problems to errorf.
func fuzzCheckNode(errorf func(string, ...any), layers [][]Entry, id NodeID, n *Node) {
	if n.Mode&^0o7777 != 0 {
		errorf("node %d (%q): mode %o has bits beyond 07777", id, n.Name, n.Mode)
	}
	switch n.Typeflag {
	case tar.TypeReg, tar.TypeSymlink:
	case tar.TypeDir, tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		if n.Size != 0 {
			errorf("node %d (%q) of type %q: size %d, want 0", id, n.Name, n.Typeflag, n.Size)
		}
	default:
		errorf("node %d (%q): typeflag %q", id, n.Name, n.Typeflag)
	}
	if n.Layer < 0 || n.Entry < 0 {
		if n.Layer != -1 || n.Entry != -1 || !n.IsDir() {
			errorf("node %d (%q): layer %d entry %d; only implicit directories have none", id, n.Name, n.Layer, n.Entry)
		}
		return
	}
	if n.Layer >= len(layers) || n.Entry >= len(layers[n.Layer]) {
		errorf("node %d (%q): layer %d entry %d is not in the input", id, n.Name, n.Layer, n.Entry)
		return
	}
	e := &layers[n.Layer][n.Entry]
	typ, err := nodeType(e)
	if err != nil || typ != n.Typeflag {
		errorf("node %d (%q) of type %q comes from entry %q of type %q", id, n.Name, n.Typeflag, e.Name, e.Typeflag)
	}
	if n.Mode != e.Mode&0o7777 || n.UID != e.UID || n.GID != e.GID || !n.ModTime.Equal(e.ModTime) {
		errorf("node %d (%q): metadata differs from its entry %q", id, n.Name, e.Name)
	}
	switch n.Typeflag {
	case tar.TypeReg:
		if n.Size != e.Size {
			errorf("node %d (%q): size %d, its entry %q has %d", id, n.Name, n.Size, e.Name, e.Size)
		}
	case tar.TypeSymlink:
		if n.Linkname != e.Linkname || n.Size != int64(len(n.Linkname)) {
			errorf("node %d (%q): symlink to %q size %d, its entry says %q", id, n.Name, n.Linkname, n.Size, e.Linkname)
		}
	}
}

// fuzzBadName says what is wrong with a directory entry's name, or "".
func fuzzBadName(name string) string {
	switch {
	case name == "" || name == "." || name == "..":
		return "not a file name"
	case strings.ContainsAny(name, "/\x00"):
		return "contains / or NUL"
	case len(name) > maxComponent:
		return "longer than 255 bytes"
	}
	return ""
}

// TestFuzzProblemsCatches breaks a well-formed tree in each way FuzzMerge looks for and
// checks that fuzzProblems reports it: a checker that never fails would fuzz nothing.
func TestFuzzProblemsCatches(t *testing.T) {
	layers := [][]Entry{{dir("d/"), reg("d/f"), hard("h", "d/f"), sym("s", "d")}}
	// IDs: 1 root {d, h, s}, 2 d {f}, 3 d/f and h, 4 s.
	tests := []struct {
		name   string
		break_ func(nodes []Node) []Node
		want   string
	}{
		{"children unsorted", func(ns []Node) []Node {
			ns[0].Children[0], ns[0].Children[1] = ns[0].Children[1], ns[0].Children[0]
			return ns
		}, "not sorted"},
		{"a child named ..", func(ns []Node) []Node { ns[1].Children[0].Name = ".."; return ns }, "not a file name"},
		{"a child with a slash", func(ns []Node) []Node { ns[1].Children[0].Name = "a/b"; return ns }, "contains /"},
		{"a whiteout child", func(ns []Node) []Node { ns[1].Children[0].Name = ".wh.f"; return ns }, "a whiteout entry"},
		{"hardlink Nlink off", func(ns []Node) []Node { ns[2].Nlink = 1; return ns }, "Nlink 1, but 2 names"},
		{"dir Nlink off", func(ns []Node) []Node { ns[0].Nlink = 2; return ns }, "Nlink 2, want 3"},
		{"unreachable node", func(ns []Node) []Node {
			return append(ns, Node{Name: "lost", Typeflag: tar.TypeFifo, Nlink: 1, Layer: -1, Entry: -1})
		}, "not reachable"},
		{"dangling child ID", func(ns []Node) []Node { ns[1].Children[0].ID = 99; return ns }, "not in the tree"},
		{"a directory with two names", func(ns []Node) []Node { ns[0].Children[1].ID = 2; return ns }, "several names"},
		{"size not the entry's", func(ns []Node) []Node { ns[2].Size = 7; return ns }, "size 7"},
		{"a link node", func(ns []Node) []Node { ns[3].Typeflag = tar.TypeLink; return ns }, "typeflag"},
		{"entry out of range", func(ns []Node) []Node { ns[3].Entry = 9; return ns }, "not in the input"},
		{"Name none of its names", func(ns []Node) []Node { ns[2].Name = "g"; return ns }, "none of its names"},
	}
	good, err := Merge(layers, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p := fuzzProblems(layers, good); len(p) > 0 {
		t.Fatalf("the well-formed tree has problems:\n%s", strings.Join(p, "\n"))
	}
	if got, want := dump(good), map[string]string{"d": "d755", "d/f": "f644@0.1 n2", "h": "f644@0.1 n2", "s": "l->d"}; diffMaps(got, want) != "" {
		t.Fatalf("base tree differs:\n%s", diffMaps(got, want))
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			nodes := slices.Clone(good.nodes)
			for i := range nodes {
				nodes[i].Children = slices.Clone(nodes[i].Children)
			}
			p := fuzzProblems(layers, &Tree{nodes: tc.break_(nodes)})
			if !strings.Contains(strings.Join(p, "\n"), tc.want) {
				t.Errorf("problems = %q, want one containing %q", p, tc.want)
			}
		})
	}
}

// TestFuzzSeedsDecode checks that the fuzz script decodes as intended, on seeds whose
// result DESIGN.md section 4 decides.
func TestFuzzSeedsDecode(t *testing.T) {
	long := func(n int) string { return strings.Repeat("x", n) }
	tests := []struct {
		seed string
		want map[string]string
	}{
		{fuzzSeeds[0], map[string]string{"x": "f644@0.1", "abs": "d755", "abs/x": "f644@0.2", "w": "f644@0.3"}},
		{fuzzSeeds[1], map[string]string{"etc": "d755", "etc/f": "f644@1.0", "sl": "l->/etc"}},
		{fuzzSeeds[3], map[string]string{"etc": "d755", "etc/passwd": "f644@0.1 n3", "x": "f644@0.1 n3", "y": "f644@0.1 n3"}},
		{fuzzSeeds[5], map[string]string{long(255): "f644@0.1", "y" + long(254): "l->" + long(256)}},
		{fuzzSeeds[7], map[string]string{"f": "f644@0.1", "p": "d755", "p/c": "f644@0.4", "q": "f644@0.7"}},
	}
	for i, tc := range tests {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			layers := fuzzLayers(tc.seed)
			tr, err := Merge(layers, nil)
			if err != nil {
				t.Fatal(err)
			}
			if d := diffMaps(dump(tr), tc.want); d != "" {
				t.Errorf("seed %q: tree differs:\n%s", tc.seed, d)
			}
		})
	}
}

// TestFuzzMergeFindings replays fuzzFindings.
func TestFuzzMergeFindings(t *testing.T) {
	for i, f := range fuzzFindings {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			layers := fuzzLayers(f.script)
			tr, err := Merge(layers, nil)
			if err != nil {
				t.Fatalf("Merge: %v", err)
			}
			if p := fuzzProblems(layers, tr); len(p) > 0 {
				t.Errorf("input %q breaks invariants:\n%s", f.script, strings.Join(p, "\n"))
			}
		})
	}
}
