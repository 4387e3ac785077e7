package layers

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/containerd/stargz-snapshotter/estargz/zstdchunked"

	"github.com/regfs/regfs/cache"
)

func TestTOCEStargz(t *testing.T) {
	tarBytes := makeTar(t, tocFiles(21, 300<<10))
	tests := []struct {
		name string
		opts []estargz.Option
	}{
		{"default chunks", nil},
		{"64KiB chunks", []estargz.Option{estargz.WithChunkSize(64 << 10)}},
		{"small files share members", []estargz.Option{estargz.WithChunkSize(64 << 10), estargz.WithMinChunkSize(16 << 10)}},
		{"prioritized files", []estargz.Option{estargz.WithPrioritizedFiles([]string{"etc/passwd"})}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			blob, ann := buildEStargz(t, tarBytes, tt.opts...)
			if tt.name == "prioritized files" {
				tarBytes := reorderTar(t, tarBytes, "etc/", "etc/passwd")
				checkEStargz(t, blob, ann, tarBytes)
				return
			}
			checkEStargz(t, blob, ann, tarBytes)
		})
	}
}

func checkEStargz(t *testing.T, blob []byte, ann map[string]string, tarBytes []byte) {
	t.Helper()
	mem := &memBlob{b: blob}
	x, err := BuildTOCIndex(context.Background(), mem, digestOf(blob), ann, nil)
	if err != nil {
		t.Fatal(err)
	}
	if x.Format != FormatEStargz {
		t.Errorf("format: got %s, want estargz", x.Format)
	}
	// The index costs the tail read, and one more read only for a TOC past it.
	if got := mem.reads.Load(); got > 2 {
		t.Errorf("index: %d reads, want at most 2", got)
	}
	checkTOCLayer(t, x, NewLayer(x, mem, nil, nil), tarBytes, time.Second)
}

// reorderTar returns tarBytes with the named entries moved to the front, in that order,
// as estargz.WithPrioritizedFiles does.
func reorderTar(t testing.TB, tarBytes []byte, first ...string) []byte {
	t.Helper()
	var head, rest []file
	ref := readRef(t, tarBytes)
	for _, name := range first {
		for _, r := range ref {
			if r.hdr.Name == name {
				head = append(head, file{hdr: *r.hdr, data: r.data})
			}
		}
	}
	for _, r := range ref {
		moved := false
		for _, name := range first {
			moved = moved || r.hdr.Name == name
		}
		if !moved {
			rest = append(rest, file{hdr: *r.hdr, data: r.data})
		}
	}
	return makeTar(t, append(head, rest...))
}

func TestTOCZstdChunked(t *testing.T) {
	tarBytes := makeTar(t, tocFiles(22, 300<<10))
	blob, ann := buildZstdChunked(t, tarBytes, estargz.WithChunkSize(100<<10))
	if ann[AnnotationZstdChunkedPositionOld] == "" || ann[AnnotationZstdChunkedChecksumOld] == "" {
		t.Fatalf("zstdchunked set no annotations: %v", ann)
	}
	tests := []struct {
		name      string
		ann       map[string]string
		wantReads int64
	}{
		{"position annotation", ann, 1}, // the TOC's exact range, no footer
		{"footer only", nil, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mem := &memBlob{b: blob}
			x, err := BuildTOCIndex(context.Background(), mem, digestOf(blob), tt.ann, nil)
			if err != nil {
				t.Fatal(err)
			}
			if x.Format != FormatZstdChunked {
				t.Errorf("format: got %s", x.Format)
			}
			if got := mem.reads.Load(); got > tt.wantReads {
				t.Errorf("index: %d reads, want at most %d", got, tt.wantReads)
			}
			checkTOCLayer(t, x, NewLayer(x, mem, nil, nil), tarBytes, time.Second)
		})
	}
}

// TestTOCNewZstdChunked reads a current zstd:chunked layer (64-byte footer,
// io.github.containers.* annotations, zeros chunks, nanosecond mtimes), built by hand.
func TestTOCNewZstdChunked(t *testing.T) {
	fs := tocFiles(23, 200<<10)
	holey := make([]byte, 300<<10)
	copy(holey, "head")
	copy(holey[100<<10:], bytes.Repeat([]byte("middle"), 1000))
	copy(holey[len(holey)-5:], "tail!")
	fs = append(fs,
		file{hdr: tar.Header{Name: "holey", Typeflag: tar.TypeReg, Mode: 0o644, ModTime: time.Unix(1700000000, 5)}, data: holey},
		file{hdr: tar.Header{Name: "all-zeros", Typeflag: tar.TypeReg, Mode: 0o644, ModTime: time.Unix(1700000000, 0)}, data: make([]byte, 200<<10)},
		file{hdr: tar.Header{Name: "fifo", Typeflag: tar.TypeFifo, Mode: 0o600, ModTime: time.Unix(1700000000, 0)}},
		file{hdr: tar.Header{Name: "dev/sda", Typeflag: tar.TypeBlock, Devmajor: 8, Mode: 0o600, ModTime: time.Unix(1700000000, 0)}},
	)
	tarBytes := makeTar(t, fs)
	blob, ann := buildNewZstdChunked(t, tarBytes, 64<<10, 1024)

	// The estargz package's parser knows only the 40-byte footer: it cannot read this one.
	wantOff, _, _ := parsePosition(ann[AnnotationZstdChunkedPosition], true)
	if _, off, _, err := new(zstdchunked.Decompressor).ParseFooter(blob[len(blob)-zstdchunked.FooterSize:]); err == nil && off == wantOff {
		t.Errorf("the 40-byte footer parser read the 64-byte footer right (offset %d): the fixture is not the newer form", off)
	}
	tests := []struct {
		name      string
		ann       map[string]string
		wantReads int64
	}{
		{"position annotation", ann, 1},
		{"64-byte footer", nil, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mem := &memBlob{b: blob}
			x, err := BuildTOCIndex(context.Background(), mem, digestOf(blob), tt.ann, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := mem.reads.Load(); got > tt.wantReads {
				t.Errorf("index: %d reads, want at most %d", got, tt.wantReads)
			}
			e := &x.Entries[fileIndex(t, x, "holey")]
			if len(e.Sparse) == 0 {
				t.Errorf("holey: no sparse map from its zeros chunks")
			}
			if e := &x.Entries[fileIndex(t, x, "all-zeros")]; e.Sparse == nil || len(e.Sparse) != 0 {
				t.Errorf("all-zeros: sparse map %v, want empty (all hole)", e.Sparse)
			}
			checkTOCLayer(t, x, NewLayer(x, mem, nil, nil), tarBytes, time.Nanosecond)
		})
	}
}

// TestTOCColdReadCost reads one 4 KiB file of a ~20 MB eStargz layer with nothing
// cached: footer, TOC and that file's chunk only.
func TestTOCColdReadCost(t *testing.T) {
	blob, ann, name := coldLayer(t, 20)
	mem := &memBlob{b: blob}
	ctx := context.Background()
	x, err := BuildTOCIndex(ctx, mem, digestOf(blob), ann, nil)
	if err != nil {
		t.Fatal(err)
	}
	indexReads, indexBytes := mem.reads.Load(), mem.bytes.Load()
	e := &x.Entries[fileIndex(t, x, name)]
	p := make([]byte, e.Size)
	if n, err := NewLayer(x, mem, nil, nil).ReadAt(ctx, e, p, 0); n != len(p) || (err != nil && err != io.EOF) {
		t.Fatalf("read: n=%d err=%v", n, err)
	}
	reads, total := mem.reads.Load(), mem.bytes.Load()
	t.Logf("layer %d bytes: index %d reads %d bytes; file %d reads %d bytes; total %d bytes (%.3f%%)",
		len(blob), indexReads, indexBytes, reads-indexReads, total-indexBytes, total, 100*float64(total)/float64(len(blob)))
	if limit := int64(len(blob)) / 50; total >= limit {
		t.Errorf("read %d bytes for a 4 KiB file, want < 2%% of the layer (%d)", total, limit)
	}
	if got := reads - indexReads; got != 1 {
		t.Errorf("file read: %d ReadAt calls, want 1", got)
	}
	if got := total - indexBytes; got > 16<<10 {
		t.Errorf("file read: %d bytes, want its chunk only (< 16 KiB)", got)
	}
}

// coldLayer builds an eStargz layer of about mb MB: 4 MiB files of random bytes and
// 2000 small files, one of them the 4 KiB file it names.
func coldLayer(t testing.TB, mb int) (blob []byte, ann map[string]string, name string) {
	t.Helper()
	r := rand.New(rand.NewPCG(uint64(mb), 4))
	mt := time.Unix(1700000000, 0)
	var fs []file
	for i := range 2000 {
		fs = append(fs, file{hdr: tar.Header{Name: fmt.Sprintf("usr/share/doc/%04d", i), Typeflag: tar.TypeReg, Mode: 0o644, ModTime: mt},
			data: randomData(r, 1000+r.IntN(3000), true)})
	}
	name = "usr/share/doc/target"
	fs = append(fs, file{hdr: tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, ModTime: mt}, data: randomData(r, 4096, true)})
	for i := range mb / 4 {
		fs = append(fs, file{hdr: tar.Header{Name: fmt.Sprintf("usr/lib/big%02d", i), Typeflag: tar.TypeReg, Mode: 0o755, ModTime: mt},
			data: randomData(r, 4<<20, false)})
	}
	blob, ann = buildEStargz(t, makeTar(t, fs))
	return blob, ann, name
}

// TestTOCCorruptChunk: a chunk whose bytes do not match the TOC fails reads of its
// file with ErrChunkDigest (or a decode error); other files read correctly.
func TestTOCCorruptChunk(t *testing.T) {
	fs := tocFiles(24, 100<<10)
	tarBytes := makeTar(t, fs)
	tests := []struct {
		name       string
		level      int
		wantDigest bool // the corruption decodes, so only the digest catches it
	}{
		{"stored blocks", gzip.NoCompression, true},
		{"compressed", gzip.BestSpeed, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			blob, ann := buildEStargz(t, tarBytes, estargz.WithCompressionLevel(tt.level))
			x, err := BuildTOCIndex(context.Background(), &memBlob{b: blob}, digestOf(blob), ann, nil)
			if err != nil {
				t.Fatal(err)
			}
			victim := fileIndex(t, x, "big/0")
			c := x.toc[sort0(x, victim)]
			bad := bytes.Clone(blob)
			bad[c.In+(c.End-c.In)/2] ^= 0x55
			l := NewLayer(x, &memBlob{b: bad}, nil, nil)
			ctx := context.Background()
			e := &x.Entries[victim]
			_, err = l.ReadAt(ctx, e, make([]byte, 100), 0)
			if err == nil {
				t.Fatal("read of the corrupted file succeeded")
			}
			if tt.wantDigest && !errors.Is(err, ErrChunkDigest) {
				t.Errorf("got %v, want ErrChunkDigest", err)
			}
			for i := range x.Entries {
				o := &x.Entries[i]
				if i == victim || o.Size == 0 {
					continue
				}
				want := fs[i].data
				got := make([]byte, o.Size)
				if n, err := l.ReadAt(ctx, o, got, 0); n != len(want) || (err != nil && err != io.EOF) || !bytes.Equal(got, want) {
					t.Fatalf("%s: n=%d err=%v after another file's corruption", o.Name, n, err)
				}
			}
		})
	}
}

// sort0 returns the index in x.toc of entry i's first chunk.
func sort0(x *Index, i int) int {
	for j, c := range x.toc {
		if c.Out == x.Entries[i].Offset {
			return j
		}
	}
	return -1
}

func TestTOCAnnotationMismatch(t *testing.T) {
	tarBytes := makeTar(t, tocFiles(25, 10<<10))
	gz, _ := buildEStargz(t, tarBytes)
	zs, zann := buildZstdChunked(t, tarBytes)
	wrong := "sha256:" + fmt.Sprintf("%064x", 1)
	tests := []struct {
		name string
		blob []byte
		ann  map[string]string
	}{
		{"estargz toc.digest", gz, map[string]string{AnnotationTOCDigest: wrong}},
		{"zstd:chunked checksum", zs, map[string]string{
			AnnotationZstdChunkedPositionOld: zann[AnnotationZstdChunkedPositionOld], AnnotationZstdChunkedChecksumOld: wrong}},
		{"zstd:chunked new checksum", zs, map[string]string{AnnotationZstdChunkedChecksum: wrong}},
		{"zstd:chunked toc.digest", zs, map[string]string{AnnotationTOCDigest: wrong}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := BuildTOCIndex(context.Background(), &memBlob{b: tt.blob}, digestOf(tt.blob), tt.ann, nil)
			if !errors.Is(err, ErrTOCDigest) {
				t.Errorf("got %v, want ErrTOCDigest", err)
			}
		})
	}
}

// TestTOCGarbage: malformed footers and TOCs give errors, never a panic or an index
// that reads outside its stream.
func TestTOCGarbage(t *testing.T) {
	payload := gzipStd(t, []byte("payload"))
	dg := "sha256:" + fmt.Sprintf("%064x", 7)
	toc := func(entries string) []byte { return []byte(`{"version":1,"entries":[` + entries + `]}`) }
	reg := func(extra string) string {
		return `{"name":"f","type":"reg","size":7,"offset":1,"chunkDigest":"` + dg + `"` + extra + `}`
	}
	tests := []struct {
		name   string
		blob   []byte
		ann    map[string]string
		wantIs error
	}{
		{"empty blob", nil, nil, nil},
		{"random bytes", randomData(rand.New(rand.NewPCG(1, 1)), 100000, false), nil, ErrNoTOC},
		{"plain gzip", gzipStd(t, makeTar(t, tocFiles(1, 1000))), nil, ErrNoTOC},
		{"not JSON", estargzWithTOC(t, payload, []byte("{{{")), nil, nil},
		{"JSON null entry", estargzWithTOC(t, payload, toc(`null`)), nil, nil},
		{"unknown type", estargzWithTOC(t, payload, toc(`{"name":"x","type":"weird"}`)), nil, nil},
		{"chunk without file", estargzWithTOC(t, payload, toc(`{"name":"x","type":"chunk","offset":1,"chunkSize":3}`)), nil, nil},
		{"offset past data", estargzWithTOC(t, payload, toc(reg(`,"offset":99999`))), nil, nil},
		{"offset zero", estargzWithTOC(t, payload, toc(`{"name":"f","type":"reg","size":7,"chunkDigest":"`+dg+`"}`)), nil, nil},
		{"negative size", estargzWithTOC(t, payload, toc(`{"name":"f","type":"reg","size":-7,"offset":1}`)), nil, nil},
		{"chunks short of size", estargzWithTOC(t, payload, toc(reg(`,"size":70,"chunkSize":7`))), nil, nil},
		{"chunk past size", estargzWithTOC(t, payload, toc(reg(`,"chunkSize":70`))), nil, nil},
		{"bad digest", estargzWithTOC(t, payload, toc(`{"name":"f","type":"reg","size":7,"offset":1,"chunkDigest":"md5:x"}`)), nil, nil},
		{"no digest", estargzWithTOC(t, payload, toc(`{"name":"f","type":"reg","size":7,"offset":1}`)), nil, ErrNoTOC},
		{"bad mtime", estargzWithTOC(t, payload, toc(`{"name":"d","type":"dir","modtime":"yesterday"}`)), nil, nil},
		{"offsets decrease", estargzWithTOC(t, payload, toc(reg(`,"offset":5`)+`,`+reg(`,"name":"g","offset":2`))), nil, nil},
		{"negative inner offset", estargzWithTOC(t, payload, toc(reg(`,"innerOffset":-1`))), nil, nil},
		{"position outside blob", payload, map[string]string{AnnotationZstdChunkedPosition: "10:99999:5:1"}, nil},
		{"position malformed", payload, map[string]string{AnnotationZstdChunkedPosition: "10:x"}, nil},
		{"position wrong type", payload, map[string]string{AnnotationZstdChunkedPosition: "1:2:3:2"}, nil},
		{"position garbage TOC", payload, map[string]string{AnnotationZstdChunkedPosition: "8:10:5:1"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x, err := BuildTOCIndex(context.Background(), &memBlob{b: tt.blob}, digestOf(tt.blob), tt.ann, nil)
			if err == nil {
				t.Fatalf("got an index of %d entries, want an error", len(x.Entries))
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("got %v, want %v", err, tt.wantIs)
			}
			if tt.wantIs == nil && errors.Is(err, ErrNoTOC) && tt.name != "empty blob" {
				t.Errorf("got %v: a malformed TOC must not pass for a missing one", err)
			}
		})
	}
}

// TestTOCIndexer: an Indexer takes the TOC path for a layer whose annotations pin its
// TOC, and, failing those, for one whose end holds a footer (unless PinnedTOCOnly);
// it stores the TOC index like any other and reloads it without reading the blob. A
// plain layer costs one probe of its end more than its pass.
func TestTOCIndexer(t *testing.T) {
	tarBytes := makeTar(t, tocFiles(26, 200<<10))
	blob, ann := buildEStargz(t, tarBytes)
	zblob, zann := buildZstdChunked(t, tarBytes)
	plain := gzipStd(t, tarBytes)
	ctx := context.Background()
	tests := []struct {
		name       string
		blob       []byte
		ann        map[string]string
		pinnedOnly bool
		want       Format
	}{
		{"estargz annotated", blob, ann, false, FormatEStargz},
		{"estargz footer", blob, nil, false, FormatEStargz},
		{"estargz pinned only", blob, nil, true, FormatGzip},
		{"zstd:chunked annotated", zblob, zann, true, FormatZstdChunked},
		{"zstd:chunked footer", zblob, nil, false, FormatZstdChunked},
		{"plain gzip annotated", plain, ann, false, FormatGzip}, // no footer: a full pass
		{"plain gzip", plain, nil, false, FormatGzip},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := digestOf(tt.blob)
			store := indexStore{newMapCache()}
			mem := &memBlob{b: tt.blob}
			src := Source{Digest: d, Blob: mem, Annotations: tt.ann, PinnedTOCOnly: tt.pinnedOnly}
			x, err := NewIndexer(store, nil).IndexSource(ctx, src)
			if err != nil {
				t.Fatal(err)
			}
			if x.Format != tt.want {
				t.Fatalf("format %s, want %s", x.Format, tt.want)
			}
			pass, probe := int64(len(tt.blob)), int64(tocTailSize) // a pass may read 512 bytes twice
			switch got := mem.bytes.Load(); {
			case tt.want != FormatGzip && got > 2*probe:
				t.Errorf("TOC path read %d bytes, want the end only", got)
			case tt.want == FormatGzip && tt.pinnedOnly && !TOCAnchored(tt.ann) && (got < pass || got > pass+512):
				t.Errorf("pinned only, no annotation: read %d bytes, want one pass (%d) and no probe of the end", got, pass)
			case tt.want == FormatGzip && (got < pass || got > pass+512+2*probe):
				t.Errorf("read %d bytes, want one pass (%d) and one probe of the end", got, pass)
			}
			mem = &memBlob{b: tt.blob}
			y, err := NewIndexer(store, nil).IndexSource(ctx, Source{Digest: d, Blob: mem})
			if err != nil {
				t.Fatal(err)
			}
			if mem.reads.Load() != 0 || !reflect.DeepEqual(x, y) {
				t.Errorf("stored index: %d reads, equal %v; want a load", mem.reads.Load(), reflect.DeepEqual(x, y))
			}
			if tt.want != FormatGzip {
				checkTOCLayer(t, y, NewLayer(y, mem, nil, nil), tarBytes, time.Second)
			}
		})
	}
}

func TestTOCMarshal(t *testing.T) {
	tarBytes := makeTar(t, tocFiles(27, 100<<10))
	for _, build := range []func(testing.TB, []byte, ...estargz.Option) ([]byte, map[string]string){buildEStargz, buildZstdChunked} {
		blob, ann := build(t, tarBytes, estargz.WithChunkSize(30<<10))
		x, err := BuildTOCIndex(context.Background(), &memBlob{b: blob}, digestOf(blob), ann, nil)
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
		if !reflect.DeepEqual(x, &y) {
			t.Fatalf("%s: index changed by a marshal round trip", x.Format)
		}
		t.Logf("%s: %d entries, %d chunks, index %d bytes for a %d-byte layer", x.Format, len(x.Entries), len(x.toc), len(raw), len(blob))
		// A well-formed encoding of a broken chunk list is refused too.
		for _, breakIt := range []func(*Index){
			func(z *Index) { z.toc[0].Len++ },
			func(z *Index) { z.toc[len(z.toc)-1].End = z.toc[len(z.toc)-1].In },
			func(z *Index) { z.toc[1].Digest = "sha256:00" },
			func(z *Index) { z.toc = z.toc[1:] },
		} {
			z := y
			z.toc = append([]tocChunk(nil), y.toc...)
			breakIt(&z)
			raw, err := z.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			if err := new(Index).UnmarshalBinary(raw); !errors.Is(err, ErrBadIndex) {
				t.Errorf("broken chunks: got %v, want ErrBadIndex", err)
			}
		}
	}
}

// TestTOCLongChunk reads a file stored as one chunk longer than a unit (a zstd:chunked
// file of one frame): the first read checks the whole chunk, later reads decode up to
// their own 1 MiB unit only, and a corrupted frame fails the file's reads.
func TestTOCLongChunk(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	big := randomData(r, 12<<20+123, true)
	tarBytes := makeTar(t, []file{
		{hdr: tar.Header{Name: "small", Typeflag: tar.TypeReg, Mode: 0o644, ModTime: time.Unix(1, 0)}, data: []byte("small")},
		{hdr: tar.Header{Name: "long", Typeflag: tar.TypeReg, Mode: 0o644, ModTime: time.Unix(1, 0)}, data: big},
	})
	blob, ann := buildNewZstdChunked(t, tarBytes, 64<<20, 1024)
	x, err := BuildTOCIndex(context.Background(), &memBlob{b: blob}, digestOf(blob), ann, nil)
	if err != nil {
		t.Fatal(err)
	}
	e := &x.Entries[fileIndex(t, x, "long")]
	l := NewLayer(x, &memBlob{b: blob}, nil, nil, WithMemoryCache(0))
	ctx := context.Background()
	for i, off := range []int64{5 << 20, 1<<20 - 10, 11<<20 + 7} {
		before := l.Stats().Decoded
		p := make([]byte, 100)
		if n, err := l.ReadAt(ctx, e, p, off); n != len(p) || err != nil || !bytes.Equal(p, big[off:off+100]) {
			t.Fatalf("read at %d: n=%d err=%v", off, n, err)
		}
		decoded := l.Stats().Decoded - before
		var want int64 // each unit decodes from the chunk's start to its own end
		for u := off / DecodedChunkSize; u <= (off+99)/DecodedChunkSize; u++ {
			want += min((u+1)*DecodedChunkSize, e.Size)
		}
		switch {
		case i == 0 && decoded < e.Size:
			t.Errorf("first read decoded %d bytes, want the whole chunk (%d) checked", decoded, e.Size)
		case i > 0 && decoded > want:
			t.Errorf("read at %d decoded %d bytes, want at most %d (up to its units)", off, decoded, want)
		}
	}

	bad := bytes.Clone(blob)
	c := x.toc[sort0(x, fileIndex(t, x, "long"))]
	bad[c.In+(c.End-c.In)/2] ^= 0xff
	lb := NewLayer(x, &memBlob{b: bad}, nil, nil)
	if _, err := lb.ReadAt(ctx, e, make([]byte, 10), 0); err == nil {
		t.Error("read of a corrupted long chunk succeeded")
	}
	small := &x.Entries[fileIndex(t, x, "small")]
	p := make([]byte, 5)
	if n, err := lb.ReadAt(ctx, small, p, 0); n != 5 || err != nil || string(p) != "small" {
		t.Errorf("the other file: %q, %v", p[:n], err)
	}
}

// TestTOCCorruptChunkPurged: a chunk whose cached bytes fail the TOC is dropped from the
// cache, so that once the registry serves the right bytes the next read succeeds; a blob
// reader that cannot drop them keeps failing (the test would prove nothing otherwise).
func TestTOCCorruptChunkPurged(t *testing.T) {
	fs := tocFiles(25, 100<<10)
	tarBytes := makeTar(t, fs)
	for _, level := range []int{gzip.NoCompression, gzip.BestSpeed} {
		for _, purge := range []bool{true, false} {
			t.Run(fmt.Sprintf("level=%d/purge=%v", level, purge), func(t *testing.T) {
				blob, ann := buildEStargz(t, tarBytes, estargz.WithCompressionLevel(level))
				d := digestOf(blob)
				x, err := BuildTOCIndex(t.Context(), &memBlob{b: blob}, d, ann, nil)
				if err != nil {
					t.Fatal(err)
				}
				victim := fileIndex(t, x, "big/0")
				c := x.toc[sort0(x, victim)]
				store, err := cache.Open(t.TempDir(), 64<<20, nil)
				if err != nil {
					t.Fatal(err)
				}
				defer store.Close()
				src := &flipSource{data: blob, at: c.In + (c.End-c.In)/2}
				cb := cache.NewBlob(store, src, d, int64(len(blob)),
					cache.WithChunkSize(BlobChunkSize), cache.WithCoarse(cache.DefaultChunkSize))
				var b BlobReader = cb
				if !purge {
					b = unpurgeable{cb}
				}
				l := NewLayer(x, b, nil, nil, WithMemoryCache(0), WithCursors(0))
				e := &x.Entries[victim]
				p := make([]byte, e.Size)
				src.flip.Store(true)
				if _, err := l.ReadAt(t.Context(), e, p, 0); err == nil {
					t.Fatal("read through a flipped bit succeeded")
				} else if level == gzip.NoCompression && !errors.Is(err, ErrChunkDigest) {
					t.Fatalf("read through a flipped bit in a stored block: %v, want ErrChunkDigest", err)
				}
				src.flip.Store(false)
				n, err := l.ReadAt(t.Context(), e, p, 0)
				ok := n == len(p) && (err == nil || err == io.EOF) && bytes.Equal(p, fs[victim].data)
				if ok != purge {
					t.Errorf("read once the registry is right: n=%d err=%v right=%v; want right=%v", n, err, ok, purge)
				}
			})
		}
	}
}
