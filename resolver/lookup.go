package resolver

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Lookup resolves one child name of a name directory (DESIGN.md section 1):
//
//   - at a registry's root, a host-like name ("ghcr.io", "localhost:5000") is that
//     registry's root;
//   - "sha256:<hex>" and "<tag>@sha256:<hex>" are digest references (the tag is ignored);
//   - a name is a tag if a HEAD of that tag succeeds;
//   - else a deeper name if the catalog knows such a prefix or the deeper name's tags/list
//     answers; a registry with neither catalog nor fixed depth gets a lazy name directory;
//   - else ErrNotFound (invalid names included).
//
// When the registry is unavailable, the answer comes from what is cached (see
// lookupOffline): names the catalog or earlier answers know, and lazy name directories
// while the registry counts as down.
//
// Docker Hub has no catalog and two-level names: a root name is a directory (the
// repository library/<name>, a namespace, or both); under it a name is a tag of
// library/<name> or the repository <name>/<child>; under a two-level name only tags and
// digests exist.
func (c *Client) Lookup(ctx context.Context, n Name, child string) (Child, error) {
	if child == "" || child == "." || child == ".." || strings.ContainsAny(child, "/\x00") {
		return Child{}, notFoundf("%s: %q is not a valid name", n, child)
	}
	ep := c.endpointFor(n.Registry)
	if ep.nameErr != nil {
		return Child{}, ep.nameErr
	}
	if n.Path == "" && IsHost(child) {
		if !validHost(child) {
			return Child{}, notFoundf("%q is not a valid registry host", child)
		}
		return Child{Kind: KindName, Name: Name{Registry: CanonicalRegistry(child)}}, nil
	}
	repo, isRepo := c.repoOf(ep, n)
	tag, digest, isDigest, err := parseDigestChild(child)
	if err != nil {
		return Child{}, fmt.Errorf("%s: %w", n, err)
	}
	if isDigest {
		if !isRepo {
			return Child{}, notFoundf("%s: a digest needs a repository", n)
		}
		r := Ref{Registry: ep.reg, Repo: repo, Tag: tag, Digest: digest}
		d, err := c.Resolve(ctx, r)
		if err != nil {
			return Child{}, err
		}
		ep.see(n.Path)
		return Child{Kind: KindTag, Ref: r, Desc: d}, nil
	}

	var tagErr error
	if isRepo && tagRE.MatchString(child) {
		r := Ref{Registry: ep.reg, Repo: repo, Tag: child}
		d, err := c.Resolve(ctx, r)
		switch {
		case err == nil:
			ep.see(n.Path)
			return Child{Kind: KindTag, Ref: r, Desc: d}, nil
		case errors.Is(err, ErrNotFound) || errors.Is(err, ErrDenied):
			tagErr = err
		case errors.Is(err, ErrUnavailable):
			return c.lookupOffline(ep, n, child, err)
		default:
			return Child{}, err
		}
	}
	notFound := func() error {
		if tagErr != nil {
			return tagErr
		}
		return notFoundf("%s: no tag or repository %q", n, child)
	}
	if !componentRE.MatchString(child) || (ep.hub && n.depth() >= 2) {
		return Child{}, notFound()
	}
	deeper := n.child(child)
	if ep.hub && n.depth() == 0 {
		return Child{Kind: KindName, Name: deeper}, nil
	}
	if known, err := c.catalogKnows(ctx, ep, deeper.Path); errors.Is(err, ErrUnavailable) {
		return c.lookupOffline(ep, n, child, err)
	} else if err != nil {
		return Child{}, err
	} else if known {
		return Child{Kind: KindName, Name: deeper}, nil
	}
	deeperRepo, _ := c.repoOf(ep, deeper)
	_, exists, err := c.tagList(ctx, ep, deeper, deeperRepo)
	if errors.Is(err, ErrUnavailable) {
		return c.lookupOffline(ep, n, child, err)
	} else if err != nil {
		return Child{}, err
	}
	if exists {
		return Child{Kind: KindName, Name: deeper}, nil
	}
	if ep.hub {
		return Child{}, notFound()
	}
	_, hasCatalog, err := c.catalog(ctx, ep)
	if errors.Is(err, ErrUnavailable) {
		return c.lookupOffline(ep, n, child, err)
	} else if err != nil {
		return Child{}, err
	}
	if hasCatalog {
		return Child{}, notFound()
	}
	return Child{Kind: KindName, Name: deeper}, nil // lazy: neither catalog nor fixed depth
}

// lookupOffline decides what child of n is when the registry could not be asked (cause is
// an ErrUnavailable error), from what is known without a request:
//
//   - a deeper name that the catalog (however stale) or the repositories seen so far know,
//     as a repository or a prefix of one, is that name directory;
//   - else, while the registry counts as down, any validly spelled name that the cached tag
//     list of n does not name as a tag is a lazy name directory: it lists nothing that is
//     not cached, but digest references under it resolve from the DocStore, so that a
//     fresh mount serves cached images by digest while the registry is unreachable
//     (Child.Offline is set: the name may be a tag once the registry answers);
//   - else cause.
func (c *Client) lookupOffline(ep *endpoint, n Name, child string, cause error) (Child, error) {
	if !componentRE.MatchString(child) || (ep.hub && n.depth() >= 2) {
		return Child{}, cause
	}
	deeper := n.child(child)
	if c.knownName(ep, deeper.Path) {
		c.log.Debug("registry unavailable; name known from the catalog or names seen", "name", deeper, "err", cause)
		return Child{Kind: KindName, Name: deeper}, nil
	}
	if ep.isDown(c.now()) && !c.knownTag(ep, n, child) {
		c.log.Debug("registry down; lazy name directory", "name", deeper, "err", cause)
		return Child{Kind: KindName, Name: deeper, Offline: true}, nil
	}
	return Child{}, cause
}

// knownName reports, without a request, whether the cached catalog (of any age) or the
// names seen so far have the repository p or one under it.
func (c *Client) knownName(ep *endpoint, p string) bool {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	if ep.seen[p] {
		return true
	}
	for s := range ep.seen {
		if strings.HasPrefix(s, p+"/") {
			return true
		}
	}
	if ep.catalog != catalogYes {
		return false
	}
	i, found := slices.BinarySearch(ep.catalogRepos, p)
	return found || hasPrefixFrom(ep.catalogRepos, i, p+"/")
}

// knownTag reports, without a request, whether the cached tag list of n (of any age) has
// the tag t.
func (c *Client) knownTag(ep *endpoint, n Name, t string) bool {
	repo, ok := c.repoOf(ep, n)
	if !ok {
		return false
	}
	c.mu.Lock()
	a, ok := c.tagLists[ep.reg+"/"+repo]
	c.mu.Unlock()
	if !ok {
		return false
	}
	_, found := slices.BinarySearch(a.tags, t)
	return found
}

// catalogKnows reports whether the catalog has the repository p or one under it.
func (c *Client) catalogKnows(ctx context.Context, ep *endpoint, p string) (bool, error) {
	repos, ok, err := c.catalog(ctx, ep)
	if err != nil || !ok {
		return false, err
	}
	i, found := slices.BinarySearch(repos, p)
	if found {
		return true, nil
	}
	return hasPrefixFrom(repos, i, p+"/"), nil
}

// hasPrefixFrom reports whether a sorted slice holds a string with prefix at or after i.
// Names sort so that "p/..." follows "p" but may come after "p-x" or "p.x", so scan the
// short run of names that share p.
func hasPrefixFrom(repos []string, i int, prefix string) bool {
	base := strings.TrimSuffix(prefix, "/")
	for ; i < len(repos) && strings.HasPrefix(repos[i], base); i++ {
		if strings.HasPrefix(repos[i], prefix) {
			return true
		}
	}
	return false
}
