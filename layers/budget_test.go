package layers

import (
	"bytes"
	"testing"
	"time"
)

// TestBudgetBoundsLayersTogether walks several layers one after another, each keeping
// up to 2 MiB of decoded units, under one Budget of 3 MiB: the memory they hold
// together stays within the Budget and one Layer's cache, the layers walked earlier
// drop theirs, and a layer that dropped its memory still reads right.
func TestBudgetBoundsLayersTogether(t *testing.T) {
	tarBytes, _ := bigLayer(t, 4)
	blob, x := mustIndex(t, gzipStd(t, tarBytes), WithSpan(256<<10))
	const perLayer, bound = 2 << 20, 3 << 20
	budget := NewBudget(bound)
	ls := make([]*Layer, 4)
	for i := range ls {
		ls[i] = NewLayer(x, blob, nil, nil, WithMemoryCache(perLayer), WithBudget(budget))
		defer ls[i].Close()
	}
	walk := func(l *Layer) {
		t.Helper()
		for _, e := range x.Entries {
			p := make([]byte, e.Size)
			if _, err := l.ReadAt(t.Context(), &e, p, 0); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(p, tarBytes[e.Offset:e.Offset+e.Size]) {
				t.Fatalf("%s: wrong bytes", e.Name)
			}
		}
		settleDecodes(t, l)
	}
	for i, l := range ls {
		walk(l)
		var held int64
		for _, l := range ls {
			held += l.heldBytes()
		}
		if held > bound+perLayer {
			t.Errorf("after walking layer %d: the layers hold %d bytes together, want at most %d", i, held, bound+perLayer)
		}
		if got := l.heldBytes(); got == 0 {
			t.Errorf("layer %d holds nothing right after its walk", i)
		}
		if i >= 2 {
			if got := ls[i-2].heldBytes(); got != 0 {
				t.Errorf("after walking layer %d, layer %d (used before the last) still holds %d bytes", i, i-2, got)
			}
		}
	}
	if got := budget.Held(); got > bound+perLayer {
		t.Errorf("Budget.Held() = %d, want at most %d", got, bound+perLayer)
	}
	walk(ls[0]) // dropped twice over: reads on
}

// heldBytes returns the bytes of decoded units l keeps.
func (l *Layer) heldBytes() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cachedN
}

// settleDecodes waits until l has no decode in flight (the decode-ahead ends at its
// window).
func settleDecodes(t *testing.T, l *Layer) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		l.mu.Lock()
		n := len(l.inflight)
		l.mu.Unlock()
		if n == 0 {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("%d decodes still in flight after 10s", n)
		}
	}
}
