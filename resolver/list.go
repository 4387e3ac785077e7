package resolver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// maxPages bounds the pages of one listing: 1,000 pages of a registry's usual 100 (or
// more) entries each. A listing with more is refused with ErrInvalid.
const maxPages = 1000

// errListingDeadline is the cause of a listing's context ending at its hard deadline.
var errListingDeadline = errors.New("listing deadline")

// List returns the children of a name directory: the tags, if the name is a repository,
// and the next path components of repositories under it (from the catalog where the
// registry offers one, plus the repositories seen so far). Listings are cached for the tag
// TTL and served stale while the registry is down.
func (c *Client) List(ctx context.Context, n Name) (Listing, error) {
	ep := c.endpointFor(n.Registry)
	if ep.nameErr != nil {
		return Listing{}, ep.nameErr
	}
	var l Listing
	if repo, ok := c.repoOf(ep, n); ok {
		tags, _, err := c.tagList(ctx, ep, n, repo)
		if err != nil {
			return Listing{}, err
		}
		l.Tags = tags
	}
	if ep.hub && n.depth() >= 2 {
		return l, nil
	}
	repos, ok, err := c.catalog(ctx, ep)
	if err != nil {
		return Listing{}, err
	}
	set := map[string]bool{}
	if ok {
		addChildren(set, repos, n.Path)
	}
	ep.mu.Lock()
	addChildren(set, slices.Collect(maps.Keys(ep.seen)), n.Path)
	ep.mu.Unlock()
	l.Children = sortedKeys(set)
	return l, nil
}

// repoOf returns the API repository a name stands for, if it may be one: on Docker Hub a
// single name x is library/x and the root is none.
func (c *Client) repoOf(ep *endpoint, n Name) (string, bool) {
	switch {
	case n.Path == "":
		return "", false
	case ep.hub && n.depth() == 1:
		return "library/" + n.Path, true
	}
	return n.Path, true
}

// addChildren adds the next component after prefix of every path in paths.
func addChildren(set map[string]bool, paths []string, prefix string) {
	if prefix != "" {
		prefix += "/"
	}
	for _, p := range paths {
		rest, ok := strings.CutPrefix(p, prefix)
		if !ok || rest == "" {
			continue
		}
		first, _, _ := strings.Cut(rest, "/")
		set[first] = true
	}
}

// tagList returns the tags of repo (the API name of n); exists is false when the registry
// says there is no such repository (404, or a denial), which is no error here.
func (c *Client) tagList(ctx context.Context, ep *endpoint, n Name, repo string) ([]string, bool, error) {
	key := ep.reg + "/" + repo
	c.mu.Lock()
	cached, ok := c.tagLists[key]
	c.mu.Unlock()
	now := c.now()
	if ok && (now.Sub(cached.at) < c.tagTTL || ep.isDown(now)) {
		return cached.tags, cached.exists, nil
	}
	v, err := c.flight.do(ctx, "tags "+key, func(ctx context.Context) (any, error) {
		return c.fetchTags(ctx, ep, repo)
	})
	var a listAnswer
	switch {
	case err == nil:
		a = listAnswer{tags: v.([]string), exists: true}
	case errors.Is(err, ErrNotFound) || errors.Is(err, ErrDenied):
		a = listAnswer{tags: []string{}}
	case ok && errors.Is(err, ErrUnavailable):
		c.log.Warn("serving stale tag list", "repo", key, "err", err)
		return cached.tags, cached.exists, nil
	default:
		return nil, false, err
	}
	a.at = c.now()
	c.mu.Lock()
	c.tagLists[key] = a
	c.mu.Unlock()
	if a.exists {
		ep.see(n.Path)
	}
	return a.tags, a.exists, nil
}

// fetchTags reads every page of /v2/<repo>/tags/list.
func (c *Client) fetchTags(ctx context.Context, ep *endpoint, repo string) ([]string, error) {
	hc, err := c.client(ctx, ep, pullScope(repo))
	if err != nil {
		return nil, fmt.Errorf("tags of %s/%s: %w", ep.reg, repo, err)
	}
	set := map[string]bool{}
	err = c.paginate(ctx, ep, hc, ep.url("/v2/"+repo+"/tags/list"), ep.reg+"/"+repo+" tags", func(b []byte) error {
		var page struct {
			Tags []string `json:"tags"`
		}
		if err := json.Unmarshal(b, &page); err != nil {
			return err
		}
		for _, t := range page.Tags {
			if tagRE.MatchString(t) {
				set[t] = true
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return sortedKeys(set), nil
}

// catalog returns the registry's repositories from /v2/_catalog; ok is false when the
// registry offers no catalog (Docker Hub, or it answered 401/403/404 or another refusal,
// which is remembered).
func (c *Client) catalog(ctx context.Context, ep *endpoint) (repos []string, ok bool, err error) {
	if ep.hub {
		return nil, false, nil
	}
	ep.mu.Lock()
	state, cached, at := ep.catalog, ep.catalogRepos, ep.catalogAt
	ep.mu.Unlock()
	now := c.now()
	switch {
	case state == catalogNo:
		return nil, false, nil
	case state == catalogYes && (now.Sub(at) < c.tagTTL || ep.isDown(now)):
		return cached, true, nil
	}
	v, err := c.flight.do(ctx, "catalog "+ep.reg, func(ctx context.Context) (any, error) {
		return c.fetchCatalog(ctx, ep)
	})
	if err != nil {
		if errors.Is(err, ErrUnavailable) || ctx.Err() != nil {
			if state == catalogYes {
				c.log.Warn("serving stale catalog", "registry", ep.reg, "err", err)
				return cached, true, nil
			}
			return nil, false, err
		}
		c.log.Debug("registry offers no catalog", "registry", ep.reg, "err", err)
		ep.mu.Lock()
		ep.catalog = catalogNo
		ep.mu.Unlock()
		return nil, false, nil
	}
	repos = v.([]string)
	ep.mu.Lock()
	ep.catalog, ep.catalogRepos, ep.catalogAt = catalogYes, repos, c.now()
	ep.mu.Unlock()
	return repos, true, nil
}

// fetchCatalog reads every page of /v2/_catalog.
func (c *Client) fetchCatalog(ctx context.Context, ep *endpoint) ([]string, error) {
	hc, err := c.client(ctx, ep, "registry:catalog:*")
	if err != nil {
		return nil, fmt.Errorf("catalog of %s: %w", ep.reg, err)
	}
	set := map[string]bool{}
	err = c.paginate(ctx, ep, hc, ep.url("/v2/_catalog"), ep.reg+" catalog", func(b []byte) error {
		var page struct {
			Repositories []string `json:"repositories"`
		}
		if err := json.Unmarshal(b, &page); err != nil {
			return err
		}
		for _, r := range page.Repositories {
			set[r] = true
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return sortedKeys(set), nil
}

// paginate GETs first and every page its Link headers name (rel="next", relative or
// absolute, on the same scheme and host), one request per page, handing each body to page.
// A link back to a page already read, a link to another host, or more than maxPages pages
// is an ErrInvalid error.
//
// The whole listing is bounded in time, not only each page by the stall timeout: no page
// is asked for once the listing has run for one stall timeout (Options.Timeout, 30 s by
// default: the budget of a request's retries too), and a page still being read at twice
// the stall timeout is cut. Either way the listing fails with ErrUnavailable: a listing cut
// short is an error, never a partial list. (A page that stalls is still a stall: its own
// timer, started before the first bound, fires before the second and marks the registry
// down.)
func (c *Client) paginate(ctx context.Context, ep *endpoint, hc *http.Client, first, what string, page func([]byte) error) error {
	softEnd := c.now().Add(c.timeout)
	lctx, cancel := context.WithTimeoutCause(ctx, 2*c.timeout, errListingDeadline)
	defer cancel()
	cut := func(err error, pages int) error {
		if ctx.Err() == nil && errors.Is(context.Cause(lctx), errListingDeadline) {
			return fmt.Errorf("%s: %w: listing cut after %d pages and %s (%v)", what, ErrUnavailable, pages, 2*c.timeout, err)
		}
		return err
	}
	seen := map[string]bool{}
	next := first
	for i := 0; next != ""; i++ {
		switch {
		case seen[next]:
			return invalidf("%s: pagination loops (page %s asked again after %d pages)", what, next, i)
		case i >= maxPages:
			return invalidf("%s: more than %d pages", what, maxPages)
		case i > 0 && c.now().After(softEnd):
			return fmt.Errorf("%s: %w: listing not done after %d pages and %s", what, ErrUnavailable, i, c.timeout)
		}
		seen[next] = true
		resp, err := c.do(lctx, ep, hc, request{method: http.MethodGet, url: next, accept: "application/json", what: what})
		if err != nil {
			return cut(err, i)
		}
		b, err := readAll(lctx, resp.Body, maxListPage, what)
		resp.Body.Close()
		if err != nil {
			return cut(err, i)
		}
		if err := page(b); err != nil {
			return invalidf("%s: page %d: %v", what, i+1, err)
		}
		link := nextLink(resp.Header.Values("Link"))
		if link == "" {
			return nil
		}
		base, err := url.Parse(next)
		if err != nil {
			return invalidf("%s: %v", what, err)
		}
		u, err := base.Parse(link)
		if err != nil {
			return invalidf("%s: bad Link %q: %v", what, link, err)
		}
		if u.Scheme != base.Scheme || !strings.EqualFold(u.Host, base.Host) {
			// As go-containerregistry's validatePaginationURL: a Link is no way to make
			// the client ask another host.
			return invalidf("%s: Link %q leaves %s://%s", what, link, base.Scheme, base.Host)
		}
		next = u.String()
	}
	return nil
}

// nextLink returns the target of the rel="next" link among Link header values.
func nextLink(values []string) string {
	for _, v := range values {
		for _, part := range strings.Split(v, ",") {
			part = strings.TrimSpace(part)
			if !strings.HasPrefix(part, "<") {
				continue
			}
			end := strings.IndexByte(part, '>')
			if end < 0 {
				continue
			}
			for _, param := range strings.Split(part[end+1:], ";") {
				k, val, _ := strings.Cut(strings.TrimSpace(param), "=")
				if strings.EqualFold(k, "rel") && slices.Contains(strings.Fields(strings.Trim(val, `"`)), "next") {
					return part[1:end]
				}
			}
		}
	}
	return ""
}

func sortedKeys(set map[string]bool) []string {
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
