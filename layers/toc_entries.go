package layers

import (
	"archive/tar"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
)

// tocChunk is one data chunk of a TOC layer: Len bytes of the index's synthetic stream
// at Out are the bytes from Inner on of the gzip member or zstd frame(s) that begin at
// blob offset In, and hash to Digest. The chunk's compressed bytes lie within [In, End):
// End is where the next chunk's member or frame begins (or the TOC).
type tocChunk struct {
	Out, Len int64
	In, End  int64
	Inner    int64
	Digest   string
}

// tocTypes maps TOC entry types to tar type flags.
var tocTypes = map[string]byte{
	"reg": tar.TypeReg, "dir": tar.TypeDir, "symlink": tar.TypeSymlink, "hardlink": tar.TypeLink,
	"char": tar.TypeChar, "block": tar.TypeBlock, "fifo": tar.TypeFifo,
}

// chunkTypeZeros marks a zstd:chunked chunk that is a run of zeros with no bytes in
// the blob. The estargz package's TOCEntry has no field for it, so a TOC holding
// such chunks is decoded a second time for that field (see zeroChunks).
const chunkTypeZeros = "zeros"

// indexFromTOC maps a parsed TOC to an Index. zeros lists the entries (by position in
// toc.Entries) that are zstd:chunked hole chunks; payloadEnd is where the file data
// ends in the blob. Landmark files of eStargz are left out, as stargz-snapshotter does.
func indexFromTOC(toc *estargz.JTOC, format Format, payloadEnd, blobSize int64, zeros map[int]bool) (*Index, error) {
	if toc == nil {
		return nil, errors.New("empty TOC")
	}
	if payloadEnd <= 0 || payloadEnd > blobSize {
		return nil, fmt.Errorf("data end %d outside the blob (%d bytes)", payloadEnd, blobSize)
	}
	isData := func(i int, e *estargz.TOCEntry) bool {
		return (e.Type == "reg" && e.Size > 0 || e.Type == "chunk") && !zeros[i]
	}
	// Where each data chunk's compressed bytes end: the start of the next distinct
	// member or frame. Offsets must not decrease.
	ends := make([]int64, len(toc.Entries))
	end, next := payloadEnd, payloadEnd
	for i := len(toc.Entries) - 1; i >= 0; i-- {
		e := toc.Entries[i]
		if e == nil {
			return nil, fmt.Errorf("entry %d: null", i)
		}
		if !isData(i, e) {
			continue
		}
		switch {
		case e.Offset <= 0 || e.Offset > next:
			return nil, fmt.Errorf("entry %d (%q): data offset %d out of order or outside [1, %d]", i, e.Name, e.Offset, next)
		case e.Offset < next:
			end, next = next, e.Offset
		}
		ends[i] = end
	}

	x := &Index{Format: format}
	var (
		cur       *Entry     // the regular file whose chunks are being read
		curDigest string     // its whole-file digest
		written   int64      // its bytes covered by chunks so far
		frags     []Fragment // its data fragments
		holes     bool       // it has a zeros chunk
		single    bool       // it is one chunk (the whole-file digest applies)
	)
	finish := func() error {
		if cur == nil {
			return nil
		}
		if written != cur.Size {
			return fmt.Errorf("%q: chunks cover %d of %d bytes", cur.Name, written, cur.Size)
		}
		cur.Offset = x.Size
		if len(frags) > 0 {
			cur.Offset = frags[0].Physical
		}
		if holes {
			cur.Sparse = append([]Fragment{}, frags...)
		}
		x.Entries = append(x.Entries, *cur)
		cur, frags, holes, written = nil, frags[:0], false, 0
		return nil
	}
	for i, e := range toc.Entries {
		if e.Type == "chunk" {
			if cur == nil {
				return nil, fmt.Errorf("entry %d: chunk %q without its file", i, e.Name)
			}
		} else {
			if err := finish(); err != nil {
				return nil, err
			}
			typ, ok := tocTypes[e.Type]
			if !ok {
				return nil, fmt.Errorf("entry %d (%q): unknown type %q", i, e.Name, e.Type)
			}
			en, err := entryFromTOC(e, typ)
			if err != nil {
				return nil, fmt.Errorf("entry %d (%q): %w", i, e.Name, err)
			}
			if typ != tar.TypeReg || en.Size == 0 {
				if !isLandmark(en) {
					en.Offset = x.Size
					x.Entries = append(x.Entries, en)
				}
				continue
			}
			if isLandmark(en) {
				continue // its chunk is never read
			}
			cur, curDigest = &en, e.Digest
			single = e.ChunkSize == 0 || e.ChunkSize == e.Size
		}
		// A chunk of cur: a reg entry's first or a "chunk" entry.
		size := e.ChunkSize
		if size == 0 {
			size = cur.Size - e.ChunkOffset // zero: to the end of the file
		}
		if e.ChunkOffset != written || size <= 0 || size > cur.Size-written {
			return nil, fmt.Errorf("entry %d (%q): chunk %d+%d does not follow %d bytes of %d", i, cur.Name, e.ChunkOffset, size, written, cur.Size)
		}
		written += size
		if zeros[i] {
			holes = true
			continue
		}
		if e.InnerOffset < 0 {
			return nil, fmt.Errorf("entry %d (%q): negative inner offset", i, cur.Name)
		}
		d := e.ChunkDigest
		if d == "" && single {
			d = curDigest
		}
		if d == "" {
			return nil, fmt.Errorf("%w: %q has a chunk without a digest", ErrNoTOC, cur.Name)
		}
		if _, _, err := parseDigest(d); err != nil {
			return nil, fmt.Errorf("entry %d (%q): %w", i, cur.Name, err)
		}
		x.toc = append(x.toc, tocChunk{Out: x.Size, Len: size, In: e.Offset, End: ends[i], Inner: e.InnerOffset, Digest: d})
		if n := len(frags); n > 0 && frags[n-1].Logical+frags[n-1].Length == e.ChunkOffset && frags[n-1].Physical+frags[n-1].Length == x.Size {
			frags[n-1].Length += size
		} else {
			frags = append(frags, Fragment{Logical: e.ChunkOffset, Length: size, Physical: x.Size})
		}
		x.Size += size
	}
	if err := finish(); err != nil {
		return nil, err
	}
	if err := x.validate(); err != nil {
		return nil, err
	}
	return x, nil
}

// entryFromTOC maps a TOC entry's metadata to an Entry (Offset and Sparse unset).
func entryFromTOC(e *estargz.TOCEntry, typ byte) (Entry, error) {
	en := Entry{
		Name: e.Name, Typeflag: typ, Linkname: e.LinkName, Mode: e.Mode & 07777,
		UID: e.UID, GID: e.GID, Devmajor: int64(e.DevMajor), Devminor: int64(e.DevMinor),
		ModTime: time.Unix(0, 0),
	}
	if typ == tar.TypeReg {
		if e.Size < 0 {
			return Entry{}, fmt.Errorf("negative size %d", e.Size)
		}
		en.Size = e.Size
	}
	if e.ModTime3339 != "" {
		t, err := time.Parse(time.RFC3339Nano, e.ModTime3339)
		if err != nil {
			return Entry{}, fmt.Errorf("modtime: %w", err)
		}
		en.ModTime = time.Unix(t.Unix(), int64(t.Nanosecond())) // as archive/tar gives it
	}
	if len(e.Xattrs) > 0 {
		en.Xattrs = make(map[string]string, len(e.Xattrs))
		for k, v := range e.Xattrs {
			en.Xattrs[k] = string(v)
		}
	}
	return en, nil
}

// isLandmark reports whether en is one of eStargz's prefetch landmark files, which
// mark the end of the prioritised files and are not part of the image's content.
func isLandmark(en Entry) bool {
	if en.Typeflag != tar.TypeReg {
		return false
	}
	switch strings.TrimPrefix(path.Clean("/"+en.Name), "/") {
	case estargz.PrefetchLandmark, estargz.NoPrefetchLandmark:
		return true
	}
	return false
}
