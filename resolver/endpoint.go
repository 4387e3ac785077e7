package resolver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// catalogState says whether a registry offers /v2/_catalog.
type catalogState uint8

const (
	catalogUnknown catalogState = iota
	catalogYes
	catalogNo
)

// endpoint is the state of one registry. Safe for concurrent use.
type endpoint struct {
	reg     string        // canonical registry name
	host    string        // API host[:port]
	scheme  string        // "http" or "https"
	hub     bool          // Docker Hub: library/, two levels, no catalog
	regName name.Registry // RegistryStr() == host, for the auth transports
	authRes authn.Resource
	nameErr error // the host is not a valid registry name

	mu           sync.Mutex
	challenge    *transport.Challenge    // answer of GET /v2/; guarded by mu
	clients      map[string]*http.Client // by token scope; guarded by mu
	downUntil    time.Time               // guarded by mu
	downCause    string                  // guarded by mu
	catalog      catalogState            // guarded by mu
	catalogRepos []string                // sorted; guarded by mu
	catalogAt    time.Time               // guarded by mu
	seen         map[string]bool         // name paths that answered as repositories; guarded by mu
}

// newEndpoint builds the state of registry reg (canonical).
func (c *Client) newEndpoint(reg string) *endpoint {
	ep := &endpoint{reg: reg, host: reg, clients: map[string]*http.Client{}, seen: map[string]bool{}}
	if reg == hubName {
		ep.hub = true
		ep.host = c.hubHost
	}
	ep.scheme = "https"
	var opts []name.Option
	if loopbackOrLocal(ep.host) || c.insecure[strings.ToLower(ep.host)] || c.insecure[strings.ToLower(hostOnly(ep.host))] {
		ep.scheme = "http"
		opts = append(opts, name.Insecure)
	}
	ep.regName, ep.nameErr = name.NewRegistry(ep.host, opts...)
	ep.authRes = ep.regName
	if ep.hub {
		if r, err := name.NewRegistry(hubAuthHost); err == nil {
			ep.authRes = r
		}
	}
	if ep.nameErr != nil {
		ep.nameErr = notFoundf("registry %q: %v", reg, ep.nameErr)
	}
	return ep
}

// url returns the API URL of path (which starts with "/v2/").
func (ep *endpoint) url(path string) string { return ep.scheme + "://" + ep.host + path }

// downErr returns an ErrUnavailable error while the registry counts as down.
func (ep *endpoint) downErr(now time.Time) error {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	if now.Before(ep.downUntil) {
		return fmt.Errorf("%w: %s is down for %s more (%s)", ErrUnavailable, ep.reg,
			ep.downUntil.Sub(now).Round(time.Millisecond), ep.downCause)
	}
	return nil
}

// isDown reports whether the registry counts as down.
func (ep *endpoint) isDown(now time.Time) bool { return ep.downErr(now) != nil }

// markDown makes the registry count as down for the client's down time.
func (ep *endpoint) markDown(c *Client, cause string) {
	ep.mu.Lock()
	ep.downUntil = c.now().Add(c.downTime)
	ep.downCause = cause
	ep.mu.Unlock()
	c.log.Warn("registry marked down", "registry", ep.reg, "for", c.downTime, "cause", cause)
}

// see records that the name path p answered as a repository.
func (ep *endpoint) see(p string) {
	ep.mu.Lock()
	ep.seen[p] = true
	ep.mu.Unlock()
}

// client returns the authenticated HTTP client for a token scope ("repository:x:pull",
// "registry:catalog:*"), pinging the registry and exchanging a token on first use.
func (c *Client) client(ctx context.Context, ep *endpoint, scope string) (*http.Client, error) {
	if ep.nameErr != nil {
		return nil, ep.nameErr
	}
	ep.mu.Lock()
	hc, ok := ep.clients[scope]
	ep.mu.Unlock()
	if ok {
		return hc, nil
	}
	v, err := c.flight.do(ctx, "client "+ep.reg+" "+scope, func(ctx context.Context) (any, error) {
		return c.newClient(ctx, ep, scope)
	})
	if err != nil {
		return nil, err
	}
	return v.(*http.Client), nil
}

// newClient pings the registry (once per registry) and builds a client for scope.
func (c *Client) newClient(ctx context.Context, ep *endpoint, scope string) (*http.Client, error) {
	ch, err := c.ping(ctx, ep)
	if err != nil {
		return nil, err
	}
	auth, err := c.keychain.Resolve(ep.authRes)
	if err != nil {
		c.log.Warn("credentials lookup failed; going anonymous", "registry", ep.reg, "err", err)
		auth = authn.Anonymous
	}
	tok := &transport.Token{}
	if strings.EqualFold(ch.Scheme, "bearer") {
		if err := ep.downErr(c.now()); err != nil {
			return nil, err
		}
		pctx, p, stop := withProgress(ctx, c.timeout)
		t, err := transport.Exchange(pctx, ep.regName, auth, c.base, []string{scope}, ch)
		stalled := p.stalled.Load()
		stop()
		if err != nil {
			return nil, c.tokenErr(ctx, ep, scope, stalled, err)
		}
		tok = t
		if tok.Token == "" {
			tok.Token = tok.AccessToken
		}
	}
	rt, err := transport.FromToken(ep.regName, auth, c.base, ch, tok)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: auth transport: %v", ErrInvalid, ep.reg, err)
	}
	hc := newHTTPClient(rt)
	ep.mu.Lock()
	ep.clients[scope] = hc
	ep.mu.Unlock()
	return hc, nil
}

// tokenErr classes a failed token exchange.
func (c *Client) tokenErr(ctx context.Context, ep *endpoint, scope string, stalled bool, err error) error {
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("token for %s %s: %w", ep.reg, scope, ctx.Err())
	case stalled:
		c.stats.stalls.Add(1)
		ep.markDown(c, "token request stalled")
		return fmt.Errorf("token for %s %s: %w: no progress for %s", ep.reg, scope, ErrUnavailable, c.timeout)
	}
	var terr *transport.Error
	if errors.As(err, &terr) {
		se := classify(terr.StatusCode, nil, false)
		return fmt.Errorf("token for %s %s: %w (%v)", ep.reg, scope, se, err)
	}
	return fmt.Errorf("token for %s %s: %w: %v", ep.reg, scope, ErrUnavailable, err)
}

// ping asks GET /v2/ once per registry for its authentication challenge.
func (c *Client) ping(ctx context.Context, ep *endpoint) (*transport.Challenge, error) {
	ep.mu.Lock()
	ch := ep.challenge
	ep.mu.Unlock()
	if ch != nil {
		return ch, nil
	}
	hc := newHTTPClient(c.base)
	resp, err := c.do(ctx, ep, hc, request{
		method: http.MethodGet,
		url:    ep.url("/v2/"),
		ok:     func(s int) bool { return s == http.StatusOK || s == http.StatusUnauthorized },
		what:   ep.reg,
	})
	if err != nil {
		return nil, fmt.Errorf("ping: %w", err)
	}
	resp.Body.Close()
	ch = &transport.Challenge{Insecure: ep.scheme == "http"}
	if resp.StatusCode == http.StatusUnauthorized {
		ch.Scheme, ch.Parameters = parseChallenge(resp.Header.Values("WWW-Authenticate"))
	}
	ep.mu.Lock()
	ep.challenge = ch
	ep.mu.Unlock()
	return ch, nil
}

// parseChallenge picks a Bearer or Basic challenge from WWW-Authenticate headers and
// returns its scheme and parameters (keys lower-cased).
func parseChallenge(headers []string) (string, map[string]string) {
	var scheme string
	var params map[string]string
	for _, h := range headers {
		s, p := parseOneChallenge(h)
		if strings.EqualFold(s, "bearer") {
			return s, p
		}
		if scheme == "" || strings.EqualFold(s, "basic") {
			scheme, params = s, p
		}
	}
	if params == nil {
		params = map[string]string{}
	}
	return scheme, params
}

// parseOneChallenge parses `Scheme k=v, k2="quoted, \"v\""`.
func parseOneChallenge(h string) (string, map[string]string) {
	h = strings.TrimSpace(h)
	scheme, rest, _ := strings.Cut(h, " ")
	params := map[string]string{}
	for rest = strings.TrimSpace(rest); rest != ""; {
		k, after, ok := strings.Cut(rest, "=")
		if !ok {
			break
		}
		k = strings.ToLower(strings.TrimSpace(strings.TrimLeft(k, ", ")))
		after = strings.TrimSpace(after)
		var v string
		if strings.HasPrefix(after, `"`) {
			var b strings.Builder
			i := 1
			for ; i < len(after) && after[i] != '"'; i++ {
				if after[i] == '\\' && i+1 < len(after) {
					i++
				}
				b.WriteByte(after[i])
			}
			v, rest = b.String(), after[min(i+1, len(after)):]
		} else {
			end := strings.IndexByte(after, ',')
			if end < 0 {
				end = len(after)
			}
			v, rest = strings.TrimSpace(after[:end]), after[end:]
		}
		params[k] = v
		rest = strings.TrimSpace(strings.TrimLeft(strings.TrimSpace(rest), ","))
	}
	return scheme, params
}
