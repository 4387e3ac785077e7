package testenv

import (
	"testing"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		path      string
		kind      Kind
		repo, ref string
	}{
		{"/v2/", KindPing, "", ""},
		{"/v2", KindPing, "", ""},
		{"/v2/_catalog", KindCatalog, "", ""},
		{"/v2/org/team/app/tags/list", KindTags, "org/team/app", ""},
		{"/v2/library/alpine/manifests/3.20", KindManifest, "library/alpine", "3.20"},
		{"/v2/a/manifests/sha256:abc", KindManifest, "a", "sha256:abc"},
		{"/v2/a/blobs/sha256:abc", KindBlob, "a", "sha256:abc"},
		{"/v2/a/b/blobs/uploads/", KindUpload, "a/b", ""},
		{"/v2/a/blobs/uploads/1234-uuid", KindUpload, "a", "1234-uuid"},
		{"/v2/a/referrers/sha256:abc", KindReferrers, "a", "sha256:abc"},
		{"/v2/x/manifests/y/blobs/sha256:abc", KindBlob, "x/manifests/y", "sha256:abc"},
		{"/v2/x/blobs/y/manifests/latest", KindManifest, "x/blobs/y", "latest"},
		{"/healthz", KindOther, "", ""},
		{"/v2/nothing", KindOther, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			kind, repo, ref := Classify(tt.path)
			if kind != tt.kind || repo != tt.repo || ref != tt.ref {
				t.Errorf("Classify(%q) = %q, %q, %q; want %q, %q, %q", tt.path, kind, repo, ref, tt.kind, tt.repo, tt.ref)
			}
		})
	}
}

func TestCountsN(t *testing.T) {
	c := Counts{Requests: []Request{
		{Method: "GET", Kind: KindBlob}, {Method: "HEAD", Kind: KindManifest},
		{Method: "GET", Kind: KindManifest}, {Method: "GET", Kind: KindBlob},
	}, BlobBytes: 7}
	tests := []struct {
		method string
		kind   Kind
		want   int
	}{
		{"GET", KindBlob, 2}, {"HEAD", KindManifest, 1}, {"", KindManifest, 2},
		{"GET", "", 3}, {"", "", 4}, {"PUT", KindManifest, 0},
	}
	for _, tt := range tests {
		if got := c.N(tt.method, tt.kind); got != tt.want {
			t.Errorf("N(%q, %q) = %d, want %d", tt.method, tt.kind, got, tt.want)
		}
	}
	if got, want := c.String(), "GET blob=2 GET manifest=1 HEAD manifest=1 (blob bytes 7)"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}
