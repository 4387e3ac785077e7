package layers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
)

// DecodedCache keeps chunks of the decoded stream of a zstd layer whose restart points
// are far apart (a single-frame stream), keyed by layer digest and chunk number n
// (chunk n covers decoded bytes [n*DecodedChunkSize, (n+1)*DecodedChunkSize)). The
// caller backs it with cache.Store (KindDecoded). Get returns an error on a miss. Put
// may keep b: the Layer never changes a slice it has put.
type DecodedCache interface {
	Get(digest string, n int64) ([]byte, error)
	Put(digest string, n int64, b []byte) error
}

// DecodedChunkSize is the size of the decoded chunks a Layer reads from a zstd stream
// and keeps in its DecodedCache.
const DecodedChunkSize = 1 << 20

const (
	// bigSpan: a gzip span longer than this is read in DecodedChunkSize units.
	bigSpan = 4 * DecodedChunkSize
	// cursorReadSize is the size of the blob reads of a live decoder: small
	// enough that a decode started cold fetches little past its unit's end
	// (reads after indexing fetch 32 KiB chunks; see cache.WithCoarse), and its
	// reads end just past restart points (readStops).
	cursorReadSize = 64 << 10
	// defaultCursors is the number of idle decoders a Layer keeps.
	defaultCursors = 4
	// defaultUnitCache is the decoded bytes a Layer keeps in memory.
	defaultUnitCache = 16 << 20
)

// LayerOption configures NewLayer.
type LayerOption func(*Layer)

// WithCursors sets how many idle decoders, positioned where earlier reads ended, a Layer
// keeps (default 4; 0 keeps none).
func WithCursors(n int) LayerOption { return func(l *Layer) { l.maxCursors = max(0, n) } }

// WithMemoryCache sets how many bytes of recently decoded spans a Layer keeps in memory
// (default 16 MiB: a walk needs the units decoded ahead of it and some behind; 0 keeps none).
func WithMemoryCache(n int64) LayerOption { return func(l *Layer) { l.maxCached = max(0, n) } }

// Layer reads the entries' bytes of one indexed layer. Safe for concurrent use.
//
// A read of a compressed layer decodes whole units (a gzip span between two
// checkpoints, or a 1 MiB chunk of a zstd stream or of a long gzip span) from the
// nearest restart point or from an idle decoder already positioned between that point
// and the unit, keeps the last units in memory, and joins concurrent decodes of one
// unit.
type Layer struct {
	x   *Index
	b   BlobReader
	dec DecodedCache // may be nil
	log *slog.Logger

	maxCursors int
	maxCached  int64
	budget     *Budget // may be nil

	mu       sync.Mutex
	cursors  []*cursor           // guarded by mu; idle decoders, least recently used first
	cached   []cachedUnit        // guarded by mu; least recently used first
	cachedN  int64               // guarded by mu; invariant: sum of len(cached[i].b)
	inflight map[int64]*unitCall // guarded by mu; by unit start
	seqNext  int64               // guarded by mu; end of the unit read last (-1: none yet)

	tocVerified map[int]bool // guarded by mu; long TOC chunks (by index) whose digest was checked

	stopsOnce sync.Once
	stops     []int64 // see readStops

	decoded  atomic.Int64
	resumes  atomic.Int64
	unitHits atomic.Int64
}

// NewLayer returns a reader of the entries of the layer x, whose blob is b. dec may be
// nil (no decoded-chunk cache); log nil discards.
func NewLayer(x *Index, b BlobReader, dec DecodedCache, log *slog.Logger, opts ...LayerOption) *Layer {
	l := &Layer{
		x: x, b: b, dec: dec, log: orDiscard(log),
		maxCursors: defaultCursors, maxCached: defaultUnitCache,
		inflight: make(map[int64]*unitCall),
		// A first read is not yet a reader moving forward: one unit
		// decoded ahead would double what a lone read costs.
		seqNext: -1,
	}
	for _, o := range opts {
		o(l)
	}
	return l
}

// Index returns the layer's index.
func (l *Layer) Index() *Index { return l.x }

// LayerStats counts a Layer's decoding work.
type LayerStats struct {
	Decoded  int64 // bytes produced by decompressors (skipped bytes included)
	Resumes  int64 // decoders started at a restart point
	UnitHits int64 // units served from memory or the decoded-chunk cache
}

// Stats returns the layer's counters.
func (l *Layer) Stats() LayerStats {
	return LayerStats{Decoded: l.decoded.Load(), Resumes: l.resumes.Load(), UnitHits: l.unitHits.Load()}
}

// ReadAt reads len(p) bytes of entry e's data from offset off, with the io.ReaderAt
// contract (io.EOF at the end of the entry). e must come from the layer's Index.
// Sparse entries read zeros in holes.
func (l *Layer) ReadAt(ctx context.Context, e *Entry, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("layers: read %q: negative offset %d", e.Name, off)
	}
	if off >= e.Size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), e.Size-off))
	var err error
	if e.Sparse == nil {
		err = l.readStream(ctx, p[:n], e.Offset+off)
	} else {
		err = l.readSparse(ctx, e.Sparse, p[:n], off)
	}
	if err != nil {
		return 0, fmt.Errorf("layers: read %q of layer %s at %d: %w", e.Name, l.x.Digest, off, err)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// View returns n bytes of entry e's data from offset off (fewer at the entry's end) as a
// slice of the Layer's decoded memory, without a copy, when they lie in one decoded unit;
// ok is false otherwise (a sparse or uncompressed entry, or a range over two units): use
// ReadAt. The slice must not be modified, and is valid until release is called, which
// the caller must do exactly once when done with it (the memory is then reused).
func (l *Layer) View(ctx context.Context, e *Entry, off, n int64) (b []byte, release func(), ok bool, err error) {
	b, release, ok, err = l.view(ctx, e, off, n, true)
	if err != nil {
		return nil, nil, false, fmt.Errorf("layers: read %q of layer %s at %d: %w", e.Name, l.x.Digest, off, err)
	}
	return b, release, ok, nil
}

// view is View, or ViewCached without decode: the unit must then be in memory or being
// decoded (err errNotInMemory otherwise).
func (l *Layer) view(ctx context.Context, e *Entry, off, n int64, decode bool) (b []byte, release func(), ok bool, err error) {
	if !l.inUnits(e, off) {
		return nil, nil, false, nil
	}
	n = min(n, e.Size-off)
	pos := e.Offset + off
	u := l.unitAt(pos)
	if pos+n > u.end {
		return nil, nil, false, nil
	}
	ub, err := l.acquireUnit(ctx, u, decode)
	if err != nil {
		return nil, nil, false, err
	}
	return ub.b[pos-u.start : pos-u.start+n : pos-u.start+n], ub.release, true, nil
}

// inUnits reports whether entry e's data from off is read from decoded units (the
// ranges View, ViewCached and ReadCached serve): not sparse, not an uncompressed layer.
func (l *Layer) inUnits(e *Entry, off int64) bool {
	return off >= 0 && off < e.Size && e.Sparse == nil && l.x.Format != FormatTar
}

// readSparse fills p with the logical bytes from off of a sparse entry.
func (l *Layer) readSparse(ctx context.Context, frags []Fragment, p []byte, off int64) error {
	clear(p)
	end := off + int64(len(p))
	i := sort.Search(len(frags), func(i int) bool { return frags[i].Logical+frags[i].Length > off })
	for ; i < len(frags) && frags[i].Logical < end; i++ {
		f := frags[i]
		lo, hi := max(off, f.Logical), min(end, f.Logical+f.Length)
		if err := l.readStream(ctx, p[lo-off:hi-off], f.Physical+lo-f.Logical); err != nil {
			return err
		}
	}
	return nil
}

// readStream fills p from the uncompressed tar stream at off.
func (l *Layer) readStream(ctx context.Context, p []byte, off int64) error {
	if off < 0 || off > l.x.Size || int64(len(p)) > l.x.Size-off {
		return fmt.Errorf("range %d+%d outside the stream (%d bytes)", off, len(p), l.x.Size)
	}
	if l.x.Format == FormatTar {
		n, err := l.b.ReadAt(ctx, p, off)
		if n == len(p) {
			return nil
		}
		if err == nil || errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	return l.copyUnits(ctx, p, off, true)
}

// copyUnits fills p from the decoded units holding stream offsets [off, off+len(p)),
// decoding the missing ones, or without decode failing with errNotInMemory if a unit is
// neither in memory nor being decoded.
func (l *Layer) copyUnits(ctx context.Context, p []byte, off int64, decode bool) error {
	for len(p) > 0 {
		u := l.unitAt(off)
		ub, err := l.acquireUnit(ctx, u, decode)
		if err != nil {
			return err
		}
		n := copy(p, ub.b[off-u.start:])
		ub.release()
		p, off = p[n:], off+int64(n)
	}
	return nil
}

// ReadCached reads len(p) bytes of entry e's data at off, like ReadAt, but only from
// decoded units the Layer holds in memory or is decoding already (it waits for those,
// or for ctx): it starts no decode of its own and fetches nothing. ok is false, and p's
// contents undefined, when any byte is in neither. It is for speculative work, such as
// handing the kernel the files a walk is about to read; like a read, it counts as the
// walk moving forward (the units after it are decoded ahead).
func (l *Layer) ReadCached(ctx context.Context, e *Entry, p []byte, off int64) (n int, ok bool) {
	if !l.inUnits(e, off) {
		return 0, false
	}
	n = int(min(int64(len(p)), e.Size-off))
	if e.Offset+off+int64(n) > l.x.Size || l.copyUnits(ctx, p[:n], e.Offset+off, false) != nil {
		return 0, false
	}
	return n, true
}

// ViewCached is View for speculative work, as ReadCached is ReadAt's: it returns the
// slice only if its unit is in memory or being decoded (waiting for that). As with View,
// the caller must call release exactly once when done with the slice.
func (l *Layer) ViewCached(ctx context.Context, e *Entry, off, n int64) (b []byte, release func(), ok bool) {
	b, release, ok, err := l.view(ctx, e, off, n, false)
	if err != nil {
		return nil, nil, false
	}
	return b, release, ok
}
