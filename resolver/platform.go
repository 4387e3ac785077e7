package resolver

import (
	"context"
	"encoding/json"
	"strings"
)

// PlatformEntry is one platform directory of a tag: its path (os, arch[, variant]; the
// last element carries "@<12 hex>" for a later duplicate), the manifest and its platform.
type PlatformEntry struct {
	Path     []string
	Manifest Descriptor
	Platform Platform
}

// Name returns the path joined with '/'.
func (e PlatformEntry) Name() string { return strings.Join(e.Path, "/") }

// Annotations and types that mark index entries that are not platforms.
const (
	annotationRefType     = "vnd.docker.reference.type"
	refTypeAttestation    = "attestation-manifest"
	annotationSOCIDigest  = "com.amazon.soci.index-digest"
	duplicateDigestDigits = 12
)

// Platforms lists the platform directories of a resolved tag or digest d: for an index,
// its entries minus attestation and SOCI index manifests (entries without a platform are
// skipped too); for an image manifest, one entry from its config; for anything else (a
// signature, an SBOM, a Helm chart) none. The first of entries with the same path keeps the
// plain name; later ones are named "<last>@<first 12 hex of their digest>". Nested indexes
// are shown as they are (one level). The answer is immutable and cached by digest.
func (c *Client) Platforms(ctx context.Context, r Ref, d Descriptor) ([]PlatformEntry, error) {
	c.mu.Lock()
	cached, ok := c.platforms[d.Digest]
	c.mu.Unlock()
	if ok {
		return cached, nil
	}
	what := r.repoRef().String() + "@" + d.Digest
	b, err := c.Document(ctx, r, d.Digest)
	if err != nil {
		return nil, err
	}
	k, err := kindOf(b, what)
	if err != nil {
		return nil, err
	}
	var out []PlatformEntry
	if k == docIndex {
		x, err := parseIndex(b, what)
		if err != nil {
			return nil, err
		}
		out = indexPlatforms(x.Manifests)
	} else {
		out, err = c.manifestPlatform(ctx, r, d, b, what)
		if err != nil {
			return nil, err
		}
	}
	c.mu.Lock()
	c.platforms[d.Digest] = out
	c.mu.Unlock()
	return out, nil
}

// indexPlatforms names the platform entries of an index.
func indexPlatforms(ms []Descriptor) []PlatformEntry {
	var out []PlatformEntry
	used := map[string]bool{}
	for _, m := range ms {
		if hidden(m) {
			continue
		}
		p := *m.Platform
		path, ok := platformPath(p)
		if !ok {
			continue
		}
		key := strings.Join(path, "/")
		if used[key] {
			path[len(path)-1] += "@" + strings.TrimPrefix(m.Digest, "sha256:")[:duplicateDigestDigits]
			key = strings.Join(path, "/")
			if used[key] { // the same manifest listed twice
				continue
			}
		}
		used[key] = true
		out = append(out, PlatformEntry{Path: path, Manifest: m, Platform: p})
	}
	return out
}

// hidden reports index entries that are not platforms: no platform, attestations, SOCI.
func hidden(m Descriptor) bool {
	if m.Platform == nil {
		return true
	}
	if m.Annotations[annotationRefType] == refTypeAttestation {
		return true
	}
	if m.Platform.OS == "unknown" && m.Platform.Architecture == "unknown" {
		return true
	}
	if m.ArtifactType == MediaTypeSOCIIndex || m.MediaType == MediaTypeSOCIIndex {
		return true
	}
	_, soci := m.Annotations[annotationSOCIDigest]
	return soci
}

// platformPath returns os/arch[/variant] if every element is a usable file name.
func platformPath(p Platform) ([]string, bool) {
	path := []string{p.OS, p.Architecture}
	if p.Variant != "" {
		path = append(path, p.Variant)
	}
	for _, e := range path {
		if e == "" || e == "." || e == ".." || strings.ContainsAny(e, "/\x00") {
			return nil, false
		}
	}
	return path, true
}

// imageConfig is the part of an image config that names its platform.
type imageConfig struct {
	OS           string `json:"os"`
	Architecture string `json:"architecture"`
	Variant      string `json:"variant"`
	OSVersion    string `json:"os.version"`
}

// manifestPlatform returns the single platform of an image manifest, from its config.
func (c *Client) manifestPlatform(ctx context.Context, r Ref, d Descriptor, b []byte, what string) ([]PlatformEntry, error) {
	m, err := parseManifest(b, what)
	if err != nil {
		return nil, err
	}
	if !m.IsImage() {
		c.log.Debug("not an image: no platforms", "ref", what, "config", m.Config.MediaType, "artifactType", m.ArtifactType)
		return []PlatformEntry{}, nil
	}
	cb, err := c.Blob(ctx, r, m.Config.Digest)
	if err != nil {
		return nil, err
	}
	var cfg imageConfig
	if err := json.Unmarshal(cb, &cfg); err != nil {
		return nil, invalidf("%s: config %s: %v", what, m.Config.Digest, err)
	}
	p := Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant, OSVersion: cfg.OSVersion}
	path, ok := platformPath(p)
	if !ok {
		c.log.Warn("image config names no usable platform", "ref", what, "os", cfg.OS, "arch", cfg.Architecture)
		return []PlatformEntry{}, nil
	}
	md := d
	if md.MediaType == "" {
		md.MediaType = docMediaType(b, "")
	}
	md.Platform = &p
	return []PlatformEntry{{Path: path, Manifest: md, Platform: p}}, nil
}

// MatchPlatform finds the entry for a looked-up path. The path as listed (duplicates'
// "@hex" names included) matches exactly; else it is normalised as containerd does
// (aarch64 → arm64, x86_64/x86-64 → amd64, armhf → arm/v7, armel → arm/v6, i386 → 386;
// the default variants arm64/v8 and arm/v7 match an entry without a variant) and the first
// matching entry in index order wins.
func MatchPlatform(entries []PlatformEntry, path []string) (PlatformEntry, bool) {
	want := strings.Join(path, "/")
	for _, e := range entries {
		if e.Name() == want {
			return e, true
		}
	}
	if len(path) < 2 || len(path) > 3 {
		return PlatformEntry{}, false
	}
	variant := ""
	if len(path) == 3 {
		variant = path[2]
	}
	wos, warch, wvar := normalize(path[0], path[1], variant)
	for _, e := range entries {
		if strings.Contains(e.Path[len(e.Path)-1], "@") {
			continue
		}
		os, arch, v := normalize(e.Platform.OS, e.Platform.Architecture, e.Platform.Variant)
		if os == wos && arch == warch && v == wvar {
			return e, true
		}
	}
	return PlatformEntry{}, false
}

// normalize returns containerd's normal form of a platform: lower case, canonical
// architecture names, default variants made explicit for arm and dropped for arm64.
func normalize(os, arch, variant string) (string, string, string) {
	os, arch, variant = strings.ToLower(os), strings.ToLower(arch), strings.ToLower(variant)
	switch arch {
	case "i386":
		arch, variant = "386", ""
	case "x86_64", "x86-64", "amd64":
		arch = "amd64"
		if variant == "v1" {
			variant = ""
		}
	case "aarch64", "arm64":
		arch = "arm64"
		switch variant {
		case "8", "v8", "v8.0":
			variant = ""
		}
	case "armhf":
		arch, variant = "arm", "v7"
	case "armel":
		arch, variant = "arm", "v6"
	case "arm":
		switch variant {
		case "", "7":
			variant = "v7"
		case "5", "6", "8":
			variant = "v" + variant
		}
	}
	return os, arch, variant
}
