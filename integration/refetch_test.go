package integration

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/containerd/stargz-snapshotter/estargz/zstdchunked"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"

	"github.com/regfs/regfs/cache"
	"github.com/regfs/regfs/internal/fixture"
	"github.com/regfs/regfs/internal/testenv"
	"github.com/regfs/regfs/layers"
	"github.com/regfs/regfs/layers/inflate"
)

// This file measures issue 4's figures at the registry, through a real mount: once a
// layer is indexed, a read fetches about what it decodes, not the index pass's 1 MiB
// chunks.

const (
	refetchRepo     = "refetch/app"
	refetchTag      = "1"
	refetchPlatform = "linux/amd64"
	refetchFileSize = 256 << 10 // the gzip layer's text files
	refetchFiles    = 64        // 16 MiB of text, about 6.4 MB of gzip: 7 chunks of 1 MiB
	refetchRead     = 4 << 10
)

// TestRefetchGzipAfterEviction indexes a gzip layer of text through a mount whose cache
// is too small to keep the index pass's chunks (they are evicted as the pass goes), then
// reads 4 KiB of a file whose chunks were evicted: the registry serves at most two spans
// of compressed bytes (a span: the bytes between two checkpoints, 1 MiB of output apart).
func TestRefetchGzipAfterEviction(t *testing.T) {
	testenv.RequireFUSE(t)
	files := make([][]byte, refetchFiles)
	var entries []fixture.Entry
	for i := range files {
		files[i] = fixture.Prose(uint64(i), refetchFileSize)
		entries = append(entries, fixture.Entry{Name: fmt.Sprintf("doc/%02d.txt", i), Body: files[i]})
	}
	layer, err := fixture.Layer(fixture.Gzip, fixture.OCI, entries...)
	if err != nil {
		t.Fatal(err)
	}
	blob := layerBlob(t, layer)
	maxSpan := refetchMaxSpan(t, blob)
	t.Logf("gzip layer: %d bytes for %d of text, largest span %d compressed bytes", len(blob), refetchFiles*refetchFileSize, maxSpan)
	srv := refetchPush(t, layer, nil)

	// Room for one 1 MiB chunk and the small documents: the pass's chunks are evicted
	// as it goes, and the layer's index (never evicted before a chunk) is kept. The
	// layer has 7 chunks, so that the first ones are gone whatever order the pass's
	// fetches store their chunks in (the format sniffing fetches the first chunk on
	// its own, and may store it after the pass has stored the next one).
	m := mountRegfs(t, mountConfig{registry: srv.Host(), cacheSize: 3 << 19})
	root := m.path(refetchRepo, refetchTag, "linux", "amd64", "rootfs")
	if _, err := os.Stat(root + "/doc/00.txt"); err != nil { // indexes the layer
		t.Fatal(err)
	}
	if ev := m.store.Stats().Evictions; ev < 1 {
		t.Fatalf("%d evictions during the index pass, want the first chunks evicted", ev)
	}

	// A read past the first span (a Layer reading its first unit decodes the next one
	// ahead), in a span whose 1 MiB chunks the store no longer holds.
	file, off := refetchEvicted(t, m, layer, blob)
	srv.Reset()
	got := refetchReadAt(t, root+fmt.Sprintf("/doc/%02d.txt", file), off)
	if want := files[file][off : off+refetchRead]; !bytes.Equal(got, want) {
		t.Fatal("wrong bytes")
	}
	fetched := refetchSettled(srv, layer)
	t.Logf("a 4 KiB read after eviction fetched %d bytes of the layer (%s); 2 spans = %d",
		fetched, refetchBlobRequests(srv.Counts()), 2*maxSpan)
	if fetched == 0 || fetched > 2*maxSpan {
		t.Errorf("a 4 KiB read fetched %d bytes, want 1..%d (2 spans); mount stats %+v; cache %+v",
			fetched, 2*maxSpan, m.stats(t), m.store.Stats())
	}
}

// TestRefetchTOCColdCat mounts an eStargz or zstd:chunked image of a layer over 16 MB,
// cold, and cats one 4 KiB file: the registry serves the footer, the TOC and that
// file's chunk, under 2% of the layer. Without the layer's annotations, regfs finds
// the TOC from the footer, read with the last coarse chunk of the blob.
func TestRefetchTOCColdCat(t *testing.T) {
	testenv.RequireFUSE(t)
	tarBytes, target := refetchTOCTar(t)
	tests := []struct {
		name        string
		zstd        bool // zstd:chunked, else eStargz
		mediaType   types.MediaType
		annotations func(sgz *estargz.Blob, meta map[string]string) map[string]string
		pinnedOnly  bool // --pinned-toc-only: a layer without annotations is read whole
	}{
		{"estargz", false, types.OCILayer, func(sgz *estargz.Blob, _ map[string]string) map[string]string {
			return map[string]string{layers.AnnotationTOCDigest: sgz.TOCDigest().String()}
		}, true},
		{"estargz-no-annotation", false, types.OCILayer, nil, false},
		{"estargz-no-annotation-pinned-only", false, types.OCILayer, nil, true},
		{"zstd-chunked", true, types.OCILayerZStd,
			func(_ *estargz.Blob, meta map[string]string) map[string]string { return meta }, true},
		{"zstd-chunked-no-annotation", true, types.OCILayerZStd, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := []estargz.Option{estargz.WithCompressionLevel(gzip.BestSpeed)}
			meta := map[string]string{}
			if tt.zstd { // Metadata gets the annotations the footer's writer reports
				opts = []estargz.Option{estargz.WithCompression(refetchZstdChunked{
					&zstdchunked.Compressor{CompressionLevel: zstd.SpeedFastest, Metadata: meta}, &zstdchunked.Decompressor{}})}
			}
			sgz, err := estargz.Build(io.NewSectionReader(bytes.NewReader(tarBytes), 0, int64(len(tarBytes))), opts...)
			if err != nil {
				t.Fatal(err)
			}
			blob, err := io.ReadAll(sgz)
			sgz.Close()
			if err != nil {
				t.Fatal(err)
			}
			var ann map[string]string
			if tt.annotations != nil {
				ann = tt.annotations(sgz, meta)
				if len(ann) == 0 {
					t.Fatal("the fixture has no annotations")
				}
			}
			layer := &refetchLayer{Layer: static.NewLayer(blob, tt.mediaType), diffID: v1.Hash{Algorithm: "sha256", Hex: sgz.DiffID().Encoded()}}
			srv := refetchPush(t, layer, ann)

			srv.Reset()
			m := mountRegfs(t, mountConfig{registry: srv.Host(), pinnedTOC: tt.pinnedOnly})
			got, err := os.ReadFile(m.path(refetchRepo, refetchTag, "linux", "amd64", "rootfs", "usr", "share", "doc", "target"))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, target) {
				t.Fatal("wrong bytes")
			}
			fetched := refetchSettled(srv, layer)
			t.Logf("cold cat of a 4 KiB file fetched %d bytes of a %d-byte %s layer (%.2f%%): %s",
				fetched, len(blob), tt.name, 100*float64(fetched)/float64(len(blob)), refetchBlobRequests(srv.Counts()))
			// Without annotations, the probe of the blob's end for a footer reads
			// the last 1 MiB chunk of the cache (a plain layer's pass needs it).
			limit := int64(len(blob)) / 50
			if ann == nil {
				limit += min(int64(len(blob)), cache.DefaultChunkSize+int64(len(blob))%cache.DefaultChunkSize)
			}
			switch {
			case tt.pinnedOnly && ann == nil && fetched != int64(len(blob)):
				t.Errorf("pinned TOC only, no annotation: fetched %d bytes, want the whole layer (%d) once", fetched, len(blob))
			case tt.pinnedOnly && ann == nil:
			case fetched == 0 || fetched >= limit:
				t.Errorf("cold cat fetched %d bytes of the layer, want under %d (2%%, and the last chunk without annotations)", fetched, limit)
			}
			// Every other file reads right too, each checked against its chunks' digests.
			refetchCompareTar(t, m.path(refetchRepo, refetchTag, "linux", "amd64", "rootfs"), tarBytes)
		})
	}
}

// refetchZstdChunked pairs the zstdchunked compressor and decompressor, as
// estargz.Build wants.
type refetchZstdChunked struct {
	*zstdchunked.Compressor
	*zstdchunked.Decompressor
}

// refetchCompareTar reads every regular file of tarBytes under root and compares it.
func refetchCompareTar(t *testing.T, root string, tarBytes []byte) {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(tarBytes))
	n := 0
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		want, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(root, h.Name))
		if err != nil {
			t.Fatalf("%s: %v", h.Name, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: wrong bytes (%d, want %d)", h.Name, len(got), len(want))
		}
		n++
	}
	if n == 0 {
		t.Fatal("no file compared")
	}
}

// refetchTOCTar returns a tar of 500 small text files, a 4 KiB target file and 20 MiB
// of incompressible files, and the target's bytes.
func refetchTOCTar(t *testing.T) (tarBytes, target []byte) {
	t.Helper()
	r := rand.New(rand.NewPCG(7, 7))
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	add := func(name string, body []byte) {
		t.Helper()
		if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body)), ModTime: fixture.Epoch()}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 500 {
		add(fmt.Sprintf("usr/share/doc/%04d", i), fixture.Prose(uint64(100+i), 500+r.IntN(3000)))
	}
	target = fixture.Prose(99, refetchRead)
	add("usr/share/doc/target", target)
	for i := range 5 { // incompressible, 20 MiB
		big := make([]byte, 4<<20)
		for j := 0; j < len(big); j += 8 {
			binary.LittleEndian.PutUint64(big[j:], r.Uint64())
		}
		add(fmt.Sprintf("usr/lib/big%d", i), big)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return tarBuf.Bytes(), target
}

// refetchLayer is a layer with the uncompressed digest its config should list.
type refetchLayer struct {
	v1.Layer
	diffID v1.Hash
}

func (l *refetchLayer) DiffID() (v1.Hash, error) { return l.diffID, nil }

// refetchEvicted picks a file of the gzip layer and an offset in it whose span (the
// compressed bytes between the checkpoints around it, and a little past) lies in 1 MiB
// chunks the mount's store does not hold. The layer's files are refetchFileSize bytes
// each, in order, after a tar header each.
func refetchEvicted(t *testing.T, m *mounted, l v1.Layer, blob []byte) (file int, off int64) {
	t.Helper()
	d, err := l.Digest()
	if err != nil {
		t.Fatal(err)
	}
	var cps []inflate.Checkpoint
	if _, err := inflate.Scan(bytes.NewReader(blob), nil, layers.DefaultSpan, func(cp inflate.Checkpoint) error {
		cps = append(cps, cp)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	held := func(c int64) bool {
		_, err := m.store.Get(cache.Key{Kind: cache.KindChunk, Digest: d.String(), N: c})
		return err == nil
	}
	const entry = refetchFileSize + 512
	for i := 2; i+1 < len(cps); i++ {
		first, last := cps[i].In/cache.DefaultChunkSize, (cps[i+1].In+64<<10)/cache.DefaultChunkSize
		evicted := true
		for c := first; c <= last; c++ {
			evicted = evicted && !held(c)
		}
		pos := cps[i].Out + 100<<10
		file, off = int(pos/entry), pos%entry-512
		if evicted && file < refetchFiles && off >= 0 && off+refetchRead <= refetchFileSize {
			return file, off
		}
	}
	t.Fatal("no span of the layer lies in evicted chunks")
	return 0, 0
}

// refetchMaxSpan returns the largest compressed span of a gzip blob: the bytes between
// two of the checkpoints an index pass records (1 MiB of output apart), or between the
// last one and the blob's end.
func refetchMaxSpan(t *testing.T, blob []byte) int64 {
	t.Helper()
	var ins []int64
	_, err := inflate.Scan(bytes.NewReader(blob), nil, layers.DefaultSpan, func(cp inflate.Checkpoint) error {
		ins = append(ins, cp.In)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ins = append(ins, int64(len(blob)))
	var span int64
	for i := 1; i < len(ins); i++ {
		span = max(span, ins[i]-ins[i-1])
	}
	return span
}

// refetchPush pushes an image of one layer, whose descriptor has the annotations, for
// refetchPlatform under refetchRepo:refetchTag to a new in-process registry.
func refetchPush(t *testing.T, l v1.Layer, annotations map[string]string) *testenv.Server {
	t.Helper()
	img, err := fixture.Image(fixture.OCI, fixture.Platform(refetchPlatform))
	if err != nil {
		t.Fatal(err)
	}
	img, err = mutate.Append(img, mutate.Addendum{Layer: l, Annotations: annotations,
		History: v1.History{Created: v1.Time{Time: fixture.Epoch()}, CreatedBy: "refetch layer"}})
	if err != nil {
		t.Fatal(err)
	}
	idx, err := fixture.Index(fixture.OCI, img)
	if err != nil {
		t.Fatal(err)
	}
	srv := testenv.InProcessRegistry(t)
	item := fixture.Item{Repo: refetchRepo, Tags: []string{refetchTag}, Object: idx}
	if err := (fixture.Set{item}).Push(context.Background(), srv.DirectHost()); err != nil {
		t.Fatal(err)
	}
	return srv
}

// refetchReadAt reads refetchRead bytes of path at off.
func refetchReadAt(t *testing.T, path string, off int64) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := make([]byte, refetchRead)
	if _, err := f.ReadAt(p, off); err != nil {
		t.Fatal(err)
	}
	return p
}

// refetchSettled returns the body bytes of the GET requests for layer l's blob once
// they stop changing: a read returns as soon as its bytes arrive, and the counter records
// a request when its handler returns, a little later.
func refetchSettled(srv *testenv.Server, l v1.Layer) int64 {
	last := refetchLayerBytes(srv.Counts(), l)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		n := refetchLayerBytes(srv.Counts(), l)
		if n == last && n > 0 {
			break
		}
		last = n
	}
	return last
}

// refetchLayerBytes sums the body bytes of the GET requests for layer l's blob.
func refetchLayerBytes(c testenv.Counts, l v1.Layer) int64 {
	d, err := l.Digest()
	if err != nil {
		return -1
	}
	var n int64
	for _, r := range c.Requests {
		if r.Method == "GET" && r.Kind == testenv.KindBlob && r.Ref == d.String() {
			n += r.Bytes
		}
	}
	return n
}

// refetchBlobRequests lists the GET blob requests of c, with their ranges and sizes.
func refetchBlobRequests(c testenv.Counts) string {
	var s string
	for _, r := range c.Requests {
		if r.Method == "GET" && r.Kind == testenv.KindBlob {
			s += fmt.Sprintf("[%s %s: %d bytes] ", r.Ref[:min(len(r.Ref), 19)], r.Range, r.Bytes)
		}
	}
	return s
}
