package layers

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"testing"

	kgzip "github.com/klauspost/compress/gzip"
)

// benchLayer is a ~64 MiB tar, gzipped; go test -bench . -benchtime 3x keeps it short.
func benchLayer(b *testing.B) (tarBytes, gz []byte) {
	b.Helper()
	tarBytes, _ = bigLayer(b, 64)
	return tarBytes, gzipStd(b, tarBytes)
}

// BenchmarkBuildIndexGzip compares the index pass with a plain klauspost gzip decode
// of the same blob (the target: at least 0.8x its throughput).
func BenchmarkBuildIndexGzip(b *testing.B) {
	tarBytes, gz := benchLayer(b)
	d := digestOf(gz)
	b.Run("BuildIndex", func(b *testing.B) {
		b.SetBytes(int64(len(tarBytes)))
		for b.Loop() {
			if _, err := BuildIndex(context.Background(), &memBlob{b: gz}, d, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("klauspost-gzip", func(b *testing.B) {
		b.SetBytes(int64(len(tarBytes)))
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

// BenchmarkRandomRead4K measures a random 4 KiB read of an indexed gzip layer with
// cold in-memory state (a fresh Layer each time): one span's inflate.
func BenchmarkRandomRead4K(b *testing.B) {
	_, gz := benchLayer(b)
	blob := &memBlob{b: gz}
	x, err := BuildIndex(context.Background(), blob, digestOf(gz), nil)
	if err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	p := make([]byte, 4096)
	for b.Loop() {
		e := &x.Entries[r.IntN(len(x.Entries))]
		if _, err := NewLayer(x, blob, nil, nil).ReadAt(context.Background(), e, p, r.Int64N(e.Size-4096)); err != nil {
			b.Fatal(err)
		}
	}
}
