package resolver

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// hubLike makes a registry behave like Docker Hub: no catalog, and 401 UNAUTHORIZED for
// any repository that does not exist.
func hubLike(known ...string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/v2/_catalog" {
				http.NotFound(w, r)
				return
			}
			if r.Method != http.MethodPut && r.Method != http.MethodPost && r.Method != http.MethodPatch && r.URL.Path != "/v2/" {
				ok := false
				for _, k := range known {
					if strings.HasPrefix(r.URL.Path, "/v2/"+k+"/") {
						ok = true
					}
				}
				if !ok {
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(http.StatusUnauthorized)
					fmt.Fprint(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
					return
				}
			}
			next.ServeHTTP(w, r)
		})
	}
}

func TestDockerHubNames(t *testing.T) {
	_, cnt, host := newRegistry(t, hubLike("library/busybox", "arm64v8/busybox"))
	ctx := ctxT(t)
	img := platformImage(t, v1.Platform{OS: "linux", Architecture: "amd64"})
	push(t, host, "library/busybox", "latest", img)
	push(t, host, "arm64v8/busybox", "latest", img)
	cnt.take()
	c := newClient(t, Options{DefaultRegistry: "index.docker.io"})
	c.hubHost = host
	root := c.Root()
	mustEqual(t, "root registry", root.Registry, "docker.io")

	bb, err := c.Lookup(ctx, root, "busybox")
	if err != nil || bb.Kind != KindName {
		t.Fatalf("busybox: %+v %v", bb, err)
	}
	tag, err := c.Lookup(ctx, bb.Name, "latest")
	if err != nil || tag.Kind != KindTag {
		t.Fatalf("busybox/latest: %+v %v", tag, err)
	}
	mustEqual(t, "repo", tag.Ref.Repo, "library/busybox")
	mustEqual(t, "ref", tag.Ref.String(), "docker.io/library/busybox:latest")

	ns, err := c.Lookup(ctx, root, "arm64v8")
	if err != nil || ns.Kind != KindName {
		t.Fatalf("arm64v8: %+v %v", ns, err)
	}
	repo, err := c.Lookup(ctx, ns.Name, "busybox")
	if err != nil || repo.Kind != KindName || repo.Name.Path != "arm64v8/busybox" {
		t.Fatalf("arm64v8/busybox: %+v %v", repo, err)
	}
	tag2, err := c.Lookup(ctx, repo.Name, "latest")
	if err != nil || tag2.Kind != KindTag || tag2.Ref.Repo != "arm64v8/busybox" {
		t.Fatalf("arm64v8/busybox/latest: %+v %v", tag2, err)
	}
	lib, err := c.Lookup(ctx, root, "library")
	if err != nil {
		t.Fatal(err)
	}
	libbb, err := c.Lookup(ctx, lib.Name, "busybox")
	if err != nil || libbb.Kind != KindName {
		t.Fatalf("library/busybox: %+v %v", libbb, err)
	}
	if ch, err := c.Lookup(ctx, libbb.Name, "latest"); err != nil || ch.Ref.Repo != "library/busybox" {
		t.Fatalf("library/busybox/latest: %+v %v", ch, err)
	}

	for _, tt := range []struct {
		at    Name
		child string
	}{
		{ns.Name, "nope"},     // no such repository (Hub: 401)
		{repo.Name, "nope"},   // no such tag
		{repo.Name, "deeper"}, // nothing below two levels
		{bb.Name, "nope"},     // neither tag of library/busybox nor busybox/nope
		{root, "Upper"},       // invalid name
	} {
		if _, err := c.Lookup(ctx, tt.at, tt.child); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s/%s: got %v, want ErrNotFound", tt.at, tt.child, err)
		}
	}

	l, err := c.List(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"arm64v8", "busybox", "library"}; !slices.Equal(l.Children, want) || len(l.Tags) != 0 {
		t.Fatalf("root listing: %+v, want children %v", l, want)
	}
	l, err = c.List(ctx, bb.Name)
	if err != nil || !slices.Equal(l.Tags, []string{"latest"}) {
		t.Fatalf("busybox listing: %+v %v", l, err)
	}
	l, err = c.List(ctx, ns.Name)
	if err != nil || !slices.Equal(l.Children, []string{"busybox"}) || len(l.Tags) != 0 {
		t.Fatalf("arm64v8 listing: %+v %v", l, err)
	}
	mustEqual(t, "catalog requests", cnt.count("_catalog"), 0)
}

func TestLazyNamespacesWithoutCatalog(t *testing.T) {
	_, _, host := newRegistry(t, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/v2/_catalog" {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			next.ServeHTTP(w, r)
		})
	})
	ctx := ctxT(t)
	push(t, host, "a/b/c", "t", platformImage(t, v1.Platform{OS: "linux", Architecture: "amd64"}))
	c := newClient(t, Options{})
	n := Name{Registry: host}
	for _, part := range []string{"a", "b", "c"} {
		ch, err := c.Lookup(ctx, n, part)
		if err != nil || ch.Kind != KindName {
			t.Fatalf("%s: %+v %v", part, ch, err)
		}
		n = ch.Name
	}
	if ch, err := c.Lookup(ctx, n, "t"); err != nil || ch.Kind != KindTag {
		t.Fatalf("tag: %+v %v", ch, err)
	}
	// A name nobody knows is a lazy directory that lists empty.
	ghost, err := c.Lookup(ctx, Name{Registry: host}, "ghost")
	if err != nil || ghost.Kind != KindName {
		t.Fatalf("ghost: %+v %v", ghost, err)
	}
	l, err := c.List(ctx, ghost.Name)
	if err != nil || len(l.Tags)+len(l.Children) != 0 {
		t.Fatalf("ghost listing: %+v %v", l, err)
	}
	// Seen repositories are listed.
	l, err = c.List(ctx, Name{Registry: host, Path: "a"})
	if err != nil || !slices.Equal(l.Children, []string{"b"}) {
		t.Fatalf("a listing: %+v %v", l, err)
	}
}
