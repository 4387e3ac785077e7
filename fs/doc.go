// Package fs presents a container registry as a read-only FUSE file system,
// built on go-fuse's Inode API (github.com/hanwen/go-fuse/v2/fs).
//
// The tree is
//
//	/                                 repositories of the default registry
//	/<host>/                          another registry, named by its host
//	/<repo>/                          tags of a repository (and deeper names)
//	/<repo>/<tag>/                    digest, index.json or manifest.json, platforms
//	/<repo>/<tag>/<os>/<arch>[/<v>]/  digest, manifest.json, config.json, rootfs/
//	/<repo>/sha256:<hex>/             the same as a tag directory, by digest
//
// Package fs holds no registry or decompression code: it asks package resolver
// for names and descriptors and package layers (through its merged trees) for
// file contents, and maps their errors to errnos in one place (errno).
//
// # Caching
//
// Everything addressed by digest is immutable, so the kernel may keep its
// entries, attributes and pages for as long as it likes: such nodes carry long
// timeouts and files open with FOPEN_KEEP_CACHE. A tag directory's children
// depend on what the tag points to now, so their entries expire after the tag
// TTL; the resolver keeps the tag's answer for the same time.
//
// # Inode numbers
//
// Inode numbers are hashes of a node's identity (for instance the platform
// manifest digest and a path in its merged tree), so they are stable across
// lookups and remounts, distinct for distinct files, and shared by hard links.
//
// # Interrupts
//
// go-fuse cancels an operation's context when the calling process gets a
// signal. Work that other callers may share (resolving a tag, indexing a
// layer) runs on its own context in the packages below; an interrupted caller
// gets EINTR alone.
package fs
