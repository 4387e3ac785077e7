package inflate

import (
	"bytes"
	stdgzip "compress/gzip"
	"io"
	"sync"
	"testing"

	kgzip "github.com/klauspost/compress/gzip"
)

// benchLayer is about 32 MiB of tar (random files between text files) compressed
// by compress/gzip at the default level, as docker and buildkit write layers.
var benchLayer = sync.OnceValues(func() ([]byte, int) {
	b := &testing.B{}
	plain := mixedTar(b, 32<<20, 42)
	return goGzip(stdgzip.DefaultCompression, stdgzip.Header{})(b, plain), len(plain)
})

// benchText is 16 MiB of text, compressed likewise: Huffman blocks only.
var benchText = sync.OnceValues(func() ([]byte, int) {
	b := &testing.B{}
	plain := textContent(16<<20, 43)
	return goGzip(stdgzip.DefaultCompression, stdgzip.Header{})(b, plain), len(plain)
})

var benchInputs = []struct {
	name string
	data func() ([]byte, int)
}{{"tar", benchLayer}, {"text", benchText}}

func BenchmarkScan(b *testing.B) {
	for _, in := range benchInputs {
		b.Run(in.name, func(b *testing.B) {
			gz, n := in.data()
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Scan(bytes.NewReader(gz), io.Discard, 1<<20, func(Checkpoint) error { return nil }); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkKlauspostGzip(b *testing.B) {
	for _, in := range benchInputs {
		b.Run(in.name, func(b *testing.B) {
			gz, n := in.data()
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				zr, err := kgzip.NewReader(bytes.NewReader(gz))
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.Copy(io.Discard, zr); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkResumeSpan reads one 1 MiB span from a checkpoint in the middle.
func BenchmarkResumeSpan(b *testing.B) {
	gz, _ := benchLayer()
	var cps []Checkpoint
	if _, err := Scan(bytes.NewReader(gz), io.Discard, 1<<20, func(cp Checkpoint) error {
		cps = append(cps, cp)
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	cp := cps[len(cps)/2]
	buf := make([]byte, 1<<20)
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		z, err := Resume(bytes.NewReader(gz[cp.In:]), cp)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(z, buf); err != nil {
			b.Fatal(err)
		}
	}
}
