package faultproxy

import (
	"encoding/json"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/regfs/regfs/internal/testenv"
)

// Options configure a Proxy.
type Options struct {
	// Upstream is the registry's host:port (plain HTTP).
	Upstream string
	// Auth makes the proxy demand bearer tokens, which it issues itself at
	// /token to anyone (as an anonymous pull token service does): GET /v2/
	// without a token answers 401 with a Bearer challenge.
	Auth bool
	// CDNListen is the CDN's listen address; default "127.0.0.1:0" (the
	// registry's host name, another port). "127.0.0.2:0" makes it another
	// host, which some clients refuse to be redirected to (go-containerregistry's
	// SSRF check refuses redirects to another private address).
	CDNListen string
	// Seed seeds the source of [Rule.Prob] draws; the same seed and the same
	// order of requests give the same faults.
	Seed uint64
}

// Counters is a snapshot of what a Proxy saw and did.
type Counters struct {
	Requests     int64                  // registry API requests (token requests excluded)
	ByKind       map[testenv.Kind]int64 // registry API requests by kind of path
	Faults       map[string]int64       // faults applied, by Fault.String
	Tokens       int64                  // tokens issued
	Rejected     int64                  // requests refused for a missing or expired token (ExpireToken's included)
	CDNRequests  int64                  // requests the CDN received
	CDNExpired   int64                  // CDN requests answered 403 as expired
	CDNAuthLeaks int64                  // CDN requests that carried an Authorization header
	Blackholed   int64                  // requests held by SetDown(true)
}

// Proxy is a running fault-injecting proxy and its CDN. Safe for concurrent use.
type Proxy struct {
	upstream string
	auth     bool
	tr       *http.Transport
	srv      *httptest.Server
	cdn      *httptest.Server
	done     chan struct{} // closed by Close: releases stalled requests
	closeMu  sync.Once

	mu      sync.Mutex
	rules   []Rule           // guarded by mu
	seen    []int            // guarded by mu; matching requests per rule
	rnd     *rand.Rand       // guarded by mu
	down    chan struct{}    // guarded by mu; non-nil while down, closed when up again
	expired int              // guarded by mu; tokens numbered up to this one are expired
	tokenN  int              // guarded by mu; number of the last token issued
	c       Counters         // guarded by mu
	huge    map[int64]string // guarded by mu; digest of the huge manifest by size
	evCap   int              // guarded by mu; events kept (RecordEvents); 0: none
	evs     []*Event         // guarded by mu; ring of the last evCap events
	evHead  int              // guarded by mu; index of the oldest event once evs is full
	evID    int64            // guarded by mu; ID of the last event
}

var _ http.Handler = (*Proxy)(nil)

// New starts a proxy in front of o.Upstream and its CDN, both on loopback.
// Close stops them.
func New(o Options) (*Proxy, error) {
	if o.Upstream == "" {
		return nil, fmt.Errorf("faultproxy: no upstream")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DisableCompression = true
	p := &Proxy{
		upstream: o.Upstream,
		auth:     o.Auth,
		tr:       tr,
		done:     make(chan struct{}),
		rnd:      rand.New(rand.NewPCG(o.Seed, 0x6661756c74)),
		c:        newCounters(),
		huge:     map[int64]string{},
	}
	quiet := log.New(io.Discard, "", 0)
	p.srv = httptest.NewUnstartedServer(p)
	p.srv.Config.ErrorLog = quiet
	p.srv.Start()
	p.cdn = httptest.NewUnstartedServer(http.HandlerFunc(p.serveCDN))
	p.cdn.Config.ErrorLog = quiet
	if o.CDNListen != "" {
		l, err := net.Listen("tcp", o.CDNListen)
		if err != nil {
			p.srv.Close()
			return nil, fmt.Errorf("faultproxy: CDN: %w", err)
		}
		p.cdn.Listener.Close()
		p.cdn.Listener = l
	}
	p.cdn.Start()
	return p, nil
}

// Start returns a new proxy in front of upstream (host:port) with o's other
// settings, closed in t.Cleanup.
func Start(t testing.TB, o Options) *Proxy {
	t.Helper()
	p, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func newCounters() Counters {
	return Counters{ByKind: map[testenv.Kind]int64{}, Faults: map[string]int64{}}
}

// Host returns the proxy's host:port.
func (p *Proxy) Host() string { return strings.TrimPrefix(p.srv.URL, "http://") }

// CDNHost returns the CDN's host:port.
func (p *Proxy) CDNHost() string { return strings.TrimPrefix(p.cdn.URL, "http://") }

// Close releases every held request and stops the proxy and the CDN. Later
// calls do nothing.
func (p *Proxy) Close() {
	p.closeMu.Do(func() {
		close(p.done)
		p.srv.CloseClientConnections()
		p.cdn.CloseClientConnections()
		p.srv.Close()
		p.cdn.Close()
		p.tr.CloseIdleConnections()
	})
}

// CloseIdleConnections closes the proxy's idle connections to the upstream
// registry (for goroutine counts in tests).
func (p *Proxy) CloseIdleConnections() { p.tr.CloseIdleConnections() }

// SetRules replaces the rules; their match counts start from zero.
func (p *Proxy) SetRules(rules ...Rule) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules = append([]Rule(nil), rules...)
	p.seen = make([]int, len(rules))
}

// SetDown blackholes every request (API, token and CDN) while down is true:
// each is accepted and held unanswered until the proxy is up again (then it
// is served normally) or closed, or the client gives up.
func (p *Proxy) SetDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case down && p.down == nil:
		p.down = make(chan struct{})
	case !down && p.down != nil:
		close(p.down)
		p.down = nil
	}
}

// Counters returns a snapshot of the counters.
func (p *Proxy) Counters() Counters {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.c
	c.ByKind = make(map[testenv.Kind]int64, len(p.c.ByKind))
	for k, v := range p.c.ByKind {
		c.ByKind[k] = v
	}
	c.Faults = make(map[string]int64, len(p.c.Faults))
	for k, v := range p.c.Faults {
		c.Faults[k] = v
	}
	return c
}

// ResetCounters sets the counters to zero.
func (p *Proxy) ResetCounters() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.c = newCounters()
}

// count updates the counters under mu.
func (p *Proxy) count(f func(c *Counters)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(&p.c)
}

// holdIfDown blocks while the proxy is down; it returns false if the request
// should not be answered (the client left or the proxy closed).
func (p *Proxy) holdIfDown(r *http.Request) bool {
	p.mu.Lock()
	down := p.down
	if down != nil {
		p.c.Blackholed++
	}
	p.mu.Unlock()
	if down == nil {
		return true
	}
	select {
	case <-down:
		return true
	case <-r.Context().Done():
	case <-p.done:
	}
	return false
}

// hold blocks until the client leaves or the proxy closes, and records which
// as the outcome of the request answered through w.
func (p *Proxy) hold(w http.ResponseWriter, r *http.Request) {
	select {
	case <-r.Context().Done():
		p.outcome(w, "held until the client left")
	case <-p.done:
		p.outcome(w, "held until close")
	}
}

// ServeHTTP answers one request: the token endpoint, the authentication
// check, then the first rule that acts, else a plain forward.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	isToken := r.URL.Path == "/token" && p.auth
	kind, repo, ref := testenv.Classify(r.URL.Path)
	if isToken {
		w = p.begin(w, r, ServerToken, "")
	} else {
		w = p.begin(w, r, ServerRegistry, kind)
	}
	defer p.finish(w, r)
	if !p.holdIfDown(r) {
		p.outcome(w, "blackholed (down)")
		return
	}
	if isToken {
		p.serveToken(w, r)
		return
	}
	p.count(func(c *Counters) {
		c.Requests++
		c.ByKind[kind]++
	})
	if p.auth && !p.authorized(r) {
		p.count(func(c *Counters) { c.Rejected++ })
		p.challenge(w, r)
		return
	}
	f, rule := p.pick(r, kind, repo, ref)
	if f.kind == kindExpireToken && f.age > 0 {
		if _, issued, _ := token(r); time.Since(issued) < f.age {
			f, rule = Fault{}, -1 // too young to expire: as if no rule had acted
		}
	}
	if f.kind != kindNone {
		p.count(func(c *Counters) { c.Faults[f.String()]++ })
		p.noteFault(w, rule, f)
	}
	switch f.kind {
	case kindStatus:
		if f.retryAfter != "" {
			w.Header().Set("Retry-After", f.retryAfter)
		}
		writeError(w, f.status, "UNAVAILABLE", "faultproxy: injected status")
	case kindExpireToken:
		p.expireToken(r)
		p.challenge(w, r)
	case kindRedirect, kindRedirectExpired:
		if r.Method != http.MethodGet || kind != testenv.KindBlob {
			p.forward(w, r, Fault{})
			return
		}
		loc := fmt.Sprintf("%s/cdn/%s/blobs/%s", p.cdn.URL, repo, ref)
		if f.kind == kindRedirectExpired {
			loc += "?expired=1"
		}
		http.Redirect(w, r, loc, http.StatusTemporaryRedirect)
	case kindBlackhole:
		p.hold(w, r)
	case kindHugeManifest:
		p.serveHugeManifest(w, r, f.n)
	default:
		p.forward(w, r, f)
	}
}

// pick returns the fault of the first rule that acts on the request and the
// rule's index (-1 and the zero Fault if none acts).
func (p *Proxy) pick(r *http.Request, kind testenv.Kind, repo, ref string) (Fault, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, rule := range p.rules {
		if !rule.matches(r, kind, repo, ref) {
			continue
		}
		p.seen[i]++
		if !rule.inWindow(p.seen[i]) {
			continue
		}
		if rule.Prob > 0 && rule.Prob < 1 && p.rnd.Float64() >= rule.Prob {
			continue
		}
		return rule.Fault, i
	}
	return Fault{}, -1
}

// token returns the number of the request's bearer token and when it was
// issued; ok is false without a well-formed token.
func token(r *http.Request) (n int, issued time.Time, ok bool) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return 0, time.Time{}, false
	}
	var ns int64
	if _, err := fmt.Sscanf(tok, "tok-%d-%d", &n, &ns); err != nil {
		return 0, time.Time{}, false
	}
	return n, time.Unix(0, ns), true
}

// authorized reports whether the request carries a token that has not expired.
func (p *Proxy) authorized(r *http.Request) bool {
	n, _, ok := token(r)
	if !ok {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return n > p.expired
}

// expireToken expires the request's token and every token issued before it.
func (p *Proxy) expireToken(r *http.Request) {
	n, _, _ := token(r)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.expired = max(p.expired, n)
	p.c.Rejected++
}

// challenge answers 401 with a Bearer challenge naming the proxy's token endpoint.
func (p *Proxy) challenge(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="http://%s/token",service="faultproxy"`, r.Host))
	writeError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
}

// serveToken issues a token of the current generation to anyone.
func (p *Proxy) serveToken(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	p.tokenN++
	tok := fmt.Sprintf("tok-%d-%d", p.tokenN, time.Now().UnixNano())
	p.c.Tokens++
	p.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"token": tok, "access_token": tok, "expires_in": 300})
}

// writeError writes a distribution-spec error body with status.
func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": code, "message": msg}}})
}

// serveCDN serves /cdn/<repo>/blobs/<digest> from the upstream registry,
// refusing expired links and counting Authorization leaks.
func (p *Proxy) serveCDN(w http.ResponseWriter, r *http.Request) {
	w = p.begin(w, r, ServerCDN, testenv.KindBlob)
	defer p.finish(w, r)
	if !p.holdIfDown(r) {
		p.outcome(w, "blackholed (down)")
		return
	}
	leak := r.Header.Get("Authorization") != ""
	expired := r.URL.Query().Get("expired") != ""
	p.count(func(c *Counters) {
		c.CDNRequests++
		if leak {
			c.CDNAuthLeaks++
		}
		if expired && !leak {
			c.CDNExpired++
		}
	})
	rest, ok := strings.CutPrefix(r.URL.Path, "/cdn/")
	switch {
	case leak:
		writeError(w, http.StatusBadRequest, "AUTH_LEAK", "the CDN received the registry's Authorization header")
		return
	case !ok || r.Method != http.MethodGet:
		http.NotFound(w, r)
		return
	case expired:
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>")
		return
	}
	out, err := http.NewRequestWithContext(r.Context(), http.MethodGet, "http://"+p.upstream+"/v2/"+rest, nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	if rng := r.Header.Get("Range"); rng != "" {
		out.Header.Set("Range", rng)
	}
	resp, err := p.tr.RoundTrip(out)
	if err != nil {
		p.outcome(w, "upstream: %v", err)
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	copyHeader(w.Header(), resp.Header)
	w.WriteHeader(resp.StatusCode)
	if _, err := io.Copy(w, resp.Body); err != nil && r.Context().Err() == nil {
		p.outcome(w, "copy: %v", err)
	}
}
