package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"syscall"
	"time"
)

const (
	// maxResumes is how many times a fetch whose body fails part-way (a reset, a body that
	// ends early) is resumed from its first chunk not yet delivered.
	maxResumes = 2
	// resumeWindow bounds when a fetch may be resumed: only within this time of its start.
	// A resumed request may wait out the source's whole bound again (resolver: the stall
	// timeout plus its retry grace), and a read waiting on the fetch should not wait much
	// longer than that timeout in all (DESIGN section 5): a fetch whose registry stalls
	// fails within resumeWindow plus the source's bound. A resume is a retry of a quick
	// failure, not of a slow one.
	resumeWindow = 500 * time.Millisecond
)

// fetch reads the chunks first, first+1, … (one per call) with RangeSource.Fetch and
// finishes each call as soon as its chunk has arrived. A body that fails part-way with a
// resumable error (see resumable) is fetched again from the first chunk it did not
// deliver, up to maxResumes times and within resumeWindow of its start. It owns the calls: each is finished exactly once and
// then leaves b.inflight. ctx is the shared, uncancelled context; epoch is b.epoch when
// the fetch started.
func (b *Blob) fetch(ctx context.Context, first int64, calls []*call, epoch uint64) {
	start := time.Now()
	for attempt := 0; ; attempt++ {
		delivered, resume, err := b.fetchOnce(ctx, first, calls, epoch)
		first, calls = first+int64(delivered), calls[delivered:]
		if err == nil {
			return
		}
		if attempt >= maxResumes || !resume || time.Since(start) > resumeWindow {
			b.fail(first, calls, err)
			return
		}
		b.log.Debug("cache: resuming fetch", "chunk", first, "chunks", len(calls), "attempt", attempt+2, "err", err)
	}
}

// fetchOnce makes one RangeSource.Fetch for the chunks of calls and consumes its body. It
// returns how many calls it finished (from the first on) and, if it stopped early, why and
// whether the rest is worth fetching again: only a body that failed part-way is (the
// source has retried a failed request already).
func (b *Blob) fetchOnce(ctx context.Context, first int64, calls []*call, epoch uint64) (delivered int, resume bool, err error) {
	off := first * b.chunk
	n := min(int64(len(calls))*b.chunk, b.size-off)
	body, start, err := b.src.Fetch(ctx, off, n)
	if err != nil {
		b.s.noteFetch(0)
		return 0, false, fmt.Errorf("cache: fetch %s [%d,%d): %w", b.digest, off, off+n, err)
	}
	cr := &countingReader{r: body}
	delivered, err = b.consume(cr, start, first, calls, epoch)
	body.Close()
	b.s.noteFetch(cr.n)
	return delivered, err != nil && resumable(err), err
}

// resumable reports whether a body that failed with err is worth fetching again from where
// it stopped: it ended early or its connection was reset. A context error or a stall (an
// error whose Stalled method reports true) is not: the source has given up on the registry.
func resumable(err error) bool {
	var st interface{ Stalled() bool }
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return false
	case errors.As(err, &st) && st.Stalled():
		return false
	}
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.EPIPE)
}

// consume reads a fetch's body, which starts at start, and delivers the chunks of calls,
// each checked by b.verify first. A body that starts before the first wanted chunk (a
// registry that ignored Range) is read from its start, and every whole chunk passed on the
// way that passes the check is stored too. A chunk that fails the check fails its call
// with ErrCorrupt and is not stored; the chunks after it are still read. It returns how
// many calls it finished and, if the body failed, why.
func (b *Blob) consume(body io.Reader, start, first int64, calls []*call, epoch uint64) (int, error) {
	off := first * b.chunk
	if start < 0 || start > off {
		return 0, fmt.Errorf("cache: fetch %s at %d: source answered from offset %d", b.digest, off, start)
	}
	pos := start
	if r := pos % b.chunk; r != 0 && pos < off {
		skip := min(b.chunk-r, off-pos)
		got, err := io.CopyN(io.Discard, body, skip)
		if err != nil {
			return 0, b.bodyErr(pos+got, err)
		}
		pos += skip
	}
	for pos < off {
		c := pos / b.chunk
		buf := make([]byte, b.chunkLen(c))
		if got, err := io.ReadFull(body, buf); err != nil {
			return 0, b.bodyErr(pos+int64(got), err)
		}
		if !b.s.has(b.key(c)) && b.check(c, buf) == nil {
			b.store(c, buf, epoch)
		}
		pos += int64(len(buf))
	}
	for i, cl := range calls {
		c := first + int64(i)
		buf := make([]byte, b.chunkLen(c))
		if got, err := io.ReadFull(body, buf); err != nil {
			return i, b.bodyErr(pos+int64(got), err)
		}
		if err := b.check(c, buf); err != nil {
			cl.finish(nil, err)
		} else {
			cl.finish(buf, nil)
			b.store(c, buf, epoch)
		}
		b.forget(c, cl)
		pos += int64(len(buf))
	}
	return len(calls), nil
}

// check runs b.verify on chunk c as fetched; a failure wraps ErrCorrupt.
func (b *Blob) check(c int64, data []byte) error {
	if b.verify == nil {
		return nil
	}
	if err := b.verify(c, data); err != nil {
		b.log.Warn("cache: fetched chunk failed verification; not stored", "chunk", c, "off", c*b.chunk, "err", err)
		return fmt.Errorf("%w: blob %s chunk %d (offset %d): %w", ErrCorrupt, b.digest, c, c*b.chunk, err)
	}
	return nil
}

// bodyErr describes a body that failed at blob offset pos; a body that ended early wraps
// io.ErrUnexpectedEOF.
func (b *Blob) bodyErr(pos int64, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("cache: blob %s: body ended early at offset %d: %w", b.digest, pos, io.ErrUnexpectedEOF)
	}
	return fmt.Errorf("cache: blob %s: read body at offset %d: %w", b.digest, pos, err)
}

// fail finishes the calls of chunks first, first+1, … with err.
func (b *Blob) fail(first int64, calls []*call, err error) {
	b.log.Debug("cache: fetch failed", "chunk", first, "chunks", len(calls), "err", err)
	for i, cl := range calls {
		cl.finish(nil, err)
		b.forget(first+int64(i), cl)
	}
}

// store puts chunk c, fetched by a fetch that started in epoch, in the store, unless the
// blob has been purged since; a chunk the store cannot keep is only logged (it has been
// served from memory).
func (b *Blob) store(c int64, data []byte, epoch uint64) {
	b.storeMu.RLock()
	defer b.storeMu.RUnlock()
	if b.epoch != epoch {
		return
	}
	if err := b.s.Put(b.key(c), data); err != nil {
		b.log.Debug("cache: chunk not stored", "chunk", c, "err", err)
	}
}

// forget removes a finished call from b.inflight.
func (b *Blob) forget(c int64, cl *call) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.inflight[c] == cl {
		delete(b.inflight, c)
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (cr *countingReader) Read(p []byte) (int, error) {
	n, err := cr.r.Read(p)
	cr.n += int64(n)
	return n, err
}
