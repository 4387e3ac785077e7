package fs

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/regfs/regfs/cache"
	"github.com/regfs/regfs/layers"
	"github.com/regfs/regfs/resolver"
)

// Config is what a mount is made of.
type Config struct {
	Resolver   *resolver.Client // names, tags, documents and blobs
	Store      *cache.Store     // documents, layer indexes and chunks; the counters
	TagTTL     time.Duration    // how long the kernel may keep what a tag points to
	AllowOther bool             // let other users read the mount (with default_permissions)
	// RebaseSymlinks presents absolute symlink targets under their rootfs/.
	RebaseSymlinks bool
	// PinnedTOCOnly reads a layer from its eStargz or zstd:chunked TOC only where
	// the layer's annotations pin the TOC (see WithPinnedTOCOnly).
	PinnedTOCOnly bool
	Logger        *slog.Logger // causes of EIO and EACCES; nil discards them
}

// Mounted is a live mount: its FUSE server and its counters.
type Mounted struct {
	*fuse.Server
	m *mount
}

// Stats returns what the mount has cost so far.
func (m *Mounted) Stats() Stats { return m.m.stats() }

// Mount mounts the registry tree at dir and serves it in the background
// until it is unmounted. Root mounts directly (mount(2)); other users go
// through fusermount3. A process that reads its own mount (a test) must call
// WaitMount on the result first: it runs go-fuse's poll hack, without which
// the Go runtime's epoll registration of a file on the mount can deadlock
// against the server in the same process.
func Mount(dir string, c Config) (*Mounted, error) {
	log := c.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	indexer := layers.NewIndexer(c.Store.Digests(cache.KindIndex), log)
	var imgOpts []ImagesOption
	if c.PinnedTOCOnly {
		imgOpts = append(imgOpts, WithPinnedTOCOnly())
	}
	images := NewImages(c.Resolver, c.Store, indexer, log, imgOpts...)
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", dir, err)
	}
	m := &mount{
		res: c.Resolver, rootfs: images, store: c.Store, tagTTL: c.TagTTL, log: log,
		mountpoint: abs, rebase: c.RebaseSymlinks,
	}
	root := &nameDir{m: m, name: c.Resolver.Root(), root: true}
	opts := mountOptions(c.AllowOther, log)
	if os.Geteuid() != 0 {
		opts.MountOptions.DirectMount = false
	}
	// Not gofs.Mount: its WaitMount opens a file on the new mount (go-fuse's
	// poll hack, for processes that poll their own FUSE files, which regfs
	// never does). A daemon killed while that open is in flight can never
	// exit: the open waits, uninterruptibly, for an answer only the dying
	// process could give, and the mount hangs. mount(2) (or fusermount3) is
	// done when NewServer returns; requests wait until Serve answers INIT.
	server, err := fuse.NewServer(gofs.NewNodeFS(root, opts), dir, &opts.MountOptions)
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", dir, err)
	}
	go server.Serve()
	return &Mounted{Server: server, m: m}, nil
}
