package resolver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// counter is an http.Handler middleware that records every request as "METHOD path".
type counter struct {
	next http.Handler
	mu   sync.Mutex
	reqs []string // guarded by mu
}

func (c *counter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	c.reqs = append(c.reqs, r.Method+" "+r.URL.RequestURI())
	c.mu.Unlock()
	c.next.ServeHTTP(w, r)
}

// take returns the requests seen since the last take.
func (c *counter) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.reqs
	c.reqs = nil
	return out
}

// count returns the number of requests seen so far whose line contains s.
func (c *counter) count(s string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, r := range c.reqs {
		if strings.Contains(r, s) {
			n++
		}
	}
	return n
}

// newRegistry starts go-containerregistry's in-process registry behind wrap (nil: none)
// and a counting middleware; it returns the server, its counter and its host:port.
func newRegistry(t *testing.T, wrap func(http.Handler) http.Handler) (*httptest.Server, *counter, string) {
	t.Helper()
	var h http.Handler = registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	if wrap != nil {
		h = wrap(h)
	}
	cnt := &counter{next: h}
	srv := httptest.NewServer(cnt)
	t.Cleanup(srv.Close)
	return srv, cnt, strings.TrimPrefix(srv.URL, "http://")
}

// newClient returns a Client with test-friendly knobs.
func newClient(t *testing.T, o Options) *Client {
	t.Helper()
	if o.Keychain == nil {
		o.Keychain = authn.NewMultiKeychain() // anonymous; never the host's Docker config
	}
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	c.backoff = 10 * time.Millisecond
	return c
}

// platformImage returns a random one-layer image whose config names p.
func platformImage(t *testing.T, p v1.Platform) v1.Image {
	t.Helper()
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant, cf.OSVersion = p.OS, p.Architecture, p.Variant, p.OSVersion
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// push writes img to host/repo:tag (tag may be "" to push by digest) and returns its
// descriptor.
func push(t *testing.T, host, repo, tag string, img v1.Image) v1.Descriptor {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	s := host + "/" + repo + "@" + d.String()
	if tag != "" {
		s = host + "/" + repo + ":" + tag
	}
	ref, err := name.ParseReference(s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatalf("push %s: %v", s, err)
	}
	raw, _ := img.RawManifest()
	mt, _ := img.MediaType()
	return v1.Descriptor{MediaType: mt, Digest: d, Size: int64(len(raw))}
}

// putManifest PUTs raw bytes as a manifest of host/repo:ref with a content type.
func putManifest(t *testing.T, host, repo, ref, mediaType string, body []byte) string {
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
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("PUT %s:%s: %s %s", repo, ref, resp.Status, b)
	}
	return sha256Digest(body)
}

// indexEntry is one entry of a hand-built index.
type indexEntry struct {
	desc         v1.Descriptor
	platform     *Platform
	annotations  map[string]string
	artifactType string
}

// putIndex builds an index (OCI or Docker list) from entries and tags it.
func putIndex(t *testing.T, host, repo, tag, mediaType string, entries []indexEntry) (Descriptor, []byte) {
	t.Helper()
	type ent struct {
		MediaType    string            `json:"mediaType"`
		Digest       string            `json:"digest"`
		Size         int64             `json:"size"`
		ArtifactType string            `json:"artifactType,omitempty"`
		Platform     *Platform         `json:"platform,omitempty"`
		Annotations  map[string]string `json:"annotations,omitempty"`
	}
	doc := struct {
		SchemaVersion int    `json:"schemaVersion"`
		MediaType     string `json:"mediaType"`
		Manifests     []ent  `json:"manifests"`
	}{SchemaVersion: 2, MediaType: mediaType}
	for _, e := range entries {
		doc.Manifests = append(doc.Manifests, ent{
			MediaType: string(e.desc.MediaType), Digest: e.desc.Digest.String(), Size: e.desc.Size,
			ArtifactType: e.artifactType, Platform: e.platform, Annotations: e.annotations,
		})
	}
	b, err := json.MarshalIndent(doc, "", "   ")
	if err != nil {
		t.Fatal(err)
	}
	dg := putManifest(t, host, repo, tag, mediaType, b)
	return Descriptor{MediaType: mediaType, Digest: dg, Size: int64(len(b))}, b
}

// plat is shorthand for a platform.
func plat(os, arch, variant string) *Platform {
	return &Platform{OS: os, Architecture: arch, Variant: variant}
}

// ctxT returns a context that ends with the test.
func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// names returns the platform entries' names.
func names(es []PlatformEntry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.Name()
	}
	return out
}

func mustEqual[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Fatalf("%s: got %v, want %v", what, got, want)
	}
}

func errorsIs(err, target error) bool { return errors.Is(err, target) }
