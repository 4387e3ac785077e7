package integration

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/regfs/regfs/cache"
	"github.com/regfs/regfs/fs"
	"github.com/regfs/regfs/internal/faultproxy"
	"github.com/regfs/regfs/internal/fixture"
	"github.com/regfs/regfs/internal/testenv"
	"github.com/regfs/regfs/layers"
	"github.com/regfs/regfs/layers/tree"
	"github.com/regfs/regfs/resolver"
)

// The fault tests' image: repository faultsRepo, tag 1 (three layers: gzip,
// plain tar, zstd) and tag 2 (another image, for content never cached).
const (
	faultsRepo     = "faults/app"
	faultsHugeRepo = "faults/huge"
	faultsFlatRepo = "faultsflat"    // the same images under a one-component name
	faultsTimeout  = 2 * time.Second // the mounts' stall timeout
	faultsSlack    = time.Second     // what DESIGN allows on top of it
)

// faultsFiles are the regular files of tag 1's rootfs, by path under rootfs/.
func faultsFiles() map[string][]byte {
	return map[string][]byte{
		"etc/os-release":     []byte("NAME=faults\nVERSION=1\n"),
		"usr/share/big.bin":  fixture.GeneratedBytes(3, 4<<20),
		"data/raw.bin":       fixture.GeneratedBytes(4, 2<<20),
		"data/note.txt":      []byte("an uncompressed layer\n"),
		"opt/zstd/small.bin": fixture.GeneratedBytes(5, 512<<10),
	}
}

// faultsOtherFiles are the regular files of tag 2's rootfs.
func faultsOtherFiles() map[string][]byte {
	return map[string][]byte{
		"etc/os-release":      []byte("NAME=faults\nVERSION=2\n"),
		"usr/share/other.bin": fixture.GeneratedBytes(6, 1<<20),
	}
}

// faultsSet builds the images of faultsRepo.
func faultsSet(t *testing.T) fixture.Set {
	t.Helper()
	files, other := faultsFiles(), faultsOtherFiles()
	entry := func(files map[string][]byte, name string) fixture.Entry {
		return fixture.Entry{Name: name, Body: files[name]}
	}
	layer := func(c fixture.Compression, es ...fixture.Entry) v1.Layer {
		l, err := fixture.Layer(c, fixture.OCI, es...)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	one := []v1.Layer{
		layer(fixture.Gzip, fixture.Dir("etc/", 0), entry(files, "etc/os-release"), fixture.Dir("usr/", 0),
			fixture.Dir("usr/share/", 0), entry(files, "usr/share/big.bin")),
		layer(fixture.Uncompressed, fixture.Dir("data/", 0), entry(files, "data/raw.bin"), entry(files, "data/note.txt")),
		layer(fixture.Zstd, fixture.Dir("opt/", 0), fixture.Dir("opt/zstd/", 0), entry(files, "opt/zstd/small.bin")),
	}
	two := []v1.Layer{
		layer(fixture.Gzip, fixture.Dir("etc/", 0), entry(other, "etc/os-release"), fixture.Dir("usr/", 0),
			fixture.Dir("usr/share/", 0), entry(other, "usr/share/other.bin")),
	}
	var set fixture.Set
	for i, ls := range [][]v1.Layer{one, two} {
		img, err := fixture.Image(fixture.OCI, fixture.Platform("linux/amd64"), ls...)
		if err != nil {
			t.Fatal(err)
		}
		set = append(set, fixture.Item{Repo: faultsRepo, Tags: []string{[]string{"1", "2"}[i]}, Object: img})
	}
	set = append(set,
		fixture.Item{Repo: faultsHugeRepo, Tags: []string{"1"}, Object: set[1].Object},
		fixture.Item{Repo: faultsFlatRepo, Tags: []string{"1"}, Object: set[0].Object},
		fixture.Item{Repo: faultsFlatRepo, Tags: []string{"2"}, Object: set[1].Object})
	return set
}

// faultsEnv is an in-process registry holding faultsSet behind a fault proxy
// that demands tokens (so that Authorization leaks to the CDN can be seen).
type faultsEnv struct {
	srv   *testenv.Server
	proxy *faultproxy.Proxy
}

func newFaultsEnv(t *testing.T, seed uint64) faultsEnv {
	t.Helper()
	srv := testenv.InProcessRegistry(t)
	if err := faultsSet(t).Push(context.Background(), srv.DirectHost()); err != nil {
		t.Fatal(err)
	}
	p := faultproxy.Start(t, faultproxy.Options{Upstream: srv.Host(), Auth: true, Seed: seed, CDNListen: "127.0.0.2:0"})
	return faultsEnv{srv: srv, proxy: p}
}

// faultMounted is a live fault-test mount.
type faultMounted struct{ *mounted }

// faultMount mounts regfs with mountRegfs and the fault tests' settings: the
// stall timeout faultsTimeout unless c sets one, and a transport of its own
// whose idle connections are closed after the unmount.
func faultMount(t *testing.T, c mountConfig) *faultMounted {
	t.Helper()
	if c.timeout == 0 {
		c.timeout = faultsTimeout
	}
	if c.transport == nil {
		c.transport = http.DefaultTransport.(*http.Transport).Clone()
	}
	return &faultMounted{mountRegfs(t, c)}
}

// rootfs returns the path of faultsRepo:tag's rootfs under the mount.
func (m *faultMounted) rootfs(tag string, parts ...string) string {
	return m.rootfsOf(faultsRepo, tag, parts...)
}

// rootfsOf returns the path of repo:tag's rootfs under the mount.
func (m *faultMounted) rootfsOf(repo, tag string, parts ...string) string {
	return m.path(append([]string{repo, tag, "linux", "amd64", "rootfs"}, parts...)...)
}

// readChecked reads path whole and compares it with want: it returns nil when
// the bytes are right, the read's error when it failed, and fails the test
// when a read succeeded with wrong bytes.
func readChecked(t *testing.T, path string, want []byte) error {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s: WRONG BYTES served (%d bytes, want %d; first difference at %d)", path, len(got), len(want), firstDiff(got, want))
	}
	return nil
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// faultCase is one fault and what DESIGN section 5 says the reader sees.
type faultCase struct {
	name  string
	rules []faultproxy.Rule
	// want: "ok" (right bytes), "eio" (EIO), "ok-or-eio" (never wrong bytes).
	want string
	// check, if set, asserts the proxy's counters afterwards.
	check func(t *testing.T, c faultproxy.Counters)
}

// blobGET is a rule on blob GETs.
func blobGET(f faultproxy.Fault, nth, count int) faultproxy.Rule {
	return faultproxy.Rule{Method: http.MethodGet, Kind: testenv.KindBlob, Nth: nth, Count: count, Fault: f}
}

// quickFaults are quick failures, each expected to be retried or handled so
// the read succeeds.
func quickFaults() []faultCase {
	noLeak := func(t *testing.T, c faultproxy.Counters) {
		t.Helper()
		if c.CDNRequests == 0 || c.CDNAuthLeaks != 0 {
			t.Errorf("CDN requests %d, Authorization leaks %d; want some, none", c.CDNRequests, c.CDNAuthLeaks)
		}
	}
	return []faultCase{
		{name: "503 twice", rules: []faultproxy.Rule{blobGET(faultproxy.Status(503), 0, 2)}, want: "ok"},
		{name: "429 with Retry-After", rules: []faultproxy.Rule{blobGET(faultproxy.StatusRetryAfter(429, "1"), 0, 1)}, want: "ok"},
		{name: "429 without Retry-After", rules: []faultproxy.Rule{blobGET(faultproxy.Status(429), 0, 2)}, want: "ok"},
		{name: "500 on manifest HEAD", rules: []faultproxy.Rule{{Method: http.MethodHead, Kind: testenv.KindManifest, Count: 2, Fault: faultproxy.Status(500)}}, want: "ok"},
		{name: "token expires mid-read", rules: []faultproxy.Rule{blobGET(faultproxy.ExpireToken(), 2, 1)}, want: "ok",
			check: func(t *testing.T, c faultproxy.Counters) {
				if c.Tokens < 2 {
					t.Errorf("tokens issued %d: the client did not re-authenticate", c.Tokens)
				}
			}},
		{name: "redirect to CDN", rules: []faultproxy.Rule{blobGET(faultproxy.Redirect(), 0, 0)}, want: "ok", check: noLeak},
		{name: "expired redirect", rules: []faultproxy.Rule{blobGET(faultproxy.RedirectExpired(), 0, 1), blobGET(faultproxy.Redirect(), 0, 0)}, want: "ok", check: noLeak},
		{name: "reset after 64KiB", rules: []faultproxy.Rule{blobGET(faultproxy.ResetAfter(64<<10), 0, 1)}, want: "ok"},
		{name: "short body", rules: []faultproxy.Rule{blobGET(faultproxy.ShortBody(100<<10), 0, 1)}, want: "ok"},
		{name: "200 instead of 206", rules: []faultproxy.Rule{blobGET(faultproxy.IgnoreRange(), 0, 0)}, want: "ok"},
	}
}

// hostileFaults are answers that must never turn into wrong bytes.
func hostileFaults() []faultCase {
	return []faultCase{
		{name: "Content-Range shifted back", rules: []faultproxy.Rule{blobGET(faultproxy.ShiftContentRange(-4096), 0, 0)}, want: "ok-or-eio"},
		{name: "Content-Range shifted on", rules: []faultproxy.Rule{blobGET(faultproxy.ShiftContentRange(4096), 0, 0)}, want: "ok-or-eio"},
		{name: "no Content-Range", rules: []faultproxy.Rule{blobGET(faultproxy.DropContentRange(), 0, 0)}, want: "ok-or-eio"},
		{name: "flipped bit in every body", rules: []faultproxy.Rule{blobGET(faultproxy.FlipBit(-1), 0, 0)}, want: "ok-or-eio"},
	}
}

// runFaultCase mounts with c's rules active and reads every file of tag 1
// (and lists its directories), asserting the outcome the case wants.
func runFaultCase(t *testing.T, env faultsEnv, tc faultCase, cacheDir string) {
	t.Helper()
	env.proxy.SetRules(tc.rules...)
	env.proxy.ResetCounters()
	m := faultMount(t, mountConfig{registry: env.proxy.Host(), cacheDir: cacheDir})
	files := faultsFiles()
	names := slices.Sorted(mapsKeys(files))
	for i, name := range names {
		took, err := timed(func() error { return readChecked(t, m.rootfs("1", name), files[name]) })
		switch {
		case tc.want == "ok" && err != nil:
			t.Errorf("%s: %v, want the right bytes", name, err)
		case tc.want == "eio" && !isEIO(err):
			t.Errorf("%s: %v, want EIO", name, err)
		case tc.want == "ok-or-eio" && err != nil && !isEIO(err):
			t.Errorf("%s: %v, want the right bytes or EIO", name, err)
		}
		// The first read also resolves the tag and indexes the layers, several
		// waits on the registry in a row (and work that makes progress is
		// waited for): it gets three times the bound of one wait.
		bound := faultsTimeout + faultsSlack
		if i == 0 {
			bound *= 3
		}
		if took > bound {
			t.Errorf("%s: took %v, more than %v (the stall timeout %v + %v per wait)", name, took, bound, faultsTimeout, faultsSlack)
		}
		if err != nil {
			t.Logf("%s: %v after %v", name, err, took)
		}
	}
	c := env.proxy.Counters()
	applied := int64(0)
	for _, n := range c.Faults {
		applied += n
	}
	if applied == 0 {
		t.Errorf("no fault applied: the case tests nothing (counters %+v)", c)
	}
	if tc.check != nil {
		tc.check(t, c)
	}
	t.Logf("faults applied %v; requests %d; CDN %d", c.Faults, c.Requests, c.CDNRequests)
	m.unmount(t)
}

func mapsKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// TestFaultsColdRead reads every file of an image never seen before (the
// layers are indexed through the faults) with each fault active.
func TestFaultsColdRead(t *testing.T) {
	env := newFaultsEnv(t, 1)
	for _, tc := range append(quickFaults(), hostileFaults()...) {
		t.Run(tc.name, func(t *testing.T) { runFaultCase(t, env, tc, "") })
	}
}

// warmCache mounts once without faults, reads every file of tag 1 so that its
// documents and layer indexes are cached, and returns the cache directory
// without its chunks: a later mount on a copy of it reads file data with
// Range requests only.
func warmCache(t *testing.T, env faultsEnv) string {
	t.Helper()
	env.proxy.SetRules()
	m := faultMount(t, mountConfig{registry: env.proxy.Host()})
	files := faultsFiles()
	for name, want := range files {
		if err := readChecked(t, m.rootfs("1", name), want); err != nil {
			t.Fatalf("warming the cache: %s: %v", name, err)
		}
	}
	m.unmount(t)
	if err := os.RemoveAll(filepath.Join(m.cacheDir, "v1", cache.KindChunk.String())); err != nil {
		t.Fatal(err)
	}
	return m.cacheDir
}

// copyDir copies the regular files and directories of src into a new temporary directory.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// TestFaultsRangeRead reads every file of an image whose layer indexes are
// cached but whose data is not, so every byte comes from Range requests made
// through the faults (no digest check of a whole blob can catch them).
func TestFaultsRangeRead(t *testing.T) {
	env := newFaultsEnv(t, 2)
	warm := warmCache(t, env)
	for _, tc := range append(quickFaults(), hostileFaults()...) {
		t.Run(tc.name, func(t *testing.T) { runFaultCase(t, env, tc, copyDir(t, warm)) })
	}
}

// TestFaultsStall: a registry that stops sending in the middle of a body, or
// before answering at all, fails the operations waiting on it with EIO within
// the stall timeout (+1 s), is not retried, and is then counted as down: other
// uncached operations fail at once.
func TestFaultsStall(t *testing.T) {
	env := newFaultsEnv(t, 3)
	tests := []struct {
		name  string
		rules []faultproxy.Rule
		cold  bool // read through the index build (else with indexes cached)
	}{
		{"body stalls during indexing", []faultproxy.Rule{blobGET(faultproxy.StallAfter(32<<10), 0, 0)}, true},
		{"no answer during indexing", []faultproxy.Rule{blobGET(faultproxy.Blackhole(), 0, 0)}, true},
		{"body stalls in a range read", []faultproxy.Rule{blobGET(faultproxy.StallAfter(1000), 0, 0)}, false},
	}
	warm := warmCache(t, env)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := ""
			if !tt.cold {
				dir = copyDir(t, warm)
			}
			env.proxy.SetRules()
			m := faultMount(t, mountConfig{registry: env.proxy.Host(), cacheDir: dir})
			// Resolve the tag before the stall; with the indexes cached,
			// the rootfs too.
			readDir(t, m.path(faultsRepo, "1"))
			if !tt.cold {
				readDir(t, m.rootfs("1", "etc"))
			}
			env.proxy.SetRules(tt.rules...)
			took, err := timed(func() error {
				return readChecked(t, m.rootfs("1", "usr/share/big.bin"), faultsFiles()["usr/share/big.bin"])
			})
			if !isEIO(err) {
				t.Errorf("read through a stall: %v, want EIO", err)
			}
			if took > faultsTimeout+faultsSlack {
				t.Errorf("stall -> EIO took %v, want <= %v", took, faultsTimeout+faultsSlack)
			}
			t.Logf("stall -> EIO in %v (timeout %v)", took, faultsTimeout)
			if s := m.res.Stats(); s.Stalls == 0 {
				t.Errorf("resolver counted no stall: %+v", s)
			}
			// Marked down: an uncached operation fails at once.
			took, err = timed(func() error { _, err := os.ReadDir(m.path(faultsRepo, "2", "linux", "amd64", "rootfs")); return err })
			if !isEIO(err) || took > faultsSlack {
				t.Errorf("uncached while down: %v after %v, want EIO at once", err, took)
			}
			t.Logf("uncached while down -> %v in %v", err, took)
			m.unmount(t)
		})
	}
}

// TestFaultsBlackholedRegistryServesCache: with the registry blackholed, what
// is cached (tags past their TTL included) is served in under a second once
// one request has found the registry down, and what is not fails with EIO
// within the stall timeout + 1 s.
func TestFaultsBlackholedRegistryServesCache(t *testing.T) {
	for i, repo := range []string{faultsFlatRepo, faultsRepo} {
		t.Run(repo, func(t *testing.T) { faultsBlackholed(t, newFaultsEnv(t, uint64(40+i)), repo, i == 0) })
	}
}

// faultsBlackholed runs TestFaultsBlackholedRegistryServesCache on repo; with
// fresh, it also times an uncached lookup on a mount that has not yet found
// the registry down.
func faultsBlackholed(t *testing.T, env faultsEnv, repo string, fresh bool) {
	t.Helper()
	const ttl = 300 * time.Millisecond
	m := faultMount(t, mountConfig{registry: env.proxy.Host(), tagTTL: ttl})
	files := faultsFiles()
	for name, want := range files {
		if err := readChecked(t, m.rootfsOf(repo, "1", name), want); err != nil {
			t.Fatal(err)
		}
	}
	readDir(t, m.path(repo))
	time.Sleep(ttl + 100*time.Millisecond) // tag answers are stale now
	env.proxy.SetDown(true)
	defer env.proxy.SetDown(false)

	// The first request to find the registry down waits for the stall timeout.
	took, err := timed(func() error { _, err := os.ReadDir(m.path(repo, "1")); return err })
	t.Logf("first ls of a stale tag, registry blackholed: %v in %v", err, took)
	if err != nil {
		t.Errorf("ls of a cached tag with the registry blackholed: %v", err)
	}
	if took > faultsTimeout+faultsSlack {
		t.Errorf("first ls took %v, want <= %v", took, faultsTimeout+faultsSlack)
	}

	// Now everything cached answers at once.
	ops := []struct {
		name string
		op   func() error
	}{
		{"ls repo", func() error { _, err := os.ReadDir(m.path(repo)); return err }},
		{"ls tag", func() error { _, err := os.ReadDir(m.path(repo, "1")); return err }},
		{"ls rootfs", func() error { _, err := os.ReadDir(m.rootfsOf(repo, "1")); return err }},
		{"ls rootfs/usr/share", func() error { _, err := os.ReadDir(m.rootfsOf(repo, "1", "usr", "share")); return err }},
		{"cat digest", func() error { _, err := os.ReadFile(m.path(repo, "1", "digest")); return err }},
		{"cat os-release", func() error { return readChecked(t, m.rootfsOf(repo, "1", "etc/os-release"), files["etc/os-release"]) }},
		{"cat big.bin", func() error {
			return readChecked(t, m.rootfsOf(repo, "1", "usr/share/big.bin"), files["usr/share/big.bin"])
		}},
		{"cat raw.bin", func() error { return readChecked(t, m.rootfsOf(repo, "1", "data/raw.bin"), files["data/raw.bin"]) }},
	}
	for _, o := range ops {
		time.Sleep(ttl) // past the TTL again: the kernel and the resolver ask again
		took, err := timed(o.op)
		t.Logf("blackholed, cached: %s: %v in %v", o.name, err, took)
		if err != nil {
			t.Errorf("%s: %v, want success from the cache", o.name, err)
		}
		if took > time.Second {
			t.Errorf("%s took %v, want < 1s", o.name, took)
		}
	}

	// Uncached content fails with EIO, at once while the registry counts as
	// down, and within the stall timeout + 1 s on a mount that has not yet
	// found it down.
	took, err = timed(func() error { _, err := os.ReadDir(m.path(repo, "2", "linux")); return err })
	t.Logf("blackholed, uncached, known down: %v in %v", err, took)
	if !isEIO(err) || took > faultsTimeout+faultsSlack {
		t.Errorf("uncached tag: %v after %v, want EIO within %v", err, took, faultsTimeout+faultsSlack)
	}
	if fresh {
		m2 := faultMount(t, mountConfig{registry: env.proxy.Host()})
		took, err = timed(func() error { _, err := os.ReadDir(m2.path(repo, "2")); return err })
		t.Logf("blackholed, uncached, fresh mount: %v in %v", err, took)
		if !isEIO(err) || took > faultsTimeout+faultsSlack {
			t.Errorf("uncached on a fresh mount: %v after %v, want EIO within %v", err, took, faultsTimeout+faultsSlack)
		}
		m2.unmount(t)
	}
	m.unmount(t)
	if n := env.proxy.Counters().Blackholed; n == 0 {
		t.Errorf("the proxy held no request: the registry was never asked")
	}
}

// TestFaultsOfflineRemountByDigest: a new mount on the same cache, with the
// registry blackholed from the start, serves an image by digest from the
// cache alone.
func TestFaultsOfflineRemountByDigest(t *testing.T) {
	env := newFaultsEnv(t, 5)
	m := faultMount(t, mountConfig{registry: env.proxy.Host()})
	files := faultsFiles()
	for name, want := range files {
		if err := readChecked(t, m.rootfs("1", name), want); err != nil {
			t.Fatal(err)
		}
	}
	digest := strings.TrimSpace(readFile(t, m.path(faultsRepo, "1", "digest")))
	m.unmount(t)

	env.proxy.SetDown(true)
	defer env.proxy.SetDown(false)
	m2 := faultMount(t, mountConfig{registry: env.proxy.Host(), cacheDir: m.cacheDir})
	// The first request finds the registry down: like any request to a
	// blackholed host, it waits for the stall timeout. Nothing tells a
	// blackholed registry from a slow one sooner.
	took, err := timed(func() error { _, err := os.Stat(m2.path(faultsRepo, digest)); return err })
	t.Logf("offline remount, first lookup finds the registry down: %v in %v", err, took)
	if err != nil || took > faultsTimeout+faultsSlack {
		t.Errorf("first lookup by digest: %v after %v, want success within %v", err, took, faultsTimeout+faultsSlack)
	}
	for _, name := range []string{"etc/os-release", "data/raw.bin", "usr/share/big.bin"} {
		p := m2.path(faultsRepo, digest, "linux", "amd64", "rootfs", name)
		took, err := timed(func() error { return readChecked(t, p, files[name]) })
		t.Logf("offline remount, by digest: cat %s: %v in %v", name, err, took)
		if err != nil || took > time.Second {
			t.Errorf("cat %s: %v after %v, want the cached bytes in < 1s", name, err, took)
		}
	}
	m2.unmount(t)
}

// TestFaultsHostileRegistry: answers that must end in EIO (or a bounded
// listing), never a hang.
func TestFaultsHostileRegistry(t *testing.T) {
	env := newFaultsEnv(t, 6)
	tests := []struct {
		name  string
		rules []faultproxy.Rule
		op    func(m *faultMounted) error
		ok    bool // a bounded success is acceptable
	}{
		{"huge manifest", []faultproxy.Rule{{Kind: testenv.KindManifest, Repo: faultsHugeRepo, Fault: faultproxy.HugeManifest(64 << 20)}},
			func(m *faultMounted) error { _, err := os.ReadDir(m.path(faultsHugeRepo, "1")); return err }, false},
		{"Link loop in tags/list", []faultproxy.Rule{{Kind: testenv.KindTags, Fault: faultproxy.LinkLoop()}},
			func(m *faultMounted) error { _, err := os.ReadDir(m.path(faultsRepo)); return err }, true},
		{"endless Links in tags/list", []faultproxy.Rule{{Kind: testenv.KindTags, Fault: faultproxy.EndlessLinks()}},
			func(m *faultMounted) error { _, err := os.ReadDir(m.path(faultsRepo)); return err }, true},
		{"500 forever", []faultproxy.Rule{{Kind: testenv.KindManifest, Fault: faultproxy.Status(500)}},
			func(m *faultMounted) error { _, err := os.ReadDir(m.path(faultsRepo, "1")); return err }, false},
		{"429 with a Retry-After beyond the timeout", []faultproxy.Rule{{Kind: testenv.KindManifest, Fault: faultproxy.StatusRetryAfter(429, "3600")}},
			func(m *faultMounted) error { _, err := os.ReadDir(m.path(faultsRepo, "1")); return err }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env.proxy.SetRules(tt.rules...)
			env.proxy.ResetCounters()
			m := faultMount(t, mountConfig{registry: env.proxy.Host()})
			took, err := timed(func() error { return tt.op(m) })
			t.Logf("%v in %v; proxy: %d requests, faults %v", err, took, env.proxy.Counters().Requests, env.proxy.Counters().Faults)
			if err != nil && !isEIO(err) || err == nil && !tt.ok {
				t.Errorf("got %v, want EIO", err)
			}
			if took > faultsTimeout+faultsSlack {
				t.Errorf("took %v, want <= %v", took, faultsTimeout+faultsSlack)
			}
			m.unmount(t)
		})
	}
}

// TestFaultsInterruptedWaiterLeavesSharedWork: below FUSE (which cannot
// deliver a signal at a chosen moment), a caller whose context ends while the
// platform's rootfs is being built, or while a file's bytes are being
// fetched, returns at once with context.Canceled; the shared work goes on and
// another caller gets the right bytes. (cache.TestCancelledWaiterLeavesFetchRunning
// and layers' indexer tests cover the same below fs.Images.)
func TestFaultsInterruptedWaiterLeavesSharedWork(t *testing.T) {
	env := newFaultsEnv(t, 7)
	log := slog.New(slog.DiscardHandler)
	// A store too small for a chunk: every file read goes to the registry.
	store, err := cache.Open(t.TempDir(), 256<<10, log)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	res, err := resolver.New(resolver.Options{DefaultRegistry: env.proxy.Host(), Timeout: 30 * time.Second, Docs: store.Digests(cache.KindDocument)})
	if err != nil {
		t.Fatal(err)
	}
	images := fs.NewImages(res, store, layers.NewIndexer(store.Digests(cache.KindIndex), log), log)
	ref := resolver.Ref{Registry: env.proxy.Host(), Repo: faultsRepo, Tag: "1"}
	desc, err := res.Resolve(t.Context(), ref)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := res.Manifest(t.Context(), ref, desc.Digest); err != nil {
		t.Fatal(err)
	}

	// interrupt starts op twice, cancels the first caller while the registry
	// holds every request, and lets the second finish once it answers again.
	interrupt := func(t *testing.T, op func(ctx context.Context) error) {
		t.Helper()
		env.proxy.SetDown(true)
		ctx, cancel := context.WithCancel(t.Context())
		first, second := make(chan error, 1), make(chan error, 1)
		go func() { first <- op(ctx) }()
		go func() { second <- op(t.Context()) }()
		time.Sleep(200 * time.Millisecond)
		took, err := timed(func() error { cancel(); return <-first })
		if !errors.Is(err, context.Canceled) || took > time.Second { // at once; a loaded machine under -race may lag
			t.Errorf("interrupted caller: %v after %v, want context.Canceled at once", err, took)
		}
		select {
		case err := <-second:
			t.Fatalf("second caller returned %v while the registry was held", err)
		default:
		}
		env.proxy.SetDown(false)
		if err := <-second; err != nil {
			t.Errorf("second caller: %v", err)
		}
	}
	var rootfs fs.Rootfs
	t.Run("rootfs build", func(t *testing.T) {
		interrupt(t, func(ctx context.Context) error {
			r, err := images.Rootfs(ctx, ref, desc)
			if err == nil {
				rootfs = r
			}
			return err
		})
	})
	if rootfs == nil {
		t.Fatal("no rootfs")
	}
	want := faultsFiles()["data/raw.bin"]
	tr := rootfs.Tree()
	id := tree.Root
	for _, part := range []string{"data", "raw.bin"} {
		var ok bool
		if id, ok = tr.Lookup(id, part); !ok {
			t.Fatalf("no %s in the rootfs", part)
		}
	}
	t.Run("file read", func(t *testing.T) {
		interrupt(t, func(ctx context.Context) error {
			p := make([]byte, 4096)
			if _, err := rootfs.ReadAt(ctx, tr.Node(id), p, 1<<20); err != nil {
				return err
			}
			if !bytes.Equal(p, want[1<<20:1<<20+4096]) {
				return errors.New("wrong bytes")
			}
			return nil
		})
	})
}
