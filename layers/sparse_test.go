package layers

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// gnuTar builds a tar with GNU tar from a directory of sparse files and long names.
func gnuTar(t *testing.T, args ...string) []byte {
	t.Helper()
	if _, err := exec.LookPath("tar"); err != nil {
		t.Skip("no tar binary")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	r := rand.New(rand.NewPCG(4, 4))
	mk := func(name string, size int64, pieces map[int64]int) {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := f.Truncate(size); err != nil { // as `truncate -s`
			t.Fatal(err)
		}
		for off, n := range pieces {
			if _, err := f.WriteAt(randomData(r, n, false), off); err != nil {
				t.Fatal(err)
			}
		}
	}
	mk("sparse/holes", 5<<20, map[int64]int{1 << 20: 10 << 10, 3<<20 + 123: 5000})
	mk("sparse/ends", 3<<20, map[int64]int{0: 4096, 3<<20 - 100: 100})
	mk("sparse/empty", 2<<20, nil)
	many := map[int64]int{}
	for i := range int64(40) {
		many[i*200<<10] = 8192
	}
	mk("sparse/many", 9<<20, many)
	long := strings.Repeat("a-long-directory-name/", 8) + "and-a-sparse-file-with-a-long-name"
	mk(long, 4<<20, map[int64]int{2 << 20: 7777})
	mk("plain", 0, map[int64]int{0: 3000})
	out := filepath.Join(dir, "out.tar")
	cmd := exec.Command("tar", append(append([]string{"-C", src, "--sparse", "-cf", out}, args...), "sparse", "plain", "a-long-directory-name")...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Skipf("tar %v: %v: %s", args, err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestGNUTarSparse(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"gnu old sparse", []string{"--format=gnu"}},
		{"pax 0.0", []string{"--format=pax", "--sparse-version=0.0"}},
		{"pax 0.1", []string{"--format=pax", "--sparse-version=0.1"}},
		{"pax 1.0", []string{"--format=pax", "--sparse-version=1.0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tarBytes := gnuTar(t, tc.args...)
			for _, enc := range []struct {
				name string
				blob []byte
			}{{"tar", tarBytes}, {"gzip", gzipStd(t, tarBytes)}, {"zstd", zstdFrames(t, tarBytes, 1<<20, false)}} {
				t.Run(enc.name, func(t *testing.T) {
					blob := &memBlob{b: enc.blob}
					x, err := BuildIndex(context.Background(), blob, digestOf(enc.blob), nil, WithSpan(256<<10))
					if err != nil {
						t.Fatal(err)
					}
					sparse := 0
					for _, e := range x.Entries {
						if e.Sparse != nil {
							sparse++
							if e.Typeflag != '0' {
								t.Errorf("%s: typeflag %q", e.Name, e.Typeflag)
							}
						}
					}
					if sparse < 4 {
						t.Errorf("%d sparse entries, want at least 4", sparse)
					}
					checkLayer(t, x, NewLayer(x, blob, nil, nil), tarBytes, 5)
					// Holes read as zeros across fragment boundaries.
					for _, e := range x.Entries {
						if e.Name == "sparse/holes" {
							p := make([]byte, 20<<10)
							if _, err := NewLayer(x, blob, nil, nil).ReadAt(context.Background(), &e, p, 1<<20-5000); err != nil {
								t.Fatal(err)
							}
							if !bytes.Equal(p[:5000], make([]byte, 5000)) || bytes.Equal(p[5000:5100], make([]byte, 100)) {
								t.Error("hole/data boundary read wrong")
							}
						}
					}
				})
			}
		})
	}
}
