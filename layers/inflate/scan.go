package inflate

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/klauspost/compress/flate"
)

// scanBufSize is Scan's input buffer: large reads keep the cold pass fast.
const scanBufSize = 256 << 10

// maxBufferedBits bounds the bits flate may hold past a block boundary; a corrected
// offset further than that from the consumed count means the correction is wrong.
const maxBufferedBits = 64

// Scan decompresses the whole gzip file r (all members) into w and reports a
// checkpoint at the first block boundary after every span bytes of output since the
// previous checkpoint, plus one at the start of every member (Header set, the first
// at Out=0). The window handed to fn is a copy the callee may keep; fn is called in
// order of Out, once the output before the checkpoint has been written to w. An error
// from fn or w stops the scan and is returned. Every member's CRC-32 and ISIZE are
// verified. w may be nil. outSize is the number of bytes written to w.
func Scan(r io.Reader, w io.Writer, span int64, fn func(Checkpoint) error) (outSize int64, err error) {
	if err := selfCheck(); err != nil {
		return 0, err
	}
	return scan(r, w, span, fn)
}

func scan(r io.Reader, w io.Writer, span int64, fn func(Checkpoint) error) (int64, error) {
	if span <= 0 {
		return 0, fmt.Errorf("inflate: span %d must be positive", span)
	}
	if w == nil {
		w = io.Discard
	}
	if fn == nil {
		fn = func(Checkpoint) error { return nil }
	}
	s := &scanner{src: newSource(r, 0, scanBufSize), w: w, fn: fn, span: span}
	for member := 0; ; member++ {
		if err := s.member(member); err != nil {
			if err == io.EOF {
				return s.out, nil
			}
			return s.out, err
		}
	}
}

// scanner is the state of one Scan. Not safe for concurrent use.
type scanner struct {
	src  *source
	w    io.Writer
	fn   func(Checkpoint) error
	span int64

	out    int64 // bytes written to w
	lastCP int64 // Out of the last checkpoint reported or pending

	// The current member.
	deflateStart int64  // file offset of its deflate data
	memberOut    int64  // Out at its start
	crc          uint32 // CRC-32 of its output written so far
	drift        int64  // flate's excess in reported offsets (see the package doc)

	pending []Checkpoint // invariant: Out ascending and >= out; CRC not yet set
	err     error        // first error seen in the block callback
}

// member scans one gzip member; io.EOF means the file ended cleanly before it.
func (s *scanner) member(n int) error {
	start := s.src.pos()
	if n > 0 {
		if eof, err := s.src.atEOF(); err != nil {
			return fmt.Errorf("inflate: reading at offset %d: %w", start, err)
		} else if eof {
			return io.EOF
		}
	}
	if err := readHeader(s.src.br); err != nil {
		if n == 0 && err == io.EOF {
			return fmt.Errorf("inflate: empty input: %w", io.ErrUnexpectedEOF)
		}
		return fmt.Errorf("inflate: gzip member %d at offset %d: %w", n, start, noEOF(err))
	}
	s.lastCP = s.out
	if err := s.fn(Checkpoint{In: start, Out: s.out, Header: true}); err != nil {
		return err
	}
	s.deflateStart, s.memberOut, s.crc, s.drift = s.src.pos(), s.out, 0, 0
	fr := flate.NewReaderOpts(s.src.br, flate.WithEobCallback(s.onBlock))
	_, err := io.Copy(s, fr) // flate implements io.WriterTo: no extra copy
	if err == nil {
		err = s.err
	}
	if err == nil {
		err = s.emitDue()
	}
	if err == nil && len(s.pending) > 0 {
		err = fmt.Errorf("inflate: internal error: checkpoint at %d beyond member end %d", s.pending[0].Out, s.out)
	}
	if err == nil {
		err = readTrailer(s.src.br, s.crc, s.out-s.memberOut)
	}
	if err != nil {
		var ce flate.CorruptInputError
		switch {
		case errors.As(err, &ce):
			return fmt.Errorf("inflate: corrupt deflate data in member %d (header at offset %d): %w", n, start, err)
		case errors.Is(err, io.ErrUnexpectedEOF):
			return fmt.Errorf("inflate: member %d (header at offset %d) truncated: %w", n, start, err)
		}
		return fmt.Errorf("inflate: member %d (header at offset %d): %w", n, start, err)
	}
	return nil
}

// onBlock is flate's end-of-block callback. It measures flate's offset drift at every
// block and queues a checkpoint when a span of output has passed.
func (s *scanner) onBlock(icp flate.InflateCheckpoint) {
	if icp.Final || s.err != nil {
		return // after the final block comes the trailer: no restart point there
	}
	consumed := s.src.pos() - s.deflateStart
	if d := icp.CompressedOffset - consumed; d > s.drift {
		s.drift = d
	}
	bitPos := (icp.CompressedOffset-s.drift)*8 + int64(icp.BitOffset)
	if bitPos > consumed*8 || bitPos < consumed*8-maxBufferedBits {
		s.err = fmt.Errorf("%w: block boundary at bit %d, flate consumed %d bytes (reported offset %d, drift %d)",
			ErrSelfCheck, bitPos, consumed, icp.CompressedOffset, s.drift)
		return
	}
	out := s.memberOut + icp.UncompressedOffset
	if out-s.lastCP < s.span {
		return
	}
	s.lastCP = out
	s.pending = append(s.pending, Checkpoint{
		In:        s.deflateStart + bitPos/8,
		Bit:       uint8(bitPos % 8),
		Out:       out,
		Window:    append([]byte(nil), icp.Window...),
		MemberLen: icp.UncompressedOffset,
	})
}

// Write receives the member's output from flate: it updates the CRC, completes and
// reports checkpoints as the output reaches them, and passes the bytes on to w.
func (s *scanner) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	written := 0
	for len(p) > 0 {
		if err := s.emitDue(); err != nil {
			return written, err
		}
		chunk := p
		if len(s.pending) > 0 && s.pending[0].Out-s.out < int64(len(chunk)) {
			chunk = chunk[:s.pending[0].Out-s.out]
		}
		s.crc = crc32.Update(s.crc, crc32.IEEETable, chunk)
		n, err := s.w.Write(chunk)
		s.out += int64(n)
		written += n
		if err == nil && n < len(chunk) {
			err = io.ErrShortWrite
		}
		if err != nil {
			return written, err
		}
		p = p[n:]
	}
	return written, s.emitDue()
}

// emitDue reports the pending checkpoints the output has reached.
func (s *scanner) emitDue() error {
	for len(s.pending) > 0 && s.pending[0].Out <= s.out {
		cp := s.pending[0]
		if cp.Out < s.out {
			return fmt.Errorf("inflate: internal error: checkpoint at %d passed (output at %d)", cp.Out, s.out)
		}
		s.pending[0] = Checkpoint{}
		s.pending = s.pending[1:]
		cp.CRC = s.crc
		if err := s.fn(cp); err != nil {
			return err
		}
	}
	return nil
}
