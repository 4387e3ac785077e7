package tree

import (
	"archive/tar"
	"errors"
	"strings"
	"time"
)

// Limits on names, as Linux enforces them on extraction.
const (
	maxComponent = 255  // NAME_MAX
	maxPath      = 4096 // PATH_MAX
	maxHops      = 255  // symlinks followed while resolving one name
)

const (
	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"
)

var (
	errEmptyName    = errors.New("empty name")
	errNUL          = errors.New("name contains a NUL byte")
	errPathLong     = errors.New("name longer than 4096 bytes")
	errCompLong     = errors.New("name component longer than 255 bytes")
	errEndsDotDot   = errors.New(`name ends in ".."`)
	errLoop         = errors.New("too many levels of symbolic links")
	errNotDir       = errors.New("a parent is not a directory")
	errLinkMissing  = errors.New("hardlink target does not exist")
	errLinkDir      = errors.New("hardlink target is a directory")
	errTooManyNodes = errors.New("more nodes than NodeID can number")
)

// epoch is the mtime of directories the merge creates implicitly.
var epoch = time.Unix(0, 0).UTC()

// inode is a file of the tree under construction. Directory entries point to inodes, so
// hardlinks are several entries pointing to one inode.
type inode struct {
	typ                byte
	nlink              uint32 // names pointing here (non-directories)
	id                 NodeID // assigned by finish
	mode               int64
	uid, gid           int
	size               int64
	mtime              time.Time
	linkname           string
	devmajor, devminor int64
	xattrs             map[string]string
	layer, entry       int32
	// wrote is the last layer whose entry (or implied parent) created or updated this
	// node; holds, the last layer that wrote something below this directory. A whiteout
	// hides neither from the same layer. A hardlink name is tracked in builder.linked.
	wrote, holds int32
	children     map[string]*inode // directories only; allocated on first insert
}

func newDir(layer int) *inode {
	return &inode{typ: tar.TypeDir, mode: 0o755, mtime: epoch, layer: -1, entry: -1,
		wrote: int32(layer), holds: -1}
}

// setMeta copies e's metadata (not its type or data) into n.
func (n *inode) setMeta(e *Entry, layer, entry int) {
	n.mode = e.Mode & 0o7777
	n.uid, n.gid = e.UID, e.GID
	n.mtime = e.ModTime
	n.xattrs = e.Xattrs
	n.layer, n.entry = int32(layer), int32(entry)
	n.wrote = int32(layer)
}

func (n *inode) isDir() bool { return n.typ == tar.TypeDir }

func (n *inode) set(name string, c *inode) {
	if n.children == nil {
		n.children = make(map[string]*inode)
	}
	n.children[name] = c
}

// drop accounts for n leaving the tree through one name: a non-directory loses a link,
// a directory's whole subtree loses theirs. Iterative: trees may be deep.
func drop(n *inode) {
	stack := []*inode{n}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if !n.isDir() {
			n.nlink--
			continue
		}
		for _, c := range n.children {
			stack = append(stack, c)
		}
	}
}

// splitName validates an archive name and returns its components with empty and "."
// components removed ("" for the root: no components).
func splitName(name string) ([]string, error) {
	switch {
	case name == "":
		return nil, errEmptyName
	case strings.IndexByte(name, 0) >= 0:
		return nil, errNUL
	case len(name) > maxPath:
		return nil, errPathLong
	}
	comps := make([]string, 0, strings.Count(name, "/")+1)
	for c := range strings.SplitSeq(name, "/") {
		if c == "" || c == "." {
			continue
		}
		if len(c) > maxComponent {
			return nil, errCompLong
		}
		comps = append(comps, c)
	}
	if len(comps) > 0 && comps[len(comps)-1] == ".." {
		return nil, errEndsDotDot
	}
	return comps, nil
}

// pathElem is one component of a resolved path; n is nil when it does not exist (yet).
type pathElem struct {
	name string
	n    *inode
}

// dentry names one directory entry.
type dentry struct {
	dir  *inode
	name string
}

// builder holds the tree under construction. It is not safe for concurrent use.
type builder struct {
	root    *inode
	layer   int             // the layer being applied
	linked  map[dentry]bool // hardlink names the current layer made
	stack   []pathElem      // scratch for walk
	visited []*inode        // directories the last walk went through
}

// own reports whether the current layer wrote name (child c of dir), or something below it.
func (b *builder) own(dir *inode, name string, c *inode) bool {
	l := int32(b.layer)
	return c.wrote == l || c.holds == l || (len(b.linked) > 0 && b.linked[dentry{dir, name}])
}

// hideLower removes from directory d what lower layers put there, keeping what the
// current layer wrote and the directories that lead to it.
func (b *builder) hideLower(d *inode) {
	stack := []*inode{d}
	for len(stack) > 0 {
		d := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for name, c := range d.children {
			if !b.own(d, name, c) {
				drop(c)
				delete(d.children, name)
			} else if c.isDir() {
				stack = append(stack, c)
			}
		}
	}
}

// walk resolves comps as a directory path inside the root, following every symlink, with
// securejoin semantics: ".." never leaves the root, absolute symlink targets restart at
// the root, and components past a missing one are kept lexically. The result is the
// resolved path from the root (excluded); it aliases b.stack.
func (b *builder) walk(comps []string) ([]pathElem, error) {
	stack := b.stack[:0]
	b.visited = b.visited[:0]
	pending := comps
	hops := 0
	for len(pending) > 0 {
		c := pending[0]
		pending = pending[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
			continue
		}
		if len(c) > maxComponent { // from a symlink's target
			b.stack = stack
			return nil, errCompLong
		}
		cur := b.root
		if len(stack) > 0 {
			cur = stack[len(stack)-1].n
		}
		var child *inode
		if cur != nil {
			if !cur.isDir() {
				b.stack = stack
				return nil, errNotDir
			}
			child = cur.children[c]
		}
		if child != nil && child.typ == tar.TypeSymlink {
			if hops++; hops > maxHops {
				b.stack = stack
				return nil, errLoop
			}
			target := child.linkname
			if strings.HasPrefix(target, "/") {
				stack = stack[:0]
			}
			pending = append(strings.Split(target, "/"), pending...)
			continue
		}
		stack = append(stack, pathElem{c, child})
		if child != nil {
			b.visited = append(b.visited, child)
		}
	}
	b.stack = stack
	return stack, nil
}

// dir resolves comps to a directory. With create, missing directories are made (0755,
// root owned); without, a missing directory yields (nil, nil). With mark, every directory
// on the way is marked as holding the current layer's writes.
func (b *builder) dir(comps []string, create, mark bool) (*inode, error) {
	path, err := b.walk(comps)
	if err != nil {
		return nil, err
	}
	cur := b.root
	for _, e := range path {
		n := e.n
		if n == nil {
			if !create {
				return nil, nil
			}
			n = newDir(b.layer)
			cur.set(e.name, n)
		}
		if !n.isDir() {
			return nil, errNotDir
		}
		if mark {
			n.holds = int32(b.layer)
		}
		cur = n
	}
	return cur, nil
}

// linkTarget finds the inode a hardlink entry names, clamped inside the root; its last
// component is not followed, as link(2) does not follow it.
func (b *builder) linkTarget(linkname string) (*inode, error) {
	comps, err := splitName(linkname)
	if err != nil {
		return nil, err
	}
	if len(comps) == 0 {
		return nil, errLinkDir
	}
	parent, err := b.dir(comps[:len(comps)-1], false, false)
	if err != nil {
		return nil, err
	}
	if parent == nil {
		return nil, errLinkMissing
	}
	t := parent.children[comps[len(comps)-1]]
	switch {
	case t == nil:
		return nil, errLinkMissing
	case t.isDir():
		return nil, errLinkDir
	}
	return t, nil
}
