package layers

import (
	"context"
	"io"
	"testing"
)

// BenchmarkTOCColdRead4K is the figure: one 4 KiB file read cold from a 100 MB
// eStargz layer, from nothing (footer, TOC, then the file's chunk). It reports the
// ReadAt calls and bytes read from the blob per cold read, and the share of the layer.
//
//	go test -run '^$' -bench TOCColdRead4K -benchtime 20x ./layers
func BenchmarkTOCColdRead4K(b *testing.B) {
	blob, ann, name := coldLayer(b, 100)
	d := digestOf(blob)
	ctx := context.Background()
	p := make([]byte, 4096)
	var reads, bytes int64
	b.ResetTimer()
	for b.Loop() {
		mem := &memBlob{b: blob}
		x, err := BuildTOCIndex(ctx, mem, d, ann, nil)
		if err != nil {
			b.Fatal(err)
		}
		e := &x.Entries[fileIndex(b, x, name)]
		if n, err := NewLayer(x, mem, nil, nil).ReadAt(ctx, e, p, 0); n != len(p) || (err != nil && err != io.EOF) {
			b.Fatalf("read: n=%d err=%v", n, err)
		}
		reads, bytes = mem.reads.Load(), mem.bytes.Load()
	}
	b.ReportMetric(float64(reads), "ReadAt/op")
	b.ReportMetric(float64(bytes), "blob-bytes/op")
	b.ReportMetric(100*float64(bytes)/float64(len(blob)), "%-of-layer")
	b.Logf("layer %d bytes: a cold 4 KiB read costs %d ReadAt calls, %d bytes (%.3f%%)",
		len(blob), reads, bytes, 100*float64(bytes)/float64(len(blob)))
}
