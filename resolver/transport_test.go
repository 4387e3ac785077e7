package resolver

import (
	"context"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// tlsRegistry serves one in-memory registry twice: over TLS (httptest's certificate, valid
// for example.com and 127.0.0.1) and over plain HTTP for pushing. It returns the TLS server,
// the plain host and the certificate's PEM file.
func tlsRegistry(t *testing.T) (*httptest.Server, string, string) {
	t.Helper()
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	plain := httptest.NewServer(h)
	t.Cleanup(plain.Close)
	srv := httptest.NewUnstartedServer(h)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	pemFile := filepath.Join(t.TempDir(), "ca.pem")
	b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(pemFile, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return srv, strings.TrimPrefix(plain.URL, "http://"), pemFile
}

// dialTo returns a transport like New's default whose every connection goes to addr, so
// that a name such as example.com reaches a loopback server without DNS.
func dialTo(t *testing.T, addr string) *http.Transport {
	t.Helper()
	rt, err := newTransport(nil, "")
	if err != nil {
		t.Fatal(err)
	}
	tr := rt.(*http.Transport)
	tr.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	return tr
}

func TestCAFile(t *testing.T) {
	srv, plain, pemFile := tlsRegistry(t)
	img := platformImage(t, v1.Platform{OS: "linux", Architecture: "amd64"})
	push(t, plain, "app", "v1", img)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	host := "example.com:" + port // not loopback by name: HTTPS
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	os.WriteFile(garbage, []byte("not a certificate"), 0o644)

	tests := []struct {
		name      string
		caFile    string
		transport http.RoundTripper
		wantNew   bool // New fails
		wantErr   error
	}{
		{"trusted through the CA file", pemFile, dialTo(t, srv.Listener.Addr().String()), false, nil},
		{"unknown authority without it", "", dialTo(t, srv.Listener.Addr().String()), false, ErrUnavailable},
		{"missing file", filepath.Join(t.TempDir(), "nope.pem"), nil, true, nil},
		{"no certificate in the file", garbage, nil, true, nil},
		{"transport that is not an http.Transport", pemFile, roundTripFunc(http.DefaultTransport.RoundTrip), true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(Options{CAFile: tt.caFile, Transport: tt.transport, Keychain: hostKeychain{}})
			if tt.wantNew {
				if err == nil {
					t.Fatal("New succeeded, want an error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			mustEqual(t, "scheme", c.endpointFor(host).scheme, "https")
			_, err = c.Resolve(ctxT(t), Ref{Registry: host, Repo: "app", Tag: "v1"})
			if tt.wantErr == nil && err != nil {
				t.Fatal(err)
			}
			if tt.wantErr != nil && (!errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), "certificate")) {
				t.Fatalf("got %v, want %v about the certificate", err, tt.wantErr)
			}
		})
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// envChild names the variable that runs TestEnvironmentChild as a child process, with
// environment variables that Go reads once per process.
const envChild = "REGFS_RESOLVER_ENV_CHILD"

// runChild runs TestEnvironmentChild in a child process with env and returns its output.
func runChild(t *testing.T, env ...string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestEnvironmentChild$", "-test.v", "-test.count=1")
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch strings.ToUpper(k) {
		case "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUEST_METHOD":
			continue
		}
		cmd.Env = append(cmd.Env, kv)
	}
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "--- PASS: TestEnvironmentChild") {
		t.Fatalf("child did not run:\n%s", out)
	}
	return string(out)
}

// TestEnvironmentProxies shows that the default transport honours HTTP_PROXY, HTTPS_PROXY
// and NO_PROXY, and never proxies loopback registries.
func TestEnvironmentProxies(t *testing.T) {
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	reg := httptest.NewServer(h)
	t.Cleanup(reg.Close)
	regHost := strings.TrimPrefix(reg.URL, "http://")
	push(t, regHost, "app", "v1", platformImage(t, v1.Platform{OS: "linux", Architecture: "amd64"}))

	var mu sync.Mutex
	var proxied []string // what the proxy was asked; guarded by mu
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		if r.Method == http.MethodConnect {
			proxied = append(proxied, "CONNECT "+r.Host)
		} else {
			proxied = append(proxied, r.Method+" "+r.URL.Host)
		}
		mu.Unlock()
		if r.Method == http.MethodConnect {
			w.WriteHeader(http.StatusForbidden) // no tunnels here
			return
		}
		h.ServeHTTP(w, r) // a plain HTTP request through the proxy reaches the registry
	}))
	t.Cleanup(proxy.Close)

	runChild(t, envChild+"=proxy", "REGFS_CHILD_REGISTRY="+regHost,
		"HTTP_PROXY="+proxy.URL, "HTTPS_PROXY="+proxy.URL, "NO_PROXY=direct.test")

	mu.Lock()
	defer mu.Unlock()
	for _, want := range []string{"HEAD proxied.test:5000", "CONNECT secure.test:443"} {
		if !slices.Contains(proxied, want) {
			t.Errorf("proxy was not asked %q: %q", want, proxied)
		}
	}
	for _, p := range proxied {
		if strings.Contains(p, "direct.test") || strings.Contains(p, "127.0.0.1") {
			t.Errorf("proxy was asked %q, which NO_PROXY or loopback exclude", p)
		}
	}
}

// TestEnvironmentCertFile shows that Go's SSL_CERT_FILE is honoured: the child trusts the
// test server through it alone.
func TestEnvironmentCertFile(t *testing.T) {
	srv, plain, pemFile := tlsRegistry(t)
	push(t, plain, "app", "v1", platformImage(t, v1.Platform{OS: "linux", Architecture: "amd64"}))
	runChild(t, envChild+"=certfile", "REGFS_CHILD_REGISTRY="+srv.Listener.Addr().String(), "SSL_CERT_FILE="+pemFile)
}

// TestEnvironmentChild is the child half of the tests above; it skips unless run by them.
func TestEnvironmentChild(t *testing.T) {
	mode := os.Getenv(envChild)
	addr := os.Getenv("REGFS_CHILD_REGISTRY")
	if mode == "" {
		t.Skip("run by TestEnvironmentProxies and TestEnvironmentCertFile")
	}
	ctx := ctxT(t)
	switch mode {
	case "proxy":
		var mu sync.Mutex
		var dials []string
		rt, err := newTransport(nil, "")
		if err != nil {
			t.Fatal(err)
		}
		tr := rt.(*http.Transport)
		tr.DialContext = func(ctx context.Context, network, a string) (net.Conn, error) {
			mu.Lock()
			dials = append(dials, a)
			mu.Unlock()
			if strings.HasSuffix(strings.Split(a, ":")[0], ".test") {
				a = addr // a direct connection to a test name reaches the registry
			}
			var d net.Dialer
			return d.DialContext(ctx, network, a)
		}
		c := newClient(t, Options{Transport: tr, Insecure: []string{"proxied.test:5000", "direct.test:5000"}})
		for _, reg := range []string{"proxied.test:5000", "direct.test:5000", addr} {
			if _, err := c.Resolve(ctx, Ref{Registry: reg, Repo: "app", Tag: "v1"}); err != nil {
				t.Errorf("%s: %v", reg, err)
			}
		}
		if _, err := c.Resolve(ctx, Ref{Registry: "secure.test", Repo: "app", Tag: "v1"}); !errors.Is(err, ErrUnavailable) {
			t.Errorf("secure.test through a proxy that refuses tunnels: %v, want ErrUnavailable", err)
		}
		mu.Lock()
		defer mu.Unlock()
		if !slices.Contains(dials, "direct.test:5000") {
			t.Errorf("direct.test was not dialled directly: %q", dials)
		}
		if slices.Contains(dials, "proxied.test:5000") || slices.Contains(dials, "secure.test:443") {
			t.Errorf("a proxied host was dialled directly: %q", dials)
		}
	case "certfile":
		_, port, _ := net.SplitHostPort(addr)
		tr := dialTo(t, addr)
		c := newClient(t, Options{Transport: tr})
		if _, err := c.Resolve(ctx, Ref{Registry: "example.com:" + port, Repo: "app", Tag: "v1"}); err != nil {
			t.Fatalf("with SSL_CERT_FILE: %v", err)
		}
	default:
		t.Fatalf("unknown mode %q", mode)
	}
}
