package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/regfs/regfs/internal/fixture"
)

const (
	boundFileSize  = 1 << 30
	boundCacheSize = 128 << 20
	boundChunk     = 1 << 20 // one chunk of slack, as issue 4 allows
	boundSampling  = 50 * time.Millisecond
	boundFile      = "opt/regfs-bench/random.bin"
)

// benchBound measures issue 4's "cache bound: filling past --cache-size keeps
// disk use within bound + one chunk; a 128 MiB cache still serves a 1 GiB
// file of random bytes correctly". The file is in an uncompressed layer
// (random bytes do not compress) built and pushed once per run; a fresh regfs
// with --cache-size 128MiB indexes the layer and the file is read whole, its
// sha256 compared with the expected one, while the cache directory's disk
// use (the sum of its files' sizes) is sampled every 50 ms.
func benchBound(ctx context.Context, b *bench) ([]row, error) {
	start := time.Now()
	want, layer, err := buildBoundLayer(b)
	if err != nil {
		return nil, err
	}
	defer os.Remove(layer.path)
	img, err := fixture.Image(fixture.OCI, fixture.Platform(benchPlatform), layer)
	if err != nil {
		return nil, err
	}
	repo, tag := "bench/random", "1g"
	if err := b.e.pushIndex(ctx, repo, tag, img); err != nil {
		return nil, err
	}
	b.log.Info("bound image pushed", "layer", layer.digest, "size", layer.size, "took", time.Since(start).Round(time.Millisecond))

	cache := filepath.Join(b.o.work, "bound-cache")
	defer os.RemoveAll(cache)
	p, err := b.e.mount(ctx, cache, "--cache-size", fmt.Sprint(boundCacheSize))
	if err != nil {
		return nil, err
	}
	du := sampleDiskUsage(cache, boundSampling, b.log)
	b.e.take()
	path := filepath.Join(p.rootfsOf(repo, tag, benchPlatform), boundFile)
	t := time.Now()
	_, rerr := os.Stat(path) // indexes the layer
	index := time.Since(t)
	ci := b.e.take()
	var got string
	var n int64
	var read time.Duration
	if rerr == nil {
		t = time.Now()
		got, n, rerr = sha256File(path)
		read = time.Since(t)
	}
	cr := b.e.take()
	peak, samples, derr := du.Stop()
	if _, uerr := p.unmount(); rerr == nil {
		rerr = uerr
	}
	if rerr == nil {
		rerr = derr
	}
	if rerr != nil {
		return nil, fmt.Errorf("bound read: %w (log: %s)", rerr, tail(p.logPath))
	}
	if n != boundFileSize || got != want {
		return nil, fmt.Errorf("bound read: %d bytes with sha256 %s, want %d with %s", n, got, int64(boundFileSize), want)
	}
	rate := func(d time.Duration) string { return fmt.Sprintf("%.0f MB/s", float64(boundFileSize)/1e6/d.Seconds()) }
	limit := int64(boundCacheSize + boundChunk)
	return []row{
		{figure: fmt.Sprintf("bound: peak cache disk use reading a %s file with --cache-size 128MiB", mib(boundFileSize)+" MiB"),
			measured: mib(peak) + " MiB", target: "<= 129 MiB", verdict: verdict(peak <= limit && samples >= 10),
			detail: fmt.Sprintf("%d samples, every %s", samples, boundSampling)},
		{figure: "bound: sha256 of the file read whole through regfs", measured: "equal", target: "equal", verdict: "pass",
			detail: "sha256 " + want},
		{figure: "bound: index pass of the 1 GiB layer (first stat)", measured: fmtDur(index) + ", " + rate(index),
			detail: "registry " + ci.String()},
		{figure: "bound: whole read of the file after the index pass", measured: fmtDur(read) + ", " + rate(read),
			detail: "registry " + cr.String()},
		{figure: "bound: registry blob bytes, index pass + read (each past the bound)", measured: mb(ci.BlobBytes) + " + " + mb(cr.BlobBytes)},
	}, nil
}

// buildBoundLayer writes the bound figure's layer (an uncompressed tar
// holding a 1 GiB file of pseudo-random bytes) to a file and returns the
// file's sha256 and the layer.
func buildBoundLayer(b *bench) (string, *fileLayer, error) {
	path := filepath.Join(b.o.work, "bound.tar")
	f, err := os.Create(path)
	if err != nil {
		return "", nil, fmt.Errorf("bound layer: %w", err)
	}
	h := sha256.New()
	n := int64(0)
	entries := []fixture.Entry{
		fixture.Dir("opt/regfs-bench", 0o755),
		{Name: boundFile, Kind: fixture.KindFile, Mode: 0o644, Size: boundFileSize, Open: func() (io.ReadCloser, error) {
			h.Reset()
			return io.NopCloser(&hashingReader{r: randomBytes(b.o.seed, boundFileSize), h: h, n: &n}), nil
		}},
	}
	err = fixture.WriteTar(f, entries)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return "", nil, fmt.Errorf("writing %s: %w", path, err)
	}
	if n != boundFileSize {
		os.Remove(path)
		return "", nil, fmt.Errorf("bound layer: wrote %d bytes of the file, want %d", n, int64(boundFileSize))
	}
	l, err := newFileLayer(path, types.OCIUncompressedLayer, v1.Hash{})
	if err != nil {
		os.Remove(path)
		return "", nil, err
	}
	return fmt.Sprintf("%x", h.Sum(nil)), l, nil
}

// randomBytes returns n pseudo-random bytes determined by seed.
func randomBytes(seed uint64, n int64) io.Reader {
	var key [32]byte
	for i := range 8 {
		key[i] = byte(seed >> (8 * i))
	}
	copy(key[8:], "regfs-bench bound figure")
	return io.LimitReader(rand.NewChaCha8(key), n)
}

// hashingReader hashes and counts what is read through it.
type hashingReader struct {
	r io.Reader
	h hash.Hash
	n *int64
}

func (r *hashingReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.h.Write(p[:n])
	*r.n += int64(n)
	return n, err
}

// sha256File reads a file whole in 1 MiB reads and returns its sha256 and
// length.
func sha256File(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.CopyBuffer(struct{ io.Writer }{h}, struct{ io.Reader }{f}, make([]byte, 1<<20))
	if err != nil {
		return "", n, fmt.Errorf("reading %s: %w", path, err)
	}
	return fmt.Sprintf("%x", h.Sum(nil)), n, nil
}

// boundMethod explains how the bound figures were taken.
const boundMethod = `  bound: bench/random:1g has one uncompressed layer holding a 1 GiB file of ChaCha8 bytes (built
  and pushed once per run). A fresh regfs with --cache-size 128MiB reads it whole (1 MiB reads:
  the index pass, then the file), sha256 compared with the bytes written; the cache directory's
  disk use (sum of its files' sizes, temporary files included) is sampled every 50 ms meanwhile.
`
