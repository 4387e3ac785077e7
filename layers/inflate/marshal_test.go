package inflate

import (
	"bytes"
	stdgzip "compress/gzip"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"reflect"
	"testing"
)

func tarCheckpoints(t testing.TB) (plain, gz []byte, cps []Checkpoint) {
	t.Helper()
	plain = mixedTar(t, 512<<10, 21)
	gz = klauspostGzip(6)(t, plain)
	gz = append(gz, klauspostGzip(1)(t, textContent(100<<10, 22))...)
	plain = append(plain, textContent(100<<10, 22)...)
	_, cps = scanAll(t, gz, 32<<10)
	return plain, gz, cps
}

func TestMarshalRoundTrip(t *testing.T) {
	plain, gz, cps := tarCheckpoints(t)
	b, err := MarshalCheckpoints(cps)
	if err != nil {
		t.Fatal(err)
	}
	got, err := UnmarshalCheckpoints(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, cps) {
		t.Fatalf("round trip differs")
	}
	raw := 0
	for _, cp := range cps {
		raw += len(cp.Window)
	}
	t.Logf("%d checkpoints, %d window bytes, marshalled %d bytes", len(cps), raw, len(b))
	if len(b) >= raw {
		t.Fatalf("marshalled %d bytes, not smaller than the %d bytes of windows", len(b), raw)
	}
	for _, cp := range got { // the decoded checkpoints work
		z, err := Resume(bytes.NewReader(gz[cp.In:]), cp)
		if err != nil {
			t.Fatal(err)
		}
		all, err := io.ReadAll(z)
		if err != nil || !bytes.Equal(all, plain[cp.Out:]) {
			t.Fatalf("decoded checkpoint at out %d: err %v, bytes equal %v", cp.Out, err, bytes.Equal(all, plain[cp.Out:]))
		}
	}
	empty, err := MarshalCheckpoints(nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := UnmarshalCheckpoints(empty); err != nil || len(got) != 0 {
		t.Fatalf("empty list: %v, %v", got, err)
	}
}

func TestMarshalRejects(t *testing.T) {
	tests := []struct {
		name string
		cps  []Checkpoint
	}{
		{"backwards", []Checkpoint{{In: 10, Header: true, Out: 5}, {In: 5, Header: true, Out: 6}}},
		{"invalid", []Checkpoint{{In: 10, Bit: 9, Out: 1, MemberLen: 1, Window: []byte("x")}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := MarshalCheckpoints(tt.cps); !errors.Is(err, ErrCheckpoint) {
				t.Fatalf("MarshalCheckpoints: %v, want %v", err, ErrCheckpoint)
			}
		})
	}
}

func TestUnmarshalCorrupt(t *testing.T) {
	_, _, cps := tarCheckpoints(t)
	good, err := MarshalCheckpoints(cps)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(good); i += 1 + i/20 {
		bad := bytes.Clone(good)
		bad[i] ^= 0x20
		if _, err := UnmarshalCheckpoints(bad); !errors.Is(err, ErrCorruptIndex) {
			t.Fatalf("byte %d flipped: %v, want %v", i, err, ErrCorruptIndex)
		}
		if _, err := UnmarshalCheckpoints(good[:i]); !errors.Is(err, ErrCorruptIndex) {
			t.Fatalf("cut at %d: %v, want %v", i, err, ErrCorruptIndex)
		}
		// The same damage with a valid checksum reaches the parser; a flipped delta
		// may still decode, anything else must be refused.
		if _, err := UnmarshalCheckpoints(resum(bad)); err != nil && !errors.Is(err, ErrCorruptIndex) {
			t.Fatalf("byte %d flipped, checksum fixed: %v, want %v", i, err, ErrCorruptIndex)
		}
	}
	future := resum(append([]byte(marshalMagic), marshalVersion+1, 0, 0, 0, 0, 0))
	if _, err := UnmarshalCheckpoints(future); !errors.Is(err, ErrCorruptIndex) {
		t.Fatalf("future version: %v", err)
	}
}

// resum replaces b's trailing checksum with a valid one.
func resum(b []byte) []byte {
	if len(b) < 4 {
		return b
	}
	b = bytes.Clone(b)
	binary.LittleEndian.PutUint32(b[len(b)-4:], crc32.ChecksumIEEE(b[:len(b)-4]))
	return b
}

func FuzzUnmarshalCheckpoints(f *testing.F) {
	// A small seed: the fuzzer minimizes what it finds interesting.
	_, cps := scanAll(f, goGzip(1, stdgzip.Header{})(f, textContent(6000, 23)), 1000)
	good, err := MarshalCheckpoints(cps)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	empty, _ := MarshalCheckpoints(nil)
	f.Add(empty)
	f.Add([]byte("RGZC\x01\xff\xff\xff\xff\x0f"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, in := range [][]byte{b, resum(b)} {
			got, err := UnmarshalCheckpoints(in)
			if err != nil {
				if !errors.Is(err, ErrCorruptIndex) {
					t.Fatalf("error %v does not wrap ErrCorruptIndex", err)
				}
				continue
			}
			again, err := MarshalCheckpoints(got)
			if err != nil {
				t.Fatalf("decoded list does not encode: %v", err)
			}
			back, err := UnmarshalCheckpoints(again)
			if err != nil || !reflect.DeepEqual(back, got) {
				t.Fatalf("re-encoded list does not round-trip: %v", err)
			}
		}
	})
}
