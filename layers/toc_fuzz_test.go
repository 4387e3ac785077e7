package layers

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/klauspost/compress/zstd"
)

// FuzzTOC feeds TOC JSON, wrapped as an eStargz TOC member or a zstd:chunked TOC
// frame, to the TOC parser and mapping. Any input gives an error or an index that
// survives a marshal round trip and whose reads (over a blob of random bytes) fail
// cleanly: never a panic, a hang or a read outside the stream.
//
//	go test -run '^$' -fuzz FuzzTOC -fuzzminimizetime 5s ./layers
func FuzzTOC(f *testing.F) {
	fs := tocFiles(31, 20<<10)
	tarBytes := makeTar(f, append(fs[:12], fs[len(fs)-1]))
	blob, _ := buildEStargz(f, tarBytes, estargz.WithChunkSize(8<<10), estargz.WithMinChunkSize(2<<10))
	tail, err := tocJSONOf(blob)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(tail, false)
	f.Add(tail, true)
	f.Add([]byte(`{"version":1,"entries":[{"name":"f","type":"reg","size":9000,"offset":8,"chunkSize":4000,"chunkDigest":"sha256:`+
		"0000000000000000000000000000000000000000000000000000000000000000"+`"},`+
		`{"name":"f","type":"chunk","offset":8,"chunkOffset":4000,"chunkSize":5000,"chunkType":"zeros"}]}`), true)
	f.Add([]byte(`{"version":1,"entries":[{"name":"a","type":"hardlink","linkName":"b"},{"name":"d","type":"dir","xattrs":{"user.x":"AAE="}}]}`), false)
	const blobSize = 8192
	data := randomData(rand.New(rand.NewPCG(5, 5)), blobSize, false)
	f.Fuzz(func(t *testing.T, tocJSON []byte, zstdTOC bool) {
		loc := tocLocation{format: FormatEStargz, payloadEnd: blobSize - 100}
		if zstdTOC {
			loc.format = FormatZstdChunked
			enc, _ := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
			loc.raw = enc.EncodeAll(tocJSON, nil)
			enc.Close()
		} else {
			loc.raw = gzipTOCMember(t, tocJSON)
		}
		x, err := parseTOC(loc, nil, blobSize)
		if err != nil {
			return
		}
		x.Digest = digestOf(data)
		raw, err := x.MarshalBinary()
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		var y Index
		if err := y.UnmarshalBinary(raw); err != nil {
			t.Fatalf("an index from a TOC does not unmarshal: %v", err)
		}
		if again, err := y.MarshalBinary(); err != nil || !bytes.Equal(again, raw) {
			t.Fatalf("marshal round trip changed the index (%v)", err)
		}
		l := NewLayer(x, &memBlob{b: data}, nil, nil)
		p := make([]byte, 64)
		for i := range x.Entries[:min(len(x.Entries), 32)] {
			e := &x.Entries[i]
			for _, off := range []int64{0, e.Size / 2, e.Size - 1} {
				if n, err := l.ReadAt(context.Background(), e, p, off); n > len(p) || (err == nil && n != len(p)) {
					t.Fatalf("read %s at %d: n=%d err=%v", e.Name, off, n, err)
				}
			}
		}
	})
}

// gzipTOCMember wraps tocJSON as an eStargz TOC: a gzip member of a tar holding
// stargz.index.json.
func gzipTOCMember(t testing.TB, tocJSON []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	if err := tw.WriteHeader(&tar.Header{Name: "stargz.index.json", Typeflag: tar.TypeReg, Size: int64(len(tocJSON))}); err != nil {
		t.Fatal(err)
	}
	tw.Write(tocJSON)
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

// tocJSONOf returns the TOC JSON of an eStargz blob.
func tocJSONOf(blob []byte) ([]byte, error) {
	tail := blob[max(0, len(blob)-tocTailSize):]
	_, off, end, err := parseFooter(tail, int64(len(blob)))
	if err != nil {
		return nil, err
	}
	zr, err := gzip.NewReader(bytes.NewReader(blob[off:end]))
	if err != nil {
		return nil, err
	}
	tr := tar.NewReader(zr)
	if _, err := tr.Next(); err != nil {
		return nil, err
	}
	return io.ReadAll(tr)
}
