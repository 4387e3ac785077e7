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
	verify VerifyFunc // nil: fetched chunks are trusted
	log    *slog.Logger

	running sync.WaitGroup // fetch goroutines

	mu       sync.Mutex
	inflight map[int64]*call // guarded by mu; chunk number -> its running fetch
	epoch    uint64          // guarded by mu and storeMu (both held to write); Purge counts
	// last is the chunk read from the store most recently, kept so that
	// reads smaller than a chunk (a decoder's) do not read and check the
	// same file again and again. Guarded by mu; nil after Purge.
	last  []byte
	lastN int64

	// storeMu is held shared while a fetch stores a chunk and exclusively by Purge, so that
	// a fetch started before a Purge never stores a chunk after it.
	storeMu sync.RWMutex
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
	b.log = s.log.With("digest", digest)
	return b
}

// Size returns the blob's size.
func (b *Blob) Size() int64 { return b.size }

// Digest returns the blob's digest.
func (b *Blob) Digest() string { return b.digest }

// ChunkSize returns the size of the blob's chunks.
func (b *Blob) ChunkSize() int64 { return b.chunk }

// Purge deletes the blob's chunks from the store, for a caller that found the blob's bytes
// wrong as a whole (a digest or size mismatch after a full pass): the chunks stored on the
// way must not be served again. Fetches running at the time still deliver to the reads
// waiting for them but store nothing; later reads fetch again. It returns the errors of
// the deletions that failed.
func (b *Blob) Purge() error {
	b.storeMu.Lock()
	defer b.storeMu.Unlock()
	b.mu.Lock()
	b.epoch++
	clear(b.inflight)
	b.last = nil
	b.mu.Unlock()
	var errs []error
	for c := range (b.size + b.chunk - 1) / b.chunk {
		if err := b.s.Delete(b.key(c)); err != nil {
			errs = append(errs, err)
		}
	}
	b.log.Info("cache: blob purged", "chunks", (b.size+b.chunk-1)/b.chunk, "errors", len(errs))
	return errors.Join(errs...)
}

// ReadAt reads len(p) bytes at off, with the io.ReaderAt contract: n < len(p) only with an
// error, io.EOF when the blob ends first. The chunks it needs that the store lacks are fetched,
// adjacent ones in one request; it returns ctx.Err() when ctx ends first, without cancelling
// fetches other readers share.
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
func (b *Blob) key(c int64) Key { return Key{Kind: KindChunk, Digest: b.digest, N: c} }

// chunkLen is the length of chunk c: the chunk size, less for the last chunk.
func (b *Blob) chunkLen(c int64) int64 { return min(b.chunk, b.size-c*b.chunk) }

// cached returns chunk c from memory (the last chunk read) or from the
// store if it holds it whole.
func (b *Blob) cached(c int64) ([]byte, bool) {
	b.mu.Lock()
	if b.last != nil && b.lastN == c {
		data := b.last
		b.mu.Unlock()
		return data, true
	}
	b.mu.Unlock()
	data, ok := b.fromStore(c)
	if ok {
		b.mu.Lock()
		b.last, b.lastN = data, c
		b.mu.Unlock()
	}
	return data, ok
}

// fromStore reads chunk c from the store, checking its length.
func (b *Blob) fromStore(c int64) ([]byte, bool) {
	data, err := b.s.Get(b.key(c))
	if err != nil {
		if !errors.Is(err, ErrMiss) {
			b.log.Debug("cache: chunk lookup failed", "chunk", c, "err", err)
		}
		return nil, false
	}
	if int64(len(data)) != b.chunkLen(c) {
		b.log.Debug("cache: cached chunk has the wrong length", "chunk", c, "len", len(data))
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
			if data, ok := b.fromStore(c); ok {
				refs[c-first].data = data
				continue
			}
		}
		cl := &call{done: make(chan struct{})}
		b.inflight[c] = cl
		refs[c-first].c = cl
		if n := len(runs); n > 0 && runs[n-1].extends(c, maxRun) {
			runs[n-1].calls = append(runs[n-1].calls, cl)
			continue
		}
		runs = append(runs, run{first: c, calls: []*call{cl}})
	}
	b.mu.Unlock()
	shared := context.WithoutCancel(ctx)
	for _, r := range runs {
		b.running.Go(func() { b.fetch(shared, r.first, r.calls, epoch) })
	}
	return refs
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
