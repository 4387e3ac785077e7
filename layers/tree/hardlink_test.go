package tree

import (
	"strings"
	"testing"
)

func TestHardlinks(t *testing.T) {
	tests := []struct {
		name   string
		layers []L
		want   map[string]string
		same   [][]string // groups of paths that must share one NodeID
		warns  []string
	}{
		{
			name:   "same layer",
			layers: []L{{reg("f"), hard("h", "f"), hard("./h2", "./h")}},
			want:   map[string]string{"f": "f644@0.0 n3", "h": "f644@0.0 n3", "h2": "f644@0.0 n3"},
			same:   [][]string{{"f", "h", "h2"}},
		},
		{
			name:   "target in a lower layer",
			layers: []L{{dir("bin/"), reg("bin/f")}, {hard("g", "bin/f")}},
			want:   map[string]string{"bin": "d755", "bin/f": "f644@0.1 n2", "g": "f644@0.1 n2"},
			same:   [][]string{{"bin/f", "g"}},
		},
		{
			name:   "target clamped inside the root",
			layers: []L{{dir("etc/"), reg("etc/passwd"), dir("a/")}, {hard("a/pw", "../../etc/passwd"), hard("a/pw2", "/etc/passwd")}},
			want:   map[string]string{"etc": "d755", "a": "d755", "etc/passwd": "f644@0.1 n3", "a/pw": "f644@0.1 n3", "a/pw2": "f644@0.1 n3"},
			same:   [][]string{{"etc/passwd", "a/pw", "a/pw2"}},
		},
		{
			name:   "target through a symlinked parent",
			layers: []L{{dir("real/"), reg("real/f"), sym("sl", "real")}, {hard("h", "sl/f")}},
			want:   map[string]string{"real": "d755", "real/f": "f644@0.1 n2", "sl": "l->real", "h": "f644@0.1 n2"},
			same:   [][]string{{"real/f", "h"}},
		},
		{
			name:   "hardlink to a symlink links the symlink itself",
			layers: []L{{reg("f"), sym("s", "f"), hard("h", "s")}},
			want:   map[string]string{"f": "f644@0.0", "s": "l->f n2", "h": "l->f n2"},
			same:   [][]string{{"s", "h"}},
		},
		{
			name:   "missing target, directory target, root target: skipped",
			layers: []L{{dir("d/"), hard("a", "nothere"), hard("b", "d"), hard("c", "/"), hard("e", "d/x/y"), reg("f")}},
			want:   map[string]string{"d": "d755", "f": "f644@0.5"},
			warns:  []string{"entry=1 name=a", "entry=2 name=b", "entry=3 name=c", "entry=4 name=e"},
		},
		{
			name:   "a skipped hardlink leaves the existing name alone",
			layers: []L{{reg("h")}, {hard("h", "nothere")}},
			want:   map[string]string{"h": "f644@0.0"},
			warns:  []string{"layer=1 entry=0 name=h"},
		},
		{
			name:   "a later layer replacing one name breaks the link for that name only",
			layers: []L{{reg("f"), hard("h", "f"), hard("k", "f")}, {reg("f")}},
			want:   map[string]string{"f": "f644@1.0", "h": "f644@0.0 n2", "k": "f644@0.0 n2"},
			same:   [][]string{{"h", "k"}},
		},
		{
			name:   "whiteout of one name decrements nlink",
			layers: []L{{reg("f"), hard("h", "f")}, {reg(".wh.f")}},
			want:   map[string]string{"h": "f644@0.0"},
		},
		{
			name:   "dropping a directory subtree decrements links into it",
			layers: []L{{dir("d/"), reg("d/f"), hard("d/g", "d/f"), hard("h", "d/f")}, {reg("d")}},
			want:   map[string]string{"d": "f644@1.0", "h": "f644@0.1"},
		},
		{
			name:   "a hardlink over its own target's other name is a no-op",
			layers: []L{{reg("f"), hard("h", "f")}, {hard("h", "f"), hard("f", "f")}},
			want:   map[string]string{"f": "f644@0.0 n2", "h": "f644@0.0 n2"},
			same:   [][]string{{"f", "h"}},
		},
		{
			name:   "a hardlink replaces a directory containing its target",
			layers: []L{{dir("d/"), reg("d/f")}, {hard("d", "d/f")}},
			want:   map[string]string{"d": "f644@0.1"},
		},
		{
			name:   "a link made before the same layer whites out its target keeps the file, as containerd",
			layers: []L{{reg("f")}, {hard("h", "f"), reg(".wh.f")}},
			want:   map[string]string{"h": "f644@0.0"},
		},
		{
			name:   "a link made after the same layer whited out its target is skipped",
			layers: []L{{reg("f")}, {reg(".wh.f"), hard("h", "f")}},
			want:   map[string]string{},
			warns:  []string{"layer=1 entry=1 name=h"},
		},
		{
			name:   "a whiteout spares a hardlink name its own layer made, even to a lower file",
			layers: []L{{reg("f")}, {hard("h", "f"), reg(".wh.h")}},
			want:   map[string]string{"f": "f644@0.0 n2", "h": "f644@0.0 n2"},
		},
		{
			name:   "an opaque marker spares hardlink names its own layer made",
			layers: []L{{reg("f"), dir("d/"), reg("d/x")}, {dir("d/"), hard("d/h", "f"), reg("d/.wh..wh..opq")}},
			want:   map[string]string{"f": "f644@0.0 n2", "d": "d755", "d/h": "f644@0.0 n2"},
		},
		{
			name:   "the hardlink entry's own metadata does not change the shared node",
			layers: []L{{withMode(reg("f"), 0o600)}, {withMode(hard("h", "f"), 0o777)}},
			want:   map[string]string{"f": "f600@0.0 n2", "h": "f600@0.0 n2"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr, warns := merge(t, tc.layers...)
			if d := diffMaps(dump(tr), tc.want); d != "" {
				t.Errorf("tree differs:\n%s", d)
			}
			for _, g := range tc.same {
				first, _ := lookupPath(tr, g[0])
				for _, p := range g[1:] {
					if id, _ := lookupPath(tr, p); id != first || id == 0 {
						t.Errorf("%s has id %d, %s has %d: want one node", p, id, g[0], first)
					}
				}
			}
			if len(warns) != len(tc.warns) {
				t.Fatalf("got %d warnings, want %d:\n%s", len(warns), len(tc.warns), strings.Join(warns, "\n"))
			}
			for i, w := range tc.warns {
				if !strings.Contains(warns[i], w) {
					t.Errorf("warning %d = %s, want it to contain %q", i, warns[i], w)
				}
			}
		})
	}
}
