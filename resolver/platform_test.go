package resolver

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func TestPlatformsOfIndexes(t *testing.T) {
	_, _, host := newRegistry(t, nil)
	ctx := ctxT(t)
	const repo = "p"
	a := push(t, host, repo, "", platformImage(t, v1.Platform{OS: "linux", Architecture: "amd64"}))
	b := push(t, host, repo, "", platformImage(t, v1.Platform{OS: "linux", Architecture: "amd64"}))
	arm := push(t, host, repo, "", platformImage(t, v1.Platform{OS: "linux", Architecture: "arm", Variant: "v6"}))
	win := push(t, host, repo, "", platformImage(t, v1.Platform{OS: "windows", Architecture: "amd64"}))
	win2 := push(t, host, repo, "", platformImage(t, v1.Platform{OS: "windows", Architecture: "amd64"}))
	hex := func(d v1.Descriptor) string { return d.Digest.Hex[:12] }

	tests := []struct {
		name, mediaType string
		entries         []indexEntry
		want            []string
	}{
		{"docker list with variants and duplicates", MediaTypeDockerList, []indexEntry{
			{desc: a, platform: plat("linux", "amd64", "")},
			{desc: arm, platform: plat("linux", "arm", "v6")},
			{desc: b, platform: plat("linux", "amd64", "")},
			{desc: win, platform: &Platform{OS: "windows", Architecture: "amd64", OSVersion: "10.0.17763.1"}},
			{desc: win2, platform: &Platform{OS: "windows", Architecture: "amd64", OSVersion: "10.0.20348.1"}},
		}, []string{"linux/amd64", "linux/arm/v6", "linux/amd64@" + hex(b), "windows/amd64", "windows/amd64@" + hex(win2)}},
		{"attestations and SOCI hidden", MediaTypeOCIIndex, []indexEntry{
			{desc: a, platform: plat("linux", "amd64", "")},
			{desc: b, platform: plat("unknown", "unknown", "")},
			{desc: b, platform: plat("linux", "amd64", ""), annotations: map[string]string{"vnd.docker.reference.type": "attestation-manifest"}},
			{desc: arm, platform: plat("linux", "arm", "v6"), artifactType: MediaTypeSOCIIndex},
			{desc: win, platform: plat("linux", "arm64", ""), annotations: map[string]string{"com.amazon.soci.index-digest": "sha256:00"}},
			{desc: win2}, // no platform
		}, []string{"linux/amd64"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClient(t, Options{})
			tag := strings.ReplaceAll(tt.name[:6], " ", "-")
			d, _ := putIndex(t, host, repo, tag, tt.mediaType, tt.entries)
			r := Ref{Registry: host, Repo: repo, Tag: tag}
			got, err := c.Resolve(ctx, r)
			if err != nil {
				t.Fatal(err)
			}
			mustEqual(t, "digest", got.Digest, d.Digest)
			mustEqual(t, "media type", got.MediaType, tt.mediaType)
			ps, err := c.Platforms(ctx, r, got)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(names(ps), tt.want) {
				t.Fatalf("got %v, want %v", names(ps), tt.want)
			}
		})
	}
}

func TestPlatformsRefused(t *testing.T) {
	_, _, host := newRegistry(t, nil)
	ctx := ctxT(t)
	img := platformImage(t, v1.Platform{OS: "linux", Architecture: "amd64"})
	push(t, host, "x", "img", img)
	m, _ := img.Manifest()
	cfg := m.Config

	both, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": MediaTypeOCIManifest,
		"config": cfg, "layers": m.Layers, "manifests": []any{},
	})
	putManifest(t, host, "x", "both", MediaTypeOCIManifest, both)
	helm, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": MediaTypeOCIManifest,
		"config": map[string]any{"mediaType": "application/vnd.cncf.helm.config.v1+json", "digest": cfg.Digest.String(), "size": cfg.Size},
		"layers": m.Layers,
	})
	putManifest(t, host, "x", "helm", MediaTypeOCIManifest, helm)
	sig, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": MediaTypeOCIManifest, "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json",
		"config": map[string]any{"mediaType": "application/vnd.oci.empty.v1+json", "digest": cfg.Digest.String(), "size": cfg.Size},
		"layers": m.Layers,
	})
	putManifest(t, host, "x", "sig", MediaTypeOCIManifest, sig)

	c := newClient(t, Options{})
	for _, tag := range []string{"helm", "sig"} {
		r := Ref{Registry: host, Repo: "x", Tag: tag}
		d, err := c.Resolve(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		ps, err := c.Platforms(ctx, r, d)
		if err != nil || len(ps) != 0 {
			t.Fatalf("%s: got %v %v, want no platforms", tag, names(ps), err)
		}
	}
	r := Ref{Registry: host, Repo: "x", Tag: "both"}
	d, err := c.Resolve(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Platforms(ctx, r, d); !errors.Is(err, ErrInvalid) {
		t.Fatalf("index+manifest: got %v, want ErrInvalid", err)
	}
	if _, _, err := c.Manifest(ctx, r, d.Digest); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Manifest of index+manifest: got %v, want ErrInvalid", err)
	}
}

func TestMatchPlatform(t *testing.T) {
	e := func(os, arch, variant, name string) PlatformEntry {
		p := Platform{OS: os, Architecture: arch, Variant: variant}
		path := strings.Split(name, "/")
		return PlatformEntry{Path: path, Platform: p, Manifest: Descriptor{Digest: name}}
	}
	entries := []PlatformEntry{
		e("linux", "amd64", "", "linux/amd64"),
		e("linux", "arm64", "", "linux/arm64"),
		e("linux", "arm", "", "linux/arm"),
		e("linux", "arm", "v6", "linux/arm/v6"),
		e("linux", "amd64", "", "linux/amd64@0123456789ab"),
		e("linux", "386", "", "linux/386"),
	}
	tests := []struct {
		path string
		want string // "" = no match
	}{
		{"linux/amd64", "linux/amd64"},
		{"linux/amd64@0123456789ab", "linux/amd64@0123456789ab"},
		{"linux/x86_64", "linux/amd64"},
		{"linux/x86-64", "linux/amd64"},
		{"linux/aarch64", "linux/arm64"},
		{"linux/arm64/v8", "linux/arm64"},
		{"linux/aarch64/v8", "linux/arm64"},
		{"linux/arm/v7", "linux/arm"},
		{"linux/armhf", "linux/arm"},
		{"linux/armel", "linux/arm/v6"},
		{"linux/i386", "linux/386"},
		{"Linux/AMD64", "linux/amd64"},
		{"linux/arm64/v9", ""},
		{"linux/arm/v5", ""},
		{"windows/amd64", ""},
		{"linux", ""},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			got, ok := MatchPlatform(entries, strings.Split(tt.path, "/"))
			if tt.want == "" {
				if ok {
					t.Fatalf("got %s, want no match", got.Name())
				}
				return
			}
			if !ok || got.Name() != tt.want {
				t.Fatalf("got %s (%v), want %s", got.Name(), ok, tt.want)
			}
		})
	}
}
