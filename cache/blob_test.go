package cache

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// newTestBlob returns a Blob of data with chunk size chunk on a fresh store of max bytes.
func newTestBlob(t *testing.T, data []byte, chunk, max int64) (*Blob, *fakeSource, *Store) {
	t.Helper()
	s := openStore(t, t.TempDir(), max)
	src := newFakeSource(data)
	b := NewBlob(s, src, digestOf(string(data)), int64(len(data)), WithChunkSize(chunk))
	t.Cleanup(b.running.Wait) // before the store closes and its directory goes
	return b, src, s
}

func TestReadAtMatchesSource(t *testing.T) {
	tests := []struct {
		name  string
		size  int
		chunk int64
		mode  fakeMode
		max   int64
	}{
		{"7-byte chunks", 500, 7, modeRange, 1 << 20},
		{"size a multiple of the chunk", 490, 7, modeRange, 1 << 20},
		{"one chunk", 5, 7, modeRange, 1 << 20},
		{"one-byte chunks", 60, 1, modeRange, 1 << 20},
		{"registry ignores Range", 500, 7, modeFull, 1 << 20},
		{"store holds two chunks", 500, 7, modeRange, 2 * (headerSize + 7)},
		{"store too small for a chunk", 500, 7, modeRange, headerSize + 6},
		{"default chunk size", 3<<20 + 5, 0, modeRange, 64 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := randomBytes(uint64(tt.size), tt.size)
			b, src, _ := newTestBlob(t, data, tt.chunk, tt.max)
			src.setMode(tt.mode)
			ctx := t.Context()
			r := rand.New(rand.NewPCG(1, 2))
			for i := 0; i < 300; i++ {
				off := r.Int64N(int64(tt.size) + 3)
				n := r.IntN(min(tt.size, 64<<10)/2 + 2)
				p := make([]byte, n)
				got, err := b.ReadAt(ctx, p, off)
				checkReadAt(t, data, p, off, got, err)
			}
			// A whole read, then again: the second is served by the store if it is large enough.
			p := make([]byte, tt.size)
			got, err := b.ReadAt(ctx, p, 0)
			checkReadAt(t, data, p, 0, got, err)
		})
	}
}

// checkReadAt checks one ReadAt of p at off that returned n, err against data.
func checkReadAt(t *testing.T, data, p []byte, off int64, n int, err error) {
	t.Helper()
	wantN := max(0, min(len(p), len(data)-int(min(off, int64(len(data))))))
	if n != wantN {
		t.Fatalf("ReadAt(len %d, off %d) n = %d, want %d (err %v)", len(p), off, n, wantN, err)
	}
	switch {
	case len(p) == 0 && err != nil:
		t.Fatalf("ReadAt(empty, off %d) error = %v, want nil", off, err)
	case len(p) > 0 && n < len(p) && err != io.EOF:
		t.Fatalf("ReadAt(len %d, off %d) short with error %v, want io.EOF", len(p), off, err)
	case n == len(p) && err != nil:
		t.Fatalf("ReadAt(len %d, off %d) full read with error %v", len(p), off, err)
	}
	if n > 0 && !bytes.Equal(p[:n], data[off:off+int64(n)]) {
		t.Fatalf("ReadAt(len %d, off %d) returned wrong bytes", len(p), off)
	}
}

func TestReadAtEdges(t *testing.T) {
	data := randomBytes(1, 50)
	b, _, _ := newTestBlob(t, data, 7, 1<<20)
	ctx := t.Context()
	if _, err := b.ReadAt(ctx, make([]byte, 1), -1); err == nil || err == io.EOF {
		t.Errorf("ReadAt(off -1) error = %v, want a real error", err)
	}
	if n, err := b.ReadAt(ctx, make([]byte, 1), 50); n != 0 || err != io.EOF {
		t.Errorf("ReadAt(off size) = %d, %v; want 0, io.EOF", n, err)
	}
	if n, err := b.ReadAt(ctx, make([]byte, 1), 1000); n != 0 || err != io.EOF {
		t.Errorf("ReadAt(off > size) = %d, %v; want 0, io.EOF", n, err)
	}
	if n, err := b.ReadAt(ctx, nil, 3); n != 0 || err != nil {
		t.Errorf("ReadAt(empty) = %d, %v; want 0, nil", n, err)
	}
	empty, src, _ := newTestBlob(t, nil, 7, 1<<20)
	if n, err := empty.ReadAt(ctx, make([]byte, 4), 0); n != 0 || err != io.EOF {
		t.Errorf("empty blob ReadAt = %d, %v; want 0, io.EOF", n, err)
	}
	if f, _ := src.counts(); f != 0 {
		t.Errorf("empty blob made %d fetches, want 0", f)
	}
	if b.Size() != 50 || b.Digest() != digestOf(string(data)) {
		t.Errorf("Size, Digest = %d, %q", b.Size(), b.Digest())
	}
}

func TestReadAtCoalescesAndCaches(t *testing.T) {
	data := randomBytes(7, 100) // chunks of 7: 0..13, the last (14) is 2 bytes
	b, src, s := newTestBlob(t, data, 7, 1<<20)
	ctx := t.Context()
	read := func(off, n int64) {
		t.Helper()
		p := make([]byte, n)
		got, err := b.ReadAt(ctx, p, off)
		checkReadAt(t, data, p, off, got, err)
	}
	read(10, 25) // chunks 1..4: one fetch of 4 chunks
	if got, want := src.fetchRanges(), [][2]int64{{7, 28}}; !equalRanges(got, want) {
		t.Fatalf("fetches = %v, want %v", got, want)
	}
	read(7, 28) // all cached
	if f, _ := src.counts(); f != 1 {
		t.Fatalf("cached read fetched: %d fetches", f)
	}
	read(0, 100) // chunks 0 and 5..14: two runs
	b.running.Wait()
	want := [][2]int64{{7, 28}, {0, 7}, {35, 65}}
	got := src.fetchRanges()
	slices.SortFunc(got[1:], func(a, b [2]int64) int { return cmp.Compare(a[0], b[0]) })
	if !equalRanges(got, want) {
		t.Fatalf("fetches = %v, want %v", got, want)
	}
	st := s.Stats()
	if st.Fetches != 3 || st.BytesFetched != 100 || st.Entries != 15 {
		t.Errorf("Stats = %+v, want 3 fetches, 100 bytes fetched, 15 entries", st)
	}
	if _, n := src.counts(); n != 100 {
		t.Errorf("source served %d bytes, want 100", n)
	}
}

func equalRanges(a, b [][2]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestReadAtFullBodyStoresPassedChunks(t *testing.T) {
	data := randomBytes(3, 100)
	b, src, s := newTestBlob(t, data, 7, 1<<20)
	src.setMode(modeFull)
	ctx := t.Context()
	p := make([]byte, 5)
	n, err := b.ReadAt(ctx, p, 30) // chunk 4; the body starts at 0
	checkReadAt(t, data, p, 30, n, err)
	b.running.Wait()
	for c := int64(0); c <= 4; c++ {
		if !s.has(b.key(c)) {
			t.Errorf("chunk %d passed through but not stored", c)
		}
	}
	if s.has(b.key(5)) {
		t.Errorf("chunk 5 stored: the read should stop at the chunk it needs")
	}
	p = make([]byte, 35)
	n, err = b.ReadAt(ctx, p, 0)
	checkReadAt(t, data, p, 0, n, err)
	if f, _ := src.counts(); f != 1 {
		t.Errorf("%d fetches, want 1: chunks 0..4 came with the first body", f)
	}
	// The last, short chunk, read through a full body.
	p = make([]byte, 10)
	n, err = b.ReadAt(ctx, p, 95)
	checkReadAt(t, data, p, 95, n, err)
	b.running.Wait()
	for c := int64(5); c <= 14; c++ {
		if !s.has(b.key(c)) {
			t.Errorf("chunk %d passed through but not stored", c)
		}
	}
}

func TestReadAtShortBody(t *testing.T) {
	data := randomBytes(4, 100)
	b, src, s := newTestBlob(t, data, 7, 1<<20)
	src.setMode(modeShort) // one byte short of what was asked
	ctx := t.Context()
	p := make([]byte, 21)
	n, err := b.ReadAt(ctx, p, 14) // chunks 2..4; chunk 4 arrives one byte short
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("ReadAt error = %v, want io.ErrUnexpectedEOF", err)
	}
	if !strings.Contains(err.Error(), b.Digest()) || !strings.Contains(err.Error(), "34") {
		t.Errorf("error %q should name the digest and the offset 34", err)
	}
	if n != 14 || !bytes.Equal(p[:n], data[14:28]) {
		t.Errorf("n = %d, want the 14 bytes of the whole chunks before the short one", n)
	}
	b.running.Wait()
	if !s.has(b.key(2)) || !s.has(b.key(3)) || s.has(b.key(4)) {
		t.Errorf("stored chunks 2,3,4 = %v,%v,%v; want true,true,false", s.has(b.key(2)), s.has(b.key(3)), s.has(b.key(4)))
	}
	// The short last chunk of the blob, short by one more byte.
	n, err = b.ReadAt(ctx, make([]byte, 2), 98)
	if n != 0 || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("ReadAt(last chunk) = %d, %v; want 0, io.ErrUnexpectedEOF", n, err)
	}
	b.running.Wait()
	if s.has(b.key(14)) {
		t.Errorf("partial last chunk stored")
	}
	// The source recovers; the failed chunks are fetched again.
	src.setMode(modeRange)
	p = make([]byte, 100)
	n, err = b.ReadAt(ctx, p, 0)
	checkReadAt(t, data, p, 0, n, err)
}

func TestConcurrentReadersJoinOneFetch(t *testing.T) {
	data := randomBytes(5, 100)
	b, src, _ := newTestBlob(t, data, 7, 1<<20)
	const readers = 64
	pileUpReaders(t, b, src, data, readers, func(i int) int64 { return int64(14 + i%7) }, 35) // all from inside chunk 2 to 35
	if f, _ := src.counts(); f != 1 {
		t.Errorf("%d readers of one cold chunk made %d fetches, want 1", readers, f)
	}
}

func TestCancelledWaiterLeavesFetchRunning(t *testing.T) {
	data := randomBytes(6, 100)
	b, src, s := newTestBlob(t, data, 7, 1<<20)
	release := src.block()
	defer release()

	cctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := b.ReadAt(cctx, make([]byte, 7), 21)
		done <- err
	}()
	<-src.started
	other := make(chan error, 1)
	p := make([]byte, 7)
	go func() {
		_, err := b.ReadAt(t.Context(), p, 21)
		other <- err
	}()

	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled reader error = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("cancelled reader did not return while the fetch was blocked")
	}
	select {
	case err := <-other:
		t.Fatalf("other reader returned %v before the fetch completed", err)
	default:
	}
	release()
	if err := <-other; err != nil {
		t.Fatalf("other reader: %v", err)
	}
	if !bytes.Equal(p, data[21:28]) {
		t.Errorf("other reader got wrong bytes")
	}
	b.running.Wait()
	src.mu.Lock()
	ctxErrs := src.ctxErrs
	src.mu.Unlock()
	if f, _ := src.counts(); f != 1 || ctxErrs != 0 {
		t.Errorf("fetches = %d, fetches with an ended ctx = %d; want 1, 0", f, ctxErrs)
	}
	if !s.has(b.key(3)) {
		t.Errorf("chunk not stored after the shared fetch completed")
	}
}

func TestReadAtCancelledBeforeStart(t *testing.T) {
	b, src, _ := newTestBlob(t, randomBytes(1, 50), 7, 1<<20)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := b.ReadAt(ctx, make([]byte, 5), 0); !errors.Is(err, context.Canceled) {
		t.Errorf("error = %v, want context.Canceled", err)
	}
	if f, _ := src.counts(); f != 0 {
		t.Errorf("a dead request started %d fetches", f)
	}
}

func TestCorruptChunkRefetched(t *testing.T) {
	data := randomBytes(8, 100)
	b, src, s := newTestBlob(t, data, 7, 1<<20)
	ctx := t.Context()
	p := make([]byte, 100)
	n, err := b.ReadAt(ctx, p, 0)
	checkReadAt(t, data, p, 0, n, err)
	b.running.Wait()
	rel, _ := b.key(5).rel()
	flipByte(t, filepath.Join(s.data, rel), headerSize+3)
	p = make([]byte, 100)
	n, err = b.ReadAt(ctx, p, 0)
	checkReadAt(t, data, p, 0, n, err)
	if got := src.fetchRanges(); len(got) != 2 || got[1] != [2]int64{35, 7} {
		t.Errorf("fetches = %v, want the corrupt chunk 5 fetched again", got)
	}
}

func TestEvictionKeepsDiskBounded(t *testing.T) {
	data := randomBytes(9, 3000)
	const chunk = 7
	const max = 20 * (headerSize + chunk)
	b, _, s := newTestBlob(t, data, chunk, max)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 9))
			for range 200 {
				off := r.Int64N(3000)
				p := make([]byte, 1+r.IntN(60))
				n, err := b.ReadAt(t.Context(), p, off)
				if (err != nil && err != io.EOF) || !bytes.Equal(p[:n], data[off:off+int64(n)]) {
					t.Errorf("ReadAt(%d, %d) = %d, %v or wrong bytes", off, len(p), n, err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.running.Wait()
	got := diskUsage(t, filepath.Join(s.dir, dataDirName()))
	if got > max+headerSize+chunk {
		t.Errorf("disk usage %d, want at most %d + one chunk", got, max)
	}
	if st := s.Stats(); st.Evictions == 0 || st.Bytes != got {
		t.Errorf("Stats = %+v, disk usage %d: want evictions and matching bytes", st, got)
	}
}

func TestChunkOfAnotherSizeRefetched(t *testing.T) {
	data := randomBytes(10, 30)
	s := openStore(t, t.TempDir(), 1<<20)
	src := newFakeSource(data)
	ctx := t.Context()
	b7 := NewBlob(s, src, digestOf("x"), 30, WithChunkSize(7))
	p := make([]byte, 30)
	n, err := b7.ReadAt(ctx, p, 0)
	checkReadAt(t, data, p, 0, n, err)
	b5 := NewBlob(s, src, digestOf("x"), 30, WithChunkSize(5))
	t.Cleanup(b7.running.Wait)
	t.Cleanup(b5.running.Wait)
	p = make([]byte, 30)
	n, err = b5.ReadAt(ctx, p, 0)
	checkReadAt(t, data, p, 0, n, err)
}

func TestReadAtSourceFailures(t *testing.T) {
	tests := []struct {
		name string
		mode fakeMode
		want error // matched with errors.Is, or nil to check only that there is an error
	}{
		{"fetch fails", modeError, errFake},
		{"body fails", modeBodyError, errFake},
		{"body after the offset asked", modeBadStart, nil},
		{"short body", modeShort, io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := randomBytes(15, 100)
			b, src, s := newTestBlob(t, data, 7, 1<<20)
			src.setMode(tt.mode)
			p := make([]byte, 10)
			n, err := b.ReadAt(t.Context(), p, 12)
			if err == nil || err == io.EOF || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Fatalf("ReadAt = %d, %v; want error %v", n, err, tt.want)
			}
			if !strings.Contains(err.Error(), b.Digest()) {
				t.Errorf("error %q does not name the digest", err)
			}
			b.running.Wait()
			if s.has(b.key(3)) { // the last chunk asked: [12,22) spans chunks 1..3
				t.Errorf("the chunk a failed fetch did not deliver whole was stored")
			}
			src.setMode(modeRange)
			n, err = b.ReadAt(t.Context(), p, 12)
			checkReadAt(t, data, p, 12, n, err)
		})
	}
}
