package tree

import (
	"archive/tar"
	"strings"
	"testing"
)

type L = []Entry

func TestMergeTable(t *testing.T) {
	long := strings.Repeat("x", 256)
	tests := []struct {
		name   string
		layers []L
		want   map[string]string
		warns  []string // substrings, one per expected warning, in order
	}{
		{
			name:   "plain and dot-slash names; ./ names the root and is ignored",
			layers: []L{{dir("./"), dir("./a/"), reg("./a/f"), reg("b"), withMode(dir("."), 0o700)}},
			want:   map[string]string{"a": "d755", "a/f": "f644@0.2", "b": "f644@0.3"},
		},
		{
			name:   "dot-dot and absolute names are clamped inside the root",
			layers: []L{{reg("../x"), reg("a/../../y"), reg("/abs/z"), reg("../../../../w")}},
			want:   map[string]string{"x": "f644@0.0", "y": "f644@0.1", "abs": "d755", "abs/z": "f644@0.2", "w": "f644@0.3"},
		},
		{
			name:   "missing parents are created 0755 root owned",
			layers: []L{{reg("a/b/c")}},
			want:   map[string]string{"a": "d755", "a/b": "d755", "a/b/c": "f644@0.0"},
		},
		{
			name:   "absolute symlinked parent resolves inside the root and stays a symlink",
			layers: []L{{dir("etc/"), sym("sl", "/etc")}, {reg("sl/f")}},
			want:   map[string]string{"etc": "d755", "etc/f": "f644@1.0", "sl": "l->/etc"},
		},
		{
			name:   "relative symlinked parents, and ones that climb out, stay inside",
			layers: []L{{dir("usr/"), dir("usr/lib/"), sym("lib", "usr/lib"), dir("d/"), sym("d/up", "../../.."), sym("d/rel", "../usr")}, {reg("lib/x"), reg("d/up/z"), reg("d/rel/lib/y")}},
			want: map[string]string{
				"usr": "d755", "usr/lib": "d755", "lib": "l->usr/lib", "d": "d755", "d/up": "l->../../..", "d/rel": "l->../usr",
				"usr/lib/x": "f644@1.0", "z": "f644@1.1", "usr/lib/y": "f644@1.2",
			},
		},
		{
			name:   "symlinked parent pointing nowhere: its target's directories are created",
			layers: []L{{sym("m", "/nowhere/deep")}, {reg("m/f")}},
			want:   map[string]string{"m": "l->/nowhere/deep", "nowhere": "d755", "nowhere/deep": "d755", "nowhere/deep/f": "f644@1.0"},
		},
		{
			name:   "symlink loops are bounded and skip the entry",
			layers: []L{{sym("a", "b"), sym("b", "a"), sym("s", "./s"), reg("a/f"), reg("s/g/h"), reg("ok")}},
			want:   map[string]string{"a": "l->b", "b": "l->a", "s": "l->./s", "ok": "f644@0.5"},
			warns:  []string{`entry=3 name=a/f reason="too many levels`, `entry=4 name=s/g/h reason="too many levels`},
		},
		{
			name: "malformed names are skipped with a warning",
			layers: []L{{reg("nul\x00x"), reg("d/" + long + "/f"), reg("a/.."), reg(""),
				{Name: "vol", Typeflag: tar.TypeXGlobalHeader}, reg("/"), reg("fine"), sym("badlink", "x\x00y")}},
			want: map[string]string{"fine": "f644@0.6"},
			warns: []string{"entry=0", "entry=1", "entry=2", "entry=3 name=\"\"",
				`entry=4 name=vol reason="unsupported typeflag`, "entry=7 name=badlink"},
		},
		{
			name:   "a parent that is a file skips the entry",
			layers: []L{{reg("f")}, {reg("f/g"), reg("h")}},
			want:   map[string]string{"f": "f644@0.0", "h": "f644@1.1"},
			warns:  []string{`layer=1 entry=0 name=f/g reason="a parent is not a directory"`},
		},
		{
			name:   "whiteouts delete lower entries only, wherever they sit in the layer",
			layers: []L{{reg("a"), reg("b"), reg("c")}, {reg("b"), reg(".wh.b"), reg(".wh.a"), reg(".wh.c"), reg("c")}},
			want:   map[string]string{"b": "f644@1.0", "c": "f644@1.4"},
		},
		{
			name:   "whiteout of a directory drops its subtree; whiteout of nothing is harmless",
			layers: []L{{dir("d/"), dir("d/e/"), reg("d/e/f"), reg("keep")}, {reg(".wh.d"), reg(".wh.ghost")}},
			want:   map[string]string{"keep": "f644@0.3"},
		},
		{
			name:   "whiteout through a symlinked parent",
			layers: []L{{dir("etc/"), reg("etc/f"), reg("etc/g"), sym("sl", "/etc")}, {reg("sl/.wh.f")}},
			want:   map[string]string{"etc": "d755", "etc/g": "f644@0.2", "sl": "l->/etc"},
		},
		{
			name:   "opaque marker hides lower contents only, even when it comes last",
			layers: []L{{dir("d/"), reg("d/x"), dir("d/sub/"), reg("d/sub/y"), reg("other")}, {withMode(dir("d/"), 0o700), reg("d/new"), reg("d/.wh..wh..opq")}},
			want:   map[string]string{"d": "d700", "d/new": "f644@1.1", "other": "f644@0.4"},
		},
		{
			name: "markers act on the layer's own tree: a lower symlink replaced by a directory is not followed",
			layers: []L{{dir("x/"), reg("x/y"), reg("x/z"), sym("a", "x")},
				{dir("a/"), reg("a/.wh..wh..opq"), reg("a/.wh.y"), reg("a/new")}},
			want: map[string]string{"x": "d755", "x/y": "f644@0.1", "x/z": "f644@0.2", "a": "d755", "a/new": "f644@1.3"},
		},
		{
			name: "opaque marker before the directory entry, and a file replaced by a directory",
			layers: []L{{dir("d/"), reg("d/old"), reg("f")},
				{reg("d/.wh..wh..opq"), withMode(dir("d/"), 0o711), reg("d/new"), dir("f/"), reg("f/.wh..wh..opq"), reg("f/g")}},
			want: map[string]string{"d": "d711", "d/new": "f644@1.2", "f": "d755", "f/g": "f644@1.5"},
		},
		{
			name: "opaque marker hides lower contents of subdirectories the layer also wrote",
			layers: []L{{dir("d/"), dir("d/sub/"), reg("d/sub/old"), dir("d/imp/"), reg("d/imp/old"), withMode(dir("d/gone/"), 0o700)},
				{dir("d/"), withMode(dir("d/sub/"), 0o750), reg("d/sub/new"), reg("d/imp/new"), reg("d/.wh..wh..opq")}},
			want: map[string]string{"d": "d755", "d/sub": "d750", "d/sub/new": "f644@1.2", "d/imp": "d755", "d/imp/new": "f644@1.3"},
		},
		{
			name:   "whiteout of a lower directory the layer also wrote into keeps only the layer's part",
			layers: []L{{withMode(dir("x/"), 0o700), reg("x/old")}, {reg("x/new"), reg(".wh.x")}},
			want:   map[string]string{"x": "d700", "x/new": "f644@1.0"},
		},
		{
			name:   "opaque marker on the root hides every lower entry",
			layers: []L{{dir("d/"), reg("d/x"), reg("f")}, {reg("g"), reg(".wh..wh..opq")}},
			want:   map[string]string{"g": "f644@1.0"},
		},
		{
			name:   "odd whiteouts are ignored: .wh.., bare .wh., and an ancestor of their own path",
			layers: []L{{dir("x/"), sym("x/sl", "/"), reg("y")}, {reg(".wh.."), reg(".wh."), reg("x/sl/.wh.x"), reg("x/.wh..")}},
			want:   map[string]string{"x": "d755", "x/sl": "l->/", "y": "f644@0.2"},
			warns:  []string{"entry=0 name=.wh..", "entry=1 name=.wh.", "entry=2 name=x/sl/.wh.x reason=\"whiteout names an ancestor", "entry=3"},
		},
		{
			name:   "whiteout under a missing directory creates the directory, as containerd does",
			layers: []L{{reg("f")}, {reg("nope/.wh.x")}},
			want:   map[string]string{"f": "f644@0.0", "nope": "d755"},
		},
		{
			name:   "the same path twice in a layer: the last wins, file to dir and dir to file",
			layers: []L{{reg("f"), reg("f"), reg("p"), dir("p/"), reg("p/c"), dir("q/"), reg("q/c"), reg("q")}},
			want:   map[string]string{"f": "f644@0.1", "p": "d755", "p/c": "f644@0.4", "q": "f644@0.7"},
		},
		{
			name:   "a directory over a directory updates metadata and keeps children",
			layers: []L{{dir("d/"), reg("d/x")}, {Entry{Name: "d", Typeflag: tar.TypeDir, Mode: 0o1777, UID: 5, GID: 6}}},
			want:   map[string]string{"d": "d1777 u5:6", "d/x": "f644@0.1"},
		},
		{
			name:   "a later layer replaces types both ways",
			layers: []L{{dir("a/"), reg("a/x"), reg("b"), sym("c", "b")}, {reg("a"), dir("b/"), reg("b/y"), dir("c/")}},
			want:   map[string]string{"a": "f644@1.0", "b": "d755", "b/y": "f644@1.2", "c": "d755"},
		},
		{
			name: "special files and modes are kept",
			layers: []L{{
				withMode(reg("suid"), 0o4755), withMode(reg("sgid"), 0o2711), withMode(dir("tmp/"), 0o1777),
				{Name: "null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3},
				{Name: "sda", Typeflag: tar.TypeBlock, Mode: 0o660, Devmajor: 8, GID: 6},
				{Name: "fifo", Typeflag: tar.TypeFifo, Mode: 0o600},
				{Name: "old", Typeflag: '\x00', Mode: 0o600}, {Name: "olddir/", Typeflag: '\x00', Mode: 0o750},
			}},
			want: map[string]string{"suid": "f4755@0.0", "sgid": "f2711@0.1", "tmp": "d1777", "null": "c1,3",
				"sda": "b8,0 u0:6", "fifo": "p600", "old": "f600@0.6", "olddir": "d750"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr, warns := merge(t, tc.layers...)
			if d := diffMaps(dump(tr), tc.want); d != "" {
				t.Errorf("tree differs:\n%s", d)
			}
			if len(warns) != len(tc.warns) {
				t.Fatalf("got %d warnings, want %d:\n%s", len(warns), len(tc.warns), strings.Join(warns, "\n"))
			}
			for i, w := range tc.warns {
				if !strings.Contains(warns[i], w) || !strings.Contains(warns[i], "layer=") {
					t.Errorf("warning %d = %s, want it to contain %q", i, warns[i], w)
				}
			}
			for _, c := range tr.Node(Root).Children {
				if strings.HasPrefix(c.Name, ".wh.") || c.Name == ".." {
					t.Errorf("root has child %q", c.Name)
				}
			}
		})
	}
}
