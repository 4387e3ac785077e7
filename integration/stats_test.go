package integration

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/regfs/regfs/fs"
	"github.com/regfs/regfs/internal/fixture"
)

// TestStatsFile reads /.regfs/stats while mounted: it counts the registry's
// requests and the bytes served, and is not listed among the repositories.
func TestStatsFile(t *testing.T) {
	srv, _ := treeRegistry(t)
	m := mountRegfs(t, mountConfig{registry: srv.Host()})
	stats := func() fs.Stats { return m.stats(t) }
	before := stats()
	body := readFile(t, m.path(fixture.TreeSingleRepo, "latest", "linux", "amd64", "rootfs", "etc", "os-release"))
	after := stats()
	if got, want := after.BytesServed-before.BytesServed, int64(len(body)); got != want {
		t.Errorf("bytes_served grew by %d, want %d", got, want)
	}
	if after.Registry.Requests["GET"] <= before.Registry.Requests["GET"] {
		t.Errorf("GET requests %d -> %d, want more", before.Registry.Requests["GET"], after.Registry.Requests["GET"])
	}
	if after.Cache.BytesFetched == 0 {
		t.Errorf("cache bytes_fetched = 0 after a layer was read")
	}
	for _, name := range readDir(t, m.path()) {
		if name == ".regfs" {
			t.Errorf("/ lists .regfs")
		}
	}
	if _, err := os.Stat(m.path(".regfs", "nosuch")); !os.IsNotExist(err) {
		t.Errorf("stat .regfs/nosuch: %v, want ENOENT", err)
	}
}

// stats reads the mount's /.regfs/stats.
func (m *mounted) stats(t *testing.T) fs.Stats {
	t.Helper()
	var s fs.Stats
	if err := json.Unmarshal([]byte(readFile(t, m.path(".regfs", "stats"))), &s); err != nil {
		t.Fatal(err)
	}
	return s
}
