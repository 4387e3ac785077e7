package layers

import (
	"sync"
	"sync/atomic"
)

// unitBuf is the decoded bytes of one unit, shared by a Layer's memory and the readers
// using them, with a count of the holders. Once none holds it, a buffer from unitPool
// goes back there for the next decode: a walk of a layer decodes hundreds of MiB, and
// fresh buffers cost their zeroing, page faults and collection.
//
// Every holder releases exactly once what it acquired: the Layer's memory (one
// reference while the unit is cached), a reader of a decode in flight (one each, taken
// for it by the decode), a reader of a cached unit (taken under the Layer's lock). A
// reference never released only keeps the buffer from the pool (the collector frees
// it); one released too often would let two units share a buffer, so it panics.
type unitBuf struct {
	b      []byte
	refs   atomic.Int32
	pooled bool // from unitPool and back to it at 0; false: another owner may keep b
}

// unitPool holds unitBufs with no holder.
var unitPool sync.Pool

// unitGrain rounds pooled buffers' capacities, so that units of slightly different
// sizes (gzip spans) reuse each other's.
const unitGrain = 256 << 10

// newUnitBuf returns a buffer of n bytes with one reference, from the pool if it holds
// one large enough. Its bytes are undefined: the caller fills all of them.
func newUnitBuf(n int64) *unitBuf {
	if v, ok := unitPool.Get().(*unitBuf); ok && int64(cap(v.b)) >= n {
		v.b = v.b[:n]
		v.refs.Store(1)
		return v
	}
	u := &unitBuf{b: make([]byte, n, (n+unitGrain-1)/unitGrain*unitGrain), pooled: true}
	u.refs.Store(1)
	return u
}

// ownedUnitBuf wraps bytes the pool must never reuse (kept by a DecodedCache, or
// returned by one), with one reference.
func ownedUnitBuf(b []byte) *unitBuf {
	u := &unitBuf{b: b}
	u.refs.Store(1)
	return u
}

// acquire adds a holder. The caller must hold a reference already, or the Layer's lock
// while the unit is in its memory.
func (u *unitBuf) acquire() { u.refs.Add(1) }

// release drops a holder; the last one returns a pooled buffer to the pool.
func (u *unitBuf) release() {
	switch n := u.refs.Add(-1); {
	case n < 0:
		panic("layers: unit buffer released more often than acquired")
	case n == 0 && u.pooled:
		unitPool.Put(u)
	}
}
