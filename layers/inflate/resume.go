package inflate

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/klauspost/compress/flate"
)

// resumeBufSize is Resume's input buffer: small, since a resumed read usually
// wants about one span and every byte read ahead may cost a fetch.
const resumeBufSize = 32 << 10

// Resume returns the uncompressed bytes from cp.Out on, reading the gzip file from r,
// which must be positioned at byte cp.In of the file; it continues across members to
// the end of the file. cp must come from Scan (directly or through
// UnmarshalCheckpoints). A read that passes the end of a member verifies that
// member's CRC-32 and ISIZE. Close releases nothing but makes later reads fail.
func Resume(r io.Reader, cp Checkpoint) (io.ReadCloser, error) {
	if err := selfCheck(); err != nil {
		return nil, err
	}
	return resume(r, cp)
}

func resume(r io.Reader, cp Checkpoint) (*resumer, error) {
	if err := cp.validate(); err != nil {
		return nil, err
	}
	z := &resumer{src: newSource(r, cp.In, resumeBufSize)}
	if cp.Header {
		return z, nil // the first Read parses the header
	}
	z.memberStart, z.members = cp.In, 1
	z.crc, z.memberLen = cp.CRC, cp.MemberLen
	z.fr = flate.NewReaderOpts(z.src.br, flate.WithResumeFrom(flate.InflateCheckpoint{
		UncompressedOffset: cp.MemberLen,
		CompressedOffset:   cp.In,
		BitOffset:          cp.Bit,
		Window:             cp.Window,
	}))
	return z, nil
}

// resumer is the reader Resume returns. Not safe for concurrent use.
type resumer struct {
	src     *source
	fr      io.ReadCloser // inflater of the current member; nil between members
	members int           // members started by this reader
	err     error         // sticky: io.EOF at the end, or the first failure

	memberStart int64  // file offset where the current member (or resume) began
	crc         uint32 // CRC-32 of the current member's output so far
	memberLen   int64  // length of the current member's output so far
}

func (z *resumer) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, z.err
	}
	for z.err == nil {
		if z.fr == nil {
			if z.err = z.startMember(); z.err != nil {
				break
			}
		}
		n, err := z.fr.Read(p)
		z.crc = crc32.Update(z.crc, crc32.IEEETable, p[:n])
		z.memberLen += int64(n)
		switch {
		case err == io.EOF:
			z.fr = nil
			if err := readTrailer(z.src.br, z.crc, z.memberLen); err != nil {
				z.err = fmt.Errorf("inflate: member at offset %d: %w", z.memberStart, err)
			}
		case err != nil:
			z.err = z.wrap(err)
		}
		if n > 0 {
			return n, nil // a failure, if any, is returned by the next call
		}
	}
	return 0, z.err
}

// startMember parses the next member's header; io.EOF means the file ended cleanly.
func (z *resumer) startMember() error {
	z.memberStart = z.src.pos()
	z.members++
	if z.members > 1 {
		if eof, err := z.src.atEOF(); err != nil {
			return fmt.Errorf("inflate: reading at offset %d: %w", z.memberStart, err)
		} else if eof {
			return io.EOF
		}
	}
	if err := readHeader(z.src.br); err != nil {
		return fmt.Errorf("inflate: gzip member at offset %d: %w", z.memberStart, noEOF(err))
	}
	z.crc, z.memberLen = 0, 0
	z.fr = flate.NewReader(z.src.br)
	return nil
}

func (z *resumer) wrap(err error) error {
	var ce flate.CorruptInputError
	switch {
	case errors.As(err, &ce):
		return fmt.Errorf("inflate: corrupt deflate data in member at offset %d: %w", z.memberStart, err)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("inflate: member at offset %d truncated: %w", z.memberStart, err)
	}
	return fmt.Errorf("inflate: member at offset %d: %w", z.memberStart, err)
}

// Close makes later reads fail.
func (z *resumer) Close() error {
	if z.err == nil || z.err == io.EOF {
		z.err = errors.New("inflate: read after Close")
	}
	z.fr = nil
	return nil
}
