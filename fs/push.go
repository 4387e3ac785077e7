package fs

import (
	"archive/tar"
	"context"
	"sort"
	"sync"
	"time"

	"github.com/regfs/regfs/layers/tree"
)

// A walk of a rootfs (tar, diff -r, a scanner) reads thousands of files one
// after another, each read a round trip through the kernel during which the
// reader waits for regfs. The pusher takes most of those trips off the
// reader's path: after a read, it hands the kernel what the reader is likely
// to read next, with FUSE's NOTIFY_STORE, so that the reader finds it in the
// page cache:
//
//   - the rest of the file, up to pushAhead bytes past the read;
//   - once a file was read to its end, the small files after it in its
//     directory, in name order (the order of readdir, and of most layers).
//
// It pushes only bytes the layers hold decoded in memory or are decoding
// already (it waits for those): it starts no decode and no fetch of its own,
// so a lone small `cat` costs nothing more. As a read would, a push moving
// forward through a layer counts as a walk and lets the layer decode ahead
// (a reader of the first MiBs of a large file may cost a few MiB of decoding
// more). It pushes only to inodes the kernel knows (listed by READDIRPLUS or
// looked up). Content is immutable and the mount keeps the page cache
// (no-open mode), so a pushed page is always right and stays until the
// kernel reclaims it.
const (
	pushAhead    = 2 << 20   // bytes of a file pushed past a read of it
	pushMaxFile  = 256 << 10 // larger siblings are left to the kernel's read-ahead
	pushMaxFiles = 1024      // siblings per trigger
	pushMaxBytes = 8 << 20   // sibling bytes per trigger
	pushBuf      = 1 << 20
	pushWait     = 30 * time.Second // at most, for a decode in flight
)

// cachedReader is implemented by a Rootfs that can read without decoding
// (mergedFS).
type cachedReader interface {
	// ReadCached reads from regular file n only what is decoded in memory
	// or being decoded; ok is false if any byte is neither.
	ReadCached(ctx context.Context, n *tree.Node, p []byte, off int64) (k int, ok bool)
	// ViewCached is ReadCached without a copy, for a range held in one
	// piece; ok is false otherwise (use ReadCached). The caller must call
	// release exactly once when done with b.
	ViewCached(ctx context.Context, n *tree.Node, off, size int64) (b []byte, release func(), ok bool)
}

// pusher pushes on one goroutine per mount, started on demand. Triggers that
// come while it is busy are coalesced: only the newest is handled.
type pusher struct {
	mu      sync.Mutex
	next    *treeNode // guarded by mu; the file read last, not yet handled
	nextEnd int64     // guarded by mu; where that read ended
	running bool      // guarded by mu
	buf     []byte    // the goroutine's
}

// after notes that a read of file n ended at end.
func (p *pusher) after(n *treeNode, end int64) {
	p.mu.Lock()
	p.next, p.nextEnd = n, end
	if p.running {
		p.mu.Unlock()
		return
	}
	p.running = true
	p.mu.Unlock()
	go p.run()
}

func (p *pusher) run() {
	if p.buf == nil {
		p.buf = make([]byte, pushBuf)
	}
	for {
		p.mu.Lock()
		n, end := p.next, p.nextEnd
		p.next = nil
		if n == nil {
			p.running = false
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		p.push(n, end)
	}
}

// push pushes what follows a read of n that ended at end.
func (p *pusher) push(n *treeNode, end int64) {
	// Waits are for decodes already running, which end or fail on their
	// own; the bound is a backstop.
	ctx, cancel := context.WithTimeout(context.Background(), pushWait)
	defer cancel()
	built := n.r.built.Load()
	if built == nil {
		return
	}
	cr, ok := (*built).(cachedReader)
	if !ok {
		return
	}
	t := (*built).Tree()
	if f := t.Node(n.id); end < f.Size {
		p.pushRest(ctx, cr, n, f, end)
		return
	}
	p.pushSiblings(ctx, cr, t, n)
}

// pushRest pushes up to pushAhead bytes of file n (node f) from end, while
// they are in memory.
func (p *pusher) pushRest(ctx context.Context, cr cachedReader, n *treeNode, f *tree.Node, end int64) {
	from, to := max(end, n.pushedTo.Load()), min(f.Size, end+pushAhead)
	for from < to {
		b, release, ok := p.inMemory(ctx, cr, f, from, to-from)
		if !ok {
			return
		}
		errno := n.WriteCache(from, b)
		k := int64(len(b))
		release()
		if errno != 0 {
			n.r.m.log.Debug("push to page cache failed", "path", n.Path(nil), "off", from, "errno", errno)
			return
		}
		n.r.m.pushed.Add(k)
		from += k
		n.pushedTo.Store(from)
	}
}

// inMemory returns up to size bytes of file f from off (at least one byte, or
// ok false) from what its layer holds in memory: a view of one decoded unit
// where it can, else a copy in p.buf; and the release the caller must call
// once done with them.
func (p *pusher) inMemory(ctx context.Context, cr cachedReader, f *tree.Node, off, size int64) ([]byte, func(), bool) {
	size = min(size, f.Size-off)
	if b, release, ok := cr.ViewCached(ctx, f, off, size); ok {
		return b, release, true
	}
	for _, n := range []int64{int64(len(p.buf)), 64 << 10} { // less if the range ends in a unit not decoded yet
		if k, ok := cr.ReadCached(ctx, f, p.buf[:min(n, size)], off); ok {
			return p.buf[:k], func() {}, true
		}
	}
	return nil, nil, false
}

// pushSiblings pushes the small regular files after n in its directory, in
// name order, until one is not in memory.
func (p *pusher) pushSiblings(ctx context.Context, cr cachedReader, t *tree.Tree, n *treeNode) {
	name, parent := n.Parent()
	if parent == nil {
		return
	}
	dir, ok := parent.Operations().(*treeNode)
	if !ok {
		return
	}
	kids := t.Node(dir.id).Children
	i := sort.Search(len(kids), func(i int) bool { return kids[i].Name > name })
	files, bytes := 0, 0
	for _, d := range kids[i:] {
		if files >= pushMaxFiles || bytes >= pushMaxBytes {
			return
		}
		in := parent.GetChild(d.Name)
		if in == nil {
			continue // the kernel does not know it: nothing to push to
		}
		c, ok := in.Operations().(*treeNode)
		if !ok || c.pushed.Load() {
			continue
		}
		f := t.Node(c.id) // the node the inode is for
		if f.Typeflag != tar.TypeReg || f.Size == 0 || f.Size > pushMaxFile {
			continue
		}
		b, release, ok := p.inMemory(ctx, cr, f, 0, f.Size)
		if !ok {
			return // the walk has not got there yet
		}
		if int64(len(b)) < f.Size {
			release()
			return
		}
		c.pushed.Store(true)
		errno := in.WriteCache(0, b)
		k := len(b)
		release()
		if errno != 0 {
			n.r.m.log.Debug("push to page cache failed", "path", in.Path(nil), "errno", errno)
			continue
		}
		n.r.m.pushed.Add(int64(k))
		files, bytes = files+1, bytes+k
	}
}
