package testenv

import (
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
)

// Server is a registry for one test, behind a counting proxy. Safe for
// concurrent use.
type Server struct {
	counter *Counter
	proxy   *httptest.Server
	direct  string // host:port of the registry itself
	storage string // the storage directory of a docker-registry; "" in process
}

// Host returns the counted address (host:port, plain HTTP).
func (r *Server) Host() string { return hostOf(r.proxy.URL) }

// DirectHost returns the registry's own address, which the counter does not
// see: push fixtures there to keep counts clean.
func (r *Server) DirectHost() string { return r.direct }

// Storage returns the storage directory of a registry started by
// [RegistryWithOptions] or [Registry], or "" for [InProcessRegistry].
func (r *Server) Storage() string { return r.storage }

// Counter returns the counter in front of the registry.
func (r *Server) Counter() *Counter { return r.counter }

// Counts returns a snapshot of the requests made through Host.
func (r *Server) Counts() Counts { return r.counter.Counts() }

// Reset forgets the requests counted so far.
func (r *Server) Reset() { r.counter.Reset() }

func hostOf(u string) string { return strings.TrimPrefix(u, "http://") }

// InProcessRegistry returns go-containerregistry's in-memory registry
// (pkg/registry), served on two loopback ports: one counted, one direct.
// Both are closed in t.Cleanup.
func InProcessRegistry(t testing.TB) *Server {
	t.Helper()
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	direct := httptest.NewServer(h)
	t.Cleanup(direct.Close)
	return withProxy(t, hostOf(direct.URL), NewCounter(h))
}

// withProxy starts the counted server for counter and registers its cleanup.
func withProxy(t testing.TB, direct string, counter *Counter) *Server {
	t.Helper()
	proxy := httptest.NewServer(counter)
	t.Cleanup(proxy.Close)
	return &Server{counter: counter, proxy: proxy, direct: direct}
}

// ReverseProxy forwards to the registry at host, keeping the Host header the
// client sent so that absolute Location URLs point back through the proxy.
// It returns the transport it uses (a clone of http.DefaultTransport) so the
// caller can tune it before use and close its idle connections.
func ReverseProxy(host string) (*httputil.ReverseProxy, *http.Transport) {
	target := &url.URL{Scheme: "http", Host: host}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host
		},
		Transport: tr,
		ErrorLog:  log.New(io.Discard, "", 0),
	}, tr
}
