// Package integration holds regfs's end-to-end tests: a real registry
// (Debian's docker-registry, or go-containerregistry's in-process one behind
// the same counting proxy), real FUSE mounts in t.TempDir(), and images built
// by the tests themselves.
package integration

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/regfs/regfs/cache"
	"github.com/regfs/regfs/fs"
	"github.com/regfs/regfs/internal/testenv"
	"github.com/regfs/regfs/resolver"
)

// mountConfig describes one test mount.
type mountConfig struct {
	registry string // default registry host
	cacheDir string // reuse a cache across mounts; "" for a fresh one
	tagTTL   time.Duration
	timeout  time.Duration
	rebase   bool // --rebase-symlinks
}

// mounted is a live test mount.
type mounted struct {
	dir   string
	store *cache.Store
	res   *resolver.Client
	// server is nil once unmounted.
	server *fs.Mounted
}

// mountRegfs mounts regfs for the test and unmounts it at cleanup.
func mountRegfs(t *testing.T, c mountConfig) *mounted {
	t.Helper()
	testenv.RequireFUSE(t)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if c.cacheDir == "" {
		c.cacheDir = t.TempDir()
	}
	if c.tagTTL == 0 {
		c.tagTTL = time.Minute
	}
	if c.timeout == 0 {
		c.timeout = 10 * time.Second
	}
	store, err := cache.Open(c.cacheDir, 1<<30, log)
	if err != nil {
		t.Fatal(err)
	}
	res, err := resolver.New(resolver.Options{
		DefaultRegistry: c.registry,
		Timeout:         c.timeout,
		TagTTL:          c.tagTTL,
		Docs:            store.Digests(cache.KindDocument),
		Logger:          log,
	})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	server, err := fs.Mount(dir, fs.Config{Resolver: res, Store: store, TagTTL: c.tagTTL, Logger: log, RebaseSymlinks: c.rebase})
	if err != nil {
		t.Fatal(err)
	}
	m := &mounted{dir: dir, store: store, res: res, server: server}
	t.Cleanup(func() { m.unmount(t) })
	return m
}

// unmount unmounts and closes the cache; later calls do nothing.
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
}

// path joins parts under the mount point.
func (m *mounted) path(parts ...string) string {
	return filepath.Join(append([]string{m.dir}, parts...)...)
}
