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
		if err == nil {
			ep.see(n.Path)
			return Child{Kind: KindTag, Ref: r, Desc: d}, nil
		}
		if !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrDenied) {
			return Child{}, err
		}
		tagErr = err
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
	if known, err := c.catalogKnows(ctx, ep, deeper.Path); err != nil {
		return Child{}, err
	} else if known {
		return Child{Kind: KindName, Name: deeper}, nil
	}
	deeperRepo, _ := c.repoOf(ep, deeper)
	_, exists, err := c.tagList(ctx, ep, deeper, deeperRepo)
	if err != nil {
		return Child{}, err
	}
	if exists {
		return Child{Kind: KindName, Name: deeper}, nil
	}
	if ep.hub {
		return Child{}, notFound()
	}
	_, hasCatalog, err := c.catalog(ctx, ep)
	if err != nil {
		return Child{}, err
	}
	if hasCatalog {
		return Child{}, notFound()
	}
	return Child{Kind: KindName, Name: deeper}, nil // lazy: neither catalog nor fixed depth
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
