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
	store IndexStore
	log   *slog.Logger
	opts  []BuildOption

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
	return &Indexer{store: store, log: orDiscard(log), opts: opts, calls: make(map[string]*indexCall)}
}

// Index returns the index of the layer digest whose blob is b: from the store, or by
// joining or starting a build. The build runs on its own context (ctx's values without
// its cancellation; stalls are the blob source's to fail): a caller whose ctx ends
// returns ctx.Err() alone and the build goes on for the others and for the store.
func (ix *Indexer) Index(ctx context.Context, b BlobReader, digest string) (*Index, error) {
	return ix.IndexAnnotated(ctx, b, digest, nil)
}

// IndexAnnotated is Index for a layer whose manifest descriptor has annotations. A
// layer whose annotations pin an eStargz or zstd:chunked TOC is indexed from its TOC
// without reading its body (see BuildTOCIndex); any other layer, or one whose TOC turns
// out unusable (ErrNoTOC), with a full pass. The annotations of the first caller for a
// digest are the ones used.
func (ix *Indexer) IndexAnnotated(ctx context.Context, b BlobReader, digest string, annotations map[string]string) (*Index, error) {
	ix.mu.Lock()
	call, ok := ix.calls[digest]
	if !ok {
		call = &indexCall{done: make(chan struct{})}
		ix.calls[digest] = call
		go ix.run(context.WithoutCancel(ctx), b, digest, annotations, call)
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

func (ix *Indexer) run(ctx context.Context, b BlobReader, digest string, annotations map[string]string, call *indexCall) {
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
	call.x, call.err = ix.build(ctx, b, digest, annotations) // toc_indexer.go
	if call.err != nil {
		ix.log.Warn("layer index failed", "digest", digest, "err", call.err)
		purgeBlob(b, digest, ix.log) // blobchunks.go
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
