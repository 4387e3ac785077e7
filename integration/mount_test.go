// Package integration holds regfs's end-to-end tests: a real registry
// (Debian's docker-registry, or go-containerregistry's in-process one behind
// the same counting proxy), real FUSE mounts in t.TempDir(), and images built
// by the tests themselves.
package integration

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/regfs/regfs/cache"
	"github.com/regfs/regfs/fs"
	"github.com/regfs/regfs/internal/testenv"
	"github.com/regfs/regfs/resolver"
)

// mountConfig describes one test mount. The zero value of every field but
// registry means a default.
type mountConfig struct {
	registry  string // default registry host
	cacheDir  string // reuse a cache across mounts; "" for a fresh one
	cacheSize int64  // the cache's size limit; 0: 1 GiB
	tagTTL    time.Duration
	timeout   time.Duration // the resolver's stall timeout; 0: 10 s
	downTime  time.Duration // how long a registry counts as down; 0: the resolver's default
	mirrors   []string      // mirrors of registry, tried before it
	rebase    bool          // --rebase-symlinks
	pinnedTOC bool          // --pinned-toc-only
	// transport is the resolver's base transport (nil: its default); if it
	// has CloseIdleConnections, the unmount calls it.
	transport http.RoundTripper
	// logOut receives regfs's warnings and errors (text); nil: os.Stderr.
	logOut io.Writer
}

// mounted is a live test mount.
type mounted struct {
	dir      string
	cacheDir string
	store    *cache.Store
	res      *resolver.Client
	// transport is mountConfig.transport.
	transport http.RoundTripper
	// server is nil once unmounted.
	server *fs.Mounted
}

// mountRegfs mounts regfs for the test and unmounts it at cleanup.
func mountRegfs(t *testing.T, c mountConfig) *mounted {
	t.Helper()
	testenv.RequireFUSE(t)
	if c.logOut == nil {
		c.logOut = os.Stderr
	}
	log := slog.New(slog.NewTextHandler(c.logOut, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if c.cacheDir == "" {
		c.cacheDir = t.TempDir()
	}
	if c.cacheSize == 0 {
		c.cacheSize = 1 << 30
	}
	if c.tagTTL == 0 {
		c.tagTTL = time.Minute
	}
	if c.timeout == 0 {
		c.timeout = 10 * time.Second
	}
	var mirrors map[string][]string
	if len(c.mirrors) > 0 {
		mirrors = map[string][]string{c.registry: c.mirrors}
	}
	store, err := cache.Open(c.cacheDir, c.cacheSize, log)
	if err != nil {
		t.Fatal(err)
	}
	res, err := resolver.New(resolver.Options{
		DefaultRegistry: c.registry,
		Mirrors:         mirrors,
		Transport:       c.transport,
		Timeout:         c.timeout,
		TagTTL:          c.tagTTL,
		DownTime:        c.downTime,
		Docs:            store.Digests(cache.KindDocument),
		Logger:          log,
	})
	if err != nil {
		store.Close()
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		store.Close()
		t.Fatal(err)
	}
	server, err := fs.Mount(dir, fs.Config{Resolver: res, Store: store, TagTTL: c.tagTTL, Logger: log, RebaseSymlinks: c.rebase,
		PinnedTOCOnly: c.pinnedTOC})
	if err != nil {
		store.Close()
		t.Fatal(err)
	}
	// This process reads its own mount: go-fuse's poll hack (in WaitMount)
	// must run first, or the Go runtime's epoll registration of a file on
	// the mount can deadlock against the server in the same process.
	if err := server.WaitMount(); err != nil {
		server.Unmount()
		store.Close()
		t.Fatal(err)
	}
	m := &mounted{dir: dir, cacheDir: c.cacheDir, store: store, res: res, transport: c.transport, server: server}
	t.Cleanup(func() { m.unmount(t) })
	return m
}

// unmount unmounts, closes the cache and the idle connections of
// mountConfig.transport; later calls do nothing.
func (m *mounted) unmount(t *testing.T) {
	t.Helper()
	if m.server == nil {
		return
	}
	if err := m.server.Unmount(); err != nil {
		t.Errorf("unmount: %v", err)
	}
	m.server.Wait()
	m.server = nil
	m.store.Close()
	if tr, ok := m.transport.(interface{ CloseIdleConnections() }); ok {
		tr.CloseIdleConnections()
	}
}

// path joins parts under the mount point.
func (m *mounted) path(parts ...string) string {
	return filepath.Join(append([]string{m.dir}, parts...)...)
}

// syncBuffer is a testenv.SyncBuffer that finds lines: a mount's log, a
// process's output.
type syncBuffer struct{ testenv.SyncBuffer }

// line returns the first line written that contains every one of subs, or "".
func (s *syncBuffer) line(subs ...string) string {
	for _, ln := range strings.Split(s.String(), "\n") {
		ok := true
		for _, sub := range subs {
			ok = ok && strings.Contains(ln, sub)
		}
		if ok {
			return ln
		}
	}
	return ""
}

// wantErrno reports an error unless err is the errno want.
func wantErrno(t *testing.T, what string, err error, want syscall.Errno) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: got %v, want %v (%s)", what, err, want, want.Error())
	}
}

// isEIO reports whether err is EIO.
func isEIO(err error) bool { return errors.Is(err, syscall.EIO) }

// timed runs op and returns its duration and error.
func timed(op func() error) (time.Duration, error) {
	start := time.Now()
	err := op()
	return time.Since(start), err
}

// readDir lists dir's names or fails the test.
func readDir(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("readdir: %v", err)
	}
	names := make([]string, len(es))
	for i, e := range es {
		names[i] = e.Name()
	}
	return names
}

// readFile reads path whole or fails the test.
func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(b)
}

// layerBlob returns a layer's compressed bytes.
func layerBlob(t *testing.T, l v1.Layer) []byte {
	t.Helper()
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
