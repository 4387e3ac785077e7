package resolver

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// staticKeychain returns one user for every registry.
type staticKeychain struct{ user, pass string }

func (k staticKeychain) Resolve(authn.Resource) (authn.Authenticator, error) {
	return authn.FromConfig(authn.AuthConfig{Username: k.user, Password: k.pass}), nil
}

func TestBearerAuthAndCDNRedirect(t *testing.T) {
	const user, pass, token = "alice", "hunter2-password", "sekret-token"
	img := platformImage(t, v1.Platform{OS: "linux", Architecture: "amd64"})
	layers, _ := img.Layers()
	dg, _ := layers[0].Digest()
	size, _ := layers[0].Size()
	rc, _ := layers[0].Compressed()
	blob, _ := io.ReadAll(rc)

	var cdnAuth atomic.Int64 // CDN requests that carried an Authorization header
	var cdnIgnoreRange atomic.Bool
	cdn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			cdnAuth.Add(1)
		}
		if cdnIgnoreRange.Load() {
			r.Header.Del("Range")
		}
		http.ServeContent(w, r, "blob", time.Time{}, bytes.NewReader(blob))
	}))
	defer cdn.Close()

	var armed atomic.Bool
	var mu sync.Mutex
	var scopes []string // guarded by mu
	_, cnt, host := newRegistry(t, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !armed.Load() {
				next.ServeHTTP(w, r)
				return
			}
			if r.URL.Path == "/token" {
				u, p, ok := r.BasicAuth()
				if !ok || u != user || p != pass {
					w.WriteHeader(http.StatusUnauthorized)
					return
				}
				mu.Lock()
				scopes = append(scopes, r.URL.Query().Get("scope"))
				mu.Unlock()
				io.WriteString(w, `{"token":"`+token+`"}`)
				return
			}
			if r.Header.Get("Authorization") != "Bearer "+token {
				w.Header().Set("WWW-Authenticate", `Bearer realm="http://`+r.Host+`/token",service="test"`)
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			if strings.Contains(r.URL.Path, "/blobs/sha256:"+dg.Hex) {
				http.Redirect(w, r, cdn.URL+"/blob", http.StatusTemporaryRedirect)
				return
			}
			next.ServeHTTP(w, r)
		})
	})
	push(t, host, "priv/app", "v1", img)
	armed.Store(true)
	cnt.take()

	var logs bytes.Buffer
	c := newClient(t, Options{
		Keychain: staticKeychain{user, pass},
		Logger:   slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	ctx := ctxT(t)
	r := Ref{Registry: host, Repo: "priv/app", Tag: "v1"}
	d, err := c.Resolve(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Platforms(ctx, r, d); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	gotScopes := strings.Join(scopes, ",")
	mu.Unlock()
	mustEqual(t, "token scopes", gotScopes, "repository:priv/app:pull")

	src := c.BlobSource(r, dg.String(), size)
	for _, ignore := range []bool{false, true} {
		cdnIgnoreRange.Store(ignore)
		body, start, err := src.Fetch(ctx, 10, 20)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(body)
		body.Close()
		if err != nil {
			t.Fatal(err)
		}
		wantStart := int64(10)
		if ignore {
			wantStart = 0
		}
		mustEqual(t, "start", start, wantStart)
		if !bytes.Equal(b[10-start:30-start], blob[10:30]) {
			t.Fatalf("ignoreRange=%v: wrong bytes", ignore)
		}
	}
	mustEqual(t, "CDN requests with Authorization", cdnAuth.Load(), int64(0))
	if s := logs.String(); strings.Contains(s, pass) || strings.Contains(s, token) {
		t.Fatalf("credentials in logs:\n%s", s)
	}
	// One ping and one token for the repository, whatever was asked after.
	if n := countExact(cnt, "GET /v2/"); n != 1 {
		t.Fatalf("pings: %d, want 1", n)
	}
	if n := cnt.count("/token"); n != 1 {
		t.Fatalf("token requests: %d, want 1", n)
	}
}

func countExact(c *counter, line string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, r := range c.reqs {
		if r == line {
			n++
		}
	}
	return n
}

func TestBadCredentialsDenied(t *testing.T) {
	_, _, host := newRegistry(t, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/token" {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="http://`+r.Host+`/token",service="test"`)
			w.WriteHeader(http.StatusUnauthorized)
		})
	})
	c := newClient(t, Options{Keychain: staticKeychain{"u", "wrong"}})
	_, err := c.Resolve(ctxT(t), Ref{Registry: host, Repo: "x", Tag: "t"})
	if !errorsIs(err, ErrDenied) {
		t.Fatalf("got %v, want ErrDenied", err)
	}
}
