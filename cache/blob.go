package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
)

// DefaultChunkSize is the size of a Blob's chunks unless WithChunkSize says otherwise.
const DefaultChunkSize = 1 << 20

// ErrCorrupt is wrapped by the error of a read whose chunk, fetched from the source, failed
// the Blob's verification (see WithVerify). Such a chunk is neither stored nor served.
var ErrCorrupt = errors.New("cache: chunk does not match its recorded digest")

// RangeSource is a blob on a registry (implemented by resolver).
//
// A Blob resumes a fetch whose body fails soon and part-way with io.ErrUnexpectedEOF or a
// connection reset (see fetch.go); it never resumes after a failed Fetch (the source's own
// retries are done), a context error, or an error with a Stalled() bool method that
// reports true. (resolver fails a stalled body with an ErrUnavailable error that wraps
// neither resumed kind, so a stall is never resumed.)
type RangeSource interface {
	// Fetch returns a body of the blob starting at start <= off and covering at least
	// [off, off+n) unless the blob ends first. A registry that ignores Range gives start=0.
	Fetch(ctx context.Context, off, n int64) (body io.ReadCloser, start int64, err error)
}

// VerifyFunc checks chunk number chunk of a blob, as fetched from its source, and returns
// an error if its bytes are wrong.
type VerifyFunc func(chunk int64, b []byte) error

// BlobOption configures a Blob.
type BlobOption func(*Blob)

// WithChunkSize sets the chunk size in bytes; n <= 0 keeps DefaultChunkSize. All Blobs of one
// digest on one store must use the same chunk size: a chunk of another size is refetched.
func WithChunkSize(n int64) BlobOption {
	return func(b *Blob) {
		if n > 0 {
			b.chunk = n
		}
	}
}

// WithCoarse makes the Blob, whose own chunks (WithChunkSize) are smaller, look for a
// missing chunk's bytes in the chunks of coarse bytes that another Blob of the same digest
// stored at that size (the index pass's, at DefaultChunkSize) before fetching it. Its own
// chunks are stored as KindFineChunk, apart from those coarse ones (KindChunk). A read
// then costs the registry only the fine chunks it needs that no chunk of either size
// holds. coarse must be a multiple of the chunk size larger than it; otherwise the option
// is ignored and the Blob stores its chunks as KindChunk, as without it. All fine Blobs
// of one digest on one store must use the same chunk size.
func WithCoarse(coarse int64) BlobOption {
	return func(b *Blob) { b.coarse = coarse }
}

// WithVerify makes the Blob check every chunk it fetches from its source with verify before
// storing or serving it (layers.Index.VerifyChunk, for instance). A chunk that fails is
// neither stored nor served: the reads that need it fail with an error wrapping ErrCorrupt
// (and the next read fetches it again). Chunks read from the store are not checked again:
// the store's checksum protects them. nil checks nothing.
func WithVerify(verify VerifyFunc) BlobOption {
	return func(b *Blob) { b.verify = verify }
}

// Blob is random access to one remote blob through a Store, in fixed aligned chunks. It is
// safe for concurrent use.
type Blob struct {
	s      *Store
	src    RangeSource
	digest string
	size   int64
	chunk  int64
	// coarse is the size of the KindChunk chunks read before fetching (WithCoarse), or 0.
	// invariant: coarse == 0, or coarse > chunk and coarse%chunk == 0.
	coarse int64
	kind   Kind       // of the Blob's own chunks: KindFineChunk if coarse > 0, else KindChunk
	verify VerifyFunc // nil: fetched chunks are trusted
	log    *slog.Logger

	running sync.WaitGroup // fetch goroutines

	mu       sync.Mutex
	inflight map[int64]*call // guarded by mu; chunk number -> its running fetch
	epoch    uint64          // guarded by mu and storeMu (both held to write); Purge counts
	// memo holds the chunks read from the store most recently (most recent
	// first), kept so that reads smaller than a chunk (a decoder's) do not
	// read and check the same file again and again: with a coarse grain,
	// the 32 fine chunks of a coarse one cost one file read. Four, for the
	// decoders moving forward side by side (a reader and a layer's two
	// decoding ahead). Guarded by mu; cleared by Purge and PurgeRange.
	memo [memoChunks]memoChunk
	// seqEnd is where the last ReadAt ended, seqRun how many bytes the
	// reads up to it have read in order, raNext the first chunk not yet
	// requested ahead of them (see readAhead). Guarded by mu.
	seqEnd, seqRun, raNext int64

	// storeMu is held shared while a fetch stores a chunk and exclusively by Purge, so that
	// a fetch started before a Purge never stores a chunk after it.
	storeMu sync.RWMutex
}

// memoChunks is how many chunks read from the store a Blob keeps (Blob.memo).
const memoChunks = 4

// memoChunk is a chunk read from the store: chunk n of the Blob's own grain, or of its
// coarse grain. data nil: an empty slot.
type memoChunk struct {
	coarse bool
	n      int64
	data   []byte
}

// call is one chunk being fetched. data and err are written once, before done is closed.
type call struct {
	done chan struct{}
	data []byte
	err  error
}

func (c *call) finish(data []byte, err error) {
	c.data, c.err = data, err
	close(c.done)
}

// chunkRef is a chunk a read needs: its bytes, or the fetch that will deliver them.
type chunkRef struct {
	data []byte
	c    *call
}

// wait returns the chunk's bytes, or ctx.Err() as soon as ctx ends.
func (r chunkRef) wait(ctx context.Context) ([]byte, error) {
	if r.c == nil {
		return r.data, nil
	}
	select {
	case <-r.c.done:
		return r.c.data, r.c.err
	default:
	}
	select {
	case <-r.c.done:
		return r.c.data, r.c.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// NewBlob returns random access to the blob digest of size bytes, read from src through s.
func NewBlob(s *Store, src RangeSource, digest string, size int64, opts ...BlobOption) *Blob {
	b := &Blob{
		s:        s,
		src:      src,
		digest:   digest,
		size:     size,
		chunk:    DefaultChunkSize,
		inflight: make(map[int64]*call),
	}
	for _, o := range opts {
		o(b)
	}
	if b.coarse <= b.chunk || b.coarse%b.chunk != 0 {
		b.coarse = 0
	}
	b.kind = KindChunk
	if b.coarse > 0 {
		b.kind = KindFineChunk
	}
	b.log = s.log.With("digest", digest)
	return b
}

// Size returns the blob's size.
func (b *Blob) Size() int64 { return b.size }

// Digest returns the blob's digest.
func (b *Blob) Digest() string { return b.digest }

// ChunkSize returns the size of the blob's chunks.
func (b *Blob) ChunkSize() int64 { return b.chunk }

// Purge deletes the blob's chunks from the store, of every grain (KindChunk and
// KindFineChunk), for a caller that found the blob's bytes wrong as a whole (a digest or
// size mismatch after a full pass): the chunks stored on the way must not be served again.
// Fetches running at the time still deliver to the reads waiting for them but store
// nothing; later reads fetch again. It returns the errors of the deletions that failed.
func (b *Blob) Purge() error {
	return b.purge(func() []Key { return b.s.keysOf(b.digest, KindChunk, KindFineChunk) }, "blob purged")
}

// PurgeRange deletes the chunks that hold any byte of [off, off+n) from the store and
// from memory, for a caller that found those bytes wrong (a TOC chunk that fails its
// digest): the next read of them fetches them again. It deletes the chunks of the Blob's
// own grain and, with WithCoarse, of its coarse grain. Like Purge, fetches running at the
// time store nothing. It returns the errors of the deletions that failed.
func (b *Blob) PurgeRange(off, n int64) error {
	off, end := max(off, 0), min(off+n, b.size)
	if off >= end {
		return nil
	}
	return b.purge(func() []Key {
		var keys []Key
		for c := off / b.chunk; c <= (end-1)/b.chunk; c++ {
			keys = append(keys, b.key(c))
		}
		if b.coarse > 0 {
			for c := off / b.coarse; c <= (end-1)/b.coarse; c++ {
				keys = append(keys, b.coarseKey(c))
			}
		}
		return keys
	}, "blob range purged", "off", off, "end", end)
}

// purge stops running fetches from storing, forgets the chunks in memory and deletes
// the keys listed by keys from the store, logging msg with attrs.
func (b *Blob) purge(keys func() []Key, msg string, attrs ...any) error {
	b.storeMu.Lock()
	defer b.storeMu.Unlock()
	b.mu.Lock()
	b.epoch++
	clear(b.inflight)
	b.memo = [memoChunks]memoChunk{}
	b.mu.Unlock()
	var errs []error
	ks := keys()
	for _, k := range ks {
		if err := b.s.Delete(k); err != nil {
			errs = append(errs, err)
		}
	}
	b.log.Info("cache: "+msg, append(attrs, "chunks", len(ks), "errors", len(errs))...)
	return errors.Join(errs...)
}

// ReadAt reads len(p) bytes at off, with the io.ReaderAt contract: n < len(p) only with an
// error, io.EOF when the blob ends first. The chunks it needs that the store lacks are fetched,
// adjacent ones in one request; it returns ctx.Err() when ctx ends first, without cancelling
// fetches other readers share. Reads that go on in order make it fetch ahead (readAhead).
func (b *Blob) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("cache: blob %s: negative offset %d", b.digest, off)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if off >= b.size {
		return 0, io.EOF
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	end := min(off+int64(len(p)), b.size)
	first, last := off/b.chunk, (end-1)/b.chunk
	refs := b.start(ctx, first, last, 0)
	b.readAhead(ctx, off, end, last)
	n := 0
	for i, r := range refs {
		data, err := r.wait(ctx)
		if err != nil {
			return n, err
		}
		c := first + int64(i)
		lo := max(off, c*b.chunk) - c*b.chunk
		hi := min(end, c*b.chunk+int64(len(data))) - c*b.chunk
		n += copy(p[n:], data[lo:hi])
	}
	if int64(n) < int64(len(p)) {
		return n, io.EOF
	}
	return n, nil
}

// key is the store key of chunk c.
func (b *Blob) key(c int64) Key { return Key{Kind: b.kind, Digest: b.digest, N: c} }

// coarseKey is the store key of coarse chunk c (WithCoarse).
func (b *Blob) coarseKey(c int64) Key { return Key{Kind: KindChunk, Digest: b.digest, N: c} }

// chunkLen is the length of chunk c: the chunk size, less for the last chunk.
func (b *Blob) chunkLen(c int64) int64 { return min(b.chunk, b.size-c*b.chunk) }

// cached returns chunk c from memory (the chunks read last), from the store if it holds it
// whole, or, with a coarse grain, cut from the coarse chunk that holds it.
func (b *Blob) cached(c int64) ([]byte, bool) {
	data, ok, epoch := b.memoized(false, c)
	if ok {
		return data, true
	}
	var cc, lo int64 // the coarse chunk holding c, and c's offset in it
	if b.coarse > 0 {
		cc, lo = c*b.chunk/b.coarse, c*b.chunk%b.coarse
		if data, ok, _ := b.memoized(true, cc); ok {
			return data[lo : lo+b.chunkLen(c)], true
		}
		if !b.s.has(b.key(c)) { // not worth a miss in the stats: the coarse lookup counts
			data, ok := b.fromStore(b.coarseKey(cc), min(b.coarse, b.size-cc*b.coarse))
			if !ok {
				return nil, false
			}
			b.remember(epoch, true, cc, data)
			return data[lo : lo+b.chunkLen(c)], true
		}
	}
	data, ok = b.fromStore(b.key(c), b.chunkLen(c))
	if ok {
		b.remember(epoch, false, c, data)
	}
	return data, ok
}

// Forget drops the chunks the Blob keeps in memory (memo); later reads read them from
// the store again. A Layer calls it when it drops its own memory.
func (b *Blob) Forget() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.memo = [memoChunks]memoChunk{}
}

// memoized returns chunk n of the given grain if memo holds it, and makes it the most
// recent; and the Blob's purge epoch, for a remember of what the caller reads instead.
func (b *Blob) memoized(coarse bool, n int64) ([]byte, bool, uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, m := range b.memo {
		if m.data != nil && m.coarse == coarse && m.n == n {
			if i > 0 {
				b.memo[0], b.memo[i] = m, b.memo[0]
			}
			return m.data, true, b.epoch
		}
	}
	return nil, false, b.epoch
}

// remember puts chunk n of the given grain, read from the store in purge epoch epoch,
// first in memo; not if a purge has come since (what was read may be what it deleted).
func (b *Blob) remember(epoch uint64, coarse bool, n int64, data []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.epoch != epoch {
		return
	}
	copy(b.memo[1:], b.memo[:len(b.memo)-1])
	b.memo[0] = memoChunk{coarse: coarse, n: n, data: data}
}

// fromStore reads the chunk of key k from the store, checking that it has n bytes.
func (b *Blob) fromStore(k Key, n int64) ([]byte, bool) {
	data, err := b.s.Get(k)
	if err != nil {
		if !errors.Is(err, ErrMiss) {
			b.log.Debug("cache: chunk lookup failed", "key", k.String(), "err", err)
		}
		return nil, false
	}
	if int64(len(data)) != n {
		b.log.Debug("cache: cached chunk has the wrong length", "key", k.String(), "len", len(data), "want", n)
		return nil, false
	}
	return data, true
}

// start returns the chunks first..last: the cached ones read from the store, the others
// joined to running fetches or fetched by new ones, each run of adjacent chunks in one
// request of at most maxRun chunks (0: no limit). Fetches run on context.WithoutCancel(ctx).
func (b *Blob) start(ctx context.Context, first, last, maxRun int64) []chunkRef {
	refs := make([]chunkRef, last-first+1)
	var missing []int64
	for c := first; c <= last; c++ {
		if data, ok := b.cached(c); ok {
			refs[c-first].data = data
		} else {
			missing = append(missing, c)
		}
	}
	if len(missing) == 0 {
		return refs
	}
	var runs []run
	b.mu.Lock()
	epoch := b.epoch
	for _, c := range missing {
		if cl := b.inflight[c]; cl != nil {
			refs[c-first].c = cl
			continue
		}
		// A fetch may have stored the chunk and ended since the lookup above.
		if b.s.has(b.key(c)) {
			if data, ok := b.fromStore(b.key(c), b.chunkLen(c)); ok {
				refs[c-first].data = data
				continue
			}
		}
		refs[c-first].c = b.callLocked(&runs, c, maxRun)
	}
	b.mu.Unlock()
	b.launch(ctx, runs, epoch)
	return refs
}

// callLocked registers a fetch of chunk c in flight and adds it to runs: to the last run
// if c extends it within maxRun chunks (0: no limit), else as a new run. b.mu is held.
func (b *Blob) callLocked(runs *[]run, c, maxRun int64) *call {
	cl := &call{done: make(chan struct{})}
	b.inflight[c] = cl
	if n := len(*runs); n > 0 && (*runs)[n-1].extends(c, maxRun) {
		(*runs)[n-1].calls = append((*runs)[n-1].calls, cl)
	} else {
		*runs = append(*runs, run{first: c, calls: []*call{cl}})
	}
	return cl
}

// launch starts one fetch per run, on context.WithoutCancel(ctx).
func (b *Blob) launch(ctx context.Context, runs []run, epoch uint64) {
	shared := context.WithoutCancel(ctx)
	for _, r := range runs {
		b.running.Go(func() { b.fetch(shared, r.first, r.calls, epoch) })
	}
}

const (
	// seqThreshold is how many bytes a reader must have read in order before
	// the Blob fetches ahead of it: more than a span a decoder reads to serve
	// one random read, so that such a read costs only its span.
	seqThreshold = 2 << 20
	// seqWindow is how far ahead of a sequential reader the Blob keeps its
	// chunks requested.
	seqWindow = 2 << 20
)

// readAhead notes a read of [off, end) whose last chunk is last. Once the
// reads have gone on in order for seqThreshold bytes, it keeps the chunks of
// the next seqWindow bytes requested: when less than half of that is, it
// starts fetching the rest (the chunks neither stored nor in flight, each run
// of them in one request). A reader streaming through evicted chunks then
// waits for about one request per half window, not one per read.
func (b *Blob) readAhead(ctx context.Context, off, end, last int64) {
	b.mu.Lock()
	if off < b.seqEnd-b.chunk || off > b.seqEnd {
		b.seqRun, b.raNext = 0, 0
	}
	b.seqRun += max(0, end-max(off, b.seqEnd))
	b.seqEnd = end
	first := max(last+1, b.raNext)
	last = min((end+seqWindow-1)/b.chunk, (b.size-1)/b.chunk)
	if b.seqRun < seqThreshold || (last-first+1)*b.chunk < seqWindow/2 {
		b.mu.Unlock()
		return
	}
	b.raNext = last + 1
	b.startMissingLocked(ctx, first, last) // unlocks
}

// Prefetch starts fetching the chunks that hold [off, off+n) and that are neither
// stored nor in flight, each run of them in one request, and returns at once; later
// reads join those fetches. A caller about to read a range in many small reads (a
// decoder) makes it one request.
func (b *Blob) Prefetch(ctx context.Context, off, n int64) {
	off, end := max(off, 0), min(off+n, b.size)
	if off >= end {
		return
	}
	b.mu.Lock()
	b.startMissingLocked(ctx, off/b.chunk, (end-1)/b.chunk) // unlocks
}

// startMissingLocked starts fetches for the chunks first..last that are neither stored
// (at either grain) nor in flight, each run of them in one request. b.mu is held on
// entry and released on return.
func (b *Blob) startMissingLocked(ctx context.Context, first, last int64) {
	var runs []run
	epoch := b.epoch
	for c := first; c <= last; c++ {
		if b.inflight[c] != nil || b.s.has(b.key(c)) || (b.coarse > 0 && b.s.has(b.coarseKey(c*b.chunk/b.coarse))) {
			continue
		}
		b.callLocked(&runs, c, 0)
	}
	b.mu.Unlock()
	b.launch(ctx, runs, epoch)
}

// run is adjacent chunks first, first+1, … to fetch in one request, one call each.
type run struct {
	first int64
	calls []*call
}

// extends reports whether chunk c can join the run without making it longer than maxRun
// chunks (0: no limit).
func (r run) extends(c, maxRun int64) bool {
	n := int64(len(r.calls))
	return c == r.first+n && (maxRun <= 0 || n < maxRun)
}
