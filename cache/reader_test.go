package cache

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"testing/iotest"
	"time"
)

func TestReaderMatchesSource(t *testing.T) {
	const size = 500
	tests := []struct {
		name string
		off  int64
		mode fakeMode
	}{
		{"from start", 0, modeRange},
		{"mid chunk", 45, modeRange},
		{"last chunk", 498, modeRange},
		{"at end", size, modeRange},
		{"past end", size + 10, modeRange},
		{"registry ignores Range", 0, modeFull},
		{"registry ignores Range, mid blob", 200, modeFull},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := randomBytes(11, size)
			b, src, _ := newTestBlob(t, data, 7, 1<<20)
			src.setMode(tt.mode)
			want := data[min(tt.off, size):]
			if err := iotest.TestReader(b.Reader(t.Context(), tt.off), want); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(iotest.OneByteReader(b.Reader(t.Context(), tt.off)))
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("one-byte reads: %d bytes, %v; want %d bytes", len(got), err, len(want))
			}
		})
	}
}

func TestReaderReadsAheadAndFillsCache(t *testing.T) {
	data := randomBytes(12, 500) // 72 chunks of 7 (the last is 3 bytes)
	b, src, s := newTestBlob(t, data, 7, 1<<20)
	got, err := io.ReadAll(b.Reader(t.Context(), 0))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("ReadAll = %d bytes, %v", len(got), err)
	}
	b.running.Wait()
	ranges := src.fetchRanges()
	wantFetches := (72 + readAheadBatch - 1) / readAheadBatch
	if len(ranges) != wantFetches {
		t.Errorf("%d fetches, want %d (72 chunks, %d per request): %v", len(ranges), wantFetches, readAheadBatch, ranges)
	}
	for _, r := range ranges {
		if r[1] > readAheadBatch*7 {
			t.Errorf("fetch %v longer than a batch of %d chunks", r, readAheadBatch)
		}
	}
	if st := s.Stats(); st.Entries != 72 || st.BytesFetched != 500 {
		t.Errorf("Stats = %+v, want 72 entries, 500 bytes fetched", st)
	}
	got, err = io.ReadAll(b.Reader(t.Context(), 0))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("second ReadAll = %d bytes, %v", len(got), err)
	}
	if f, _ := src.counts(); f != wantFetches {
		t.Errorf("second pass fetched: %d fetches in all, want %d", f, wantFetches)
	}
}

func TestReaderRunsTwoRequests(t *testing.T) {
	data := randomBytes(13, 500)
	b, src, _ := newTestBlob(t, data, 7, 1<<20)
	release := src.block()
	defer release()
	r := b.Reader(t.Context(), 0)
	done := make(chan error, 1)
	go func() {
		_, err := r.Read(make([]byte, 7))
		done <- err
	}()
	for i := range 2 {
		select {
		case <-src.started:
		case <-time.After(5 * time.Second):
			t.Fatalf("only %d requests started before the first chunk arrived, want 2", i)
		}
	}
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := src.fetchRanges(); len(got) != 2 {
		t.Errorf("fetches = %v, want two batches", got)
	}
}

func TestReaderErrors(t *testing.T) {
	data := randomBytes(14, 100)
	t.Run("short body", func(t *testing.T) {
		b, src, _ := newTestBlob(t, data, 7, 1<<20)
		src.setMode(modeShort)
		_, err := io.ReadAll(b.Reader(t.Context(), 0))
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("ReadAll error = %v, want io.ErrUnexpectedEOF", err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		b, src, _ := newTestBlob(t, data, 7, 1<<20)
		release := src.block()
		defer release()
		ctx, cancel := context.WithCancel(t.Context())
		r := b.Reader(ctx, 0)
		done := make(chan error, 1)
		go func() {
			_, err := r.Read(make([]byte, 10))
			done <- err
		}()
		<-src.started
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Read error = %v, want context.Canceled", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Read did not return after its ctx was cancelled")
		}
		if _, err := r.Read(make([]byte, 10)); !errors.Is(err, context.Canceled) {
			t.Errorf("Read after cancel error = %v, want the same error again", err)
		}
	})
}
