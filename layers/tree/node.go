package tree

import (
	"archive/tar"
	"io/fs"
	"slices"
	"strings"
	"time"
)

// NodeID names a node of a Tree. IDs are dense, start at Root and are shared by all the
// names of a hardlinked file. Zero is never a valid ID.
type NodeID uint32

// Root is the NodeID of the tree's root directory.
const Root NodeID = 1

// Dirent is one name in a directory. Several Dirents may carry the same ID (hardlinks).
type Dirent struct {
	Name string
	ID   NodeID
}

// Node is a file of the merged tree. Hardlinks are resolved: a Node is never of type
// tar.TypeLink, and all names of a hardlinked file share one Node.
type Node struct {
	// Name is the node's name in its directory; for a hardlinked file, the name found
	// first depth-first in name order ("" for the root). Use the Dirent for the name a
	// lookup went through.
	Name     string
	Typeflag byte  // tar.TypeReg, TypeDir, TypeSymlink, TypeChar, TypeBlock or TypeFifo
	Mode     int64 // permission and special bits (07777); the type is in Typeflag
	UID, GID int
	// Size is the logical size of a regular file, the target's length for a symlink, and
	// 0 otherwise.
	Size    int64
	ModTime time.Time
	// Linkname is a symlink's target exactly as stored (never resolved).
	Linkname           string
	Devmajor, Devminor int64
	Xattrs             map[string]string // nil when the entry had none; read only
	// Nlink is the number of names of a non-directory, and 2 + the number of
	// subdirectories for a directory.
	Nlink uint32
	// Layer and Entry locate the tar entry that holds a regular file's data (and that
	// last set a node's metadata); both are -1 for directories the merge created
	// implicitly and for the root.
	Layer, Entry int
	// Children lists a directory's entries sorted by name; nil otherwise.
	Children []Dirent
}

// IsDir reports whether n is a directory.
func (n *Node) IsDir() bool { return n.Typeflag == tar.TypeDir }

// FileMode returns n's type and permission bits as an fs.FileMode.
func (n *Node) FileMode() fs.FileMode {
	m := fs.FileMode(n.Mode & 0o777)
	if n.Mode&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if n.Mode&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if n.Mode&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	switch n.Typeflag {
	case tar.TypeDir:
		m |= fs.ModeDir
	case tar.TypeSymlink:
		m |= fs.ModeSymlink
	case tar.TypeChar:
		m |= fs.ModeDevice | fs.ModeCharDevice
	case tar.TypeBlock:
		m |= fs.ModeDevice
	case tar.TypeFifo:
		m |= fs.ModeNamedPipe
	}
	return m
}

// Tree is a merged layer tree. It is immutable and safe for concurrent use.
type Tree struct {
	nodes []Node // nodes[id-1]
}

// Node returns the node with the given ID, or nil if there is none.
func (t *Tree) Node(id NodeID) *Node {
	if id == 0 || int(id) > len(t.nodes) {
		return nil
	}
	return &t.nodes[id-1]
}

// Lookup finds name in directory dir. It reports false if dir is not a directory or has
// no such entry. It does not follow symlinks.
func (t *Tree) Lookup(dir NodeID, name string) (NodeID, bool) {
	d := t.Node(dir)
	if d == nil {
		return 0, false
	}
	i, ok := slices.BinarySearchFunc(d.Children, name, func(e Dirent, name string) int {
		return strings.Compare(e.Name, name)
	})
	if !ok {
		return 0, false
	}
	return d.Children[i].ID, true
}

// Len returns the number of nodes (distinct files) in the tree, the root included.
func (t *Tree) Len() int { return len(t.nodes) }
