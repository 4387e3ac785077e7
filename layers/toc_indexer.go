package layers

import (
	"context"
	"errors"
)

// build indexes one layer: from its TOC when its annotations pin one, else (or when
// the TOC is unusable) with a full pass.
func (ix *Indexer) build(ctx context.Context, b BlobReader, digest string, annotations map[string]string) (*Index, error) {
	if TOCAnchored(annotations) {
		x, err := BuildTOCIndex(ctx, b, digest, annotations, ix.log)
		if !errors.Is(err, ErrNoTOC) {
			return x, err
		}
		ix.log.Info("layer annotated with a TOC has none usable; indexing it whole", "digest", digest, "err", err)
	}
	return BuildIndex(ctx, b, digest, ix.log, ix.opts...)
}
