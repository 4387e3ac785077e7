package tree

import "time"

// Entry is one tar entry of a layer, as the layer index records it (after PAX and GNU
// header processing). It mirrors layers.Entry minus the data location, which the caller
// keeps: a Node refers back to its entry by layer and entry index.
type Entry struct {
	Name     string // as in the archive, not cleaned
	Typeflag byte   // tar.TypeReg, TypeDir, TypeSymlink, TypeLink, TypeChar, TypeBlock, TypeFifo
	Linkname string // symlink target as stored, or hardlink target name
	Mode     int64  // permission and special bits (07777) as in the header
	UID, GID int
	Size     int64 // logical size of a regular file
	ModTime  time.Time
	// Devmajor and Devminor are the device numbers of a character or block device.
	Devmajor, Devminor int64
	Xattrs             map[string]string // from PAX SCHILY.xattr.*; usually nil
}
