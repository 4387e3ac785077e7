package faultproxy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
)

// hopHeaders are not forwarded in either direction.
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// copyHeader copies src into dst, hop-by-hop headers left out.
func copyHeader(dst, src http.Header) {
	for k, vs := range src {
		dst[k] = append([]string(nil), vs...)
	}
	for _, h := range hopHeaders {
		dst.Del(h)
	}
}

// forward sends the request upstream (without its Authorization header: the
// proxy does the authentication) and writes the answer, changed by f.
func (p *Proxy) forward(w http.ResponseWriter, r *http.Request, f Fault) {
	out, err := http.NewRequestWithContext(r.Context(), r.Method, "http://"+p.upstream+r.URL.RequestURI(), r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	out.ContentLength = r.ContentLength
	if r.ContentLength == 0 {
		out.Body = nil
	}
	copyHeader(out.Header, r.Header)
	out.Header.Del("Authorization")
	out.Host = r.Host // absolute Location URLs point back through the proxy
	if f.kind == kindIgnoreRange {
		out.Header.Del("Range")
	}
	resp, err := p.tr.RoundTrip(out)
	if err != nil {
		p.outcome(w, "upstream: %v", err)
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	h := w.Header()
	copyHeader(h, resp.Header)
	status := resp.StatusCode
	start, end, total, hasRange := contentRange(resp.Header.Get("Content-Range"))
	if status != http.StatusPartialContent {
		start, hasRange = 0, false
	}
	length := resp.ContentLength // -1 if unknown
	limit := int64(-1)           // body bytes to send before the fault's end; -1: all
	switch f.kind {
	case kindShiftContentRange:
		if hasRange {
			h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%s", start+f.n, end+f.n, total))
		}
	case kindDropContentRange:
		h.Del("Content-Range")
	case kindShortBody:
		if r.Method != http.MethodHead && length > f.n {
			limit, length = f.n, f.n
			h.Set("Content-Length", strconv.FormatInt(f.n, 10))
			if hasRange && f.n > 0 {
				h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%s", start, start+f.n-1, total))
			}
		}
	case kindResetAfter, kindStallAfter:
		if r.Method != http.MethodHead && (length < 0 || length > f.n) {
			limit = f.n
		}
	case kindLinkLoop, kindEndlessLinks:
		if r.Method == http.MethodGet {
			h.Set("Link", nextLink(r, f))
		}
	}
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	body := io.Reader(resp.Body)
	if f.kind == kindFlipBit {
		at := f.n - start
		if f.n < 0 {
			at = length / 2
		}
		body = &flipReader{r: body, at: at}
	}
	if limit < 0 {
		if _, err := io.Copy(w, body); err != nil && r.Context().Err() == nil {
			p.outcome(w, "copy: %v", err)
		}
		return
	}
	if _, err := io.CopyN(w, body, limit); err != nil && f.kind != kindShortBody {
		if r.Context().Err() == nil {
			p.outcome(w, "copy: %v", err)
		}
		return
	}
	rc := http.NewResponseController(w)
	switch f.kind {
	case kindResetAfter:
		if err := rc.Flush(); err != nil {
			p.outcome(w, "flush before the reset: %v", err)
			return
		}
		conn, _, err := rc.Hijack()
		if err != nil {
			p.outcome(w, "hijack for the reset: %v", err)
			return
		}
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.SetLinger(0) // close sends RST
		}
		p.outcome(w, "reset") // before the client can see it
		conn.Close()
	case kindStallAfter:
		rc.Flush()
		p.hold(w, r)
	}
}

// contentRange parses "bytes start-end/total" (total may be "*").
func contentRange(v string) (start, end int64, total string, ok bool) {
	rest, found := strings.CutPrefix(strings.TrimSpace(v), "bytes ")
	if !found {
		return 0, 0, "", false
	}
	rng, total, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, "", false
	}
	a, b, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, "", false
	}
	start, err1 := strconv.ParseInt(a, 10, 64)
	end, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, "", false
	}
	return start, end, total, true
}

// nextLink returns the Link header of a looping or endless tags/list page.
func nextLink(r *http.Request, f Fault) string {
	last := r.URL.Query().Get("last")
	var next string
	if f.kind == kindLinkLoop {
		next = "loop-a"
		if last == "loop-a" {
			next = "loop-b"
		}
	} else {
		k, _ := strconv.Atoi(strings.TrimPrefix(last, "endless-"))
		next = fmt.Sprintf("endless-%d", k+1)
	}
	return fmt.Sprintf(`<%s?n=100&last=%s>; rel="next"`, r.URL.Path, next)
}

// flipReader flips the lowest bit of the byte at position at of the stream.
type flipReader struct {
	r   io.Reader
	at  int64
	pos int64
}

func (f *flipReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if i := f.at - f.pos; i >= 0 && i < int64(n) {
		p[i] ^= 1
	}
	f.pos += int64(n)
	return n, err
}

// Parts of the huge manifest: prefix, padding, suffix.
const (
	hugePrefix = `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",` +
		`"config":{"mediaType":"application/vnd.oci.image.config.v1+json",` +
		`"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},` +
		`"layers":[],"annotations":{"pad":"`
	hugeSuffix = `"}}`
)

// hugeBody streams the huge manifest of size bytes.
func hugeBody(size int64) io.Reader {
	pad := max(size-int64(len(hugePrefix)+len(hugeSuffix)), 0)
	return io.MultiReader(strings.NewReader(hugePrefix), io.LimitReader(repeatByte('a'), pad), strings.NewReader(hugeSuffix))
}

// repeatByte is an endless stream of one byte.
type repeatByte byte

func (b repeatByte) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(b)
	}
	return len(p), nil
}

// hugeDigest returns the digest of the huge manifest of size bytes, computed once.
func (p *Proxy) hugeDigest(size int64) string {
	p.mu.Lock()
	d, ok := p.huge[size]
	p.mu.Unlock()
	if ok {
		return d
	}
	h := sha256.New()
	io.Copy(h, hugeBody(size))
	d = "sha256:" + hex.EncodeToString(h.Sum(nil))
	p.mu.Lock()
	p.huge[size] = d
	p.mu.Unlock()
	return d
}

// serveHugeManifest answers a manifest request with the huge manifest.
func (p *Proxy) serveHugeManifest(w http.ResponseWriter, r *http.Request, size int64) {
	size = max(size, int64(len(hugePrefix)+len(hugeSuffix)))
	h := w.Header()
	h.Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
	h.Set("Content-Length", strconv.FormatInt(size, 10))
	h.Set("Docker-Content-Digest", p.hugeDigest(size))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	io.Copy(w, hugeBody(size))
}
