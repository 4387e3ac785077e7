package resolver

import (
	"context"
	"errors"
	"net/http"
	"strconv"
)

// Resolve returns the descriptor a tag or digest reference points to. A tag is resolved by
// a HEAD request and the answer is kept for the tag TTL; past it, or when the request
// fails because the registry is unavailable, the last known answer is served while the
// registry counts as down. A negative answer (ErrNotFound or ErrDenied) is kept for the tag
// TTL too, and served the same way, so that looking up deeper names under a repository
// (where each name is first tried as a tag) does not repeat the HEAD. A digest reference is
// answered from the DocStore when the document is there, else by one HEAD, and kept
// forever.
func (c *Client) Resolve(ctx context.Context, r Ref) (Descriptor, error) {
	if r.Digest != "" {
		return c.resolveDigest(ctx, r)
	}
	if !tagRE.MatchString(r.Tag) {
		return Descriptor{}, notFoundf("%s: %q is not a valid tag", r.repoRef(), r.Tag)
	}
	key := r.String()
	ep := c.endpointFor(r.Registry)
	c.mu.Lock()
	cached, ok := c.tags[key]
	c.mu.Unlock()
	now := c.now()
	if ok && (now.Sub(cached.at) < c.tagTTL || ep.isDown(now)) {
		return cached.desc, cached.err
	}
	v, err := c.flight.do(ctx, "head "+key, func(ctx context.Context) (any, error) {
		return c.head(ctx, r, r.Tag, key)
	})
	if err != nil {
		if ok && errors.Is(err, ErrUnavailable) {
			c.log.Warn("serving stale tag answer", "ref", key, "digest", cached.desc.Digest, "cached_err", cached.err, "err", err)
			return cached.desc, cached.err
		}
		if errors.Is(err, ErrNotFound) || errors.Is(err, ErrDenied) {
			c.mu.Lock()
			c.tags[key] = tagAnswer{err: err, at: c.now()}
			c.sweepNegativeLocked()
			c.mu.Unlock()
		}
		return Descriptor{}, err
	}
	d := v.(Descriptor)
	c.mu.Lock()
	c.tags[key] = tagAnswer{desc: d, at: c.now()}
	c.mu.Unlock()
	return d, nil
}

// resolveDigest answers a digest reference.
func (c *Client) resolveDigest(ctx context.Context, r Ref) (Descriptor, error) {
	if !validDigest(r.Digest) {
		return Descriptor{}, notFoundf("%s: not a valid sha256 digest", r)
	}
	key := r.repoRef().String() + "@" + r.Digest
	c.mu.Lock()
	d, ok := c.digests[key]
	c.mu.Unlock()
	if ok {
		return d, nil
	}
	if b, err := c.docs.Get(r.Digest); err == nil && sha256Digest(b) == r.Digest {
		// Known document: its descriptor needs no request. The repository is not checked:
		// content addressing makes the answer the same wherever the bytes live.
		d = Descriptor{MediaType: docMediaType(b, ""), Digest: r.Digest, Size: int64(len(b))}
	} else {
		v, err := c.flight.do(ctx, "head "+key, func(ctx context.Context) (any, error) {
			return c.head(ctx, r, r.Digest, key)
		})
		if err != nil {
			return Descriptor{}, err
		}
		d = v.(Descriptor)
	}
	c.mu.Lock()
	c.digests[key] = d
	c.mu.Unlock()
	return d, nil
}

// head resolves reference (a tag or a digest) of r's repository with a HEAD request. A
// registry that does not send Docker-Content-Digest is asked with a GET, and the bytes
// hashed (and kept: they are a verified document).
func (c *Client) head(ctx context.Context, r Ref, reference, what string) (Descriptor, error) {
	var d Descriptor
	var size int64
	var serr error
	lim := c.pullLimit(r.Registry)
	err := c.pull(ctx, r, request{
		method:  http.MethodHead,
		accept:  acceptManifests,
		what:    what,
		observe: func(resp *http.Response) { lim.observe(c, resp.Header) },
	}, "/v2/"+r.Repo+"/manifests/"+reference, func(resp *http.Response) error {
		resp.Body.Close()
		d = Descriptor{MediaType: contentType(resp.Header), Digest: resp.Header.Get("Docker-Content-Digest")}
		size, serr = strconv.ParseInt(resp.Header.Get("Content-Length"), 10, 64)
		d.Size = size
		if r.Digest != "" && validDigest(d.Digest) && d.Digest != r.Digest {
			return invalidf("%s: registry answered digest %s", what, d.Digest)
		}
		return nil
	})
	if err != nil {
		return Descriptor{}, err
	}
	if validDigest(d.Digest) && serr == nil && size > 0 && d.MediaType != "" {
		return d, nil
	}
	c.log.Debug("HEAD lacks digest, size or type; using GET", "ref", what)
	b, ct, err := c.get(ctx, r, "/manifests/"+reference, acceptManifests, maxDocument, what, r.Digest)
	if err != nil {
		return Descriptor{}, err
	}
	got := sha256Digest(b)
	c.putDoc(got, b)
	return Descriptor{MediaType: docMediaType(b, ct), Digest: got, Size: int64(len(b))}, nil
}

// minSweep is the number of cached tag answers below which expired negative answers are
// kept.
const minSweep = 1024

// sweepNegativeLocked drops expired negative tag answers once the cache has doubled since
// the last sweep, so that lookups of names that are no tags (a crawl, a shell's
// completion) do not grow it without bound; the cost is amortised over the insertions.
// c.mu must be held.
func (c *Client) sweepNegativeLocked() {
	if len(c.tags) < max(c.sweepAt, minSweep) {
		return
	}
	now := c.now()
	for k, a := range c.tags {
		if a.err != nil && now.Sub(a.at) >= c.tagTTL {
			delete(c.tags, k)
		}
	}
	c.sweepAt = 2 * len(c.tags)
}
