package resolver

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// pagedTags serves /v2/<repo>/tags/list for repo with tags in pages of 100, linking to the
// next page with link(repo, last).
func pagedTags(repo string, tags []string, link func(host, last string) string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		if r.URL.Path != "/v2/"+repo+"/tags/list" {
			http.NotFound(w, r)
			return
		}
		last := r.URL.Query().Get("last")
		i := sort.SearchStrings(tags, last)
		if last != "" && i < len(tags) && tags[i] == last {
			i++
		}
		page := tags[i:min(i+100, len(tags))]
		if i+100 < len(tags) {
			w.Header().Set("Link", link(r.Host, page[len(page)-1]))
		}
		json.NewEncoder(w).Encode(map[string]any{"name": repo, "tags": page})
	})
}

func TestTagsPagination(t *testing.T) {
	var tags []string
	for i := range 257 {
		tags = append(tags, fmt.Sprintf("t%03d", i))
	}
	sort.Strings(tags)
	tests := []struct {
		name    string
		link    func(host, last string) string
		pages   int
		wantErr error
	}{
		{"relative", func(_, last string) string {
			return fmt.Sprintf(`</v2/x/tags/list?n=100&last=%s>; rel="next"`, last)
		}, 3, nil},
		{"absolute", func(host, last string) string {
			return fmt.Sprintf(`<http://%s/v2/x/tags/list?n=100&last=%s>; rel="next"`, host, last)
		}, 3, nil},
		{"loop", func(_, _ string) string { return `</v2/x/tags/list?n=100&last=t099>; rel="next"` }, 2, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cnt := &counter{next: pagedTags("x", tags, tt.link)}
			srv := httptest.NewServer(cnt)
			defer srv.Close()
			host := strings.TrimPrefix(srv.URL, "http://")
			c := newClient(t, Options{})
			l, err := c.List(ctxT(t), Name{Registry: host, Path: "x"})
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("got %v, want %v", err, tt.wantErr)
				}
			} else if err != nil || !slices.Equal(l.Tags, tags) {
				t.Fatalf("got %d tags (%v), want %d", len(l.Tags), err, len(tags))
			}
			mustEqual(t, "tags/list requests", cnt.count("/tags/list"), tt.pages)
		})
	}
}

func TestNextLink(t *testing.T) {
	tests := []struct{ in, want string }{
		{`</v2/x/tags/list?n=100&last=y>; rel="next"`, "/v2/x/tags/list?n=100&last=y"},
		{`<https://r.io/a>; rel=next`, "https://r.io/a"},
		{`<https://r.io/p>; rel="prev", <https://r.io/n>; rel="next"`, "https://r.io/n"},
		{`<https://r.io/p>; rel="prev"`, ""},
		{``, ""},
	}
	for _, tt := range tests {
		mustEqual(t, tt.in, nextLink([]string{tt.in}), tt.want)
	}
}

// faulty answers every request through fn first; fn returns true when it handled it.
func faulty(fn func(w http.ResponseWriter, r *http.Request) bool) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/v2/" || r.Method == http.MethodPut || r.Method == http.MethodPost ||
				r.Method == http.MethodPatch || !fn(w, r) {
				next.ServeHTTP(w, r)
			}
		})
	}
}

func TestRetriesAndStatusMapping(t *testing.T) {
	img := platformImage(t, v1.Platform{OS: "linux", Architecture: "amd64"})
	type fault func(w http.ResponseWriter, r *http.Request, n int64) bool // n: 1-based request number
	tests := []struct {
		name    string
		fault   fault
		wantErr error // nil: success
		retries int64 // -1: not checked
		minTime time.Duration
		maxTime time.Duration
	}{
		{"503 twice then 200", func(w http.ResponseWriter, r *http.Request, n int64) bool {
			if n <= 2 {
				w.WriteHeader(http.StatusServiceUnavailable)
				return true
			}
			return false
		}, nil, 2, 0, 5 * time.Second},
		{"429 with Retry-After", func(w http.ResponseWriter, r *http.Request, n int64) bool {
			if n == 1 {
				w.Header().Set("Retry-After", "1")
				w.WriteHeader(http.StatusTooManyRequests)
				return true
			}
			return false
		}, nil, 1, time.Second, 5 * time.Second},
		{"429 beyond the deadline", func(w http.ResponseWriter, r *http.Request, n int64) bool {
			w.Header().Set("Retry-After", "3600")
			w.WriteHeader(http.StatusTooManyRequests)
			return true
		}, ErrUnavailable, 0, 0, time.Second},
		{"500 always", func(w http.ResponseWriter, r *http.Request, n int64) bool {
			w.WriteHeader(http.StatusInternalServerError)
			return true
		}, ErrUnavailable, 3, 0, 5 * time.Second},
		{"401", func(w http.ResponseWriter, r *http.Request, n int64) bool {
			w.WriteHeader(http.StatusUnauthorized)
			return true
		}, ErrDenied, 0, 0, time.Second},
		{"403", func(w http.ResponseWriter, r *http.Request, n int64) bool {
			w.WriteHeader(http.StatusForbidden)
			return true
		}, ErrDenied, 0, 0, time.Second},
		{"404", func(w http.ResponseWriter, r *http.Request, n int64) bool {
			w.WriteHeader(http.StatusNotFound)
			return true
		}, ErrNotFound, 0, 0, time.Second},
		{"reset", func(w http.ResponseWriter, r *http.Request, n int64) bool {
			if n == 1 {
				conn, _, _ := w.(http.Hijacker).Hijack()
				conn.Close()
				return true
			}
			return false
		}, nil, -1, 0, 5 * time.Second}, // net/http itself may retry a reset idempotent request
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var n atomic.Int64
			var armed atomic.Bool
			_, _, host := newRegistry(t, faulty(func(w http.ResponseWriter, r *http.Request) bool {
				if !armed.Load() || r.Method != http.MethodHead {
					return false
				}
				return tt.fault(w, r, n.Add(1))
			}))
			push(t, host, "r", "t", img)
			armed.Store(true)
			c := newClient(t, Options{Timeout: 3 * time.Second})
			c.backoff = 50 * time.Millisecond
			start := time.Now()
			d, err := c.Resolve(ctxT(t), Ref{Registry: host, Repo: "r", Tag: "t"})
			took := time.Since(start)
			if tt.wantErr == nil && err != nil {
				t.Fatalf("got %v, want success", err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("got %v (%v), want %v", err, d, tt.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), host+"/r:t") {
				t.Errorf("error %q does not name the reference", err)
			}
			if tt.retries >= 0 {
				mustEqual(t, "retries", c.Stats().Retries, tt.retries)
			}
			if took < tt.minTime || took > tt.maxTime {
				t.Fatalf("took %v, want within [%v, %v]", took, tt.minTime, tt.maxTime)
			}
		})
	}
}

func TestStallMarksDownAndServesStale(t *testing.T) {
	img := platformImage(t, v1.Platform{OS: "linux", Architecture: "amd64"})
	var stall atomic.Bool
	release := make(chan struct{})
	_, cnt, host := newRegistry(t, faulty(func(w http.ResponseWriter, r *http.Request) bool {
		if !stall.Load() {
			return false
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
		return true
	}))
	t.Cleanup(func() { close(release) })
	push(t, host, "r", "t", img)
	push(t, host, "r", "u", img)
	c := newClient(t, Options{Timeout: 300 * time.Millisecond, TagTTL: time.Millisecond})
	ctx := ctxT(t)
	r := Ref{Registry: host, Repo: "r", Tag: "t"}
	want, err := c.Resolve(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond) // past the TTL
	stall.Store(true)
	cnt.take()

	// The stale answer is served when the HEAD stalls.
	start := time.Now()
	got, err := c.Resolve(ctx, r)
	if err != nil || got.Digest != want.Digest {
		t.Fatalf("stale tag: got %v %v", got, err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("stalled HEAD took %v with a 300ms stall timeout", took)
	}
	mustEqual(t, "stalls", c.Stats().Stalls, int64(1))
	mustEqual(t, "attempts", len(cnt.take()), 1) // a stall is not retried

	// Marked down: stale answers at once, uncached requests fail at once.
	start = time.Now()
	if got, err := c.Resolve(ctx, r); err != nil || got.Digest != want.Digest {
		t.Fatalf("down, stale tag: %v %v", got, err)
	}
	if _, err := c.Resolve(ctx, Ref{Registry: host, Repo: "r", Tag: "u"}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("down, uncached: got %v, want ErrUnavailable", err)
	}
	if took := time.Since(start); took > time.Second { // no request: far less, but -race on a loaded machine
		t.Fatalf("down answers took %v", took)
	}
	mustEqual(t, "requests while down", len(cnt.take()), 0)
}

func TestStallInBody(t *testing.T) {
	img := platformImage(t, v1.Platform{OS: "linux", Architecture: "amd64"})
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	var armed atomic.Bool
	_, _, host := newRegistry(t, faulty(func(w http.ResponseWriter, r *http.Request) bool {
		if !armed.Load() || !strings.Contains(r.URL.Path, "/blobs/") {
			return false
		}
		w.Header().Set("Content-Length", "1000")
		w.WriteHeader(http.StatusOK)
		w.Write([]byte("partial"))
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
		return true
	}))
	push(t, host, "r", "t", img)
	armed.Store(true)
	c := newClient(t, Options{Timeout: 300 * time.Millisecond})
	layers, _ := img.Layers()
	dg, _ := layers[0].Digest()
	size, _ := layers[0].Size()
	body, _, err := c.BlobSource(Ref{Registry: host, Repo: "r"}, dg.String(), size).Fetch(ctxT(t), 0, size)
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	start := time.Now()
	buf := make([]byte, 4096)
	var rerr error
	for rerr == nil {
		_, rerr = body.Read(buf)
	}
	if !errors.Is(rerr, ErrUnavailable) {
		t.Fatalf("body read: got %v, want ErrUnavailable", rerr)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("stalled body took %v", took)
	}
}

func TestHeadWithoutDigestFallsBackToGet(t *testing.T) {
	img := platformImage(t, v1.Platform{OS: "linux", Architecture: "amd64"})
	_, cnt, host := newRegistry(t, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodHead {
				w = &dropHeader{ResponseWriter: w, name: "Docker-Content-Digest"}
			}
			next.ServeHTTP(w, r)
		})
	})
	want := push(t, host, "r", "t", img)
	c := newClient(t, Options{})
	ctx := ctxT(t)
	r := Ref{Registry: host, Repo: "r", Tag: "t"}
	if _, err := c.Resolve(ctx, Ref{Registry: host, Repo: "r", Tag: "nope"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing tag: got %v", err)
	}
	cnt.take()
	d, err := c.Resolve(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "digest", d.Digest, want.Digest.String())
	if _, err := c.Document(ctx, r, d.Digest); err != nil {
		t.Fatal(err)
	}
	reqs := cnt.take()
	if len(reqs) != 2 || !strings.HasPrefix(reqs[0], "HEAD") || !strings.HasPrefix(reqs[1], "GET") {
		t.Fatalf("requests %v, want HEAD then GET", reqs)
	}
}

// dropHeader removes one header before the status is written.
type dropHeader struct {
	http.ResponseWriter
	name string
}

func (d *dropHeader) WriteHeader(code int) {
	d.ResponseWriter.Header().Del(d.name)
	d.ResponseWriter.WriteHeader(code)
}
