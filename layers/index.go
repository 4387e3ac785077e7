package layers

import (
	"time"

	"github.com/regfs/regfs/layers/inflate"
)

// Entry is one tar entry: its header after PAX and GNU processing, and where its data
// lives in the uncompressed tar stream.
type Entry struct {
	Name     string // as in the archive (after a PAX path or GNU long name), NOT cleaned
	Typeflag byte   // tar.TypeReg, TypeDir, TypeSymlink, TypeLink, TypeChar, TypeBlock, TypeFifo, ...
	Linkname string
	Mode     int64 // permission and special bits (07777) as in the header
	UID, GID int
	Size     int64 // logical size (sparse: the full size, holes included)
	ModTime  time.Time
	Devmajor int64
	Devminor int64
	Xattrs   map[string]string // from PAX SCHILY.xattr.* records
	Offset   int64             // offset of the entry's data in the uncompressed tar stream
	Sparse   []Fragment        // nil unless sparse: the data fragments; holes read as zeros
}

// Fragment is one data fragment of a sparse entry: Length bytes of the file at Logical
// are stored at Physical in the uncompressed tar stream. Fragments are sorted by
// Logical and do not overlap.
type Fragment struct{ Logical, Length, Physical int64 }

// Index is what one streaming pass learns of a layer: its entries and the restart
// points of its compressed stream. An Index is immutable once built. The index of an
// eStargz or zstd:chunked layer comes from its TOC instead (BuildTOCIndex), and its
// stream is synthetic: the files' data in TOC order, without tar headers.
type Index struct {
	Digest  string
	Format  Format
	Size    int64   // size of the uncompressed tar stream
	Entries []Entry // in archive order

	span        int64                // distance between restart points when built
	checkpoints []inflate.Checkpoint // gzip: sorted by Out, the first at Out 0
	frames      []frameStart         // zstd: sorted by Out, the first at Out 0
	toc         []tocChunk           // eStargz, zstd:chunked: contiguous from Out 0 to Size; see toc.go

	chunks blobChunks // digests of the compressed blob's chunks (full pass only); see blobchunks.go
}

// frameStart is a zstd restart point: a frame begins at byte In of the blob and
// decodes to the uncompressed stream from Out on.
type frameStart struct{ In, Out int64 }

// RestartPoints returns how many restart points (gzip checkpoints, zstd frame starts, or
// the chunks of a TOC layer) the index holds; a plain tar has none.
func (x *Index) RestartPoints() int {
	return len(x.checkpoints) + len(x.frames) + len(x.toc)
}
