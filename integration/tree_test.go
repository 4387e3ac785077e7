package integration

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/regfs/regfs/internal/fixture"
	"github.com/regfs/regfs/internal/testenv"
)

// treeRegistry pushes the Tree fixture set to Debian's docker-registry and
// returns the server and the set.
func treeRegistry(t *testing.T) (*testenv.Server, fixture.Set) {
	t.Helper()
	srv := testenv.Registry(t)
	set, err := fixture.Tree()
	if err != nil {
		t.Fatal(err)
	}
	if err := set.Push(context.Background(), srv.DirectHost()); err != nil {
		t.Fatal(err)
	}
	return srv, set
}

// object returns the pushed object of repo:tag.
func object(t *testing.T, set fixture.Set, repo, tag string) interface {
	Digest() (v1.Hash, error)
	RawManifest() ([]byte, error)
} {
	t.Helper()
	for _, it := range set {
		if it.Repo == repo && slices.Contains(it.Tags, tag) {
			return it.Object.(interface {
				Digest() (v1.Hash, error)
				RawManifest() ([]byte, error)
			})
		}
	}
	t.Fatalf("no %s:%s in the fixture set", repo, tag)
	return nil
}

func digestOf(t *testing.T, o interface{ Digest() (v1.Hash, error) }) string {
	t.Helper()
	h, err := o.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return h.String()
}

// indexEntries returns the manifests of an index by platform string.
func indexEntries(t *testing.T, o any) []v1.Descriptor {
	t.Helper()
	idx, ok := o.(v1.ImageIndex)
	if !ok {
		t.Fatalf("%T is not an index", o)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	return m.Manifests
}

func TestTreeListsRepositoriesTagsAndPlatforms(t *testing.T) {
	srv, set := treeRegistry(t)
	m := mountRegfs(t, mountConfig{registry: srv.Host()})

	if got := readDir(t, m.path()); !slices.Contains(got, "tree") || !slices.Contains(got, "org") {
		t.Errorf("root lists %v, want tree and org among them", got)
	}
	if got, want := readDir(t, m.path("org")), []string{"solo", "team"}; !slices.Equal(got, want) {
		t.Errorf("org/ lists %v, want %v", got, want)
	}
	if got, want := readDir(t, m.path("org", "team", "app")), []string{"1.0", "latest"}; !slices.Equal(got, want) {
		t.Errorf("org/team/app/ lists %v, want %v", got, want)
	}

	oci := object(t, set, fixture.TreeOCIRepo, "latest")
	tagDir := m.path(fixture.TreeOCIRepo, "latest")
	if got, want := readDir(t, tagDir), []string{"digest", "index.json", "linux"}; !slices.Equal(got, want) {
		t.Errorf("tag dir lists %v, want %v", got, want)
	}
	if got, want := readFile(t, filepath.Join(tagDir, "digest")), digestOf(t, oci)+"\n"; got != want {
		t.Errorf("digest = %q, want %q", got, want)
	}
	raw, _ := oci.RawManifest()
	if got := readFile(t, filepath.Join(tagDir, "index.json")); got != string(raw) {
		t.Errorf("index.json differs from the registry's document")
	}
	if got, want := readDir(t, filepath.Join(tagDir, "linux")), []string{"amd64", "arm", "arm64"}; !slices.Equal(got, want) {
		t.Errorf("linux/ lists %v, want %v (attestations hidden)", got, want)
	}
	if got, want := readDir(t, filepath.Join(tagDir, "linux", "arm")), []string{"v6", "v7"}; !slices.Equal(got, want) {
		t.Errorf("linux/arm/ lists %v, want %v", got, want)
	}
	for _, d := range indexEntries(t, oci) {
		if d.Platform == nil || d.Platform.OS != "linux" {
			continue
		}
		p := filepath.Join(tagDir, d.Platform.OS, d.Platform.Architecture, d.Platform.Variant)
		if got, want := readFile(t, filepath.Join(p, "digest")), d.Digest.String()+"\n"; got != want {
			t.Errorf("%s/digest = %q, want %q", p, got, want)
		}
		if got, want := readDir(t, p), []string{"config.json", "digest", "manifest.json", "rootfs"}; !slices.Equal(got, want) {
			t.Errorf("%s lists %v, want %v", p, got, want)
		}
		if !strings.Contains(readFile(t, filepath.Join(p, "config.json")), `"architecture":"`+d.Platform.Architecture+`"`) {
			t.Errorf("%s/config.json does not name its architecture", p)
		}
	}
}

func TestTreePlatformNames(t *testing.T) {
	srv, set := treeRegistry(t)
	m := mountRegfs(t, mountConfig{registry: srv.Host()})

	docker := m.path(fixture.TreeDockerRepo, "latest", "linux")
	want := map[string]string{}
	for _, d := range indexEntries(t, object(t, set, fixture.TreeDockerRepo, "latest")) {
		want[d.Platform.Architecture+"/"+d.Platform.Variant] = d.Digest.String() + "\n"
	}
	for _, tc := range []struct{ path, platform string }{
		{"x86_64", "amd64/"},
		{"aarch64", "arm64/v8"},
		{"aarch64/v8", "arm64/v8"},
		{"armhf", "arm/v7"},
		{"armel", "arm/v6"},
		{"arm/v7", "arm/v7"},
		{"386", "386/"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			if got := readFile(t, filepath.Join(docker, tc.path, "digest")); got != want[tc.platform] {
				t.Errorf("%s/digest = %q, want %s's %q", tc.path, got, tc.platform, want[tc.platform])
			}
		})
	}

	// Duplicate platforms: the first keeps the plain name.
	dup := indexEntries(t, object(t, set, fixture.TreeDupRepo, "latest"))
	dupDir := m.path(fixture.TreeDupRepo, "latest", "linux")
	second := "amd64@" + dup[1].Digest.Hex[:12]
	if got, want := readDir(t, dupDir), []string{"amd64", second, "arm64"}; !slices.Equal(got, want) {
		t.Errorf("dup linux/ lists %v, want %v", got, want)
	}
	if got := readFile(t, filepath.Join(dupDir, "amd64", "digest")); got != dup[0].Digest.String()+"\n" {
		t.Errorf("amd64 is %q, want the first entry %s", got, dup[0].Digest)
	}
	if got := readFile(t, filepath.Join(dupDir, second, "digest")); got != dup[1].Digest.String()+"\n" {
		t.Errorf("%s is %q, want %s", second, got, dup[1].Digest)
	}
	// arm64/v8 finds the arm64 entry that has no variant.
	if got := readFile(t, filepath.Join(dupDir, "arm64", "v8", "digest")); got != dup[2].Digest.String()+"\n" {
		t.Errorf("arm64/v8 is %q, want %s", got, dup[2].Digest)
	}

	// A single-platform image shows its config's platform.
	single := object(t, set, fixture.TreeSingleRepo, "latest")
	sdir := m.path(fixture.TreeSingleRepo, "latest")
	if got, want := readDir(t, sdir), []string{"digest", "linux", "manifest.json"}; !slices.Equal(got, want) {
		t.Errorf("single lists %v, want %v", got, want)
	}
	if got := readFile(t, filepath.Join(sdir, "linux", "amd64", "digest")); got != digestOf(t, single)+"\n" {
		t.Errorf("single linux/amd64/digest = %q, want %s", got, digestOf(t, single))
	}
	if got, want := readDir(t, m.path(fixture.TreeSingleArmRepo, "latest", "linux", "arm64")), []string{"v8"}; !slices.Equal(got, want) {
		t.Errorf("single-arm linux/arm64 lists %v, want %v", got, want)
	}

	// A tag that is not an image: digest and document, no platforms.
	if got, want := readDir(t, m.path(fixture.TreeArtifactRepo, "sig")), []string{"digest", "manifest.json"}; !slices.Equal(got, want) {
		t.Errorf("signature tag lists %v, want %v", got, want)
	}
}

func TestTreeReferences(t *testing.T) {
	srv, set := treeRegistry(t)
	m := mountRegfs(t, mountConfig{registry: srv.Host()})

	oci := object(t, set, fixture.TreeOCIRepo, "latest")
	d := digestOf(t, oci)
	raw, _ := oci.RawManifest()
	for _, p := range []string{
		m.path(fixture.TreeOCIRepo, d),                    // repo/sha256:…
		m.path(fixture.TreeOCIRepo, "nosuchtag@"+d),       // tag ignored
		m.path(srv.Host(), fixture.TreeOCIRepo, "latest"), // host-qualified
	} {
		if got := readFile(t, filepath.Join(p, "index.json")); got != string(raw) {
			t.Errorf("%s/index.json differs", p)
		}
	}
	// A platform manifest by digest: a manifest directory.
	arm := indexEntries(t, oci)[1]
	if got, want := readDir(t, m.path(fixture.TreeOCIRepo, arm.Digest.String())), []string{"digest", "linux", "manifest.json"}; !slices.Equal(got, want) {
		t.Errorf("manifest by digest lists %v, want %v", got, want)
	}

	for _, p := range []string{
		m.path("nosuchrepo", "latest"),
		m.path(fixture.TreeOCIRepo, "nosuchtag"),
		m.path(fixture.TreeOCIRepo, "latest", "linux", "s390x"),
		m.path(fixture.TreeOCIRepo, "latest", "windows"),
		m.path(fixture.TreeOCIRepo, "sha256:"+strings.Repeat("0", 64)),
		m.path(fixture.TreeOCIRepo, "Not:A:Tag"),
		m.path("org", "nosuch", "thing"),
	} {
		_, err := os.Stat(p)
		wantErrno(t, "stat "+p, err, syscall.ENOENT)
	}
}

// manifestRequests counts the registry requests that the listing budgets
// are about: HEAD and GET of manifests and blobs.
func manifestRequests(c testenv.Counts) int {
	return c.N("HEAD", testenv.KindManifest) + c.N("GET", testenv.KindManifest) +
		c.N("HEAD", testenv.KindBlob) + c.N("GET", testenv.KindBlob)
}

func TestTreeRequestBudgets(t *testing.T) {
	srv, _ := treeRegistry(t)
	cacheDir := t.TempDir()
	m := mountRegfs(t, mountConfig{registry: srv.Host(), cacheDir: cacheDir})

	for _, tc := range []struct {
		repo string
		max  int // HEAD the tag, GET the index; or HEAD, GET manifest, GET config
	}{
		{fixture.TreeOCIRepo, 2},
		{fixture.TreeSingleRepo, 3},
	} {
		// Resolve the names first: their requests are not counted.
		if _, err := os.Stat(m.path(tc.repo)); err != nil {
			t.Fatal(err)
		}
		srv.Reset()
		tag := m.path(tc.repo, "latest")
		readDir(t, tag)
		t.Logf("cold ls %s/latest/: %d requests:\n%s", tc.repo, manifestRequests(srv.Counts()), srv.Counts())
		if got := manifestRequests(srv.Counts()); got > tc.max {
			t.Errorf("cold ls %s: %d requests, want at most %d:\n%s", tc.repo, got, tc.max, srv.Counts())
		}
		srv.Reset()
		readDir(t, filepath.Join(tag, "linux"))
		readFile(t, filepath.Join(tag, "linux", "amd64", "digest"))
		readDir(t, tag)
		if got := srv.Counts().Total(); got != 0 {
			t.Errorf("%s: platform digest and a repeated ls cost %d requests, want 0:\n%s", tc.repo, got, srv.Counts())
		}
	}

	// 250+ tags: one tags/list request per page (registry 2.8 sends one page).
	srv.Reset()
	if got := len(readDir(t, m.path(fixture.TreeManyRepo))); got < fixture.TreeManyTags {
		t.Errorf("many lists %d tags, want %d", got, fixture.TreeManyTags)
	}
	if got := srv.Counts().N("GET", testenv.KindTags); got != 1 {
		t.Errorf("tags/list requests = %d, want 1:\n%s", got, srv.Counts())
	}
}

func TestTreeRemountUsesCache(t *testing.T) {
	srv, _ := treeRegistry(t)
	cacheDir := t.TempDir()
	tag := []string{fixture.TreeOCIRepo, "latest"}
	first := mountRegfs(t, mountConfig{registry: srv.Host(), cacheDir: cacheDir})
	readDir(t, first.path(tag...))
	readFile(t, first.path(append(tag, "index.json")...))
	first.unmount(t)

	second := mountRegfs(t, mountConfig{registry: srv.Host(), cacheDir: cacheDir})
	if _, err := os.Stat(second.path(fixture.TreeOCIRepo)); err != nil {
		t.Fatal(err)
	}
	srv.Reset()
	readDir(t, second.path(tag...))
	readFile(t, second.path(append(tag, "index.json")...))
	c := srv.Counts()
	t.Logf("after a remount: %d requests:\n%s", manifestRequests(c), c)
	if got := manifestRequests(c); got > 1 || c.N("GET", testenv.KindManifest) != 0 {
		t.Errorf("after a remount: %d requests, want only the HEAD:\n%s", got, c)
	}
}
