package main

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/regfs/regfs/internal/fixture"
)

const (
	memoryManyLayers = 40      // layers of the image whose rootfs is listed cold
	memoryWalkImages = 8       // images read whole in one mount
	memoryWalkLayers = 3       // layers of each of them
	memoryFileSize   = 1 << 20 // text files, this size each
	memoryMaxRSS     = 150 << 20
)

// benchMemory measures the peak RSS of regfs over many layers, which the rootfs figures'
// single layer does not show: a cold ls of a 40-layer image's rootfs/, which indexes
// every layer at once, and a read of every file of 8 three-layer images in one mount,
// whose layers each keep decoded spans.
func benchMemory(ctx context.Context, b *bench) ([]row, error) {
	start := time.Now()
	many, err := memoryImage(ctx, b, "bench/layers", memoryManyLayers, 4, 1000)
	if err != nil {
		return nil, err
	}
	var walk []string
	for i := range memoryWalkImages {
		repo, err := memoryImage(ctx, b, fmt.Sprintf("bench/walk%d", i), memoryWalkLayers, 6, uint64(2000+100*i))
		if err != nil {
			return nil, err
		}
		walk = append(walk, repo)
	}
	b.log.Info("memory images pushed", "took", time.Since(start).Round(time.Millisecond))

	cache := filepath.Join(b.o.work, "memory-cache")
	defer os.RemoveAll(cache)
	// A cold ls of the many-layer image: every layer indexed at once.
	p, err := b.e.mount(ctx, cache)
	if err != nil {
		return nil, err
	}
	t := time.Now()
	ents, lerr := os.ReadDir(p.rootfsOf(many, "1", benchPlatform))
	ls := time.Since(t)
	st, uerr := p.unmount()
	if lerr == nil {
		lerr = uerr
	}
	if lerr == nil && len(ents) != memoryManyLayers {
		lerr = fmt.Errorf("rootfs of %s lists %d entries, want %d", many, len(ents), memoryManyLayers)
	}
	if lerr != nil {
		return nil, fmt.Errorf("cold ls of %s: %w (log: %s)", many, lerr, tail(p.logPath))
	}
	lsRSS := st.maxRSS * 1024

	// Index the walked images in one mount, then read them whole in another.
	if p, err = b.e.mount(ctx, cache); err != nil {
		return nil, err
	}
	for _, repo := range walk {
		if _, err = os.ReadDir(p.rootfsOf(repo, "1", benchPlatform)); err != nil {
			break
		}
	}
	if _, uerr := p.unmount(); err == nil {
		err = uerr
	}
	if err != nil {
		return nil, fmt.Errorf("indexing the walked images: %w", err)
	}
	if p, err = b.e.mount(ctx, cache); err != nil {
		return nil, err
	}
	t = time.Now()
	var n int64
	for _, repo := range walk {
		k, err := readTree(p.rootfsOf(repo, "1", benchPlatform))
		if err != nil {
			p.unmount()
			return nil, fmt.Errorf("reading %s: %w (log: %s)", repo, err, tail(p.logPath))
		}
		n += k
	}
	read := time.Since(t)
	if st, err = p.unmount(); err != nil {
		return nil, err
	}
	if want := int64(memoryWalkImages * memoryWalkLayers * 6 * memoryFileSize); n != want {
		return nil, fmt.Errorf("read %d bytes of the walked images, want %d", n, want)
	}
	walkRSS := st.maxRSS * 1024
	return []row{
		{figure: fmt.Sprintf("memory: peak RSS, cold ls of a %d-layer image's rootfs (every layer indexed)", memoryManyLayers),
			measured: mib(lsRSS) + " MiB", target: "<= 150 MiB", verdict: verdict(lsRSS <= memoryMaxRSS),
			detail: fmt.Sprintf("ls took %s; %d layers of %s uncompressed each", fmtDur(ls), memoryManyLayers, mb(4*memoryFileSize))},
		{figure: fmt.Sprintf("memory: peak RSS, every file of %d %d-layer images read in one mount", memoryWalkImages, memoryWalkLayers),
			measured: mib(walkRSS) + " MiB", target: "-", verdict: "info",
			detail: fmt.Sprintf("%s read in %s, layers indexed by an earlier mount", mb(n), fmtDur(read))},
	}, nil
}

// memoryImage pushes repo:1, an image of layers gzip layers, each of files text files
// of memoryFileSize bytes (seeded from seed), and returns repo.
func memoryImage(ctx context.Context, b *bench, repo string, layers, files int, seed uint64) (string, error) {
	ls := make([]v1.Layer, layers)
	for i := range ls {
		entries := make([]fixture.Entry, files)
		for j := range entries {
			body := fixture.Prose(seed+uint64(i*files+j), memoryFileSize)
			entries[j] = fixture.File(fmt.Sprintf("l%02d/f%02d", i, j), string(body), 0o644)
		}
		l, err := fixture.Layer(fixture.Gzip, fixture.OCI, entries...)
		if err != nil {
			return "", err
		}
		ls[i] = l
	}
	img, err := fixture.Image(fixture.OCI, fixture.Platform(benchPlatform), ls...)
	if err != nil {
		return "", err
	}
	return repo, b.e.pushIndex(ctx, repo, "1", img)
}

// readTree reads every regular file under root and returns the bytes read.
func readTree(root string) (int64, error) {
	var n int64
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		k, err := io.Copy(io.Discard, f)
		n += k
		return err
	})
	return n, err
}

const memoryMethod = `  memory: two images pushed for it: bench/layers:1, 40 gzip layers of 4 text files
  of 1 MiB (fixture.Prose) each; and bench/walk0..7:1, 3 layers of 6 such files each. A fresh
  regfs with an empty cache lists the first's rootfs/ (every layer indexed, at most four
  at a time); another mount indexes the eight others; a third reads every file of them
  (filepath.WalkDir from this program). Peak RSS is GNU time's of each regfs process.
`
