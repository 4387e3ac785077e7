package layers

import "hash"

const (
	hashBufSize = 256 << 10
	hashBufs    = 8
)

// asyncHasher hashes on its own goroutine, so that the sha256 of the compressed bytes
// runs beside decompression instead of adding to it (about 15% of a pass on one core).
// Write and Sum are called from one goroutine; Sum must be called once, at the end.
type asyncHasher struct {
	h    hash.Hash
	work chan []byte // filled buffers, in order
	free chan []byte // buffers to fill
	done chan struct{}
}

func newAsyncHasher(h hash.Hash) *asyncHasher {
	a := &asyncHasher{h: h, work: make(chan []byte, hashBufs), free: make(chan []byte, hashBufs), done: make(chan struct{})}
	for range hashBufs {
		a.free <- make([]byte, hashBufSize)
	}
	go func() {
		defer close(a.done)
		for b := range a.work {
			a.h.Write(b)
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

// Close stops the goroutine without a result (an abandoned pass).
func (a *asyncHasher) Close() {
	select {
	case <-a.done:
	default:
		close(a.work)
		<-a.done
	}
}
