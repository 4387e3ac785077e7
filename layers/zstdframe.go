package layers

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

var zstdMagic = [4]byte{0x28, 0xb5, 0x2f, 0xfd}

var errZstdFrame = errors.New("malformed zstd frame")

// frameReader splits a zstd stream into frames without decoding them: it parses frame
// and block headers (RFC 8878) and yields exactly one frame's bytes at a time, so that a
// decoder fed from it stops at the frame's end, where the next restart point is.
type frameReader struct {
	src  *bufio.Reader
	off  int64 // stream offset of the next byte of src
	pass int64 // bytes of the current structure still to hand out
	// state of the current frame:
	checksum bool // the frame ends with a 4-byte content checksum
	state    frameState
}

type frameState uint8

const (
	stateIdle     frameState = iota // between frames: call begin
	stateBlock                      // next: a block header
	stateChecksum                   // next: the content checksum
	stateDone                       // the frame is over: Read returns io.EOF
)

// begin parses the header at the current offset. It returns io.EOF at a clean end of
// the stream and skips skippable frames, returning skip > 0 (the bytes skipped) for
// them; for a data frame it returns skip == 0 and Read then yields the frame.
func (f *frameReader) begin() (skip int64, err error) {
	head, err := f.src.Peek(4)
	if len(head) == 0 && errors.Is(err, io.EOF) {
		return 0, io.EOF
	}
	if len(head) < 4 {
		return 0, fmt.Errorf("%w at %d: truncated magic", errZstdFrame, f.off)
	}
	magic := binary.LittleEndian.Uint32(head)
	if magic&0xfffffff0 == 0x184d2a50 {
		head, err := f.src.Peek(8)
		if len(head) < 8 {
			return 0, fmt.Errorf("%w at %d: truncated skippable frame: %v", errZstdFrame, f.off, err)
		}
		n := 8 + int64(binary.LittleEndian.Uint32(head[4:]))
		if err := f.discard(n); err != nil {
			return 0, err
		}
		return n, nil
	}
	if magic != binary.LittleEndian.Uint32(zstdMagic[:]) {
		return 0, fmt.Errorf("%w at %d: bad magic %08x", errZstdFrame, f.off, magic)
	}
	head, err = f.src.Peek(5)
	if len(head) < 5 {
		return 0, fmt.Errorf("%w at %d: truncated header: %v", errZstdFrame, f.off, err)
	}
	fhd := head[4]
	if fhd&0x08 != 0 {
		return 0, fmt.Errorf("%w at %d: reserved header bit set", errZstdFrame, f.off)
	}
	single := fhd&0x20 != 0
	n := 5 + [4]int64{0, 1, 2, 4}[fhd&3] + [4]int64{0, 2, 4, 8}[fhd>>6]
	if !single {
		n++ // window descriptor
	} else if fhd>>6 == 0 {
		n++ // a one-byte content size
	}
	f.pass, f.checksum, f.state = n, fhd&0x04 != 0, stateBlock
	return 0, nil
}

func (f *frameReader) discard(n int64) error {
	d, err := f.src.Discard(int(n))
	f.off += int64(d)
	if int64(d) < n {
		return fmt.Errorf("%w at %d: truncated: %v", errZstdFrame, f.off, err)
	}
	return nil
}

// done reports whether the current frame has been read to its end.
func (f *frameReader) done() bool { return f.state == stateDone && f.pass == 0 }

// Read yields the bytes of the current frame, io.EOF at its end.
func (f *frameReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for f.pass == 0 {
		switch f.state {
		case stateBlock:
			h, _ := f.src.Peek(3)
			if len(h) < 3 {
				return 0, fmt.Errorf("%w at %d: truncated block header", errZstdFrame, f.off)
			}
			v := uint32(h[0]) | uint32(h[1])<<8 | uint32(h[2])<<16
			size := int64(v >> 3)
			switch (v >> 1) & 3 {
			case 1: // RLE: one byte repeated
				size = 1
			case 3:
				return 0, fmt.Errorf("%w at %d: reserved block type", errZstdFrame, f.off)
			}
			f.pass = 3 + size
			if v&1 != 0 { // last block
				f.state = stateDone
				if f.checksum {
					f.state = stateChecksum
				}
			}
		case stateChecksum:
			f.pass, f.state = 4, stateDone
		default:
			return 0, io.EOF
		}
	}
	n, err := f.src.Read(p[:min(int64(len(p)), f.pass)])
	f.off += int64(n)
	f.pass -= int64(n)
	if n > 0 {
		return n, nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return 0, fmt.Errorf("%w at %d: %w", errZstdFrame, f.off, err)
}
