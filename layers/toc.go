package layers

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/containerd/stargz-snapshotter/estargz/zstdchunked"
)

// Layers with a table of contents (TOC): eStargz (gzip members) and zstd:chunked (zstd
// frames). Their index is built from the TOC alone, without reading the layer body;
// see BuildTOCIndex.
const (
	// FormatEStargz is a gzip layer with an eStargz footer and TOC.
	FormatEStargz Format = 16 + iota
	// FormatZstdChunked is a zstd layer with a zstd:chunked TOC in a skippable frame.
	FormatZstdChunked
)

// Manifest annotations of TOC layers (layer descriptors of an image manifest).
const (
	// AnnotationTOCDigest is the digest of an eStargz TOC's JSON (also set for
	// zstd:chunked layers built by the estargz package).
	AnnotationTOCDigest = estargz.TOCJSONDigestAnnotation
	// AnnotationZstdChunkedPosition and its older form locate a zstd:chunked TOC:
	// "offset:compressedLength:uncompressedLength:type".
	AnnotationZstdChunkedPosition    = "io.github.containers.zstd-chunked.manifest-position"
	AnnotationZstdChunkedPositionOld = zstdchunked.ManifestPositionAnnotation
	// AnnotationZstdChunkedChecksum and its older form are the digest of the
	// compressed zstd:chunked TOC.
	AnnotationZstdChunkedChecksum    = "io.github.containers.zstd-chunked.manifest-checksum"
	AnnotationZstdChunkedChecksumOld = zstdchunked.ManifestChecksumAnnotation
	// annotationZstdChunkedTarSplit locates the tar-split frame of a current
	// zstd:chunked layer ("offset:compressedLength:uncompressedLength").
	annotationZstdChunkedTarSplit = "io.github.containers.zstd-chunked.tarsplit-position"
)

const (
	// tocTailSize is the size of the first read of a TOC layer's end: the footer and,
	// for most layers, the whole TOC. A larger TOC costs one more read.
	tocTailSize = 64 << 10
	// maxTOCSize bounds the compressed TOC.
	maxTOCSize = 64 << 20
	// zstdChunkedFooterSize is the footer of current zstd:chunked layers (containers/
	// storage): offset, compressed and uncompressed length and type of the TOC, offset
	// and lengths of the tar-split frame, then the magic, each 8 bytes little-endian.
	zstdChunkedFooterSize = 64
	// manifestTypeCRFS is the only TOC type there is (the eStargz JSON schema).
	manifestTypeCRFS = 1
	// skippableHeader is the size of a zstd skippable frame's magic and length.
	skippableHeader = 8
)

var (
	// ErrNoTOC is returned by BuildTOCIndex for a layer that has no TOC it can use (no
	// footer, or chunks without digests): the caller indexes the layer with a full pass.
	ErrNoTOC = errors.New("layers: no usable TOC")
	// ErrTOCDigest is returned when a TOC does not match its manifest annotation.
	ErrTOCDigest = errors.New("layers: TOC does not match its annotation")
	// ErrChunkDigest is returned by reads of a TOC layer's file whose chunk does not
	// match its digest in the TOC. Only that file's reads fail.
	ErrChunkDigest = errors.New("layers: chunk does not match its digest in the TOC")

	zstdChunkedMagic = []byte("GNUlInUx")
	skippableMagic   = []byte{0x50, 0x2a, 0x4d, 0x18}
)

// TOCAnchored reports whether annotations pin a TOC's digest, so that the chunk
// digests it lists are as trustworthy as the manifest. Only such layers take the TOC
// path in an Indexer: without an anchor, neither the TOC nor the layer could be checked
// against the manifest without reading the whole layer, which a full pass does anyway.
// A caller can also read such a layer's blob at a fine grain (BlobChunkSize) from the
// start: its index reads only the footer and the TOC, and its reads only files' chunks.
func TOCAnchored(annotations map[string]string) bool {
	return annotations[AnnotationTOCDigest] != "" ||
		annotations[AnnotationZstdChunkedChecksum] != "" ||
		annotations[AnnotationZstdChunkedChecksumOld] != ""
}

// tocLocation is where a layer's TOC lies, and its compressed bytes.
type tocLocation struct {
	format     Format
	raw        []byte // the compressed TOC (gzip: the TOC member; zstd: the frame's content)
	payloadEnd int64  // end of the file data: the compressed chunks lie before it
}

// BuildTOCIndex builds the index of an eStargz or zstd:chunked layer from its TOC, with
// one or two reads at the end of the blob and none of its body:
//
//   - zstd:chunked with a manifest-position annotation (either prefix): the TOC range
//     comes from the annotation, and so a current layer's longer footer is never
//     parsed by the estargz package, which would misread it;
//   - otherwise the last 64 KiB hold the footer (eStargz, legacy stargz, or either
//     zstd:chunked footer) and usually the TOC; a larger TOC takes one more read.
//
// The TOC is parsed by the estargz package's parsers and checked against the
// annotations that pin it: containerd.io/snapshot/stargz/toc.digest (the TOC JSON) and
// the zstd-chunked manifest-checksum (the compressed TOC). Each file chunk's digest is
// recorded and checked on every decode of that chunk.
//
// The blob as a whole is NOT checked against digest: that would take reading all of
// it. The trust comes from the annotation (in the manifest, itself pinned by digest)
// through the TOC digest to each chunk's digest; without an annotation the TOC is
// taken as the registry serves it (an Indexer does so unless Source.PinnedTOCOnly).
//
// A layer without a footer, or with data chunks that carry no digest, gives an error
// wrapping ErrNoTOC; a TOC that does not match its annotation, ErrTOCDigest; a
// malformed TOC, another error. The index's stream is synthetic: the concatenation of
// the files' data in TOC order (no tar headers), which entry offsets point into.
func BuildTOCIndex(ctx context.Context, b BlobReader, digest string, annotations map[string]string, log *slog.Logger) (*Index, error) {
	log = orDiscard(log)
	start := time.Now()
	if _, _, err := parseDigest(digest); err != nil {
		return nil, err
	}
	loc, read, err := locateTOC(ctx, b, annotations)
	if err != nil {
		return nil, fmt.Errorf("layers: TOC of %s: %w", digest, err)
	}
	x, err := parseTOC(loc, annotations, b.Size())
	if err != nil {
		return nil, fmt.Errorf("layers: TOC of %s (%s): %w", digest, loc.format, err)
	}
	x.Digest = digest
	log.Debug("layer indexed from its TOC", "digest", digest, "format", x.Format.String(),
		"toc_bytes", len(loc.raw), "read", read, "entries", len(x.Entries), "chunks", len(x.toc),
		"elapsed", time.Since(start))
	return x, nil
}

// parseTOC checks the TOC bytes against the annotations, parses them with the
// estargz package and maps them to an Index.
func parseTOC(loc tocLocation, annotations map[string]string, blobSize int64) (*Index, error) {
	var dec estargz.Decompressor = new(estargz.GzipDecompressor)
	if loc.format == FormatZstdChunked {
		dec = new(zstdchunked.Decompressor)
		for _, k := range []string{AnnotationZstdChunkedChecksum, AnnotationZstdChunkedChecksumOld} {
			if want := annotations[k]; want != "" {
				if got := sha256Digest(loc.raw); got != want {
					return nil, fmt.Errorf("%w: compressed TOC is %s, %s says %s", ErrTOCDigest, got, k, want)
				}
			}
		}
	}
	toc, tocDigest, err := dec.ParseTOC(bytes.NewReader(loc.raw))
	if err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	if toc == nil { // the JSON "null"
		return nil, errors.New("parse: the TOC is null")
	}
	if want := annotations[AnnotationTOCDigest]; want != "" && tocDigest.String() != want {
		return nil, fmt.Errorf("%w: TOC JSON is %s, %s says %s", ErrTOCDigest, tocDigest, AnnotationTOCDigest, want)
	}
	var zeros map[int]bool
	if loc.format == FormatZstdChunked {
		if zeros, err = zeroChunks(loc.raw, len(toc.Entries)); err != nil {
			return nil, err
		}
	}
	return indexFromTOC(toc, loc.format, loc.payloadEnd, blobSize, zeros)
}

// maxTOCJSON bounds the decompressed TOC read by zeroChunks.
const maxTOCJSON = 1 << 30

// zeroChunks returns the positions of the zstd:chunked TOC entries whose chunkType is
// "zeros" (holes with no bytes in the blob). The estargz package's TOCEntry drops that
// field, so the compressed TOC raw is decoded once more for it alone.
func zeroChunks(raw []byte, n int) (map[int]bool, error) {
	dec, err := newZstdDecoder()
	if err != nil {
		return nil, err
	}
	defer dec.Close()
	if err := dec.Reset(bytes.NewReader(raw)); err != nil {
		return nil, fmt.Errorf("TOC chunk types: %w", zstdErr(err))
	}
	var toc struct {
		Entries []struct {
			ChunkType string `json:"chunkType"`
		} `json:"entries"`
	}
	if err := json.NewDecoder(io.LimitReader(dec, maxTOCJSON)).Decode(&toc); err != nil {
		return nil, fmt.Errorf("TOC chunk types: %w", zstdErr(err))
	}
	if len(toc.Entries) != n {
		return nil, fmt.Errorf("TOC chunk types: %d entries, want %d", len(toc.Entries), n)
	}
	var zeros map[int]bool
	for i, e := range toc.Entries {
		switch e.ChunkType {
		case "":
		case chunkTypeZeros:
			if zeros == nil {
				zeros = make(map[int]bool)
			}
			zeros[i] = true
		default:
			return nil, fmt.Errorf("entry %d: unknown chunk type %q", i, e.ChunkType)
		}
	}
	return zeros, nil
}

// locateTOC finds and reads a layer's compressed TOC. It returns the bytes read.
func locateTOC(ctx context.Context, b BlobReader, annotations map[string]string) (tocLocation, int64, error) {
	size := b.Size()
	for _, k := range []string{AnnotationZstdChunkedPosition, AnnotationZstdChunkedPositionOld} {
		v := annotations[k]
		if v == "" {
			continue
		}
		off, n, err := parsePosition(v, true)
		if err != nil {
			return tocLocation{}, 0, fmt.Errorf("annotation %s=%q: %w", k, v, err)
		}
		loc := tocLocation{format: FormatZstdChunked, payloadEnd: off - skippableHeader}
		if ts := annotations[annotationZstdChunkedTarSplit]; ts != "" {
			if tsOff, tsLen, err := parsePosition(ts, false); err == nil && tsLen > 0 && tsOff >= skippableHeader {
				loc.payloadEnd = min(loc.payloadEnd, tsOff-skippableHeader)
			}
		}
		if err := checkRange(off, n, size); err != nil {
			return tocLocation{}, 0, fmt.Errorf("annotation %s=%q: %w", k, v, err)
		}
		loc.raw = make([]byte, n)
		if err := readFull(ctx, b, loc.raw, off); err != nil {
			return tocLocation{}, n, err
		}
		return loc, n, nil
	}

	tailOff := max(0, size-tocTailSize)
	tail := make([]byte, size-tailOff)
	if err := readFull(ctx, b, tail, tailOff); err != nil {
		return tocLocation{}, int64(len(tail)), err
	}
	read := int64(len(tail))
	loc, tocOff, tocEnd, err := parseFooter(tail, size)
	if err != nil {
		return tocLocation{}, read, err
	}
	if err := checkRange(tocOff, tocEnd-tocOff, size); err != nil {
		return tocLocation{}, read, fmt.Errorf("footer: %w", err)
	}
	loc.raw = make([]byte, tocEnd-tocOff)
	if tocOff < tailOff {
		head := loc.raw[:tailOff-tocOff]
		if err := readFull(ctx, b, head, tocOff); err != nil {
			return tocLocation{}, read, err
		}
		read += int64(len(head))
		copy(loc.raw[len(head):], tail[:tocEnd-tailOff])
	} else {
		copy(loc.raw, tail[tocOff-tailOff:tocEnd-tailOff])
	}
	return loc, read, nil
}

// parseFooter recognises the footer at the end of tail, the last bytes of a blob of
// the given size, and returns the TOC's range [tocOff, tocEnd) in the blob.
func parseFooter(tail []byte, size int64) (loc tocLocation, tocOff, tocEnd int64, err error) {
	n := int64(len(tail))
	// The gzip footers: an empty gzip member whose extra field holds the TOC offset.
	for _, d := range []estargz.Decompressor{new(estargz.GzipDecompressor), new(estargz.LegacyGzipDecompressor)} {
		fs := d.FooterSize()
		if n < fs {
			continue
		}
		_, off, _, err := d.ParseFooter(tail[n-fs:])
		if err == nil {
			return tocLocation{format: FormatEStargz, payloadEnd: off}, off, size - fs, nil
		}
	}
	// The zstd:chunked footers sit in a skippable frame whose length says which it is;
	// containers/storage ends them with "GNUlInUx", the estargz package with "GnUlInUx".
	isFooter := func(fs int64) bool {
		h := n - fs - skippableHeader
		return h >= 0 && bytes.Equal(tail[h:h+4], skippableMagic) &&
			int64(binary.LittleEndian.Uint32(tail[h+4:h+8])) == fs &&
			bytes.EqualFold(tail[n-8:], zstdChunkedMagic)
	}
	switch {
	case isFooter(zstdChunkedFooterSize) && bytes.Equal(tail[n-8:], zstdChunkedMagic):
		f := tail[n-zstdChunkedFooterSize:]
		u := func(i int) int64 { return int64(min(binary.LittleEndian.Uint64(f[8*i:]), 1<<62)) }
		off, clen, typ, tsOff, tsLen := u(0), u(1), u(3), u(4), u(5)
		if typ != manifestTypeCRFS || off < skippableHeader {
			return tocLocation{}, 0, 0, fmt.Errorf("zstd:chunked manifest type %d at %d, want type %d", typ, off, manifestTypeCRFS)
		}
		loc = tocLocation{format: FormatZstdChunked, payloadEnd: off - skippableHeader}
		if tsLen > 0 && tsOff >= skippableHeader {
			loc.payloadEnd = min(loc.payloadEnd, tsOff-skippableHeader)
		}
		return loc, off, off + clen, nil
	case isFooter(zstdchunked.FooterSize):
		f := tail[n-zstdchunked.FooterSize:]
		_, off, clen, err := new(zstdchunked.Decompressor).ParseFooter(f)
		if err != nil { // containers/storage's older footer: the same fields, its own magic
			off, clen = int64(min(binary.LittleEndian.Uint64(f), 1<<62)), int64(min(binary.LittleEndian.Uint64(f[8:]), 1<<62))
			if typ := binary.LittleEndian.Uint64(f[24:]); typ != manifestTypeCRFS {
				return tocLocation{}, 0, 0, fmt.Errorf("zstd:chunked manifest type %d, want %d", typ, manifestTypeCRFS)
			}
		}
		if off < skippableHeader {
			return tocLocation{}, 0, 0, fmt.Errorf("zstd:chunked TOC offset %d", off)
		}
		return tocLocation{format: FormatZstdChunked, payloadEnd: off - skippableHeader}, off, off + clen, nil
	}
	return tocLocation{}, 0, 0, fmt.Errorf("%w: no eStargz or zstd:chunked footer", ErrNoTOC)
}

// parsePosition parses "offset:length[:uncompressed[:type]]"; withType requires the
// type field and that it be the CRFS manifest type.
func parsePosition(v string, withType bool) (off, n int64, err error) {
	f := strings.Split(v, ":")
	if len(f) < 3 || (withType && len(f) != 4) {
		return 0, 0, errors.New("want offset:length:uncompressedLength:type")
	}
	var nums [4]int64
	for i, s := range f {
		if i >= len(nums) {
			break
		}
		if nums[i], err = strconv.ParseInt(s, 10, 64); err != nil || nums[i] < 0 {
			return 0, 0, fmt.Errorf("bad number %q", s)
		}
	}
	if withType && nums[3] != manifestTypeCRFS {
		return 0, 0, fmt.Errorf("manifest type %d, want %d", nums[3], manifestTypeCRFS)
	}
	return nums[0], nums[1], nil
}

// checkRange checks that [off, off+n) is a plausible TOC range of a blob of size.
func checkRange(off, n, size int64) error {
	switch {
	case off < 0 || n <= 0 || off > size || n > size-off:
		return fmt.Errorf("TOC range %d+%d outside the blob (%d bytes)", off, n, size)
	case n > maxTOCSize:
		return fmt.Errorf("TOC of %d bytes exceeds the %d MiB limit", n, maxTOCSize>>20)
	}
	return nil
}

// readFull reads len(p) bytes of b at off.
func readFull(ctx context.Context, b BlobReader, p []byte, off int64) error {
	n, err := b.ReadAt(ctx, p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("read %d bytes at %d: %w", len(p), off, err)
}

// sha256Digest returns "sha256:<hex>" of b.
func sha256Digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}
