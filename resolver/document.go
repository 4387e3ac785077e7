package resolver

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"strings"
)

// Media types resolver knows.
const (
	MediaTypeOCIIndex       = "application/vnd.oci.image.index.v1+json"
	MediaTypeOCIManifest    = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeOCIConfig      = "application/vnd.oci.image.config.v1+json"
	MediaTypeDockerConfig   = "application/vnd.docker.container.image.v1+json"
	MediaTypeSOCIIndex      = "application/vnd.amazon.soci.index.v1+json"
)

// acceptManifests is the Accept header of every manifest request.
const acceptManifests = MediaTypeOCIIndex + ", " + MediaTypeOCIManifest + ", " +
	MediaTypeDockerList + ", " + MediaTypeDockerManifest

// Size limits of what is read whole into memory.
const (
	maxDocument = 4 << 20  // manifests and indexes (the distribution spec's limit)
	maxBlob     = 16 << 20 // configs and other small blobs
	maxListPage = 16 << 20 // one page of tags/list or _catalog
)

// Platform is an OCI platform.
type Platform struct {
	OS           string `json:"os"`
	Architecture string `json:"architecture"`
	Variant      string `json:"variant,omitempty"`
	OSVersion    string `json:"os.version,omitempty"`
}

// Descriptor is an OCI content descriptor.
type Descriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       string            `json:"digest"`
	Size         int64             `json:"size"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	URLs         []string          `json:"urls,omitempty"`
	Platform     *Platform         `json:"platform,omitempty"`
}

// Manifest is a parsed image manifest.
type Manifest struct {
	MediaType    string            `json:"mediaType"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Config       Descriptor        `json:"config"`
	Layers       []Descriptor      `json:"layers"`
	Subject      *Descriptor       `json:"subject,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
}

// IsImage reports whether the manifest is a container image (its config is an image
// config and it declares no artifact type) rather than an artifact such as a signature,
// an SBOM or a Helm chart.
func (m *Manifest) IsImage() bool {
	if m.ArtifactType != "" {
		return false
	}
	switch m.Config.MediaType {
	case MediaTypeOCIConfig, MediaTypeDockerConfig:
		return true
	}
	return false
}

// index is a parsed image index or manifest list.
type index struct {
	MediaType string       `json:"mediaType"`
	Manifests []Descriptor `json:"manifests"`
}

// docKind is what a document is.
type docKind uint8

const (
	docIndex docKind = iota + 1
	docManifest
)

// kindOf tells an index from a manifest by its fields; a document with both is refused.
func kindOf(b []byte, what string) (docKind, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b, &fields); err != nil {
		return 0, invalidf("%s: not a JSON document: %v", what, err)
	}
	_, hasManifests := fields["manifests"]
	_, hasLayers := fields["layers"]
	_, hasConfig := fields["config"]
	switch {
	case hasManifests && (hasLayers || hasConfig):
		return 0, invalidf("%s is both an index and a manifest; refused", what)
	case hasManifests:
		return docIndex, nil
	case hasLayers || hasConfig:
		return docManifest, nil
	}
	var mt struct {
		MediaType     string `json:"mediaType"`
		SchemaVersion int    `json:"schemaVersion"`
	}
	_ = json.Unmarshal(b, &mt)
	switch mt.MediaType {
	case MediaTypeOCIIndex, MediaTypeDockerList:
		return docIndex, nil
	}
	return 0, invalidf("%s: unsupported document (mediaType %q, schemaVersion %d)", what, mt.MediaType, mt.SchemaVersion)
}

// parseIndex parses an index and checks its entries' digests.
func parseIndex(b []byte, what string) (*index, error) {
	var x index
	if err := json.Unmarshal(b, &x); err != nil {
		return nil, invalidf("%s: index: %v", what, err)
	}
	for i, d := range x.Manifests {
		if !validDigest(d.Digest) {
			return nil, invalidf("%s: index entry %d: bad digest %q", what, i, d.Digest)
		}
	}
	return &x, nil
}

// parseManifest parses a manifest and checks its digests.
func parseManifest(b []byte, what string) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, invalidf("%s: manifest: %v", what, err)
	}
	if !validDigest(m.Config.Digest) {
		return nil, invalidf("%s: config has bad digest %q", what, m.Config.Digest)
	}
	for i, l := range m.Layers {
		if !validDigest(l.Digest) || l.Size < 0 {
			return nil, invalidf("%s: layer %d: bad descriptor (digest %q, size %d)", what, i, l.Digest, l.Size)
		}
	}
	return &m, nil
}

// sha256Digest returns "sha256:<hex>" of b.
func sha256Digest(b []byte) string {
	h := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(h[:])
}

// docMediaType guesses a document's media type from its own mediaType field, else its
// fields, else the Content-Type the registry sent.
func docMediaType(b []byte, contentType string) string {
	var mt struct {
		MediaType string `json:"mediaType"`
	}
	if json.Unmarshal(b, &mt) == nil && mt.MediaType != "" {
		return mt.MediaType
	}
	if k, err := kindOf(b, ""); err == nil {
		if k == docIndex {
			return MediaTypeOCIIndex
		}
		return MediaTypeOCIManifest
	}
	return contentType
}

// contentType returns a response's media type without parameters.
func contentType(h http.Header) string {
	mt, _, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil {
		return ""
	}
	return mt
}

// Document returns the raw bytes of a manifest or index by digest, as the registry served
// them, verified against the digest. Fetched once, then served from the DocStore.
func (c *Client) Document(ctx context.Context, repo Ref, digest string) ([]byte, error) {
	return c.fetchVerified(ctx, repo, digest, "manifests", maxDocument)
}

// Blob returns a small blob (a config) by digest, verified, kept in the DocStore.
func (c *Client) Blob(ctx context.Context, repo Ref, digest string) ([]byte, error) {
	return c.fetchVerified(ctx, repo, digest, "blobs", maxBlob)
}

// Manifest returns the parsed image manifest of digest and its raw bytes. An index is
// refused with ErrInvalid.
func (c *Client) Manifest(ctx context.Context, r Ref, digest string) (*Manifest, []byte, error) {
	what := r.repoRef().String() + "@" + digest
	b, err := c.Document(ctx, r, digest)
	if err != nil {
		return nil, nil, err
	}
	k, err := kindOf(b, what)
	if err != nil {
		return nil, nil, err
	}
	if k != docManifest {
		return nil, nil, invalidf("%s is an index, not an image manifest", what)
	}
	m, err := parseManifest(b, what)
	if err != nil {
		return nil, nil, err
	}
	return m, b, nil
}

// fetchVerified returns a document or small blob by digest: from the DocStore, else by one
// GET whose bytes must hash to digest.
func (c *Client) fetchVerified(ctx context.Context, r Ref, digest, kind string, limit int64) ([]byte, error) {
	what := r.repoRef().String() + "@" + digest
	if !validDigest(digest) {
		return nil, invalidf("%s: not a sha256 digest", what)
	}
	if b, err := c.docs.Get(digest); err == nil {
		if sha256Digest(b) == digest {
			return b, nil
		}
		c.log.Warn("document store returned bytes that do not match their digest", "digest", digest)
	}
	v, err := c.flight.do(ctx, kind+" "+r.Registry+"/"+r.Repo+"@"+digest, func(ctx context.Context) (any, error) {
		accept := acceptManifests
		if kind == "blobs" {
			accept = ""
		}
		b, _, err := c.get(ctx, r, "/"+kind+"/"+digest, accept, limit, what, digest)
		if err != nil {
			return nil, err
		}
		c.putDoc(digest, b)
		return b, nil
	})
	if err != nil {
		return nil, err
	}
	return v.([]byte), nil
}

// putDoc stores a verified document; a failure only costs a refetch later.
func (c *Client) putDoc(digest string, b []byte) {
	if err := c.docs.Put(digest, bytes.Clone(b)); err != nil {
		c.log.Warn("storing document failed", "digest", digest, "err", err)
	}
}

// get GETs /v2/<repo><suffix> whole (at most limit bytes) and returns it with its
// Content-Type, from a mirror or the registry (see pull). With digest set, bytes that do
// not hash to it are an ErrInvalid error, and a mirror that sends such bytes is passed over
// for the next host. Manifest GETs wait for the registry's rate limit first.
func (c *Client) get(ctx context.Context, r Ref, suffix, accept string, limit int64, what, digest string) ([]byte, string, error) {
	rq := request{method: http.MethodGet, accept: accept, what: what}
	if strings.HasPrefix(suffix, "/manifests/") {
		lim := c.pullLimit(r.Registry)
		if err := lim.wait(ctx, c); err != nil {
			return nil, "", fmt.Errorf("%s: waiting for the manifest rate limit: %w", what, err)
		}
		rq.observe = func(resp *http.Response) { lim.observe(c, resp.Header) }
	}
	var b []byte
	var ct string
	err := c.pull(ctx, r, rq, "/v2/"+r.Repo+suffix, func(resp *http.Response) error {
		defer resp.Body.Close()
		body, err := readAll(ctx, resp.Body, limit, what)
		if err != nil {
			return err
		}
		if digest != "" {
			if got := sha256Digest(body); got != digest {
				return invalidf("%s: registry sent bytes with digest %s", what, got)
			}
		}
		b, ct = body, contentType(resp.Header)
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	return b, ct, nil
}

// pullScope is the token scope for pulling repo.
func pullScope(repo string) string { return "repository:" + repo + ":pull" }
