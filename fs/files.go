package fs

import (
	"context"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// docFile is a small read-only file whose bytes come from the resolver: a
// digest, an index, a manifest or a config, byte for byte as the registry
// served it. Its bytes are loaded on first use and kept. It is safe for
// concurrent use.
type docFile struct {
	gofs.Inode
	m    *mount
	ttl  time.Duration
	load func(ctx context.Context) ([]byte, error)

	mu   sync.Mutex
	data []byte // guarded by mu; nil until loaded
}

var (
	_ gofs.NodeGetattrer = (*docFile)(nil)
	_ gofs.NodeOpener    = (*docFile)(nil)
	_ gofs.NodeReader    = (*docFile)(nil)
)

// bytesEntry is a file whose contents are known now.
func bytesEntry(m *mount, name string, b []byte, ttl time.Duration, id ...string) dirEntry {
	return dirEntry{
		name: name, mode: syscall.S_IFREG, ttl: ttl, size: int64(len(b)),
		ino: ino(append([]string{"file", name}, id...)...),
		node: func() gofs.InodeEmbedder {
			return &docFile{m: m, ttl: ttl, data: b}
		},
	}
}

// docEntry is a file whose contents load loads when first read; size is its
// size if known, else -1 (lookups then load it).
func docEntry(m *mount, name string, size int64, ttl time.Duration, id string, load func(context.Context) ([]byte, error)) dirEntry {
	f := &docFile{m: m, ttl: ttl, load: load}
	return dirEntry{
		name: name, mode: syscall.S_IFREG, ttl: ttl, size: size,
		ino:  ino("file", name, id),
		node: func() gofs.InodeEmbedder { return f },
	}
}

// bytes returns the file's contents, loading them once.
func (f *docFile) bytes(ctx context.Context) ([]byte, syscall.Errno) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.data != nil {
		return f.data, 0
	}
	b, err := f.load(ctx)
	if err != nil {
		return nil, contentErrno(f.m.log, err, "document failed", "ino", f.StableAttr().Ino)
	}
	f.data = b
	return b, 0
}

// Getattr reports the file's size, loading it if need be.
func (f *docFile) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	b, e := f.bytes(ctx)
	if e != 0 {
		return e
	}
	fileAttr(&out.Attr, f.StableAttr().Ino, int64(len(b)))
	out.SetTimeout(expiry(f.ttl))
	return 0
}

// Open answers ENOSYS, as treeNode.Open does: the kernel then reads without
// opening, keeping the pages (the bytes never change for this inode).
func (f *docFile) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	return nil, 0, syscall.ENOSYS
}

// Read copies from the loaded bytes.
func (f *docFile) Read(ctx context.Context, fh gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	b, e := f.bytes(ctx)
	if e != 0 {
		return nil, e
	}
	if off >= int64(len(b)) {
		return fuse.ReadResultData(nil), 0
	}
	end := min(off+int64(len(dest)), int64(len(b)))
	return fuse.ReadResultData(b[off:end]), 0
}
