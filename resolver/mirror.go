package resolver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// ParseMirror reads the flag form of a mirror, "[REGISTRY=]HOST[:PORT]": without
// "REGISTRY=" the mirror serves defaultRegistry ("" is Docker Hub). HOST may carry
// "https://" (the default) or "http://" (plain HTTP allowed, as --insecure does); a
// trailing "/" is dropped, any other path is refused. The registry comes back canonical
// ("docker.io" for Docker Hub's aliases), the host as it goes into Options.Mirrors.
func ParseMirror(s, defaultRegistry string) (registry, host string, err error) {
	registry, host, found := strings.Cut(strings.TrimSpace(s), "=")
	if !found {
		registry, host = defaultRegistry, registry
	}
	if registry == "" && !found {
		registry = hubName
	}
	if !validHost(registry) {
		return "", "", fmt.Errorf("mirror %q: registry %q is not a host[:port]", s, registry)
	}
	host, _, err = mirrorHost(host)
	if err != nil {
		return "", "", fmt.Errorf("mirror %q: %w", s, err)
	}
	return CanonicalRegistry(registry), host, nil
}

// mirrorHost splits an Options.Mirrors entry into the form kept there (scheme "http://"
// kept, "https://" and a trailing "/" dropped), its host[:port] and an error.
func mirrorHost(s string) (entry, host string, err error) {
	host = strings.TrimSuffix(s, "/")
	plain := false
	if rest, ok := strings.CutPrefix(strings.ToLower(host), "http://"); ok {
		host, plain = rest, true
	} else if rest, ok := strings.CutPrefix(strings.ToLower(host), "https://"); ok {
		host = rest
	}
	if !validHost(host) {
		return "", "", fmt.Errorf("mirror host %q is not [http[s]://]host[:port]", s)
	}
	host = strings.ToLower(host)
	if plain {
		return "http://" + host, host, nil
	}
	return host, host, nil
}

// setMirrors checks and keeps Options.Mirrors; called by New only.
func (c *Client) setMirrors(m map[string][]string) error {
	for reg, hosts := range m {
		if !validHost(reg) {
			return fmt.Errorf("resolver: mirrored registry %q is not a host[:port]", reg)
		}
		reg = CanonicalRegistry(reg)
		for _, h := range hosts {
			_, host, err := mirrorHost(h)
			if err != nil {
				return fmt.Errorf("resolver: mirror of %s: %w", reg, err)
			}
			if strings.HasPrefix(strings.ToLower(h), "http://") {
				c.insecure[host] = true
			}
			host = CanonicalRegistry(host)
			if host == reg {
				return fmt.Errorf("resolver: %s cannot be its own mirror", reg)
			}
			c.mirrors[reg] = append(c.mirrors[reg], host)
			c.mirrorOf[host] = true
		}
	}
	return nil
}

// pull performs one pull request of r's repository (a HEAD or GET of a manifest or blob)
// at path ("/v2/<repo>/..."): on each mirror of r's registry in order, then on the registry
// itself, the way containerd tries the hosts of hosts.toml. use judges a success response
// (and owns its body: it closes it unless it keeps it); its error, like a failed request,
// sends the pull to the next host. A mirror gets one attempt (the next host is its
// retry), its own credentials and token (never the registry's), and the query parameter
// ns=<registry> that containerd sends, so that a mirror serving several registries knows
// which one is meant. A mirror marked down is skipped. The registry's own error is the
// one returned when every host failed; the caller's context error ends the pull at once.
func (c *Client) pull(ctx context.Context, r Ref, rq request, path string, use func(*http.Response) error) error {
	up := c.endpointFor(r.Registry)
	for _, host := range c.mirrors[up.reg] {
		ep := c.endpointFor(host)
		if err := ep.downErr(c.now()); err != nil {
			c.stats.fallback.Add(1)
			c.log.Debug("mirror is down; skipping it", "mirror", ep.reg, "ref", rq.what, "err", err)
			continue
		}
		err := c.pullFrom(ctx, ep, r, rq, path+"?ns="+url.QueryEscape(up.reg), use)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return err
		}
		c.stats.fallback.Add(1)
		level := c.log.Info
		if errors.Is(err, ErrNotFound) {
			level = c.log.Debug // a mirror that lacks content is routine
		}
		level("mirror could not answer; trying the next host", "mirror", ep.reg, "registry", up.reg, "ref", rq.what, "err", err)
	}
	return c.pullFrom(ctx, up, r, rq, path, use)
}

// pullFrom performs rq on one host.
func (c *Client) pullFrom(ctx context.Context, ep *endpoint, r Ref, rq request, path string, use func(*http.Response) error) error {
	hc, err := c.client(ctx, ep, pullScope(r.Repo))
	if err != nil {
		return fmt.Errorf("%s: %w", rq.what, err)
	}
	rq.url = ep.url(path)
	resp, err := c.do(ctx, ep, hc, rq)
	if err != nil {
		return err
	}
	return use(resp)
}
