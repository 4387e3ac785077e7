package resolver

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// TestRetryStallWindow checks the stall window of retries: quick failures
// that use up most of the retry budget, followed by a registry that stops
// answering, fail within the stall timeout plus the retry grace (not a
// timeout of their own on top); a retry that keeps delivering bytes is waited
// for past that bound.
func TestRetryStallWindow(t *testing.T) {
	img := platformImage(t, v1.Platform{OS: "linux", Architecture: "amd64"})
	const timeout = 1200 * time.Millisecond
	grace := min(retryGrace, timeout/4)
	tests := []struct {
		name string
		// second answers the retry that follows a 429 with Retry-After: 1.
		second  func(w http.ResponseWriter, r *http.Request, release <-chan struct{})
		wantErr error // nil: the body is read whole
		minTime time.Duration
		maxTime time.Duration
	}{
		{"no answer after 429", func(w http.ResponseWriter, r *http.Request, release <-chan struct{}) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}, ErrUnavailable, time.Second, timeout + grace + 300*time.Millisecond},
		{"body stalls after 429", func(w http.ResponseWriter, r *http.Request, release <-chan struct{}) {
			w.WriteHeader(http.StatusOK)
			w.Write([]byte("partial"))
			w.(http.Flusher).Flush()
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}, ErrUnavailable, time.Second, timeout + grace + 300*time.Millisecond},
		{"slow body after 429 is waited for", func(w http.ResponseWriter, r *http.Request, release <-chan struct{}) {
			w.WriteHeader(http.StatusOK)
			for range 10 { // 1.5 s of bytes, every gap shorter than the retry's window
				w.Write([]byte("x"))
				w.(http.Flusher).Flush()
				time.Sleep(150 * time.Millisecond)
			}
		}, nil, 2 * time.Second, 5 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			release := make(chan struct{})
			t.Cleanup(func() { close(release) })
			var armed atomic.Bool
			var n atomic.Int64
			_, _, host := newRegistry(t, faulty(func(w http.ResponseWriter, r *http.Request) bool {
				if !armed.Load() || !strings.Contains(r.URL.Path, "/blobs/") {
					return false
				}
				if n.Add(1) == 1 {
					w.Header().Set("Retry-After", "1")
					w.WriteHeader(http.StatusTooManyRequests)
					return true
				}
				tt.second(w, r, release)
				return true
			}))
			push(t, host, "r", "t", img)
			armed.Store(true)
			c := newClient(t, Options{Timeout: timeout})
			ls, _ := img.Layers()
			dg, _ := ls[0].Digest()
			size, _ := ls[0].Size()
			start := time.Now()
			body, _, err := c.BlobSource(Ref{Registry: host, Repo: "r"}, dg.String(), size).Fetch(ctxT(t), 0, size)
			if err == nil {
				_, err = io.Copy(io.Discard, body)
				body.Close()
			}
			took := time.Since(start)
			if tt.wantErr == nil && err != nil {
				t.Fatalf("got %v, want success", err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("got %v, want %v", err, tt.wantErr)
			}
			if took < tt.minTime || took > tt.maxTime {
				t.Fatalf("took %v, want within [%v, %v] (stall timeout %v, retry grace %v)", took, tt.minTime, tt.maxTime, timeout, grace)
			}
			mustEqual(t, "attempts", n.Load(), int64(2))
			wantStalls := int64(0)
			if tt.wantErr != nil {
				wantStalls = 1
			}
			mustEqual(t, "stalls", c.Stats().Stalls, wantStalls)
		})
	}
}
