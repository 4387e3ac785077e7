package layers

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"log/slog"
)

// ErrBlobChunkDigest is returned by Index.VerifyChunk for a chunk of the compressed blob
// whose bytes do not match the digest recorded when the layer was indexed.
var ErrBlobChunkDigest = errors.New("layers: blob chunk does not match its digest in the index")

// BlobChunkSize is the size of the blob chunks whose digests BuildIndex records by default,
// and so the grain at which reads after indexing fetch a layer's blob: a read costs the
// registry about the compressed bytes it decodes, rounded out to 32 KiB, not to the 1 MiB
// chunks of the index pass. The sums cost 32 bytes per 32 KiB of blob in the index (0.1%).
const BlobChunkSize = 32 << 10

// blobChunks are the sha256 sums of the fixed-size chunks of a layer's compressed blob,
// recorded by the full pass (BuildIndex) that also checked the whole blob against its
// digest. Later reads fetch the blob by ranges, one cache chunk at a time, and check each
// chunk against its sum before using it (Index.VerifyChunk, given to cache.WithVerify):
// no full-blob digest covers them. An index built from a TOC records none (its chunks are
// checked against the TOC's digests). The chunk size is stored with the sums, so an
// index written with another size (1 MiB, before BlobChunkSize) loads and checks chunks
// of that size.
type blobChunks struct {
	size int64               // chunk size; 0: no sums recorded
	blob int64               // size of the compressed blob
	sums [][sha256.Size]byte // one per chunk, the last one possibly short
}

// chunkCount returns how many chunks of size bytes a blob of blob bytes has.
func chunkCount(blob, size int64) int64 { return (blob + size - 1) / size }

// ChunkSize returns the size of the blob chunks whose digests the index holds, or 0 if it
// holds none. A cache.Blob that reads the layer must use this chunk size for VerifyChunk.
func (x *Index) ChunkSize() int64 { return x.chunks.size }

// VerifyChunk checks chunk n (bytes [n*ChunkSize, …) of the compressed blob) against the
// digest recorded when the layer was indexed; its signature is cache.VerifyFunc's. An
// index that holds no chunk digests (one built from a TOC) accepts every chunk. It is
// safe for concurrent use.
func (x *Index) VerifyChunk(n int64, b []byte) error {
	c := &x.chunks
	if c.size == 0 {
		return nil
	}
	if n < 0 || n >= int64(len(c.sums)) {
		return fmt.Errorf("layers: %s: chunk %d of %d: %w", x.Digest, n, len(c.sums), ErrBlobChunkDigest)
	}
	if want := min(c.size, c.blob-n*c.size); int64(len(b)) != want {
		return fmt.Errorf("layers: %s: chunk %d has %d bytes, want %d: %w", x.Digest, n, len(b), want, ErrBlobChunkDigest)
	}
	if sha256.Sum256(b) != c.sums[n] {
		return fmt.Errorf("layers: %s: chunk %d (blob offset %d): %w", x.Digest, n, n*c.size, ErrBlobChunkDigest)
	}
	return nil
}

// marshalBlobChunks appends the chunk sums to e: the chunk size, and if it is not 0 the
// blob's size and the sums (their count follows from the sizes).
func (x *Index) marshalBlobChunks(e *encoder) {
	e.uvarint(uint64(x.chunks.size))
	if x.chunks.size == 0 {
		return
	}
	e.uvarint(uint64(x.chunks.blob))
	for _, s := range x.chunks.sums {
		e.b = append(e.b, s[:]...)
	}
}

// unmarshalBlobChunks reads what marshalBlobChunks wrote.
func (x *Index) unmarshalBlobChunks(d *decoder) {
	c := &x.chunks
	if c.size = d.nonNeg(); c.size == 0 || d.err != nil {
		return
	}
	c.blob = d.nonNeg()
	n := chunkCount(c.blob, c.size)
	if d.err != nil || n > int64(len(d.b)/sha256.Size) {
		d.fail("chunk digests")
		return
	}
	c.sums = make([][sha256.Size]byte, n)
	for i := range c.sums {
		d.b = d.b[copy(c.sums[i][:], d.b):]
	}
}

// validateBlobChunks checks that the sums cover the blob exactly.
func (x *Index) validateBlobChunks() error {
	c := &x.chunks
	switch {
	case c.size < 0 || c.blob < 0:
		return errors.New("negative chunk or blob size")
	case c.size == 0 && (c.blob != 0 || len(c.sums) != 0):
		return errors.New("chunk digests without a chunk size")
	case c.size > 0 && int64(len(c.sums)) != chunkCount(c.blob, c.size):
		return fmt.Errorf("%d chunk digests for %d chunks", len(c.sums), chunkCount(c.blob, c.size))
	}
	return nil
}

// chunkHasher computes the sha256 of each size-byte chunk of what is written to it. It is
// not safe for concurrent use.
type chunkHasher struct {
	size int64
	h    hash.Hash
	n    int64 // bytes of the current chunk written
	sums [][sha256.Size]byte
}

func newChunkHasher(size int64) *chunkHasher {
	return &chunkHasher{size: size, h: sha256.New()}
}

func (c *chunkHasher) Write(p []byte) {
	for len(p) > 0 {
		k := min(int64(len(p)), c.size-c.n)
		c.h.Write(p[:k])
		c.n += k
		p = p[k:]
		if c.n == c.size {
			c.next()
		}
	}
}

// next closes the current chunk.
func (c *chunkHasher) next() {
	var s [sha256.Size]byte
	c.h.Sum(s[:0])
	c.sums = append(c.sums, s)
	c.h.Reset()
	c.n = 0
}

// finish closes a last, short chunk and returns the sums.
func (c *chunkHasher) finish() [][sha256.Size]byte {
	if c.n > 0 {
		c.next()
	}
	return c.sums
}

// purger is implemented by blob readers that keep what they read (cache.Blob): Purge
// forgets it.
type purger interface{ Purge() error }

// purgeBlob makes b forget the bytes it kept during a failed index pass: they may be the
// wrong bytes that failed it, and would be read again by the next attempt and by nothing
// else (no Layer reads a blob without an index).
func purgeBlob(b BlobReader, digest string, log *slog.Logger) {
	p, ok := b.(purger)
	if !ok {
		return
	}
	if err := p.Purge(); err != nil {
		log.Warn("layer blob's cached chunks not all purged after a failed index", "digest", digest, "err", err)
	}
}
