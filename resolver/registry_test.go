package resolver

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// fixture is a registry holding a nested repository with a multi-platform index (with an
// attestation entry), a single-platform image and an artifact.
type fixture struct {
	cnt     *counter
	host    string
	c       *Client
	index   Descriptor
	single  v1.Descriptor
	amd64   v1.Descriptor
	arm64   v1.Descriptor
	armv7   v1.Descriptor
	blobImg v1.Image
}

func newFixture(t *testing.T, o Options) *fixture {
	t.Helper()
	_, cnt, host := newRegistry(t, nil)
	f := &fixture{cnt: cnt, host: host}
	const repo = "org/team/app"
	f.amd64 = push(t, host, repo, "", platformImage(t, v1.Platform{OS: "linux", Architecture: "amd64"}))
	f.arm64 = push(t, host, repo, "", platformImage(t, v1.Platform{OS: "linux", Architecture: "arm64"}))
	f.armv7 = push(t, host, repo, "", platformImage(t, v1.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}))
	f.index, _ = putIndex(t, host, repo, "multi", MediaTypeOCIIndex, []indexEntry{
		{desc: f.amd64, platform: plat("linux", "amd64", "")},
		{desc: f.arm64, platform: plat("linux", "arm64", "")},
		{desc: f.armv7, platform: plat("linux", "arm", "v7")},
		{desc: f.amd64, platform: plat("unknown", "unknown", ""),
			annotations: map[string]string{"vnd.docker.reference.type": "attestation-manifest"}},
	})
	f.blobImg = platformImage(t, v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"})
	f.single = push(t, host, repo, "single", f.blobImg)
	push(t, host, "org/other", "v1", platformImage(t, v1.Platform{OS: "linux", Architecture: "amd64"}))
	cnt.take()
	f.c = newClient(t, o)
	return f
}

func TestLookupNestedAndBudgets(t *testing.T) {
	f := newFixture(t, Options{TagTTL: time.Hour})
	ctx := ctxT(t)
	root := Name{Registry: f.host}

	// Name resolution (not budgeted).
	org, err := f.c.Lookup(ctx, root, "org")
	if err != nil || org.Kind != KindName {
		t.Fatalf("lookup org: %+v %v", org, err)
	}
	team, err := f.c.Lookup(ctx, org.Name, "team")
	if err != nil || team.Kind != KindName {
		t.Fatalf("lookup team: %+v %v", team, err)
	}
	app, err := f.c.Lookup(ctx, team.Name, "app")
	if err != nil || app.Kind != KindName || app.Name.Path != "org/team/app" {
		t.Fatalf("lookup app: %+v %v", app, err)
	}
	for _, bad := range []string{"nope", "UPPER", "a..b", "sha256:zz"} {
		if _, err := f.c.Lookup(ctx, team.Name, bad); !errors.Is(err, ErrNotFound) {
			t.Errorf("lookup %q: got %v, want ErrNotFound", bad, err)
		}
	}

	t.Run("index costs HEAD+GET", func(t *testing.T) {
		f.cnt.take()
		ch, err := f.c.Lookup(ctx, app.Name, "multi")
		if err != nil || ch.Kind != KindTag {
			t.Fatalf("lookup multi: %+v %v", ch, err)
		}
		mustEqual(t, "digest", ch.Desc.Digest, f.index.Digest)
		mustEqual(t, "repo", ch.Ref.Repo, "org/team/app")
		d, err := f.c.Resolve(ctx, ch.Ref)
		if err != nil {
			t.Fatal(err)
		}
		ps, err := f.c.Platforms(ctx, ch.Ref, d)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := names(ps), []string{"linux/amd64", "linux/arm64", "linux/arm/v7"}; !slices.Equal(got, want) {
			t.Fatalf("platforms: got %v, want %v", got, want)
		}
		if _, err := f.c.Document(ctx, ch.Ref, d.Digest); err != nil {
			t.Fatal(err)
		}
		if reqs := f.cnt.take(); len(reqs) > 2 {
			t.Fatalf("lookup+ls of an index: %d requests, want <= 2: %v", len(reqs), reqs)
		}
		// Again within the TTL: nothing.
		if _, err := f.c.Lookup(ctx, app.Name, "multi"); err != nil {
			t.Fatal(err)
		}
		if _, err := f.c.Platforms(ctx, ch.Ref, d); err != nil {
			t.Fatal(err)
		}
		if reqs := f.cnt.take(); len(reqs) != 0 {
			t.Fatalf("repeat: %d requests, want 0: %v", len(reqs), reqs)
		}
	})

	t.Run("single manifest costs HEAD+GET+config", func(t *testing.T) {
		f.cnt.take()
		ch, err := f.c.Lookup(ctx, app.Name, "single")
		if err != nil {
			t.Fatal(err)
		}
		ps, err := f.c.Platforms(ctx, ch.Ref, ch.Desc)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := names(ps), []string{"linux/arm64/v8"}; !slices.Equal(got, want) {
			t.Fatalf("platforms: got %v, want %v", got, want)
		}
		mustEqual(t, "manifest digest", ps[0].Manifest.Digest, f.single.Digest.String())
		m, raw, err := f.c.Manifest(ctx, ch.Ref, ps[0].Manifest.Digest)
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Layers) != 1 || sha256Digest(raw) != f.single.Digest.String() {
			t.Fatalf("manifest: %+v", m)
		}
		if reqs := f.cnt.take(); len(reqs) > 3 {
			t.Fatalf("lookup+ls of a manifest: %d requests, want <= 3: %v", len(reqs), reqs)
		}
	})

	t.Run("digest references", func(t *testing.T) {
		for _, child := range []string{f.index.Digest, "whatever@" + f.index.Digest} {
			ch, err := f.c.Lookup(ctx, app.Name, child)
			if err != nil || ch.Kind != KindTag {
				t.Fatalf("lookup %s: %+v %v", child, ch, err)
			}
			mustEqual(t, "digest", ch.Desc.Digest, f.index.Digest)
			mustEqual(t, "ref digest", ch.Ref.Digest, f.index.Digest)
		}
		missing := "sha256:" + strings.Repeat("ab", 32)
		if _, err := f.c.Lookup(ctx, app.Name, missing); !errors.Is(err, ErrNotFound) {
			t.Fatalf("missing digest: got %v, want ErrNotFound", err)
		}
	})

	t.Run("manifest of an index is refused", func(t *testing.T) {
		_, _, err := f.c.Manifest(ctx, Ref{Registry: f.host, Repo: "org/team/app"}, f.index.Digest)
		if !errors.Is(err, ErrInvalid) {
			t.Fatalf("got %v, want ErrInvalid", err)
		}
	})
}

func TestTagTTL(t *testing.T) {
	f := newFixture(t, Options{TagTTL: time.Hour})
	ctx := ctxT(t)
	now := time.Now()
	f.c.now = func() time.Time { return now }
	r := Ref{Registry: f.host, Repo: "org/team/app", Tag: "multi"}
	if _, err := f.c.Resolve(ctx, r); err != nil {
		t.Fatal(err)
	}
	f.cnt.take()
	now = now.Add(30 * time.Minute)
	if _, err := f.c.Resolve(ctx, r); err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "requests within TTL", len(f.cnt.take()), 0)
	now = now.Add(time.Hour)
	if _, err := f.c.Resolve(ctx, r); err != nil {
		t.Fatal(err)
	}
	if reqs := f.cnt.take(); len(reqs) != 1 || !strings.HasPrefix(reqs[0], "HEAD ") {
		t.Fatalf("after TTL: %v, want one HEAD", reqs)
	}
}

func TestList(t *testing.T) {
	f := newFixture(t, Options{})
	ctx := ctxT(t)
	tests := []struct {
		path     string
		tags     []string
		children []string
	}{
		{"", nil, []string{"org"}},
		{"org", nil, []string{"other", "team"}},
		{"org/team", nil, []string{"app"}},
		{"org/team/app", []string{"multi", "single"}, nil},
		{"org/other", []string{"v1"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			l, err := f.c.List(ctx, Name{Registry: f.host, Path: tt.path})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(l.Tags, tt.tags) || !slices.Equal(l.Children, tt.children) {
				t.Fatalf("got %+v, want tags %v children %v", l, tt.tags, tt.children)
			}
		})
	}
}

func TestConcurrentResolveJoined(t *testing.T) {
	f := newFixture(t, Options{})
	ctx := ctxT(t)
	r := Ref{Registry: f.host, Repo: "org/team/app", Tag: "multi"}
	if _, err := f.c.Lookup(ctx, Name{Registry: f.host}, "org"); err != nil { // ping + catalog
		t.Fatal(err)
	}
	f.cnt.take()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			_, err := f.c.Resolve(ctx, r)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	mustEqual(t, "HEADs", f.cnt.count("HEAD "), 1)
}

func TestBlobSourceRange(t *testing.T) {
	f := newFixture(t, Options{})
	ctx := ctxT(t)
	layers, _ := f.blobImg.Layers()
	l := layers[0]
	dg, _ := l.Digest()
	size, _ := l.Size()
	rc, _ := l.Compressed()
	whole, _ := io.ReadAll(rc)
	src := f.c.BlobSource(Ref{Registry: f.host, Repo: "org/team/app", Tag: "single"}, dg.String(), size)
	for _, tc := range []struct{ off, n int64 }{{0, 10}, {5, 1}, {size - 3, 100}} {
		t.Run(fmt.Sprintf("%d+%d", tc.off, tc.n), func(t *testing.T) {
			body, start, err := src.Fetch(ctx, tc.off, tc.n)
			if err != nil {
				t.Fatal(err)
			}
			defer body.Close()
			b, err := io.ReadAll(body)
			if err != nil {
				t.Fatal(err)
			}
			end := min(tc.off+tc.n, size)
			if start > tc.off || start+int64(len(b)) < end {
				t.Fatalf("start %d len %d does not cover [%d,%d)", start, len(b), tc.off, end)
			}
			if got, want := string(b[tc.off-start:end-start]), string(whole[tc.off:end]); got != want {
				t.Fatalf("bytes differ")
			}
		})
	}
	if _, _, err := src.Fetch(ctx, size, 1); !errors.Is(err, ErrInvalid) {
		t.Fatalf("fetch past end: got %v, want ErrInvalid", err)
	}
}
