package faultproxy

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/regfs/regfs/internal/testenv"
)

// faultKind says what a Fault does.
type faultKind uint8

const (
	kindNone faultKind = iota
	kindStatus
	kindExpireToken
	kindRedirect
	kindRedirectExpired
	kindResetAfter
	kindStallAfter
	kindBlackhole
	kindShortBody
	kindShiftContentRange
	kindDropContentRange
	kindIgnoreRange
	kindFlipBit
	kindHugeManifest
	kindLinkLoop
	kindEndlessLinks
)

// Fault is one way of answering a request wrongly. The zero Fault forwards the
// request unchanged. Faults are values, built by the functions of this package.
type Fault struct {
	kind       faultKind
	status     int
	retryAfter string
	n          int64         // bytes (reset, stall, short body, huge manifest), shift, or blob offset
	age        time.Duration // ExpireTokenOlderThan: the youngest token it expires
}

// Status answers with an HTTP status (5xx, 429, …) and a small JSON error body.
func Status(code int) Fault { return Fault{kind: kindStatus, status: code} }

// StatusRetryAfter answers with an HTTP status and a Retry-After header (seconds
// or an HTTP date).
func StatusRetryAfter(code int, retryAfter string) Fault {
	return Fault{kind: kindStatus, status: code, retryAfter: retryAfter}
}

// ExpireToken makes the request's token, and every token issued before it,
// invalid and answers 401 with a challenge: the client must fetch a new token
// and try again. Tokens issued after it stay valid. It needs [Options.Auth].
func ExpireToken() Fault { return Fault{kind: kindExpireToken} }

// ExpireTokenOlderThan is ExpireToken for a token issued at least age ago; a
// younger token is left valid and the request answered as if no rule had
// acted. Real tokens live for minutes: a token rejected just after it was
// issued is a denial (the client's EACCES), not an expiry. With random
// faults, ExpireToken alone would sometimes expire the fresh token of the
// retry that re-authenticated after an expiry.
func ExpireTokenOlderThan(age time.Duration) Fault { return Fault{kind: kindExpireToken, age: age} }

// Redirect answers a blob GET with 307 to the CDN, which serves the bytes.
func Redirect() Fault { return Fault{kind: kindRedirect} }

// RedirectExpired answers a blob GET with 307 to the CDN, which answers 403 as
// an expired signed URL does: the client must ask the registry again.
func RedirectExpired() Fault { return Fault{kind: kindRedirectExpired} }

// ResetAfter sends the headers and n body bytes, then resets the connection
// (TCP RST).
func ResetAfter(n int64) Fault { return Fault{kind: kindResetAfter, n: n} }

// StallAfter sends the headers and n body bytes, then nothing more until the
// client gives up or the proxy closes.
func StallAfter(n int64) Fault { return Fault{kind: kindStallAfter, n: n} }

// Blackhole accepts the request and never answers it (no headers), until the
// client gives up or the proxy closes.
func Blackhole() Fault { return Fault{kind: kindBlackhole} }

// ShortBody answers with only the first n bytes of the body, with headers that
// agree (Content-Length n, and a Content-Range that covers n bytes): fewer
// bytes than asked for, cleanly.
func ShortBody(n int64) Fault { return Fault{kind: kindShortBody, n: n} }

// ShiftContentRange moves the Content-Range of a 206 answer by k bytes while
// the body stays the bytes that were asked for.
func ShiftContentRange(k int64) Fault { return Fault{kind: kindShiftContentRange, n: k} }

// DropContentRange removes the Content-Range header of a 206 answer.
func DropContentRange() Fault { return Fault{kind: kindDropContentRange} }

// IgnoreRange forwards a ranged request without its Range header, so the
// registry answers 200 with the whole blob.
func IgnoreRange() Fault { return Fault{kind: kindIgnoreRange} }

// FlipBit flips the lowest bit of the byte at blob offset off, if the answer
// covers it (Content-Range tells where the body starts); a negative off flips
// the middle byte of any body.
func FlipBit(off int64) Fault { return Fault{kind: kindFlipBit, n: off} }

// HugeManifest answers a manifest request (HEAD or GET) with a valid OCI image
// manifest of size bytes (padded with an annotation) and its true digest.
func HugeManifest(size int64) Fault { return Fault{kind: kindHugeManifest, n: size} }

// LinkLoop answers tags/list pages with a Link header to a page that links
// back: last=loop-a links to last=loop-b, which links to last=loop-a.
func LinkLoop() Fault { return Fault{kind: kindLinkLoop} }

// EndlessLinks answers tags/list pages with a Link header to a page never
// seen before (last=endless-<k+1>), forever.
func EndlessLinks() Fault { return Fault{kind: kindEndlessLinks} }

// String names the fault with its parameters, e.g. "status(429,retry-after=1)";
// it is the key of [Counters.Faults].
func (f Fault) String() string {
	switch f.kind {
	case kindNone:
		return "none"
	case kindStatus:
		if f.retryAfter != "" {
			return fmt.Sprintf("status(%d,retry-after=%s)", f.status, f.retryAfter)
		}
		return fmt.Sprintf("status(%d)", f.status)
	case kindExpireToken:
		if f.age > 0 {
			return fmt.Sprintf("expire-token(older than %v)", f.age)
		}
		return "expire-token"
	case kindRedirect:
		return "redirect"
	case kindRedirectExpired:
		return "redirect-expired"
	case kindResetAfter:
		return fmt.Sprintf("reset-after(%d)", f.n)
	case kindStallAfter:
		return fmt.Sprintf("stall-after(%d)", f.n)
	case kindBlackhole:
		return "blackhole"
	case kindShortBody:
		return fmt.Sprintf("short-body(%d)", f.n)
	case kindShiftContentRange:
		return fmt.Sprintf("shift-content-range(%d)", f.n)
	case kindDropContentRange:
		return "drop-content-range"
	case kindIgnoreRange:
		return "ignore-range"
	case kindFlipBit:
		return fmt.Sprintf("flip-bit(%d)", f.n)
	case kindHugeManifest:
		return fmt.Sprintf("huge-manifest(%d)", f.n)
	case kindLinkLoop:
		return "link-loop"
	case kindEndlessLinks:
		return "endless-links"
	}
	return fmt.Sprintf("fault(%d)", f.kind)
}

// Rule says which requests get a fault. Empty fields match anything.
type Rule struct {
	Method string       // "GET", "HEAD", …
	Kind   testenv.Kind // kind of path
	Repo   string       // repository name
	Ref    string       // tag or digest
	Ranged bool         // only requests with a Range header
	// Nth is the first matching request (1-based) to fault; 0 is the first.
	Nth int
	// Count is how many matching requests to fault from the Nth on; 0 is all.
	Count int
	// Prob, when in (0, 1), faults each request that passed the checks above
	// with this probability, drawn from the proxy's seeded source.
	Prob  float64
	Fault Fault
}

// String describes the rule for logs, e.g. "GET blob #2+1: reset-after(100)".
func (r Rule) String() string {
	var b strings.Builder
	for _, s := range []string{r.Method, string(r.Kind), r.Repo, r.Ref} {
		if s != "" {
			b.WriteString(s + " ")
		}
	}
	if r.Ranged {
		b.WriteString("ranged ")
	}
	if r.Nth > 0 || r.Count > 0 {
		fmt.Fprintf(&b, "#%d+%d ", max(r.Nth, 1), r.Count)
	}
	if r.Prob > 0 && r.Prob < 1 {
		fmt.Fprintf(&b, "p=%g ", r.Prob)
	}
	return strings.TrimSpace(b.String()) + ": " + r.Fault.String()
}

// matches reports whether the request's fields match the rule (position and
// probability aside).
func (r Rule) matches(req *http.Request, kind testenv.Kind, repo, ref string) bool {
	return (r.Method == "" || r.Method == req.Method) &&
		(r.Kind == "" || r.Kind == kind) &&
		(r.Repo == "" || r.Repo == repo) &&
		(r.Ref == "" || r.Ref == ref) &&
		(!r.Ranged || req.Header.Get("Range") != "")
}

// inWindow reports whether the rule's nth matching request (1-based) is one to fault.
func (r Rule) inWindow(nth int) bool {
	first := max(r.Nth, 1)
	return nth >= first && (r.Count <= 0 || nth < first+r.Count)
}
