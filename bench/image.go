package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/klauspost/compress/gzip"

	"github.com/regfs/regfs/internal/fixture"
)

// image is the benchmark image: an index with linux/arm64 (one gzip layer: a
// 50 MB file made of the rootfs's own files, the Debian rootfs, and padding
// if needed) and a small linux/amd64 entry. The big file comes first so that
// its chunks are the first evicted by a cache smaller than the layer (the
// refetch and concurrent figures).
type image struct {
	repo, tag, platform string
	ref                 string // host/repo:tag on the counted host, for crane
	layerDigest         string
	layerSize           int64  // compressed
	tarSize             int64  // uncompressed
	blobPath            string // the layer blob on local disk
	entries             int

	smallFile string // a small file to cat, relative to the rootfs
	smallBody []byte
	bigFile   string // the large file read at random offsets
	bigBody   []byte

	rootfsEntries []fixture.Entry // the Debian rootfs alone (the diff figure's base layer)
	allEntries    []fixture.Entry // every entry of the layer, padding included, in order
}

// benchPlatform is the platform the figures read.
const benchPlatform = "linux/arm64"

// buildImage builds the image from o.rootfs, writes its layer blob under
// o.work and pushes the image to the registry directly (not counted).
func buildImage(ctx context.Context, o options, e *env, log *slog.Logger) (*image, error) {
	img := &image{repo: "bench/debian", tag: "bookworm", platform: benchPlatform,
		smallFile: "etc/debian_version", bigFile: "regfs-bench/big.bin"}
	img.ref = e.host + "/" + img.repo + ":" + img.tag
	var err error
	if img.smallBody, err = os.ReadFile(filepath.Join(o.rootfs, img.smallFile)); err != nil {
		return nil, fmt.Errorf("rootfs %s is not a Debian rootfs: %w", o.rootfs, err)
	}
	entries, err := fixture.EntriesFromDir(o.rootfs)
	if err != nil {
		return nil, err
	}
	var usr []fixture.Entry // regular files under usr/, in walk order
	for _, en := range entries {
		if en.Kind == fixture.KindFile && en.Size > 0 && strings.HasPrefix(en.Name, "usr/") {
			usr = append(usr, en)
		}
	}
	if len(usr) == 0 {
		return nil, fmt.Errorf("rootfs %s has no files under usr/", o.rootfs)
	}
	if img.bigBody, err = io.ReadAll(concat(usr, o.bigSize)); err != nil {
		return nil, fmt.Errorf("big file: %w", err)
	}
	if int64(len(img.bigBody)) != o.bigSize {
		return nil, fmt.Errorf("big file: %d bytes, want %d", len(img.bigBody), o.bigSize)
	}
	big := []fixture.Entry{
		fixture.Dir("regfs-bench", 0o755),
		{Name: img.bigFile, Kind: fixture.KindFile, Body: img.bigBody, Mode: 0o644},
	}
	img.rootfsEntries = entries
	layerEntries := append(big, entries...)
	img.allEntries = layerEntries
	layer, err := fixture.Layer(fixture.Gzip, fixture.OCI, layerEntries...)
	if err != nil {
		return nil, err
	}
	if size, _ := layer.Size(); size < o.padTo*95/100 {
		// Pad with copies of usr/ files (real binaries and text, as a fatter
		// image would hold) until the layer is about o.padTo compressed.
		tar := int64(0)
		for _, en := range entries {
			tar += en.Size
		}
		want := int64(float64(o.padTo-size) * float64(tar+o.bigSize) / float64(size))
		pad := []fixture.Entry{fixture.Dir("regfs-bench/pad", 0o755)}
		for k := 0; want > 0; k++ {
			prefix := fmt.Sprintf("regfs-bench/pad/%d/", k)
			pad = append(pad, fixture.Dir(prefix, 0o755))
			for _, en := range entries {
				if !underUsr(en.Name) || !(en.Kind == fixture.KindDir || en.Kind == fixture.KindFile && want > 0) {
					continue
				}
				en.Name = prefix + en.Name
				pad = append(pad, en)
				want -= en.Size
			}
		}
		log.Info("padding the layer", "compressed", size, "files", len(pad))
		img.allEntries = append(slices.Clip(layerEntries), pad...)
		if layer, err = fixture.Layer(fixture.Gzip, fixture.OCI, img.allEntries...); err != nil {
			return nil, err
		}
	}
	img.entries = len(layerEntries)
	d, err := layer.Digest()
	if err != nil {
		return nil, fmt.Errorf("layer digest: %w", err)
	}
	img.layerDigest = d.String()
	if img.layerSize, err = layer.Size(); err != nil {
		return nil, fmt.Errorf("layer size: %w", err)
	}

	img.blobPath = filepath.Join(o.work, "layer.tar.gz")
	if err := writeBlob(layer, img.blobPath); err != nil {
		return nil, err
	}
	if img.tarSize, err = gunzipFile(img.blobPath); err != nil {
		return nil, err
	}

	arm, err := fixture.Image(fixture.OCI, fixture.Platform(benchPlatform), layer)
	if err != nil {
		return nil, err
	}
	amd, err := fixture.Small(fixture.OCI, fixture.Gzip, fixture.Platform("linux/amd64"))
	if err != nil {
		return nil, err
	}
	if err := e.pushIndex(ctx, img.repo, img.tag, amd, arm); err != nil {
		return nil, err
	}
	return img, nil
}

// underUsr reports whether a rootfs path is usr or below it.
func underUsr(name string) bool {
	return name == "usr" || strings.HasPrefix(name, "usr/")
}

// concat returns the contents of files one after another (from the start
// again when they run out), limited to n bytes.
func concat(files []fixture.Entry, n int64) io.Reader {
	return io.LimitReader(&concatReader{files: files}, n)
}

// concatReader reads files in order, endlessly. Not safe for concurrent use.
type concatReader struct {
	files []fixture.Entry
	i     int
	cur   io.ReadCloser
}

func (c *concatReader) Read(p []byte) (int, error) {
	for {
		if c.cur == nil {
			f, err := c.files[c.i%len(c.files)].Open()
			if err != nil {
				return 0, fmt.Errorf("concat: %w", err)
			}
			c.cur = f
			c.i++
		}
		n, err := c.cur.Read(p)
		if err == io.EOF {
			c.cur.Close()
			c.cur = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

// writeBlob writes the compressed layer to path.
func writeBlob(l interface {
	Compressed() (io.ReadCloser, error)
}, path string) error {
	rc, err := l.Compressed()
	if err != nil {
		return fmt.Errorf("layer blob: %w", err)
	}
	defer rc.Close()
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("layer blob: %w", err)
	}
	if _, err := io.Copy(f, rc); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// gunzipFile decodes a gzip file (all members) with klauspost/compress and
// returns the number of decoded bytes.
func gunzipFile(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("gunzip: %w", err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return 0, fmt.Errorf("gunzip %s: %w", path, err)
	}
	n, err := io.Copy(io.Discard, zr)
	if err != nil {
		return n, fmt.Errorf("gunzip %s: %w", path, err)
	}
	return n, nil
}

// cmdGunzip is `regfs-bench gunzip FILE`: the read-all baseline.
func cmdGunzip(args []string, out io.Writer) error {
	if len(args) != 1 {
		return fmt.Errorf("usage: regfs-bench gunzip FILE")
	}
	n, err := gunzipFile(args[0])
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(out, n)
	return err
}
