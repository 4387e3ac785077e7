package layers

import (
	"archive/tar"
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
)

// maxRecorded bounds the header bytes kept for one entry. archive/tar refuses PAX
// headers and GNU long names over 1 MiB, so a valid entry never comes close.
const maxRecorded = 4 << 20

// countingReader counts the bytes archive/tar consumes, so that an entry's data offset
// is the count when Next returns (archive/tar does not read ahead), and records the raw
// header blocks of the current entry from recFrom on, for the sparse maps archive/tar
// does not expose. Seek (forward only) lets archive/tar skip entry data without copying
// it.
type countingReader struct {
	r       *bufio.Reader
	n       int64  // bytes consumed so far
	recFrom int64  // record bytes at stream offsets >= recFrom
	rec     []byte // recorded bytes, rec[0] at offset recFrom
	recOver bool   // more than maxRecorded bytes were offered: rec is incomplete
}

// record starts a new recording at stream offset from.
func (c *countingReader) record(from int64) {
	c.recFrom, c.rec, c.recOver = from, c.rec[:0], false
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if end := c.n + int64(n); end > c.recFrom && !c.recOver {
		skip := max(0, c.recFrom-c.n)
		if int64(len(c.rec))+int64(n)-skip > maxRecorded {
			c.recOver = true
		} else {
			c.rec = append(c.rec, p[skip:n]...)
		}
	}
	c.n += int64(n)
	return n, err
}

// Seek skips forward from the current position; other uses fail.
func (c *countingReader) Seek(off int64, whence int) (int64, error) {
	if whence != io.SeekCurrent || off < 0 {
		return c.n, errors.New("layers: countingReader seeks forward only")
	}
	for off > 0 {
		d, err := c.r.Discard(int(min(off, 1<<30)))
		c.n += int64(d)
		off -= int64(d)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return c.n, err
		}
	}
	return c.n, nil
}

// walkTar lists the entries of the tar stream in r, in archive order. It stops at the
// end-of-archive marker (or at a clean end of input) and leaves the rest of r unread.
func walkTar(r *bufio.Reader) ([]Entry, error) {
	cr := &countingReader{r: r}
	tr := tar.NewReader(cr)
	var entries []Entry
	var hdrStart int64 // where the next header block starts
	for {
		cr.record(hdrStart)
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return entries, nil
		}
		if err != nil && !errors.Is(err, tar.ErrInsecurePath) {
			return nil, fmt.Errorf("tar header at %d: %w", hdrStart, err)
		}
		data := cr.n
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			hdrStart = roundUp512(data) // archive/tar consumed the records
			continue
		}
		e := entryFromHeader(hdr, data)
		physEnd := data
		if !headerOnly(hdr.Typeflag) {
			physEnd += hdr.Size
		}
		if isSparse(hdr) {
			frags, end, err := sparseMap(hdr, cr, hdrStart, data)
			if err != nil {
				return nil, fmt.Errorf("tar entry %q at %d: sparse map: %w", hdr.Name, hdrStart, err)
			}
			e.Sparse, physEnd = frags, end
			e.Typeflag = tar.TypeReg
		}
		entries = append(entries, e)
		hdrStart = roundUp512(physEnd)
	}
}

func roundUp512(n int64) int64 { return (n + 511) &^ 511 }

// headerOnly reports the types whose data section archive/tar ignores.
func headerOnly(typ byte) bool {
	switch typ {
	case tar.TypeLink, tar.TypeSymlink, tar.TypeChar, tar.TypeBlock, tar.TypeDir, tar.TypeFifo:
		return true
	}
	return false
}

func entryFromHeader(hdr *tar.Header, data int64) Entry {
	e := Entry{
		Name:     hdr.Name,
		Typeflag: hdr.Typeflag,
		Linkname: hdr.Linkname,
		Mode:     hdr.Mode & 07777,
		UID:      hdr.Uid,
		GID:      hdr.Gid,
		Size:     hdr.Size,
		ModTime:  hdr.ModTime,
		Devmajor: hdr.Devmajor,
		Devminor: hdr.Devminor,
		Offset:   data,
	}
	if e.Typeflag == tar.TypeCont {
		e.Typeflag = tar.TypeReg // POSIX: a contiguous file is a regular file
	}
	if headerOnly(e.Typeflag) {
		e.Size = 0
	}
	for k, v := range hdr.PAXRecords {
		if name, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
			if e.Xattrs == nil {
				e.Xattrs = make(map[string]string)
			}
			e.Xattrs[name] = v
		}
	}
	return e
}
