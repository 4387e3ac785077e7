package layers

import (
	"errors"
	"fmt"
)

// marshalTOC appends a TOC layer's chunks to e. Out is implied (the chunks are
// contiguous); In is delta-coded against the previous chunk.
func (x *Index) marshalTOC(e *encoder) {
	e.uvarint(uint64(len(x.toc)))
	var prevIn int64
	for _, c := range x.toc {
		e.varint(c.Len)
		e.varint(c.In - prevIn)
		e.varint(c.End - c.In)
		e.varint(c.Inner)
		e.str(c.Digest)
		prevIn = c.In
	}
}

// unmarshalTOC reads what marshalTOC wrote; validateTOC checks it.
func (x *Index) unmarshalTOC(d *decoder) {
	if n := d.count(5); n > 0 { // a chunk takes at least 5 bytes
		x.toc = make([]tocChunk, n)
	}
	var out, prevIn int64
	for i := range x.toc {
		c := &x.toc[i]
		c.Out = out
		c.Len = d.varint()
		c.In = prevIn + d.varint()
		c.End = c.In + d.varint()
		c.Inner = d.varint()
		c.Digest = d.str()
		if d.err != nil {
			return
		}
		if c.Len <= 0 || c.Len > 1<<62-out {
			d.fail("chunk length")
			return
		}
		out += c.Len
		prevIn = c.In
	}
}

// validateTOC checks the invariants a Layer relies on for a TOC layer: chunks that
// cover the stream [0, Size) exactly, in order, each with a compressed range inside
// the blob's plausible bounds and a digest it can check.
func (x *Index) validateTOC() error {
	isTOC := x.Format == FormatEStargz || x.Format == FormatZstdChunked
	switch {
	case !isTOC && x.toc != nil:
		return errors.New("chunks in an index without a TOC")
	case !isTOC:
		return nil
	}
	var out int64
	for i, c := range x.toc {
		if c.Out != out || c.Len <= 0 || c.Len > x.Size-out || c.In < 0 || c.End <= c.In || c.Inner < 0 {
			return fmt.Errorf("chunk %d: bad range", i)
		}
		if _, _, err := parseDigest(c.Digest); err != nil {
			return fmt.Errorf("chunk %d: %w", i, err)
		}
		out += c.Len
	}
	if out != x.Size {
		return fmt.Errorf("chunks cover %d of %d bytes", out, x.Size)
	}
	return nil
}
