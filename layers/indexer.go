package layers

import (
	"context"
	"log/slog"
	"sync"
)

// IndexStore keeps marshalled indexes by layer digest (the caller backs it with
// cache.Store, KindIndex). Get returns an error on a miss.
type IndexStore interface {
	Get(digest string) ([]byte, error)
	Put(digest string, b []byte) error
}

// Indexer builds the index of each layer digest once: concurrent callers join one
// build, and the result is kept in an IndexStore so that a remount or another image
// sharing the layer loads it instead of making a second pass. Safe for concurrent use.
type Indexer struct {
	store  IndexStore
	log    *slog.Logger
	opts   []BuildOption
	passes chan struct{} // a slot per full pass running (see maxPasses)

	mu    sync.Mutex
	calls map[string]*indexCall // guarded by mu; builds in flight by digest
}

type indexCall struct {
	done chan struct{}
	x    *Index // valid once done is closed
	err  error
}

// NewIndexer returns an Indexer over store (nil: nothing is kept). opts apply to every
// build.
func NewIndexer(store IndexStore, log *slog.Logger, opts ...BuildOption) *Indexer {
	return &Indexer{store: store, log: orDiscard(log), opts: opts, calls: make(map[string]*indexCall),
		passes: make(chan struct{}, maxPasses)}
}

// maxPasses is how many full passes an Indexer runs at once. Each holds its read-ahead
// and decoder buffers (about 10 MiB), and the passes of an image are asked for
// together: a 40-layer image's 40 passes at once peaked at 411-546 MiB of RSS. A pass
// inflates as fast as it reads, so a few at once keep the cores (and a link's
// parallel streams) busy.
const maxPasses = 4

// fullPass indexes s with BuildIndex once one of the Indexer's pass slots is free.
func (ix *Indexer) fullPass(ctx context.Context, s Source) (*Index, error) {
	select {
	case ix.passes <- struct{}{}:
	default:
		ix.log.Debug("layer index waits for a pass to end", "digest", s.Digest, "passes", maxPasses)
		select {
		case ix.passes <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	defer func() { <-ix.passes }()
	return BuildIndex(ctx, s.Blob, s.Digest, ix.log, ix.opts...)
}

// A Source is a layer as an Indexer reads it.
type Source struct {
	Digest string     // the layer's digest, "sha256:<hex>"
	Blob   BlobReader // the layer's blob
	// Annotations are the layer descriptor's in its manifest: they can pin a TOC.
	Annotations map[string]string
	// PinnedTOCOnly uses a TOC only if Annotations pin it: the blob's end is not
	// probed for a footer, and a layer whose TOC nothing pins is read whole (and
	// checked against its digest).
	PinnedTOCOnly bool
}

// Index returns the index of the layer digest whose blob is b, without annotations (see
// IndexSource).
func (ix *Indexer) Index(ctx context.Context, b BlobReader, digest string) (*Index, error) {
	return ix.IndexSource(ctx, Source{Digest: digest, Blob: b})
}

// IndexSource returns the index of layer s: from the store, or by joining or starting a
// build. The build runs on its own context (ctx's values without its cancellation;
// stalls are the blob source's to fail): a caller whose ctx ends returns ctx.Err() alone
// and the build goes on for the others and for the store. The Source of the first
// caller for a digest is the one read.
//
// An eStargz or zstd:chunked layer is indexed from its TOC without reading its body
// (see BuildTOCIndex): one whose annotations pin the TOC, or, failing those, one whose
// blob ends with a footer (one read at its end tells: a plain layer's full pass reads
// those bytes again, so a blob that keeps what it read, as cache.Blob does, fetches
// them once). Any other layer, or one whose TOC turns out unusable (ErrNoTOC), is
// indexed with a full pass.
func (ix *Indexer) IndexSource(ctx context.Context, s Source) (*Index, error) {
	digest := s.Digest
	ix.mu.Lock()
	call, ok := ix.calls[digest]
	if !ok {
		call = &indexCall{done: make(chan struct{})}
		ix.calls[digest] = call
		go ix.run(context.WithoutCancel(ctx), s, call)
	} else {
		ix.log.Debug("waiting for a layer index in progress", "digest", digest)
	}
	ix.mu.Unlock()
	select {
	case <-call.done:
		return call.x, call.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (ix *Indexer) run(ctx context.Context, s Source, call *indexCall) {
	digest := s.Digest
	defer func() {
		ix.mu.Lock()
		delete(ix.calls, digest)
		ix.mu.Unlock()
		close(call.done)
	}()
	if x := ix.load(digest); x != nil {
		call.x = x
		return
	}
	call.x, call.err = ix.build(ctx, s) // toc_indexer.go
	if call.err != nil {
		ix.log.Warn("layer index failed", "digest", digest, "err", call.err)
		purgeBlob(s.Blob, digest, ix.log) // blobchunks.go
		return
	}
	if ix.store == nil {
		return
	}
	raw, err := call.x.MarshalBinary()
	if err == nil {
		err = ix.store.Put(digest, raw)
	}
	if err != nil {
		ix.log.Warn("layer index not stored", "digest", digest, "err", err)
	}
}

// load returns the stored index of digest, or nil.
func (ix *Indexer) load(digest string) *Index {
	if ix.store == nil {
		return nil
	}
	raw, err := ix.store.Get(digest)
	if err != nil {
		return nil
	}
	x := new(Index)
	if err := x.UnmarshalBinary(raw); err != nil || x.Digest != digest {
		ix.log.Warn("stored layer index unusable, rebuilding", "digest", digest, "err", err)
		return nil
	}
	return x
}
