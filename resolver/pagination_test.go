package resolver

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// endlessTags serves /v2/x/tags/list pages that each link to a page never seen before,
// after delay; with trickle, a page's body never ends (a byte every 20 ms). It counts the
// pages asked for.
func endlessTags(pages *atomic.Int64, delay time.Duration, trickle bool, link func(host string, k int) string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		if r.URL.Path != "/v2/x/tags/list" {
			http.NotFound(w, r)
			return
		}
		pages.Add(1)
		k, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Query().Get("last"), "t"))
		time.Sleep(delay)
		w.Header().Set("Link", link(r.Host, k+1))
		if !trickle {
			json.NewEncoder(w).Encode(map[string]any{"name": "x", "tags": []string{fmt.Sprintf("t%d", k)}})
			return
		}
		w.Write([]byte(`{"name":"x","tags":["`))
		for {
			select {
			case <-r.Context().Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
			if _, err := w.Write([]byte("a")); err != nil {
				return
			}
			w.(http.Flusher).Flush()
		}
	})
}

// TestPaginationBounded: a listing is bounded as a whole, not only page by page: in pages
// (maxPages), in time (no page asked for after one stall timeout, every page cut at two),
// and to the registry's own host. A listing cut short is an error, never a partial list.
func TestPaginationBounded(t *testing.T) {
	relative := func(_ string, k int) string { return fmt.Sprintf(`</v2/x/tags/list?n=1&last=t%d>; rel="next"`, k) }
	tests := []struct {
		name     string
		timeout  time.Duration
		delay    time.Duration
		trickle  bool
		link     func(host string, k int) string
		wantErr  error
		maxPages int64
		maxTime  time.Duration
	}{
		{"fast endless pages: page cap", 30 * time.Second, 0, false, relative, ErrInvalid, 1000, 20 * time.Second},
		{"slow endless pages: time budget", 300 * time.Millisecond, 10 * time.Millisecond, false, relative, ErrUnavailable, 40, 2 * time.Second},
		{"a page that never ends", 300 * time.Millisecond, 0, true, relative, ErrUnavailable, 1, 2 * time.Second},
		{"Link to another host", 30 * time.Second, 0, false, func(_ string, k int) string {
			return fmt.Sprintf(`<http://169.254.169.254/v2/x/tags/list?last=t%d>; rel="next"`, k)
		}, ErrInvalid, 1, 2 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var pages atomic.Int64
			srv := httptest.NewServer(endlessTags(&pages, tt.delay, tt.trickle, tt.link))
			defer srv.Close()
			defer srv.CloseClientConnections()
			host := strings.TrimPrefix(srv.URL, "http://")
			c := newClient(t, Options{Timeout: tt.timeout})
			start := time.Now()
			l, err := c.List(ctxT(t), Name{Registry: host, Path: "x"})
			took := time.Since(start)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("got %d tags, %v; want %v", len(l.Tags), err, tt.wantErr)
			}
			if n := pages.Load(); n > tt.maxPages {
				t.Errorf("%d pages asked for, want <= %d", n, tt.maxPages)
			}
			if took > tt.maxTime {
				t.Errorf("took %v, want <= %v", took, tt.maxTime)
			}
			if c.endpointFor(host).isDown(c.now()) {
				t.Errorf("a listing cut short marked the registry down")
			}
			t.Logf("%v after %d pages in %v", err, pages.Load(), took)
		})
	}
}
