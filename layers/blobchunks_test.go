package layers

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/regfs/regfs/cache"
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
					want = cache.DefaultChunkSize
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

func TestBlobChunkSizeFromReader(t *testing.T) {
	blob := gzipStd(t, makeTar(t, testFiles(31, 10<<10)))
	x, err := BuildIndex(t.Context(), chunkedBlob{&memBlob{b: blob}, 3000}, digestOf(blob), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := x.ChunkSize(); got != 3000 {
		t.Errorf("ChunkSize() = %d, want the reader's 3000", got)
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
