package fs

import (
	"context"
	"slices"
	"strings"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/regfs/regfs/resolver"
)

// tagDir is /<repo>/<tag>/ (or /<repo>/sha256:<hex>/): the tag's digest, its
// raw document, and the first components of its platforms' paths. What a tag
// points to is asked of the resolver on each use, which keeps the answer for
// the tag TTL. It is safe for concurrent use (immutable).
type tagDir struct {
	gofs.Inode
	m   *mount
	ref resolver.Ref
}

var (
	_ gofs.NodeLookuper       = (*tagDir)(nil)
	_ gofs.NodeOpendirHandler = (*tagDir)(nil)
	_ gofs.NodeGetattrer      = (*tagDir)(nil)
)

// image is what a tag or digest resolves to: its descriptor and platforms.
// It is immutable.
type image struct {
	ref       resolver.Ref
	desc      resolver.Descriptor
	platforms []resolver.PlatformEntry
	// ttl is how long entries that depend on this answer may be cached.
	ttl time.Duration
}

func (d *tagDir) resolve(ctx context.Context) (*image, syscall.Errno) {
	desc, err := d.m.res.Resolve(ctx, d.ref)
	if err != nil {
		return nil, errno(d.m.log, err, "resolve failed", "ref", d.ref.String())
	}
	ps, err := d.m.res.Platforms(ctx, d.ref, desc)
	if err != nil {
		return nil, errno(d.m.log, err, "platforms failed", "ref", d.ref.String(), "digest", desc.Digest)
	}
	ttl := d.m.tagTTL
	if d.ref.Tag == "" {
		ttl = forever
	}
	return &image{ref: d.ref, desc: desc, platforms: ps, ttl: ttl}, 0
}

// Getattr reports a read-only directory.
func (d *tagDir) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	dirAttr(&out.Attr, d.StableAttr().Ino)
	out.SetTimeout(expiry(d.m.tagTTL))
	return 0
}

func (d *tagDir) entries(ctx context.Context) ([]dirEntry, syscall.Errno) {
	img, e := d.resolve(ctx)
	if e != 0 {
		return nil, e
	}
	docName := "manifest.json"
	if img.desc.MediaType == resolver.MediaTypeOCIIndex || img.desc.MediaType == resolver.MediaTypeDockerList {
		docName = "index.json"
	}
	es := []dirEntry{
		bytesEntry(d.m, "digest", []byte(img.desc.Digest+"\n"), img.ttl, "tagdigest", img.desc.Digest),
		docEntry(d.m, docName, img.desc.Size, img.ttl, img.desc.Digest, func(ctx context.Context) ([]byte, error) {
			return d.m.res.Document(ctx, img.ref, img.desc.Digest)
		}),
	}
	es = append(es, platformEntries(d.m, img, nil)...)
	return sortEntries(es), 0
}

// OpendirHandle lists the directory once per open.
func (d *tagDir) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	es, e := d.entries(ctx)
	if e != 0 {
		return nil, 0, e
	}
	return &listing{parent: d.EmbeddedInode(), entries: es}, 0, 0
}

// Lookup finds a child, normalising platform names as containerd does.
func (d *tagDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	es, e := d.entries(ctx)
	if e != 0 {
		return nil, e
	}
	return lookupEntry(ctx, d.EmbeddedInode(), es, name, out)
}

// platformDir is /<repo>/<tag>/<os>[/<arch>[/<variant>]]/: deeper platform
// components, and where a platform's path ends, its digest, documents and
// rootfs/. It is safe for concurrent use (immutable).
type platformDir struct {
	gofs.Inode
	m      *mount
	img    *image
	prefix []string // the platform path (or a prefix of one) served here
	asked  []string // the path as looked up: prefix, or an alias (aarch64/v8)
}

var (
	_ gofs.NodeLookuper       = (*platformDir)(nil)
	_ gofs.NodeOpendirHandler = (*platformDir)(nil)
	_ gofs.NodeGetattrer      = (*platformDir)(nil)
)

// Getattr reports a read-only directory.
func (d *platformDir) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	dirAttr(&out.Attr, d.StableAttr().Ino)
	out.SetTimeout(forever)
	return 0
}

func (d *platformDir) entries() []dirEntry {
	es := platformEntries(d.m, d.img, d.prefix)
	for _, p := range d.img.platforms {
		if slices.Equal(p.Path, d.prefix) {
			es = append(es, leafEntries(d.m, d.img, p)...)
			break
		}
	}
	return sortEntries(es)
}

// OpendirHandle lists the directory.
func (d *platformDir) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	return &listing{parent: d.EmbeddedInode(), entries: d.entries()}, 0, 0
}

// Lookup finds a child: a listed one, or a platform under a name that
// normalises to a listed one (aarch64, x86_64, armhf, a default variant).
func (d *platformDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if ino, e := lookupEntry(ctx, d.EmbeddedInode(), d.entries(), name, out); e != syscall.ENOENT {
		return ino, e
	}
	want := append(slices.Clone(d.asked), name)
	if p, ok := resolver.MatchPlatform(d.img.platforms, want); ok {
		e := platformEntry(d.m, d.img, want, name)
		e.node = func() gofs.InodeEmbedder { return &platformDir{m: d.m, img: d.img, prefix: p.Path, asked: want} }
		return e.child(ctx, d.EmbeddedInode(), out), 0
	}
	return nil, syscall.ENOENT
}

// platformEntries lists the next path components of img's platforms below prefix.
func platformEntries(m *mount, img *image, prefix []string) []dirEntry {
	var es []dirEntry
	seen := map[string]bool{}
	for _, p := range img.platforms {
		if len(p.Path) <= len(prefix) || !slices.Equal(p.Path[:len(prefix)], prefix) {
			continue
		}
		c := p.Path[len(prefix)]
		if seen[c] {
			continue
		}
		seen[c] = true
		es = append(es, platformEntry(m, img, append(slices.Clone(prefix), c), c))
	}
	return es
}

// platformEntry is the directory of a platform path (or a prefix of one),
// listed as name.
func platformEntry(m *mount, img *image, path []string, name string) dirEntry {
	return dirEntry{
		name: name, mode: syscall.S_IFDIR, ttl: img.ttl,
		ino:  ino("platform", img.desc.Digest, strings.Join(path, "/")),
		node: func() gofs.InodeEmbedder { return &platformDir{m: m, img: img, prefix: path, asked: path} },
	}
}

// leafEntries are the files of one platform: digest, manifest.json,
// config.json and rootfs/. Everything here is addressed by digest.
func leafEntries(m *mount, img *image, p resolver.PlatformEntry) []dirEntry {
	md := p.Manifest.Digest
	ref := img.ref
	es := []dirEntry{
		bytesEntry(m, "digest", []byte(md+"\n"), forever, "digest", md),
		docEntry(m, "manifest.json", p.Manifest.Size, forever, md, func(ctx context.Context) ([]byte, error) {
			// Manifest refuses a document that is not an image manifest.
			_, raw, err := m.res.Manifest(ctx, ref, md)
			return raw, err
		}),
		docEntry(m, "config.json", -1, forever, md+"/config", func(ctx context.Context) ([]byte, error) {
			man, _, err := m.res.Manifest(ctx, ref, md)
			if err != nil {
				return nil, err
			}
			return m.res.Blob(ctx, ref, man.Config.Digest)
		}),
	}
	if m.rootfs != nil {
		r := &rootfsRef{m: m, ref: ref, manifest: p.Manifest, platform: strings.Join(p.Path, "/")}
		es = append(es, dirEntry{
			name: "rootfs", mode: syscall.S_IFDIR, ttl: forever,
			ino:  rootIno(md),
			node: func() gofs.InodeEmbedder { return &treeNode{r: r, id: rootNodeID} },
		})
	}
	return es
}

// lookupEntry makes the child named name of a listing, or gives ENOENT.
func lookupEntry(ctx context.Context, parent *gofs.Inode, es []dirEntry, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	e, ok := find(es, name)
	if !ok {
		return nil, syscall.ENOENT
	}
	if e.mode == syscall.S_IFREG && e.size < 0 {
		b, errno := e.node().(*docFile).bytes(ctx)
		if errno != 0 {
			return nil, errno
		}
		e.size = int64(len(b))
	}
	return e.child(ctx, parent, out), 0
}
