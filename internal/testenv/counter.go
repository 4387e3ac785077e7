package testenv

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
)

// Kind classifies a registry API request by its path.
type Kind string

// Kinds of registry requests (distribution API v2 paths).
const (
	KindPing      Kind = "ping"      // /v2/
	KindCatalog   Kind = "catalog"   // /v2/_catalog
	KindTags      Kind = "tags"      // /v2/<name>/tags/list
	KindManifest  Kind = "manifest"  // /v2/<name>/manifests/<reference>
	KindBlob      Kind = "blob"      // /v2/<name>/blobs/<digest>
	KindUpload    Kind = "upload"    // /v2/<name>/blobs/uploads/...
	KindReferrers Kind = "referrers" // /v2/<name>/referrers/<digest>
	KindOther     Kind = "other"     // anything else
)

// Classify returns the kind of a request path, with the repository name and
// the reference (tag or digest; upload id for uploads) it names.
func Classify(path string) (kind Kind, repo, ref string) {
	rest, ok := strings.CutPrefix(path, "/v2/")
	switch {
	case path == "/v2" || path == "/v2/":
		return KindPing, "", ""
	case !ok:
		return KindOther, "", ""
	case rest == "_catalog":
		return KindCatalog, "", ""
	}
	if repo, ok := strings.CutSuffix(rest, "/tags/list"); ok {
		return KindTags, repo, ""
	}
	// The separator nearest the end decides, so a repository may contain
	// a component such as "manifests".
	best, kind := -1, KindOther
	sepLen := 0
	for _, k := range []struct {
		sep  string
		kind Kind
	}{
		{"/manifests/", KindManifest},
		{"/blobs/uploads", KindUpload},
		{"/blobs/", KindBlob},
		{"/referrers/", KindReferrers},
	} {
		if i := strings.LastIndex(rest, k.sep); i > 0 && i > best {
			best, kind, sepLen = i, k.kind, len(k.sep)
		}
	}
	if best > 0 {
		return kind, rest[:best], strings.TrimPrefix(rest[best+sepLen:], "/")
	}
	return KindOther, "", ""
}

// Request is one request seen by a [Counter], recorded when its handler
// returned.
type Request struct {
	Method string
	Kind   Kind
	Repo   string
	Ref    string // tag or digest (upload id for uploads)
	Range  string // the Range header, if any
	Status int
	Bytes  int64 // response body bytes written
}

// String returns e.g. "GET blob library/x sha256:ab… 206 bytes=0-99".
func (r Request) String() string {
	s := fmt.Sprintf("%s %s %s %s %d", r.Method, r.Kind, r.Repo, r.Ref, r.Status)
	if r.Range != "" {
		s += " " + r.Range
	}
	return s
}

// Counts is a snapshot of what a [Counter] saw since it was made or reset.
type Counts struct {
	Requests  []Request // in the order their handlers returned
	BlobBytes int64     // response body bytes of GET blob requests
}

// N returns the number of requests of the given method and kind; an empty
// method or kind matches any.
func (c Counts) N(method string, kind Kind) int {
	n := 0
	for _, r := range c.Requests {
		if (method == "" || r.Method == method) && (kind == "" || r.Kind == kind) {
			n++
		}
	}
	return n
}

// Total returns the number of requests.
func (c Counts) Total() int { return len(c.Requests) }

// String summarises the counts, e.g. "GET blob=2 HEAD manifest=1 (blob bytes 1234)".
func (c Counts) String() string {
	m := map[string]int{}
	for _, r := range c.Requests {
		m[r.Method+" "+string(r.Kind)]++
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, m[k])
	}
	return fmt.Sprintf("%s (blob bytes %d)", strings.Join(parts, " "), c.BlobBytes)
}

// Counter is an http.Handler middleware that records every request passed to
// next, with its response status and body size. Safe for concurrent use.
type Counter struct {
	next http.Handler

	mu        sync.Mutex
	reqs      []Request // guarded by mu
	blobBytes int64     // guarded by mu
}

var _ http.Handler = (*Counter)(nil)

// NewCounter returns a Counter in front of next.
func NewCounter(next http.Handler) *Counter {
	return &Counter{next: next}
}

// ServeHTTP serves the request with next and records it, also when next
// panics (httputil.ReverseProxy aborts with http.ErrAbortHandler when the
// client drops a streamed body: those bytes were still sent).
func (c *Counter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	cw := &countingWriter{ResponseWriter: w}
	defer c.record(r, cw)
	c.next.ServeHTTP(cw, r)
}

// record adds one finished request to the counts.
func (c *Counter) record(r *http.Request, cw *countingWriter) {
	kind, repo, ref := Classify(r.URL.Path)
	status := cw.status
	if status == 0 {
		status = http.StatusOK
	}
	rec := Request{Method: r.Method, Kind: kind, Repo: repo, Ref: ref,
		Range: r.Header.Get("Range"), Status: status, Bytes: cw.n}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reqs = append(c.reqs, rec)
	if kind == KindBlob && r.Method == http.MethodGet {
		c.blobBytes += cw.n
	}
}

// Counts returns a snapshot.
func (c *Counter) Counts() Counts {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Counts{Requests: slices.Clone(c.reqs), BlobBytes: c.blobBytes}
}

// Reset forgets everything recorded so far.
func (c *Counter) Reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reqs, c.blobBytes = nil, 0
}

// countingWriter counts body bytes and keeps the status. Used by one handler
// goroutine at a time, as http.ResponseWriter is.
type countingWriter struct {
	http.ResponseWriter
	status int
	n      int64
}

func (w *countingWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *countingWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.n += int64(n)
	return n, err
}

// Flush passes flushes through (httputil.ReverseProxy streams with them).
func (w *countingWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *countingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
