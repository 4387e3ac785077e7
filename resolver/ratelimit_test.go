package resolver

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// fakeClock is a clock whose sleeps advance it and are recorded. Safe for concurrent use.
type fakeClock struct {
	mu     sync.Mutex
	t      time.Time       // guarded by mu
	sleeps []time.Duration // guarded by mu
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (f *fakeClock) now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.t
}

func (f *fakeClock) advance(d time.Duration) {
	f.mu.Lock()
	f.t = f.t.Add(d)
	f.mu.Unlock()
}

func (f *fakeClock) sleep(ctx context.Context, d time.Duration) error {
	f.mu.Lock()
	f.t = f.t.Add(d)
	f.sleeps = append(f.sleeps, d)
	f.mu.Unlock()
	return ctx.Err()
}

// take returns the sleeps since the last take.
func (f *fakeClock) take() []time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.sleeps
	f.sleeps = nil
	return s
}

func ms(n ...int) []time.Duration {
	out := make([]time.Duration, len(n))
	for i, v := range n {
		out[i] = time.Duration(v) * time.Millisecond
	}
	return out
}

func TestTokenBucket(t *testing.T) {
	type step struct {
		idle   time.Duration // clock advance before the waits
		limit  [2]float64    // setLimit(rate, burst) before the waits, if rate or burst set
		waits  int
		sleeps []time.Duration
	}
	tests := []struct {
		name        string
		rate        float64
		burst       int
		steps       []step
		wantWaitErr bool
	}{
		{"burst then rate", 10, 2, []step{{waits: 5, sleeps: ms(100, 100, 100)}}, false},
		{"idle refills up to burst only", 10, 2, []step{
			{waits: 2},
			{idle: time.Hour, waits: 3, sleeps: ms(100)},
		}, false},
		{"partial refill", 4, 1, []step{
			{waits: 1},
			{idle: 100 * time.Millisecond, waits: 1, sleeps: ms(150)},
		}, false},
		{"unlimited", 0, 0, []step{{waits: 100}}, false},
		{"unlimited then throttled", 0, 0, []step{
			{waits: 50},
			{limit: [2]float64{1, 1}, waits: 3, sleeps: ms(1000, 1000)},
			{limit: [2]float64{0, 20}, waits: 50},
		}, false},
		{"slowed and restored", 10, 5, []step{
			{waits: 5},
			{limit: [2]float64{1, 1}, waits: 2, sleeps: ms(1000, 1000)},
			{idle: time.Second, limit: [2]float64{10, 5}, waits: 1}, // tokens earned at 1/s kept
			{idle: time.Second, waits: 6, sleeps: ms(100)},          // refilled to the new burst
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			b := newTokenBucket(tt.rate, tt.burst, clk.now, clk.sleep)
			for i, s := range tt.steps {
				clk.advance(s.idle)
				if s.limit != [2]float64{} {
					b.setLimit(s.limit[0], int(s.limit[1]))
				}
				for range s.waits {
					if _, err := b.wait(context.Background()); err != nil {
						t.Fatal(err)
					}
				}
				if got := clk.take(); !slices.Equal(got, s.sleeps) {
					t.Errorf("step %d: sleeps %v, want %v", i, got, s.sleeps)
				}
			}
		})
	}
}

func TestTokenBucketContext(t *testing.T) {
	b := newTokenBucket(1, 1, nil, nil) // the real clock
	ctx := ctxT(t)
	if d, err := b.wait(ctx); d != 0 || err != nil {
		t.Fatalf("first wait: %v %v, want none", d, err)
	}
	short, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := b.wait(short)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want the context's deadline", err)
	}
	if el := time.Since(start); el > 500*time.Millisecond {
		t.Fatalf("cancelled wait took %v", el)
	}
	// The reservation was given back: the next token is due about 1 s after the first.
	b.mu.Lock()
	tokens := b.tokens
	b.mu.Unlock()
	if tokens < -0.01 {
		t.Fatalf("tokens = %v after a cancelled wait, want the reservation given back", tokens)
	}
	done, cancel2 := context.WithCancel(ctx)
	cancel2()
	if _, err := b.wait(done); !errors.Is(err, context.Canceled) {
		t.Fatalf("wait on a done context: %v", err)
	}
}

func TestTokenBucketConcurrent(t *testing.T) {
	const n, rate = 12, 200.0
	b := newTokenBucket(rate, 2, nil, nil)
	start := time.Now()
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			if _, err := b.wait(context.Background()); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	// n-2 tokens at 200/s can not be had in less than 50 ms.
	if el, min := time.Since(start), time.Duration(float64(n-2)/rate*float64(time.Second)); el < min-time.Millisecond {
		t.Fatalf("%d waits took %v, want at least %v", n, el, min)
	}
}

func TestParseRateLimit(t *testing.T) {
	tests := []struct {
		in     string
		n      int64
		window time.Duration
		ok     bool
	}{
		{"100;w=21600", 100, 6 * time.Hour, true},
		{"76;w=21600", 76, 6 * time.Hour, true},
		{"0;w=60", 0, time.Minute, true},
		{"100", 100, 0, true},
		{" 5 ; W=60 ; comment=x", 5, time.Minute, true},
		{"100;w=abc", 100, 0, true},
		{"100;w=-5", 100, 0, true},
		{"", 0, 0, false},
		{"abc;w=60", 0, 0, false},
		{"-1", 0, 0, false},
		{"1.5", 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			n, w, ok := parseRateLimit(tt.in)
			if n != tt.n || w != tt.window || ok != tt.ok {
				t.Fatalf("got %d %v %v, want %d %v %v", n, w, ok, tt.n, tt.window, tt.ok)
			}
		})
	}
}

func FuzzParseRateLimit(f *testing.F) {
	for _, s := range []string{"100;w=21600", "5", "", ";;;", "9223372036854775807;w=9223372036854775807"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, w, ok := parseRateLimit(s)
		if !ok && (n != 0 || w != 0) {
			t.Fatalf("%q: not ok but %d %v", s, n, w)
		}
		if n < 0 || w < 0 {
			t.Fatalf("%q: negative %d %v", s, n, w)
		}
	})
}

// distinctImages pushes n images to host/app by digest and returns their digests.
func distinctImages(t *testing.T, host string, n int) []string {
	t.Helper()
	var out []string
	for range n {
		d := push(t, host, "app", "", platformImage(t, v1.Platform{OS: "linux", Architecture: "amd64"}))
		out = append(out, d.Digest.String())
	}
	return out
}

func TestManifestRateLimit(t *testing.T) {
	_, cnt, host := newRegistry(t, nil)
	img := platformImage(t, v1.Platform{OS: "linux", Architecture: "amd64"})
	push(t, host, "app", "v1", img)
	digests := distinctImages(t, host, 5)
	cnt.take()
	clk := newFakeClock()
	c := newClient(t, Options{ManifestRate: 10, ManifestBurst: 2})
	c.now, c.limitSleep = clk.now, clk.sleep
	ctx := ctxT(t)
	r := Ref{Registry: host, Repo: "app"}

	// HEADs are free.
	for range 5 {
		c.mu.Lock()
		c.tags = map[string]tagAnswer{}
		c.mu.Unlock()
		if _, err := c.Resolve(ctx, Ref{Registry: host, Repo: "app", Tag: "v1"}); err != nil {
			t.Fatal(err)
		}
	}
	if got := clk.take(); len(got) != 0 {
		t.Fatalf("HEADs waited %v", got)
	}
	// GETs of new documents: two at once, then one per 100 ms.
	for _, d := range digests {
		if _, err := c.Document(ctx, r, d); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := clk.take(), ms(100, 100, 100); !slices.Equal(got, want) {
		t.Fatalf("sleeps %v, want %v", got, want)
	}
	// Known documents cost nothing.
	for _, d := range digests {
		if _, err := c.Document(ctx, r, d); err != nil {
			t.Fatal(err)
		}
	}
	if got := clk.take(); len(got) != 0 {
		t.Fatalf("cached documents waited %v", got)
	}
	mustEqual(t, "rate_limited", c.Stats().RateLimited, int64(3))
	mustEqual(t, "manifest GETs", cnt.count("GET /v2/app/manifests/"), 5)
}

func TestRateLimitHeadersSlowManifestGETs(t *testing.T) {
	var remaining atomic.Int64
	remaining.Store(50)
	_, _, host := newRegistry(t, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.Contains(r.URL.Path, "/manifests/") {
				w.Header().Set("RateLimit-Limit", "100;w=21600")
				w.Header().Set("RateLimit-Remaining", strconv.FormatInt(remaining.Load(), 10)+";w=21600")
				w.Header().Set("Docker-RateLimit-Source", "203.0.113.7")
			}
			next.ServeHTTP(w, r)
		})
	})
	digests := distinctImages(t, host, 14)
	var logs bytes.Buffer
	var logMu sync.Mutex
	clk := newFakeClock()
	c := newClient(t, Options{Logger: slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &logMu}, nil))})
	c.now, c.limitSleep = clk.now, clk.sleep
	ctx := ctxT(t)
	r := Ref{Registry: host, Repo: "app"}
	next := 0
	get := func() {
		t.Helper()
		if _, err := c.Document(ctx, r, digests[next]); err != nil {
			t.Fatal(err)
		}
		next++
	}
	warnings := func() int {
		logMu.Lock()
		defer logMu.Unlock()
		return strings.Count(logs.String(), "pull limit nearly exhausted")
	}

	get() // 50 of 100 left: nothing happens (and no rate is configured)
	get()
	if got := clk.take(); len(got) != 0 || warnings() != 0 {
		t.Fatalf("at 50%%: sleeps %v, %d warnings", got, warnings())
	}
	remaining.Store(9)
	get() // this answer says 9 of 100: slow down from now on
	mustEqual(t, "warnings", warnings(), 1)
	get() // the throttled bucket starts with one token
	get()
	get()
	if got, want := clk.take(), ms(1000, 1000); !slices.Equal(got, want) {
		t.Fatalf("throttled sleeps %v, want %v", got, want)
	}
	mustEqual(t, "warnings within the window", warnings(), 1)
	rate, burst := c.pullLimit(host).bucket.limit()
	mustEqual(t, "throttled rate", rate, ThrottledManifestRate)
	mustEqual(t, "throttled burst", burst, 1)

	clk.advance(7 * time.Hour) // the window passed: configured rate (unlimited) again
	remaining.Store(60)
	get()
	get()
	if got := clk.take(); len(got) != 0 {
		t.Fatalf("after the window: sleeps %v", got)
	}
	remaining.Store(3) // a new window: a new warning
	get()
	mustEqual(t, "warnings in a new window", warnings(), 2)
	get()
	get()
	remaining.Store(80) // recovered before the window ends
	get()               // still waits: the answer that says so comes after
	get()
	get()
	if got, want := clk.take(), ms(1000, 1000); !slices.Equal(got, want) {
		t.Fatalf("around recovery: sleeps %v, want %v", got, want)
	}
	rate, _ = c.pullLimit(host).bucket.limit()
	mustEqual(t, "recovered rate", rate, 0.0)
	logMu.Lock()
	if !strings.Contains(logs.String(), "source=203.0.113.7") {
		t.Errorf("warning does not name the limit's source:\n%s", logs.String())
	}
	logMu.Unlock()
}

// lockedWriter serialises writes to w.
type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
