package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/regfs/regfs/layers"
	"github.com/regfs/regfs/layers/inflate"
)

// layerScan is what the bench knows of the gzip layer without asking regfs:
// the restart points regfs's index has (inflate.Scan at regfs's span, which
// is deterministic) and where the big file's bytes lie in the uncompressed
// stream. The refetch and concurrent figures compute their targets from it.
type layerScan struct {
	cps    []inflate.Checkpoint // in order of Out
	out    int64                // uncompressed size
	size   int64                // compressed size
	bigOff int64                // offset of the big file's first byte in the uncompressed stream
}

// layerScan scans the layer blob once per run (about a second).
func (b *bench) layerScan() (*layerScan, error) {
	if b.scan != nil {
		return b.scan, nil
	}
	s, err := scanLayer(b.img.blobPath, b.img.bigFile, b.img.bigBody)
	if err != nil {
		return nil, err
	}
	b.log.Info("layer scanned", "restart_points", len(s.cps), "big_file_at", s.bigOff)
	b.scan = s
	return s, nil
}

// scanLayer runs inflate.Scan over the blob at path with regfs's span for a
// layer of its size (layers.DefaultSpan below 1 GiB compressed), parses the
// tar it inflates to find bigFile's data offset, and checks by resuming from
// a checkpoint that the bytes there are bigBody's.
func scanLayer(path, bigFile string, bigBody []byte) (*layerScan, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("scan: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("scan: %w", err)
	}
	if st.Size() >= 1<<30 {
		return nil, fmt.Errorf("scan: %s is over 1 GiB: regfs's span for it is not layers.DefaultSpan", path)
	}
	s := &layerScan{size: st.Size(), bigOff: -1}

	// The tar parser reads what Scan inflates; tar.Reader reads no further
	// than the header blocks before Next returns, so the count of bytes read
	// then is the entry's data offset.
	pr, pw := io.Pipe()
	found := make(chan error, 1)
	go func() {
		cr := &countingReader{r: pr}
		tr := tar.NewReader(cr)
		var err error
		for {
			var h *tar.Header
			if h, err = tr.Next(); err != nil {
				break
			}
			if h.Name == bigFile {
				s.bigOff = cr.n
			}
		}
		if errors.Is(err, io.EOF) {
			err = nil
		}
		_, _ = io.Copy(io.Discard, pr) // tar's zero blocks and padding
		pr.CloseWithError(err)
		found <- err
	}()
	s.out, err = inflate.Scan(bufio.NewReaderSize(f, 1<<20), pw, layers.DefaultSpan, func(cp inflate.Checkpoint) error {
		s.cps = append(s.cps, cp)
		return nil
	})
	pw.CloseWithError(err)
	if terr := <-found; err == nil {
		err = terr
	}
	if err != nil {
		return nil, fmt.Errorf("scan %s: %w", path, err)
	}
	if s.bigOff < 0 {
		return nil, fmt.Errorf("scan %s: no %s in the layer", path, bigFile)
	}
	if err := s.check(f, bigBody); err != nil {
		return nil, err
	}
	return s, nil
}

// check resumes from the checkpoint before the big file's middle and compares
// what it inflates with the file's bytes: a wrong offset or checkpoint would
// make every target computed from them wrong.
func (s *layerScan) check(blob io.ReaderAt, bigBody []byte) error {
	off := s.bigOff + int64(len(bigBody))/2
	cp := s.cps[s.at(off)]
	rc, err := inflate.Resume(io.NewSectionReader(blob, cp.In, s.size-cp.In), cp)
	if err != nil {
		return fmt.Errorf("scan check: %w", err)
	}
	defer rc.Close()
	if _, err := io.CopyN(io.Discard, rc, off-cp.Out); err != nil {
		return fmt.Errorf("scan check: %w", err)
	}
	got := make([]byte, 4096)
	if _, err := io.ReadFull(rc, got); err != nil {
		return fmt.Errorf("scan check: %w", err)
	}
	rel := off - s.bigOff
	if !bytes.Equal(got, bigBody[rel:rel+int64(len(got))]) {
		return fmt.Errorf("scan check: inflating from the checkpoint at %d does not give the big file's bytes at %d", cp.In, rel)
	}
	return nil
}

// at returns the index of the last checkpoint at or before uncompressed
// offset off.
func (s *layerScan) at(off int64) int {
	i := sort.Search(len(s.cps), func(i int) bool { return s.cps[i].Out > off })
	return max(i-1, 0)
}

// spans returns the compressed bytes of the spans that hold the uncompressed
// range [off, off+n): from the last checkpoint at or before off to the first
// at or after off+n (or the blob's end), and how many spans that is.
func (s *layerScan) spans(off, n int64) (compressed int64, count int) {
	i := s.at(off)
	j := i + 1
	for j < len(s.cps) && s.cps[j].Out < off+n {
		j++
	}
	return s.inEnd(j) - s.cps[i].In, j - i
}

// inEnd returns the end of the compressed bytes needed to inflate up to
// checkpoint j (the blob's size for j past the last).
func (s *layerScan) inEnd(j int) int64 {
	if j >= len(s.cps) {
		return s.size
	}
	if s.cps[j].Bit > 0 {
		return s.cps[j].In + 1
	}
	return s.cps[j].In
}

// spanOf returns span i's uncompressed range [lo, hi) and compressed range
// [in0, in1).
func (s *layerScan) spanOf(i int) (lo, hi, in0, in1 int64) {
	lo, in0, hi = s.cps[i].Out, s.cps[i].In, s.out
	if i+1 < len(s.cps) {
		hi = s.cps[i+1].Out
	}
	return lo, hi, in0, s.inEnd(i + 1)
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// evictCacheSize is the --cache-size of the eviction setup: well under the
// 107 MB layer, well over its index.
const evictCacheSize = 32 << 20

// evictedCache makes a cache directory in which the benchmark layer is
// indexed but most of its chunks are evicted: a fresh regfs with a 32 MiB
// cache reads a small file (which indexes the whole layer, evicting chunks as
// it goes; indexes are evicted last). It checks that the pass fetched the
// layer and that the cache holds to its bound.
func (b *bench) evictedCache(ctx context.Context, name string) (string, error) {
	dir := filepath.Join(b.o.work, name)
	p, err := b.e.mount(ctx, dir, "--cache-size", fmt.Sprint(evictCacheSize))
	if err != nil {
		return "", err
	}
	b.e.take()
	body, err := os.ReadFile(filepath.Join(p.rootfs(b.img), b.img.smallFile))
	c := b.e.take()
	if _, uerr := p.unmount(); err == nil {
		err = uerr
	}
	if err != nil {
		return "", fmt.Errorf("eviction setup: %w (log: %s)", err, tail(p.logPath))
	}
	if !bytes.Equal(body, b.img.smallBody) {
		return "", fmt.Errorf("eviction setup: read %q from %s, want %q", body, b.img.smallFile, b.img.smallBody)
	}
	if c.BlobBytes < b.img.layerSize {
		return "", fmt.Errorf("eviction setup: fetched %d blob bytes, less than the layer's %d: was the layer indexed?", c.BlobBytes, b.img.layerSize)
	}
	du, err := diskUsage(dir)
	if err != nil {
		return "", err
	}
	b.log.Info("eviction setup", "cache", dir, "requests", c.String(), "cache_bytes", du)
	if du > evictCacheSize+1<<20 {
		return "", fmt.Errorf("eviction setup: cache holds %d bytes, over its %d bound", du, evictCacheSize)
	}
	return dir, nil
}

// diskUsage returns the sum of the sizes of the regular files under dir.
func diskUsage(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) { // removed while walking: evicted
				return nil
			}
			return err
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if err != nil {
				return err
			}
			n += info.Size()
		}
		return nil
	})
	if err != nil {
		return n, fmt.Errorf("disk usage of %s: %w", dir, err)
	}
	return n, nil
}

// duSampler samples a directory's disk usage in the background.
type duSampler struct {
	stop    chan struct{}
	done    chan struct{}
	peak    int64 // written by the sampling goroutine until done is closed
	samples int
	err     error
}

// sampleDiskUsage samples diskUsage(dir) every interval until Stop.
func sampleDiskUsage(dir string, every time.Duration, log *slog.Logger) *duSampler {
	s := &duSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			n, err := diskUsage(dir)
			if err != nil && s.err == nil {
				log.Warn("disk usage sample", "err", err)
				s.err = err
			}
			s.peak, s.samples = max(s.peak, n), s.samples+1
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// Stop ends the sampling and returns the peak and the number of samples.
func (s *duSampler) Stop() (peak int64, samples int, err error) {
	close(s.stop)
	<-s.done
	return s.peak, s.samples, s.err
}
