package layers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
)

// BlobReader is random access to a blob. *cache.Blob implements it.
//
// ReadAt follows the io.ReaderAt contract: a short read always comes with an error,
// io.EOF at the end of the blob.
type BlobReader interface {
	ReadAt(ctx context.Context, p []byte, off int64) (int, error)
	Size() int64
}

// sequentialOpener is implemented by blob readers that can stream with read-ahead
// (cache.Blob). BuildIndex uses it when no source is given.
type sequentialOpener interface {
	Reader(ctx context.Context, off int64) io.Reader
}

// Format is the encoding of a layer blob.
type Format uint8

// Layer formats, as sniffed from the first bytes of a blob.
const (
	FormatTar Format = iota + 1
	FormatGzip
	FormatZstd
)

// String returns "tar", "gzip" or "zstd".
func (f Format) String() string {
	switch f {
	case FormatTar:
		return "tar"
	case FormatGzip:
		return "gzip"
	case FormatZstd:
		return "zstd"
	case FormatEStargz:
		return "estargz"
	case FormatZstdChunked:
		return "zstd:chunked"
	}
	return fmt.Sprintf("format(%d)", uint8(f))
}

// ErrUnknownFormat is returned for a blob that is neither gzip, zstd nor tar.
var ErrUnknownFormat = errors.New("layers: unknown layer format (not gzip, zstd or tar)")

// DetectFormat sniffs the format of a blob from its magic bytes (gzip 1f 8b, zstd
// 28 b5 2f fd or a skippable frame, else a tar header: "ustar" at 257 or a valid header checksum). The media
// type of a descriptor is never consulted.
func DetectFormat(ctx context.Context, b BlobReader) (Format, error) {
	var blk [512]byte
	n, err := b.ReadAt(ctx, blk[:min(int64(len(blk)), b.Size())], 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return 0, fmt.Errorf("layers: read blob head: %w", err)
	}
	return detect(blk[:n])
}

// detect sniffs a format from the first bytes (up to 512) of a blob.
func detect(head []byte) (Format, error) {
	switch {
	case len(head) >= 2 && head[0] == 0x1f && head[1] == 0x8b:
		return FormatGzip, nil
	case len(head) >= 4 && bytes.Equal(head[:4], zstdMagic[:]):
		return FormatZstd, nil
	case len(head) >= 4 && head[0]&0xf0 == 0x50 && bytes.Equal(head[1:4], []byte{0x2a, 0x4d, 0x18}):
		return FormatZstd, nil // a skippable frame first
	case len(head) >= 512 && isTarHeader(head[:512]):
		return FormatTar, nil
	}
	return 0, ErrUnknownFormat
}

// isTarHeader reports whether blk is a tar header block (ustar magic or a correct
// checksum) or the all-zero block that opens an empty archive.
func isTarHeader(blk []byte) bool {
	if string(blk[257:262]) == "ustar" {
		return true
	}
	if allZero(blk) {
		return true
	}
	return tarChecksumOK(blk)
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// tarChecksumOK checks a header block's checksum field, accepting the unsigned sum (the
// standard) and the signed sum that some old tars wrote.
func tarChecksumOK(blk []byte) bool {
	want, ok := parseOctal(blk[148:156])
	if !ok {
		return false
	}
	var unsigned, signed int64
	for i, c := range blk[:512] {
		if i >= 148 && i < 156 {
			c = ' '
		}
		unsigned += int64(c)
		signed += int64(int8(c))
	}
	return want == unsigned || want == signed
}

const (
	// stopZone and stopZoneRead: see seqReader.stops. A gzip decoder
	// finishing a block delivers its output only once it has decoded up to
	// 32 KiB of output more from the next block (klauspost/compress/flate
	// flushes its window when it fills, not at a block's end), so it reads
	// about that much input past the restart point where its unit ends.
	stopZone     = 64 << 10
	stopZoneRead = 4 << 10
)

// seqReader reads a BlobReader sequentially from off in pieces of len(buf).
// The context is stored for the life of the reader: a seqReader lives inside one
// streaming pass or one checked-out decoder and is pulled by library code (archive/tar,
// decompressors) that cannot pass a context through.
type seqReader struct {
	ctx  context.Context
	b    BlobReader
	off  int64 // blob offset of buf[end]
	size int64
	buf  []byte
	pos  int // next unread byte in buf
	end  int // valid bytes in buf
	// stops are blob offsets, ascending (restart points): no single read
	// crosses one, and the reads in the stopZone bytes after one are at most
	// stopZoneRead bytes, so that a decoder that reaches a restart point
	// fetches only the few bytes past it it needs to finish its unit. nil:
	// none. A decoder starting at a restart point (from) reads on at full
	// size from there.
	stops []int64
	from  int64 // the offset the reader started at
}

func newSeqReader(ctx context.Context, b BlobReader, off int64, bufSize int) *seqReader {
	return &seqReader{ctx: ctx, b: b, off: off, from: off, size: b.Size(), buf: make([]byte, bufSize)}
}

// withStops sets the reader's stops (see seqReader.stops) and returns it.
func (r *seqReader) withStops(stops []int64) *seqReader {
	r.stops = stops
	return r
}

// Read implements io.Reader.
func (r *seqReader) Read(p []byte) (int, error) {
	if r.pos == r.end {
		if r.off >= r.size {
			return 0, io.EOF
		}
		if err := r.ctx.Err(); err != nil {
			return 0, err
		}
		want := min(int64(len(r.buf)), r.size-r.off)
		if i, _ := slices.BinarySearch(r.stops, r.off+1); len(r.stops) > 0 {
			if i < len(r.stops) {
				want = min(want, r.stops[i]-r.off)
			}
			if i > 0 && r.off-r.stops[i-1] < stopZone && r.stops[i-1] > r.from {
				want = min(want, stopZoneRead)
			}
		}
		n, err := r.b.ReadAt(r.ctx, r.buf[:want], r.off)
		if int64(n) < want {
			if err == nil || errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return 0, fmt.Errorf("layers: read blob at %d: %w", r.off, err)
		}
		r.off += want
		r.pos, r.end = 0, int(want)
	}
	n := copy(p, r.buf[r.pos:r.end])
	r.pos += n
	return n, nil
}

// ctxReader fails reads once ctx is done: it lets a caller-supplied source honour the
// pass's context.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}
