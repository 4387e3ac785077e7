package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/regfs/regfs/cache"
	"github.com/regfs/regfs/fs"
	"github.com/regfs/regfs/internal/fixture"
	"github.com/regfs/regfs/internal/testenv"
	"github.com/regfs/regfs/resolver"
)

// mirrorMount mounts regfs for registry with the given mirrors of it and a cache dir of
// its own, and unmounts it at cleanup (or earlier, with unmount).
func mirrorMount(t *testing.T, registry string, mirrors ...string) *mounted {
	t.Helper()
	testenv.RequireFUSE(t)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	store, err := cache.Open(t.TempDir(), 1<<30, log)
	if err != nil {
		t.Fatal(err)
	}
	res, err := resolver.New(resolver.Options{
		DefaultRegistry: registry,
		Mirrors:         map[string][]string{registry: mirrors},
		Timeout:         10 * time.Second,
		TagTTL:          time.Minute,
		Docs:            store.Digests(cache.KindDocument),
		Logger:          log,
	})
	if err != nil {
		store.Close()
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	server, err := fs.Mount(dir, fs.Config{Resolver: res, Store: store, TagTTL: time.Minute, Logger: log})
	if err != nil {
		store.Close()
		t.Fatal(err)
	}
	m := &mounted{dir: dir, store: store, res: res, server: server}
	t.Cleanup(func() { m.unmount(t) })
	return m
}

// mirrorRegistry is Debian's docker-registry in proxy mode (a pull-through cache) in front
// of an upstream registry, behind a counting proxy of its own.
type mirrorRegistry struct {
	counter *testenv.Counter
	host    string // the counted address
	storage string // the filesystem driver's root directory
}

// Host returns the mirror's counted address.
func (m *mirrorRegistry) Host() string { return m.host }

// Counts returns what the mirror was asked since the last Reset.
func (m *mirrorRegistry) Counts() testenv.Counts { return m.counter.Counts() }

// Reset forgets the requests counted so far.
func (m *mirrorRegistry) Reset() { m.counter.Reset() }

// mirrorConfig is a distribution 2.8 configuration of a pull-through cache.
const mirrorConfig = `version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
  relativeurls: true
proxy:
  remoteurl: http://%s
`

// startMirrorRegistry starts a pull-through cache of remote (host:port, plain HTTP). It is
// stopped at cleanup; its log is printed if the test failed.
func startMirrorRegistry(t *testing.T, remote string) *mirrorRegistry {
	t.Helper()
	bin := testenv.RequireRegistry(t)
	dir := t.TempDir()
	storage := filepath.Join(dir, "storage")
	var out syncLog
	var cmd *exec.Cmd
	var addr string
	done := make(chan struct{})
	for try := 0; ; try++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr = l.Addr().String()
		l.Close()
		cfg := filepath.Join(dir, fmt.Sprintf("config-%d.yml", try))
		if err := os.WriteFile(cfg, fmt.Appendf(nil, mirrorConfig, storage, addr, remote), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd = exec.Command(bin, "serve", cfg)
		cmd.Stdout, cmd.Stderr = &out, &out
		// Pdeathsig follows the forking thread: pin it while starting.
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		runtime.LockOSThread()
		err = cmd.Start()
		runtime.UnlockOSThread()
		if err != nil {
			t.Fatalf("running %s: %v", bin, err)
		}
		done = make(chan struct{})
		go func(cmd *exec.Cmd, done chan struct{}) {
			_ = cmd.Wait()
			close(done)
		}(cmd, done)
		err = mirrorWaitReady(addr, done)
		if err == nil {
			break
		}
		stopProcess(cmd, done)
		if try == 2 { // a free port may be taken between probing and binding
			t.Fatalf("mirror registry: %v\n%s", err, out.String())
		}
	}
	t.Cleanup(func() {
		stopProcess(cmd, done)
		if t.Failed() {
			t.Logf("mirror registry log:\n%s", out.String())
		}
	})
	target := &url.URL{Scheme: "http", Host: addr}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(tr.CloseIdleConnections)
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host
		},
		Transport: tr,
		ErrorLog:  log.New(io.Discard, "", 0),
	}
	counter := testenv.NewCounter(rp)
	front := httptest.NewServer(counter)
	t.Cleanup(front.Close)
	return &mirrorRegistry{counter: counter, host: strings.TrimPrefix(front.URL, "http://"), storage: storage}
}

// mirrorWaitReady polls /v2/ until it answers 200 or the process exits.
func mirrorWaitReady(addr string, done <-chan struct{}) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := client.Get("http://" + addr + "/v2/"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-done:
			return errors.New("exited early")
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("not ready at %s after 15 s", addr)
}

// stopProcess sends SIGTERM, then SIGKILL after 5 s, and waits for the exit.
func stopProcess(cmd *exec.Cmd, done <-chan struct{}) {
	select {
	case <-done:
		return
	default:
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// syncLog is a log buffer safe for concurrent writes.
type syncLog struct {
	mu sync.Mutex
	b  strings.Builder // guarded by mu
}

func (s *syncLog) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncLog) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
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

// waitStored waits until the pull-through cache has stored every blob of digests (it
// stores a blob in the background after serving it whole).
func (m *mirrorRegistry) waitStored(t *testing.T, digests []string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for _, d := range digests {
		hex := strings.TrimPrefix(d, "sha256:")
		p := filepath.Join(m.storage, "docker", "registry", "v2", "blobs", "sha256", hex[:2], hex, "data")
		for {
			if _, err := os.Stat(p); err == nil {
				break
			}
			if time.Now().After(deadline) {
				var have []string
				filepath.WalkDir(m.storage, func(p string, _ os.DirEntry, _ error) error {
					have = append(have, strings.TrimPrefix(p, m.storage))
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
	first := mirrorMount(t, upstream.Host(), mirror.Host())
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
	mirror.waitStored(t, blobs)
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
	second := mirrorMount(t, upstream.Host(), mirror.Host())
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
