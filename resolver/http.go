package resolver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// counters are the request statistics. Safe for concurrent use.
type counters struct {
	mu       sync.Mutex
	requests map[string]int64 // guarded by mu
	bytes    atomic.Int64
	retries  atomic.Int64
	stalls   atomic.Int64
	fallback atomic.Int64 // pulls a mirror could not answer
	limited  atomic.Int64 // manifest GETs that waited for the rate limit
}

func newCounters() *counters { return &counters{requests: map[string]int64{}} }

func (s *counters) request(method string) {
	s.mu.Lock()
	s.requests[method]++
	s.mu.Unlock()
}

func (s *counters) snapshot() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{
		Requests:        maps.Clone(s.requests),
		BodyBytes:       s.bytes.Load(),
		Retries:         s.retries.Load(),
		Stalls:          s.stalls.Load(),
		MirrorFallbacks: s.fallback.Load(),
		RateLimited:     s.limited.Load(),
	}
}

// progress is the stall timer of one request: it cancels the request's context when
// nothing happened (headers arrived, body bytes read) for d.
type progress struct {
	d       time.Duration
	timer   *time.Timer
	stalled atomic.Bool
}

type progressKey struct{}

// withProgress returns a context that is cancelled after d without progress, the progress
// to report to, and a stop function to call when the request is finished.
func withProgress(ctx context.Context, d time.Duration) (context.Context, *progress, func()) {
	ctx, cancel := context.WithCancel(ctx)
	p := &progress{d: d}
	p.timer = time.AfterFunc(d, func() {
		p.stalled.Store(true)
		cancel()
	})
	ctx = context.WithValue(ctx, progressKey{}, p)
	return ctx, p, func() {
		p.timer.Stop()
		cancel()
	}
}

// touch reports progress: the stall deadline starts again.
func (p *progress) touch() {
	if p != nil && !p.stalled.Load() {
		p.timer.Reset(p.d)
	}
}

// baseTransport sits under the authentication transports: it counts every request (pings,
// tokens and redirects included) and body bytes, and reports progress to the stall timer.
type baseTransport struct {
	inner http.RoundTripper
	stats *counters
}

func (t *baseTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.stats.request(req.Method)
	p, _ := req.Context().Value(progressKey{}).(*progress)
	resp, err := t.inner.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	p.touch()
	resp.Body = &countingBody{rc: resp.Body, stats: t.stats, p: p}
	return resp, nil
}

// countingBody counts bytes and reports progress on every read that returns data.
type countingBody struct {
	rc    io.ReadCloser
	stats *counters
	p     *progress // may be nil
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if n > 0 {
		b.stats.bytes.Add(int64(n))
		b.p.touch()
	}
	return n, err
}

func (b *countingBody) Close() error { return b.rc.Close() }

// request describes one idempotent registry request.
type request struct {
	method string
	url    string
	accept string
	rng    string         // Range header, if any
	ok     func(int) bool // success statuses; default 2xx
	what   string         // for errors: the reference or digest asked for
	// observe, if set, sees every response's headers (failures included) before the
	// status is judged.
	observe func(*http.Response)
}

// do performs rq with the stall timeout and bounded retries of quick failures; a redirect
// target's refusal (401, 403, 404, 410 from another host than rq.url's) is retried at once,
// for a fresh redirect. On success the body must be closed; reading it stays under the
// stall timeout. Errors are classed (ErrNotFound, ErrDenied, ErrUnavailable, ErrInvalid)
// or the caller's context error.
func (c *Client) do(ctx context.Context, ep *endpoint, hc *http.Client, rq request) (*http.Response, error) {
	if err := ep.downErr(c.now()); err != nil {
		return nil, err
	}
	ok := rq.ok
	if ok == nil {
		ok = func(s int) bool { return s >= 200 && s < 300 }
	}
	budget := c.now().Add(c.timeout) // retries must end within one stall timeout
	wait := c.backoff
	attempts := c.maxAttempts
	if c.mirrorOf[ep.reg] {
		// A mirror's retry is the next host. (A mirror host browsed as a registry of its
		// own gets one attempt too: the endpoint is the host's, whatever the use.)
		attempts = 1
	}
	for attempt := 1; ; attempt++ {
		stall := c.timeout
		if attempt > 1 {
			stall = c.retryStall(budget)
		}
		resp, p, stop, err := c.once(ctx, hc, rq, stall)
		if err == nil && rq.observe != nil {
			rq.observe(resp)
		}
		if err != nil {
			stop()
			if ctx.Err() != nil {
				return nil, fmt.Errorf("%s %s: %w", rq.method, rq.what, ctx.Err())
			}
			if p.stalled.Load() {
				c.stats.stalls.Add(1)
				ep.markDown(c, fmt.Sprintf("no progress for %s", p.d.Round(time.Millisecond)))
				return nil, fmt.Errorf("%s %s: %w: no progress for %s", rq.method, rq.what, ErrUnavailable, p.d.Round(time.Millisecond))
			}
			var terr *transport.Error
			if errors.As(err, &terr) { // the token exchange failed
				se := classify(terr.StatusCode, nil, false)
				if retryableStatus(terr.StatusCode) && c.sleep(ctx, attempt, attempts, wait, budget, 0) {
					wait *= 2
					continue
				}
				return nil, fmt.Errorf("%s %s: token: %w (%v)", rq.method, rq.what, se, err)
			}
			if errors.Is(err, errRedirectRefused) { // the registry is up; its answer is bad
				return nil, fmt.Errorf("%s %s: %w: %w", rq.method, rq.what, ErrInvalid, err)
			}
			if retryableNetErr(err) && c.sleep(ctx, attempt, attempts, wait, budget, 0) {
				wait *= 2
				continue
			}
			ep.markDown(c, err.Error())
			return nil, fmt.Errorf("%s %s: %w: %v", rq.method, rq.what, ErrUnavailable, err)
		}
		if ok(resp.StatusCode) {
			resp.Body = &stallBody{rc: resp.Body, p: p, stop: stop, ep: ep, c: c, what: rq.what}
			return resp, nil
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		stop()
		if target := redirectTarget(resp, rq.url); target != "" && refusedByTarget(resp.StatusCode) {
			// An expired or revoked signed URL: a new request to the registry gets a
			// fresh redirect, at once (the registry itself did not fail).
			c.log.Info("redirect target refused the request; asking the registry again",
				"ref", rq.what, "target", target, "status", resp.StatusCode, "attempt", attempt)
			if c.sleep(ctx, attempt, attempts, 0, budget, 0) {
				continue
			}
			se := classify(resp.StatusCode, body, false)
			se.class = ErrUnavailable // the registry allowed the request; its storage failed
			se.message = "from redirect target " + target
			return nil, fmt.Errorf("%s %s: %w", rq.method, rq.what, se)
		}
		if retryableStatus(resp.StatusCode) {
			after := retryAfter(resp.Header.Get("Retry-After"), c.now())
			if c.sleep(ctx, attempt, attempts, wait, budget, after) {
				wait *= 2
				continue
			}
		}
		se := classify(resp.StatusCode, body, ep.hub)
		return nil, fmt.Errorf("%s %s: %w", rq.method, rq.what, se)
	}
}

// retryGrace is how long past the retry budget the last attempt may wait for progress
// (a quarter of the stall timeout if that is less).
const retryGrace = 250 * time.Millisecond

// retryStall returns the stall window of a retry: what is left of the retry budget plus
// the grace, never more than the stall timeout. Retries start before the budget ends
// (see sleep), so the window is at least the grace. A request whose quick failures are
// followed by a registry that answers nothing more therefore fails within the stall
// timeout plus the grace of its first attempt, not two timeouts: the caller's read is
// one wait, however many attempts it takes. Progress (headers, body bytes) starts the
// window again, so a retry that is delivering is waited for; a gap longer than its
// window fails it as a stall.
func (c *Client) retryStall(budget time.Time) time.Duration {
	grace := min(retryGrace, c.timeout/4)
	return min(c.timeout, max(budget.Add(grace).Sub(c.now()), grace))
}

// redirectTarget returns the host that answered resp when redirects led away from the
// host of the request's URL (a CDN serving the registry's blobs), else "".
func redirectTarget(resp *http.Response, orig string) string {
	if resp.Request == nil || resp.Request.URL == nil {
		return ""
	}
	u, err := url.Parse(orig)
	if err != nil || strings.EqualFold(u.Host, resp.Request.URL.Host) {
		return ""
	}
	return resp.Request.URL.Host
}

// refusedByTarget reports the statuses with which a redirect target refuses an expired,
// revoked or otherwise stale signed URL.
func refusedByTarget(status int) bool {
	switch status {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound, http.StatusGone:
		return true
	}
	return false
}

// once sends rq one time.
func (c *Client) once(ctx context.Context, hc *http.Client, rq request, stall time.Duration) (*http.Response, *progress, func(), error) {
	pctx, p, stop := withProgress(ctx, stall)
	req, err := http.NewRequestWithContext(pctx, rq.method, rq.url, nil)
	if err != nil {
		return nil, p, stop, fmt.Errorf("%w: request %s: %v", ErrInvalid, rq.url, err)
	}
	if rq.accept != "" {
		req.Header.Set("Accept", rq.accept)
	}
	if rq.rng != "" {
		req.Header.Set("Range", rq.rng)
	}
	resp, err := hc.Do(req)
	return resp, p, stop, err
}

// sleep waits before another attempt if one is allowed: attempts left, and the wait (the
// server's Retry-After when given) ends before the budget. It counts the retry.
func (c *Client) sleep(ctx context.Context, attempt, attempts int, wait time.Duration, budget time.Time, after time.Duration) bool {
	if attempt >= attempts {
		return false
	}
	if after > 0 {
		wait = after
	}
	if c.now().Add(wait).After(budget) {
		return false
	}
	c.stats.retries.Add(1)
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// retryAfter parses a Retry-After header (seconds or an HTTP date); 0 if absent.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// retryableNetErr reports connection failures worth a quick retry.
func retryableNetErr(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNABORTED) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
}

// stallBody keeps the stall timer running while the caller reads, turns a stall into an
// ErrUnavailable error (marking the registry down) and stops the timer on Close.
type stallBody struct {
	rc   io.ReadCloser
	p    *progress
	stop func()
	ep   *endpoint
	c    *Client
	what string
}

func (b *stallBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err != nil && err != io.EOF && b.p.stalled.Load() {
		b.c.stats.stalls.Add(1)
		b.ep.markDown(b.c, "body stalled")
		err = fmt.Errorf("reading %s: %w: no progress for %s", b.what, ErrUnavailable, b.p.d.Round(time.Millisecond))
	}
	return n, err
}

func (b *stallBody) Close() error {
	err := b.rc.Close()
	b.stop()
	return err
}

// readAll reads a body of at most limit bytes.
func readAll(ctx context.Context, r io.Reader, limit int64, what string) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("reading %s: %w", what, ctx.Err())
		}
		if errors.Is(err, ErrUnavailable) {
			return nil, err
		}
		return nil, fmt.Errorf("reading %s: %w: %v", what, ErrUnavailable, err)
	}
	if int64(len(b)) > limit {
		return nil, invalidf("%s is larger than %d bytes", what, limit)
	}
	return b, nil
}
