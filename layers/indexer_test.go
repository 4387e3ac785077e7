package layers

import (
	"bytes"
	"context"
	"errors"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// gateBlob blocks reads until gate is closed.
type gateBlob struct {
	*memBlob
	gate chan struct{}
}

func (g *gateBlob) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	<-g.gate
	return g.memBlob.ReadAt(ctx, p, off)
}

func TestIndexerBuildsOnce(t *testing.T) {
	tarBytes := makeTar(t, testFiles(8, 200<<10))
	gz := gzipStd(t, tarBytes)
	mem := &memBlob{b: gz}
	blob := &gateBlob{memBlob: mem, gate: make(chan struct{})}
	store := indexStore{newMapCache()}
	ix := NewIndexer(store, nil)
	d := digestOf(gz)

	// A waiter whose context ends returns alone; the build goes on.
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := ix.Index(ctx, blob, d)
		errc <- err
	}()
	var wg sync.WaitGroup
	results := make([]*Index, 4)
	for i := range results {
		wg.Go(func() {
			x, err := ix.Index(context.Background(), blob, d)
			if err != nil {
				t.Error(err)
			}
			results[i] = x
		})
	}
	time.Sleep(20 * time.Millisecond)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled waiter: got %v", err)
	}
	close(blob.gate)
	wg.Wait()
	for _, x := range results[1:] {
		// A caller that arrives after the build ended loads it again: an
		// equal index; the bytes read below show there was one pass.
		if x != results[0] && !reflect.DeepEqual(x, results[0]) {
			t.Error("callers got different indexes")
		}
	}
	if got, want := mem.bytes.Load(), int64(len(gz))+512+tocTailSize; got > want {
		t.Errorf("read %d blob bytes, want one pass and one probe of its end (%d)", got, want)
	}

	// A second indexer over the same store (a remount) reads nothing from the blob.
	before := mem.bytes.Load()
	x, err := NewIndexer(store, nil).Index(context.Background(), blob, d)
	if err != nil {
		t.Fatal(err)
	}
	if got := mem.bytes.Load() - before; got != 0 {
		t.Errorf("remount read %d blob bytes", got)
	}
	checkLayer(t, x, NewLayer(x, blob, nil, nil), tarBytes, 3)
}

func TestIndexerErrorsAndBadStore(t *testing.T) {
	tarBytes := makeTar(t, testFiles(9, 10))
	gz := gzipStd(t, tarBytes)
	store := indexStore{newMapCache()}
	d := digestOf(gz)
	store.Put(d, []byte("garbage in the store"))
	ix := NewIndexer(store, nil)
	x, err := ix.Index(context.Background(), &memBlob{b: gz}, d)
	if err != nil || len(x.Entries) == 0 {
		t.Fatalf("rebuild over a bad stored index: %v", err)
	}
	raw, _ := store.Get(d)
	if bytes.Equal(raw, []byte("garbage in the store")) {
		t.Error("store not rewritten")
	}
	// Failures are not stored, and a later call retries.
	bad := digestOf([]byte("other"))
	if _, err := ix.Index(context.Background(), &memBlob{b: gz}, bad); !errors.Is(err, ErrDigestMismatch) {
		t.Errorf("mismatch: got %v", err)
	}
	if _, err := store.Get(bad); err == nil {
		t.Error("failed index stored")
	}
}

// passGateBlob holds the reads of a full pass (those from offset 0) until gate is
// closed, counting the passes that got there in started; reads of the blob's end (the
// probe for a TOC footer) go through.
type passGateBlob struct {
	*memBlob
	gate    chan struct{}
	started *atomic.Int64
	once    sync.Once
}

func (g *passGateBlob) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off == 0 {
		g.once.Do(func() { g.started.Add(1) })
		<-g.gate
	}
	return g.memBlob.ReadAt(ctx, p, off)
}

// TestIndexerBoundsPasses asks for the indexes of many layers at once (an image's
// layers): at most maxPasses full passes run at the same time, and every index is
// built.
func TestIndexerBoundsPasses(t *testing.T) {
	const layers = 3 * maxPasses
	ix := NewIndexer(nil, nil)
	gate := make(chan struct{})
	var started atomic.Int64
	var wg sync.WaitGroup
	for i := range layers {
		gz := gzipStd(t, makeTar(t, testFiles(uint64(40+i), 100<<10)))
		b := &passGateBlob{memBlob: &memBlob{b: gz}, gate: gate, started: &started}
		wg.Go(func() {
			x, err := ix.Index(t.Context(), b, digestOf(gz))
			if err != nil || x.Format != FormatGzip {
				t.Errorf("layer %d: %v, %v", i, x, err)
			}
		})
	}
	// Wait until the passes that can start have, and a while more for any other.
	for end := time.Now().Add(10 * time.Second); started.Load() < maxPasses && time.Now().Before(end); {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	if n := started.Load(); n != maxPasses {
		t.Errorf("%d passes started at once, want %d", n, maxPasses)
	}
	close(gate)
	wg.Wait()
	if n := started.Load(); n != layers {
		t.Errorf("%d passes in all, want %d", n, layers)
	}
}
