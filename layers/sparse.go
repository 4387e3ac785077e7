package layers

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// GNU sparse PAX record names.
const (
	paxSparseMajor = "GNU.sparse.major"
	paxSparseMinor = "GNU.sparse.minor"
	paxSparseMap   = "GNU.sparse.map"
)

var errSparse = errors.New("malformed sparse map")

// isSparse reports whether archive/tar treated hdr as a sparse file (the same test as
// its handleSparseFile).
func isSparse(hdr *tar.Header) bool {
	if hdr.Typeflag == tar.TypeGNUSparse {
		return true
	}
	major, minor := hdr.PAXRecords[paxSparseMajor], hdr.PAXRecords[paxSparseMinor]
	switch {
	case major == "0" && (minor == "0" || minor == "1"), major == "1" && minor == "0":
		return true
	case major != "" || minor != "":
		return false
	}
	return hdr.PAXRecords[paxSparseMap] != ""
}

// sparseMap returns the data fragments of the sparse entry hdr, whose headers start at
// stream offset hdrStart (recorded in cr) and whose data archive/tar positioned at data,
// and the stream offset where the entry's data section ends.
func sparseMap(hdr *tar.Header, cr *countingReader, hdrStart, data int64) ([]Fragment, int64, error) {
	if cr.recOver || cr.recFrom != hdrStart {
		return nil, 0, fmt.Errorf("%w: headers too large", errSparse)
	}
	main, ext, dataOff, err := walkHeaders(cr.rec)
	if err != nil {
		return nil, 0, err
	}
	nb, ok := parseNumeric(main[124:136])
	if s, has := hdr.PAXRecords["size"]; has {
		nb, err = strconv.ParseInt(s, 10, 64)
		ok = err == nil
	}
	if !ok || nb < 0 {
		return nil, 0, fmt.Errorf("%w: bad size", errSparse)
	}
	physEnd := hdrStart + int64(dataOff) + nb
	var pairs []int64
	switch {
	case hdr.Typeflag == tar.TypeGNUSparse:
		pairs, err = oldGNUPairs(main, ext)
	case hdr.PAXRecords[paxSparseMajor] == "1":
		pairs, err = pax1Pairs(cr.rec[dataOff:data-hdrStart], hdr.PAXRecords)
	default:
		pairs, err = pax0Pairs(hdr.PAXRecords[paxSparseMap])
	}
	if err != nil {
		return nil, 0, err
	}
	frags, err := fragments(pairs, hdr.Size, data)
	if err != nil {
		return nil, 0, err
	}
	return frags, physEnd, nil
}

// walkHeaders walks the header blocks of one entry (PAX, GNU long name and the main
// header with its GNU sparse extensions) and returns the main header, the extension
// blocks and the offset in rec of the data section.
func walkHeaders(rec []byte) (main []byte, ext [][]byte, dataOff int, err error) {
	off := 0
	next := func() ([]byte, error) {
		if len(rec)-off < 512 {
			return nil, fmt.Errorf("%w: header blocks missing", errSparse)
		}
		blk := rec[off : off+512]
		off += 512
		return blk, nil
	}
	for {
		blk, err := next()
		if err != nil {
			return nil, nil, 0, err
		}
		if !tarChecksumOK(blk) {
			return nil, nil, 0, fmt.Errorf("%w: no header block where expected", errSparse)
		}
		switch blk[156] {
		case tar.TypeXHeader, tar.TypeXGlobalHeader, tar.TypeGNULongName, tar.TypeGNULongLink:
			size, ok := parseNumeric(blk[124:136])
			if !ok || size < 0 || size > int64(len(rec)) {
				return nil, nil, 0, fmt.Errorf("%w: bad extended header size", errSparse)
			}
			off += int(roundUp512(size))
			continue
		}
		main = blk
		more := blk[156] == tar.TypeGNUSparse && blk[482] != 0
		for more {
			x, err := next()
			if err != nil {
				return nil, nil, 0, err
			}
			ext = append(ext, x)
			more = x[504] != 0
		}
		return main, ext, off, nil
	}
}

// oldGNUPairs reads the (offset, length) pairs of an old GNU sparse header: four in the
// main header at 386, 21 in each extension block.
func oldGNUPairs(main []byte, ext [][]byte) ([]int64, error) {
	var pairs []int64
	add := func(b []byte, n int) error {
		for i := range n {
			s := b[i*24 : i*24+24]
			if s[0] == 0 {
				break
			}
			off, ok1 := parseNumeric(s[:12])
			length, ok2 := parseNumeric(s[12:])
			if !ok1 || !ok2 {
				return fmt.Errorf("%w: bad GNU sparse entry", errSparse)
			}
			pairs = append(pairs, off, length)
		}
		return nil
	}
	if err := add(main[386:], 4); err != nil {
		return nil, err
	}
	for _, x := range ext {
		if err := add(x, 21); err != nil {
			return nil, err
		}
	}
	return pairs, nil
}

// pax0Pairs parses a GNU.sparse.map record: "off,len,off,len,...". archive/tar already
// folded the 0.0 format's repeated GNU.sparse.offset/numbytes records into it.
func pax0Pairs(s string) ([]int64, error) {
	if s == "" {
		return nil, nil
	}
	fields := strings.Split(s, ",")
	if len(fields)%2 != 0 {
		return nil, fmt.Errorf("%w: odd number of fields", errSparse)
	}
	pairs := make([]int64, len(fields))
	for i, f := range fields {
		v, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", errSparse, err)
		}
		pairs[i] = v
	}
	return pairs, nil
}

// pax1Pairs parses the PAX 1.0 sparse map stored at the start of the data section:
// newline-terminated decimal numbers, the count first, padded to a block.
func pax1Pairs(b []byte, recs map[string]string) ([]int64, error) {
	next := func() (int64, error) {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			return 0, fmt.Errorf("%w: 1.0 map truncated", errSparse)
		}
		v, err := strconv.ParseInt(string(b[:i]), 10, 64)
		b = b[i+1:]
		if err != nil || v < 0 {
			return 0, fmt.Errorf("%w: 1.0 map: bad number", errSparse)
		}
		return v, nil
	}
	n, err := next()
	if err != nil {
		return nil, err
	}
	if n > int64(len(b))/2 {
		return nil, fmt.Errorf("%w: 1.0 map: count %d too large", errSparse, n)
	}
	pairs := make([]int64, 2*n)
	for i := range pairs {
		if pairs[i], err = next(); err != nil {
			return nil, err
		}
	}
	return pairs, nil
}

// fragments turns (offset, length) pairs into fragments packed one after another from
// stream offset data, dropping empty ones, and checks them against the logical size.
func fragments(pairs []int64, size, data int64) ([]Fragment, error) {
	frags := make([]Fragment, 0, len(pairs)/2)
	phys := data
	var end int64
	for i := 0; i+1 < len(pairs); i += 2 {
		off, length := pairs[i], pairs[i+1]
		if off < end || length < 0 || off > size || length > size-off {
			return nil, fmt.Errorf("%w: fragment %d+%d outside or out of order (size %d)", errSparse, off, length, size)
		}
		end = off + length
		if length == 0 {
			continue
		}
		frags = append(frags, Fragment{Logical: off, Length: length, Physical: phys})
		phys += length
	}
	return frags, nil
}

// parseNumeric parses a tar numeric field: octal (NUL or space padded) or GNU base-256.
func parseNumeric(b []byte) (int64, bool) {
	if len(b) > 0 && b[0]&0x80 != 0 {
		if b[0]&0x40 != 0 {
			return 0, false // negative
		}
		v := int64(b[0] & 0x3f)
		for _, c := range b[1:] {
			if v > (1<<55)-1 {
				return 0, false
			}
			v = v<<8 | int64(c)
		}
		return v, true
	}
	return parseOctal(b)
}

// parseOctal parses an octal field with optional leading spaces and trailing spaces or
// NULs; an empty field is 0.
func parseOctal(b []byte) (int64, bool) {
	b = bytes.TrimRight(b, " \x00")
	b = bytes.TrimLeft(b, " ")
	var v int64
	for _, c := range b {
		if c < '0' || c > '7' || v > (1<<60) {
			return 0, false
		}
		v = v<<3 | int64(c-'0')
	}
	return v, true
}
