package fs

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/regfs/regfs/cache"
	"github.com/regfs/regfs/layers"
	"github.com/regfs/regfs/layers/tree"
	"github.com/regfs/regfs/resolver"
)

// Images builds platforms' merged file systems from their layers: each
// manifest once, each layer indexed once even when several platforms or
// images share it. It implements RootfsOpener and is safe for concurrent use.
type Images struct {
	res    *resolver.Client
	store  *cache.Store
	index  *layers.Indexer
	budget *layers.Budget // the memory all layers keep between reads
	log    *slog.Logger
	// pinnedTOCOnly: a TOC only where annotations pin it (WithPinnedTOCOnly).
	pinnedTOCOnly bool

	mu      sync.Mutex
	builds  map[string]*build        // guarded by mu; by manifest digest
	indexed map[string]*layers.Layer // guarded by mu; by layer digest
}

var _ RootfsOpener = (*Images)(nil)

// build is one manifest's merge, shared by its callers.
type build struct {
	done chan struct{}
	fs   *mergedFS // set before done is closed
	err  error     // set before done is closed
}

// decodedMemory is the bound of the memory the layers of a mount keep between reads
// (layers.Budget): four layers' decoded units at their default bound, enough for a walk
// of two platforms side by side (diff -r) or a scanner reading a few layers at once.
const decodedMemory = 64 << 20

// An ImagesOption configures an Images.
type ImagesOption func(*Images)

// WithPinnedTOCOnly makes Images read a layer from its eStargz or zstd:chunked TOC only
// when the layer's annotations in its manifest pin that TOC; by default a TOC found at
// the end of an unannotated layer is used too (see layers.Source.PinnedTOCOnly).
func WithPinnedTOCOnly() ImagesOption { return func(im *Images) { im.pinnedTOCOnly = true } }

// NewImages returns an Images reading layers through store.
func NewImages(res *resolver.Client, store *cache.Store, index *layers.Indexer, log *slog.Logger, opts ...ImagesOption) *Images {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	im := &Images{
		res: res, store: store, index: index, budget: layers.NewBudget(decodedMemory), log: log,
		builds: map[string]*build{}, indexed: map[string]*layers.Layer{},
	}
	for _, o := range opts {
		o(im)
	}
	return im
}

// Rootfs returns the merged file system of manifest, building it on first
// use. The build runs on its own context, so an interrupted caller returns at
// once without cancelling it for the others; a failed build is forgotten so a
// later call tries again.
func (im *Images) Rootfs(ctx context.Context, ref resolver.Ref, manifest resolver.Descriptor) (Rootfs, error) {
	im.mu.Lock()
	b, ok := im.builds[manifest.Digest]
	if !ok {
		b = &build{done: make(chan struct{})}
		im.builds[manifest.Digest] = b
		go im.run(context.WithoutCancel(ctx), b, ref, manifest)
	}
	im.mu.Unlock()
	select {
	case <-b.done:
		if b.err != nil {
			return nil, b.err
		}
		return b.fs, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (im *Images) run(ctx context.Context, b *build, ref resolver.Ref, manifest resolver.Descriptor) {
	b.fs, b.err = im.merge(ctx, ref, manifest)
	if b.err != nil {
		im.mu.Lock()
		delete(im.builds, manifest.Digest)
		im.mu.Unlock()
	}
	close(b.done)
}

// merge indexes the manifest's layers in parallel and merges them.
func (im *Images) merge(ctx context.Context, ref resolver.Ref, manifest resolver.Descriptor) (*mergedFS, error) {
	man, _, err := im.res.Manifest(ctx, ref, manifest.Digest)
	if err != nil {
		return nil, err
	}
	fs := &mergedFS{layers: make([]*layers.Layer, len(man.Layers)), entries: make([][]layers.Entry, len(man.Layers))}
	errs := make([]error, len(man.Layers))
	var wg sync.WaitGroup
	for i, d := range man.Layers {
		wg.Go(func() {
			l, err := im.layer(ctx, ref, d)
			if err != nil {
				errs[i] = fmt.Errorf("layer %d (%s) of %s: %w", i, d.Digest, ref, err)
				return
			}
			fs.layers[i] = l
			fs.entries[i] = l.Index().Entries
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	in := make([][]tree.Entry, len(fs.entries))
	for i, es := range fs.entries {
		in[i] = treeEntries(es)
	}
	t, err := tree.Merge(in, im.log.With("image", ref.String(), "manifest", manifest.Digest))
	if err != nil {
		return nil, fmt.Errorf("merge %s: %w", ref, err)
	}
	fs.tree = t
	return fs, nil
}

// layer returns the indexed layer d, shared by every image that has it.
func (im *Images) layer(ctx context.Context, ref resolver.Ref, d resolver.Descriptor) (*layers.Layer, error) {
	im.mu.Lock()
	l, ok := im.indexed[d.Digest]
	im.mu.Unlock()
	if ok {
		return l, nil
	}
	src := im.res.BlobSource(ref, d.Digest, d.Size)
	// A full index pass streams the blob in the cache's coarse chunks; the
	// probe of its end for an eStargz or zstd:chunked footer reads the last
	// of them, which the pass of a plain layer then finds in the cache. A
	// layer with a pinned TOC is indexed from its footer and TOC alone, read
	// at the fine grain so that they cost about their own bytes.
	var passOpts []cache.BlobOption
	if layers.TOCAnchored(d.Annotations) {
		passOpts = fineChunks(layers.BlobChunkSize)
	}
	x, err := im.index.IndexSource(ctx, layers.Source{Digest: d.Digest, Blob: cache.NewBlob(im.store, src, d.Digest, d.Size, passOpts...),
		Annotations: d.Annotations, PinnedTOCOnly: im.pinnedTOCOnly})
	if err != nil {
		return nil, err
	}
	// Later reads fetch only the fine chunks they need (the grain of the
	// digests the index recorded, or of an index built from a TOC), taking
	// bytes from the pass's coarse chunks while the cache holds them. The
	// index pass checked the whole blob; each fetched chunk is checked
	// against the digests it recorded (a TOC's chunks against the TOC).
	grain := x.ChunkSize()
	if grain == 0 {
		grain = layers.BlobChunkSize
	}
	blob := cache.NewBlob(im.store, src, d.Digest, d.Size, append(fineChunks(grain), cache.WithVerify(x.VerifyChunk))...)
	l = layers.NewLayer(x, blob, decodedStore{im.store}, im.log, layers.WithBudget(im.budget))
	im.mu.Lock()
	if prev, ok := im.indexed[d.Digest]; ok {
		l = prev
	} else {
		im.indexed[d.Digest] = l
	}
	im.mu.Unlock()
	return l, nil
}

// fineChunks are the options of a Blob of chunks of size bytes that reads the
// coarse chunks (cache.DefaultChunkSize) of an index pass before fetching. An
// index recorded at the coarse size (older ones) gives a plain coarse Blob.
func fineChunks(size int64) []cache.BlobOption {
	return []cache.BlobOption{cache.WithChunkSize(size), cache.WithCoarse(cache.DefaultChunkSize)}
}

// treeEntries converts a layer's entries to the merge's input.
func treeEntries(es []layers.Entry) []tree.Entry {
	out := make([]tree.Entry, len(es))
	for i, e := range es {
		out[i] = tree.Entry{
			Name: e.Name, Typeflag: e.Typeflag, Linkname: e.Linkname, Mode: e.Mode,
			UID: e.UID, GID: e.GID, Size: e.Size, ModTime: e.ModTime,
			Devmajor: e.Devmajor, Devminor: e.Devminor, Xattrs: e.Xattrs,
		}
	}
	return out
}

// mergedFS is a platform's merged tree and the layers holding its bytes. It
// is immutable and safe for concurrent use.
type mergedFS struct {
	tree    *tree.Tree
	layers  []*layers.Layer
	entries [][]layers.Entry
}

// Tree returns the merged tree.
func (m *mergedFS) Tree() *tree.Tree { return m.tree }

// ReadAt reads regular file n's bytes from the layer that holds them.
func (m *mergedFS) ReadAt(ctx context.Context, n *tree.Node, p []byte, off int64) (int, error) {
	return m.layers[n.Layer].ReadAt(ctx, &m.entries[n.Layer][n.Entry], p, off)
}

// View returns regular file n's bytes [off, off+size) without a copy when its layer
// holds them in one piece (see layers.Layer.View: release once done); ok false: use
// ReadAt.
func (m *mergedFS) View(ctx context.Context, n *tree.Node, off, size int64) ([]byte, func(), bool, error) {
	return m.layers[n.Layer].View(ctx, &m.entries[n.Layer][n.Entry], off, size)
}

// ViewCached is View from memory only (see layers.Layer.ViewCached).
func (m *mergedFS) ViewCached(ctx context.Context, n *tree.Node, off, size int64) ([]byte, func(), bool) {
	return m.layers[n.Layer].ViewCached(ctx, &m.entries[n.Layer][n.Entry], off, size)
}

// ReadCached reads regular file n's bytes only from what its layer holds in
// memory (see layers.Layer.ReadCached).
func (m *mergedFS) ReadCached(ctx context.Context, n *tree.Node, p []byte, off int64) (int, bool) {
	return m.layers[n.Layer].ReadCached(ctx, &m.entries[n.Layer][n.Entry], p, off)
}

// decodedStore keeps decoded bytes of single-frame zstd layers in the cache.
type decodedStore struct{ s *cache.Store }

func (d decodedStore) Get(digest string, n int64) ([]byte, error) {
	return d.s.Get(cache.Key{Kind: cache.KindDecoded, Digest: digest, N: n})
}

func (d decodedStore) Put(digest string, n int64, b []byte) error {
	return d.s.Put(cache.Key{Kind: cache.KindDecoded, Digest: digest, N: n}, b)
}
