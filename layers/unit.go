package layers

import (
	"context"
	"errors"
	"io"
	"sort"
)

// unitRef is a range [start, end) of the uncompressed stream that is decoded and cached
// as a whole, and the restart point (index into the checkpoints or frames) before it.
type unitRef struct {
	start, end int64
	restart    int
}

// unitCall is one decode of a unit, shared by the readers that want it.
type unitCall struct {
	done    chan struct{}
	ub      *unitBuf // valid once done is closed, with a reference for each waiter
	err     error
	waiters int // guarded by the Layer's mu: readers that joined the call
}

type cachedUnit struct {
	start int64
	ub    *unitBuf // the Layer's memory holds a reference
}

// restartOut returns the uncompressed offset of restart point i.
func (l *Layer) restartOut(i int) int64 {
	if l.x.Format == FormatGzip {
		return l.x.checkpoints[i].Out
	}
	return l.x.frames[i].Out
}

// unitAt returns the unit holding stream offset off (0 <= off < Size).
func (l *Layer) unitAt(off int64) unitRef {
	if l.x.toc != nil {
		return l.tocUnitAt(off) // eStargz, zstd:chunked: see toc_read.go
	}
	if l.x.Format == FormatZstd {
		fs := l.x.frames
		i := sort.Search(len(fs), func(i int) bool { return fs[i].Out > off }) - 1
		start := off / DecodedChunkSize * DecodedChunkSize
		// A frame starting inside the chunk would let the unit start there, but the
		// chunk grid keeps DecodedCache keys stable; decode from the frame before.
		for i > 0 && fs[i].Out > start {
			i--
		}
		return unitRef{start: start, end: min(start+DecodedChunkSize, l.x.Size), restart: i}
	}
	cps := l.x.checkpoints
	i := sort.Search(len(cps), func(i int) bool { return cps[i].Out > off }) - 1
	start, end := cps[i].Out, l.x.Size
	if i+1 < len(cps) {
		end = cps[i+1].Out
	}
	if end-start > bigSpan {
		start += (off - start) / DecodedChunkSize * DecodedChunkSize
		end = min(end, start+DecodedChunkSize)
	}
	return unitRef{start: start, end: end, restart: i}
}

// errNotInMemory is acquireUnit's answer, without decode, for a unit neither in memory
// nor being decoded.
var errNotInMemory = errors.New("layers: unit not in memory")

// acquireUnit returns the decoded bytes of u, with a reference the caller must release:
// from memory, or by joining a decode in flight; if neither, with decode by starting
// one, else errNotInMemory. The decode runs on its own goroutine and context (the
// caller's values, not its cancellation) so that a reader whose ctx ends returns
// ctx.Err() alone. Without decode, an access to a unit not in memory does not count in
// the walk's progress (aheadLocked).
func (l *Layer) acquireUnit(ctx context.Context, u unitRef, decode bool) (*unitBuf, error) {
	l.mu.Lock()
	if decode {
		l.aheadLocked(ctx, u)
	}
	if ub := l.cachedLocked(u.start, true); ub != nil {
		if !decode {
			l.aheadLocked(ctx, u)
		} else {
			l.unitHits.Add(1)
		}
		held := l.cachedN
		l.mu.Unlock()
		l.useBudget(held)
		return ub, nil
	}
	call := l.inflight[u.start]
	switch {
	case call != nil && !decode:
		l.aheadLocked(ctx, u)
	case call == nil && decode:
		call = l.startLocked(context.WithoutCancel(ctx), u)
	case call == nil:
		l.mu.Unlock()
		return nil, errNotInMemory
	}
	call.waiters++
	l.mu.Unlock()
	return waitUnit(ctx, call)
}

// waitUnit waits for call, which the caller joined (counted in its waiters), and
// returns its unit with the reference the decode took for the caller. A caller whose
// ctx ends first leaves that reference unreleased: the buffer is then never reused.
func waitUnit(ctx context.Context, call *unitCall) (*unitBuf, error) {
	select {
	case <-call.done:
		return call.ub, call.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (l *Layer) runDecode(ctx context.Context, u unitRef, call *unitCall) {
	ub, err := l.decodeUnit(ctx, u) // ub holds one reference: the decode's
	// What the Layer keeps after this unit joined it, if it did.
	held := int64(-1)
	l.mu.Lock()
	delete(l.inflight, u.start)
	call.ub, call.err = ub, err
	if err == nil {
		// One reference for each reader waiting, taken before any can be
		// released; the decode's own goes to the Layer's memory, or is dropped.
		ub.refs.Add(int32(call.waiters))
		if l.maxCached > 0 {
			l.cached = append(l.cached, cachedUnit{start: u.start, ub: ub})
			l.cachedN += int64(len(ub.b))
			for l.cachedN > l.maxCached && len(l.cached) > 1 {
				l.cachedN -= int64(len(l.cached[0].ub.b))
				l.cached[0].ub.release()
				l.cached = l.cached[1:]
			}
			if u.start >= l.seqNext && l.x.toc == nil && l.seqNext >= 0 {
				l.fillAheadLocked(ctx) // a unit decoded ahead: keep going
			}
			held = l.cachedN
		} else {
			ub.release()
		}
	}
	l.mu.Unlock()
	close(call.done)
	if held >= 0 {
		l.useBudget(held)
	}
}

// useDecodedCache reports whether unit u is far enough from its restart point that its
// decoded bytes are worth keeping in the DecodedCache (zstd only).
func (l *Layer) useDecodedCache(u unitRef) bool {
	return l.dec != nil && l.x.Format == FormatZstd && u.start-l.restartOut(u.restart) >= 2*DecodedChunkSize
}

// decodeUnit decodes u with an idle decoder or a new one from u's restart point. The
// buffer it returns holds one reference.
func (l *Layer) decodeUnit(ctx context.Context, u unitRef) (*unitBuf, error) {
	if l.x.toc != nil {
		b, err := l.decodeTOCUnit(ctx, u) // eStargz, zstd:chunked: see toc_read.go
		if err != nil {
			return nil, err
		}
		return ownedUnitBuf(b), nil
	}
	useDC := l.useDecodedCache(u)
	if useDC {
		if b, err := l.dec.Get(l.x.Digest, u.start/DecodedChunkSize); err == nil && int64(len(b)) == u.end-u.start {
			l.unitHits.Add(1)
			return ownedUnitBuf(b), nil
		}
	}
	c, err := l.takeCursor(ctx, u)
	if err != nil {
		return nil, err
	}
	if err := l.skip(c, u.start, useDC); err != nil {
		c.close()
		return nil, err
	}
	var ub *unitBuf
	if useDC {
		ub = ownedUnitBuf(make([]byte, u.end-u.start)) // the DecodedCache may keep it
	} else {
		ub = newUnitBuf(u.end - u.start)
	}
	if err := l.fill(c, ub.b); err != nil {
		c.close()
		ub.release()
		return nil, err
	}
	if useDC {
		l.put(u.start, ub.b)
	}
	l.putCursor(c)
	return ub, nil
}

// skip advances c to stream offset to. With keep, every whole chunk passed on the way
// goes to the DecodedCache, so that later reads of it need no decode from the start.
func (l *Layer) skip(c *cursor, to int64, keep bool) error {
	for c.pos < to {
		n := min(to-c.pos, DecodedChunkSize-c.pos%DecodedChunkSize)
		if !keep || n < DecodedChunkSize {
			d, err := io.CopyN(io.Discard, c, n)
			l.decoded.Add(d)
			if err != nil {
				return unexpected(err)
			}
			continue
		}
		buf := make([]byte, DecodedChunkSize) // the cache may keep it
		start := c.pos
		if err := l.fill(c, buf); err != nil {
			return err
		}
		l.put(start, buf)
	}
	return nil
}

// fill reads len(b) decoded bytes from c.
func (l *Layer) fill(c *cursor, b []byte) error {
	n, err := io.ReadFull(c, b)
	l.decoded.Add(int64(n))
	if err != nil {
		return unexpected(err)
	}
	return nil
}

func (l *Layer) put(start int64, b []byte) {
	if err := l.dec.Put(l.x.Digest, start/DecodedChunkSize, b); err != nil {
		l.log.Debug("decoded chunk not cached", "digest", l.x.Digest, "off", start, "err", err)
	}
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// startLocked starts decoding u in the background unless it is cached or in flight, and
// returns the call decoding it (nil if it is cached).
func (l *Layer) startLocked(ctx context.Context, u unitRef) *unitCall {
	if l.cachedLocked(u.start, false) != nil {
		return nil
	}
	if call, ok := l.inflight[u.start]; ok {
		return call
	}
	call := &unitCall{done: make(chan struct{})}
	l.inflight[u.start] = call
	go l.runDecode(ctx, u, call)
	return call
}

const (
	// aheadWindow is how far past a reader moving forward a Layer keeps units decoded
	// (or being decoded), so that the walk rarely waits for a decode: 8 MiB, half of
	// the default memory (see fillAheadLocked), rides out runs of small files, during
	// which a walk reads slowly, better than 4 MiB (tar 0.926 -> 0.902 s on the bench
	// rootfs, find+cat the same, medians of 6).
	aheadWindow = 8 << 20
	// aheadParallel is how many of those decode at once. Units that start at their own
	// restart point (gzip spans, zstd frames) can decode in parallel, each from its
	// restart point; the others (pieces of a long span, chunks of one zstd frame) one
	// at a time, since a decoder for one passes through the one before. One: a walk
	// through FUSE spends about as much CPU serving reads (the kernel, the reader and
	// regfs) as decoding, and on two cores a second decoder took it from them: reading
	// a 272 MB rootfs took 6-8% longer with two (find+cat 0.90 s against 0.85 s, tar
	// 1.01 s against 0.92 s, medians of 5), and a cat of a 49 MB file no less time.
	aheadParallel = 1
)

// aheadLocked notes a read of unit u. A reader moving forward unit by unit (a walk of
// the tree in archive order) gets the units after it decoded meanwhile, up to
// aheadWindow past it. TOC layers are excluded: their units are files' chunks, read at
// random. l.mu is held.
func (l *Layer) aheadLocked(ctx context.Context, u unitRef) {
	forward := u.start == l.seqNext
	l.seqNext = u.end
	if forward && l.x.toc == nil {
		l.fillAheadLocked(context.WithoutCancel(ctx))
	}
}

// fillAheadLocked starts decodes of the units from seqNext on, in order, that are
// neither in memory nor in flight, up to aheadWindow past seqNext and aheadParallel
// decodes in flight there. l.mu is held.
func (l *Layer) fillAheadLocked(ctx context.Context) {
	running := 0
	for start := range l.inflight {
		if start >= l.seqNext {
			running++
		}
	}
	// The window's units must fit in memory together (half of it, the rest
	// for the units being read), or each decode would evict another and the
	// chain in runDecode would never end.
	budget := l.maxCached / 2
	for pos := l.seqNext; pos >= 0 && pos < min(l.seqNext+aheadWindow, l.x.Size) && running < aheadParallel; {
		next := l.unitAt(pos)
		pos = next.end
		if budget -= next.end - next.start; budget < 0 {
			return
		}
		if l.cachedLocked(next.start, false) != nil {
			continue
		}
		if _, ok := l.inflight[next.start]; ok {
			continue
		}
		if running > 0 && next.start != l.restartOut(next.restart) {
			return // its decoder would pass through a unit being decoded
		}
		l.startLocked(ctx, next)
		running++
	}
}

// cachedLocked returns the unit starting at start if it is in memory, else nil. With
// use, the unit becomes the most recently used and the caller gets a reference. l.mu is
// held.
func (l *Layer) cachedLocked(start int64, use bool) *unitBuf {
	for i, c := range l.cached {
		if c.start == start {
			if use {
				l.cached = append(append(l.cached[:i:i], l.cached[i+1:]...), c) // most recent last
				c.ub.acquire()
			}
			return c.ub
		}
	}
	return nil
}
