package layers

import (
	"container/list"
	"sync"
)

// A Budget bounds the memory that many Layers keep between reads, together: their
// decoded units (each Layer keeps up to WithMemoryCache bytes of them), their idle
// decoders and the chunks their blobs keep in memory. A mount reads many layers over
// its life (every image a scanner or a diff walks); without a Budget each would keep
// its memory until the unmount.
//
// When a Layer's units bring the total over the bound, the Layers used least recently
// drop what they keep (Layer.Close) until it is back within it; the Layer in use
// never drops its own, so the total may exceed the bound by one Layer's memory cache.
// A Layer that dropped its memory reads on as before, decoding again what it needs.
// Safe for concurrent use.
type Budget struct {
	max int64

	mu     sync.Mutex
	total  int64                    // guarded by mu; the sum of the held bytes in lru
	lru    list.List                // guarded by mu; of *budgetEntry, least recently used first
	layers map[*Layer]*list.Element // guarded by mu
}

// budgetEntry is a Layer's place in a Budget: the decoded bytes it held when it last
// reported them.
type budgetEntry struct {
	l    *Layer
	held int64
}

// NewBudget returns a Budget of max bytes.
func NewBudget(max int64) *Budget {
	return &Budget{max: max, layers: map[*Layer]*list.Element{}}
}

// WithBudget makes the Layer keep its memory within b, with the other Layers of b.
func WithBudget(b *Budget) LayerOption { return func(l *Layer) { l.budget = b } }

// Held returns the decoded bytes the Layers of b hold, as last reported.
func (b *Budget) Held() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.total
}

// use records that l was used and holds held bytes of decoded units, and makes the
// Layers used least recently drop their memory while the total is over the bound.
// The caller holds no lock.
func (b *Budget) use(l *Layer, held int64) {
	b.mu.Lock()
	e, ok := b.layers[l]
	if !ok {
		e = b.lru.PushBack(&budgetEntry{l: l})
		b.layers[l] = e
	}
	b.lru.MoveToBack(e)
	be := e.Value.(*budgetEntry)
	b.total += held - be.held
	be.held = held
	var drop []*Layer
	for b.total > b.max {
		front := b.lru.Front()
		v := front.Value.(*budgetEntry)
		if v.l == l {
			break // alone: its own bound applies
		}
		b.total -= v.held
		b.lru.Remove(front)
		delete(b.layers, v.l)
		drop = append(drop, v.l)
	}
	b.mu.Unlock()
	// A dropped Layer reading meanwhile reports again what it holds; what it
	// reported before the drop is then counted until its next report (too
	// much, never too little).
	for _, v := range drop {
		v.Close()
	}
}

// useBudget reports to the Layer's Budget, if any, that it was used and holds held
// bytes of decoded units. The caller holds no lock.
func (l *Layer) useBudget(held int64) {
	if l.budget != nil {
		l.budget.use(l, held)
	}
}
