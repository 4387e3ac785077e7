package layers

import (
	"bytes"
	"context"
	"fmt"
	"hash"
	"io"
	"sort"
	"sync"

	kgzip "github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// maxTOCUnit is the largest TOC chunk read and kept as one unit. A longer chunk (a
// zstd:chunked file stored as one frame) is read in DecodedChunkSize units, each decoded
// from the chunk's start: it has no restart point inside.
const maxTOCUnit = 8 << 20

// tocZstdDecoders keeps idle bounded zstd decoders for chunk reads.
var tocZstdDecoders sync.Pool

// tocUnitAt returns the unit of a TOC layer holding stream offset off (0 <= off <
// Size): its chunk, or a DecodedChunkSize part of a long chunk. restart is the chunk.
func (l *Layer) tocUnitAt(off int64) unitRef {
	cs := l.x.toc
	i := sort.Search(len(cs), func(i int) bool { return cs[i].Out+cs[i].Len > off })
	c := cs[i]
	if c.Len <= maxTOCUnit {
		return unitRef{start: c.Out, end: c.Out + c.Len, restart: i}
	}
	start := c.Out + (off-c.Out)/DecodedChunkSize*DecodedChunkSize
	return unitRef{start: start, end: min(start+DecodedChunkSize, c.Out+c.Len), restart: i}
}

// decodeTOCUnit fetches the compressed bytes of u's chunk (and no other), decodes them
// and checks the chunk against its digest in the TOC. A mismatch is ErrChunkDigest:
// only the reads that need this chunk fail. A part of a long chunk is checked by
// decoding the whole chunk the first time; later parts decode up to themselves only.
func (l *Layer) decodeTOCUnit(ctx context.Context, u unitRef) ([]byte, error) {
	c := &l.x.toc[u.restart]
	whole := u.start == c.Out && u.end == c.Out+c.Len
	l.mu.Lock()
	verified := !whole && l.tocVerified[u.restart]
	l.mu.Unlock()

	r, done, err := l.openChunk(ctx, c)
	if err != nil {
		return nil, err
	}
	defer done()
	l.resumes.Add(1)
	var h hash.Hash
	var want []byte
	if !verified {
		h, want, _ = parseDigest(c.Digest) // checked when the index was built
	}
	// The chunk's bytes from its start, hashed unless already verified.
	var src io.Reader = r
	if h != nil {
		src = io.TeeReader(r, h)
	}
	if err := l.discard(r, c.Inner); err != nil {
		return nil, fmt.Errorf("chunk at %d: %w", c.In, err)
	}
	if err := l.discard(src, u.start-c.Out); err != nil {
		return nil, fmt.Errorf("chunk at %d: %w", c.In, err)
	}
	b := make([]byte, u.end-u.start)
	n, err := io.ReadFull(src, b)
	l.decoded.Add(int64(n))
	if err != nil {
		return nil, fmt.Errorf("chunk at %d: %w", c.In, unexpected(err))
	}
	if h == nil {
		return b, nil
	}
	if err := l.discard(src, c.Out+c.Len-u.end); err != nil {
		return nil, fmt.Errorf("chunk at %d: %w", c.In, err)
	}
	if got := h.Sum(nil); !bytes.Equal(got, want) {
		return nil, fmt.Errorf("%w: chunk of %d bytes at blob offset %d hashes to %x, TOC says %s",
			ErrChunkDigest, c.Len, c.In, got, c.Digest)
	}
	if !whole {
		l.mu.Lock()
		if l.tocVerified == nil {
			l.tocVerified = make(map[int]bool)
		}
		l.tocVerified[u.restart] = true
		l.mu.Unlock()
	}
	return b, nil
}

// discard reads and drops n decoded bytes of r.
func (l *Layer) discard(r io.Reader, n int64) error {
	d, err := io.CopyN(io.Discard, r, n)
	l.decoded.Add(d)
	return unexpected(err)
}

// openChunk returns a reader of the decoded bytes of the member or frames at c.In.
// The blob is read from c.In in pieces a little larger than the chunk's compressed
// size can be, and never past c.End; done releases the decoder.
func (l *Layer) openChunk(ctx context.Context, c *tocChunk) (io.Reader, func(), error) {
	want := c.Inner + c.Len
	bufSize := min(c.End-c.In, want+want/64+4096, 2*maxTOCUnit)
	src := newSeqReader(ctx, l.b, c.In, int(bufSize))
	src.size = min(src.size, c.End)
	switch l.x.Format {
	case FormatEStargz:
		zr, err := kgzip.NewReader(src)
		if err != nil {
			return nil, nil, fmt.Errorf("chunk at %d: gzip: %w", c.In, err)
		}
		zr.Multistream(false) // a chunk lies within one member
		return zr, func() { zr.Close() }, nil
	case FormatZstdChunked:
		dec, _ := tocZstdDecoders.Get().(*zstd.Decoder)
		if dec == nil {
			var err error
			if dec, err = newZstdDecoder(); err != nil {
				return nil, nil, err
			}
		}
		if err := dec.Reset(src); err != nil {
			tocZstdDecoders.Put(dec)
			return nil, nil, fmt.Errorf("chunk at %d: zstd: %w", c.In, zstdErr(err))
		}
		return zstdErrReader{dec}, func() {
			dec.Reset(nil)
			tocZstdDecoders.Put(dec)
		}, nil
	}
	return nil, nil, fmt.Errorf("no TOC decoder for format %s", l.x.Format)
}

// zstdErrReader maps a decoder's size-limit errors to ErrZstdWindow.
type zstdErrReader struct{ d *zstd.Decoder }

func (z zstdErrReader) Read(p []byte) (int, error) {
	n, err := z.d.Read(p)
	if err != nil && err != io.EOF {
		err = zstdErr(err)
	}
	return n, err
}
