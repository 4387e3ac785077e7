package tree

import (
	"archive/tar"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// gen generates random well-formed layers on which mutate.Extract follows the OCI rules:
// every layer lists the parents of its entries, no path twice in a layer, whiteouts and
// opaque markers only for lower paths the layer does not otherwise touch, hardlinks only
// to existing files that no later layer replaces or deletes, symlinks never used as
// parents, and no directory that a non-directory replaced ever comes back (Extract would
// resurrect its old contents).
type gen struct {
	r      *rand.Rand
	kind   map[string]byte // the merged tree so far: path -> tar typeflag ("" is the root)
	pinned map[string]bool // names of hardlinked files
	dead   map[string]bool // directories replaced by a non-directory
	clock  int

	// per layer
	out     []tfile
	touched map[string]bool
	whited  map[string]bool
}

func newGen(seed uint64) *gen {
	return &gen{r: rand.New(rand.NewPCG(seed, 7)), kind: map[string]byte{"": tar.TypeDir},
		pinned: map[string]bool{}, dead: map[string]bool{}}
}

// under reports whether q is p or below it.
func under(q, p string) bool { return p == "" || q == p || strings.HasPrefix(q, p+"/") }

func parentOf(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i]
	}
	return ""
}

func (g *gen) any(m map[string]bool, p string, strict bool) bool {
	for q := range m {
		if under(q, p) && !(strict && q == p) {
			return true
		}
	}
	return false
}

// blocked: p or an ancestor was whited out in this layer.
func (g *gen) blocked(p string) bool {
	for q := range g.whited {
		if under(p, q) {
			return true
		}
	}
	return false
}

func (g *gen) deadAt(p string) bool {
	for q := range g.dead {
		if under(p, q) {
			return true
		}
	}
	return false
}

// canPut reports whether an entry of type typ may be written at p in this layer.
func (g *gen) canPut(p string, typ byte) bool {
	if p == "" || g.touched[p] || g.blocked(p) || (typ == tar.TypeDir && g.deadAt(p)) {
		return false
	}
	old, ok := g.kind[p]
	if !ok || (old == tar.TypeDir && typ == tar.TypeDir) {
		return true
	}
	return !g.any(g.pinned, p, false)
}

func (g *gen) header(typ byte, name string) *tar.Header {
	g.clock++
	modes := []int64{0o644, 0o600, 0o755, 0o4755, 0o2755, 0o1777, 0o700}
	h := &tar.Header{Typeflag: typ, Name: name, Mode: modes[g.r.IntN(len(modes))], Uid: g.r.IntN(3), Gid: g.r.IntN(3),
		ModTime: time.Unix(1_600_000_000+int64(g.clock), 0), Format: tar.FormatPAX}
	if typ == tar.TypeDir {
		h.Name += "/"
	}
	if g.r.IntN(8) == 0 {
		h.PAXRecords = map[string]string{"SCHILY.xattr.user.n": fmt.Sprint(g.clock)}
	}
	return h
}

// put writes an entry at p, after the parent directories this layer has not listed yet.
func (g *gen) put(p string, typ byte, linkname string) bool {
	var parents []string
	for q := parentOf(p); q != ""; q = parentOf(q) {
		if !g.touched[q] {
			parents = append(parents, q)
		}
	}
	if !g.canPut(p, typ) {
		return false
	}
	for _, q := range parents {
		if !g.canPut(q, tar.TypeDir) {
			return false
		}
	}
	for _, q := range slices.Backward(parents) {
		g.set(q, tar.TypeDir)
		g.out = append(g.out, tfile{g.header(tar.TypeDir, q), nil})
	}
	g.set(p, typ)
	h := g.header(typ, p)
	var data []byte
	switch typ {
	case tar.TypeReg:
		data = fmt.Appendf(nil, "%s at %d", p, g.clock)
	case tar.TypeSymlink, tar.TypeLink:
		h.Linkname = linkname
	case tar.TypeChar:
		h.Devmajor, h.Devminor = 1, int64(g.clock)
	}
	g.out = append(g.out, tfile{h, data})
	return true
}

// set records that p now has type typ.
func (g *gen) set(p string, typ byte) {
	g.touched[p] = true
	old, ok := g.kind[p]
	if ok && old == tar.TypeDir && typ != tar.TypeDir {
		g.dead[p] = true
		g.remove(p, false)
	}
	g.kind[p] = typ
}

// remove drops p's subtree (strict: only below p), keeping what this layer wrote when
// keepTouched.
func (g *gen) remove(p string, keepTouched bool) {
	for q := range g.kind {
		if under(q, p) && q != p && !(keepTouched && g.touched[q]) {
			delete(g.kind, q)
		}
	}
}

func (g *gen) pick(typ byte) (string, bool) {
	var ps []string
	for p, k := range g.kind {
		if k == typ {
			ps = append(ps, p)
		}
	}
	if len(ps) == 0 {
		return "", false
	}
	slices.Sort(ps)
	return ps[g.r.IntN(len(ps))], true
}

func (g *gen) newPath() string {
	d, _ := g.pick(tar.TypeDir)
	name := string(rune('a' + g.r.IntN(5)))
	if d == "" {
		return name
	}
	return d + "/" + name
}

// layer returns the next layer's entries.
func (g *gen) layer() []tfile {
	g.out, g.touched, g.whited = nil, map[string]bool{}, map[string]bool{}
	for range 8 + g.r.IntN(25) {
		switch op := g.r.IntN(20); {
		case op < 8:
			g.put(g.newPath(), tar.TypeReg, "")
		case op < 12:
			g.put(g.newPath(), tar.TypeDir, "")
		case op < 13:
			target := []string{"a", "/b/c", "/a/b", "x y"}[g.r.IntN(4)]
			g.put(g.newPath(), tar.TypeSymlink, target)
		case op < 14:
			g.put(g.newPath(), []byte{tar.TypeChar, tar.TypeFifo}[g.r.IntN(2)], "")
		case op < 16:
			t, ok := g.pick(tar.TypeReg)
			p := g.newPath()
			if _, exists := g.kind[p]; ok && !exists && t != p && g.put(p, tar.TypeReg, "") {
				// Turn the entry just written into a hardlink to t.
				h := g.out[len(g.out)-1].h
				h.Typeflag, h.Linkname = tar.TypeLink, t
				g.out[len(g.out)-1].data = nil
				g.pinned[t], g.pinned[p] = true, true
			}
		case op < 18:
			p, ok := g.pickAny()
			if !ok || p == "" || g.touched[p] || g.blocked(p) || g.any(g.touched, p, false) || g.any(g.pinned, p, false) {
				continue
			}
			g.out = append(g.out, tfile{g.header(tar.TypeReg, joinWh(p, ".wh."+baseOf(p))), nil})
			delete(g.kind, p)
			g.remove(p, false)
			g.whited[p] = true
		default:
			d, ok := g.pick(tar.TypeDir)
			if !ok || g.blocked(d) || g.any(g.pinned, d, true) {
				continue
			}
			if d != "" && !g.touched[d] && !g.put(d, tar.TypeDir, "") {
				continue
			}
			g.out = append(g.out, tfile{g.header(tar.TypeReg, joinWh(d+"/", ".wh..wh..opq")), nil})
			g.remove(d, true)
		}
	}
	return g.out
}

func (g *gen) pickAny() (string, bool) {
	ps := slices.Sorted(maps.Keys(g.kind))
	if len(ps) == 0 {
		return "", false
	}
	return ps[g.r.IntN(len(ps))], true
}

func baseOf(p string) string { return p[strings.LastIndexByte(p, '/')+1:] }

// joinWh names a marker file: in p's parent for a whiteout, in dir d (ending in "/") for
// an opaque marker.
func joinWh(p, marker string) string {
	if strings.HasSuffix(p, "/") {
		return strings.TrimPrefix(p, "/") + marker
	}
	if par := parentOf(p); par != "" {
		return par + "/" + marker
	}
	return marker
}
