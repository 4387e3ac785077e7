package cache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"testing/iotest"
	"time"
)

// fakeMode is how a fakeSource answers.
type fakeMode int

const (
	modeRange     fakeMode = iota // 206-style: the body starts at off
	modeFull                      // 200-style: the whole blob from 0
	modeShort                     // the body stops one byte short of off+n (or of the blob's end)
	modeError                     // Fetch fails
	modeBadStart                  // the body claims to start after off
	modeBodyError                 // reading the body fails after a few bytes
)

var errFake = errors.New("fake: registry unavailable")

// fakeSource is a RangeSource over a byte slice that counts its fetches. It is safe for
// concurrent use.
type fakeSource struct {
	data []byte

	mu      sync.Mutex
	mode    fakeMode // guarded by mu
	gate    chan struct{}
	fetches int        // guarded by mu
	bytes   int64      // guarded by mu; bytes of bodies returned
	ranges  [][2]int64 // guarded by mu; (off, n) of each fetch
	ctxErrs int        // guarded by mu; fetches whose ctx had ended when the body was made
	started chan struct{}
	// tamper, if set, makes the body of the fetch'th fetch (1-based) of the bytes b, which
	// start at blob offset start, in the range and full modes. Guarded by mu.
	tamper func(fetch int, start int64, b []byte) io.Reader
}

// setTamper sets f.tamper.
func (f *fakeSource) setTamper(fn func(fetch int, start int64, b []byte) io.Reader) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tamper = fn
}

func newFakeSource(data []byte) *fakeSource {
	return &fakeSource{data: data, started: make(chan struct{}, 1024)}
}

func (f *fakeSource) setMode(m fakeMode) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mode = m
}

// block makes fetches wait until the returned func is called.
func (f *fakeSource) block() (release func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gate = make(chan struct{})
	g := f.gate
	var once sync.Once
	return func() { once.Do(func() { close(g) }) }
}

func (f *fakeSource) Fetch(ctx context.Context, off, n int64) (io.ReadCloser, int64, error) {
	f.mu.Lock()
	f.fetches++
	f.ranges = append(f.ranges, [2]int64{off, n})
	gate, mode, tamper, nth := f.gate, f.mode, f.tamper, f.fetches
	f.mu.Unlock()
	select {
	case f.started <- struct{}{}:
	default:
	}
	if gate != nil {
		<-gate
	}
	size := int64(len(f.data))
	if off < 0 || n <= 0 || off >= size {
		return nil, 0, errors.New("fake: bad range")
	}
	end := min(off+n, size)
	var start int64
	switch mode {
	case modeRange:
		start = off
	case modeFull:
		start, end = 0, size
	case modeShort:
		start, end = off, end-1
	case modeError:
		return nil, 0, errFake
	case modeBadStart:
		start = off + 1
	case modeBodyError:
		start = off
		return io.NopCloser(io.MultiReader(bytes.NewReader(f.data[off:off+1]), iotest.ErrReader(errFake))), start, nil
	}
	f.mu.Lock()
	f.bytes += end - start
	if ctx.Err() != nil {
		f.ctxErrs++
	}
	f.mu.Unlock()
	if tamper != nil && (mode == modeRange || mode == modeFull) {
		return io.NopCloser(tamper(nth, start, bytes.Clone(f.data[start:end]))), start, nil
	}
	return io.NopCloser(bytes.NewReader(f.data[start:end])), start, nil
}

func (f *fakeSource) counts() (fetches int, n int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fetches, f.bytes
}

func (f *fakeSource) fetchRanges() [][2]int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][2]int64(nil), f.ranges...)
}

// randomBytes returns n reproducible pseudo-random bytes.
func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// openStore opens a store in dir and closes it at the end of the test.
func openStore(t *testing.T, dir string, max int64) *Store {
	t.Helper()
	s, err := Open(dir, max, nil)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// diskUsage sums the sizes of the regular files under dir.
func diskUsage(t *testing.T, dir string) int64 {
	t.Helper()
	var total int64
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			total += info.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", dir, err)
	}
	return total
}

// entryFiles lists the entry files under dir.
func entryFiles(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	filepath.WalkDir(filepath.Join(dir, dataDirName()), func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			files = append(files, path)
		}
		return nil
	})
	return files
}

// digestOf returns the sha256 digest of s.
func digestOf(s string) string {
	return fmt.Sprintf("sha256:%x", sha256.Sum256([]byte(s)))
}

// chunkSums returns the sha256 of each chunk-byte chunk of data and a VerifyFunc that checks
// fetched chunks against them.
func chunkSums(data []byte, chunk int) VerifyFunc {
	var sums [][sha256.Size]byte
	for off := 0; off < len(data); off += chunk {
		sums = append(sums, sha256.Sum256(data[off:min(off+chunk, len(data))]))
	}
	return func(c int64, b []byte) error {
		if c < 0 || c >= int64(len(sums)) || sha256.Sum256(b) != sums[c] {
			return fmt.Errorf("chunk %d: sha256 mismatch", c)
		}
		return nil
	}
}

// flipAt returns a tamper func that flips the lowest bit of the byte at blob offset off
// in the bodies that cover it, for fetches whose number passes which (nil: every one).
func flipAt(off int64, which func(fetch int) bool) func(int, int64, []byte) io.Reader {
	return func(fetch int, start int64, b []byte) io.Reader {
		if (which == nil || which(fetch)) && off >= start && off < start+int64(len(b)) {
			b[off-start] ^= 1
		}
		return bytes.NewReader(b)
	}
}

// failAfter returns a tamper func whose body gives n bytes, then err, for fetches whose
// number passes which (nil: every one).
func failAfter(n int, err error, which func(fetch int) bool) func(int, int64, []byte) io.Reader {
	return func(fetch int, start int64, b []byte) io.Reader {
		if which != nil && !which(fetch) {
			return bytes.NewReader(b)
		}
		return io.MultiReader(bytes.NewReader(b[:min(n, len(b))]), iotest.ErrReader(err))
	}
}

// stallErr is an error that says the source stalled, as RangeSource allows.
type stallErr struct{}

func (stallErr) Error() string { return "fake: no progress" }
func (stallErr) Stalled() bool { return true }

// pileUpReaders reads [off(i), end) of b from readers goroutines at once while src's
// fetches are held back, then lets them go: all readers wait on the same cold chunk.
// Every read must return data's bytes.
func pileUpReaders(t *testing.T, b *Blob, src *fakeSource, data []byte, readers int, off func(i int) int64, end int64) {
	t.Helper()
	release := src.block()
	var wg sync.WaitGroup
	errs := make(chan error, readers)
	for i := range readers {
		wg.Go(func() {
			o := off(i)
			p := make([]byte, end-o)
			n, err := b.ReadAt(t.Context(), p, o)
			if err != nil || n != len(p) || !bytes.Equal(p, data[o:end]) {
				errs <- errors.Join(errors.New("bad read"), err)
			}
		})
	}
	<-src.started
	time.Sleep(20 * time.Millisecond) // let the readers pile up on the fetch
	release()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
