package inflate

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// gzip header flags (RFC 1952 section 2.3.1).
const (
	flagHCRC     = 1 << 1
	flagExtra    = 1 << 2
	flagName     = 1 << 3
	flagComment  = 1 << 4
	flagReserved = 0xe0
)

// countingReader counts the bytes read from r.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// source is buffered input that knows its exact position in the gzip file. flate
// is handed br itself: a *bufio.Reader takes flate's fast path and is never wrapped.
type source struct {
	cr   countingReader
	br   *bufio.Reader
	base int64 // file offset of the first byte of the underlying reader
}

func newSource(r io.Reader, base int64, bufSize int) *source {
	s := &source{cr: countingReader{r: r}, base: base}
	s.br = bufio.NewReaderSize(&s.cr, bufSize)
	return s
}

// pos is the file offset of the next byte br will return.
func (s *source) pos() int64 { return s.base + s.cr.n - int64(s.br.Buffered()) }

// atEOF reports whether the input ends here.
func (s *source) atEOF() (bool, error) {
	_, err := s.br.Peek(1)
	if err == io.EOF {
		return true, nil
	}
	return false, err
}

// readHeader parses one gzip member header from br. It returns io.EOF only when br
// is empty; a header cut short gives io.ErrUnexpectedEOF.
func readHeader(br *bufio.Reader) error {
	var h [10]byte
	if n, err := io.ReadFull(br, h[:]); err != nil {
		if n == 0 && err == io.EOF {
			return io.EOF
		}
		return err
	}
	if h[0] != 0x1f || h[1] != 0x8b {
		return fmt.Errorf("%w: magic %#02x %#02x", ErrHeader, h[0], h[1])
	}
	if h[2] != 8 {
		return fmt.Errorf("%w: compression method %d", ErrHeader, h[2])
	}
	flg := h[3]
	if flg&flagReserved != 0 {
		return fmt.Errorf("%w: reserved flags %#02x", ErrHeader, flg)
	}
	crc := crc32.ChecksumIEEE(h[:])
	if flg&flagExtra != 0 {
		var xl [2]byte
		if _, err := io.ReadFull(br, xl[:]); err != nil {
			return noEOF(err)
		}
		crc = crc32.Update(crc, crc32.IEEETable, xl[:])
		var err error
		if crc, err = skipHashed(br, int(binary.LittleEndian.Uint16(xl[:])), crc); err != nil {
			return err
		}
	}
	for _, f := range []byte{flagName, flagComment} {
		if flg&f == 0 {
			continue
		}
		var err error
		if crc, err = skipString(br, crc); err != nil {
			return err
		}
	}
	if flg&flagHCRC != 0 {
		var hc [2]byte
		if _, err := io.ReadFull(br, hc[:]); err != nil {
			return noEOF(err)
		}
		if got, want := binary.LittleEndian.Uint16(hc[:]), uint16(crc); got != want {
			return fmt.Errorf("%w: header CRC %#04x, computed %#04x", ErrHeader, got, want)
		}
	}
	return nil
}

// skipHashed discards n bytes of br, adding them to crc.
func skipHashed(br *bufio.Reader, n int, crc uint32) (uint32, error) {
	for n > 0 {
		b, err := br.Peek(min(n, br.Size()))
		if len(b) == 0 {
			return crc, noEOF(err)
		}
		crc = crc32.Update(crc, crc32.IEEETable, b)
		n -= len(b)
		if _, err := br.Discard(len(b)); err != nil {
			return crc, noEOF(err)
		}
	}
	return crc, nil
}

// skipString discards a zero-terminated string, adding it to crc.
func skipString(br *bufio.Reader, crc uint32) (uint32, error) {
	for {
		b, err := br.ReadSlice(0)
		crc = crc32.Update(crc, crc32.IEEETable, b)
		switch {
		case err == nil:
			return crc, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		default:
			return crc, noEOF(err)
		}
	}
}

// readTrailer reads a member's CRC-32 and ISIZE and compares them with the data.
func readTrailer(br *bufio.Reader, crc uint32, size int64) error {
	var t [8]byte
	if _, err := io.ReadFull(br, t[:]); err != nil {
		return fmt.Errorf("inflate: reading gzip trailer: %w", noEOF(err))
	}
	if got := binary.LittleEndian.Uint32(t[:4]); got != crc {
		return fmt.Errorf("%w: CRC-32 %#08x, data has %#08x", ErrChecksum, got, crc)
	}
	if got := binary.LittleEndian.Uint32(t[4:]); got != uint32(size) {
		return fmt.Errorf("%w: ISIZE %d, data has %d bytes", ErrChecksum, got, size)
	}
	return nil
}

// noEOF turns io.EOF into io.ErrUnexpectedEOF: input ended inside a structure.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
