package layers

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
	"time"

	"github.com/regfs/regfs/layers/inflate"
)

// indexMagic opens a marshalled Index; the byte after it is the version. Version 2 added
// the blob chunk digests: a stored index of another version is rebuilt.
const (
	indexMagic   = "regfsidx"
	indexVersion = 2
)

// ErrBadIndex is returned by UnmarshalBinary for bytes that are not a valid index.
var ErrBadIndex = errors.New("layers: malformed index")

// MarshalBinary encodes the index compactly: varints, names prefix-compressed against
// the previous entry's, gzip windows compressed, a CRC-32C at the end.
func (x *Index) MarshalBinary() ([]byte, error) {
	e := encoder{b: make([]byte, 0, 64+len(x.Entries)*48)}
	e.b = append(e.b, indexMagic...)
	e.b = append(e.b, indexVersion)
	e.str(x.Digest)
	e.b = append(e.b, byte(x.Format))
	e.uvarint(uint64(x.Size))
	e.uvarint(uint64(x.span))
	e.uvarint(uint64(len(x.Entries)))
	var prevName string
	var prevOff int64
	for i := range x.Entries {
		en := &x.Entries[i]
		p := commonPrefix(prevName, en.Name)
		e.uvarint(uint64(p))
		e.str(en.Name[p:])
		prevName = en.Name
		e.b = append(e.b, en.Typeflag)
		e.str(en.Linkname)
		e.varint(en.Mode)
		e.varint(int64(en.UID))
		e.varint(int64(en.GID))
		e.varint(en.Size)
		e.varint(en.ModTime.Unix())
		e.uvarint(uint64(en.ModTime.Nanosecond()))
		e.varint(en.Devmajor)
		e.varint(en.Devminor)
		keys := make([]string, 0, len(en.Xattrs))
		for k := range en.Xattrs {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		e.uvarint(uint64(len(keys)))
		for _, k := range keys {
			e.str(k)
			e.str(en.Xattrs[k])
		}
		e.varint(en.Offset - prevOff)
		prevOff = en.Offset
		if en.Sparse == nil {
			e.uvarint(0)
		} else {
			e.uvarint(uint64(len(en.Sparse)) + 1)
			for _, f := range en.Sparse {
				e.varint(f.Logical)
				e.varint(f.Length)
				e.varint(f.Physical - en.Offset)
			}
		}
	}
	switch x.Format {
	case FormatGzip:
		cps, err := inflate.MarshalCheckpoints(x.checkpoints)
		if err != nil {
			return nil, fmt.Errorf("layers: marshal index %s: %w", x.Digest, err)
		}
		e.str(string(cps))
	case FormatZstd:
		e.uvarint(uint64(len(x.frames)))
		var prev frameStart
		for _, f := range x.frames {
			e.varint(f.In - prev.In)
			e.varint(f.Out - prev.Out)
			prev = f
		}
	case FormatEStargz, FormatZstdChunked:
		x.marshalTOC(&e) // toc_marshal.go
	}
	x.marshalBlobChunks(&e) // blobchunks.go
	e.b = binary.LittleEndian.AppendUint32(e.b, crc32.Checksum(e.b, crcTable))
	return e.b, nil
}

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// UnmarshalBinary decodes an index written by MarshalBinary. Malformed input gives an
// error wrapping ErrBadIndex, never a panic, and never an index that could make a
// Layer read outside its stream.
func (x *Index) UnmarshalBinary(b []byte) error {
	y, err := unmarshalIndex(b)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadIndex, err)
	}
	*x = *y
	return nil
}

func unmarshalIndex(b []byte) (*Index, error) {
	if len(b) < len(indexMagic)+1+4 || string(b[:len(indexMagic)]) != indexMagic {
		return nil, errors.New("bad magic")
	}
	if v := b[len(indexMagic)]; v != indexVersion {
		return nil, fmt.Errorf("version %d, want %d", v, indexVersion)
	}
	body, sum := b[:len(b)-4], binary.LittleEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, crcTable) != sum {
		return nil, errors.New("checksum mismatch")
	}
	d := decoder{b: body[len(indexMagic)+1:]}
	x := &Index{Digest: d.str(), Format: Format(d.byte())}
	x.Size = d.nonNeg()
	x.span = d.nonNeg()
	n := d.count(16) // an entry takes at least 16 bytes
	x.Entries = make([]Entry, n)
	var prevName string
	var prevOff int64
	for i := range x.Entries {
		en := &x.Entries[i]
		p := d.uvarint()
		if p > uint64(len(prevName)) {
			d.fail("name prefix")
			break
		}
		en.Name = prevName[:p] + d.str()
		prevName = en.Name
		en.Typeflag = d.byte()
		en.Linkname = d.str()
		en.Mode = d.varint()
		en.UID = int(d.varint())
		en.GID = int(d.varint())
		en.Size = d.varint()
		sec, nsec := d.varint(), d.uvarint()
		if nsec >= 1e9 {
			d.fail("mtime")
		}
		en.ModTime = time.Unix(sec, int64(nsec))
		en.Devmajor = d.varint()
		en.Devminor = d.varint()
		if nx := d.count(2); nx > 0 {
			en.Xattrs = make(map[string]string, nx)
			for range nx {
				k := d.str()
				en.Xattrs[k] = d.str()
			}
		}
		en.Offset = prevOff + d.varint()
		prevOff = en.Offset
		if ns := d.count(3); ns > 0 {
			en.Sparse = make([]Fragment, ns-1)
			for j := range en.Sparse {
				en.Sparse[j] = Fragment{Logical: d.varint(), Length: d.varint(), Physical: en.Offset + d.varint()}
			}
		}
		if d.err != nil {
			break
		}
	}
	switch x.Format {
	case FormatTar:
	case FormatGzip:
		if raw := d.str(); d.err == nil {
			cps, err := inflate.UnmarshalCheckpoints([]byte(raw))
			if err != nil {
				return nil, fmt.Errorf("checkpoints: %w", err)
			}
			x.checkpoints = cps
		}
	case FormatZstd:
		x.frames = make([]frameStart, d.count(2))
		var prev frameStart
		for i := range x.frames {
			prev = frameStart{In: prev.In + d.varint(), Out: prev.Out + d.varint()}
			x.frames[i] = prev
		}
	case FormatEStargz, FormatZstdChunked:
		x.unmarshalTOC(&d) // toc_marshal.go
	default:
		return nil, fmt.Errorf("unknown format %d", x.Format)
	}
	x.unmarshalBlobChunks(&d) // blobchunks.go
	if d.err != nil {
		return nil, d.err
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("%d trailing bytes", len(d.b))
	}
	if err := x.validate(); err != nil {
		return nil, err
	}
	return x, nil
}

// validate checks the invariants a Layer relies on.
func (x *Index) validate() error {
	if x.Size < 0 || x.span < 0 {
		return errors.New("negative size")
	}
	for i := range x.Entries {
		en := &x.Entries[i]
		if en.Size < 0 || en.Offset < 0 || en.Offset > x.Size {
			return fmt.Errorf("entry %d: bad size or offset", i)
		}
		if en.Sparse == nil {
			if en.Size > x.Size-en.Offset {
				return fmt.Errorf("entry %d: data past the end of the stream", i)
			}
			continue
		}
		var end int64
		for _, f := range en.Sparse {
			if f.Logical < end || f.Length <= 0 || f.Logical > en.Size || f.Length > en.Size-f.Logical ||
				f.Physical < 0 || f.Physical > x.Size || f.Length > x.Size-f.Physical {
				return fmt.Errorf("entry %d: bad sparse fragment", i)
			}
			end = f.Logical + f.Length
		}
	}
	for i, cp := range x.checkpoints {
		if cp.In < 0 || cp.Out < 0 || cp.Out > x.Size || cp.Bit > 7 ||
			(i == 0 && cp.Out != 0) || (i > 0 && (cp.Out < x.checkpoints[i-1].Out || cp.In < x.checkpoints[i-1].In)) {
			return fmt.Errorf("checkpoint %d out of order", i)
		}
	}
	if x.Format == FormatGzip && len(x.checkpoints) == 0 {
		return errors.New("gzip index without checkpoints")
	}
	for i, f := range x.frames {
		if f.In < 0 || f.Out < 0 || f.Out > x.Size ||
			(i == 0 && f.Out != 0) || (i > 0 && (f.Out < x.frames[i-1].Out || f.In <= x.frames[i-1].In)) {
			return fmt.Errorf("frame %d out of order", i)
		}
	}
	if x.Format == FormatZstd && len(x.frames) == 0 {
		return errors.New("zstd index without frames")
	}
	if err := x.validateBlobChunks(); err != nil { // blobchunks.go
		return err
	}
	return x.validateTOC() // toc_marshal.go
}

func commonPrefix(a, b string) int {
	n := min(len(a), len(b))
	for i := range n {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

type encoder struct{ b []byte }

func (e *encoder) uvarint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) varint(v int64)   { e.b = binary.AppendVarint(e.b, v) }
func (e *encoder) str(s string)     { e.uvarint(uint64(len(s))); e.b = append(e.b, s...) }

// decoder reads what encoder wrote; the first error sticks and later reads return zero.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("bad %s", what)
	}
	d.b = nil
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("uvarint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) nonNeg() int64 {
	v := d.uvarint()
	if v > 1<<62 {
		d.fail("size")
		return 0
	}
	return int64(v)
}

// count reads a count of items that take at least minSize bytes each.
func (d *decoder) count(minSize int) int {
	v := d.uvarint()
	if v > uint64(len(d.b)/minSize)+1 {
		d.fail("count")
		return 0
	}
	return int(v)
}

func (d *decoder) byte() byte {
	if len(d.b) == 0 {
		d.fail("byte")
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) str() string {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail("string")
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}
