package tree

import (
	"archive/tar"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
)

var errTypeflag = errors.New("unsupported typeflag")

// Merge applies layers, base layer first, each a list of tar entries in archive order, and
// returns the merged tree. Entries it cannot apply are skipped with a warning on log (nil
// discards); the only error is a tree too large to number.
func Merge(layers [][]Entry, log *slog.Logger) (*Tree, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &builder{root: newDir(-1), linked: map[dentry]bool{}}
	for li, entries := range layers {
		b.applyLayer(log, li, entries)
	}
	return b.finish()
}

// applyLayer applies one layer's entries in archive order. Whiteouts and opaque markers
// spare what the layer itself wrote, so they act as if applied before its other entries.
func (b *builder) applyLayer(log *slog.Logger, li int, entries []Entry) {
	b.layer = li
	clear(b.linked)
	for i := range entries {
		e := &entries[i]
		comps, err := splitName(e.Name)
		switch {
		case err != nil:
		case len(comps) == 0:
			log.Debug("tree: entry names the root, ignored", "layer", li, "entry", i, "name", e.Name)
			continue
		case strings.HasPrefix(comps[len(comps)-1], whiteoutPrefix):
			err = b.whiteout(comps)
		default:
			err = b.apply(e, li, i, comps)
		}
		if err != nil {
			log.Warn("tree: entry skipped", "layer", li, "entry", i, "name", e.Name, "reason", err.Error())
		}
	}
}

// whiteout applies a ".wh.<name>" or ".wh..wh..opq" entry whose components are comps.
func (b *builder) whiteout(comps []string) error {
	base := comps[len(comps)-1]
	parent, err := b.dir(comps[:len(comps)-1], true, false)
	if err != nil {
		return fmt.Errorf("whiteout: %w", err)
	}
	if base == opaqueMarker {
		b.hideLower(parent)
		return nil
	}
	name := base[len(whiteoutPrefix):]
	if name == "" || name == "." || name == ".." {
		return fmt.Errorf("whiteout names no file, ignored")
	}
	old := parent.children[name]
	if old == nil {
		return nil
	}
	if slices.Contains(b.visited, old) {
		return fmt.Errorf("whiteout names an ancestor of its own path, ignored")
	}
	switch {
	case old.wrote == int32(b.layer) || b.linked[dentry{parent, name}]:
		// written by this very layer: not a lower entry
	case old.holds == int32(b.layer):
		b.hideLower(old) // keep what this layer wrote below it
	default:
		drop(old)
		delete(parent.children, name)
	}
	return nil
}

// nodeType maps an entry's typeflag to the type of node it makes.
func nodeType(e *Entry) (byte, error) {
	switch e.Typeflag {
	case tar.TypeReg, tar.TypeCont, tar.TypeGNUSparse:
		return tar.TypeReg, nil
	case '\x00': // pre-POSIX regular file; a trailing slash meant a directory
		if strings.HasSuffix(e.Name, "/") {
			return tar.TypeDir, nil
		}
		return tar.TypeReg, nil
	case tar.TypeDir, tar.TypeSymlink, tar.TypeLink, tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		return e.Typeflag, nil
	}
	return 0, fmt.Errorf("%w %q", errTypeflag, e.Typeflag)
}

// apply applies a non-whiteout entry (entry i of layer li) whose components are comps.
func (b *builder) apply(e *Entry, li, i int, comps []string) error {
	typ, err := nodeType(e)
	if err != nil {
		return err
	}
	var target *inode
	switch typ {
	case tar.TypeLink:
		if target, err = b.linkTarget(e.Linkname); err != nil {
			return fmt.Errorf("hardlink to %q: %w", e.Linkname, err)
		}
	case tar.TypeSymlink:
		if strings.IndexByte(e.Linkname, 0) >= 0 {
			return fmt.Errorf("symlink target: %w", errNUL)
		}
		if len(e.Linkname) >= maxPath {
			return fmt.Errorf("symlink target: %w", errPathLong)
		}
	}
	parent, err := b.dir(comps[:len(comps)-1], true, true)
	if err != nil {
		return err
	}
	base := comps[len(comps)-1]
	old := parent.children[base]
	var n *inode
	switch typ {
	case tar.TypeDir:
		if old != nil && old.isDir() {
			old.setMeta(e, li, i)
			return nil
		}
		n = &inode{typ: typ}
	case tar.TypeLink:
		if old == target {
			return nil
		}
		n = target
	default:
		n = &inode{typ: typ, nlink: 1}
		switch typ {
		case tar.TypeReg:
			n.size = e.Size
		case tar.TypeSymlink:
			n.linkname = e.Linkname
			n.size = int64(len(e.Linkname))
		case tar.TypeChar, tar.TypeBlock:
			n.devmajor, n.devminor = e.Devmajor, e.Devminor
		}
	}
	if typ == tar.TypeLink {
		n.nlink++
		b.linked[dentry{parent, base}] = true
	} else {
		n.setMeta(e, li, i)
	}
	if old != nil {
		drop(old)
	}
	parent.set(base, n)
	return nil
}

// finish numbers the inodes depth-first with children in name order and freezes them.
func (b *builder) finish() (*Tree, error) {
	type item struct {
		name string
		n    *inode
	}
	type fixup struct {
		node   int      // index in nodes
		inodes []*inode // parallel to nodes[node].Children
	}
	var (
		nodes  []Node
		fixups []fixup
		stack  = []item{{"", b.root}}
	)
	for len(stack) > 0 {
		it := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		n := it.n
		if n.id != 0 {
			continue // another name of a hardlinked file
		}
		if len(nodes) == math.MaxUint32 {
			return nil, errTooManyNodes
		}
		nodes = append(nodes, Node{
			Name: it.name, Typeflag: n.typ, Mode: n.mode, UID: n.uid, GID: n.gid,
			Size: n.size, ModTime: n.mtime, Linkname: n.linkname,
			Devmajor: n.devmajor, Devminor: n.devminor, Xattrs: n.xattrs, Nlink: n.nlink,
			Layer: int(n.layer), Entry: int(n.entry),
		})
		n.id = NodeID(len(nodes))
		if !n.isDir() {
			continue
		}
		names := make([]string, 0, len(n.children))
		for name := range n.children {
			names = append(names, name)
		}
		slices.Sort(names)
		ents := make([]Dirent, len(names))
		inodes := make([]*inode, len(names))
		nlink := uint32(2)
		for i, name := range names {
			c := n.children[name]
			ents[i].Name, inodes[i] = name, c
			if c.isDir() {
				nlink++
			}
		}
		nodes[len(nodes)-1].Children = ents
		nodes[len(nodes)-1].Nlink = nlink
		fixups = append(fixups, fixup{len(nodes) - 1, inodes})
		for i := len(names) - 1; i >= 0; i-- {
			stack = append(stack, item{names[i], inodes[i]})
		}
	}
	for _, f := range fixups {
		ents := nodes[f.node].Children
		for i, c := range f.inodes {
			ents[i].ID = c.id
		}
	}
	return &Tree{nodes: nodes}, nil
}
