package inflate

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/klauspost/compress/flate"
)

// Encoding of a checkpoint list, version 1 (all integers little-endian or uvarint):
//
//	magic "RGZC", version byte 1
//	uvarint count
//	count records:
//	    flags byte (bit 0: Header; other bits zero)
//	    uvarint In - previous In (In never decreases)
//	    uvarint Out - previous Out (Out never decreases)
//	    if not Header: bit byte, uvarint MemberLen, uint32 CRC
//	        (the window is the last min(MemberLen, 32 KiB) bytes of output)
//	uvarint length of the windows' section, then that many bytes: the windows of the
//	    records, in order, concatenated, as one raw deflate stream
//	uint32 CRC-32 of everything before it
const (
	marshalMagic   = "RGZC"
	marshalVersion = 1
	flagHeader     = 1 << 0
	// maxDeflateRatio bounds how much a deflate stream can expand (1032:1 at most).
	maxDeflateRatio = 1040
)

// ErrCorruptIndex reports a checkpoint list that UnmarshalCheckpoints cannot decode.
var ErrCorruptIndex = errors.New("inflate: corrupt checkpoint list")

// MarshalCheckpoints encodes cps (in the order Scan reported them) compactly, with
// their windows compressed, for storing in the cache.
func MarshalCheckpoints(cps []Checkpoint) ([]byte, error) {
	b := append([]byte(marshalMagic), marshalVersion)
	b = binary.AppendUvarint(b, uint64(len(cps)))
	var windows bytes.Buffer
	zw, err := flate.NewWriter(&windows, flate.DefaultCompression)
	if err != nil {
		return nil, fmt.Errorf("inflate: marshal: %w", err)
	}
	var prev Checkpoint
	for i := range cps {
		cp := &cps[i]
		if err := cp.validate(); err != nil {
			return nil, fmt.Errorf("inflate: marshal checkpoint %d: %w", i, err)
		}
		if cp.In < prev.In || cp.Out < prev.Out {
			return nil, fmt.Errorf("inflate: marshal checkpoint %d: %w: offsets go backwards", i, ErrCheckpoint)
		}
		var flags byte
		if cp.Header {
			flags |= flagHeader
		}
		b = append(b, flags)
		b = binary.AppendUvarint(b, uint64(cp.In-prev.In))
		b = binary.AppendUvarint(b, uint64(cp.Out-prev.Out))
		if !cp.Header {
			b = append(b, cp.Bit)
			b = binary.AppendUvarint(b, uint64(cp.MemberLen))
			b = binary.LittleEndian.AppendUint32(b, cp.CRC)
			if _, err := zw.Write(cp.Window); err != nil {
				return nil, fmt.Errorf("inflate: marshal: %w", err)
			}
		}
		prev = *cp
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("inflate: marshal: %w", err)
	}
	b = binary.AppendUvarint(b, uint64(windows.Len()))
	b = append(b, windows.Bytes()...)
	return binary.LittleEndian.AppendUint32(b, crc32.ChecksumIEEE(b)), nil
}

// UnmarshalCheckpoints decodes what MarshalCheckpoints encoded. Any other input gives
// an error wrapping ErrCorruptIndex; memory use is bounded by what the input decodes to.
func UnmarshalCheckpoints(b []byte) ([]Checkpoint, error) {
	if len(b) < len(marshalMagic)+1+4 || string(b[:len(marshalMagic)]) != marshalMagic {
		return nil, fmt.Errorf("%w: no header", ErrCorruptIndex)
	}
	if v := b[len(marshalMagic)]; v != marshalVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", ErrCorruptIndex, v, marshalVersion)
	}
	body, sum := b[:len(b)-4], binary.LittleEndian.Uint32(b[len(b)-4:])
	if crc32.ChecksumIEEE(body) != sum {
		return nil, fmt.Errorf("%w: checksum mismatch", ErrCorruptIndex)
	}
	d := decoder{b: body[len(marshalMagic)+1:]}
	cps, winLen := d.records()
	if d.err != nil {
		return nil, d.err
	}
	compLen := d.uvarint("windows length")
	if d.err == nil && compLen != uint64(len(d.b)) {
		d.fail("windows section of %d bytes, %d left", compLen, len(d.b))
	}
	if d.err == nil && winLen > uint64(len(d.b))*maxDeflateRatio+1024 {
		d.fail("%d window bytes cannot come from %d compressed bytes", winLen, len(d.b))
	}
	if d.err != nil {
		return nil, d.err
	}
	// Windows are allocated as the stream yields them: garbage fails before it can
	// make this allocate much more than it decodes.
	zr := flate.NewReader(bytes.NewReader(d.b))
	for i := range cps {
		if cps[i].Header {
			continue
		}
		w := make([]byte, min(cps[i].MemberLen, WindowSize))
		if _, err := io.ReadFull(zr, w); err != nil {
			return nil, fmt.Errorf("%w: window %d: %v", ErrCorruptIndex, i, err)
		}
		cps[i].Window = w
	}
	if n, err := zr.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		return nil, fmt.Errorf("%w: windows: trailing data", ErrCorruptIndex)
	}
	return cps, nil
}

// decoder reads the records of a checkpoint list; the first failure sticks in err.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: "+format, append([]any{ErrCorruptIndex}, args...)...)
	}
}

func (d *decoder) byte(what string) byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.fail("%s: truncated", what)
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("%s: bad varint", what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

// offset reads a uvarint that must fit an int64 when added to base.
func (d *decoder) offset(what string, base int64) int64 {
	v := d.uvarint(what)
	if d.err == nil && v > uint64(1<<62)-uint64(base) {
		d.fail("%s: %d out of range", what, v)
		return 0
	}
	return base + int64(v)
}

// records decodes the checkpoint records and returns them with the total length of
// their windows.
func (d *decoder) records() ([]Checkpoint, uint64) {
	count := d.uvarint("count")
	if d.err == nil && count > uint64(len(d.b))/3 { // a record takes at least 3 bytes
		d.fail("%d records in %d bytes", count, len(d.b))
	}
	if d.err != nil {
		return nil, 0
	}
	cps := make([]Checkpoint, 0, count)
	var prev Checkpoint
	var winLen uint64
	for i := range count {
		var cp Checkpoint
		flags := d.byte("flags")
		if flags&^flagHeader != 0 {
			d.fail("record %d: flags %#x", i, flags)
		}
		cp.Header = flags&flagHeader != 0
		cp.In = d.offset("in", prev.In)
		cp.Out = d.offset("out", prev.Out)
		if !cp.Header {
			cp.Bit = d.byte("bit")
			cp.MemberLen = d.offset("member length", 0)
			if len(d.b) < 4 {
				d.fail("record %d: truncated", i)
			} else if d.err == nil {
				cp.CRC = binary.LittleEndian.Uint32(d.b)
				d.b = d.b[4:]
			}
		}
		if d.err != nil {
			return nil, 0
		}
		var n int64 // the window's bytes come later, after all records
		if !cp.Header {
			n = min(cp.MemberLen, WindowSize)
		}
		if err := cp.validateWindow(int(n)); err != nil {
			d.fail("record %d: %v", i, err)
			return nil, 0
		}
		winLen += uint64(n)
		cps = append(cps, cp)
		prev = cp
	}
	return cps, winLen
}
