package layers

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"sync"
	"testing"
	"time"
)

// bigLayer returns a tar of ~n MiB in files of 64 KiB, mixed compressible and random.
func bigLayer(t testing.TB, mib int) ([]byte, []file) {
	r := rand.New(rand.NewPCG(9, 9))
	var fs []file
	for i := range mib * 16 {
		fs = append(fs, file{hdr: testFiles(0, 0)[2].hdr, data: randomData(r, 64<<10, i%3 != 0)})
		fs[i].hdr.Name = fmt.Sprintf("f/%05d", i)
	}
	return makeTar(t, fs), fs
}

// TestReadCostsOneSpan checks that a random small read inflates about one span, never
// the stream from its start.
func TestReadCostsOneSpan(t *testing.T) {
	tarBytes, _ := bigLayer(t, 6)
	const span = 1 << 20
	for _, tc := range []struct {
		name string
		blob []byte
	}{
		{"gzip", gzipStd(t, tarBytes)},
		{"zstd multi-frame", zstdFrames(t, tarBytes, 256<<10, false)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			blob, x := mustIndex(t, tc.blob, WithSpan(span))
			r := rand.New(rand.NewPCG(1, 1))
			for range 10 {
				e := &x.Entries[len(x.Entries)/2+r.IntN(len(x.Entries)/2)]
				off := r.Int64N(e.Size - 4096)
				l := NewLayer(x, blob, nil, nil)
				before := blob.bytes.Load()
				p := make([]byte, 4096)
				if _, err := l.ReadAt(context.Background(), e, p, off); err != nil {
					t.Fatal(err)
				}
				want := tarBytes[e.Offset+off : e.Offset+off+4096]
				if !bytes.Equal(p, want) {
					t.Fatalf("%s at %d: wrong bytes", e.Name, off)
				}
				st := l.Stats()
				// One unit: at most a span and a bit (content decides where it ends),
				// plus for zstd the way from the frame start to the chunk.
				if limit := int64(2*span + 256<<10); st.Decoded > limit || st.Resumes != 1 {
					t.Errorf("%s at %d: decoded %d bytes with %d resumes; want <= %d, 1", e.Name, e.Offset+off, st.Decoded, st.Resumes, limit)
				}
				// Only about that span's compressed bytes are read.
				if fetched, limit := blob.bytes.Load()-before, int64(len(tc.blob))*2*span/x.Size+2*cursorReadSize; fetched > limit {
					t.Errorf("read %d compressed bytes of %d, want <= %d", fetched, len(tc.blob), limit)
				}
			}
		})
	}
}

// TestReadAllCostsOneDecode reads every file in archive order and in reverse order
// within groups: the total work stays about one decode of the layer.
func TestReadAllCostsOneDecode(t *testing.T) {
	tarBytes, _ := bigLayer(t, 4)
	gz := gzipStd(t, tarBytes)
	blob, x := mustIndex(t, gz)
	l := NewLayer(x, blob, nil, nil)
	ctx := context.Background()
	p := make([]byte, 4096)
	// Small reads of every file, out of order within each group of 8 files.
	for g := 0; g < len(x.Entries); g += 8 {
		for i := min(g+7, len(x.Entries)-1); i >= g; i-- {
			e := &x.Entries[i]
			for off := int64(0); off < e.Size; off += int64(len(p)) {
				if _, err := l.ReadAt(ctx, e, p, off); err != nil && err != io.EOF {
					t.Fatal(err)
				}
			}
		}
	}
	if st := l.Stats(); st.Decoded > x.Size*11/10 {
		t.Errorf("decoded %d bytes for a %d byte stream (%d resumes)", st.Decoded, x.Size, st.Resumes)
	}
	l.Close()
	if _, err := l.ReadAt(ctx, &x.Entries[0], p, 0); err != nil {
		t.Errorf("read after Close: %v", err)
	}
}

func TestZstdSingleFrameDecodedCache(t *testing.T) {
	tarBytes, _ := bigLayer(t, 4)
	zs := zstdFrames(t, tarBytes, 0, false)
	blob, x := mustIndex(t, zs)
	if x.RestartPoints() != 1 {
		t.Fatalf("restart points: got %d, want 1", x.RestartPoints())
	}
	dc := newMapCache()
	ctx := context.Background()
	read := func(l *Layer, e *Entry) {
		t.Helper()
		p := make([]byte, 4096)
		if _, err := l.ReadAt(ctx, e, p, 100); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(p, tarBytes[e.Offset+100:e.Offset+100+4096]) {
			t.Fatalf("%s: wrong bytes", e.Name)
		}
	}
	last := &x.Entries[len(x.Entries)-1]
	l1 := NewLayer(x, blob, dc, nil)
	read(l1, last)
	if st := l1.Stats(); st.Decoded < last.Offset {
		t.Errorf("first read decoded %d bytes, want the stream up to %d", st.Decoded, last.Offset)
	}
	// A new layer (a remount) reading in the middle finds the chunks in the cache.
	l2 := NewLayer(x, blob, dc, nil)
	read(l2, &x.Entries[len(x.Entries)/2])
	if st := l2.Stats(); st.Decoded != 0 || st.UnitHits != 1 {
		t.Errorf("second layer: %+v; want a cache hit and nothing decoded", st)
	}
}

func TestConcurrentReaders(t *testing.T) {
	tarBytes := makeTar(t, testFiles(6, 400<<10))
	for _, tc := range layerCases(t, tarBytes) {
		t.Run(tc.name, func(t *testing.T) {
			blob, x := mustIndex(t, tc.blob, WithSpan(64<<10))
			l := NewLayer(x, blob, newMapCache(), nil, WithMemoryCache(256<<10))
			var wg sync.WaitGroup
			errs := make(chan error, 8)
			for g := range 8 {
				wg.Go(func() {
					r := rand.New(rand.NewPCG(uint64(g), 3))
					for range 60 {
						i := r.IntN(len(x.Entries))
						e := &x.Entries[i]
						if e.Size == 0 {
							continue
						}
						off := r.Int64N(e.Size)
						p := make([]byte, min(e.Size-off, 20000))
						if _, err := l.ReadAt(context.Background(), e, p, off); err != nil {
							errs <- err
							return
						}
						if !bytes.Equal(p, tarBytes[e.Offset+off:e.Offset+off+int64(len(p))]) {
							errs <- fmt.Errorf("%s at %d: wrong bytes", e.Name, off)
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}

func TestReadAtBounds(t *testing.T) {
	tarBytes := makeTar(t, testFiles(7, 10))
	blob, x := mustIndex(t, gzipStd(t, tarBytes))
	l := NewLayer(x, blob, nil, nil)
	e := &x.Entries[1] // etc/passwd, 30 bytes (the global header is no entry)
	ctx := context.Background()
	p := make([]byte, 10)
	if n, err := l.ReadAt(ctx, e, p, e.Size); n != 0 || err != io.EOF {
		t.Errorf("at end: %d, %v", n, err)
	}
	if n, err := l.ReadAt(ctx, e, p, e.Size-4); n != 4 || err != io.EOF || string(p[:4]) != "/sh\n" {
		t.Errorf("across end: %d, %v, %q", n, err, p[:n])
	}
	if _, err := l.ReadAt(ctx, e, p, -1); err == nil {
		t.Error("negative offset: no error")
	}
	bogus := Entry{Name: "bogus", Offset: x.Size - 5, Size: 100}
	if _, err := l.ReadAt(ctx, &bogus, p, 0); err == nil {
		t.Error("entry outside the stream: no error")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := NewLayer(x, blob, nil, nil).ReadAt(cctx, e, p, 0); err == nil {
		t.Error("cancelled: no error")
	}
}

// TestReadCached checks that ReadCached serves only what a read has decoded, byte for
// byte, and never decodes or fetches.
func TestReadCached(t *testing.T) {
	tarBytes, _ := bigLayer(t, 4)
	for _, tc := range []struct {
		name string
		blob []byte
	}{
		{"gzip", gzipStd(t, tarBytes)},
		{"zstd multi-frame", zstdFrames(t, tarBytes, 256<<10, false)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			blob, x := mustIndex(t, tc.blob, WithSpan(1<<20))
			l := NewLayer(x, blob, nil, nil)
			mid := &x.Entries[len(x.Entries)/2]
			p := make([]byte, mid.Size)
			if _, ok := l.ReadCached(t.Context(), mid, p, 0); ok {
				t.Fatal("ReadCached of a fresh layer succeeded")
			}
			if _, err := l.ReadAt(context.Background(), mid, p[:4096], 0); err != nil {
				t.Fatal(err)
			}
			st, fetched := l.Stats(), blob.bytes.Load()
			var hits, misses int
			for i := range x.Entries {
				e := &x.Entries[i]
				q := make([]byte, e.Size)
				k, ok := l.ReadCached(t.Context(), e, q, 0)
				if !ok {
					misses++
					continue
				}
				hits++
				if want := tarBytes[e.Offset : e.Offset+e.Size]; k != len(q) || !bytes.Equal(q, want) {
					t.Fatalf("ReadCached(%s) = %d bytes, wrong", e.Name, k)
				}
			}
			if hits == 0 || misses == 0 {
				t.Errorf("ReadCached: %d entries in memory, %d not; want some of each after one read", hits, misses)
			}
			if l.Stats() != st || blob.bytes.Load() != fetched {
				t.Errorf("ReadCached decoded or fetched: stats %+v -> %+v, fetched %d -> %d", st, l.Stats(), fetched, blob.bytes.Load())
			}
			if _, ok := l.ReadCached(t.Context(), mid, p, mid.Size); ok {
				t.Error("ReadCached at the entry's end succeeded")
			}
		})
	}
}

// TestView checks that View returns the same bytes as ReadAt without a copy where a
// range lies in one decoded unit, declines ranges over two units, and that
// ViewCached serves only units in memory.
func TestView(t *testing.T) {
	tarBytes, _ := bigLayer(t, 4)
	gz := gzipStd(t, tarBytes)
	blob, x := mustIndex(t, gz, WithSpan(1<<20))
	l := NewLayer(x, blob, nil, nil)
	if _, _, ok := l.ViewCached(t.Context(), &x.Entries[0], 0, 4096); ok {
		t.Fatal("ViewCached before any read succeeded")
	}
	// Reads at three offsets of every entry, and reads over every unit boundary.
	type read struct {
		e   *Entry
		off int64
	}
	var reads []read
	for i := range x.Entries {
		e := &x.Entries[i]
		for _, off := range []int64{0, e.Size / 3, e.Size - 100} {
			reads = append(reads, read{e, off})
		}
	}
	for _, cp := range x.checkpoints[1:] {
		i := sort.Search(len(x.Entries), func(i int) bool { return x.Entries[i].Offset+x.Entries[i].Size > cp.Out-100 })
		if e := &x.Entries[i]; e.Offset <= cp.Out-100 && e.Offset+e.Size >= cp.Out+4000 {
			reads = append(reads, read{e, cp.Out - 100 - e.Offset})
		}
	}
	var views, declined int
	for _, r := range reads {
		e, off := r.e, r.off
		b, release, ok, err := l.View(t.Context(), e, off, 4096)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			declined++
			u := l.unitAt(e.Offset + off)
			if e.Offset+off+min(4096, e.Size-off) <= u.end {
				t.Errorf("%s at %d: View declined a range inside one unit", e.Name, off)
			}
			continue
		}
		views++
		want := tarBytes[e.Offset+off : e.Offset+off+min(4096, e.Size-off)]
		if !bytes.Equal(b, want) {
			t.Fatalf("%s at %d: View gave wrong bytes", e.Name, off)
		}
		c, crelease, ok := l.ViewCached(t.Context(), e, off, 4096)
		if !ok || !bytes.Equal(c, want) {
			t.Fatalf("%s at %d: ViewCached after View: ok %v or wrong bytes", e.Name, off, ok)
		}
		crelease()
		release()
	}
	if views == 0 || declined == 0 {
		t.Errorf("%d views, %d declined: want some of each", views, declined)
	}
}

// TestDecodeAheadStops reads forward twice through a Layer whose memory holds few
// units: the decode-ahead fills what fits and stops (it once evicted its own units and
// decoded on forever).
func TestDecodeAheadStops(t *testing.T) {
	tarBytes, _ := bigLayer(t, 8)
	gz := gzipStd(t, tarBytes)
	blob, x := mustIndex(t, gz, WithSpan(64<<10))
	for _, mem := range []int64{0, 256 << 10, defaultUnitCache} {
		l := NewLayer(x, blob, nil, nil, WithMemoryCache(mem))
		p := make([]byte, 4096)
		for _, e := range x.Entries[:2] { // two forward reads: a walk
			if _, err := l.ReadAt(t.Context(), &e, p, 0); err != nil {
				t.Fatal(err)
			}
		}
		settled := func() int64 {
			for prev := int64(-1); ; {
				time.Sleep(50 * time.Millisecond)
				d := l.Stats().Decoded
				if d == prev {
					return d
				}
				prev = d
				if d > 4*x.Size {
					t.Fatalf("memory %d: decoded %d bytes of a %d byte stream, and going on", mem, d, x.Size)
				}
			}
		}
		if d := settled(); d > 2*aheadWindow+x.Entries[1].Offset+x.Entries[1].Size {
			t.Errorf("memory %d: decoded %d bytes after two reads near the start, want at most the window", mem, d)
		}
		l.Close()
	}
}

// TestUnitBuffersNotReusedWhileHeld reads one layer from many goroutines at once, by
// views held for a while, reads into buffers, and speculative reads, through a Layer
// whose memory holds few units: units are evicted and their buffers reused all the
// time. Every view must still hold its bytes when released (a buffer reused while
// held would change under it), and every read must be right.
func TestUnitBuffersNotReusedWhileHeld(t *testing.T) {
	tarBytes, _ := bigLayer(t, 6)
	gz := gzipStd(t, tarBytes)
	blob, x := mustIndex(t, gz, WithSpan(256<<10))
	l := NewLayer(x, blob, nil, nil, WithMemoryCache(1<<20))
	defer l.Close()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 77))
			for range 150 {
				e := &x.Entries[r.IntN(len(x.Entries))]
				off := r.Int64N(e.Size)
				n := min(int64(1+r.IntN(64<<10)), e.Size-off)
				want := tarBytes[e.Offset+off : e.Offset+off+n]
				var b []byte
				var release func()
				var ok bool
				var err error
				switch r.IntN(3) {
				case 0:
					b, release, ok, err = l.View(t.Context(), e, off, n)
					if err != nil {
						t.Error(err)
						return
					}
				case 1:
					b, release, ok = l.ViewCached(t.Context(), e, off, n)
				default:
					p := make([]byte, n)
					if _, err := l.ReadAt(t.Context(), e, p, off); err != nil && err != io.EOF {
						t.Error(err)
						return
					}
					b, release, ok = p, func() {}, true
				}
				if !ok {
					continue
				}
				if !bytes.Equal(b, want) {
					t.Errorf("%s at %d+%d: wrong bytes", e.Name, off, n)
				}
				time.Sleep(time.Duration(r.IntN(200)) * time.Microsecond) // others decode meanwhile
				if !bytes.Equal(b, want) {
					t.Errorf("%s at %d+%d: the bytes changed while held", e.Name, off, n)
				}
				release()
			}
		})
	}
	wg.Wait()
}
