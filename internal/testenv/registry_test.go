package testenv

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// registries returns the registries to run a test against.
func registries() []struct {
	name  string
	start func(testing.TB) *Server
} {
	return []struct {
		name  string
		start func(testing.TB) *Server
	}{
		{"inprocess", InProcessRegistry},
		{"docker-registry", Registry},
	}
}

func TestCounterKnownSequence(t *testing.T) {
	for _, r := range registries() {
		t.Run(r.name, func(t *testing.T) {
			reg := r.start(t)
			img, err := random.Image(1000, 1)
			if err != nil {
				t.Fatal(err)
			}
			ref, err := name.ParseReference(reg.Host() + "/count/me:v1")
			if err != nil {
				t.Fatal(err)
			}
			if err := remote.Write(ref, img); err != nil {
				t.Fatalf("push: %v", err)
			}
			if got := reg.Counts(); got.N("PUT", KindManifest) != 1 || got.N("", KindUpload) == 0 {
				t.Errorf("push counts = %v, want 1 PUT manifest and some uploads", got)
			}
			reg.Reset()
			if got := reg.Counts().Total(); got != 0 {
				t.Fatalf("after Reset: %d requests", got)
			}

			layers, err := img.Layers()
			if err != nil {
				t.Fatal(err)
			}
			ld, err := layers[0].Digest()
			if err != nil {
				t.Fatal(err)
			}
			size, err := layers[0].Size()
			if err != nil {
				t.Fatal(err)
			}
			base := "http://" + reg.Host() + "/v2/count/me"
			seq := []struct {
				method, url, rng string
				status           int
			}{
				{"GET", "http://" + reg.Host() + "/v2/", "", 200},
				{"HEAD", base + "/manifests/v1", "", 200},
				{"GET", base + "/manifests/v1", "", 200},
				{"GET", base + "/blobs/" + ld.String(), "", 200},
				{"GET", base + "/blobs/" + ld.String(), "bytes=0-9", 206},
				{"GET", base + "/tags/list", "", 200},
				{"GET", base + "/manifests/nope", "", 404},
			}
			for _, s := range seq {
				got := do(t, s.method, s.url, s.rng)
				if got != s.status {
					t.Errorf("%s %s (Range %q) = %d, want %d", s.method, s.url, s.rng, got, s.status)
				}
			}
			// A request to the direct address is not counted.
			if got := do(t, "GET", "http://"+reg.DirectHost()+"/v2/", ""); got != 200 {
				t.Errorf("direct ping = %d, want 200", got)
			}

			c := reg.Counts()
			checks := []struct {
				method string
				kind   Kind
				want   int
			}{
				{"GET", KindPing, 1}, {"HEAD", KindManifest, 1}, {"GET", KindManifest, 2},
				{"GET", KindBlob, 2}, {"GET", KindTags, 1}, {"", "", len(seq)},
			}
			for _, ck := range checks {
				if got := c.N(ck.method, ck.kind); got != ck.want {
					t.Errorf("N(%q, %q) = %d, want %d; counts %v", ck.method, ck.kind, got, ck.want, c)
				}
			}
			if got, want := c.BlobBytes, size+10; got != want {
				t.Errorf("BlobBytes = %d, want %d", got, want)
			}
			last := c.Requests[len(c.Requests)-1]
			if last.Status != 404 || last.Ref != "nope" || last.Repo != "count/me" {
				t.Errorf("last request = %v, want 404 manifest count/me nope", last)
			}
			if r := c.Requests[4]; r.Range != "bytes=0-9" || r.Bytes != 10 || r.Status != 206 {
				t.Errorf("range request = %+v, want Range bytes=0-9, 10 bytes, 206", r)
			}
		})
	}
}

// do makes one request, reads the body and returns the status.
func do(t *testing.T, method, url, rng string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json")
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Fatalf("%s %s: body: %v", method, url, err)
	}
	return resp.StatusCode
}

func TestRegistryRoundTrip(t *testing.T) {
	for _, r := range registries() {
		t.Run(r.name, func(t *testing.T) {
			reg := r.start(t)
			img, err := random.Image(4096, 2)
			if err != nil {
				t.Fatal(err)
			}
			// Push directly, pull through the counted address.
			push, err := name.ParseReference(reg.DirectHost() + "/rt/img:1")
			if err != nil {
				t.Fatal(err)
			}
			if err := remote.Write(push, img); err != nil {
				t.Fatalf("push: %v", err)
			}
			if got := reg.Counts().Total(); got != 0 {
				t.Errorf("direct push counted %d requests", got)
			}
			pull, err := name.ParseReference(reg.Host() + "/rt/img:1")
			if err != nil {
				t.Fatal(err)
			}
			got, err := remote.Image(pull)
			if err != nil {
				t.Fatalf("pull: %v", err)
			}
			assertSameDigest(t, got, img)
			ls, err := got.Layers()
			if err != nil {
				t.Fatal(err)
			}
			var total int64
			for _, l := range ls {
				rc, err := l.Compressed()
				if err != nil {
					t.Fatal(err)
				}
				var b bytes.Buffer
				if _, err := io.Copy(&b, rc); err != nil {
					t.Fatal(err)
				}
				rc.Close()
				total += int64(b.Len())
			}
			if c := reg.Counts(); c.BlobBytes < total || c.N("GET", KindBlob) < len(ls) {
				t.Errorf("counts %v: want >= %d blob GETs and >= %d blob bytes", c, len(ls), total)
			}
		})
	}
}

func assertSameDigest(t *testing.T, got, want v1.Image) {
	t.Helper()
	g, err := got.Digest()
	if err != nil {
		t.Fatal(err)
	}
	w, err := want.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if g != w {
		t.Errorf("digest = %s, want %s", g, w)
	}
}
