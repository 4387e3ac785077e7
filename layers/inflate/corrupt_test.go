package inflate

import (
	"bytes"
	stdgzip "compress/gzip"
	"errors"
	"io"
	"testing"
)

// smallGzip is a two-member file with Huffman and stored blocks.
func smallGzip(t *testing.T) (plain, gz []byte) {
	t.Helper()
	a, b := mixedTar(t, 48<<10, 9), textContent(20<<10, 10)
	gz = append(goGzip(stdgzip.BestSpeed, stdgzip.Header{Name: "a"})(t, a), goGzip(stdgzip.DefaultCompression, stdgzip.Header{})(t, b)...)
	return append(a, b...), gz
}

// TestTruncated cuts the file at many points: Scan must fail, Resume must fail or
// stop early, never give wrong bytes.
func TestTruncated(t *testing.T) {
	plain, gz := smallGzip(t)
	_, cps := scanAll(t, gz, 4<<10)
	for cut := 0; cut < len(gz); cut += 1 + cut/50 {
		_, err := Scan(bytes.NewReader(gz[:cut]), io.Discard, 4<<10, nil)
		if err == nil {
			t.Fatalf("Scan of %d of %d bytes: no error", cut, len(gz))
		}
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("Scan of %d of %d bytes: %v, want io.ErrUnexpectedEOF", cut, len(gz), err)
		}
		for _, cp := range cps {
			if cp.In > int64(cut) {
				break
			}
			z, err := Resume(bytes.NewReader(gz[cp.In:cut]), cp)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(z)
			if err == nil {
				t.Fatalf("Resume from in %d of a file cut at %d: no error", cp.In, cut)
			}
			if !bytes.HasPrefix(plain[cp.Out:], got) {
				t.Fatalf("Resume from in %d of a file cut at %d: wrong bytes before the error", cp.In, cut)
			}
		}
	}
}

// TestCorrupt flips bytes: a full read (Scan, or Resume from any checkpoint before
// the damage to the end) must fail, so wrong bytes never pass silently.
func TestCorrupt(t *testing.T) {
	_, gz := smallGzip(t)
	_, cps := scanAll(t, gz, 4<<10)
	// Header bytes nothing checks: MTIME, XFL, OS, and the first member's name "a".
	free := map[int]bool{10: true}
	for _, cp := range cps {
		if cp.Header {
			for i := cp.In + 4; i < cp.In+10; i++ {
				free[int(i)] = true
			}
		}
	}
	for off := 0; off < len(gz); off += 1 + off/40 {
		if free[off] {
			continue
		}
		bad := bytes.Clone(gz)
		bad[off] ^= 0x55
		var out bytes.Buffer
		if _, err := Scan(bytes.NewReader(bad), &out, 4<<10, nil); err == nil {
			t.Fatalf("Scan with byte %d flipped: no error", off)
		}
		for _, cp := range cps {
			if cp.In > int64(off) {
				break
			}
			z, err := Resume(bytes.NewReader(bad[cp.In:]), cp)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadAll(z); err == nil {
				t.Fatalf("Resume from in %d with byte %d flipped: no error on a full read", cp.In, off)
			}
		}
	}
}

func TestScanErrors(t *testing.T) {
	plain, gz := smallGzip(t)
	trailer := len(goGzip(stdgzip.BestSpeed, stdgzip.Header{Name: "a"})(t, plain[:len(plain)-20<<10])) - 8
	flip := func(i int) []byte { b := bytes.Clone(gz); b[i] ^= 1; return b }
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, io.ErrUnexpectedEOF},
		{"not gzip", []byte("hello, world, this is not gzip"), ErrHeader},
		{"bad method", func() []byte { b := bytes.Clone(gz); b[2] = 7; return b }(), ErrHeader},
		{"reserved flag", func() []byte { b := bytes.Clone(gz); b[3] |= 0x80; return b }(), ErrHeader},
		{"crc", flip(trailer), ErrChecksum},
		{"isize", flip(trailer + 4), ErrChecksum},
		{"trailing garbage", append(bytes.Clone(gz), "garbage!!!"...), ErrHeader},
		{"trailing zeros", append(bytes.Clone(gz), make([]byte, 512)...), ErrHeader},
		{"header crc", func() []byte {
			b := withHeaderCRC(t, goGzip(1, stdgzip.Header{})(t, []byte("x")))
			b[30] ^= 1
			return b
		}(), ErrHeader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Scan(bytes.NewReader(tt.in), io.Discard, 1<<20, nil)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Scan: %v, want %v", err, tt.want)
			}
		})
	}
}

func TestScanCallbackErrors(t *testing.T) {
	_, gz := smallGzip(t)
	stop := errors.New("stop")
	calls := 0
	_, err := Scan(bytes.NewReader(gz), io.Discard, 4<<10, func(cp Checkpoint) error {
		if calls++; calls == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || calls != 3 {
		t.Fatalf("Scan with failing fn: %v after %d calls, want %v after 3", err, calls, stop)
	}
	n, err := Scan(bytes.NewReader(gz), failWriter{after: 10000}, 4<<10, nil)
	if !errors.Is(err, errWrite) || n > 10000 {
		t.Fatalf("Scan with failing writer: %d, %v, want at most 10000, %v", n, err, errWrite)
	}
	if _, err := Scan(bytes.NewReader(gz), io.Discard, 0, nil); err == nil {
		t.Fatal("Scan with span 0: no error")
	}
}

var errWrite = errors.New("write failed")

type failWriter struct{ after int }

func (f failWriter) Write(p []byte) (int, error) { return 0, errWrite }

func TestResumeBadCheckpoint(t *testing.T) {
	tests := []struct {
		name string
		cp   Checkpoint
	}{
		{"bit 8", Checkpoint{In: 10, Bit: 8, Out: 5, MemberLen: 5, Window: make([]byte, 5)}},
		{"negative in", Checkpoint{In: -1, Header: true}},
		{"big window", Checkpoint{In: 10, Out: 1 << 20, MemberLen: 1 << 20, Window: make([]byte, WindowSize+1)}},
		{"short window", Checkpoint{In: 10, Out: 1 << 20, MemberLen: 1 << 20, Window: make([]byte, 100)}},
		{"header with window", Checkpoint{In: 10, Header: true, Window: []byte("x")}},
		{"member beyond out", Checkpoint{In: 10, Out: 5, MemberLen: 6, Window: make([]byte, 6)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Resume(bytes.NewReader(nil), tt.cp); !errors.Is(err, ErrCheckpoint) {
				t.Fatalf("Resume: %v, want %v", err, ErrCheckpoint)
			}
		})
	}
}

// TestResumeWrongPlace starts from a checkpoint with the reader at the wrong offset:
// the result is an error, not silent garbage, once the member's end is read.
func TestResumeWrongPlace(t *testing.T) {
	plain, gz := smallGzip(t)
	_, cps := scanAll(t, gz, 4<<10)
	for _, cp := range cps[1:] {
		if cp.Header {
			continue
		}
		z, err := Resume(bytes.NewReader(gz[cp.In+1:]), cp)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(z)
		if err == nil && bytes.Equal(got, plain[cp.Out:]) {
			continue // cannot happen in practice; harmless if it does
		}
		if err == nil {
			t.Fatalf("Resume one byte off from in %d: wrong bytes and no error", cp.In)
		}
	}
}
