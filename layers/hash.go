package layers

import (
	"crypto/sha256"
	"hash"
)

const (
	hashBufSize = 256 << 10
	hashBufs    = 8
)

// asyncHasher hashes on its own goroutine, so that the sha256 of the compressed bytes
// runs beside decompression instead of adding to it (about 15% of a pass on one core).
// It also hashes each chunk of the bytes (see blobChunks). Write and Sum are called from
// one goroutine; Sum must be called once, at the end.
type asyncHasher struct {
	h      hash.Hash
	chunks *chunkHasher // nil: no chunk sums
	work   chan []byte  // filled buffers, in order
	free   chan []byte  // buffers to fill
	done   chan struct{}
}

// newAsyncHasher returns a hasher of the whole stream with h and, if chunkSize > 0, of each
// chunk of chunkSize bytes with sha256.
func newAsyncHasher(h hash.Hash, chunkSize int64) *asyncHasher {
	a := &asyncHasher{h: h, work: make(chan []byte, hashBufs), free: make(chan []byte, hashBufs), done: make(chan struct{})}
	if chunkSize > 0 {
		a.chunks = newChunkHasher(chunkSize)
	}
	for range hashBufs {
		a.free <- make([]byte, hashBufSize)
	}
	go func() {
		defer close(a.done)
		for b := range a.work {
			a.h.Write(b)
			if a.chunks != nil {
				a.chunks.Write(b)
			}
			a.free <- b[:cap(b)]
		}
	}()
	return a
}

// Write queues a copy of p for hashing.
func (a *asyncHasher) Write(p []byte) {
	for len(p) > 0 {
		b := <-a.free
		n := copy(b, p)
		a.work <- b[:n]
		p = p[n:]
	}
}

// Sum waits for the queued bytes and returns the hash; it stops the goroutine.
func (a *asyncHasher) Sum() []byte {
	close(a.work)
	<-a.done
	return a.h.Sum(nil)
}

// ChunkSums returns the sha256 of each chunk; it may be called after Sum only.
func (a *asyncHasher) ChunkSums() [][sha256.Size]byte {
	if a.chunks == nil {
		return nil
	}
	return a.chunks.finish()
}

// Close stops the goroutine without a result (an abandoned pass).
func (a *asyncHasher) Close() {
	select {
	case <-a.done:
	default:
		close(a.work)
		<-a.done
	}
}
