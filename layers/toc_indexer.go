package layers

import (
	"context"
	"errors"
)

// build indexes one layer: from its TOC when its annotations pin one or its blob ends
// with a footer, else (or when the TOC is unusable) with a full pass.
func (ix *Indexer) build(ctx context.Context, s Source) (*Index, error) {
	anchored := TOCAnchored(s.Annotations)
	if !anchored && s.PinnedTOCOnly {
		return ix.fullPass(ctx, s)
	}
	x, err := BuildTOCIndex(ctx, s.Blob, s.Digest, s.Annotations, ix.log)
	switch {
	case err == nil:
		if !anchored {
			// Nothing in the manifest pins this TOC: its chunks are checked
			// against it, but it is taken as the registry serves it.
			ix.log.Info("layer indexed from a TOC no annotation pins", "digest", s.Digest, "format", x.Format)
		}
		return x, nil
	case ctx.Err() != nil:
		return nil, err
	case anchored && !errors.Is(err, ErrNoTOC):
		return nil, err // a TOC that fails its annotation, or a broken registry
	case anchored:
		ix.log.Info("layer annotated with a TOC has none usable; indexing it whole", "digest", s.Digest, "err", err)
	case !errors.Is(err, ErrNoTOC):
		// A footer that is not one, or a failed read: the full pass
		// reads every byte and checks the digest, and tells.
		ix.log.Debug("layer's end is no usable TOC; indexing it whole", "digest", s.Digest, "err", err)
	}
	return ix.fullPass(ctx, s)
}
