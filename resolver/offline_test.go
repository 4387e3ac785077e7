package resolver

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// blackholeFixture is a registry with org/team/app (an index "multi" and a manifest
// "single") whose every request can be held unanswered, as a blackholed host's are.
type blackholeFixture struct {
	cnt   *counter
	host  string
	index Descriptor
	hole  atomic.Bool
}

const offlineTimeout = 300 * time.Millisecond

func newBlackholeFixture(t *testing.T) *blackholeFixture {
	t.Helper()
	f := &blackholeFixture{}
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	_, f.cnt, f.host = newRegistry(t, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if f.hole.Load() {
				select {
				case <-release:
				case <-r.Context().Done():
				}
				return
			}
			next.ServeHTTP(w, r)
		})
	})
	const repo = "org/team/app"
	amd := push(t, f.host, repo, "", platformImage(t, v1.Platform{OS: "linux", Architecture: "amd64"}))
	f.index, _ = putIndex(t, f.host, repo, "multi", MediaTypeOCIIndex, []indexEntry{{desc: amd, platform: plat("linux", "amd64", "")}})
	push(t, f.host, repo, "single", platformImage(t, v1.Platform{OS: "linux", Architecture: "arm64"}))
	f.cnt.take()
	return f
}

// lookupPath looks up each component of path from the root and returns the last answer.
func lookupPath(t *testing.T, c *Client, host, path string) (Child, error) {
	t.Helper()
	n := Name{Registry: host}
	var ch Child
	for _, part := range strings.Split(path, "/") {
		var err error
		ch, err = c.Lookup(ctxT(t), n, part)
		if err != nil {
			return ch, err
		}
		n = ch.Name
	}
	return ch, nil
}

// markDown makes c find the registry unreachable: one request stalls.
func (f *blackholeFixture) markDown(t *testing.T, c *Client) {
	t.Helper()
	f.hole.Store(true)
	_, err := c.Resolve(ctxT(t), Ref{Registry: f.host, Repo: "org/team/app", Tag: "never-asked"})
	if !errors.Is(err, ErrUnavailable) || !c.endpointFor(f.host).isDown(c.now()) {
		t.Fatalf("stalled request: %v; registry not marked down", err)
	}
	f.cnt.take()
}

// TestNestedNamesWhileDown: with the registry down, nested repositories stay reachable
// from what is known (the stale catalog, the names already seen, the cached negative tag
// answers), with no request; a name under a repository is first tried as a tag, and that
// negative answer is kept for the tag TTL.
func TestNestedNamesWhileDown(t *testing.T) {
	t.Run("negative tag answers are cached", func(t *testing.T) {
		f := newBlackholeFixture(t)
		c := newClient(t, Options{Timeout: offlineTimeout, TagTTL: time.Hour})
		for range 3 {
			if ch, err := lookupPath(t, c, f.host, "org/team/app"); err != nil || ch.Kind != KindName {
				t.Fatalf("lookup: %+v %v", ch, err)
			}
		}
		mustEqual(t, "HEADs of the tag org:team", f.cnt.count("HEAD /v2/org/manifests/team"), 1)
		mustEqual(t, "HEADs of the tag org/team:app", f.cnt.count("HEAD /v2/org/team/manifests/app"), 1)
	})
	t.Run("known from the names seen and the stale catalog", func(t *testing.T) {
		f := newBlackholeFixture(t)
		now := time.Now()
		c := newClient(t, Options{Timeout: offlineTimeout, TagTTL: time.Minute})
		c.now = func() time.Time { return now }
		if ch, err := lookupPath(t, c, f.host, "org/team/app/multi"); err != nil || ch.Kind != KindTag {
			t.Fatalf("lookup: %+v %v", ch, err)
		}
		now = now.Add(time.Hour) // every answer is stale
		f.markDown(t, c)
		for path, kind := range map[string]Kind{"org": KindName, "org/team": KindName, "org/team/app": KindName, "org/team/app/multi": KindTag} {
			if ch, err := lookupPath(t, c, f.host, path); err != nil || ch.Kind != kind || ch.Offline {
				t.Errorf("%s while down: %+v %v, want kind %v, known (not Offline)", path, ch, err, kind)
			}
		}
		mustEqual(t, "requests while down", len(f.cnt.take()), 0)
	})
	t.Run("known from the catalog only", func(t *testing.T) {
		f := newBlackholeFixture(t)
		c := newClient(t, Options{Timeout: offlineTimeout, TagTTL: time.Hour})
		if _, err := c.List(ctxT(t), Name{Registry: f.host}); err != nil { // the catalog
			t.Fatal(err)
		}
		f.markDown(t, c)
		// org:team was never asked: its HEAD fails at once with ErrUnavailable.
		if ch, err := c.Lookup(ctxT(t), Name{Registry: f.host, Path: "org"}, "team"); err != nil || ch.Kind != KindName {
			t.Fatalf("org/team while down: %+v %v", ch, err)
		}
		mustEqual(t, "requests while down", len(f.cnt.take()), 0)
	})
}

// TestOfflineFreshClientByDigest: a client that has never reached the registry (a fresh
// mount) while it is blackholed gives lazy name directories for validly spelled names once
// it has found the registry down, so that digest references whose documents are in the
// DocStore resolve with no request; uncached tags still fail with ErrUnavailable.
func TestOfflineFreshClientByDigest(t *testing.T) {
	f := newBlackholeFixture(t)
	docs := newMemDocs()
	warm := newClient(t, Options{Docs: docs})
	ref := Ref{Registry: f.host, Repo: "org/team/app", Tag: "multi"}
	d, err := warm.Resolve(ctxT(t), ref)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := warm.Platforms(ctxT(t), ref, d); err != nil {
		t.Fatal(err)
	}
	if _, err := warm.Resolve(ctxT(t), Ref{Registry: f.host, Repo: "org/team/app", Tag: "single"}); err != nil {
		t.Fatal(err)
	}

	f.hole.Store(true)
	f.cnt.take()
	c := newClient(t, Options{Docs: docs, Timeout: offlineTimeout})
	start := time.Now()
	ch, err := c.Lookup(ctxT(t), Name{Registry: f.host}, "org")
	if err != nil || ch.Kind != KindName || !ch.Offline {
		t.Fatalf("first lookup, registry blackholed: %+v %v, want a lazy (Offline) name", ch, err)
	}
	if took := time.Since(start); took > offlineTimeout+time.Second {
		t.Errorf("first lookup took %v with a %v stall timeout", took, offlineTimeout)
	}
	asked := len(f.cnt.take())

	app, err := lookupPath(t, c, f.host, "org/team/app")
	if err != nil || app.Kind != KindName || app.Name.Path != "org/team/app" || !app.Offline {
		t.Fatalf("org/team/app while down: %+v %v", app, err)
	}
	byDigest, err := c.Lookup(ctxT(t), app.Name, d.Digest)
	if err != nil || byDigest.Kind != KindTag || byDigest.Desc.Digest != d.Digest {
		t.Fatalf("digest while down: %+v %v", byDigest, err)
	}
	ps, err := c.Platforms(ctxT(t), byDigest.Ref, byDigest.Desc)
	if err != nil || len(ps) != 1 {
		t.Fatalf("platforms while down: %v %v", ps, err)
	}
	// An uncached tag is never served as one; with no cached tag list to tell it from a
	// deeper name, it is a lazy name directory.
	if ch, err := c.Lookup(ctxT(t), app.Name, "single"); err != nil || ch.Kind != KindName {
		t.Errorf("uncached tag while down: %+v %v, want a lazy name", ch, err)
	}
	if _, err := c.Lookup(ctxT(t), Name{Registry: f.host}, "Not_Valid"); !errors.Is(err, ErrNotFound) {
		t.Errorf("invalid name while down: got %v, want ErrNotFound", err)
	}
	if _, err := c.List(ctxT(t), app.Name); !errors.Is(err, ErrUnavailable) {
		t.Errorf("listing an uncached name while down: got %v, want ErrUnavailable", err)
	}
	if got := len(f.cnt.take()); got != 0 || asked > 1 {
		t.Errorf("requests: %d to find the registry down (want 1), %d after (want 0)", asked, got)
	}
}

// TestKnownTagWhileDownIsNotAName: a name that the cached tag list knows as a tag is not
// turned into a lazy name directory while the registry is down: it is an uncached tag,
// ErrUnavailable.
func TestKnownTagWhileDownIsNotAName(t *testing.T) {
	f := newBlackholeFixture(t)
	c := newClient(t, Options{Timeout: offlineTimeout, TagTTL: time.Hour})
	app := Name{Registry: f.host, Path: "org/team/app"}
	if _, err := c.List(ctxT(t), app); err != nil {
		t.Fatal(err)
	}
	f.markDown(t, c)
	if ch, err := c.Lookup(ctxT(t), app, "single"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("known, unresolved tag while down: %+v %v, want ErrUnavailable", ch, err)
	}
	if ch, err := c.Lookup(ctxT(t), app, "ghost"); err != nil || ch.Kind != KindName {
		t.Fatalf("unknown name while down: %+v %v, want a lazy name", ch, err)
	}
}

// TestNegativeTagAnswersSwept: expired negative tag answers are dropped once the cache has
// grown, fresh ones and positive ones are kept.
func TestNegativeTagAnswersSwept(t *testing.T) {
	c := newClient(t, Options{TagTTL: time.Minute})
	now := time.Now()
	c.now = func() time.Time { return now }
	notFound := notFoundf("no such tag")
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range minSweep - 2 {
		c.tags[fmt.Sprintf("r:old%d", i)] = tagAnswer{err: notFound, at: now.Add(-time.Hour)}
	}
	c.tags["r:positive"] = tagAnswer{desc: Descriptor{Digest: "sha256:x"}, at: now.Add(-time.Hour)}
	c.tags["r:fresh"] = tagAnswer{err: notFound, at: now}
	c.sweepNegativeLocked()
	if got := len(c.tags); got != 2 {
		t.Fatalf("after a sweep: %d answers, want 2 (the positive and the fresh negative)", got)
	}
	if _, ok := c.tags["r:positive"]; !ok {
		t.Fatalf("the positive answer was dropped")
	}
}
