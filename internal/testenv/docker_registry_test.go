package testenv

import (
	"context"
	"net/http"
	"strings"
	"testing"
)

func TestRegistryConfig(t *testing.T) {
	tests := []struct {
		name      string
		o         RegistryOptions
		want, not []string
	}{
		{name: "plain", o: RegistryOptions{},
			want: []string{"rootdirectory: /s\n", "  delete:\n    enabled: true\n", "  addr: 127.0.0.1:5\n"},
			not:  []string{"proxy:"}},
		{name: "proxy", o: RegistryOptions{ProxyRemoteURL: "http://127.0.0.1:9"},
			want: []string{"rootdirectory: /s\n", "proxy:\n  remoteurl: http://127.0.0.1:9\n", "  addr: 127.0.0.1:5\n"},
			not:  []string{"delete:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := registryConfig("/s", "127.0.0.1:5", tt.o)
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("config lacks %q:\n%s", w, got)
				}
			}
			for _, n := range tt.not {
				if strings.Contains(got, n) {
					t.Errorf("config has %q:\n%s", n, got)
				}
			}
		})
	}
}

// TestStartRegistry starts a registry without a testing.T-bound helper, as
// the benchmark does, and stops it.
func TestStartRegistry(t *testing.T) {
	bin := RequireRegistry(t)
	p, err := StartRegistry(context.Background(), t.TempDir(), RegistryOptions{Binary: bin})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + p.Host() + "/v2/")
	if err != nil {
		p.Stop()
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /v2/: HTTP %d", resp.StatusCode)
	}
	p.Stop()
	if _, err := http.Get("http://" + p.Host() + "/v2/"); err == nil {
		t.Errorf("the registry still answers after Stop")
	}
	if p.Storage() == "" {
		t.Errorf("no storage directory")
	}
}

func TestStartRegistryMissingBinary(t *testing.T) {
	if _, err := StartRegistry(context.Background(), t.TempDir(), RegistryOptions{Binary: "/nonexistent/docker-registry"}); err == nil {
		t.Fatal("started a registry from a missing binary")
	}
}
