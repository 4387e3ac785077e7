package cache

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// Fine Blobs in these tests: chunks of 16 bytes over coarse chunks of 64, and a blob of
// 1000 bytes, so that the last coarse chunk (960..999) and the last fine chunk
// (992..999) are short.
const (
	testFine   = 16
	testCoarse = 64
	testSize   = 1000
)

// coarseSetup returns a store, a source over data, and makers of the coarse Blob of the
// data (as an index pass has it) and of fine Blobs over it. Each Blob is waited for at
// cleanup.
func coarseSetup(t *testing.T, data []byte, opts ...BlobOption) (s *Store, src *fakeSource, coarse, fine func() *Blob) {
	t.Helper()
	s = openStore(t, t.TempDir(), 1<<20)
	src = newFakeSource(data)
	d, size := digestOf(string(data)), int64(len(data))
	mk := func(o ...BlobOption) *Blob {
		b := NewBlob(s, src, d, size, o...)
		t.Cleanup(b.running.Wait)
		return b
	}
	coarse = func() *Blob { return mk(WithChunkSize(testCoarse)) }
	fine = func() *Blob {
		return mk(append([]BlobOption{WithChunkSize(testFine), WithCoarse(testCoarse)}, opts...)...)
	}
	return s, src, coarse, fine
}

// readAll reads b whole with ReadAt calls of step bytes and checks the bytes.
func readAll(t *testing.T, b *Blob, data []byte, step int) {
	t.Helper()
	for off := 0; off < len(data); off += step {
		p := make([]byte, min(step, len(data)-off))
		n, err := b.ReadAt(t.Context(), p, int64(off))
		checkReadAt(t, data, p, int64(off), n, err)
	}
}

// sortedRanges sorts fetch ranges by offset: fetches run on their own goroutines.
func sortedRanges(rs [][2]int64) [][2]int64 {
	slices.SortFunc(rs, func(a, b [2]int64) int { return int(a[0] - b[0]) })
	return rs
}

// keysOfKind returns the chunk numbers of kind k stored for b's digest, sorted.
func keysOfKind(b *Blob, k Kind) []int64 {
	var ns []int64
	for _, key := range b.s.keysOf(b.digest, k) {
		ns = append(ns, key.N)
	}
	slices.Sort(ns)
	return ns
}

func TestCoarseFallbackFetchesNothing(t *testing.T) {
	data := randomBytes(31, testSize)
	s, src, coarse, fine := coarseSetup(t, data)
	c := coarse()
	if _, err := io.ReadAll(c.Reader(t.Context(), 0)); err != nil {
		t.Fatal(err)
	}
	c.running.Wait()
	fetches, _ := src.counts()
	wantCoarse := int64((testSize + testCoarse - 1) / testCoarse)

	// A walk of everything in reads smaller than a fine chunk: no fetch, and each
	// coarse chunk's file read once (the memo serves the rest).
	before := s.Stats()
	f := fine()
	readAll(t, f, data, 5)
	after := s.Stats()
	if got, _ := src.counts(); got != fetches {
		t.Errorf("fine reads over cached coarse chunks made %d fetches, want 0", got-fetches)
	}
	if got := after.Hits - before.Hits; got != wantCoarse {
		t.Errorf("a walk read %d chunk files, want each of the %d coarse chunks once", got, wantCoarse)
	}
	if got := after.Misses - before.Misses; got != 0 {
		t.Errorf("a walk over cached coarse chunks counted %d misses, want 0", got)
	}
	if got := keysOfKind(f, KindFineChunk); len(got) != 0 {
		t.Errorf("fine chunks %v stored, want none (the coarse ones hold every byte)", got)
	}

	// Random reads through another fine Blob: still nothing fetched.
	f = fine()
	r := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		off := r.Int64N(testSize)
		p := make([]byte, r.IntN(150)+1)
		n, err := f.ReadAt(t.Context(), p, off)
		checkReadAt(t, data, p, off, n, err)
	}
	if got, _ := src.counts(); got != fetches {
		t.Errorf("random fine reads made %d fetches, want 0", got-fetches)
	}
}

func TestFineFetchesOnlyWhatIsMissing(t *testing.T) {
	data := randomBytes(32, testSize)
	_, src, coarse, fine := coarseSetup(t, data, WithVerify(chunkSums(data, testFine)))
	// The pass's coarse chunk 2 (128..191) is cached, nothing else.
	c := coarse()
	p := make([]byte, 1)
	if _, err := c.ReadAt(t.Context(), p, 130); err != nil {
		t.Fatal(err)
	}
	c.running.Wait()
	base := len(src.fetchRanges())

	f := fine()
	steps := []struct {
		name       string
		off, n     int64
		wantRanges [][2]int64 // the fetches this read makes
	}{
		{"inside one fine chunk", 40, 5, [][2]int64{{32, 16}}},
		{"fine chunks on both sides of a cached one", 10, 40, [][2]int64{{0, 32}, {48, 16}}},
		{"inside the cached coarse chunk", 120, 80, [][2]int64{{112, 16}, {192, 16}}},
		{"the short last chunk", 995, 5, [][2]int64{{992, 8}}},
		{"all cached now", 0, 60, nil},
	}
	for _, st := range steps {
		p := make([]byte, st.n)
		n, err := f.ReadAt(t.Context(), p, st.off)
		checkReadAt(t, data, p, st.off, n, err)
		f.running.Wait()
		got := sortedRanges(src.fetchRanges()[base:])
		base += len(got)
		if !slices.Equal(got, st.wantRanges) {
			t.Errorf("%s: fetches %v, want %v", st.name, got, st.wantRanges)
		}
	}
	if got, want := keysOfKind(f, KindFineChunk), []int64{0, 1, 2, 3, 7, 12, 62}; !slices.Equal(got, want) {
		t.Errorf("fine chunks stored %v, want %v", got, want)
	}
	if got, want := keysOfKind(f, KindChunk), []int64{2}; !slices.Equal(got, want) {
		t.Errorf("coarse chunks %v, want only the pass's %v", got, want)
	}
}

func TestFineVerifiedAtItsGrain(t *testing.T) {
	data := randomBytes(33, testSize)
	_, src, _, fine := coarseSetup(t, data, WithVerify(chunkSums(data, testFine)))
	src.setTamper(flipAt(500, func(fetch int) bool { return fetch == 1 }))
	f := fine()
	p := make([]byte, 64)
	if _, err := f.ReadAt(t.Context(), p, 480); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("read through a flipped bit: %v, want ErrCorrupt", err)
	}
	f.running.Wait()
	// Only the fine chunk holding the flipped byte (496..511) was refused.
	if got, want := keysOfKind(f, KindFineChunk), []int64{30, 32, 33}; !slices.Equal(got, want) {
		t.Errorf("fine chunks stored %v, want %v", got, want)
	}
	n, err := f.ReadAt(t.Context(), p, 480)
	checkReadAt(t, data, p, 480, n, err)
	if got := src.fetchRanges()[1:]; !slices.Equal(got, [][2]int64{{496, 16}}) {
		t.Errorf("refetch %v, want only the refused chunk [496, 512)", got)
	}
}

func TestPurgeDeletesBothGrains(t *testing.T) {
	for _, via := range []string{"coarse", "fine"} {
		t.Run("via "+via, func(t *testing.T) {
			data := randomBytes(34, testSize)
			s, src, coarse, fine := coarseSetup(t, data)
			c, f := coarse(), fine()
			readAll(t, c, data[:testCoarse*4], testCoarse) // coarse chunks 0..3
			c.running.Wait()
			p := make([]byte, 200)
			n, err := f.ReadAt(t.Context(), p, 500) // fine chunks 31..43
			checkReadAt(t, data, p, 500, n, err)
			f.running.Wait()
			other := NewBlob(s, src, digestOf("other"), testSize, WithChunkSize(testFine), WithCoarse(testCoarse))
			t.Cleanup(other.running.Wait)
			n, err = other.ReadAt(t.Context(), p, 0)
			checkReadAt(t, data, p, 0, n, err)
			other.running.Wait()
			if len(keysOfKind(f, KindChunk)) != 4 || len(keysOfKind(f, KindFineChunk)) != 13 {
				t.Fatalf("before Purge: coarse %v, fine %v", keysOfKind(f, KindChunk), keysOfKind(f, KindFineChunk))
			}
			b := c
			if via == "fine" {
				b = f
			}
			if err := b.Purge(); err != nil {
				t.Fatal(err)
			}
			if cs, fs := keysOfKind(f, KindChunk), keysOfKind(f, KindFineChunk); len(cs)+len(fs) != 0 {
				t.Errorf("after Purge: coarse %v, fine %v left", cs, fs)
			}
			if got := len(keysOfKind(other, KindFineChunk)); got != 13 {
				t.Errorf("another blob has %d fine chunks after Purge, want its 13", got)
			}
			// The fine Blob forgot its memo too: a read fetches again.
			fetches, _ := src.counts()
			n, err = f.ReadAt(t.Context(), p[:10], 10)
			checkReadAt(t, data, p[:10], 10, n, err)
			if got, _ := src.counts(); got != fetches+1 {
				t.Errorf("read after Purge made %d fetches, want 1", got-fetches)
			}
		})
	}
}

func TestPurgeRange(t *testing.T) {
	data := randomBytes(35, testSize)
	_, src, coarse, fine := coarseSetup(t, data)
	c, f := coarse(), fine()
	readAll(t, c, data[:testCoarse*4], testCoarse) // coarse chunks 0..3: bytes 0..255
	c.running.Wait()
	p := make([]byte, 64)
	n, err := f.ReadAt(t.Context(), p, 256) // fine chunks 16..19, fetched
	checkReadAt(t, data, p, 256, n, err)
	f.running.Wait()
	readAll(t, f, data[:256], 7) // memoizes coarse chunks

	// Bytes 100..299 found wrong: coarse chunks 1..4 and fine chunks 6..18 go.
	if err := f.PurgeRange(100, 200); err != nil {
		t.Fatal(err)
	}
	if got, want := keysOfKind(f, KindChunk), []int64{0}; !slices.Equal(got, want) {
		t.Errorf("coarse chunks left %v, want %v", got, want)
	}
	if got, want := keysOfKind(f, KindFineChunk), []int64{19}; !slices.Equal(got, want) {
		t.Errorf("fine chunks left %v, want %v", got, want)
	}
	base := len(src.fetchRanges())
	readAll(t, f, data[:320], 320)
	if got, want := src.fetchRanges()[base:], [][2]int64{{64, 240}}; !slices.Equal(got, want) {
		t.Errorf("fetches after PurgeRange %v, want %v (fine chunks 4..18)", got, want)
	}
	if err := f.PurgeRange(testSize, 10); err != nil {
		t.Errorf("PurgeRange past the end: %v", err)
	}
}

func TestConcurrentReadersOfOneColdFineChunk(t *testing.T) {
	data := randomBytes(36, testSize)
	_, src, _, fine := coarseSetup(t, data)
	f := fine()
	const readers = 32
	pileUpReaders(t, f, src, data, readers, func(i int) int64 { return int64(320 + i%testFine) }, 336) // all inside fine chunk 20
	if got := src.fetchRanges(); !slices.Equal(got, [][2]int64{{320, 16}}) {
		t.Errorf("%d readers of one cold fine chunk fetched %v, want one fetch of [320, 336)", readers, got)
	}
}

func TestFineReaderFetchesCoarseBatches(t *testing.T) {
	data := randomBytes(37, testSize)
	_, src, _, fine := coarseSetup(t, data)
	f := fine()
	got, err := io.ReadAll(f.Reader(t.Context(), 0))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("ReadAll = %d bytes, %v", len(got), err)
	}
	f.running.Wait()
	// Batches of readAheadBatch coarse chunks.
	var want [][2]int64
	for off := int64(0); off < testSize; off += readAheadBatch * testCoarse {
		want = append(want, [2]int64{off, min(readAheadBatch*testCoarse, testSize-off)})
	}
	if got := sortedRanges(src.fetchRanges()); !slices.Equal(got, want) {
		t.Errorf("fetches %v, want batches of %d coarse chunks %v", got, readAheadBatch, want)
	}
}

func TestWithCoarseIgnoredUnlessAMultiple(t *testing.T) {
	tests := []struct {
		chunk, coarse int64
		want          Kind
	}{
		{16, 64, KindFineChunk},
		{16, 16, KindChunk},
		{16, 40, KindChunk},
		{64, 16, KindChunk},
		{16, 0, KindChunk},
	}
	s := openStore(t, t.TempDir(), 1<<20)
	for _, tt := range tests {
		b := NewBlob(s, newFakeSource(nil), digestOf("x"), 100, WithChunkSize(tt.chunk), WithCoarse(tt.coarse))
		if b.kind != tt.want {
			t.Errorf("chunk %d, coarse %d: kind %v, want %v", tt.chunk, tt.coarse, b.kind, tt.want)
		}
	}
}

func TestChunkKindsShareEvictionOrder(t *testing.T) {
	const payload = 50
	const size = headerSize + payload
	key := func(kind Kind, name string) Key { return Key{kind, digestOf(name), 0} }
	c1, f1, c2, f2 := key(KindChunk, "c1"), key(KindFineChunk, "f1"), key(KindChunk, "c2"), key(KindFineChunk, "f2")
	z := key(KindDecoded, "z")
	s := openStore(t, t.TempDir(), 5*size)
	for _, k := range []Key{z, c1, f1, c2, f2} {
		if err := s.Put(k, randomBytes(1, payload)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond) // distinct access times
	}
	if _, err := s.Get(c1); err != nil { // c1 becomes the most recent chunk
		t.Fatal(err)
	}
	for n, want := range []Key{f1, c2, f2, c1, z} {
		if err := s.Put(key(KindIndex, string(rune('a'+n))), randomBytes(2, payload)); err != nil {
			t.Fatal(err)
		}
		if s.has(want) {
			t.Fatalf("put %d: %v still present, want it evicted", n, want)
		}
	}
}

// TestSequentialReadAhead reads a blob front to back in 128 KiB reads, with no chunk
// stored: past seqThreshold the Blob fetches ahead in large requests. Small reads at
// random offsets fetch only their chunks.
func TestSequentialReadAhead(t *testing.T) {
	const size, step, grain = 8 << 20, 128 << 10, 32 << 10
	data := randomBytes(33, size)
	s := openStore(t, t.TempDir(), 1<<30)
	src := newFakeSource(data)
	b := NewBlob(s, src, digestOf("sequential"), size, WithChunkSize(grain))
	p := make([]byte, step)
	for off := int64(0); off < size; off += step {
		n, err := b.ReadAt(t.Context(), p, off)
		checkReadAt(t, data, p[:n], off, n, err)
	}
	b.running.Wait()
	fetches, n := src.counts()
	t.Logf("%d bytes read in %d reads: %d fetches, %d bytes", size, size/step, fetches, n)
	if noAhead := size / step; fetches > noAhead/2 {
		t.Errorf("%d fetches for %d sequential reads, want at most %d", fetches, noAhead, noAhead/2)
	}
	if n != size {
		t.Errorf("fetched %d bytes, want the blob's %d once", n, size)
	}

	src = newFakeSource(data)
	b = NewBlob(s, src, digestOf("random"), size, WithChunkSize(grain))
	r := rand.New(rand.NewPCG(1, 2))
	const reads = 64
	for range reads {
		off := r.Int64N(size - 4096)
		p := make([]byte, 4096)
		n, err := b.ReadAt(t.Context(), p, off)
		checkReadAt(t, data, p, off, n, err)
	}
	b.running.Wait()
	if _, n := src.counts(); n > reads*2*grain {
		t.Errorf("%d random 4 KiB reads fetched %d bytes, want at most %d (their chunks)", reads, n, reads*2*grain)
	}
}

// TestForgetDropsMemo: reads of chunks the memo holds read no file; after Forget,
// the next reads read each chunk's file again (and the bytes are the same).
func TestForgetDropsMemo(t *testing.T) {
	data := randomBytes(37, testSize)
	s, _, coarse, fine := coarseSetup(t, data)
	c := coarse()
	if _, err := io.ReadAll(c.Reader(t.Context(), 0)); err != nil {
		t.Fatal(err)
	}
	c.running.Wait()
	f := fine()
	const n = memoChunks * testCoarse // the chunks the memo holds
	readAll(t, f, data[:n], testFine)
	hits := s.Stats().Hits
	readAll(t, f, data[:n], testFine)
	if got := s.Stats().Hits - hits; got != 0 {
		t.Fatalf("reads of memoized chunks read %d chunk files, want 0", got)
	}
	f.Forget()
	readAll(t, f, data[:n], testFine)
	if got := s.Stats().Hits - hits; got != memoChunks {
		t.Errorf("after Forget, reads of %d chunks read %d chunk files, want each once", memoChunks, got)
	}
}
