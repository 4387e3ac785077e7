package integration

import (
	"context"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/regfs/regfs/internal/fixture"
	"github.com/regfs/regfs/internal/testenv"
)

// startMirrorRegistry starts Debian's docker-registry in proxy mode (a pull-through cache)
// of remote (host:port, plain HTTP), behind a counting proxy of its own. It is stopped at
// cleanup; its log is printed if the test failed.
func startMirrorRegistry(t *testing.T, remote string) *testenv.Server {
	t.Helper()
	return testenv.RegistryWithOptions(t, testenv.RegistryOptions{ProxyRemoteURL: "http://" + remote})
}

// mirrorTap is a reverse proxy that counts blob GETs when they arrive and their body bytes
// as they are written, so that a response the client abandons (httputil.ReverseProxy then
// aborts its handler with a panic, and testenv.Counter records nothing) is counted too.
// Safe for concurrent use.
type mirrorTap struct {
	next http.Handler

	mu        sync.Mutex
	blobGETs  int   // guarded by mu
	blobBytes int64 // guarded by mu
}

// newMirrorTap returns a tap in front of the registry at host, served on loopback; its
// address is the second result.
func newMirrorTap(t *testing.T, host string) (*mirrorTap, string) {
	t.Helper()
	target := &url.URL{Scheme: "http", Host: host}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(tr.CloseIdleConnections)
	tap := &mirrorTap{next: &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		Transport: tr,
		ErrorLog:  log.New(io.Discard, "", 0),
	}}
	srv := httptest.NewServer(tap)
	t.Cleanup(srv.Close)
	return tap, strings.TrimPrefix(srv.URL, "http://")
}

func (m *mirrorTap) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	kind, _, _ := testenv.Classify(r.URL.Path)
	if kind != testenv.KindBlob || r.Method != http.MethodGet {
		m.next.ServeHTTP(w, r)
		return
	}
	m.mu.Lock()
	m.blobGETs++
	m.mu.Unlock()
	m.next.ServeHTTP(&mirrorTapWriter{ResponseWriter: w, tap: m}, r)
}

// counts returns the blob GETs and body bytes seen so far.
func (m *mirrorTap) counts() (int, int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.blobGETs, m.blobBytes
}

// reset forgets the counts.
func (m *mirrorTap) reset() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.blobGETs, m.blobBytes = 0, 0
}

// mirrorTapWriter counts body bytes into its tap as they are written.
type mirrorTapWriter struct {
	http.ResponseWriter
	tap *mirrorTap
}

func (w *mirrorTapWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.tap.mu.Lock()
	w.tap.blobBytes += int64(n)
	w.tap.mu.Unlock()
	return n, err
}

// Flush passes flushes through (httputil.ReverseProxy streams with them).
func (w *mirrorTapWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// mirrorWaitStored waits until the pull-through cache m has stored every blob of digests
// (it stores a blob in the background after serving it whole).
func mirrorWaitStored(t *testing.T, m *testenv.Server, digests []string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for _, d := range digests {
		hex := strings.TrimPrefix(d, "sha256:")
		p := filepath.Join(m.Storage(), "docker", "registry", "v2", "blobs", "sha256", hex[:2], hex, "data")
		for {
			if _, err := os.Stat(p); err == nil {
				break
			}
			if time.Now().After(deadline) {
				var have []string
				filepath.WalkDir(m.Storage(), func(p string, _ os.DirEntry, _ error) error {
					have = append(have, strings.TrimPrefix(p, m.Storage()))
					return nil
				})
				t.Fatalf("the mirror has not stored %s after 15 s; it has:\n%s\nit was asked:\n%s", d, strings.Join(have, "\n"), m.Counts().Requests)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// TestMirrorPullThroughCache reads files through a real pull-through cache: a first mount
// fills the mirror; a second mount, with an empty cache of its own, reads the same files
// with no blob bytes from the upstream registry.
func TestMirrorPullThroughCache(t *testing.T) {
	upstream := testenv.Registry(t)
	set, err := fixture.Features(fixture.FeatureOptions{LargeSize: 3 << 20, Seed: 5})
	if err != nil {
		t.Fatal(err)
	}
	if err := set.Push(context.Background(), upstream.DirectHost()); err != nil {
		t.Fatal(err)
	}
	// The mirror pulls from upstream through a tap that also counts abandoned responses.
	tap, tapHost := newMirrorTap(t, upstream.Host())
	mirror := startMirrorRegistry(t, tapHost)

	// What the mounts read: a few files of each platform.
	var files, platforms [][]string
	for _, p := range fixture.FeaturesPlatforms() {
		dir := append([]string{fixture.FeaturesOCIRepo, fixture.FeaturesTag}, platformPath(p)...)
		platforms = append(platforms, dir)
		for _, f := range [][]string{{"etc", "os-release"}, {"usr", "bin", "tool"}, {"etc", "app.conf"}, {"usr", "share", "big.bin"}} {
			files = append(files, append(append(slices.Clone(dir), "rootfs"), f...))
		}
	}
	read := func(m *mounted) map[string]string {
		t.Helper()
		out := map[string]string{}
		for _, f := range files {
			out[filepath.Join(f...)] = readFile(t, m.path(f...))
		}
		return out
	}

	upstream.Reset()
	tap.reset()
	first := mountRegfs(t, mountConfig{registry: upstream.Host(), mirrors: []string{mirror.Host()}})
	want := read(first)
	var blobs []string // the blobs behind the files: layers (a platform of an index needs no config)
	for _, dir := range platforms {
		var man struct{ Layers []struct{ Digest string } }
		if err := json.Unmarshal([]byte(readFile(t, first.path(append(dir, "manifest.json")...))), &man); err != nil {
			t.Fatal(err)
		}
		for _, l := range man.Layers {
			blobs = append(blobs, l.Digest)
		}
	}
	first.unmount(t)
	mirrorWaitStored(t, mirror, blobs)
	firstUp, firstMirror := upstream.Counts(), mirror.Counts()
	firstTapGETs, firstTapBytes := tap.counts()
	if firstMirror.BlobBytes == 0 {
		t.Fatalf("first mount: no blob bytes through the mirror: %s", firstMirror)
	}
	if firstUp.BlobBytes == 0 {
		t.Fatalf("first mount: the mirror fetched no blob bytes upstream: %s", firstUp)
	}

	upstream.Reset()
	mirror.Reset()
	tap.reset()
	second := mountRegfs(t, mountConfig{registry: upstream.Host(), mirrors: []string{mirror.Host()}})
	got := read(second)
	for f, w := range want {
		if got[f] != w {
			t.Errorf("%s: second mount read %d bytes that differ from the first's %d", f, len(got[f]), len(w))
		}
	}
	secondUp, secondMirror := upstream.Counts(), mirror.Counts()
	secondTapGETs, secondTapBytes := tap.counts()
	s := second.res.Stats()
	second.unmount(t)
	t.Logf("first mount: upstream %s; mirror %s; blob GETs upstream %d, %d bytes (abandoned ones included)",
		firstUp, firstMirror, firstTapGETs, firstTapBytes)
	// Fallbacks are lookups of names that exist nowhere (the mount asks whether "oci" is a
	// tag of "features" before it finds the repository "features/oci").
	t.Logf("second mount: upstream %s; mirror %s; regfs fallbacks %d", secondUp, secondMirror, s.MirrorFallbacks)
	t.Logf("upstream blob bytes for the second mount: %d (%d blob GETs; abandoned ones included: %d bytes in %d GETs)",
		secondUp.BlobBytes, secondUp.N("GET", testenv.KindBlob), secondTapBytes, secondTapGETs)
	if secondUp.BlobBytes != 0 || secondUp.N("GET", testenv.KindBlob) != 0 || secondTapGETs != 0 || secondTapBytes != 0 {
		t.Errorf("second mount: blob GETs reached the upstream (%d bytes in %d GETs; tap: %d bytes in %d GETs), want none",
			secondUp.BlobBytes, secondUp.N("GET", testenv.KindBlob), secondTapBytes, secondTapGETs)
	}
	if secondMirror.BlobBytes == 0 {
		t.Errorf("second mount: no blob bytes from the mirror: %s", secondMirror)
	}
}
