package fs

import (
	"archive/tar"
	"sort"
	"sync"

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
// It pushes only bytes the layers hold decoded in memory: it never decodes,
// fetches or waits, so a lone `cat` costs nothing more. It pushes only to
// inodes the kernel knows (listed by READDIRPLUS or looked up). Content is
// immutable and the mount keeps the page cache (no-open mode), so a pushed
// page is always right and stays until the kernel reclaims it.
const (
	pushAhead    = 2 << 20   // bytes of a file pushed past a read of it
	pushMaxFile  = 256 << 10 // larger siblings are left to the kernel's read-ahead
	pushMaxFiles = 1024      // siblings per trigger
	pushMaxBytes = 8 << 20   // sibling bytes per trigger
	pushBuf      = 1 << 20
)

// cachedReader is implemented by a Rootfs that can read without decoding
// (mergedFS).
type cachedReader interface {
	// ReadCached reads from regular file n only what is decoded in memory;
	// ok is false if any byte is not.
	ReadCached(n *tree.Node, p []byte, off int64) (k int, ok bool)
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
		p.pushRest(cr, n, f, end)
		return
	}
	p.pushSiblings(cr, t, n)
}

// pushRest pushes up to pushAhead bytes of file n (node f) from end, while
// they are in memory.
func (p *pusher) pushRest(cr cachedReader, n *treeNode, f *tree.Node, end int64) {
	from, to := max(end, n.pushedTo.Load()), min(f.Size, end+pushAhead)
	for from < to {
		k, ok := cr.ReadCached(f, p.buf[:min(int64(len(p.buf)), to-from)], from)
		if !ok {
			// The range may end in a unit not decoded yet: try less.
			if k, ok = cr.ReadCached(f, p.buf[:min(64<<10, to-from)], from); !ok {
				return
			}
		}
		if errno := n.WriteCache(from, p.buf[:k]); errno != 0 {
			n.r.m.log.Debug("push to page cache failed", "path", n.Path(nil), "off", from, "errno", errno)
			return
		}
		n.r.m.pushed.Add(int64(k))
		from += int64(k)
		n.pushedTo.Store(from)
	}
}

// pushSiblings pushes the small regular files after n in its directory, in
// name order, until one is not in memory.
func (p *pusher) pushSiblings(cr cachedReader, t *tree.Tree, n *treeNode) {
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
		f := t.Node(d.ID)
		if f.Typeflag != tar.TypeReg || f.Size == 0 || f.Size > pushMaxFile {
			continue
		}
		in := parent.GetChild(d.Name)
		if in == nil {
			continue // the kernel does not know it: nothing to push to
		}
		c, ok := in.Operations().(*treeNode)
		if !ok || c.pushed.Load() {
			continue
		}
		k, ok := cr.ReadCached(f, p.buf[:f.Size], 0)
		if !ok {
			return // the walk has not got there yet
		}
		c.pushed.Store(true)
		if errno := in.WriteCache(0, p.buf[:k]); errno != 0 {
			n.r.m.log.Debug("push to page cache failed", "path", in.Path(nil), "errno", errno)
			continue
		}
		n.r.m.pushed.Add(int64(k))
		files, bytes = files+1, bytes+k
	}
}
