package tree

import (
	"archive/tar"
	"io"
	"io/fs"
	"path"
	"strings"
	"syscall"
	"time"
)

// ContentFunc returns the bytes of a regular file node (at least n.Size of them).
type ContentFunc func(id NodeID, n *Node) (io.ReaderAt, error)

// FS returns a read-only io/fs view of t. Symlinks are followed inside the tree (absolute
// targets start at its root, ".." stops there); Lstat and ReadLink do not follow the last
// one. content supplies regular files' bytes; nil reads them as zeros. Devices and fifos
// read as empty files. The view is safe for concurrent use if content is.
func (t *Tree) FS(content ContentFunc) fs.FS {
	return &treeFS{t: t, content: content}
}

type treeFS struct {
	t       *Tree
	content ContentFunc
}

var (
	_ fs.StatFS     = (*treeFS)(nil)
	_ fs.ReadLinkFS = (*treeFS)(nil)
)

// resolve finds name (an fs.ValidPath) in the tree, following symlinks except, unless
// followLast, the one the path ends in.
func (f *treeFS) resolve(op, name string, followLast bool) (NodeID, error) {
	if !fs.ValidPath(name) {
		return 0, &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	var pending []string
	if name != "." {
		pending = strings.Split(name, "/")
	}
	stack := []NodeID{Root}
	hops := 0
	for len(pending) > 0 {
		c := pending[0]
		pending = pending[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(stack) > 1 {
				stack = stack[:len(stack)-1]
			}
			continue
		}
		cur := f.t.Node(stack[len(stack)-1])
		if !cur.IsDir() {
			return 0, &fs.PathError{Op: op, Path: name, Err: syscall.ENOTDIR}
		}
		id, ok := f.t.Lookup(stack[len(stack)-1], c)
		if !ok {
			return 0, &fs.PathError{Op: op, Path: name, Err: fs.ErrNotExist}
		}
		n := f.t.Node(id)
		if n.Typeflag == tar.TypeSymlink && (len(pending) > 0 || followLast) {
			if hops++; hops > maxHops {
				return 0, &fs.PathError{Op: op, Path: name, Err: syscall.ELOOP}
			}
			if strings.HasPrefix(n.Linkname, "/") {
				stack = stack[:1]
			}
			pending = append(strings.Split(n.Linkname, "/"), pending...)
			continue
		}
		stack = append(stack, id)
	}
	return stack[len(stack)-1], nil
}

func (f *treeFS) info(name string, id NodeID) *fileInfo {
	return &fileInfo{name: path.Base(name), id: id, n: f.t.Node(id)}
}

// Open opens name, following symlinks.
func (f *treeFS) Open(name string) (fs.File, error) {
	id, err := f.resolve("open", name, true)
	if err != nil {
		return nil, err
	}
	fi := f.info(name, id)
	switch {
	case fi.n.IsDir():
		return &dirFile{f: f, fi: fi}, nil
	case fi.n.Typeflag != tar.TypeReg:
		return &regFile{fi: fi, r: io.NewSectionReader(zeros{}, 0, 0)}, nil
	}
	var ra io.ReaderAt = zeros{}
	if f.content != nil {
		if ra, err = f.content(id, fi.n); err != nil {
			return nil, &fs.PathError{Op: "open", Path: name, Err: err}
		}
	}
	return &regFile{fi: fi, r: io.NewSectionReader(ra, 0, fi.n.Size)}, nil
}

// Stat returns name's info, following symlinks.
func (f *treeFS) Stat(name string) (fs.FileInfo, error) {
	id, err := f.resolve("stat", name, true)
	if err != nil {
		return nil, err
	}
	return f.info(name, id), nil
}

// Lstat returns name's info without following a final symlink.
func (f *treeFS) Lstat(name string) (fs.FileInfo, error) {
	id, err := f.resolve("lstat", name, false)
	if err != nil {
		return nil, err
	}
	return f.info(name, id), nil
}

// ReadLink returns the target of symlink name as stored.
func (f *treeFS) ReadLink(name string) (string, error) {
	id, err := f.resolve("readlink", name, false)
	if err != nil {
		return "", err
	}
	n := f.t.Node(id)
	if n.FileMode().Type() != fs.ModeSymlink {
		return "", &fs.PathError{Op: "readlink", Path: name, Err: fs.ErrInvalid}
	}
	return n.Linkname, nil
}

// fileInfo is a node seen through one name; it is also its fs.DirEntry.
type fileInfo struct {
	name string
	id   NodeID
	n    *Node
}

func (i *fileInfo) Name() string               { return i.name }
func (i *fileInfo) Size() int64                { return i.n.Size }
func (i *fileInfo) Mode() fs.FileMode          { return i.n.FileMode() }
func (i *fileInfo) ModTime() time.Time         { return i.n.ModTime }
func (i *fileInfo) IsDir() bool                { return i.n.IsDir() }
func (i *fileInfo) Sys() any                   { return i.n }
func (i *fileInfo) Type() fs.FileMode          { return i.n.FileMode().Type() }
func (i *fileInfo) Info() (fs.FileInfo, error) { return i, nil }
func (i *fileInfo) String() string             { return fs.FormatFileInfo(i) }

// regFile is an open non-directory.
type regFile struct {
	fi *fileInfo
	r  *io.SectionReader
}

func (f *regFile) Stat() (fs.FileInfo, error)                { return f.fi, nil }
func (f *regFile) Read(p []byte) (int, error)                { return f.r.Read(p) }
func (f *regFile) ReadAt(p []byte, off int64) (int, error)   { return f.r.ReadAt(p, off) }
func (f *regFile) Seek(off int64, whence int) (int64, error) { return f.r.Seek(off, whence) }
func (f *regFile) Close() error                              { return nil }

// dirFile is an open directory.
type dirFile struct {
	f   *treeFS
	fi  *fileInfo
	off int // entries already returned by ReadDir
}

func (d *dirFile) Stat() (fs.FileInfo, error) { return d.fi, nil }
func (d *dirFile) Close() error               { return nil }
func (d *dirFile) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.fi.name, Err: syscall.EISDIR}
}

// ReadDir implements fs.ReadDirFile.
func (d *dirFile) ReadDir(count int) ([]fs.DirEntry, error) {
	ents := d.fi.n.Children[d.off:]
	if count > 0 && len(ents) == 0 {
		return nil, io.EOF
	}
	if count > 0 && count < len(ents) {
		ents = ents[:count]
	}
	out := make([]fs.DirEntry, len(ents))
	for i, e := range ents {
		out[i] = &fileInfo{name: e.Name, id: e.ID, n: d.f.t.Node(e.ID)}
	}
	d.off += len(ents)
	return out, nil
}

// zeros reads as endless zero bytes.
type zeros struct{}

func (zeros) ReadAt(p []byte, _ int64) (int, error) {
	clear(p)
	return len(p), nil
}
