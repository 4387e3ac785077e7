package resolver

import (
	"errors"
	"strings"
	"testing"
)

func TestIsHostAndCanonical(t *testing.T) {
	tests := []struct {
		in        string
		host      bool
		canonical string
	}{
		{"ghcr.io", true, "ghcr.io"},
		{"localhost", true, "localhost"},
		{"localhost:5000", true, "localhost:5000"},
		{"docker.io", true, "docker.io"},
		{"index.docker.io", true, "docker.io"},
		{"registry-1.docker.io", true, "docker.io"},
		{"ubuntu", false, "ubuntu"},
		{"arm64v8", false, "arm64v8"},
	}
	for _, tt := range tests {
		mustEqual(t, "IsHost "+tt.in, IsHost(tt.in), tt.host)
		mustEqual(t, "CanonicalRegistry "+tt.in, CanonicalRegistry(tt.in), tt.canonical)
	}
}

func TestScheme(t *testing.T) {
	c := newClient(t, Options{Insecure: []string{"reg.lan:5000", "plain.example"}})
	tests := []struct{ host, scheme string }{
		{"localhost", "http"},
		{"localhost:5000", "http"},
		{"foo.localhost:80", "http"},
		{"127.0.0.1:5000", "http"},
		{"127.0.0.2", "http"},
		{"[::1]:5000", "http"},
		{"reg.lan:5000", "http"},
		{"reg.lan:6000", "https"},
		{"plain.example:1234", "http"},
		{"ghcr.io", "https"},
		{"docker.io", "https"},
		{"10.0.0.1:5000", "https"},
	}
	for _, tt := range tests {
		mustEqual(t, tt.host, c.endpointFor(tt.host).scheme, tt.scheme)
	}
	mustEqual(t, "hub API host", c.endpointFor("index.docker.io").host, "registry-1.docker.io")
}

func TestParseDigestChild(t *testing.T) {
	hex := strings.Repeat("0a", 32)
	tests := []struct {
		in          string
		tag, digest string
		ok          bool
		notFound    bool
	}{
		{"sha256:" + hex, "", "sha256:" + hex, true, false},
		{"latest@sha256:" + hex, "latest", "sha256:" + hex, true, false},
		{"latest", "", "", false, false},
		{"sha256:abc", "", "", false, true},
		{"sha256:" + strings.ToUpper(hex), "", "", false, true},
		{"x@y", "", "", false, true},
		{"@sha256:" + hex, "", "", false, true},
	}
	for _, tt := range tests {
		tag, digest, ok, err := parseDigestChild(tt.in)
		if tag != tt.tag || digest != tt.digest || ok != tt.ok || errors.Is(err, ErrNotFound) != tt.notFound {
			t.Errorf("%q: got %q %q %v %v", tt.in, tag, digest, ok, err)
		}
	}
}

func TestParseChallenge(t *testing.T) {
	tests := []struct {
		in     []string
		scheme string
		params map[string]string
	}{
		{[]string{`Bearer realm="https://auth.docker.io/token",service="registry.docker.io"`}, "Bearer",
			map[string]string{"realm": "https://auth.docker.io/token", "service": "registry.docker.io"}},
		{[]string{`Bearer realm="https://a/t",service="s",scope="repository:x/y:pull",error="insufficient_scope"`}, "Bearer",
			map[string]string{"realm": "https://a/t", "service": "s", "scope": "repository:x/y:pull", "error": "insufficient_scope"}},
		{[]string{`Basic realm="Registry Realm"`}, "Basic", map[string]string{"realm": "Registry Realm"}},
		{[]string{`Negotiate`, `Bearer realm="r, with comma",service=plain`}, "Bearer",
			map[string]string{"realm": "r, with comma", "service": "plain"}},
		{[]string{`Bearer realm="q\"uote"`}, "Bearer", map[string]string{"realm": `q"uote`}},
	}
	for _, tt := range tests {
		scheme, params := parseChallenge(tt.in)
		if scheme != tt.scheme || len(params) != len(tt.params) {
			t.Errorf("%q: got %q %v", tt.in, scheme, params)
			continue
		}
		for k, v := range tt.params {
			if params[k] != v {
				t.Errorf("%q: %s: got %q, want %q", tt.in, k, params[k], v)
			}
		}
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		status int
		body   string
		hub    bool
		want   error
	}{
		{401, "", false, ErrDenied},
		{401, `{"errors":[{"code":"UNAUTHORIZED"}]}`, true, ErrNotFound},
		{403, "", true, ErrDenied},
		{404, "", false, ErrNotFound},
		{400, `{"errors":[{"code":"NAME_INVALID","message":"bad"}]}`, false, ErrNotFound},
		{400, "", false, ErrUnavailable},
		{500, "", false, ErrUnavailable},
		{429, "", false, ErrUnavailable},
		{416, "", false, ErrInvalid},
	}
	for _, tt := range tests {
		if got := classify(tt.status, []byte(tt.body), tt.hub); !errors.Is(got, tt.want) {
			t.Errorf("%d %s hub=%v: got %v, want %v", tt.status, tt.body, tt.hub, got, tt.want)
		}
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	for _, o := range []Options{{DefaultRegistry: "bad/host"}, {Insecure: []string{"a b"}}} {
		if _, err := New(o); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
}

func FuzzParseDigestChild(f *testing.F) {
	f.Add("sha256:" + strings.Repeat("0a", 32))
	f.Add("t@sha256:00")
	f.Fuzz(func(t *testing.T, s string) {
		tag, digest, ok, err := parseDigestChild(s)
		if ok && (err != nil || !validDigest(digest) || (tag != "" && !tagRE.MatchString(tag))) {
			t.Fatalf("%q: accepted %q %q %v", s, tag, digest, err)
		}
	})
}
