package layers

import (
	"context"
	"fmt"
	"io"
	"slices"

	"github.com/regfs/regfs/layers/inflate"
)

// cursor is a live decoder of a layer's stream: reading it yields the uncompressed
// bytes from pos on. A cursor is used by one decode at a time (it is either in the
// Layer's idle list or owned by the decode that took it).
type cursor struct {
	pos   int64 // stream offset of the next byte Read yields
	src   *seqReader
	r     io.Reader
	close func()
}

func (c *cursor) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.pos += int64(n)
	return n, err
}

// takeCursor returns the idle cursor positioned furthest along between u's restart
// point and u.start, or a new cursor at that restart point. The cursor reads the blob
// with ctx until it is put back.
func (l *Layer) takeCursor(ctx context.Context, u unitRef) (*cursor, error) {
	from := l.restartOut(u.restart)
	l.mu.Lock()
	best := -1
	for i, c := range l.cursors {
		if c.pos >= from && c.pos <= u.start && (best < 0 || c.pos > l.cursors[best].pos) {
			best = i
		}
	}
	if best >= 0 {
		c := l.cursors[best]
		l.cursors = append(l.cursors[:best], l.cursors[best+1:]...)
		l.mu.Unlock()
		c.src.ctx = ctx
		l.prefetchUnit(ctx, c.src.off-int64(c.src.end-c.src.pos), u)
		return c, nil
	}
	l.mu.Unlock()
	// Before the decoder's first read: resuming reads the checkpoint's byte.
	l.prefetchUnit(ctx, l.restartIn(u.restart), u)
	return l.newCursor(ctx, u.restart)
}

// putCursor makes c idle, closing the least recently used cursor beyond the limit.
func (l *Layer) putCursor(c *cursor) {
	c.src.ctx = context.Background() // no stale request context while idle
	l.mu.Lock()
	l.cursors = append(l.cursors, c)
	var evicted *cursor
	if len(l.cursors) > l.maxCursors {
		evicted = l.cursors[0]
		l.cursors = l.cursors[1:]
	}
	l.mu.Unlock()
	if evicted != nil {
		evicted.close()
	}
}

// prefetcher is implemented by blob readers that can fetch a range ahead of the reads
// of it (cache.Blob).
type prefetcher interface {
	Prefetch(ctx context.Context, off, n int64)
}

// maxPrefetch bounds the compressed bytes a decoder asks for at once.
const (
	maxPrefetch  = 2 << 20
	prefetchPast = 16 << 10 // past the next restart point: what a decoder of text reads there
)

// newCursor starts a decoder at restart point i.
func (l *Layer) newCursor(ctx context.Context, i int) (*cursor, error) {
	l.resumes.Add(1)
	switch l.x.Format {
	case FormatGzip:
		cp := l.x.checkpoints[i]
		src := newSeqReader(ctx, l.b, cp.In, cursorReadSize).withStops(l.readStops())
		rc, err := inflate.Resume(src, cp)
		if err != nil {
			return nil, fmt.Errorf("resume at checkpoint %d (in %d, out %d): %w", i, cp.In, cp.Out, err)
		}
		return &cursor{pos: cp.Out, src: src, r: rc, close: func() { rc.Close() }}, nil
	case FormatZstd:
		f := l.x.frames[i]
		src := newSeqReader(ctx, l.b, f.In, cursorReadSize).withStops(l.readStops())
		dec, err := newZstdDecoder()
		if err != nil {
			return nil, err
		}
		if err := dec.Reset(src); err != nil {
			dec.Close()
			return nil, zstdErr(err)
		}
		return &cursor{pos: f.Out, src: src, r: zstdReader{dec}, close: dec.Close}, nil
	}
	return nil, fmt.Errorf("no decoder for format %s", l.x.Format)
}

// zstdReader maps the decoder's size-limit errors.
type zstdReader struct{ r io.Reader }

func (z zstdReader) Read(p []byte) (int, error) {
	n, err := z.r.Read(p)
	if err != nil && err != io.EOF {
		err = zstdErr(err)
	}
	return n, err
}

// Close releases the layer's idle decoders, its in-memory units and the chunks its
// blob keeps in memory (if the blob is a Forgetter). The Layer stays usable: later
// reads start new decoders.
func (l *Layer) Close() {
	l.mu.Lock()
	idle, cached := l.cursors, l.cached
	l.cursors, l.cached, l.cachedN = nil, nil, 0
	l.mu.Unlock()
	for _, c := range idle {
		c.close()
	}
	for _, c := range cached {
		c.ub.release()
	}
	if f, ok := l.b.(Forgetter); ok {
		f.Forget()
	}
}

// A Forgetter is a blob that keeps some of its bytes in memory (cache.Blob) and can
// drop them.
type Forgetter interface {
	// Forget drops the bytes kept in memory; later reads read them again.
	Forget()
}

// readStops returns the blob offsets of the layer's restart points, ascending:
// a decoder's reads stop at them (seqReader.stops), so that a decode of one
// unit fetches about its span's compressed bytes and not a read size more.
func (l *Layer) readStops() []int64 {
	l.stopsOnce.Do(func() {
		switch l.x.Format {
		case FormatGzip:
			for _, cp := range l.x.checkpoints {
				l.stops = append(l.stops, cp.In)
			}
		case FormatZstd:
			for _, f := range l.x.frames {
				l.stops = append(l.stops, f.In)
			}
		}
		slices.Sort(l.stops)
	})
	return l.stops
}

// restartIn returns the blob offset of restart point i.
func (l *Layer) restartIn(i int) int64 {
	if l.x.Format == FormatGzip {
		return l.x.checkpoints[i].In
	}
	return l.x.frames[i].In
}

// prefetchUnit asks the blob, in one request, for the compressed bytes a decoder that
// reads on from blob offset from will read to decode unit u: up to the restart point
// after u, and the few bytes past it a decoder reads to finish (see seqReader.stops).
// The decoder then reads them in many small pieces without a request each.
func (l *Layer) prefetchUnit(ctx context.Context, from int64, u unitRef) {
	p, ok := l.b.(prefetcher)
	if !ok || l.x.toc != nil {
		return
	}
	to := l.b.Size() // the last unit's: up to the end
	if u.restart+1 < len(l.readStops()) {
		to = l.restartIn(u.restart+1) + prefetchPast
	}
	to = min(to, from+maxPrefetch)
	if to > from {
		p.Prefetch(ctx, from, to-from)
	}
}
