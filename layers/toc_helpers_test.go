package layers

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/containerd/stargz-snapshotter/estargz/zstdchunked"
	"github.com/klauspost/compress/zstd"
)

// tocFiles is testFiles without what estargz cannot hold (a PAX global header).
func tocFiles(seed uint64, bigSize int) []file {
	var out []file
	for _, f := range testFiles(seed, bigSize) {
		if f.hdr.Typeflag != tar.TypeXGlobalHeader {
			out = append(out, f)
		}
	}
	return out
}

// buildEStargz converts a tar to eStargz with the estargz package. It returns the blob
// and the TOC digest annotation.
func buildEStargz(t testing.TB, tarBytes []byte, opts ...estargz.Option) ([]byte, map[string]string) {
	t.Helper()
	opts = append([]estargz.Option{estargz.WithCompressionLevel(gzip.BestSpeed)}, opts...)
	blob, err := estargz.Build(io.NewSectionReader(bytes.NewReader(tarBytes), 0, int64(len(tarBytes))), opts...)
	if err != nil {
		t.Fatalf("estargz.Build: %v", err)
	}
	defer blob.Close()
	b, err := io.ReadAll(blob)
	if err != nil {
		t.Fatal(err)
	}
	return b, map[string]string{AnnotationTOCDigest: blob.TOCDigest().String()}
}

// buildZstdChunked converts a tar to zstd:chunked with the estargz package's
// zstdchunked compressor (the older 40-byte footer, io.containers.* annotations).
func buildZstdChunked(t testing.TB, tarBytes []byte, opts ...estargz.Option) ([]byte, map[string]string) {
	t.Helper()
	meta := map[string]string{}
	opts = append([]estargz.Option{estargz.WithCompression(zstdCompression{
		&zstdchunked.Compressor{CompressionLevel: zstd.SpeedFastest, Metadata: meta}, &zstdchunked.Decompressor{},
	})}, opts...)
	b, ann := buildEStargz(t, tarBytes, opts...)
	for k, v := range meta {
		ann[k] = v
	}
	return b, ann
}

// zstdCompression pairs the zstdchunked compressor and decompressor, as estargz.Build
// wants.
type zstdCompression struct {
	*zstdchunked.Compressor
	*zstdchunked.Decompressor
}

// tocRef is the reference reading of a tar for a TOC layer: archive/tar's entries, in
// order, with their contents.
func tocRef(t testing.TB, tarBytes []byte) []refEntry { return readRef(t, tarBytes) }

// checkTOCLayer compares every entry of a TOC index, and every file's bytes read
// through a Layer (whole and at random ranges), with archive/tar's reading of
// tarBytes. mtimeRound is the TOC's mtime precision.
func checkTOCLayer(t *testing.T, x *Index, l *Layer, tarBytes []byte, mtimeRound time.Duration) {
	t.Helper()
	ref := tocRef(t, tarBytes)
	if got, want := len(x.Entries), len(ref); got != want {
		t.Fatalf("entries: got %d, want %d", got, want)
	}
	ctx := context.Background()
	r := rand.New(rand.NewPCG(uint64(len(tarBytes)), 3))
	for i, w := range ref {
		e := &x.Entries[i]
		h := w.hdr
		wantSize := int64(len(w.data))
		if h.Typeflag != tar.TypeReg {
			wantSize = 0
		}
		wantX := map[string]string(nil)
		for k, v := range h.PAXRecords {
			if name, ok := cutXattr(k); ok {
				if wantX == nil {
					wantX = map[string]string{}
				}
				wantX[name] = v
			}
		}
		if e.Name != h.Name || e.Typeflag != h.Typeflag || e.Linkname != h.Linkname || e.Mode != h.Mode&07777 ||
			e.UID != h.Uid || e.GID != h.Gid || e.Size != wantSize || !e.ModTime.Equal(h.ModTime.Round(mtimeRound)) ||
			e.Devmajor != h.Devmajor || e.Devminor != h.Devminor || fmt.Sprint(e.Xattrs) != fmt.Sprint(wantX) {
			t.Fatalf("entry %d: got %+v\nwant header %+v size %d", i, *e, *h, wantSize)
		}
		if e.Size == 0 {
			continue
		}
		all := make([]byte, e.Size+10)
		n, err := l.ReadAt(ctx, e, all, 0)
		if n != len(w.data) || !bytes.Equal(all[:n], w.data) || err != io.EOF {
			t.Fatalf("entry %s: full read: n=%d err=%v (want %d, EOF), equal=%v", e.Name, n, err, len(w.data), bytes.Equal(all[:n], w.data))
		}
		for range 3 {
			off := r.Int64N(e.Size)
			ln := r.Int64N(min(e.Size-off, 70000)) + 1
			p := make([]byte, ln)
			n, err := l.ReadAt(ctx, e, p, off)
			if n != int(ln) || err != nil || !bytes.Equal(p, w.data[off:off+ln]) {
				t.Fatalf("entry %s: read %d at %d: n=%d err=%v", e.Name, ln, off, n, err)
			}
		}
	}
}

func cutXattr(k string) (string, bool) {
	const p = "SCHILY.xattr."
	if len(k) > len(p) && k[:len(p)] == p {
		return k[len(p):], true
	}
	return "", false
}

// fileIndex returns the position of the entry named name in x.
func fileIndex(t testing.TB, x *Index, name string) int {
	t.Helper()
	for i := range x.Entries {
		if x.Entries[i].Name == name {
			return i
		}
	}
	t.Fatalf("no entry %q", name)
	return -1
}

// estargzWithTOC returns a blob of payload followed by an eStargz TOC member holding
// tocJSON and the footer: a hand-made eStargz for malformed TOCs.
func estargzWithTOC(t testing.TB, payload, tocJSON []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	buf.Write(payload)
	tocOff := buf.Len()
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	if err := tw.WriteHeader(&tar.Header{Name: estargz.TOCTarName, Typeflag: tar.TypeReg, Size: int64(len(tocJSON))}); err != nil {
		t.Fatal(err)
	}
	tw.Write(tocJSON)
	tw.Close()
	zw.Close()
	extra := []byte{'S', 'G', 0, 0}
	sub := fmt.Sprintf("%016xSTARGZ", tocOff)
	binary.LittleEndian.PutUint16(extra[2:], uint16(len(sub)))
	buf.Write(estargz.CreateGzipFooter(append(extra, sub...)))
	return buf.Bytes()
}

// newZstdChunkedEntry is a TOC entry as containers/storage writes it (current
// zstd:chunked): RFC 3339 mtimes with nanoseconds, base64 xattrs, endOffset and
// chunkType, which the estargz package's TOCEntry does not have.
type newZstdChunkedEntry struct {
	Type        string            `json:"type"`
	Name        string            `json:"name"`
	Linkname    string            `json:"linkName,omitempty"`
	Mode        int64             `json:"mode,omitempty"`
	Size        int64             `json:"size,omitempty"`
	UID         int               `json:"uid,omitempty"`
	GID         int               `json:"gid,omitempty"`
	ModTime     *time.Time        `json:"modtime,omitempty"`
	Devmajor    int64             `json:"devMajor,omitempty"`
	Devminor    int64             `json:"devMinor,omitempty"`
	Xattrs      map[string][]byte `json:"xattrs,omitempty"` // []byte: base64 in JSON
	Digest      string            `json:"digest,omitempty"`
	Offset      int64             `json:"offset,omitempty"`
	EndOffset   int64             `json:"endOffset,omitempty"`
	ChunkSize   int64             `json:"chunkSize,omitempty"`
	ChunkOffset int64             `json:"chunkOffset,omitempty"`
	ChunkDigest string            `json:"chunkDigest,omitempty"`
	ChunkType   string            `json:"chunkType,omitempty"`
}

// buildNewZstdChunked writes a current zstd:chunked layer by hand, as containers/
// storage does: each tar header and each file chunk in zstd frames of its own (so the
// blob decompresses to the tar), runs of zeros of at least zeroRun bytes as "zeros"
// chunks, files split into chunks of at most chunkSize, then a tar-split skippable
// frame, the TOC in a skippable frame, and the 64-byte footer in a skippable frame. It
// returns the blob and its io.github.containers.* annotations.
func buildNewZstdChunked(t testing.TB, tarBytes []byte, chunkSize, zeroRun int) ([]byte, map[string]string) {
	t.Helper()
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	var blob []byte
	frame := func(b []byte) int64 {
		off := int64(len(blob))
		blob = enc.EncodeAll(b, blob)
		return off
	}
	var entries []newZstdChunkedEntry
	var hdrStart int64
	cr := &countingReader{r: bufio.NewReader(bytes.NewReader(tarBytes))}
	tr := tar.NewReader(cr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		frame(tarBytes[hdrStart:cr.n]) // the header blocks
		data, _ := io.ReadAll(tr)
		mt := h.ModTime
		e := newZstdChunkedEntry{Name: h.Name, Linkname: h.Linkname, Mode: h.Mode, UID: h.Uid, GID: h.Gid,
			ModTime: &mt, Devmajor: h.Devmajor, Devminor: h.Devminor}
		for k, v := range h.PAXRecords {
			if name, ok := cutXattr(k); ok {
				if e.Xattrs == nil {
					e.Xattrs = map[string][]byte{}
				}
				e.Xattrs[name] = []byte(v)
			}
		}
		e.Type = map[byte]string{tar.TypeReg: "reg", tar.TypeDir: "dir", tar.TypeSymlink: "symlink",
			tar.TypeLink: "hardlink", tar.TypeChar: "char", tar.TypeBlock: "block", tar.TypeFifo: "fifo"}[h.Typeflag]
		if e.Type == "" {
			t.Fatalf("type %q", h.Typeflag)
		}
		if h.Typeflag != tar.TypeReg || len(data) == 0 {
			entries = append(entries, e)
			hdrStart = roundUp512(cr.n)
			continue
		}
		e.Size = int64(len(data))
		e.Digest = sha256Digest(data)
		var chunks []newZstdChunkedEntry
		for pos := 0; pos < len(data); {
			n := min(chunkSize, len(data)-pos)
			typ := ""
			if z := zeroPrefix(data[pos:]); z >= zeroRun {
				n, typ = min(z, chunkSize), chunkTypeZeros
			} else if i := bytes.Index(data[pos:pos+n], make([]byte, zeroRun)); i > 0 {
				n = i
			}
			c := newZstdChunkedEntry{Type: "chunk", Name: h.Name, ChunkOffset: int64(pos), ChunkSize: int64(n),
				ChunkDigest: sha256Digest(data[pos : pos+n]), ChunkType: typ, Offset: frame(data[pos : pos+n])}
			c.EndOffset = int64(len(blob))
			chunks = append(chunks, c)
			pos += n
		}
		if len(chunks) == 1 {
			e.Offset, e.EndOffset = chunks[0].Offset, chunks[0].EndOffset
			entries = append(entries, e)
		} else {
			first := chunks[0]
			e.Offset, e.EndOffset, e.ChunkSize, e.ChunkDigest, e.ChunkType = first.Offset, first.EndOffset, first.ChunkSize, first.ChunkDigest, first.ChunkType
			entries = append(entries, e)
			entries = append(entries, chunks[1:]...)
		}
		hdrStart = roundUp512(cr.n)
	}
	frame(tarBytes[hdrStart:]) // the end-of-archive blocks

	skippable := func(b []byte) int64 {
		blob = append(blob, skippableMagic...)
		blob = binary.LittleEndian.AppendUint32(blob, uint32(len(b)))
		off := int64(len(blob))
		blob = append(blob, b...)
		return off
	}
	tarSplit := enc.EncodeAll([]byte(`{"type":1,"payload":"not a real tar-split"}`), nil)
	tsOff := skippable(tarSplit)
	tocJSON, err := json.Marshal(map[string]any{"version": 1, "entries": entries})
	if err != nil {
		t.Fatal(err)
	}
	toc := enc.EncodeAll(tocJSON, nil)
	tocOff := skippable(toc)
	footer := make([]byte, 0, zstdChunkedFooterSize)
	for _, v := range []int64{tocOff, int64(len(toc)), int64(len(tocJSON)), manifestTypeCRFS, tsOff, int64(len(tarSplit)), 43} {
		footer = binary.LittleEndian.AppendUint64(footer, uint64(v))
	}
	footer = append(footer, zstdChunkedMagic...)
	skippable(footer)
	return blob, map[string]string{
		AnnotationZstdChunkedPosition: fmt.Sprintf("%d:%d:%d:%d", tocOff, len(toc), len(tocJSON), manifestTypeCRFS),
		AnnotationZstdChunkedChecksum: sha256Digest(toc),
		annotationZstdChunkedTarSplit: fmt.Sprintf("%d:%d:%d", tsOff, len(tarSplit), 43),
	}
}

func zeroPrefix(b []byte) int {
	for i, c := range b {
		if c != 0 {
			return i
		}
	}
	return len(b)
}
