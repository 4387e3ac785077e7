package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// fetch reads the chunks first, first+1, … (one per call) with one RangeSource.Fetch and
// finishes each call as soon as its chunk has arrived. It owns the calls: each is finished
// exactly once and then leaves b.inflight. ctx is the shared, uncancelled context.
func (b *Blob) fetch(ctx context.Context, first int64, calls []*call) {
	off := first * b.chunk
	n := min(int64(len(calls))*b.chunk, b.size-off)
	body, start, err := b.src.Fetch(ctx, off, n)
	if err != nil {
		b.s.noteFetch(0)
		b.fail(first, calls, fmt.Errorf("cache: fetch %s [%d,%d): %w", b.digest, off, off+n, err))
		return
	}
	cr := &countingReader{r: body}
	delivered, err := b.consume(cr, start, first, calls)
	body.Close()
	b.s.noteFetch(cr.n)
	if err != nil {
		b.fail(first+int64(delivered), calls[delivered:], err)
	}
}

// consume reads a fetch's body, which starts at start, and delivers the chunks of calls. A
// body that starts before the first wanted chunk (a registry that ignored Range) is read
// from its start, and every whole chunk passed on the way is stored too. It returns how many
// calls it finished and, if it stopped early, why.
func (b *Blob) consume(body io.Reader, start, first int64, calls []*call) (int, error) {
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
		if !b.s.has(b.key(c)) {
			b.store(c, buf)
		}
		pos += int64(len(buf))
	}
	for i, cl := range calls {
		c := first + int64(i)
		buf := make([]byte, b.chunkLen(c))
		if got, err := io.ReadFull(body, buf); err != nil {
			return i, b.bodyErr(pos+int64(got), err)
		}
		cl.finish(buf, nil)
		b.store(c, buf)
		b.forget(c, cl)
		pos += int64(len(buf))
	}
	return len(calls), nil
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

// store puts chunk c in the store; a chunk the store cannot keep is only logged (it has
// been served from memory).
func (b *Blob) store(c int64, data []byte) {
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
