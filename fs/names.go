package fs

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/regfs/regfs/resolver"
)

// nameDir is /, /<host>/ and /<name>/ above the tags: a registry's
// repositories and namespaces, and a repository's tags. It is safe for
// concurrent use (immutable).
type nameDir struct {
	gofs.Inode
	m    *mount
	name resolver.Name
	root bool // the mount's root: also resolves /<host>/
}

var (
	_ gofs.NodeLookuper       = (*nameDir)(nil)
	_ gofs.NodeOpendirHandler = (*nameDir)(nil)
	_ gofs.NodeGetattrer      = (*nameDir)(nil)
	_ gofs.NodeStatfser       = (*nameDir)(nil)
)

func (d *nameDir) ino() uint64 {
	if d.root {
		return 1
	}
	return ino("name", d.name.Registry, d.name.Path)
}

// Getattr reports a read-only directory.
func (d *nameDir) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	dirAttr(&out.Attr, d.ino())
	out.SetTimeout(expiry(d.m.tagTTL))
	return 0
}

// Statfs reports an empty read-only file system.
func (d *nameDir) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	statfs(out)
	return 0
}

// entries lists the directory: deeper names and tags, sorted.
func (d *nameDir) entries(ctx context.Context) ([]dirEntry, syscall.Errno) {
	l, err := d.m.res.List(ctx, d.name)
	if err != nil {
		return nil, errno(d.m.log, err, "listing failed", "registry", d.name.Registry, "name", d.name.Path)
	}
	es := make([]dirEntry, 0, len(l.Children)+len(l.Tags))
	for _, c := range l.Children {
		n := resolver.Name{Registry: d.name.Registry, Path: join(d.name.Path, c)}
		es = append(es, d.nameEntry(n, c))
	}
	for _, t := range l.Tags {
		ref := resolver.Ref{Registry: d.name.Registry, Repo: d.name.Path, Tag: t}
		es = append(es, d.tagEntry(ref, t))
	}
	return sortEntries(es), 0
}

func (d *nameDir) nameEntry(n resolver.Name, base string) dirEntry {
	m := d.m
	return dirEntry{
		name: base, mode: syscall.S_IFDIR, ttl: m.tagTTL,
		ino:  ino("name", n.Registry, n.Path),
		node: func() gofs.InodeEmbedder { return &nameDir{m: m, name: n} },
	}
}

func (d *nameDir) tagEntry(ref resolver.Ref, base string) dirEntry {
	m := d.m
	return dirEntry{
		name: base, mode: syscall.S_IFDIR, ttl: m.tagTTL,
		ino:  ino("tag", ref.Registry, ref.Repo, ref.Tag, ref.Digest),
		node: func() gofs.InodeEmbedder { return &tagDir{m: m, ref: ref} },
	}
}

// OpendirHandle lists the directory once per open.
func (d *nameDir) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	es, e := d.entries(ctx)
	if e != 0 {
		return nil, 0, e
	}
	return &listing{parent: d.EmbeddedInode(), entries: es}, 0, 0
}

// Lookup resolves a child: a registry host (at the root), a tag or digest, or
// a deeper name.
func (d *nameDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if d.root && name == statsDirName {
		e := statsDirEntry(d.m)
		return e.child(ctx, d.EmbeddedInode(), out), 0
	}
	if d.root && d.m.res.IsHost(name) {
		e := d.nameEntry(resolver.Name{Registry: name}, name)
		return e.child(ctx, d.EmbeddedInode(), out), 0
	}
	c, err := d.m.res.Lookup(ctx, d.name, name)
	if err != nil {
		return nil, errno(d.m.log, err, "lookup failed", "registry", d.name.Registry, "name", join(d.name.Path, name))
	}
	var e dirEntry
	switch c.Kind {
	case resolver.KindName:
		e = d.nameEntry(c.Name, name)
		if c.Offline {
			e.ttl = 0 // made up while the registry is down: it may be a tag once it is up
		}
	default:
		e = d.tagEntry(c.Ref, name)
		if c.Ref.Digest != "" {
			e.ttl = forever
		}
	}
	return e.child(ctx, d.EmbeddedInode(), out), 0
}

// join joins two parts of a repository path.
func join(dir, base string) string {
	if dir == "" {
		return base
	}
	return dir + "/" + base
}

// statfs fills a file system's statistics: nothing free, names up to 255 bytes.
func statfs(out *fuse.StatfsOut) {
	*out = fuse.StatfsOut{Bsize: 4096, Frsize: 4096, NameLen: 255}
}
