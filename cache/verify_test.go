package cache

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// newVerifiedBlob returns a Blob of data with chunk size chunk that checks fetched chunks
// against data's sha256 sums, and counts the checks.
func newVerifiedBlob(t *testing.T, data []byte, chunk int64) (*Blob, *fakeSource, *Store, *atomic.Int64) {
	t.Helper()
	s := openStore(t, t.TempDir(), 1<<20)
	src := newFakeSource(data)
	sums := chunkSums(data, int(chunk))
	var checks atomic.Int64
	verify := func(c int64, b []byte) error {
		checks.Add(1)
		return sums(c, b)
	}
	b := NewBlob(s, src, digestOf(string(data)), int64(len(data)), WithChunkSize(chunk), WithVerify(verify))
	t.Cleanup(b.running.Wait)
	return b, src, s, &checks
}

// storedChunks lists the chunks of b the store holds.
func storedChunks(b *Blob) []int64 {
	var cs []int64
	for c := range (b.size + b.chunk - 1) / b.chunk {
		if b.s.has(b.key(c)) {
			cs = append(cs, c)
		}
	}
	return cs
}

func TestVerifyRejectsCorruptChunk(t *testing.T) {
	data := randomBytes(21, 100) // chunks of 7: 0..14
	first := func(fetch int) bool { return fetch == 1 }
	tests := []struct {
		name       string
		mode       fakeMode
		flip       int64 // blob offset flipped in the first body
		off, n     int64 // the read
		wantN      int   // bytes the failed read returns (-1: the read succeeds)
		wantStored []int64
	}{
		// [10,45) is chunks 1..6 in one body; chunk 4 ([28,35)) is flipped.
		{"range body", modeRange, 30, 10, 35, 18, []int64{1, 2, 3, 5, 6}},
		{"range body, first chunk", modeRange, 7, 10, 35, 0, []int64{2, 3, 4, 5, 6}},
		{"range body, last chunk", modeRange, 44, 10, 35, 32, []int64{1, 2, 3, 4, 5}},
		// A body from offset 0 passes chunks 0..3 on the way to chunk 4.
		{"full body, passed chunk", modeFull, 10, 30, 5, -1, []int64{0, 2, 3, 4}},
		{"full body, wanted chunk", modeFull, 31, 30, 5, 0, []int64{0, 1, 2, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, src, _, checks := newVerifiedBlob(t, data, 7)
			src.setMode(tt.mode)
			src.setTamper(flipAt(tt.flip, first))
			p := make([]byte, tt.n)
			n, err := b.ReadAt(t.Context(), p, tt.off)
			if tt.wantN < 0 {
				checkReadAt(t, data, p, tt.off, n, err)
			} else {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("ReadAt = %d, %v; want ErrCorrupt", n, err)
				}
				if n != tt.wantN || !bytes.Equal(p[:n], data[tt.off:tt.off+int64(n)]) {
					t.Errorf("ReadAt returned %d bytes, want the %d good ones before the corrupt chunk", n, tt.wantN)
				}
			}
			b.running.Wait()
			if got := storedChunks(b); !slices.Equal(got, tt.wantStored) {
				t.Errorf("stored chunks %v, want %v: a corrupt chunk stored, or a good one dropped", got, tt.wantStored)
			}
			// The source recovers: the chunk is fetched again and served.
			fetches, _ := src.counts()
			p = make([]byte, tt.n)
			n, err = b.ReadAt(t.Context(), p, tt.off)
			checkReadAt(t, data, p, tt.off, n, err)
			if tt.wantN >= 0 {
				if got, _ := src.counts(); got != fetches+1 {
					t.Errorf("%d fetches for the second read, want 1", got-fetches)
				}
			}
			// Chunks served from the store are not checked again.
			before := checks.Load()
			n, err = b.ReadAt(t.Context(), p, tt.off)
			checkReadAt(t, data, p, tt.off, n, err)
			if got := checks.Load(); got != before {
				t.Errorf("%d checks of chunks read from the store, want 0", got-before)
			}
		})
	}
}

func TestVerifyRejectsEveryCorruptBody(t *testing.T) {
	data := randomBytes(22, 100)
	b, src, s, _ := newVerifiedBlob(t, data, 7)
	src.setTamper(flipAt(50, nil))
	for range 3 {
		if _, err := b.ReadAt(t.Context(), make([]byte, 10), 45); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("ReadAt of a chunk the source always corrupts: %v, want ErrCorrupt", err)
		}
	}
	b.running.Wait()
	if got := storedChunks(b); !slices.Equal(got, []int64{6}) {
		t.Errorf("stored chunks %v, want [6]", got)
	}
	if st := s.Stats(); st.Entries != 1 {
		t.Errorf("Stats = %+v, want one entry", st)
	}
}

// connReset is what a read from a reset TCP connection returns.
var connReset = &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}

func TestFetchResumes(t *testing.T) {
	data := randomBytes(23, 100) // chunks of 7: 0..14
	upTo := func(k int) func(int) bool { return func(f int) bool { return f <= k } }
	tests := []struct {
		name       string
		mode       fakeMode
		off, n     int64
		tamper     func(int, int64, []byte) io.Reader
		wantStarts []int64 // offsets of the fetches made
		wantErr    error   // nil: the read succeeds
	}{
		{"reset in the first chunk", modeRange, 0, 100, failAfter(3, connReset, upTo(1)), []int64{0, 0}, nil},
		{"reset after two chunks", modeRange, 0, 100, failAfter(17, connReset, upTo(1)), []int64{0, 14}, nil},
		{"body ends early twice", modeRange, 10, 60, failAfter(20, io.EOF, upTo(2)), []int64{7, 21, 35}, nil},
		{"unexpected EOF", modeRange, 0, 100, failAfter(50, io.ErrUnexpectedEOF, upTo(1)), []int64{0, 49}, nil},
		{"full body reset", modeFull, 30, 5, failAfter(17, connReset, upTo(1)), []int64{28, 28}, nil},
		{"resets every time", modeRange, 0, 100, failAfter(17, connReset, nil), []int64{0, 14, 28}, syscall.ECONNRESET},
		{"stall not resumed", modeRange, 0, 100, failAfter(17, stallErr{}, upTo(1)), []int64{0}, stallErr{}},
		{"deadline not resumed", modeRange, 0, 100, failAfter(17, context.DeadlineExceeded, upTo(1)), []int64{0}, context.DeadlineExceeded},
		{"other error not resumed", modeRange, 0, 100, failAfter(17, errFake, upTo(1)), []int64{0}, errFake},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, src, _ := newTestBlob(t, data, 7, 1<<20)
			src.setMode(tt.mode)
			src.setTamper(tt.tamper)
			p := make([]byte, tt.n)
			n, err := b.ReadAt(t.Context(), p, tt.off)
			if tt.wantErr == nil {
				checkReadAt(t, data, p, tt.off, n, err)
			} else if !errors.Is(err, tt.wantErr) {
				t.Errorf("ReadAt = %d, %v; want %v", n, err, tt.wantErr)
			}
			b.running.Wait()
			var starts []int64
			for _, r := range src.fetchRanges() {
				starts = append(starts, r[0])
			}
			if !slices.Equal(starts, tt.wantStarts) {
				t.Errorf("fetches started at %v, want %v", starts, tt.wantStarts)
			}
		})
	}
}

func TestPurge(t *testing.T) {
	data := randomBytes(24, 100)
	b, src, s := newTestBlob(t, data, 7, 1<<20)
	other := NewBlob(s, src, digestOf("other"), 100, WithChunkSize(7))
	t.Cleanup(other.running.Wait)
	ctx := t.Context()
	for _, bl := range []*Blob{b, other} {
		p := make([]byte, 100)
		n, err := bl.ReadAt(ctx, p, 0)
		checkReadAt(t, data, p, 0, n, err)
		bl.running.Wait()
	}
	if err := b.Purge(); err != nil {
		t.Fatalf("Purge: %v", err)
	}
	if got := storedChunks(b); len(got) != 0 {
		t.Errorf("chunks %v left after Purge", got)
	}
	if got := len(storedChunks(other)); got != 15 {
		t.Errorf("another blob has %d chunks stored after Purge, want its 15", got)
	}

	// A fetch running across a Purge serves its readers but stores nothing.
	release := src.block()
	done := make(chan error, 1)
	p := make([]byte, 10)
	go func() {
		n, err := b.ReadAt(ctx, p, 20)
		if err == nil && !bytes.Equal(p[:n], data[20:30]) {
			err = errors.New("wrong bytes")
		}
		done <- err
	}()
	<-src.started // the fetches of the first reads
	<-src.started
	<-src.started
	if err := b.Purge(); err != nil {
		t.Fatalf("Purge: %v", err)
	}
	release()
	if err := <-done; err != nil {
		t.Fatalf("read across a Purge: %v", err)
	}
	b.running.Wait()
	if got := storedChunks(b); len(got) != 0 {
		t.Errorf("a fetch started before Purge stored chunks %v after it", got)
	}
	// Later reads fetch and store again.
	fetches, _ := src.counts()
	n, err := b.ReadAt(ctx, p, 20)
	checkReadAt(t, data, p, 20, n, err)
	b.running.Wait()
	if got, _ := src.counts(); got != fetches+1 || len(storedChunks(b)) != 3 {
		t.Errorf("after Purge: %d fetches, chunks %v stored; want 1 fetch, chunks 2..4", got-fetches, storedChunks(b))
	}
}

// resetSource fails every Fetch with a connection reset, as a source that has used up
// its own retries does.
type resetSource struct{ fetches atomic.Int64 }

func (s *resetSource) Fetch(ctx context.Context, off, n int64) (io.ReadCloser, int64, error) {
	s.fetches.Add(1)
	return nil, 0, connReset
}

func TestFetchErrorNotResumed(t *testing.T) {
	s := openStore(t, t.TempDir(), 1<<20)
	src := &resetSource{}
	b := NewBlob(s, src, digestOf("x"), 100, WithChunkSize(7))
	t.Cleanup(b.running.Wait)
	if _, err := b.ReadAt(t.Context(), make([]byte, 10), 0); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("ReadAt = %v, want the source's error", err)
	}
	b.running.Wait()
	if got := src.fetches.Load(); got != 1 {
		t.Errorf("%d fetches, want 1: a failed Fetch is the source's to retry", got)
	}
}

// slowReader returns its bytes, then err after a delay.
type slowReader struct {
	b     []byte
	delay time.Duration
	err   error
}

func (r *slowReader) Read(p []byte) (int, error) {
	if len(r.b) > 0 {
		n := copy(p, r.b)
		r.b = r.b[n:]
		return n, nil
	}
	time.Sleep(r.delay)
	return 0, r.err
}

func TestSlowFailureNotResumed(t *testing.T) {
	data := randomBytes(25, 100)
	b, src, _ := newTestBlob(t, data, 7, 1<<20)
	src.setTamper(func(fetch int, start int64, body []byte) io.Reader {
		return &slowReader{b: body[:17], delay: resumeWindow + 100*time.Millisecond, err: connReset}
	})
	if _, err := b.ReadAt(t.Context(), make([]byte, 100), 0); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("ReadAt = %v, want the reset", err)
	}
	b.running.Wait()
	if got, _ := src.counts(); got != 1 {
		t.Errorf("%d fetches, want 1: a reset after the resume window is not resumed", got)
	}
}
