package resolver

import (
	"bytes"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func TestParseMirror(t *testing.T) {
	tests := []struct {
		in, def        string
		wantReg, wantH string
		wantErr        bool
	}{
		{"mirror.gcr.io", "", "docker.io", "mirror.gcr.io", false},
		{"mirror.gcr.io", "ghcr.io", "ghcr.io", "mirror.gcr.io", false},
		{"https://mirror.example.com/", "", "docker.io", "mirror.example.com", false},
		{"http://10.1.2.3:5000", "", "docker.io", "http://10.1.2.3:5000", false},
		{"index.docker.io=127.0.0.1:5001", "ghcr.io", "docker.io", "127.0.0.1:5001", false},
		{"localhost:5000=Mirror.Local:5001", "", "localhost:5000", "mirror.local:5001", false},
		{"=mirror", "", "", "", true},
		{"ghcr.io=", "", "", "", true},
		{"ghcr.io=mirror/path", "", "", "", true},
		{"ftp://mirror", "", "", "", true},
		{"", "", "", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			reg, host, err := ParseMirror(tt.in, tt.def)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("got %q %q, want an error", reg, host)
				}
				return
			}
			if err != nil || reg != tt.wantReg || host != tt.wantH {
				t.Fatalf("got %q %q %v, want %q %q", reg, host, err, tt.wantReg, tt.wantH)
			}
		})
	}
}

func TestNewRejectsBadMirrors(t *testing.T) {
	for _, m := range []map[string][]string{
		{"bad host": {"mirror.local"}},
		{"ghcr.io": {"a/b"}},
		{"docker.io": {"index.docker.io"}},
	} {
		if _, err := New(Options{Mirrors: m, Keychain: authn.NewMultiKeychain()}); err == nil {
			t.Errorf("New(Mirrors: %v) = nil error", m)
		}
	}
}

// hostLog records the requests of several servers in one order, as "label METHOD path".
type hostLog struct {
	armed atomic.Bool // record only once set (after the test's pushes)
	mu    sync.Mutex
	lines []string // guarded by mu
	ns    []string // ns query parameters seen; guarded by mu
}

func (l *hostLog) wrap(label string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if l.armed.Load() && r.URL.Path != "/v2/" {
			l.mu.Lock()
			l.lines = append(l.lines, label+" "+r.Method+" "+pullKind(r.URL.Path))
			if label != "upstream" {
				l.ns = append(l.ns, r.URL.Query().Get("ns"))
			}
			l.mu.Unlock()
		}
		next.ServeHTTP(w, r)
	})
}

func (l *hostLog) snapshot() ([]string, []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.lines), slices.Clone(l.ns)
}

// pullKind shortens a pull path to "manifest" or "blob".
func pullKind(p string) string {
	switch {
	case strings.Contains(p, "/manifests/"):
		return "manifest"
	case strings.Contains(p, "/blobs/"):
		return "blob"
	}
	return p
}

// pulls are the four pulls pullImage makes: a tag HEAD, the manifest, the config and a
// range of the layer.
var pulls = []string{"HEAD manifest", "GET manifest", "GET blob", "GET blob"}

// pullImage resolves r, reads its manifest, config and the first bytes of its layer, and
// checks them against img.
func pullImage(t *testing.T, c *Client, r Ref, img v1.Image) {
	t.Helper()
	ctx := ctxT(t)
	d, err := c.Resolve(ctx, r)
	if err != nil {
		t.Fatalf("resolve: %v", err)
	}
	wantDigest, _ := img.Digest()
	mustEqual(t, "digest", d.Digest, wantDigest.String())
	m, _, err := c.Manifest(ctx, r, d.Digest)
	if err != nil {
		t.Fatalf("manifest: %v", err)
	}
	cfg, err := c.Blob(ctx, r, m.Config.Digest)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	wantCfg, _ := img.RawConfigFile()
	mustEqual(t, "config", string(cfg), string(wantCfg))
	l := m.Layers[0]
	body, start, err := c.BlobSource(r, l.Digest, l.Size).Fetch(ctx, 0, 100)
	if err != nil {
		t.Fatalf("blob: %v", err)
	}
	got, err := io.ReadAll(body)
	body.Close()
	if err != nil || start != 0 || len(got) < 100 {
		t.Fatalf("blob: %d bytes from %d, %v", len(got), start, err)
	}
	layers, _ := img.Layers()
	rc, _ := layers[0].Compressed()
	want, _ := io.ReadAll(rc)
	if !bytes.Equal(got[:100], want[:100]) {
		t.Fatal("blob: wrong bytes")
	}
}

// closedAddr returns a loopback address where nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestMirrorOrderAndFallback(t *testing.T) {
	type kind int
	const (
		full   kind = iota // has the image
		empty              // a registry without it: 404
		broken             // 500 for every pull (its /v2/ answers)
		down               // nothing listens
	)
	tests := []struct {
		name      string
		mirrors   []kind
		servedBy  string // label of the host that answers every pull
		fallbacks int64
	}{
		{"served by the mirror", []kind{full}, "m0", 0},
		{"mirror lacks content", []kind{empty}, "upstream", 4},
		{"mirror fails", []kind{broken}, "upstream", 4},
		{"mirror unreachable", []kind{down}, "upstream", 4},
		{"second mirror serves", []kind{empty, full}, "m1", 4},
		{"broken then down then full", []kind{broken, down, full}, "m2", 8},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := platformImage(t, v1.Platform{OS: "linux", Architecture: "amd64"})
			var log hostLog
			_, _, up := newRegistry(t, func(h http.Handler) http.Handler { return log.wrap("upstream", h) })
			push(t, up, "app", "v1", img)
			var hosts []string
			for i, k := range tt.mirrors {
				label := "m" + string(rune('0'+i))
				switch k {
				case full, empty:
					_, _, h := newRegistry(t, func(next http.Handler) http.Handler { return log.wrap(label, next) })
					if k == full {
						push(t, h, "app", "v1", img)
					}
					hosts = append(hosts, h)
				case broken:
					srv := httptest.NewServer(log.wrap(label, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
						if r.URL.Path != "/v2/" {
							w.WriteHeader(http.StatusInternalServerError)
						}
					})))
					t.Cleanup(srv.Close)
					hosts = append(hosts, strings.TrimPrefix(srv.URL, "http://"))
				case down:
					hosts = append(hosts, closedAddr(t))
				}
			}
			log.armed.Store(true)
			c := newClient(t, Options{Mirrors: map[string][]string{up: hosts}})
			pullImage(t, c, Ref{Registry: up, Repo: "app", Tag: "v1"}, img)

			// Every pull went to the hosts in order, one attempt each, up to the one
			// that answered; nothing went further.
			var want []string
			for _, p := range pulls {
				for i, k := range tt.mirrors {
					label := "m" + string(rune('0'+i))
					if k != down {
						want = append(want, label+" "+p)
					}
					if label == tt.servedBy {
						break
					}
				}
				if tt.servedBy == "upstream" {
					want = append(want, "upstream "+p)
				}
			}
			got, ns := log.snapshot()
			if !slices.Equal(got, want) {
				t.Errorf("requests:\n got %q\nwant %q", got, want)
			}
			for _, v := range ns {
				if v != up {
					t.Errorf("mirror request with ns=%q, want %q", v, up)
				}
			}
			mustEqual(t, "mirror fallbacks", c.Stats().MirrorFallbacks, tt.fallbacks)
		})
	}
}

// hostKeychain returns the credentials of a registry by its host; anonymous for others.
type hostKeychain map[string][2]string

func (k hostKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	if up, ok := k[r.RegistryStr()]; ok {
		return authn.FromConfig(authn.AuthConfig{Username: up[0], Password: up[1]}), nil
	}
	return authn.Anonymous, nil
}

func TestMirrorNeverGetsRegistryCredentials(t *testing.T) {
	const user, pass, token = "alice", "upstream-password", "upstream-token"
	const mirrorUser, mirrorPass = "bob", "mirror-password"
	bobBasic := "Basic " + base64.StdEncoding.EncodeToString([]byte(mirrorUser+":"+mirrorPass))
	img := platformImage(t, v1.Platform{OS: "linux", Architecture: "amd64"})

	for _, mirrorAuth := range []bool{false, true} {
		name := "anonymous mirror"
		if mirrorAuth {
			name = "mirror with its own credentials"
		}
		t.Run(name, func(t *testing.T) {
			var armed atomic.Bool
			_, _, up := newRegistry(t, func(next http.Handler) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					switch {
					case !armed.Load():
						next.ServeHTTP(w, r)
					case r.URL.Path == "/token":
						if u, p, ok := r.BasicAuth(); !ok || u != user || p != pass {
							w.WriteHeader(http.StatusUnauthorized)
							return
						}
						io.WriteString(w, `{"token":"`+token+`"}`)
					case r.Header.Get("Authorization") != "Bearer "+token:
						w.Header().Set("WWW-Authenticate", `Bearer realm="http://`+r.Host+`/token",service="up"`)
						w.WriteHeader(http.StatusUnauthorized)
					default:
						next.ServeHTTP(w, r)
					}
				})
			})
			push(t, up, "priv/app", "v1", img)
			armed.Store(true)

			var mu sync.Mutex
			var seen []string // Authorization headers the mirror received; guarded by mu
			mirror := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				a := r.Header.Get("Authorization")
				mu.Lock()
				seen = append(seen, a)
				mu.Unlock()
				if mirrorAuth && a != bobBasic {
					w.Header().Set("WWW-Authenticate", `Basic realm="mirror"`)
					w.WriteHeader(http.StatusUnauthorized)
					return
				}
				if r.URL.Path != "/v2/" {
					http.NotFound(w, r) // lacks everything: every pull goes on upstream
				}
			}))
			t.Cleanup(mirror.Close)
			mhost := strings.TrimPrefix(mirror.URL, "http://")
			keys := hostKeychain{up: {user, pass}}
			if mirrorAuth {
				keys[mhost] = [2]string{mirrorUser, mirrorPass}
			}
			c := newClient(t, Options{Keychain: keys, Mirrors: map[string][]string{up: {mhost}}})
			pullImage(t, c, Ref{Registry: up, Repo: "priv/app", Tag: "v1"}, img)

			mu.Lock()
			defer mu.Unlock()
			withBob := 0
			for _, a := range seen {
				switch {
				case a == "":
				case a == bobBasic && mirrorAuth:
					withBob++
				default:
					t.Errorf("mirror received Authorization %q", a)
				}
				if strings.Contains(a, token) || strings.Contains(a, base64.StdEncoding.EncodeToString([]byte(user+":"+pass))) {
					t.Errorf("mirror received the registry's credentials: %q", a)
				}
			}
			if mirrorAuth && withBob < len(pulls) {
				t.Errorf("mirror got its own credentials on %d requests, want every pull (%d): %q", withBob, len(pulls), seen)
			}
			if len(seen) < len(pulls) {
				t.Errorf("mirror saw %d requests, want at least %d", len(seen), len(pulls))
			}
		})
	}
}

func TestMirrorSendsWrongBytes(t *testing.T) {
	img := platformImage(t, v1.Platform{OS: "linux", Architecture: "amd64"})
	_, upCnt, up := newRegistry(t, nil)
	push(t, up, "app", "v1", img)
	other := platformImage(t, v1.Platform{OS: "linux", Architecture: "amd64"})
	otherRaw, _ := other.RawManifest()
	// The mirror answers every manifest with another image's bytes.
	mirror := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/manifests/") && r.Method == http.MethodGet {
			w.Write(otherRaw)
			return
		}
		if r.URL.Path != "/v2/" {
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(mirror.Close)
	c := newClient(t, Options{Mirrors: map[string][]string{up: {strings.TrimPrefix(mirror.URL, "http://")}}})
	d, _ := img.Digest()
	b, err := c.Document(ctxT(t), Ref{Registry: up, Repo: "app"}, d.String())
	if err != nil {
		t.Fatal(err)
	}
	want, _ := img.RawManifest()
	mustEqual(t, "document", string(b), string(want))
	mustEqual(t, "upstream manifest GETs", upCnt.count("GET /v2/app/manifests/"), 1)
}
