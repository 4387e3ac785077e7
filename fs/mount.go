package fs

import (
	"context"
	"hash/fnv"
	"log/slog"
	"sort"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/regfs/regfs/cache"
	"github.com/regfs/regfs/resolver"
)

// forever is how long the kernel may cache what is addressed by digest.
const forever = 365 * 24 * time.Hour

// mount is the state shared by every node of one mount. Its fields are set
// once by Mount; it is safe for concurrent use.
type mount struct {
	res          *resolver.Client
	rootfs       RootfsOpener
	store        *cache.Store
	tagTTL       time.Duration
	mountpoint   string // absolute, for rebase
	rebase       bool   // see Config.RebaseSymlinks
	log          *slog.Logger
	served       atomic.Int64 // bytes of rootfs files returned to readers
	pushed       atomic.Int64 // bytes handed to the kernel ahead of reads (push.go)
	readRequests atomic.Int64 // READ requests for rootfs files
	push         pusher
}

// mountOptions returns the go-fuse options regfs mounts with: read-only,
// nosuid and nodev, type fuse.regfs, kernel caches on (timeouts are set per
// entry: long for what is addressed by digest, the tag TTL above that).
func mountOptions(allowOther bool, log *slog.Logger) *gofs.Options {
	long := forever
	neg := time.Second
	o := &gofs.Options{
		EntryTimeout:    &long,
		AttrTimeout:     &long,
		NegativeTimeout: &neg,
		NullPermissions: true,
	}
	o.MountOptions = fuse.MountOptions{
		FsName:       "regfs",
		Name:         "regfs",
		AllowOther:   allowOther,
		MaxReadAhead: 1 << 20,
		MaxWrite:     1 << 20,
		DirectMount:  true,
		Options:      []string{"ro", "nosuid", "nodev"},
	}
	if allowOther {
		o.MountOptions.Options = append(o.MountOptions.Options, "default_permissions")
	}
	if log != nil {
		o.MountOptions.Logger = slog.NewLogLogger(log.Handler(), slog.LevelDebug)
	}
	return o
}

// expiry is a kernel cache timeout for d. go-fuse reads a zero timeout as
// "unset" and applies the mount's (forever), so "do not cache" is sent as
// one nanosecond.
func expiry(d time.Duration) time.Duration {
	if d <= 0 {
		return time.Nanosecond
	}
	return d
}

// ino derives a stable inode number from a node's identity. Numbers below
// 2 are reserved (1 is the root).
func ino(parts ...string) uint64 {
	h := fnv.New64a()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	v := h.Sum64()
	if v < 2 {
		v += 2
	}
	return v
}

// dirAttr fills the attributes of a synthetic directory.
func dirAttr(a *fuse.Attr, inode uint64) {
	a.Ino = inode
	a.Mode = syscall.S_IFDIR | 0o555
	a.Nlink = 2
}

// fileAttr fills the attributes of a synthetic read-only file.
func fileAttr(a *fuse.Attr, inode uint64, size int64) {
	a.Ino = inode
	a.Mode = syscall.S_IFREG | 0o444
	a.Nlink = 1
	a.Size = uint64(size)
	a.Blocks = (uint64(size) + 511) / 512
}

// dirEntry is one child of a synthetic directory: its name, its type and
// inode number, and how to make its node without asking the registry again.
type dirEntry struct {
	name string
	mode uint32 // S_IFDIR or S_IFREG
	ino  uint64
	// ttl is how long the kernel may cache the entry and its attributes.
	ttl  time.Duration
	node func() gofs.InodeEmbedder
	// size is the file size, for S_IFREG entries.
	size int64
}

// attr fills out for e.
func (e *dirEntry) attr(out *fuse.Attr) {
	if e.mode == syscall.S_IFDIR {
		dirAttr(out, e.ino)
	} else {
		fileAttr(out, e.ino, e.size)
	}
}

// child returns the inode for e under parent, filling out.
func (e *dirEntry) child(ctx context.Context, parent *gofs.Inode, out *fuse.EntryOut) *gofs.Inode {
	e.attr(&out.Attr)
	out.SetEntryTimeout(expiry(e.ttl))
	out.SetAttrTimeout(expiry(e.ttl))
	return parent.NewInode(ctx, e.node(), gofs.StableAttr{Mode: e.mode, Ino: e.ino})
}

// sortEntries sorts a listing by name and drops later duplicates.
func sortEntries(es []dirEntry) []dirEntry {
	sort.SliceStable(es, func(i, j int) bool { return es[i].name < es[j].name })
	out := es[:0]
	for i, e := range es {
		if i > 0 && e.name == es[i-1].name {
			continue
		}
		out = append(out, e)
	}
	return out
}

// find returns the entry named name in a sorted listing.
func find(es []dirEntry, name string) (*dirEntry, bool) {
	i := sort.Search(len(es), func(i int) bool { return es[i].name >= name })
	if i < len(es) && es[i].name == name {
		return &es[i], true
	}
	return nil, false
}

// listing is an open synthetic directory: a snapshot of its entries, read
// with Readdirent, whose READDIRPLUS lookups make nodes from the snapshot
// without a registry request. It is used by one reader at a time (go-fuse
// serialises calls on a directory handle).
type listing struct {
	parent  *gofs.Inode
	entries []dirEntry
	pos     int
}

var (
	_ gofs.FileReaddirenter = (*listing)(nil)
	_ gofs.FileLookuper     = (*listing)(nil)
	_ gofs.FileSeekdirer    = (*listing)(nil)
)

// Readdirent returns the next entry, or nil at the end.
func (l *listing) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if l.pos >= len(l.entries) {
		return nil, 0
	}
	e := &l.entries[l.pos]
	l.pos++
	return &fuse.DirEntry{Name: e.name, Mode: e.mode, Ino: e.ino, Off: uint64(l.pos)}, 0
}

// Seekdir moves to the entry after offset off.
func (l *listing) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	l.pos = int(off)
	return 0
}

// Lookup makes the node of an entry just listed.
func (l *listing) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	e, ok := find(l.entries, name)
	if !ok {
		return nil, syscall.ENOENT
	}
	return e.child(ctx, l.parent, out), 0
}
