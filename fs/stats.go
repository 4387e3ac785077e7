package fs

import (
	"context"
	"encoding/json"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/regfs/regfs/cache"
	"github.com/regfs/regfs/resolver"
)

// statsDirName is the directory, outside the registry tree, that holds the
// mount's counters. Repository names cannot start with a dot.
const statsDirName = ".regfs"

// Stats is what a mount has cost so far.
type Stats struct {
	Registry    resolver.Stats `json:"registry"`     // requests made and bytes read
	Cache       cache.Stats    `json:"cache"`        // hits, misses, bytes fetched into it
	BytesServed int64          `json:"bytes_served"` // file bytes returned to readers of rootfs/
	// BytesPushed counts file bytes handed to the kernel's page cache ahead
	// of reads (not in BytesServed), for walks that read file after file.
	BytesPushed int64 `json:"bytes_pushed"`
	// ReadRequests counts the kernel's READ requests for rootfs files: the
	// reads that missed the page cache.
	ReadRequests int64 `json:"read_requests"`
}

// stats returns a snapshot of the mount's counters.
func (m *mount) stats() Stats {
	s := Stats{Registry: m.res.Stats(), BytesServed: m.served.Load(), BytesPushed: m.pushed.Load(), ReadRequests: m.readRequests.Load()}
	if m.store != nil {
		s.Cache = m.store.Stats()
	}
	return s
}

// statsDir is /.regfs/: the file stats, the mount's counters as JSON. It is
// not listed in /, only looked up. It is safe for concurrent use.
type statsDir struct {
	gofs.Inode
	m *mount
}

var (
	_ gofs.NodeLookuper  = (*statsDir)(nil)
	_ gofs.NodeReaddirer = (*statsDir)(nil)
	_ gofs.NodeGetattrer = (*statsDir)(nil)
	_ gofs.NodeGetattrer = (*statsFile)(nil)
	_ gofs.NodeReader    = (*statsFile)(nil)
	_ gofs.NodeOpener    = (*statsFile)(nil)
	_ gofs.NodeStatfser  = (*statsDir)(nil)
)

func statsDirEntry(m *mount) dirEntry {
	return dirEntry{
		name: statsDirName, mode: syscall.S_IFDIR, ttl: forever, ino: ino("stats"),
		node: func() gofs.InodeEmbedder { return &statsDir{m: m} },
	}
}

// Getattr reports a read-only directory.
func (d *statsDir) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	dirAttr(&out.Attr, d.StableAttr().Ino)
	return 0
}

// Statfs reports an empty read-only file system.
func (d *statsDir) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	statfs(out)
	return 0
}

// Readdir lists stats.
func (d *statsDir) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	return gofs.NewListDirStream([]fuse.DirEntry{{Name: "stats", Mode: syscall.S_IFREG, Ino: ino("stats", "file")}}), 0
}

// Lookup finds stats.
func (d *statsDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if name != "stats" {
		return nil, syscall.ENOENT
	}
	child := d.NewInode(ctx, &statsFile{m: d.m}, gofs.StableAttr{Mode: syscall.S_IFREG, Ino: ino("stats", "file")})
	var a fuse.AttrOut
	if e := child.Operations().(*statsFile).Getattr(ctx, nil, &a); e != 0 {
		return nil, e
	}
	out.Attr = a.Attr
	out.SetAttrTimeout(expiry(0))
	return child, 0
}

// statsFile is /.regfs/stats. Each getattr takes a snapshot of the counters
// with the current time as mtime: the kernel asks for attributes on every
// read (the attribute timeout is 0 and mtime changes invalidate cached
// pages), so every read sees current figures. Reads need no open (see
// treeNode.Open). It is safe for concurrent use.
type statsFile struct {
	gofs.Inode
	m *mount

	mu   sync.Mutex
	snap []byte // guarded by mu; the snapshot of the last getattr
}

// Getattr snapshots the counters and reports the snapshot's size.
func (f *statsFile) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	b, err := json.MarshalIndent(f.m.stats(), "", "  ")
	if err != nil {
		return syscall.EIO
	}
	b = append(b, '\n')
	f.mu.Lock()
	f.snap = b
	f.mu.Unlock()
	fileAttr(&out.Attr, f.StableAttr().Ino, int64(len(b)))
	now := time.Now()
	out.SetTimes(nil, &now, &now)
	out.SetTimeout(expiry(0))
	return 0
}

// Read copies from the last snapshot.
func (f *statsFile) Read(ctx context.Context, fh gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	f.mu.Lock()
	b := f.snap
	f.mu.Unlock()
	if off >= int64(len(b)) {
		return fuse.ReadResultData(nil), 0
	}
	return fuse.ReadResultData(b[off:min(off+int64(len(dest)), int64(len(b)))]), 0
}

// Open answers ENOSYS, as treeNode.Open does: reads need no handle.
func (f *statsFile) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	return nil, 0, syscall.ENOSYS
}
