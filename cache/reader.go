package cache

import (
	"context"
	"io"
)

// readAheadBatch is how many chunks one read-ahead request of a Blob.Reader covers (of
// the coarse grain, for a Blob WithCoarse).
const readAheadBatch = 8

// Reader returns a sequential reader of the blob from off, for one-pass work such as indexing
// a layer. It requests readAheadBatch chunks at a time (for a Blob WithCoarse, as many
// fine chunks as make readAheadBatch coarse ones) and keeps up to two batches requested
// ahead of its position, so that two requests run at a time; fetched chunks also fill the
// store. The reader is bound to ctx: once ctx ends, its reads fail with ctx.Err(), while
// fetches already started complete and fill the cache. It is not safe for concurrent use.
func (b *Blob) Reader(ctx context.Context, off int64) io.Reader {
	off = max(off, 0)
	batch := int64(readAheadBatch)
	if b.coarse > 0 {
		batch *= b.coarse / b.chunk
	}
	return &blobReader{b: b, ctx: ctx, pos: off, next: off / b.chunk, batch: batch}
}

// blobReader is the io.Reader of Blob.Reader. It holds its ctx because io.Reader has no
// place for one.
type blobReader struct {
	b     *Blob
	ctx   context.Context
	pos   int64
	queue []chunkRef // chunks pos/chunk, pos/chunk+1, … that have been requested
	next  int64      // the first chunk not requested yet
	batch int64      // chunks per request
	err   error      // sticky
}

func (r *blobReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if r.pos >= r.b.size {
		r.err = io.EOF
		return 0, r.err
	}
	if err := r.ctx.Err(); err != nil {
		r.err = err
		return 0, err
	}
	r.fill()
	data, err := r.queue[0].wait(r.ctx)
	if err != nil {
		r.err = err
		return 0, err
	}
	base := (r.pos / r.b.chunk) * r.b.chunk
	n := copy(p, data[r.pos-base:])
	r.pos += int64(n)
	if r.pos == base+int64(len(data)) {
		r.queue[0] = chunkRef{}
		r.queue = r.queue[1:]
	}
	return n, nil
}

// fill requests further chunks, a batch at a time, while the window of two batches has
// room for one.
func (r *blobReader) fill() {
	nchunks := (r.b.size + r.b.chunk - 1) / r.b.chunk
	for int64(len(r.queue)) <= r.batch && r.next < nchunks {
		last := min(r.next+r.batch, nchunks) - 1
		r.queue = append(r.queue, r.b.start(r.ctx, r.next, last, r.batch)...)
		r.next = last + 1
	}
}
