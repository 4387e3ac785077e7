package layers

import (
	"bytes"
	"context"
	"errors"
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

// rangePurger is implemented by blob readers that keep what they read (cache.Blob):
// PurgeRange forgets the bytes [off, off+n).
type rangePurger interface {
	PurgeRange(off, n int64) error
}

// decodeTOCUnit fetches the compressed bytes of u's chunk (and no other), decodes them
// and checks the chunk against its digest in the TOC. A mismatch is ErrChunkDigest:
// only the reads that need this chunk fail. A part of a long chunk is checked by
// decoding the whole chunk the first time; later parts decode up to themselves only.
//
// When the chunk's bytes were read but are wrong (a digest mismatch or a decoder's
// error, not a failed read of the blob), the blob reader forgets the chunk's compressed
// range, so that the next read fetches it again rather than failing on the same cached
// bytes until they are evicted.
func (l *Layer) decodeTOCUnit(ctx context.Context, u unitRef) ([]byte, error) {
	b, err := l.decodeTOCChunk(ctx, u)
	var re *blobReadError
	// A decoder refusing a window too large is no sign of bad bytes.
	if err != nil && !errors.As(err, &re) && !errors.Is(err, ErrZstdWindow) && ctx.Err() == nil {
		l.purgeTOCChunk(&l.x.toc[u.restart], err)
	}
	return b, err
}

// purgeTOCChunk makes the blob reader forget the compressed bytes of chunk c, found
// wrong with err.
func (l *Layer) purgeTOCChunk(c *tocChunk, err error) {
	p, ok := l.b.(rangePurger)
	if !ok {
		return
	}
	l.log.Warn("TOC chunk is wrong; its cached bytes are dropped for a fresh fetch",
		"digest", l.x.Digest, "off", c.In, "end", c.End, "err", err)
	if perr := p.PurgeRange(c.In, c.End-c.In); perr != nil {
		l.log.Warn("TOC chunk's cached bytes not all dropped", "digest", l.x.Digest, "off", c.In, "err", perr)
	}
}

// blobReadError is an error of the blob reader under a TOC chunk's decoder: the bytes
// could not be read, which says nothing of the bytes already kept.
type blobReadError struct{ err error }

func (e *blobReadError) Error() string { return e.err.Error() }
func (e *blobReadError) Unwrap() error { return e.err }

// readErrMarker marks the errors of r as blobReadError.
type readErrMarker struct{ r io.Reader }

func (m readErrMarker) Read(p []byte) (int, error) {
	n, err := m.r.Read(p)
	if err != nil && err != io.EOF {
		err = &blobReadError{err}
	}
	return n, err
}

// decodeTOCChunk is decodeTOCUnit without the purge.
func (l *Layer) decodeTOCChunk(ctx context.Context, u unitRef) ([]byte, error) {
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
	seq := newSeqReader(ctx, l.b, c.In, int(bufSize))
	seq.size = min(seq.size, c.End)
	src := readErrMarker{seq}
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
