package fs

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"maps"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"sync/atomic"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/regfs/regfs/layers/tree"
	"github.com/regfs/regfs/resolver"
)

// Rootfs is one platform's merged file system: a tree, and the bytes of its
// regular files.
type Rootfs interface {
	Tree() *tree.Tree
	// ReadAt reads from the regular file n with the io.ReaderAt contract.
	ReadAt(ctx context.Context, n *tree.Node, p []byte, off int64) (int, error)
}

// RootfsOpener builds the merged file system of an image manifest, once for
// all callers; later calls return it at once.
type RootfsOpener interface {
	Rootfs(ctx context.Context, ref resolver.Ref, manifest resolver.Descriptor) (Rootfs, error)
}

// rootNodeID is the root of every merged tree.
const rootNodeID = tree.Root

// rootIno is the inode number of a platform's rootfs/ directory.
func rootIno(manifest string) uint64 { return ino("fs", manifest, "1") }

// rootfsRef is the merged file system of one platform, built on first use.
// It is safe for concurrent use.
type rootfsRef struct {
	m        *mount
	ref      resolver.Ref
	manifest resolver.Descriptor
	platform string
	built    atomic.Pointer[Rootfs] // set once the tree is built
}

// get returns the merged file system, building it if need be.
func (r *rootfsRef) get(ctx context.Context) (Rootfs, syscall.Errno) {
	if p := r.built.Load(); p != nil {
		return *p, 0
	}
	fs, err := r.m.rootfs.Rootfs(ctx, r.ref, r.manifest)
	if err != nil {
		return nil, contentErrno(r.m.log, err, "rootfs unavailable",
			"image", r.ref.String(), "platform", r.platform, "manifest", r.manifest.Digest)
	}
	r.built.Store(&fs)
	return fs, 0
}

// treeNode is a file, directory, link or device of a platform's rootfs/
// (the root of the merged tree is rootfs/ itself). It is safe for concurrent
// use (immutable; the tree below it is immutable once built).
type treeNode struct {
	gofs.Inode
	r  *rootfsRef
	id tree.NodeID
	// pushed is set once a file's end was read or its bytes were pushed to
	// the kernel's page cache; pushedTo is how far from 0 pushes of the rest
	// of the file have got (push.go).
	pushed   atomic.Bool
	pushedTo atomic.Int64
}

var (
	_ gofs.NodeLookuper    = (*treeNode)(nil)
	_ gofs.NodeReaddirer   = (*treeNode)(nil)
	_ gofs.NodeGetattrer   = (*treeNode)(nil)
	_ gofs.NodeReadlinker  = (*treeNode)(nil)
	_ gofs.NodeOpener      = (*treeNode)(nil)
	_ gofs.NodeReader      = (*treeNode)(nil)
	_ gofs.NodeGetxattrer  = (*treeNode)(nil)
	_ gofs.NodeListxattrer = (*treeNode)(nil)
	_ gofs.NodeStatfser    = (*treeNode)(nil)
)

func (n *treeNode) ino(id tree.NodeID) uint64 {
	return ino("fs", n.r.manifest.Digest, strconv.FormatUint(uint64(id), 10))
}

// typeBits maps a tree node's type to the S_IF* bits.
func typeBits(t byte) uint32 {
	switch t {
	case tar.TypeDir:
		return syscall.S_IFDIR
	case tar.TypeSymlink:
		return syscall.S_IFLNK
	case tar.TypeChar:
		return syscall.S_IFCHR
	case tar.TypeBlock:
		return syscall.S_IFBLK
	case tar.TypeFifo:
		return syscall.S_IFIFO
	default:
		return syscall.S_IFREG
	}
}

// fill sets a's fields from node t.
func (n *treeNode) fill(a *fuse.Attr, id tree.NodeID, t *tree.Node) {
	a.Ino = n.ino(id)
	a.Mode = typeBits(t.Typeflag) | uint32(t.Mode&0o7777)
	a.Nlink = max(t.Nlink, 1)
	a.Uid = uint32(t.UID)
	a.Gid = uint32(t.GID)
	a.Size = uint64(t.Size)
	if t.Typeflag == tar.TypeSymlink {
		a.Size = uint64(len(n.linkTarget(t)))
	}
	a.Blocks = (a.Size + 511) / 512
	a.Blksize = 4096
	a.Rdev = uint32(unixMkdev(t.Devmajor, t.Devminor))
	mt := t.ModTime
	a.SetTimes(&mt, &mt, &mt)
}

// unixMkdev encodes a device number as Linux does.
func unixMkdev(major, minor int64) uint64 {
	ma, mi := uint64(major), uint64(minor)
	return (mi & 0xff) | (ma&0xfff)<<8 | (mi&^0xff)<<12 | (ma&^0xfff)<<32
}

// Getattr reports the node's attributes. rootfs/ itself answers without
// building the tree until the tree is there.
func (n *treeNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.SetTimeout(forever)
	p := n.r.built.Load()
	if p == nil {
		dirAttr(&out.Attr, n.StableAttr().Ino)
		return 0
	}
	n.fill(&out.Attr, n.id, (*p).Tree().Node(n.id))
	return 0
}

// Lookup finds a child in the merged tree.
func (n *treeNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	fs, e := n.r.get(ctx)
	if e != 0 {
		return nil, e
	}
	t := fs.Tree()
	id, ok := t.Lookup(n.id, name)
	if !ok {
		return nil, syscall.ENOENT
	}
	c := t.Node(id)
	n.fill(&out.Attr, id, c)
	out.SetEntryTimeout(forever)
	out.SetAttrTimeout(forever)
	child := &treeNode{r: n.r, id: id}
	return n.NewInode(ctx, child, gofs.StableAttr{Mode: typeBits(c.Typeflag), Ino: n.ino(id)}), 0
}

// Readdir lists the directory, sorted by name.
func (n *treeNode) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	fs, e := n.r.get(ctx)
	if e != 0 {
		return nil, e
	}
	t := fs.Tree()
	d := t.Node(n.id)
	list := make([]fuse.DirEntry, 0, len(d.Children))
	for _, c := range d.Children {
		list = append(list, fuse.DirEntry{Name: c.Name, Mode: typeBits(t.Node(c.ID).Typeflag), Ino: n.ino(c.ID)})
	}
	return gofs.NewListDirStream(list), 0
}

// Readlink returns a symlink's target as stored in the layer.
func (n *treeNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	fs, e := n.r.get(ctx)
	if e != 0 {
		return nil, e
	}
	t := fs.Tree().Node(n.id)
	if t.Typeflag != tar.TypeSymlink {
		return nil, syscall.EINVAL
	}
	return []byte(n.linkTarget(t)), 0
}

// linkTarget is symlink t's target as served: as stored, or with
// --rebase-symlinks an absolute target moved under this rootfs/ on the host,
// so that tools following it read the image's file, not the host's.
func (n *treeNode) linkTarget(t *tree.Node) string {
	if !n.r.m.rebase || !path.IsAbs(t.Linkname) {
		return t.Linkname
	}
	return filepath.Join(n.rootfsPath(), path.Clean(t.Linkname))
}

// rootfsPath returns the host path of the rootfs/ directory that holds n.
func (n *treeNode) rootfsPath() string {
	in := n.EmbeddedInode()
	for {
		if t, ok := in.Operations().(*treeNode); ok && t.id == rootNodeID {
			break
		}
		_, p := in.Parent()
		if p == nil {
			break
		}
		in = p
	}
	return filepath.Join(n.r.m.mountpoint, in.Path(nil))
}

// Open answers ENOSYS: on that answer the kernel stops sending OPEN and
// RELEASE for every file of the mount (FUSE's no-open mode) and keeps their
// pages cached, which is right for immutable content and saves two requests
// per file read. Reads need no handle; the mount is read-only, so writes
// never get here. Every file node of the mount must therefore work without
// Open (docFile and statsFile do).
func (n *treeNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	return nil, 0, syscall.ENOSYS
}

// Read reads the file's bytes from its layer.
func (n *treeNode) Read(ctx context.Context, f gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	fs, e := n.r.get(ctx)
	if e != 0 {
		return nil, e
	}
	t := fs.Tree().Node(n.id)
	if off >= t.Size {
		return fuse.ReadResultData(nil), 0
	}
	if rest := t.Size - off; int64(len(dest)) > rest {
		dest = dest[:rest]
	}
	data, release, err := readFile(ctx, fs, t, dest, off)
	if err != nil {
		return nil, contentErrno(n.r.m.log, err, "read failed", "image", n.r.ref.String(),
			"platform", n.r.platform, "manifest", n.r.manifest.Digest, "path", n.Path(nil), "off", off)
	}
	k := len(data)
	n.r.m.served.Add(int64(k))
	n.r.m.readRequests.Add(1)
	// Hand the kernel what this reader is likely to read next (push.go).
	if end := off + int64(k); end < t.Size || !n.pushed.Swap(true) {
		n.r.m.push.after(n, end)
	}
	if release != nil {
		return &viewResult{b: data, release: release}, 0
	}
	return fuse.ReadResultData(data), 0
}

// viewer is implemented by a Rootfs that can hand out its decoded bytes
// without a copy (mergedFS). The caller must call release exactly once when
// done with b.
type viewer interface {
	View(ctx context.Context, n *tree.Node, off, size int64) (b []byte, release func(), ok bool, err error)
}

// readFile returns len(dest) bytes of regular file t from off (fewer at its
// end): a view of the layer's decoded bytes where it can, with the release
// the caller must call once done with it, else read into dest (release nil).
func readFile(ctx context.Context, fs Rootfs, t *tree.Node, dest []byte, off int64) ([]byte, func(), error) {
	if v, ok := fs.(viewer); ok {
		if b, release, ok, err := v.View(ctx, t, off, int64(len(dest))); ok || err != nil {
			return b, release, err
		}
	}
	k, err := fs.ReadAt(ctx, t, dest, off)
	if err != nil && !(errors.Is(err, io.EOF) && k == len(dest)) {
		return nil, nil, err
	}
	return dest[:k], nil, nil
}

// viewResult is a READ reply made of a view of a layer's decoded memory,
// which go-fuse writes to the kernel without a copy and then releases (Done):
// the memory is reused after that.
type viewResult struct {
	b       []byte
	release func()
	done    atomic.Bool
}

// Bytes returns the view copied into buf when it fits: a caller that calls Done
// before writing what Bytes returned then still writes the right bytes. (go-fuse
// writes a viewResult with Slices, without a copy.)
func (r *viewResult) Bytes(buf []byte) ([]byte, fuse.Status) {
	if len(buf) >= len(r.b) {
		return buf[:copy(buf, r.b)], fuse.OK
	}
	return r.b, fuse.OK
}

// Slices returns the view, for go-fuse's vectored write.
func (r *viewResult) Slices() ([][]byte, fuse.Status) { return [][]byte{r.b}, fuse.OK }

// Size returns the length of the view.
func (r *viewResult) Size() int { return len(r.b) }

// Done releases the view once go-fuse has written it.
func (r *viewResult) Done() {
	if !r.done.Swap(true) {
		r.release()
	}
}

// Getxattr returns an extended attribute recorded in the layer (PAX).
func (n *treeNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	fs, e := n.r.get(ctx)
	if e != 0 {
		return 0, e
	}
	v, ok := fs.Tree().Node(n.id).Xattrs[attr]
	if !ok {
		return 0, syscall.ENODATA
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

// Listxattr lists the node's extended attributes, NUL-terminated.
func (n *treeNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	fs, e := n.r.get(ctx)
	if e != 0 {
		return 0, e
	}
	var b []byte
	for _, k := range slices.Sorted(maps.Keys(fs.Tree().Node(n.id).Xattrs)) {
		b = append(append(b, k...), 0)
	}
	if len(dest) < len(b) {
		return uint32(len(b)), syscall.ERANGE
	}
	return uint32(copy(dest, b)), 0
}

// Statfs reports an empty read-only file system.
func (n *treeNode) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	statfs(out)
	return 0
}

var _ gofs.NodeFlusher = (*treeNode)(nil)

// Flush answers ENOSYS: a read-only file has nothing to flush, and on ENOSYS
// the kernel stops sending a FLUSH on every close (a fifth of the requests
// of a tree walk).
func (n *treeNode) Flush(ctx context.Context, f gofs.FileHandle) syscall.Errno {
	return syscall.ENOSYS
}
