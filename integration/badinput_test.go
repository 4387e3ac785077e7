package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/regfs/regfs/internal/fixture"
	"github.com/regfs/regfs/internal/testenv"
)

// This file holds the end-to-end tests of DESIGN.md sections 4 and 5 on bad
// input: corrupt, truncated and mislabelled layers, documents that are both
// an index and a manifest, and registries that deny, fail or stall. Each
// test runs go-containerregistry's in-memory registry behind a badRegistry
// that injects the fault, and mounts regfs with a captured log (badMount).

// badTag is the tag every image of these tests is pushed under.
const badTag = "1.0"

// badRegistry is go-containerregistry's in-memory registry with faults
// injected in front of it: blobs served with other bytes, repositories or
// blobs that answer a fixed HTTP status, blobs whose requests hang until the
// client gives up. It counts blob GETs. Safe for concurrent use.
type badRegistry struct {
	inner http.Handler
	done  chan struct{} // closed at cleanup: releases hung requests

	mu         sync.Mutex
	blobs      map[string][]byte // guarded by mu; digest -> the bytes served instead
	repoStatus map[string]int    // guarded by mu; repo (and repos under it) -> status of every request
	blobStatus map[string]int    // guarded by mu; digest -> status of its requests
	stalls     map[string]bool   // guarded by mu; digest -> its requests hang
	blobGets   map[string]int    // guarded by mu; digest -> GET requests seen
}

// badServer is a badRegistry and its addresses.
type badServer struct {
	*badRegistry
	host   string // the faulty address regfs mounts
	direct string // the registry itself, for pushing fixtures
}

// newBadServer starts an in-memory registry and a faulty front for it; both
// close at cleanup.
func newBadServer(t *testing.T) *badServer {
	t.Helper()
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	b := &badRegistry{
		inner: inner, done: make(chan struct{}),
		blobs: map[string][]byte{}, repoStatus: map[string]int{}, blobStatus: map[string]int{},
		stalls: map[string]bool{}, blobGets: map[string]int{},
	}
	direct := httptest.NewServer(inner)
	t.Cleanup(direct.Close)
	front := httptest.NewServer(b)
	t.Cleanup(front.Close)
	t.Cleanup(func() { close(b.done) }) // runs before front.Close
	return &badServer{
		badRegistry: b,
		host:        strings.TrimPrefix(front.URL, "http://"),
		direct:      strings.TrimPrefix(direct.URL, "http://"),
	}
}

// ServeHTTP serves r with the faults in force.
func (b *badRegistry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	kind, repo, ref := testenv.Classify(r.URL.Path)
	b.mu.Lock()
	status := 0
	for k, s := range b.repoStatus {
		if repo == k || strings.HasPrefix(repo, k+"/") {
			status = s
		}
	}
	var body []byte
	override, stall := false, false
	if kind == testenv.KindBlob {
		if s, ok := b.blobStatus[ref]; ok {
			status = s
		}
		body, override = b.blobs[ref]
		stall = b.stalls[ref]
		if r.Method == http.MethodGet {
			b.blobGets[ref]++
		}
	}
	b.mu.Unlock()
	switch {
	case status != 0:
		code := map[int]string{401: "UNAUTHORIZED", 403: "DENIED", 404: "BLOB_UNKNOWN"}[status]
		if code == "" {
			code = "UNKNOWN"
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"errors":[{"code":%q,"message":"injected by the test"}]}`, code)
	case stall:
		select {
		case <-r.Context().Done():
		case <-b.done:
		}
	case override:
		w.Header().Set("Content-Type", "application/octet-stream")
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
	default:
		b.inner.ServeHTTP(w, r)
	}
}

// serveBlob makes blob digest be served as body (nil: as stored).
func (b *badRegistry) serveBlob(digest string, body []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if body == nil {
		delete(b.blobs, digest)
		return
	}
	b.blobs[digest] = body
}

// failRepo makes every request under repo answer status.
func (b *badRegistry) failRepo(repo string, status int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.repoStatus[repo] = status
}

// failBlob makes every request of blob digest answer status.
func (b *badRegistry) failBlob(digest string, status int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.blobStatus[digest] = status
}

// stallBlob makes the requests of blob digest hang until the client leaves.
func (b *badRegistry) stallBlob(digest string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stalls[digest] = true
}

// gets returns how many GETs of blob digest were seen.
func (b *badRegistry) gets(digest string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.blobGets[digest]
}

// badMount mounts regfs with mountRegfs, its warnings logged into the
// returned buffer (printed if the test fails) instead of stderr.
func badMount(t *testing.T, c mountConfig) (*mounted, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	t.Cleanup(func() { // runs after the unmount: its warnings are in
		if t.Failed() {
			t.Logf("regfs log:\n%s", logs)
		}
	})
	c.logOut = logs
	return mountRegfs(t, c), logs
}

// badBlob returns a layer's compressed bytes and digest.
func badBlob(t *testing.T, l v1.Layer) ([]byte, string) {
	t.Helper()
	d, err := l.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return layerBlob(t, l), d.String()
}

// badLayer builds a layer or fails the test.
func badLayer(t *testing.T, c fixture.Compression, s fixture.Style, es ...fixture.Entry) v1.Layer {
	t.Helper()
	l, err := fixture.Layer(c, s, es...)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// badBase is the lower layer every image of these tests shares: a small tree
// that looks like a distribution's, with a generated binary.
func badBase(t *testing.T) v1.Layer {
	t.Helper()
	return badLayer(t, fixture.Gzip, fixture.OCI,
		fixture.Dir("etc", 0o755),
		fixture.File("etc/hostname", "bad-input\n", 0o644),
		fixture.File("etc/os-release", "NAME=\"regfs bad input\"\nID=badinput\n", 0o644),
		fixture.Dir("usr", 0o755), fixture.Dir("usr/bin", 0o755),
		fixture.Entry{Name: "usr/bin/tool", Kind: fixture.KindFile, Mode: 0o755,
			Open: fixture.Generated(11, 300<<10), Size: 300 << 10},
		fixture.Symlink("usr/bin/tool2", "tool"),
	)
}

// badBigSize is the size of badTop's generated file: 2.5 MiB, so that the
// blob spans several cache chunks.
const badBigSize = 5 << 19

// badTop is an upper layer unique to name: its arch file, a needle string
// (so a test can find file bytes in an uncompressed blob) and size generated
// bytes.
func badTop(t *testing.T, c fixture.Compression, name string, seed uint64, size int64) v1.Layer {
	t.Helper()
	return badLayer(t, c, fixture.OCI,
		fixture.Dir("etc", 0o755),
		fixture.File("etc/arch", name+"\n", 0o644),
		fixture.File("etc/needle", badNeedle(name), 0o644),
		fixture.Dir("opt", 0o755),
		fixture.Entry{Name: "opt/data.bin", Kind: fixture.KindFile, Mode: 0o644,
			Open: fixture.Generated(seed, size), Size: size},
	)
}

func badNeedle(name string) string { return "needle of " + name + "\n" }

// badImage builds a single-platform OCI image or fails the test.
func badImage(t *testing.T, platform string, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := fixture.Image(fixture.OCI, fixture.Platform(platform), layers...)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// badPush pushes the items to host or fails the test.
func badPush(t *testing.T, host string, items ...fixture.Item) {
	t.Helper()
	if err := fixture.Set(items).Push(context.Background(), host); err != nil {
		t.Fatal(err)
	}
}

// badPutManifest PUTs a raw document to repo under ref (a tag or its
// digest) and returns its digest.
func badPutManifest(t *testing.T, host, repo, ref, mediaType string, body []byte) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, "http://"+host+"/v2/"+repo+"/manifests/"+ref, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", mediaType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT %s:%s: HTTP %d: %s", repo, ref, resp.StatusCode, msg)
	}
	return badDigest(body)
}

// badDigest returns "sha256:<hex>" of b.
func badDigest(b []byte) string { return fmt.Sprintf("sha256:%x", sha256.Sum256(b)) }

// badResized PUTs into repo a copy of img's manifest whose layer i has the
// descriptor size size, and returns its descriptor (platform set).
func badResized(t *testing.T, host, repo string, img v1.Image, i int, size int64) v1.Descriptor {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	m = m.DeepCopy()
	m.Layers[i].Size = size
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	d := badPutManifest(t, host, repo, badDigest(raw), string(m.MediaType), raw)
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	h, err := v1.NewHash(d)
	if err != nil {
		t.Fatal(err)
	}
	return v1.Descriptor{MediaType: m.MediaType, Size: int64(len(raw)), Digest: h, Platform: cf.Platform()}
}

// badPutIndex PUTs an OCI index of descs to repo:tag.
func badPutIndex(t *testing.T, host, repo, tag string, descs ...v1.Descriptor) {
	t.Helper()
	raw, err := json.Marshal(v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: descs})
	if err != nil {
		t.Fatal(err)
	}
	badPutManifest(t, host, repo, tag, string(types.OCIImageIndex), raw)
}

// badDescriptor returns img's descriptor with its config's platform.
func badDescriptor(t *testing.T, img v1.Image) v1.Descriptor {
	t.Helper()
	raw, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	mt, err := img.MediaType()
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	h, err := v1.NewHash(badDigest(raw))
	if err != nil {
		t.Fatal(err)
	}
	return v1.Descriptor{MediaType: mt, Size: int64(len(raw)), Digest: h, Platform: cf.Platform()}
}

// flipBits returns b with one bit flipped in each of the bytes at the given
// offsets.
func flipBits(b []byte, at ...int) []byte {
	out := bytes.Clone(b)
	for _, i := range at {
		out[i] ^= 0x10
	}
	return out
}

// badGarbage returns n pseudo-random bytes.
func badGarbage(n int, seed byte) []byte {
	g := make([]byte, n)
	_, _ = rand.NewChaCha8([32]byte{seed}).Read(g)
	return g
}

// badRootfs is the path of repo:badTag's platform rootfs, joined with rest.
func badRootfs(m *mounted, repo, platform string, rest ...string) string {
	parts := append(strings.Split(repo, "/"), badTag)
	parts = append(parts, strings.Split(platform, "/")...)
	parts = append(parts, "rootfs")
	return m.path(append(parts, rest...)...)
}

// badWorks checks that a platform's rootfs lists and serves its hostname.
func badWorks(t *testing.T, m *mounted, repo, platform string) {
	t.Helper()
	if _, err := os.ReadDir(badRootfs(m, repo, platform, "usr", "bin")); err != nil {
		t.Errorf("%s %s: ls usr/bin: %v", repo, platform, err)
	}
	b, err := os.ReadFile(badRootfs(m, repo, platform, "etc", "hostname"))
	if err != nil || string(b) != "bad-input\n" {
		t.Errorf("%s %s: etc/hostname = %q, %v; want %q", repo, platform, b, err, "bad-input\n")
	}
}

// badFails checks that a platform's rootfs answers EIO to ls, stat and
// open, and that the log names the image, the platform and the layer.
func badFails(t *testing.T, m *mounted, logs *syncBuffer, host, repo, platform, layer string) {
	t.Helper()
	_, err := os.ReadDir(badRootfs(m, repo, platform))
	wantErrno(t, "ls rootfs", err, syscall.EIO)
	_, err = os.Stat(badRootfs(m, repo, platform, "etc", "hostname"))
	wantErrno(t, "stat rootfs/etc/hostname", err, syscall.EIO)
	_, err = os.ReadFile(badRootfs(m, repo, platform, "etc", "arch"))
	wantErrno(t, "cat rootfs/etc/arch", err, syscall.EIO)
	image := host + "/" + repo + ":" + badTag
	if ln := logs.line("image="+image+" ", "platform="+platform+" ", layer); ln == "" {
		t.Errorf("no log line names image %s, platform %s and layer %s", image, platform, layer)
	} else if !strings.Contains(ln, "level=WARN") && !strings.Contains(ln, "level=ERROR") {
		t.Errorf("log line is not a warning or an error: %s", ln)
	}
}

// TestBadInputCorruptLayers serves the arm64 upper layer of an index with
// broken bytes or a wrong descriptor size: that platform's rootfs must answer
// EIO and log why, while the amd64 platform of the same index (sharing the
// base layer, not the broken one) and another image keep working.
func TestBadInputCorruptLayers(t *testing.T) {
	srv := newBadServer(t)
	base := badBase(t)
	badPush(t, srv.direct, fixture.Item{Repo: "bad/other", Tags: []string{badTag},
		Object: badImage(t, "linux/amd64", base, badTop(t, fixture.Gzip, "other", 1, 64<<10))})

	tests := []struct {
		name string
		comp fixture.Compression
		// serve returns the bytes served for the blob (nil: as stored).
		serve func(blob []byte) []byte
		// size returns the descriptor size of the blob (nil: its length).
		size func(blob []byte) int64
		// status, if not 0, is the registry's answer to every request of the blob.
		status int
	}{
		{name: "bitflip-gzip", comp: fixture.Gzip,
			serve: func(b []byte) []byte { return flipBits(b, len(b)*3/10, len(b)*6/10, len(b)*9/10) }},
		{name: "bitflip-gzip-trailer", comp: fixture.Gzip, // ISIZE; the deflate data is intact
			serve: func(b []byte) []byte { return flipBits(b, len(b)-1) }},
		{name: "bitflip-zstd", comp: fixture.Zstd,
			serve: func(b []byte) []byte { return flipBits(b, len(b)/2) }},
		{name: "bitflip-tar-content", comp: fixture.Uncompressed, // parses; only the digest tells
			serve: func(b []byte) []byte {
				return flipBits(b, bytes.Index(b, []byte(badNeedle("bitflip-tar-content"))))
			}},
		{name: "truncated-gzip", comp: fixture.Gzip,
			serve: func(b []byte) []byte { return b[:len(b)/2] }},
		{name: "truncated-gzip-one-byte", comp: fixture.Gzip,
			serve: func(b []byte) []byte { return b[:len(b)-1] }},
		{name: "truncated-tar-trailer", comp: fixture.Uncompressed,
			serve: func(b []byte) []byte { return b[:len(b)-1024] }},
		{name: "garbage", comp: fixture.Gzip,
			serve: func(b []byte) []byte { return badGarbage(len(b), 1) }},
		{name: "garbage-gzip-magic", comp: fixture.Gzip,
			serve: func(b []byte) []byte {
				g := badGarbage(len(b), 2)
				copy(g, b[:10]) // a valid gzip header, garbage after it
				return g
			}},
		{name: "size-larger", comp: fixture.Gzip,
			size: func(b []byte) int64 { return int64(len(b)) + 100 }},
		{name: "size-smaller-gzip", comp: fixture.Gzip,
			size: func(b []byte) int64 { return int64(len(b)) - 10 }},
		{name: "size-smaller-tar", comp: fixture.Uncompressed, // a tar without its end blocks parses
			size: func(b []byte) int64 { return int64(len(b)) - 1024 }},
		// A blob the registry no longer has: the platform is listed, so its
		// rootfs answers EIO, not ENOENT (ls would show it empty).
		{name: "missing-blob", comp: fixture.Gzip, status: http.StatusNotFound},
	}

	amd := badImage(t, "linux/amd64", base, badTop(t, fixture.Gzip, "amd64", 2, 64<<10))
	type prepared struct {
		repo, layer string
	}
	ready := make([]prepared, len(tests))
	for i, tt := range tests {
		repo := "bad/" + tt.name
		top := badTop(t, tt.comp, tt.name, uint64(100+i), 256<<10)
		arm := badImage(t, "linux/arm64", base, top)
		idx, err := fixture.Index(fixture.OCI, amd, arm)
		if err != nil {
			t.Fatal(err)
		}
		badPush(t, srv.direct, fixture.Item{Repo: repo, Tags: []string{badTag}, Object: idx})
		blob, digest := badBlob(t, top)
		if tt.serve != nil {
			srv.serveBlob(digest, tt.serve(blob))
		}
		if tt.status != 0 {
			srv.failBlob(digest, tt.status)
		}
		if tt.size != nil {
			badPutIndex(t, srv.direct, repo, badTag, badDescriptor(t, amd),
				badResized(t, srv.direct, repo, arm, 1, tt.size(blob)))
		}
		ready[i] = prepared{repo: repo, layer: digest}
	}

	m, logs := badMount(t, mountConfig{registry: srv.host})
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := ready[i]
			badFails(t, m, logs, srv.host, p.repo, "linux/arm64", p.layer)
			badWorks(t, m, p.repo, "linux/amd64")
			badWorks(t, m, "bad/other", "linux/amd64")
			// Asking again still fails: the failure was not turned into an
			// empty or partial tree.
			_, err := os.Stat(badRootfs(m, p.repo, "linux/arm64", "etc", "needle"))
			wantErrno(t, "stat again", err, syscall.EIO)
		})
	}
}

// TestBadInputNotCached checks that bytes that failed their digest are not
// kept as good: after a bit-flipped layer, a retry and a remount with the
// same cache directory fetch the layer again, and once the registry serves
// the right bytes the rootfs works.
func TestBadInputNotCached(t *testing.T) {
	srv := newBadServer(t)
	const repo = "bad/cached"
	top := badTop(t, fixture.Gzip, "cached", 7, badBigSize)
	badPush(t, srv.direct, fixture.Item{Repo: repo, Tags: []string{badTag},
		Object: badImage(t, "linux/arm64", badBase(t), top)})
	blob, digest := badBlob(t, top)
	srv.serveBlob(digest, flipBits(blob, len(blob)-100)) // in the last chunk: earlier chunks are intact
	cacheDir := t.TempDir()
	cfg := mountConfig{registry: srv.host, cacheDir: cacheDir}
	needle := []string{"etc", "needle"}

	first, logs := badMount(t, cfg)
	badFails(t, first, logs, srv.host, repo, "linux/arm64", digest)
	gets := srv.gets(digest)
	_, err := os.ReadFile(badRootfs(first, repo, "linux/arm64", needle...))
	wantErrno(t, "retry in the same mount", err, syscall.EIO)
	if got := srv.gets(digest); got <= gets {
		t.Errorf("retry: %d blob GETs before, %d after: the layer's bytes came from the cache", gets, got)
	}
	first.unmount(t)

	second, _ := badMount(t, cfg)
	gets = srv.gets(digest)
	_, err = os.ReadFile(badRootfs(second, repo, "linux/arm64", needle...))
	wantErrno(t, "after a remount", err, syscall.EIO)
	if got := srv.gets(digest); got <= gets {
		t.Errorf("remount: %d blob GETs before, %d after: the layer's bytes came from the cache", gets, got)
	}

	// The registry heals: the same mount now serves the layer.
	srv.serveBlob(digest, nil)
	if b, err := os.ReadFile(badRootfs(second, repo, "linux/arm64", needle...)); err != nil || string(b) != badNeedle("cached") {
		t.Errorf("after the registry healed: %q, %v; want %q", b, err, badNeedle("cached"))
	}
	second.unmount(t)

	// And a remount serves it from the cache, without the registry's blob.
	srv.failBlob(digest, http.StatusInternalServerError)
	third, _ := badMount(t, cfg)
	if b, err := os.ReadFile(badRootfs(third, repo, "linux/arm64", "opt", "data.bin")); err != nil || !bytes.Equal(b, fixture.GeneratedBytes(7, badBigSize)) {
		t.Errorf("remount after healing: opt/data.bin: %d bytes, %v; want the generated bytes from the cache", len(b), err)
	}
}

// badRelabelled is a layer whose descriptor names another media type than
// its bytes have.
type badRelabelled struct {
	v1.Layer
	mt types.MediaType
}

func (l badRelabelled) MediaType() (types.MediaType, error) { return l.mt, nil }

// TestBadInputSniffedCompression pushes layers whose media type names the
// wrong compression: regfs must sniff the bytes and serve the same tree as
// mutate.Extract does from the real bytes.
func TestBadInputSniffedCompression(t *testing.T) {
	srv := newBadServer(t)
	tests := []struct {
		name  string
		comp  fixture.Compression
		label types.MediaType
	}{
		{"zstd-as-gzip", fixture.Zstd, types.OCILayer},
		{"zstd-as-docker-gzip", fixture.Zstd, types.DockerLayer},
		{"gzip-as-zstd", fixture.Gzip, types.OCILayerZStd},
		{"tar-as-gzip", fixture.Uncompressed, types.OCILayer},
		{"tar-as-zstd", fixture.Uncompressed, types.OCILayerZStd},
		{"gzip-as-tar", fixture.Gzip, types.OCIUncompressedLayer},
		{"zstd-as-tar", fixture.Zstd, types.OCIUncompressedLayer},
	}
	base := badBase(t)
	imgs := make([]v1.Image, len(tests))
	for i, tt := range tests {
		top := badRelabelled{Layer: badTop(t, tt.comp, tt.name, uint64(200+i), 256<<10), mt: tt.label}
		imgs[i] = badImage(t, "linux/arm64", base, top)
		m, err := imgs[i].Manifest()
		if err != nil {
			t.Fatal(err)
		}
		if got := m.Layers[1].MediaType; got != tt.label {
			t.Fatalf("%s: the manifest says %s, want the label %s", tt.name, got, tt.label)
		}
		badPush(t, srv.direct, fixture.Item{Repo: "sniff/" + tt.name, Tags: []string{badTag}, Object: imgs[i]})
	}
	m, _ := badMount(t, mountConfig{registry: srv.host})
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			compareRootfs(t, badRootfs(m, "sniff/"+tt.name, "linux/arm64"), extracted(t, imgs[i]))
		})
	}
}

// TestBadInputHybridDocument serves a document that is both an index and a
// manifest: its tag directory, and a platform of an index that points to it,
// answer EIO and serve nothing from it; the good tag next to it works.
func TestBadInputHybridDocument(t *testing.T) {
	srv := newBadServer(t)
	const repo = "bad/hybrid"
	amd := badImage(t, "linux/amd64", badBase(t), badTop(t, fixture.Gzip, "amd64", 2, 64<<10))
	good, err := fixture.Index(fixture.OCI, amd)
	if err != nil {
		t.Fatal(err)
	}
	badPush(t, srv.direct, fixture.Item{Repo: repo, Tags: []string{badTag}, Object: good})

	// The amd64 manifest with the index's manifests list added.
	man, err := amd.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(man, &doc); err != nil {
		t.Fatal(err)
	}
	desc := badDescriptor(t, amd)
	doc["manifests"] = []v1.Descriptor{desc}
	hybrid, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	d := badPutManifest(t, srv.direct, repo, "both", string(types.OCIManifestSchema1), hybrid)
	// An index whose arm64 entry is the hybrid document.
	hd, err := v1.NewHash(d)
	if err != nil {
		t.Fatal(err)
	}
	badPutIndex(t, srv.direct, repo, "nested", desc, v1.Descriptor{
		MediaType: types.OCIManifestSchema1, Size: int64(len(hybrid)), Digest: hd,
		Platform: &v1.Platform{OS: "linux", Architecture: "arm64"},
	})

	m, _ := badMount(t, mountConfig{registry: srv.host})
	for _, tc := range []struct{ name, dir string }{{"by-tag", "both"}, {"by-digest", d}} {
		t.Run(tc.name, func(t *testing.T) {
			tag := m.path(repo, tc.dir)
			_, err := os.ReadDir(tag)
			wantErrno(t, "ls", err, syscall.EIO)
			for _, name := range []string{"digest", "manifest.json", "index.json", "linux"} {
				_, err := os.ReadFile(filepath.Join(tag, name))
				wantErrno(t, name, err, syscall.EIO)
			}
		})
	}
	t.Run("nested", func(t *testing.T) {
		arm := m.path(repo, "nested", "linux", "arm64")
		_, err := os.ReadDir(filepath.Join(arm, "rootfs"))
		wantErrno(t, "ls rootfs", err, syscall.EIO)
		_, err = os.ReadFile(filepath.Join(arm, "config.json"))
		wantErrno(t, "config.json", err, syscall.EIO)
		_, err = os.ReadFile(filepath.Join(arm, "manifest.json"))
		wantErrno(t, "manifest.json", err, syscall.EIO)
	})
	badWorks(t, m, repo, "linux/amd64")
}

// TestBadInputRegistryFailures: a repository the registry denies answers
// EACCES; one whose every request fails with 500 answers EIO within the
// timeout, at its tag or, when only a layer fails, at its rootfs.
func TestBadInputRegistryFailures(t *testing.T) {
	srv := newBadServer(t)
	base := badBase(t)
	img := badImage(t, "linux/amd64", base)
	for _, repo := range []string{"deny401/app", "deny403/app", "down/app", "ok/app"} {
		badPush(t, srv.direct, fixture.Item{Repo: repo, Tags: []string{badTag}, Object: img})
	}
	top := badTop(t, fixture.Gzip, "blob500", 3, 64<<10)
	badPush(t, srv.direct, fixture.Item{Repo: "down/blob", Tags: []string{badTag},
		Object: badImage(t, "linux/amd64", base, top)})
	_, topDigest := badBlob(t, top)
	srv.failRepo("deny401/app", http.StatusUnauthorized)
	srv.failRepo("deny403/app", http.StatusForbidden)
	srv.failRepo("down/app", http.StatusInternalServerError)
	srv.failBlob(topDigest, http.StatusInternalServerError)

	const timeout = 2 * time.Second
	m, logs := badMount(t, mountConfig{registry: srv.host, timeout: timeout})
	for _, repo := range []string{"deny401/app", "deny403/app"} {
		t.Run(strings.ReplaceAll(repo, "/", "-"), func(t *testing.T) {
			_, err := os.Stat(m.path(repo, badTag))
			wantErrno(t, "stat tag", err, syscall.EACCES)
			// A denied tags/list is no listing (the name may be a namespace,
			// as arm64v8 is on Docker Hub): the directory lists no tags.
			if es, err := os.ReadDir(m.path(repo)); err != nil || len(es) != 0 {
				t.Errorf("ls repository: %d entries, %v; want none, no error", len(es), err)
			}
			_, err = os.ReadFile(m.path(repo, badTag, "digest"))
			wantErrno(t, "cat tag/digest", err, syscall.EACCES)
			if logs.line("lookup failed", repo, "HTTP 40") == "" {
				t.Errorf("no log line names %s and the denial", repo)
			}
		})
	}
	// Within the timeout: the retries of quick failures end within one
	// stall timeout, plus the last answer.
	within := timeout + time.Second
	t.Run("500-tag", func(t *testing.T) {
		took, err := timed(func() error { _, err := os.Stat(m.path("down", "app", badTag)); return err })
		wantErrno(t, "stat tag", err, syscall.EIO)
		if took > within {
			t.Errorf("EIO after %v, want within %v", took, within)
		}
		if logs.line("down/app", "err=") == "" {
			t.Errorf("no log line names down/app and the cause")
		}
	})
	t.Run("500-blob", func(t *testing.T) {
		took, err := timed(func() error { _, err := os.ReadDir(badRootfs(m, "down/blob", "linux/amd64")); return err })
		wantErrno(t, "ls rootfs", err, syscall.EIO)
		if took > within {
			t.Errorf("EIO after %v, want within %v", took, within)
		}
		if logs.line("image="+srv.host+"/down/blob:"+badTag, topDigest) == "" {
			t.Errorf("no log line names the image and layer %s", topDigest)
		}
	})
	// The failures did not take the registry down for the others.
	badWorks(t, m, "ok/app", "linux/amd64")
}

// TestBadInputStalledBlob: a layer whose requests hang makes its rootfs
// answer EIO within the stall timeout, not hang.
func TestBadInputStalledBlob(t *testing.T) {
	srv := newBadServer(t)
	top := badTop(t, fixture.Gzip, "stalled", 4, 64<<10)
	badPush(t, srv.direct, fixture.Item{Repo: "stall/app", Tags: []string{badTag},
		Object: badImage(t, "linux/amd64", badBase(t), top)})
	_, digest := badBlob(t, top)
	srv.stallBlob(digest)

	const timeout = time.Second
	m, logs := badMount(t, mountConfig{registry: srv.host, timeout: timeout})
	// Resolve the tag first: only the layer stalls.
	if _, err := os.Stat(badRootfs(m, "stall/app", "linux/amd64")); err != nil {
		t.Fatal(err)
	}
	took, err := timed(func() error { _, err := os.ReadDir(badRootfs(m, "stall/app", "linux/amd64")); return err })
	wantErrno(t, "ls rootfs", err, syscall.EIO)
	if within := 2*timeout + time.Second; took > within {
		t.Errorf("EIO after %v, want within %v", took, within)
	}
	if logs.line("image="+srv.host+"/stall/app:"+badTag, digest) == "" {
		t.Errorf("no log line names the image and layer %s", digest)
	}
}
