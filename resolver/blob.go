package resolver

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// BlobSource reads ranges of one layer blob from its registry: Range GETs through the
// repository's authenticated client, redirects followed (a CDN host never receives the
// registry's Authorization header: the auth transport adds it only for the registry's
// host), quick failures retried, body reads under the stall timeout. It implements
// cache.RangeSource. Safe for concurrent use.
type BlobSource struct {
	c      *Client
	ref    Ref
	digest string
	size   int64
}

// BlobSource returns the range source of blob digest (size bytes) of r's repository.
func (c *Client) BlobSource(r Ref, digest string, size int64) *BlobSource {
	return &BlobSource{c: c, ref: r.repoRef(), digest: digest, size: size}
}

// Digest returns the blob's digest.
func (s *BlobSource) Digest() string { return s.digest }

// Size returns the blob's size as its descriptor gave it.
func (s *BlobSource) Size() int64 { return s.size }

// Fetch returns a body of the blob starting at start <= off and covering at least
// [off, off+n) unless the blob ends first. A registry that ignores Range answers 200:
// then start is 0 and the body is the whole blob. The caller closes the body.
func (s *BlobSource) Fetch(ctx context.Context, off, n int64) (io.ReadCloser, int64, error) {
	what := s.ref.String() + "@" + s.digest
	if off < 0 || n <= 0 || (s.size > 0 && off >= s.size) {
		return nil, 0, invalidf("%s: range [%d, +%d) outside blob of %d bytes", what, off, n, s.size)
	}
	end := off + n - 1
	if s.size > 0 && end >= s.size {
		end = s.size - 1
	}
	var body io.ReadCloser
	var start int64
	err := s.c.pull(ctx, s.ref, request{
		method: http.MethodGet,
		rng:    fmt.Sprintf("bytes=%d-%d", off, end),
		what:   fmt.Sprintf("%s range %d-%d", what, off, end),
	}, "/v2/"+s.ref.Repo+"/blobs/"+s.digest, func(resp *http.Response) error {
		switch resp.StatusCode {
		case http.StatusOK:
			body, start = resp.Body, 0
			return nil
		case http.StatusPartialContent:
			st, err := contentRangeStart(resp.Header.Get("Content-Range"))
			if err != nil || st > off {
				resp.Body.Close()
				return invalidf("%s: asked bytes %d-%d, got Content-Range %q", what, off, end, resp.Header.Get("Content-Range"))
			}
			body, start = resp.Body, st
			return nil
		}
		resp.Body.Close()
		return fmt.Errorf("%s: %w: unexpected HTTP %d", what, ErrUnavailable, resp.StatusCode)
	})
	if err != nil {
		return nil, 0, err
	}
	return body, start, nil
}

// contentRangeStart parses the first byte position of "bytes start-end/total".
func contentRangeStart(v string) (int64, error) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(v), "bytes ")
	if !ok {
		return 0, fmt.Errorf("no bytes unit")
	}
	first, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, fmt.Errorf("no range")
	}
	return strconv.ParseInt(strings.TrimSpace(first), 10, 64)
}
