package resolver

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// cdnFixture is a registry whose blob GETs are redirected to a CDN on another loopback
// host (127.0.0.2), as the fault proxy's are.
type cdnFixture struct {
	c        *Client
	cnt      *counter
	src      *BlobSource
	blob     []byte
	cdnHits  atomic.Int64
	cdnFails atomic.Int64 // CDN requests still to refuse
	status   atomic.Int64 // what the CDN refuses them with
}

func newCDNFixture(t *testing.T) *cdnFixture {
	t.Helper()
	img := platformImage(t, v1.Platform{OS: "linux", Architecture: "amd64"})
	layers, _ := img.Layers()
	dg, _ := layers[0].Digest()
	size, _ := layers[0].Size()
	rc, _ := layers[0].Compressed()
	f := &cdnFixture{}
	f.blob, _ = io.ReadAll(rc)

	l, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("no 127.0.0.2 on this machine: %v", err)
	}
	cdn := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.cdnHits.Add(1)
		if f.cdnFails.Add(-1) >= 0 {
			w.WriteHeader(int(f.status.Load()))
			io.WriteString(w, "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>")
			return
		}
		http.ServeContent(w, r, "blob", time.Time{}, bytes.NewReader(f.blob))
	}))
	cdn.Listener.Close()
	cdn.Listener = l
	cdn.Start()
	t.Cleanup(cdn.Close)

	var armed atomic.Bool
	_, cnt, host := newRegistry(t, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if armed.Load() && r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/"+dg.String()) {
				http.Redirect(w, r, cdn.URL+"/blob?sig=x", http.StatusTemporaryRedirect)
				return
			}
			next.ServeHTTP(w, r)
		})
	})
	push(t, host, "r", "t", img)
	armed.Store(true)
	cnt.take()
	f.cnt = cnt
	f.c = newClient(t, Options{Timeout: 5 * time.Second})
	f.c.backoff = 50 * time.Millisecond
	f.src = f.c.BlobSource(Ref{Registry: host, Repo: "r"}, dg.String(), size)
	return f
}

// TestExpiredCDNRedirect: a redirect target (CDN) that refuses a signed URL with 401, 403,
// 404 or 410 is not the registry denying access: the client asks the registry again for a
// fresh redirect, at once, within the retry budget; when every attempt is refused the error
// is ErrUnavailable (EIO), never ErrDenied (EACCES) or ErrNotFound (ENOENT).
func TestExpiredCDNRedirect(t *testing.T) {
	tests := []struct {
		name     string
		status   int
		fails    int64
		wantErr  error // nil: success
		registry int   // blob GETs the registry sees
	}{
		{"403 once", http.StatusForbidden, 1, nil, 2},
		{"401 once", http.StatusUnauthorized, 1, nil, 2},
		{"404 once", http.StatusNotFound, 1, nil, 2},
		{"410 twice", http.StatusGone, 2, nil, 3},
		{"403 always", http.StatusForbidden, 100, ErrUnavailable, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newCDNFixture(t)
			f.status.Store(int64(tt.status))
			f.cdnFails.Store(tt.fails)
			start := time.Now()
			body, off, err := f.src.Fetch(ctxT(t), 10, 100)
			took := time.Since(start)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || errors.Is(err, ErrDenied) || errors.Is(err, ErrNotFound) {
					t.Fatalf("got %v, want only %v", err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), "127.0.0.2") {
					t.Errorf("error %q does not name the redirect target", err)
				}
			} else {
				if err != nil {
					t.Fatalf("got %v, want the bytes", err)
				}
				b, err := io.ReadAll(body)
				body.Close()
				if err != nil || !bytes.Equal(b[10-off:110-off], f.blob[10:110]) {
					t.Fatalf("wrong bytes (%v)", err)
				}
			}
			mustEqual(t, "registry blob GETs", f.cnt.count("GET /v2/r/blobs/"), tt.registry)
			mustEqual(t, "CDN requests", f.cdnHits.Load(), int64(tt.registry))
			if took > time.Second {
				t.Errorf("took %v: a fresh redirect needs no backoff", took)
			}
			if f.c.endpointFor(f.src.ref.Registry).isDown(time.Now()) {
				t.Errorf("a CDN refusal marked the registry down")
			}
		})
	}
}

// TestRedirectToLinkLocalRefused: a registry that redirects to a link-local address (a
// cloud metadata service) gets ErrInvalid at once, without the address being asked and
// without being marked down.
func TestRedirectToLinkLocalRefused(t *testing.T) {
	img := platformImage(t, v1.Platform{OS: "linux", Architecture: "amd64"})
	layers, _ := img.Layers()
	dg, _ := layers[0].Digest()
	size, _ := layers[0].Size()
	var target atomic.Value
	var armed atomic.Bool
	_, _, host := newRegistry(t, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if armed.Load() && r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
				http.Redirect(w, r, target.Load().(string), http.StatusFound)
				return
			}
			next.ServeHTTP(w, r)
		})
	})
	push(t, host, "r", "t", img)
	armed.Store(true)
	for _, to := range []string{
		"http://169.254.169.254/latest/meta-data/",
		"http://[fe80::1]/x",
		"http://0xa9fea9fe/latest/meta-data/", // 169.254.169.254 spelled as one hex number
		"http://0.0.0.0:1/x",
	} {
		t.Run(to, func(t *testing.T) {
			target.Store(to)
			c := newClient(t, Options{Timeout: 10 * time.Second})
			start := time.Now()
			_, _, err := c.BlobSource(Ref{Registry: host, Repo: "r"}, dg.String(), size).Fetch(ctxT(t), 0, 10)
			if !errors.Is(err, ErrInvalid) || !errors.Is(err, errRedirectRefused) {
				t.Fatalf("got %v, want a refused redirect (ErrInvalid)", err)
			}
			if took := time.Since(start); took > 2*time.Second {
				t.Errorf("took %v: the address was dialled", took)
			}
			if c.endpointFor(host).isDown(time.Now()) {
				t.Errorf("a refused redirect marked the registry down")
			}
		})
	}
}

func TestRedirectAllowed(t *testing.T) {
	tests := []struct {
		from, to string
		ok       bool
	}{
		{"127.0.0.1", "127.0.0.2", true}, // the tests' CDN
		{"localhost", "127.0.0.1", true},
		{"127.0.0.1", "localhost", true},
		{"::1", "127.0.0.2", true},
		{"registry.example", "cdn.example", true},
		{"registry.example", "8.8.8.8", true},
		{"10.0.0.5", "10.0.0.6", true},
		{"127.0.0.1", "192.168.1.2", true},
		{"registry.example", "registry.example", true},
		{"169.254.1.1", "169.254.1.1", true}, // the registry's own host
		{"127.0.0.1", "169.254.169.254", false},
		{"registry.example", "169.254.169.254", false},
		{"registry.example", "fe80::1", false},
		{"registry.example", "fe80::1%eth0", false},
		{"registry.example", "::ffff:169.254.169.254", false},
		{"registry.example", "0xa9fea9fe", false},
		{"registry.example", "2852039166", false},
		{"registry.example", "0.0.0.0", false},
		{"registry.example", "::", false},
		{"registry.example", "224.0.0.1", false},
		{"registry.example", "127.0.0.1", false},
		{"registry.example", "127.1", false},
		{"registry.example", "0177.0.0.1", false},
		{"registry.example", "localhost", false},
		{"registry.example", "foo.localhost", false},
		{"registry.example", "::1", false},
		{"8.8.8.8", "10.1.2.3", false},
		{"registry.example", "192.168.0.1", false},
		{"registry.example", "fd00::1", false},
	}
	for _, tt := range tests {
		err := redirectAllowed(tt.from, tt.to)
		if (err == nil) != tt.ok {
			t.Errorf("%s -> %s: got %v, want allowed %v", tt.from, tt.to, err, tt.ok)
		}
	}
}

func TestParseIPLiteral(t *testing.T) {
	tests := []struct {
		in   string
		want string // "" if not an IP literal
	}{
		{"127.0.0.1", "127.0.0.1"},
		{"127.1", "127.0.0.1"},
		{"127.0.1", "127.0.0.1"},
		{"2130706433", "127.0.0.1"},
		{"0x7f000001", "127.0.0.1"},
		{"0X7F.1", "127.0.0.1"},
		{"0177.0.0.01", "127.0.0.1"},
		{"::ffff:10.0.0.1", "10.0.0.1"},
		{"[::1]", "::1"},
		{"fe80::1%eth0", "fe80::1"},
		{"256.0.0.1", ""},
		{"1.2.3.4.5", ""},
		{"1.2.3.256", ""},
		{"0b1.0.0.1", ""},
		{"1_0.0.0.1", ""},
		{"1..2", ""},
		{"registry.example", ""},
		{"localhost", ""},
		{"", ""},
	}
	for _, tt := range tests {
		a, ok := parseIPLiteral(tt.in)
		got := ""
		if ok {
			got = a.String()
		}
		mustEqual(t, tt.in, got, tt.want)
		if ok {
			if _, err := netip.ParseAddr(got); err != nil {
				t.Errorf("%s: %v", tt.in, err)
			}
		}
	}
}

func TestTooManyRedirects(t *testing.T) {
	var hops atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		hops.Add(1)
		http.Redirect(w, r, r.URL.Path+"x", http.StatusFound)
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	c := newClient(t, Options{})
	_, err := c.Resolve(ctxT(t), Ref{Registry: host, Repo: "r", Tag: "t"})
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("got %v, want ErrInvalid", err)
	}
	mustEqual(t, "requests", hops.Load(), int64(maxRedirects))
}
