package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"
)

const (
	refetchRuns  = 4 // remounts of the evicted cache
	refetchReads = 6 // 4 KiB reads per remount, each in its own 2 MiB region
	// readWindow is what the kernel asks of a FUSE file for a one-page read at
	// a cold random offset (its initial readahead: 4 pages). The spans a read
	// may need are those this window touches.
	readWindow = 16 << 10
	// settle is how long the bench waits after a read before taking the
	// counts, so that a fetch the read started in the background is counted
	// with it.
	settle = 50 * time.Millisecond
)

// benchRefetch measures issue 4's "gzip layer, indexed then chunks evicted: a
// 4 KiB read fetches at most 2 spans of compressed bytes". After the eviction
// setup (index kept, chunks evicted by a 32 MiB bound), each remount with the
// same cache and bound reads 4 KiB at random offsets of the big file; the
// registry bytes of each read are compared with twice the compressed size of
// the spans (between the index's restart points, computed by the bench
// itself) that the read touches.
func benchRefetch(ctx context.Context, b *bench) ([]row, error) {
	s, err := b.layerScan()
	if err != nil {
		return nil, err
	}
	cache, err := b.evictedCache(ctx, "refetch-cache")
	if err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(b.o.seed, 0x4efe7c4))
	regions := int(b.o.bigSize / warmRegion)
	perRun := min(refetchReads, regions/refetchRuns)
	perm := rng.Perm(regions)
	buf := make([]byte, 4096)

	var lats []time.Duration
	var got, limits, reopen []int64
	var reqs []int64
	var perRead []string
	fetched, over := 0, 0
	worst := 0.0
	for r := range refetchRuns {
		p, err := b.e.mount(ctx, cache, "--cache-size", fmt.Sprint(evictCacheSize))
		if err != nil {
			return nil, err
		}
		b.e.take()
		f, err := os.Open(filepath.Join(p.rootfs(b.img), b.img.bigFile))
		if err != nil {
			_, _ = p.unmount()
			return nil, fmt.Errorf("refetch open: %w (log: %s)", err, tail(p.logPath))
		}
		reopen = append(reopen, b.e.take().BlobBytes)
		for k := range perRun {
			off := int64(perm[r*perRun+k])*warmRegion + rng.Int64N(warmRegion-int64(len(buf)))
			t := time.Now()
			n, err := f.ReadAt(buf, off)
			d := time.Since(t)
			if err != nil || !bytes.Equal(buf[:n], b.img.bigBody[off:off+int64(len(buf))]) {
				f.Close()
				_, _ = p.unmount()
				return nil, fmt.Errorf("refetch read at %d: %d bytes, %v, or wrong bytes (log: %s)", off, n, err, tail(p.logPath))
			}
			time.Sleep(settle)
			c := b.e.take()
			lim, nspans := s.spans(s.bigOff+off&^4095, readWindow)
			lim *= 2
			lats, got, limits = append(lats, d), append(got, c.BlobBytes), append(limits, lim)
			reqs = append(reqs, int64(c.N("GET", "blob")))
			if c.BlobBytes > 0 {
				fetched++
				worst = max(worst, float64(c.BlobBytes)/float64(lim))
			}
			desc := fmt.Sprintf("%s/%s(%d)", kb(c.BlobBytes), kb(lim), nspans)
			if c.BlobBytes > lim {
				over++
				i := s.at(s.bigOff + off&^4095)
				_, _, in0, in1 := s.spanOf(i)
				_, ranges := blobGETs(c, in0, in1)
				desc += fmt.Sprintf("[span %d-%d: %s]", in0, in1, strings.Join(ranges, ", "))
			}
			perRead = append(perRead, desc)
			b.log.Debug("refetch read", "run", r, "off", off, "took", d, "requests", c.String(), "limit", lim, "spans", nspans)
		}
		f.Close()
		if _, err := p.unmount(); err != nil {
			return nil, err
		}
		b.log.Info("refetch remount", "run", r, "reopen_bytes", reopen[len(reopen)-1])
	}
	total := len(got)
	ok := over == 0 && fetched*2 >= total
	return []row{
		{figure: "refetch: registry bytes to reopen the big file after eviction (index kept), max", measured: kb(slicesMax(reopen)),
			target: "< 1 MB", verdict: verdict(slicesMax(reopen) < 1e6), detail: "per remount: " + joinInts(reopen, kb)},
		{figure: fmt.Sprintf("refetch: registry bytes of a 4 KiB read after eviction (median of %d; %d fetched)", total, fetched),
			measured: kb(medianInt(got)), target: "<= 2 spans each", verdict: verdict(ok),
			detail: fmt.Sprintf("per read, bytes/limit(spans): %s; %d over the limit, %d served by the cache", strings.Join(perRead, " "), over, total-fetched)},
		{figure: "refetch: worst read, bytes / (2 x compressed size of its spans)", measured: fmt.Sprintf("%.2f", worst),
			target: "<= 1.00", verdict: verdict(worst <= 1 && fetched > 0),
			detail: fmt.Sprintf("span limits: median %s, min %s, max %s", kb(medianInt(limits)/2), kb(slicesMin(limits)/2), kb(slicesMax(limits)/2))},
		{figure: "refetch: registry requests per read (median / max)", measured: fmt.Sprintf("%d / %d", medianInt(reqs), slicesMax(reqs))},
		{figure: "refetch: 4 KiB read latency after eviction (median)", measured: fmtDur(median(lats)),
			detail: fmt.Sprintf("p10 %s, p90 %s, max %s", fmtDur(percentile(lats, 10)), fmtDur(percentile(lats, 90)), fmtDur(percentile(lats, 100)))},
	}, nil
}

// refetchMethod explains how the refetch figures were taken.
const refetchMethod = `  refetch: eviction setup: a fresh regfs with --cache-size 32MiB cats a small file, which
  indexes the whole ~107 MB layer (chunks evicted as the pass goes; the index is evicted last).
  Then 4 remounts with the same cache and bound each read 4 KiB at 6 random offsets of the big
  file, each offset in its own 2 MiB region; bytes are counted per read (50 ms after it, so
  background fetches count). The limit of a read is 2 x the compressed bytes of the spans its
  16 KiB kernel read window touches, between restart points the bench computes itself
  (inflate.Scan of the blob at regfs's 1 MiB span, checked by resuming from one).
`
