package faultproxy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/regfs/regfs/internal/testenv"
)

// target is a registry holding one image (repo "r", tag "t") whose single
// layer is blob.
type target struct {
	srv    *testenv.Server
	blob   []byte
	digest string // the layer's digest
}

func newTarget(t *testing.T) target {
	t.Helper()
	srv := testenv.InProcessRegistry(t)
	blob := make([]byte, 100_000)
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := range blob {
		blob[i] = byte(rnd.Uint32())
	}
	layer := static.NewLayer(blob, types.OCILayer)
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(srv.DirectHost()+"/r:t", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	d, _ := layer.Digest()
	return target{srv: srv, blob: blob, digest: d.String()}
}

// get sends one request to the proxy without following redirects, with a 2 s
// client timeout.
func get(t *testing.T, p *Proxy, method, path, rng, token string) (*http.Response, []byte, error) {
	t.Helper()
	return getWithin(t, 2*time.Second, p, method, path, rng, token)
}

// getWithin is get with a client timeout.
func getWithin(t *testing.T, timeout time.Duration, p *Proxy, method, path, rng, token string) (*http.Response, []byte, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, "http://"+p.Host()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c := &http.Client{
		Timeout:       timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return doRead(c, req)
}

// doRead sends req with c and returns the response and its whole body.
func doRead(c *http.Client, req *http.Request) (*http.Response, []byte, error) {
	resp, err := c.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

func TestBodyFaults(t *testing.T) {
	tg := newTarget(t)
	blobPath := "/v2/r/blobs/" + tg.digest
	tests := []struct {
		name  string
		fault Fault
		rng   string
		check func(t *testing.T, resp *http.Response, body []byte, err error)
	}{
		{"none", Fault{}, "bytes=10-19", func(t *testing.T, resp *http.Response, body []byte, err error) {
			mustStatus(t, resp, err, http.StatusPartialContent)
			mustBytes(t, body, tg.blob[10:20])
			mustHeader(t, resp, "Content-Range", fmt.Sprintf("bytes 10-19/%d", len(tg.blob)))
		}},
		{"status", Status(503), "", func(t *testing.T, resp *http.Response, body []byte, err error) {
			mustStatus(t, resp, err, http.StatusServiceUnavailable)
			mustHeader(t, resp, "Retry-After", "")
		}},
		{"status with Retry-After", StatusRetryAfter(429, "2"), "", func(t *testing.T, resp *http.Response, body []byte, err error) {
			mustStatus(t, resp, err, http.StatusTooManyRequests)
			mustHeader(t, resp, "Retry-After", "2")
		}},
		{"reset", ResetAfter(1000), "", func(t *testing.T, resp *http.Response, body []byte, err error) {
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("error %v, want ECONNRESET", err)
			}
			if resp == nil || len(body) != 1000 {
				t.Errorf("got %d body bytes before the reset, want 1000", len(body))
			}
		}},
		{"short body", ShortBody(7), "bytes=100-199", func(t *testing.T, resp *http.Response, body []byte, err error) {
			mustStatus(t, resp, err, http.StatusPartialContent)
			mustBytes(t, body, tg.blob[100:107])
			mustHeader(t, resp, "Content-Range", fmt.Sprintf("bytes 100-106/%d", len(tg.blob)))
		}},
		{"shifted Content-Range", ShiftContentRange(-50), "bytes=100-199", func(t *testing.T, resp *http.Response, body []byte, err error) {
			mustStatus(t, resp, err, http.StatusPartialContent)
			mustBytes(t, body, tg.blob[100:200])
			mustHeader(t, resp, "Content-Range", fmt.Sprintf("bytes 50-149/%d", len(tg.blob)))
		}},
		{"no Content-Range", DropContentRange(), "bytes=100-199", func(t *testing.T, resp *http.Response, body []byte, err error) {
			mustStatus(t, resp, err, http.StatusPartialContent)
			mustBytes(t, body, tg.blob[100:200])
			mustHeader(t, resp, "Content-Range", "")
		}},
		{"200 instead of 206", IgnoreRange(), "bytes=100-199", func(t *testing.T, resp *http.Response, body []byte, err error) {
			mustStatus(t, resp, err, http.StatusOK)
			mustBytes(t, body, tg.blob)
		}},
		{"flipped bit", FlipBit(105), "bytes=100-199", func(t *testing.T, resp *http.Response, body []byte, err error) {
			mustStatus(t, resp, err, http.StatusPartialContent)
			want := bytes.Clone(tg.blob[100:200])
			want[5] ^= 1
			mustBytes(t, body, want)
		}},
		{"flipped bit outside the range", FlipBit(5), "bytes=100-199", func(t *testing.T, resp *http.Response, body []byte, err error) {
			mustStatus(t, resp, err, http.StatusPartialContent)
			mustBytes(t, body, tg.blob[100:200])
		}},
		{"flipped middle bit", FlipBit(-1), "", func(t *testing.T, resp *http.Response, body []byte, err error) {
			mustStatus(t, resp, err, http.StatusOK)
			want := bytes.Clone(tg.blob)
			want[len(want)/2] ^= 1
			mustBytes(t, body, want)
		}},
		{"redirect", Redirect(), "", func(t *testing.T, resp *http.Response, body []byte, err error) {
			mustStatus(t, resp, err, http.StatusTemporaryRedirect)
			if loc := resp.Header.Get("Location"); !strings.HasPrefix(loc, "http://") || strings.Contains(loc, "expired") {
				t.Errorf("Location %q", loc)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := Start(t, Options{Upstream: tg.srv.Host()})
			p.SetRules(Rule{Method: http.MethodGet, Kind: testenv.KindBlob, Fault: tt.fault})
			resp, body, err := get(t, p, http.MethodGet, blobPath, tt.rng, "")
			tt.check(t, resp, body, err)
			want := int64(1)
			if tt.fault == (Fault{}) {
				want = 0
			}
			if got := p.Counters().Faults[tt.fault.String()]; got != want {
				t.Errorf("Faults[%s] = %d, want %d", tt.fault, got, want)
			}
		})
	}
}

func mustStatus(t *testing.T, resp *http.Response, err error, want int) {
	t.Helper()
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	if resp.StatusCode != want {
		t.Fatalf("status %d, want %d", resp.StatusCode, want)
	}
}

func mustBytes(t *testing.T, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Errorf("body: got %d bytes, want %d (equal lengths: contents differ)", len(got), len(want))
	}
}

func mustHeader(t *testing.T, resp *http.Response, key, want string) {
	t.Helper()
	if got := resp.Header.Get(key); got != want {
		t.Errorf("%s: got %q, want %q", key, got, want)
	}
}

func TestRuleWindowAndMatch(t *testing.T) {
	tg := newTarget(t)
	p := Start(t, Options{Upstream: tg.srv.Host()})
	p.SetRules(
		Rule{Kind: testenv.KindManifest, Fault: Status(404)}, // never hit: blobs only below
		Rule{Method: http.MethodGet, Kind: testenv.KindBlob, Ref: tg.digest, Ranged: true, Nth: 2, Count: 2, Fault: Status(502)},
	)
	var got []int
	for _, rng := range []string{"bytes=0-0", "", "bytes=0-0", "bytes=0-0", "bytes=0-0"} {
		resp, _, err := get(t, p, http.MethodGet, "/v2/r/blobs/"+tg.digest, rng, "")
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, resp.StatusCode)
	}
	// The unranged request does not match, so the 2nd and 3rd ranged ones fail.
	want := []int{206, 200, 502, 502, 206}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("statuses %v, want %v", got, want)
	}
	c := p.Counters()
	if c.Requests != 5 || c.ByKind[testenv.KindBlob] != 5 || c.Faults["status(502)"] != 2 || c.Faults["status(404)"] != 0 {
		t.Errorf("counters %+v", c)
	}
}

func TestProbIsSeeded(t *testing.T) {
	tg := newTarget(t)
	run := func(seed uint64) string {
		p := Start(t, Options{Upstream: tg.srv.Host(), Seed: seed})
		p.SetRules(Rule{Kind: testenv.KindBlob, Prob: 0.5, Fault: Status(500)})
		var b strings.Builder
		for range 40 {
			resp, _, err := get(t, p, http.MethodHead, "/v2/r/blobs/"+tg.digest, "", "")
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "%d ", resp.StatusCode/100)
		}
		return b.String()
	}
	a, b, c := run(1), run(1), run(2)
	if a != b {
		t.Errorf("same seed, different faults:\n%s\n%s", a, b)
	}
	if a == c {
		t.Errorf("different seeds, same faults: %s", a)
	}
	if n := strings.Count(a, "5"); n < 8 || n > 32 {
		t.Errorf("%d of 40 faulted with p=0.5", n)
	}
}

func TestStallAndBlackhole(t *testing.T) {
	tg := newTarget(t)
	p := Start(t, Options{Upstream: tg.srv.Host()})
	blobPath := "/v2/r/blobs/" + tg.digest
	t.Run("stall after n bytes", func(t *testing.T) {
		p.SetRules(Rule{Kind: testenv.KindBlob, Fault: StallAfter(500)})
		start := time.Now()
		resp, body, err := getWithin(t, 300*time.Millisecond, p, http.MethodGet, blobPath, "", "")
		if err == nil || resp == nil || len(body) != 500 {
			t.Errorf("got %d bytes, err %v; want 500 bytes then a client timeout", len(body), err)
		}
		if took := time.Since(start); took < 250*time.Millisecond {
			t.Errorf("stalled request ended after %v", took)
		}
	})
	t.Run("blackhole rule", func(t *testing.T) {
		p.SetRules(Rule{Kind: testenv.KindBlob, Fault: Blackhole()})
		if resp, _, err := getWithin(t, 300*time.Millisecond, p, http.MethodGet, blobPath, "", ""); err == nil {
			t.Errorf("blackholed request answered %d", resp.StatusCode)
		}
	})
	t.Run("down then up", func(t *testing.T) {
		p.SetRules()
		p.SetDown(true)
		if _, _, err := getWithin(t, 300*time.Millisecond, p, http.MethodGet, "/v2/", "", ""); err == nil {
			t.Errorf("request answered while down")
		}
		done := make(chan int, 1)
		go func() {
			resp, err := http.Get("http://" + p.Host() + "/v2/")
			if err != nil {
				done <- 0
				return
			}
			resp.Body.Close()
			done <- resp.StatusCode
		}()
		// Wait until the proxy holds it (the counter moves when it does).
		for end := time.Now().Add(5 * time.Second); p.Counters().Blackholed < 2; time.Sleep(5 * time.Millisecond) {
			select {
			case s := <-done:
				t.Fatalf("answered %d while down", s)
			default:
			}
			if time.Now().After(end) {
				t.Fatal("the request was not held within 5s")
			}
		}
		p.SetDown(false)
		if s := <-done; s != http.StatusOK {
			t.Errorf("held request: status %d after coming up, want 200", s)
		}
		if c := p.Counters(); c.Blackholed != 2 {
			t.Errorf("Blackholed = %d, want 2", c.Blackholed)
		}
	})
	t.Run("close releases held requests", func(t *testing.T) {
		q := Start(t, Options{Upstream: tg.srv.Host()})
		q.SetRules(Rule{Kind: testenv.KindBlob, Fault: StallAfter(10)})
		q.SetDown(true)
		for _, path := range []string{"/v2/", blobPath} {
			go http.Get("http://" + q.Host() + path)
		}
		time.Sleep(100 * time.Millisecond)
		start := time.Now()
		q.Close()
		if took := time.Since(start); took > time.Second {
			t.Errorf("Close took %v with held requests", took)
		}
	})
}

func TestHugeManifest(t *testing.T) {
	tg := newTarget(t)
	p := Start(t, Options{Upstream: tg.srv.Host()})
	const size = 8 << 20
	p.SetRules(Rule{Kind: testenv.KindManifest, Fault: HugeManifest(size)})
	head, _, err := get(t, p, http.MethodHead, "/v2/r/manifests/t", "", "")
	if err != nil {
		t.Fatal(err)
	}
	resp, body, err := get(t, p, http.MethodGet, "/v2/r/manifests/t", "", "")
	mustStatus(t, resp, err, http.StatusOK)
	if len(body) != size || head.ContentLength != size {
		t.Fatalf("HEAD length %d, GET body %d bytes; want %d", head.ContentLength, len(body), size)
	}
	sum := sha256.Sum256(body)
	if got := "sha256:" + hex.EncodeToString(sum[:]); got != head.Header.Get("Docker-Content-Digest") {
		t.Errorf("digest %s, HEAD said %s", got, head.Header.Get("Docker-Content-Digest"))
	}
	var m struct {
		SchemaVersion int               `json:"schemaVersion"`
		Annotations   map[string]string `json:"annotations"`
	}
	if err := json.Unmarshal(body, &m); err != nil || m.SchemaVersion != 2 || len(m.Annotations["pad"]) == 0 {
		t.Errorf("not a valid manifest: %v", err)
	}
}

func TestLinks(t *testing.T) {
	tg := newTarget(t)
	tests := []struct {
		fault Fault
		want  []string // the last= of successive pages
	}{
		{LinkLoop(), []string{"loop-a", "loop-b", "loop-a"}},
		{EndlessLinks(), []string{"endless-1", "endless-2", "endless-3"}},
	}
	for _, tt := range tests {
		t.Run(tt.fault.String(), func(t *testing.T) {
			p := Start(t, Options{Upstream: tg.srv.Host()})
			p.SetRules(Rule{Kind: testenv.KindTags, Fault: tt.fault})
			path := "/v2/r/tags/list"
			var got []string
			for range tt.want {
				resp, body, err := get(t, p, http.MethodGet, path, "", "")
				mustStatus(t, resp, err, http.StatusOK)
				if !json.Valid(body) {
					t.Errorf("page is not JSON: %q", body)
				}
				link := resp.Header.Get("Link")
				path = link[1:strings.IndexByte(link, '>')]
				got = append(got, path[strings.LastIndex(path, "=")+1:])
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("pages %v, want %v", got, tt.want)
			}
		})
	}
}

func TestAuthAndExpiredToken(t *testing.T) {
	tg := newTarget(t)
	p := Start(t, Options{Upstream: tg.srv.Host(), Auth: true})
	resp, _, err := get(t, p, http.MethodGet, "/v2/", "", "")
	mustStatus(t, resp, err, http.StatusUnauthorized)
	if ch := resp.Header.Get("WWW-Authenticate"); !strings.Contains(ch, `realm="http://`+p.Host()+`/token"`) {
		t.Errorf("challenge %q", ch)
	}
	tok := pullToken(t, p)
	resp, _, err = get(t, p, http.MethodGet, "/v2/", "", tok)
	mustStatus(t, resp, err, http.StatusOK)

	p.SetRules(Rule{Kind: testenv.KindBlob, Count: 1, Fault: ExpireToken()})
	resp, _, err = get(t, p, http.MethodGet, "/v2/r/blobs/"+tg.digest, "", tok)
	mustStatus(t, resp, err, http.StatusUnauthorized)
	resp, _, err = get(t, p, http.MethodGet, "/v2/", "", tok)
	mustStatus(t, resp, err, http.StatusUnauthorized) // the old token expired everywhere
	resp, body, err := get(t, p, http.MethodGet, "/v2/r/blobs/"+tg.digest, "", pullToken(t, p))
	mustStatus(t, resp, err, http.StatusOK)
	mustBytes(t, body, tg.blob)
	if c := p.Counters(); c.Tokens != 2 || c.Rejected != 3 || c.Faults["expire-token"] != 1 {
		t.Errorf("counters %+v", c)
	}
}

// TestClientThroughFaults reads the layer with go-containerregistry's client
// (which re-authenticates on 401 and follows redirects) while the proxy
// expires its token and redirects to the CDN: the bytes arrive, and the CDN
// never sees the registry's Authorization header.
func TestClientThroughFaults(t *testing.T) {
	tg := newTarget(t)
	p := Start(t, Options{Upstream: tg.srv.Host(), Auth: true})
	p.SetRules(
		Rule{Method: http.MethodGet, Kind: testenv.KindBlob, Count: 1, Fault: ExpireToken()},
		Rule{Method: http.MethodGet, Kind: testenv.KindBlob, Fault: Redirect()},
	)
	ref, err := name.NewDigest(p.Host()+"/r@"+tg.digest, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	l, err := remote.Layer(ref, remote.WithAuth(authn.Anonymous), remote.WithContext(t.Context()))
	if err != nil {
		t.Fatal(err)
	}
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	mustBytes(t, got, tg.blob)
	c := p.Counters()
	if c.Faults["expire-token"] != 1 || c.Tokens < 2 || c.CDNRequests < 1 || c.CDNAuthLeaks != 0 {
		t.Errorf("counters %+v: want one expiry, a second token, CDN requests and no leak", c)
	}

	// A client that does send the Authorization header to the CDN is caught,
	// and an expired redirect is refused.
	for _, tt := range []struct {
		name, query, auth string
		want              int
	}{
		{"leak", "", "Bearer tok-0-1", http.StatusBadRequest},
		{"expired", "?expired=1", "", http.StatusForbidden},
		{"ok", "", "", http.StatusOK},
	} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+p.CDNHost()+"/cdn/r/blobs/"+tg.digest+tt.query, nil)
		if tt.auth != "" {
			req.Header.Set("Authorization", tt.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("%s: CDN answered %d, want %d", tt.name, resp.StatusCode, tt.want)
		}
	}
	c = p.Counters()
	if c.CDNAuthLeaks != 1 || c.CDNExpired != 1 {
		t.Errorf("CDN leaks %d, expired %d; want 1, 1", c.CDNAuthLeaks, c.CDNExpired)
	}
}

func TestEvents(t *testing.T) {
	tg := newTarget(t)
	p := Start(t, Options{Upstream: tg.srv.Host()})
	blobPath := "/v2/r/blobs/" + tg.digest
	// Each step's fault is the second rule: the first never matches a blob.
	step := func(f Fault) {
		p.SetRules(Rule{Kind: testenv.KindManifest, Fault: Status(500)}, Rule{Kind: testenv.KindBlob, Fault: f})
	}
	get(t, p, http.MethodGet, blobPath, "", "")
	if got := p.Events(); len(got) != 0 {
		t.Fatalf("events recorded before RecordEvents: %v", got)
	}
	p.RecordEvents(10)
	before := time.Now()
	get(t, p, http.MethodGet, blobPath, "bytes=0-99", "")
	step(StallAfter(500))
	getWithin(t, 300*time.Millisecond, p, http.MethodGet, blobPath, "", "")
	step(ResetAfter(1000))
	get(t, p, http.MethodGet, blobPath, "", "")
	step(Redirect())
	resp, _, err := get(t, p, http.MethodGet, blobPath, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := getURL(t, resp.Header.Get("Location")); err != nil {
		t.Fatal(err)
	}
	// A handler can end after its client has seen the answer: the stalled
	// one once the server notices the client left, the reset one once the
	// connection is closed. Wait until none is in flight.
	var evs []Event
	for end := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		evs = p.Events()
		if !slices.ContainsFunc(evs, func(e Event) bool { return e.End.IsZero() }) || time.Now().After(end) {
			break
		}
	}
	for _, e := range evs {
		t.Log(e.Format(before))
	}
	want := []struct {
		server, fault, outcome string
		rule, status           int
		bytes                  int64 // -1: any
	}{
		{ServerRegistry, "", "ok", -1, 206, 100},
		{ServerRegistry, "stall-after(500)", "held until the client left", 1, 200, 500},
		{ServerRegistry, "reset-after(1000)", "reset", 1, 200, 1000},
		{ServerRegistry, "redirect", "ok", 1, 307, -1},
		{ServerCDN, "", "ok", -1, 200, int64(len(tg.blob))},
	}
	if len(evs) != len(want) {
		t.Fatalf("%d events, want %d", len(evs), len(want))
	}
	for i, w := range want {
		e := evs[i]
		if e.ID != int64(i+1) || e.Server != w.server || e.Fault != w.fault || e.Rule != w.rule || e.Outcome != w.outcome ||
			e.Status != w.status || (w.bytes >= 0 && e.Bytes != w.bytes) || e.End.IsZero() || e.Header.Before(e.Start) {
			t.Errorf("event %d: %s; want server %s, rule %d fault %q, status %d, %d bytes, outcome %q",
				i, e.Format(before), w.server, w.rule, w.fault, w.status, w.bytes, w.outcome)
		}
	}
	if d := evs[1].End.Sub(evs[1].Start); d < 250*time.Millisecond {
		t.Errorf("stalled request ended after %v", d)
	}
	// A window gets what overlaps it; the ring keeps the last n.
	// The stalled handler may end after the next request started (it ends
	// once it notices its client left): the window stops before either.
	to := evs[1].End
	if evs[2].Start.Before(to) {
		to = evs[2].Start
	}
	if got := p.EventsBetween(evs[1].Start.Add(time.Millisecond), to.Add(-time.Millisecond)); len(got) != 1 || got[0].ID != 2 {
		t.Errorf("EventsBetween(the stall) = %v, want event 2 alone", got)
	}
	p.RecordEvents(2)
	for range 3 {
		get(t, p, http.MethodHead, blobPath, "", "")
	}
	if got := p.Events(); len(got) != 2 || got[0].ID != 7 || got[1].ID != 8 {
		t.Errorf("events after 3 requests into a ring of 2: %v", got)
	}
}

// getURL GETs an absolute URL with a 2 s timeout and returns its body.
func getURL(t *testing.T, u string) (*http.Response, []byte, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	return doRead(&http.Client{Timeout: 2 * time.Second}, req)
}

func TestExpireTokenAge(t *testing.T) {
	tg := newTarget(t)
	p := Start(t, Options{Upstream: tg.srv.Host(), Auth: true})
	blobPath := "/v2/r/blobs/" + tg.digest
	status := func(tok string) int {
		t.Helper()
		resp, _, err := get(t, p, http.MethodHead, blobPath, "", tok)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode
	}
	old, young := pullToken(t, p), pullToken(t, p)

	// Expiring the older token leaves the one issued after it valid.
	p.SetRules(Rule{Kind: testenv.KindBlob, Count: 1, Fault: ExpireToken()})
	if s := status(old); s != http.StatusUnauthorized {
		t.Fatalf("expired request: %d, want 401", s)
	}
	if s, s2 := status(old), status(young); s != http.StatusUnauthorized || s2 != http.StatusOK {
		t.Errorf("after the expiry: older token %d (want 401), younger token %d (want 200)", s, s2)
	}

	// A token younger than the age is not expired: the request is answered
	// as if no rule acted; once old enough it is.
	const age = 300 * time.Millisecond
	p.ResetCounters()
	p.SetRules(Rule{Kind: testenv.KindBlob, Fault: ExpireTokenOlderThan(age)})
	fresh := pullToken(t, p)
	if s := status(fresh); s != http.StatusOK {
		t.Errorf("fresh token: %d, want 200", s)
	}
	if c := p.Counters(); len(c.Faults) != 0 {
		t.Errorf("faults counted for a token too young: %v", c.Faults)
	}
	time.Sleep(age)
	if s := status(fresh); s != http.StatusUnauthorized {
		t.Errorf("token older than %v: %d, want 401", age, s)
	}
	if c := p.Counters(); c.Faults["expire-token(older than 300ms)"] != 1 {
		t.Errorf("faults %v, want one expire-token(older than 300ms)", c.Faults)
	}
}

// pullToken gets a pull token for repository r from p's token endpoint.
func pullToken(t *testing.T, p *Proxy) string {
	t.Helper()
	resp, body, err := get(t, p, http.MethodGet, "/token?scope=repository:r:pull", "", "")
	mustStatus(t, resp, err, http.StatusOK)
	var tok struct{ Token string }
	if err := json.Unmarshal(body, &tok); err != nil {
		t.Fatal(err)
	}
	return tok.Token
}
