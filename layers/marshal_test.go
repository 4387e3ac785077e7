package layers

import (
	"bytes"
	"context"
	"encoding/binary"
	"hash/crc32"
	"reflect"
	"testing"
)

func TestMarshalRoundTrip(t *testing.T) {
	tarBytes := makeTar(t, testFiles(10, 300<<10))
	for _, tc := range layerCases(t, tarBytes) {
		t.Run(tc.name, func(t *testing.T) {
			x, err := BuildIndex(context.Background(), &memBlob{b: tc.blob}, digestOf(tc.blob), nil, WithSpan(64<<10))
			if err != nil {
				t.Fatal(err)
			}
			raw, err := x.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			var y Index
			if err := y.UnmarshalBinary(raw); err != nil {
				t.Fatal(err)
			}
			if y.Digest != x.Digest || y.Format != x.Format || y.Size != x.Size || y.span != x.span ||
				!reflect.DeepEqual(y.frames, x.frames) || len(y.checkpoints) != len(x.checkpoints) {
				t.Errorf("header or restarts differ")
			}
			for i := range x.Entries {
				a, b := x.Entries[i], y.Entries[i]
				if !a.ModTime.Equal(b.ModTime) {
					t.Errorf("entry %d mtime: %v vs %v", i, a.ModTime, b.ModTime)
				}
				a.ModTime, b.ModTime = b.ModTime, a.ModTime
				if !reflect.DeepEqual(a, b) {
					t.Errorf("entry %d: got %+v, want %+v", i, b, a)
				}
			}
			// Every truncation and every single-byte change is refused.
			for i := 0; i < len(raw); i += max(1, len(raw)/300) {
				if err := new(Index).UnmarshalBinary(raw[:i]); err == nil {
					t.Fatalf("truncated at %d: no error", i)
				}
				bad := bytes.Clone(raw)
				bad[i] ^= 0x41
				if err := new(Index).UnmarshalBinary(bad); err == nil {
					t.Fatalf("byte %d changed: no error", i)
				}
			}
		})
	}
}

func FuzzUnmarshalIndex(f *testing.F) {
	tarBytes := makeTar(f, testFiles(11, 20<<10))
	for _, tc := range layerCases(f, tarBytes) {
		x, err := BuildIndex(context.Background(), &memBlob{b: tc.blob}, digestOf(tc.blob), nil, WithSpan(16<<10))
		if err != nil {
			f.Fatal(err)
		}
		raw, _ := x.MarshalBinary()
		f.Add(raw)
	}
	f.Add([]byte(indexMagic + "\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		// Fix the checksum up so that the fuzzer exercises the parser behind it.
		if len(b) >= 4 {
			b = binary.LittleEndian.AppendUint32(bytes.Clone(b[:len(b)-4]), crc32.Checksum(b[:len(b)-4], crcTable))
		}
		var x Index
		if err := x.UnmarshalBinary(b); err != nil {
			return
		}
		// A valid index must marshal back, and reads must not panic.
		if _, err := x.MarshalBinary(); err != nil {
			t.Fatal(err)
		}
		if x.Format == FormatTar {
			l := NewLayer(&x, &memBlob{b: make([]byte, min(x.Size, 1<<20))}, nil, nil)
			for i := range min(len(x.Entries), 10) {
				l.ReadAt(context.Background(), &x.Entries[i], make([]byte, 100), 0)
			}
		}
	})
}

// FuzzBuildIndex feeds tar bytes (raw and gzipped) to BuildIndex: errors are fine, a
// panic or an index whose reads disagree with archive/tar is not.
func FuzzBuildIndex(f *testing.F) {
	f.Add(makeTar(f, testFiles(12, 1000)[:12]))
	f.Add(make([]byte, 1024))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<20 {
			return
		}
		x, err := BuildIndex(context.Background(), &memBlob{b: b}, digestOf(b), nil)
		if err != nil {
			return
		}
		raw, err := x.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if err := new(Index).UnmarshalBinary(raw); err != nil {
			t.Fatalf("own index refused: %v", err)
		}
		l := NewLayer(x, &memBlob{b: b}, nil, nil)
		for i := range x.Entries {
			if x.Entries[i].Size == 0 {
				continue
			}
			p := make([]byte, min(x.Entries[i].Size, 4096))
			if _, err := l.ReadAt(context.Background(), &x.Entries[i], p, 0); err != nil {
				t.Fatalf("entry %d: %v", i, err)
			}
		}
	})
}
