package layers

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/regfs/regfs/cache"
	"github.com/regfs/regfs/internal/fixture"
)

func TestBlobChunkDigests(t *testing.T) {
	tarBytes := makeTar(t, testFiles(30, 200<<10))
	for _, tc := range layerCases(t, tarBytes) {
		for _, cs := range []int64{0, 4096, 7777} {
			t.Run(fmt.Sprintf("%s/chunk=%d", tc.name, cs), func(t *testing.T) {
				var opts []BuildOption
				if cs > 0 {
					opts = append(opts, WithChunkSize(cs))
				}
				x, err := BuildIndex(t.Context(), &memBlob{b: tc.blob}, digestOf(tc.blob), nil, opts...)
				if err != nil {
					t.Fatal(err)
				}
				want := cs
				if cs == 0 {
					want = BlobChunkSize
				}
				if got := x.ChunkSize(); got != want {
					t.Fatalf("ChunkSize() = %d, want %d", got, want)
				}
				raw, err := x.MarshalBinary()
				if err != nil {
					t.Fatal(err)
				}
				var y Index
				if err := y.UnmarshalBinary(raw); err != nil {
					t.Fatal(err)
				}
				for _, ix := range []*Index{x, &y} {
					checkChunkDigests(t, ix, tc.blob)
				}
			})
		}
	}
}

// checkChunkDigests checks that x accepts every chunk of blob and refuses changed,
// short, long and misnumbered ones.
func checkChunkDigests(t *testing.T, x *Index, blob []byte) {
	t.Helper()
	cs := x.ChunkSize()
	n := (int64(len(blob)) + cs - 1) / cs
	chunk := func(c int64) []byte { return blob[c*cs : min((c+1)*cs, int64(len(blob)))] }
	for c := range n {
		if err := x.VerifyChunk(c, chunk(c)); err != nil {
			t.Fatalf("VerifyChunk(%d) of the right bytes: %v", c, err)
		}
	}
	flipped := bytes.Clone(chunk(n / 2))
	flipped[len(flipped)/2] ^= 1
	tests := []struct {
		name string
		n    int64
		b    []byte
	}{
		{"flipped bit", n / 2, flipped},
		{"short", 0, chunk(0)[:len(chunk(0))-1]},
		{"long", n - 1, append(bytes.Clone(chunk(n-1)), 0)},
		{"another chunk's bytes", 0, chunk(min(1, n-1))},
		{"negative number", -1, chunk(0)},
		{"past the end", n, chunk(n - 1)},
	}
	for _, tt := range tests {
		if tt.name == "another chunk's bytes" && n == 1 {
			continue
		}
		if err := x.VerifyChunk(tt.n, tt.b); !errors.Is(err, ErrBlobChunkDigest) {
			t.Errorf("VerifyChunk, %s: %v, want ErrBlobChunkDigest", tt.name, err)
		}
	}
}

// chunkedBlob is a memBlob that says it reads in chunks of size bytes.
type chunkedBlob struct {
	*memBlob
	size int64
}

func (c chunkedBlob) ChunkSize() int64 { return c.size }

// TestBlobChunkSizeNotTheReaders checks that the sums are recorded at BlobChunkSize
// whatever the chunks of the pass's reader (the index pass reads 1 MiB chunks; the
// reads after it fetch 64 KiB ones).
func TestBlobChunkSizeNotTheReaders(t *testing.T) {
	blob := gzipStd(t, makeTar(t, testFiles(31, 300<<10)))
	x, err := BuildIndex(t.Context(), chunkedBlob{&memBlob{b: blob}, 3000}, digestOf(blob), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := x.ChunkSize(); got != BlobChunkSize {
		t.Errorf("ChunkSize() = %d, want BlobChunkSize %d", got, BlobChunkSize)
	}
	checkChunkDigests(t, x, blob)
}

func TestOldIndexVersionRebuilt(t *testing.T) {
	blob := gzipStd(t, makeTar(t, testFiles(32, 10<<10)))
	d := digestOf(blob)
	x, err := BuildIndex(t.Context(), &memBlob{b: blob}, d, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := x.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	// The same bytes under version 1, with a valid checksum.
	old := bytes.Clone(raw)
	old[len(indexMagic)] = 1
	binary.LittleEndian.PutUint32(old[len(old)-4:], crc32.Checksum(old[:len(old)-4], crcTable))
	if err := new(Index).UnmarshalBinary(old); !errors.Is(err, ErrBadIndex) {
		t.Fatalf("UnmarshalBinary(version 1) = %v, want ErrBadIndex", err)
	}
	store := indexStore{newMapCache()}
	store.Put(d, old)
	mem := &memBlob{b: blob}
	y, err := NewIndexer(store, nil).Index(t.Context(), mem, d)
	if err != nil {
		t.Fatal(err)
	}
	if mem.bytes.Load() == 0 {
		t.Error("an index of version 1 was used: no pass over the blob")
	}
	if y.ChunkSize() == 0 {
		t.Error("the rebuilt index has no chunk digests")
	}
	if got, _ := store.Get(d); !bytes.Equal(got, raw) {
		t.Error("the store does not hold the rebuilt index")
	}
}

// flipSource is a cache.RangeSource over data that, while flip is set, flips the lowest
// bit of the byte at blob offset at (when a body covers it), or of the middle byte of
// every body when at is negative. Safe for concurrent use.
type flipSource struct {
	data    []byte
	at      int64
	flip    atomic.Bool
	fetches atomic.Int64
}

func (s *flipSource) Fetch(ctx context.Context, off, n int64) (io.ReadCloser, int64, error) {
	s.fetches.Add(1)
	end := min(off+n, int64(len(s.data)))
	b := bytes.Clone(s.data[off:end])
	if s.flip.Load() {
		switch {
		case s.at < 0:
			b[len(b)/2] ^= 1
		case s.at >= off && s.at < end:
			b[s.at-off] ^= 1
		}
	}
	return io.NopCloser(bytes.NewReader(b)), off, nil
}

// unpurgeable hides a cache.Blob's Purge method from the Indexer.
type unpurgeable struct{ b *cache.Blob }

func (u unpurgeable) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	return u.b.ReadAt(ctx, p, off)
}
func (u unpurgeable) Size() int64                                     { return u.b.Size() }
func (u unpurgeable) ChunkSize() int64                                { return u.b.ChunkSize() }
func (u unpurgeable) Reader(ctx context.Context, off int64) io.Reader { return u.b.Reader(ctx, off) }

func TestIndexerPurgesAfterFailedPass(t *testing.T) {
	tarBytes := makeTar(t, testFiles(33, 300<<10))
	tests := []struct {
		name  string
		blob  []byte
		purge bool  // the blob reader can Purge
		want  error // of the failed pass; nil: any error
	}{
		{"tar", tarBytes, true, ErrDigestMismatch},
		{"gzip", gzipStd(t, tarBytes), true, nil},
		{"zstd", zstdFrames(t, tarBytes, 200<<10, false), true, nil},
		// Without Purge, the chunks of the failed pass are read again: the retry fails too.
		{"tar, no Purge", tarBytes, false, ErrDigestMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store, err := cache.Open(t.TempDir(), 64<<20, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer store.Close()
			d := digestOf(tt.blob)
			src := &flipSource{data: tt.blob, at: int64(len(tt.blob)) / 2}
			ix := NewIndexer(indexStore{newMapCache()}, nil)
			index := func() (*Index, error) {
				b := cache.NewBlob(store, src, d, int64(len(tt.blob)), cache.WithChunkSize(16<<10))
				if !tt.purge {
					return ix.Index(t.Context(), unpurgeable{b}, d)
				}
				return ix.Index(t.Context(), b, d)
			}
			src.flip.Store(true)
			if _, err := index(); err == nil || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Fatalf("index through a flipped bit: %v, want %v", err, cmpOr(tt.want, "an error"))
			}
			src.flip.Store(false)
			x, err := index()
			if !tt.purge {
				if !errors.Is(err, ErrDigestMismatch) {
					t.Fatalf("retry without Purge: %v, want ErrDigestMismatch (the test would prove nothing)", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("retry after the source was fixed: %v", err)
			}
			checkChunkDigests(t, x, tt.blob)
		})
	}
}

func cmpOr(err error, s string) any {
	if err != nil {
		return err
	}
	return s
}

func TestVerifiedRangeReads(t *testing.T) {
	tarBytes := makeTar(t, testFiles(34, 300<<10))
	for _, tc := range layerCases(t, tarBytes) {
		t.Run(tc.name, func(t *testing.T) {
			const chunk = 16 << 10
			d := digestOf(tc.blob)
			x, err := BuildIndex(t.Context(), &memBlob{b: tc.blob}, d, nil, WithSpan(64<<10), WithChunkSize(chunk))
			if err != nil {
				t.Fatal(err)
			}
			store, err := cache.Open(t.TempDir(), 64<<20, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer store.Close()
			src := &flipSource{data: tc.blob, at: -1}
			src.flip.Store(true)
			b := cache.NewBlob(store, src, d, int64(len(tc.blob)),
				cache.WithChunkSize(x.ChunkSize()), cache.WithVerify(x.VerifyChunk))
			l := NewLayer(x, b, newMapCache(), nil)
			ref := readRef(t, tarBytes)
			var corrupt int
			var mu sync.Mutex
			var wg sync.WaitGroup
			for i := range ref {
				wg.Go(func() {
					e, want := &x.Entries[i], ref[i].data
					p := make([]byte, e.Size)
					n, err := l.ReadAt(context.Background(), e, p, 0)
					if !bytes.Equal(p[:n], want[:n]) {
						t.Errorf("%s: WRONG BYTES through a flipped bit", e.Name)
					}
					switch {
					case err == nil || err == io.EOF:
					case errors.Is(err, cache.ErrCorrupt) && errors.Is(err, ErrBlobChunkDigest):
						mu.Lock()
						corrupt++
						mu.Unlock()
					default:
						t.Errorf("%s: %v, want the right bytes or ErrCorrupt", e.Name, err)
					}
				})
			}
			wg.Wait()
			if corrupt == 0 {
				t.Fatal("no read failed: the flipped bits were never seen")
			}
			// The source is fixed: every read is right, the failed chunks fetched again.
			src.flip.Store(false)
			checkLayer(t, x, l, tarBytes, 5)
		})
	}
}

// countingSource is a cache.RangeSource over data that counts the fetches and the body
// bytes it serves. Safe for concurrent use.
type countingSource struct {
	data    []byte
	fetches atomic.Int64
	bytes   atomic.Int64
}

func (s *countingSource) Fetch(ctx context.Context, off, n int64) (io.ReadCloser, int64, error) {
	end := min(off+n, int64(len(s.data)))
	s.fetches.Add(1)
	s.bytes.Add(end - off)
	return io.NopCloser(bytes.NewReader(s.data[off:end])), off, nil
}

// textLayer returns a tar of about mib MiB of text files of 256 KiB each, and its gzip.
func textLayer(t testing.TB, mib int) (tarBytes, gz []byte) {
	t.Helper()
	var fs []file
	for i := range mib * 4 {
		f := file{hdr: testFiles(0, 0)[2].hdr, data: fixture.Prose(uint64(41+i), 256<<10)}
		f.hdr.Name = fmt.Sprintf("text/%04d", i)
		fs = append(fs, f)
	}
	tarBytes = makeTar(t, fs)
	return tarBytes, gzipStd(t, tarBytes)
}

// spanOf returns the compressed length of the span that holds stream offset off: the
// bytes between its checkpoint and the next one (the blob's end for the last span).
func spanOf(x *Index, blobSize, off int64) int64 {
	cps := x.checkpoints
	i := sort.Search(len(cps), func(i int) bool { return cps[i].Out > off }) - 1
	if i+1 < len(cps) {
		return cps[i+1].In - cps[i].In
	}
	return blobSize - cps[i].In
}

// TestReadAfterIndexFetchesTwoSpansAtMost indexes a gzip layer through the cache (1 MiB
// chunks), drops every chunk, and checks that a random 4 KiB read then fetches at most
// two spans of compressed bytes (the figure), in fine chunks checked against the
// index's digests; and that with the pass's coarse chunks still cached it fetches nothing.
func TestReadAfterIndexFetchesTwoSpansAtMost(t *testing.T) {
	tarBytes, gz := textLayer(t, 8)
	store, src, x := indexThroughCache(t, gz)
	d, size := x.Digest, int64(len(gz))
	if got, want := src.bytes.Load(), size; got != want {
		t.Fatalf("index pass fetched %d bytes, want the blob's %d", got, want)
	}
	if x.ChunkSize() != BlobChunkSize {
		t.Fatalf("index chunk size %d, want %d", x.ChunkSize(), BlobChunkSize)
	}
	var maxSpan int64
	for i := range x.checkpoints {
		maxSpan = max(maxSpan, spanOf(x, size, x.checkpoints[i].Out))
	}
	t.Logf("blob %d bytes, %d spans, largest %d compressed bytes", size, len(x.checkpoints), maxSpan)

	newBlob := func() *cache.Blob {
		return cache.NewBlob(store, src, d, size, cache.WithChunkSize(x.ChunkSize()),
			cache.WithCoarse(cache.DefaultChunkSize), cache.WithVerify(x.VerifyChunk))
	}
	read := func(t *testing.T, b *cache.Blob, e *Entry, off int64) int64 {
		t.Helper()
		before, fetches := src.bytes.Load(), src.fetches.Load()
		defer func() {
			// One request for the span (Prefetch), at most one more for the
			// bytes past it the decoder reads to finish its unit.
			if n := src.fetches.Load() - fetches; n > 2 {
				t.Errorf("%s at %d: %d requests, want at most 2", e.Name, off, n)
			}
		}()
		p := make([]byte, 4096)
		if _, err := NewLayer(x, b, nil, nil).ReadAt(t.Context(), e, p, off); err != nil {
			t.Fatal(err)
		}
		if want := tarBytes[e.Offset+off : e.Offset+off+4096]; !bytes.Equal(p, want) {
			t.Fatalf("%s at %d: wrong bytes", e.Name, off)
		}
		return src.bytes.Load() - before
	}
	// A fresh Layer reading its first unit decodes the second one ahead (unit.go's
	// read-ahead for readers moving forward from offset 0): reads in the first span
	// cost that span and the next, a choice of the Layer, not of the fetch grain. The
	// reads here start after the first span.
	r := rand.New(rand.NewPCG(5, 5))
	pick := func() (*Entry, int64) {
		for {
			e := &x.Entries[r.IntN(len(x.Entries))]
			if off := r.Int64N(e.Size - 4096); e.Offset+off >= x.checkpoints[1].Out {
				return e, off
			}
		}
	}

	t.Run("warm: coarse chunks of the pass", func(t *testing.T) {
		for range 10 {
			e, off := pick()
			if got := read(t, newBlob(), e, off); got != 0 {
				t.Errorf("%s at %d: fetched %d bytes with every coarse chunk cached, want 0", e.Name, off, got)
			}
		}
	})
	t.Run("cold", func(t *testing.T) {
		var total int64
		for range 20 {
			if err := newBlob().Purge(); err != nil {
				t.Fatal(err)
			}
			e, off := pick()
			got := read(t, newBlob(), e, off)
			// The read may end in the next span: two spans from its own.
			first := e.Offset + off
			limit := spanOf(x, size, first) + spanOf(x, size, min(first+4096, x.Size-1))
			if first/DefaultSpan == (first+4095)/DefaultSpan {
				limit = 2 * spanOf(x, size, first)
			}
			if got == 0 || got > limit {
				t.Errorf("%s at stream offset %d: fetched %d bytes, want 1..%d (2 spans)", e.Name, first, got, limit)
			}
			// Within a span, a read fetches that span rounded out to the grain:
			// the decoder's reads stop at the next restart point.
			if own := spanOf(x, size, first); first/DefaultSpan == (first+4095)/DefaultSpan && got > own+2*BlobChunkSize {
				t.Errorf("%s at stream offset %d: fetched %d bytes, want at most its span (%d) and two chunks", e.Name, first, got, own)
			}
			total += got
		}
		t.Logf("20 cold 4 KiB reads fetched %d bytes, %d on average", total, total/20)
	})
}

// TestIndexWithCoarseSumsStillReads: an index stored before BlobChunkSize, with sums of
// 1 MiB chunks (same index version: the size is stored with the sums), loads, and reads
// through a Blob set up as fs sets one up (its grain, coarse fallback) fetch and verify
// 1 MiB chunks.
func TestIndexWithCoarseSumsStillReads(t *testing.T) {
	tarBytes, gz := textLayer(t, 8)
	d, size := digestOf(gz), int64(len(gz))
	old, err := BuildIndex(t.Context(), &memBlob{b: gz}, d, nil, WithChunkSize(cache.DefaultChunkSize))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := old.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	x := new(Index)
	if err := x.UnmarshalBinary(raw); err != nil {
		t.Fatalf("an index with 1 MiB sums does not load: %v", err)
	}
	if x.ChunkSize() != cache.DefaultChunkSize {
		t.Fatalf("loaded chunk size %d, want %d", x.ChunkSize(), cache.DefaultChunkSize)
	}
	store, err := cache.Open(t.TempDir(), 1<<30, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	src := &flipSource{data: gz, at: size / 2}
	b := cache.NewBlob(store, src, d, size, cache.WithChunkSize(x.ChunkSize()),
		cache.WithCoarse(cache.DefaultChunkSize), cache.WithVerify(x.VerifyChunk))
	if b.ChunkSize() != cache.DefaultChunkSize {
		t.Fatalf("blob chunk size %d", b.ChunkSize())
	}
	l := NewLayer(x, b, nil, nil)
	src.flip.Store(true)
	mid := &x.Entries[sort.Search(len(x.Entries), func(i int) bool { return x.Entries[i].Offset > x.Size/2 })]
	if _, err := l.ReadAt(t.Context(), mid, make([]byte, mid.Size), 0); !errors.Is(err, ErrBlobChunkDigest) {
		t.Fatalf("read through a flipped bit: %v, want ErrBlobChunkDigest", err)
	}
	src.flip.Store(false)
	checkLayer(t, x, l, tarBytes, 6)
}

// TestReadAllAfterIndexReadsEachCoarseChunkOnce reads every file of an indexed gzip
// layer in archive order through a fine Blob over the index pass's cached 1 MiB chunks:
// nothing is fetched, and each chunk's file is read from the store about once, though
// the Layer reads 256 KiB at a time and decodes the next span ahead on another goroutine.
func TestReadAllAfterIndexReadsEachCoarseChunkOnce(t *testing.T) {
	tarBytes, gz := textLayer(t, 16)
	store, src, x := indexThroughCache(t, gz)
	d, size := x.Digest, int64(len(gz))
	fetches := src.fetches.Load()
	before := store.Stats()
	b := cache.NewBlob(store, src, d, size, cache.WithChunkSize(x.ChunkSize()),
		cache.WithCoarse(cache.DefaultChunkSize), cache.WithVerify(x.VerifyChunk))
	l := NewLayer(x, b, nil, nil)
	for i := range x.Entries {
		e := &x.Entries[i]
		p := make([]byte, e.Size)
		if n, err := l.ReadAt(t.Context(), e, p, 0); n != len(p) || (err != nil && err != io.EOF) {
			t.Fatalf("%s: n=%d err=%v", e.Name, n, err)
		}
		if !bytes.Equal(p, tarBytes[e.Offset:e.Offset+e.Size]) {
			t.Fatalf("%s: wrong bytes", e.Name)
		}
	}
	coarse := (size + cache.DefaultChunkSize - 1) / cache.DefaultChunkSize
	hits := store.Stats().Hits - before.Hits
	t.Logf("%d coarse chunks, %d store reads", coarse, hits)
	if got := src.fetches.Load() - fetches; got != 0 {
		t.Errorf("%d fetches with every chunk cached, want 0", got)
	}
	if hits > 2*coarse {
		t.Errorf("%d chunk files read for %d coarse chunks, want about one each", hits, coarse)
	}
}

// indexThroughCache indexes the gzip blob gz as fs does, through a cache.Blob of the
// default chunks over a new store, and returns the store, the counting source behind
// it and the index.
func indexThroughCache(t *testing.T, gz []byte) (*cache.Store, *countingSource, *Index) {
	t.Helper()
	d, size := digestOf(gz), int64(len(gz))
	store, err := cache.Open(t.TempDir(), 1<<30, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	src := &countingSource{data: gz}
	x, err := BuildIndex(t.Context(), cache.NewBlob(store, src, d, size), d, nil)
	if err != nil {
		t.Fatal(err)
	}
	return store, src, x
}
