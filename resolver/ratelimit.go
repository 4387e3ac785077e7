package resolver

import (
	"cmp"
	"context"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// defaultRateWindow is the window assumed for a ratelimit header without "w=".
const defaultRateWindow = time.Hour

// tokenBucket is a token bucket: rate tokens per second up to burst; a waiter takes one
// token, waiting for it when the bucket is empty. Waiters reserve their tokens in order
// (the count goes negative), so a queue of waiters is served at the rate. A rate of 0 is
// unlimited. Safe for concurrent use.
type tokenBucket struct {
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error

	mu     sync.Mutex
	rate   float64   // tokens per second; 0: unlimited; guarded by mu
	burst  float64   // >= 1; guarded by mu
	tokens float64   // <= burst; negative while waiters hold reservations; guarded by mu
	last   time.Time // when tokens was last brought up to date; guarded by mu
}

// newTokenBucket returns a full bucket. now and sleep may be nil (the real clock).
func newTokenBucket(rate float64, burst int, now func() time.Time, sleep func(context.Context, time.Duration) error) *tokenBucket {
	if now == nil {
		now = time.Now
	}
	if sleep == nil {
		sleep = sleepCtx
	}
	b := &tokenBucket{now: now, sleep: sleep, rate: rate, burst: float64(max(burst, 1))}
	b.tokens, b.last = b.burst, now()
	return b
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// refill brings tokens up to now. Caller holds mu.
func (b *tokenBucket) refill(now time.Time) {
	if now.After(b.last) {
		if b.rate > 0 {
			b.tokens = math.Min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
		}
		b.last = now
	}
}

// wait takes a token, waiting for it as long as needed unless ctx ends first; then the
// reserved token is given back and ctx's error returned. It returns how long it waited.
func (b *tokenBucket) wait(ctx context.Context) (time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	b.mu.Lock()
	if b.rate <= 0 {
		b.mu.Unlock()
		return 0, nil
	}
	b.refill(b.now())
	b.tokens--
	var d time.Duration
	if b.tokens < 0 {
		d = time.Duration(math.Ceil(-b.tokens / b.rate * float64(time.Second)))
	}
	b.mu.Unlock()
	if d == 0 {
		return 0, nil
	}
	if err := b.sleep(ctx, d); err != nil {
		b.mu.Lock()
		b.refill(b.now())
		b.tokens = math.Min(b.burst, b.tokens+1)
		b.mu.Unlock()
		return 0, err
	}
	return d, nil
}

// setLimit changes rate and burst; tokens already earned are kept up to the new burst.
func (b *tokenBucket) setLimit(rate float64, burst int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill(b.now())
	if b.rate <= 0 { // unlimited until now: nothing was counted
		b.tokens = float64(max(burst, 1))
	}
	b.rate, b.burst = rate, float64(max(burst, 1))
	b.tokens = math.Min(b.tokens, b.burst)
}

// limit returns the current rate and burst.
func (b *tokenBucket) limit() (float64, int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.rate, int(b.burst)
}

// pullLimit is the manifest GET limit of one registry (its mirrors included) and its
// reading of the registry's ratelimit headers. Safe for concurrent use.
type pullLimit struct {
	reg    string
	rate   float64 // the configured rate (0: unlimited) and burst, restored after a slowdown
	burst  int
	bucket *tokenBucket

	mu        sync.Mutex
	slowUntil time.Time // while now is before it, the bucket runs at ThrottledManifestRate; guarded by mu
	warnUntil time.Time // no new warning before it; guarded by mu
}

// pullLimit returns the limit of registry reg, creating it on first use.
func (c *Client) pullLimit(reg string) *pullLimit {
	reg = CanonicalRegistry(reg)
	c.mu.Lock()
	defer c.mu.Unlock()
	l, ok := c.limits[reg]
	if !ok {
		l = &pullLimit{reg: reg, rate: c.rate, burst: c.burst,
			bucket: newTokenBucket(c.rate, c.burst, c.now, c.limitSleep)}
		c.limits[reg] = l
	}
	return l
}

// wait waits for a manifest GET's turn, ending a slowdown whose window has passed.
func (l *pullLimit) wait(ctx context.Context, c *Client) error {
	now := c.now()
	l.mu.Lock()
	if !l.slowUntil.IsZero() && !now.Before(l.slowUntil) {
		l.slowUntil = time.Time{}
		l.bucket.setLimit(l.rate, l.burst)
		c.log.Info("registry rate limit window passed; manifest GETs at the configured rate", "registry", l.reg)
	}
	l.mu.Unlock()
	d, err := l.bucket.wait(ctx)
	if d > 0 {
		c.stats.limited.Add(1)
		c.log.Debug("manifest GET waited for the rate limit", "registry", l.reg, "wait", d)
	}
	return err
}

// observe reads the ratelimit-limit and ratelimit-remaining headers of a manifest
// response (Docker Hub's "100;w=21600": 100 pulls per 21600 s). Below a tenth of the
// limit, manifest GETs slow to ThrottledManifestRate for the window, and a warning is
// logged once per window; a later answer at or above a tenth restores the configured rate.
func (l *pullLimit) observe(c *Client, h http.Header) {
	limit, lw, ok1 := parseRateLimit(h.Get("RateLimit-Limit"))
	remaining, rw, ok2 := parseRateLimit(h.Get("RateLimit-Remaining"))
	if !ok1 || !ok2 || limit <= 0 {
		return
	}
	window := cmp.Or(rw, lw, defaultRateWindow)
	now := c.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if remaining*10 >= limit {
		if !l.slowUntil.IsZero() {
			l.slowUntil = time.Time{}
			l.bucket.setLimit(l.rate, l.burst)
			c.log.Info("registry rate limit recovered; manifest GETs at the configured rate",
				"registry", l.reg, "remaining", remaining, "limit", limit)
		}
		return
	}
	if l.slowUntil.IsZero() {
		l.bucket.setLimit(ThrottledManifestRate, 1)
	}
	l.slowUntil = now.Add(window)
	if now.Before(l.warnUntil) {
		return
	}
	l.warnUntil = now.Add(window)
	c.log.Warn("registry pull limit nearly exhausted; slowing manifest GETs",
		"registry", l.reg, "remaining", remaining, "limit", limit, "window", window,
		"rate_per_second", ThrottledManifestRate, "source", h.Get("Docker-RateLimit-Source"))
}

// parseRateLimit parses a ratelimit header value: "N" or "N;w=SECONDS" (Docker Hub), with
// any other parameters ignored. window is 0 when not given.
func parseRateLimit(v string) (n int64, window time.Duration, ok bool) {
	if v == "" {
		return 0, 0, false
	}
	parts := strings.Split(v, ";")
	n, err := strconv.ParseInt(strings.TrimSpace(parts[0]), 10, 64)
	if err != nil || n < 0 {
		return 0, 0, false
	}
	for _, p := range parts[1:] {
		k, val, _ := strings.Cut(strings.TrimSpace(p), "=")
		if strings.EqualFold(strings.TrimSpace(k), "w") {
			if s, err := strconv.ParseInt(strings.TrimSpace(val), 10, 64); err == nil && s > 0 && s < math.MaxInt64/int64(time.Second) {
				window = time.Duration(s) * time.Second
			}
		}
	}
	return n, window, true
}
