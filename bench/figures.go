package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// coldResult is the cold figure: its rows, the cache dir of the last regfs
// run (index and chunks on disk: the warm figures remount with it) and the
// peak RSS of every cold regfs process, in KiB.
type coldResult struct {
	rows  []row
	cache string
	rss   []int64         // KiB
	cpu   []time.Duration // CPU time of each regfs process
	fetch []int64         // registry blob bytes of each regfs run
}

// benchCold times `cat` of a small file through a fresh regfs (new process,
// empty cache) against crane export | tar -x, interleaved.
func benchCold(ctx context.Context, e *env, img *image, log *slog.Logger) (*coldResult, error) {
	res := &coldResult{}
	var regfs, crane []time.Duration
	var craneFetch []int64
	var craneCPU []time.Duration
	var ready []time.Duration
	for i := range e.o.pairs {
		if i > 0 {
			_ = os.RemoveAll(res.cache) // keep only the last cache
		}
		res.cache = filepath.Join(e.o.work, fmt.Sprintf("cold-cache-%d", i))
		p, err := e.mount(ctx, res.cache)
		if err != nil {
			return nil, err
		}
		e.take()
		d, _, out, err := timed(ctx, "cat "+shq(filepath.Join(p.rootfs(img), img.smallFile)), "")
		c := e.take()
		st, uerr := p.unmount()
		if err != nil {
			return nil, fmt.Errorf("regfs cold read: %w (log: %s)", err, tail(p.logPath))
		}
		if uerr != nil {
			return nil, uerr
		}
		if !bytes.Equal(out, img.smallBody) {
			return nil, fmt.Errorf("regfs read %q from %s, want %q", out, img.smallFile, img.smallBody)
		}
		regfs, ready = append(regfs, d), append(ready, p.ready)
		res.rss, res.cpu, res.fetch = append(res.rss, st.maxRSS), append(res.cpu, st.cpu), append(res.fetch, c.BlobBytes)
		log.Info("cold regfs", "run", i, "took", d.Round(time.Millisecond), "cpu", st.cpu, "requests", c.String(),
			"rss_mib", mib(st.maxRSS*1024), "log", p.logPath)

		dir := filepath.Join(e.o.work, fmt.Sprintf("crane-%d", i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("crane directory: %w", err)
		}
		script := fmt.Sprintf("%s export --insecure --platform %s %s - | tar -x -C %s && cat %s",
			shq(e.o.crane), img.platform, shq(img.ref), shq(dir), shq(filepath.Join(dir, img.smallFile)))
		d, cpu, out, err := timed(ctx, script, "")
		c = e.take()
		_ = os.RemoveAll(dir)
		if err != nil {
			return nil, fmt.Errorf("crane export: %w", err)
		}
		if !bytes.Equal(out, img.smallBody) {
			return nil, fmt.Errorf("crane export gave %q for %s, want %q", out, img.smallFile, img.smallBody)
		}
		crane, craneFetch, craneCPU = append(crane, d), append(craneFetch, c.BlobBytes), append(craneCPU, cpu)
		log.Info("cold crane", "run", i, "took", d.Round(time.Millisecond), "cpu", cpu, "requests", c.String())
	}
	mr, mc := median(regfs), median(crane)
	ratio := mr.Seconds() / mc.Seconds()
	res.rows = []row{
		{figure: "cold: cat 1 small file, regfs (fresh mount, empty cache)", measured: fmtDur(mr), detail: durs(regfs)},
		{figure: "cold: crane export | tar -x, then cat", measured: fmtDur(mc), detail: durs(crane)},
		{figure: "cold: ratio regfs / crane", measured: fmt.Sprintf("%.2f", ratio), target: "<= 1.0", verdict: verdict(ratio <= 1.0)},
		{figure: "cold: registry blob bytes, regfs / crane", measured: fmt.Sprintf("%s / %s", mb(medianInt(res.fetch)), mb(medianInt(craneFetch))),
			target: fmt.Sprintf("~layer %s", mb(img.layerSize)), verdict: verdict(medianInt(res.fetch) <= img.layerSize*102/100+1<<20)},
		{figure: "cold: CPU time, regfs process / crane+tar", measured: fmtDur(median(res.cpu)) + " / " + fmtDur(median(craneCPU))},
		{figure: "cold: regfs mount start (exec to mounted), not in the time above", measured: fmtDur(median(ready)), detail: durs(ready)},
	}
	return res, nil
}

// warmRegion is the stride of the warm figure's offsets: one read per
// region, so no read is served by the page cache or by a span another read
// decoded (spans are about 1 MiB of output; kernel read-ahead is smaller).
const warmRegion = 2 << 20

// benchWarm reads 4 KiB at random offsets of the big file after remounts
// with a populated cache. Each remount is a new process: the kernel page
// cache of the mount and regfs's memory start empty, and each offset lies in
// its own 2 MiB region, so every read misses both and pays for one span.
// (Dropping caches with /proc/sys/vm/drop_caches would also evict regfs's
// on-disk chunk cache and everyone else's pages on this shared machine.)
func benchWarm(ctx context.Context, e *env, img *image, cache string, log *slog.Logger) ([]row, error) {
	rng := rand.New(rand.NewPCG(e.o.seed, 0x5eed))
	regions := int(e.o.bigSize / warmRegion)
	n := min(e.o.warmN, regions)
	var lats, opens []time.Duration
	var fetched int64
	buf := make([]byte, 4096)
	for r := range e.o.warmRuns {
		p, err := e.mount(ctx, cache)
		if err != nil {
			return nil, err
		}
		e.take()
		path := filepath.Join(p.rootfs(img), img.bigFile)
		t0 := time.Now()
		f, err := os.Open(path) // the first access loads the tree from the cached index
		if err != nil {
			_, _ = p.unmount()
			return nil, fmt.Errorf("warm open: %w (log: %s)", err, tail(p.logPath))
		}
		opens = append(opens, time.Since(t0))
		var runLats []time.Duration
		for _, reg := range rng.Perm(regions)[:n] {
			off := int64(reg)*warmRegion + rng.Int64N(warmRegion-int64(len(buf)))
			t := time.Now()
			got, err := f.ReadAt(buf, off)
			d := time.Since(t)
			if err != nil || !bytes.Equal(buf[:got], img.bigBody[off:off+int64(len(buf))]) {
				f.Close()
				_, _ = p.unmount()
				return nil, fmt.Errorf("warm read at %d: %d bytes, %v, or wrong bytes", off, got, err)
			}
			runLats = append(runLats, d)
		}
		f.Close()
		c := e.take()
		fetched += c.BlobBytes
		if _, err := p.unmount(); err != nil {
			return nil, err
		}
		lats = append(lats, runLats...)
		log.Info("warm remount", "run", r, "open", opens[len(opens)-1].Round(time.Microsecond),
			"median", median(runLats).Round(time.Microsecond), "requests", c.String())
	}
	m := median(lats)
	return []row{
		{figure: fmt.Sprintf("warm: 4 KiB read at a random offset of a %s file (median of %d)", mb(e.o.bigSize), len(lats)),
			measured: fmtDur(m), target: "<= 5ms", verdict: verdict(m <= 5*time.Millisecond),
			detail: fmt.Sprintf("p10 %s, p90 %s, max %s", fmtDur(percentile(lats, 10)), fmtDur(percentile(lats, 90)), fmtDur(percentile(lats, 100)))},
		{figure: "warm: first open after remount (tree from cached index)", measured: fmtDur(median(opens)), detail: durs(opens)},
		{figure: "warm: registry blob bytes over all remounts", measured: mb(fetched), target: "0", verdict: verdict(fetched == 0)},
	}, nil
}

// findCat is the second way of reading every file: each file's bytes
// go to /dev/null (cat fails, and so the run, if a read fails).
const findCat = "find . -type f -exec cat {} + >/dev/null"

// benchReadAll times `tar -cf - . | wc -c` and `find . -type f -exec cat {} +`
// over the rootfs, each after a remount, against a klauspost gzip decode of the
// layer blob, interleaved.
func benchReadAll(ctx context.Context, e *env, img *image, cache string, log *slog.Logger) ([]row, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("own path: %w", err)
	}
	var regfs, gunzip, regfsCPU, tarCPU, gunzipCPU, finds []time.Duration
	var fetched, tarBytes int64
	for i := range e.o.pairs {
		p, err := e.mount(ctx, cache)
		if err != nil {
			return nil, err
		}
		e.take()
		fd, _, _, err := timed(ctx, findCat, p.rootfs(img))
		c := e.take()
		if _, uerr := p.unmount(); err == nil {
			err = uerr
		}
		if err != nil {
			return nil, fmt.Errorf("regfs read-all (find): %w (log: %s)", err, tail(p.logPath))
		}
		fetched += c.BlobBytes
		finds = append(finds, fd)
		log.Info("read-all regfs find+cat", "run", i, "took", fd.Round(time.Millisecond), "requests", c.String())

		if p, err = e.mount(ctx, cache); err != nil {
			return nil, err
		}
		e.take()
		d, cpu, out, err := timed(ctx, "tar -cf - . | wc -c", p.rootfs(img))
		c = e.take()
		st, uerr := p.unmount()
		if err == nil {
			err = uerr
		}
		if err != nil {
			return nil, fmt.Errorf("regfs read-all: %w (log: %s)", err, tail(p.logPath))
		}
		fetched += c.BlobBytes
		tarBytes, _ = strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
		regfs, regfsCPU, tarCPU = append(regfs, d), append(regfsCPU, st.cpu), append(tarCPU, cpu)
		log.Info("read-all regfs", "run", i, "took", d.Round(time.Millisecond), "regfs_cpu", st.cpu, "tar_cpu", cpu,
			"tar_bytes", tarBytes, "requests", c.String())

		if d, cpu, err = runGunzip(ctx, self, img); err != nil {
			return nil, err
		}
		gunzip, gunzipCPU = append(gunzip, d), append(gunzipCPU, cpu)
		log.Info("read-all gunzip", "run", i, "took", d.Round(time.Millisecond), "cpu", cpu)
	}
	mr, mg, mf := median(regfs), median(gunzip), median(finds)
	ratio := mr.Seconds() / mg.Seconds()
	return []row{
		{figure: "read-all: " + findCat, measured: fmtDur(mf), detail: durs(finds)},
		{figure: "read-all: ratio find+cat / gunzip", measured: fmt.Sprintf("%.2f", mf.Seconds()/mg.Seconds()), target: "<= 1.5",
			verdict: verdict(mf.Seconds()/mg.Seconds() <= 1.5)},
		{figure: "read-all: tar -cf - . | wc -c over the rootfs after a remount", measured: fmtDur(mr),
			detail: fmt.Sprintf("%s; tar stream %s", durs(regfs), mb(tarBytes))},
		{figure: "read-all: klauspost gzip decode of the layer", measured: fmtDur(mg), detail: durs(gunzip)},
		{figure: "read-all: CPU time, regfs process / tar+wc / gunzip", measured: fmt.Sprintf("%s / %s / %s",
			fmtDur(median(regfsCPU)), fmtDur(median(tarCPU)), fmtDur(median(gunzipCPU)))},
		{figure: "read-all: ratio tar / gunzip", measured: fmt.Sprintf("%.2f", ratio), target: "<= 1.5", verdict: verdict(ratio <= 1.5)},
		{figure: "read-all: registry blob bytes over all remounts", measured: mb(fetched), target: "0", verdict: verdict(fetched == 0)},
	}, nil
}

// runGunzip times `regfs-bench gunzip` (self) of img's layer blob, the baseline of the
// read-all and throughput figures, and checks it decoded the whole stream.
func runGunzip(ctx context.Context, self string, img *image) (wall, cpu time.Duration, err error) {
	wall, cpu, out, err := timed(ctx, shq(self)+" gunzip "+shq(img.blobPath), "")
	if err != nil {
		return 0, 0, err
	}
	if got := strings.TrimSpace(string(out)); got != strconv.FormatInt(img.tarSize, 10) {
		return 0, 0, fmt.Errorf("gunzip decoded %s bytes, want %d", got, img.tarSize)
	}
	return wall, cpu, nil
}

// rssRows reports the peak RSS of the cold regfs processes, each of which
// indexed the whole layer.
func rssRows(cold *coldResult, img *image) []row {
	peak := slicesMax(cold.rss) * 1024
	return []row{{
		figure:   fmt.Sprintf("peak RSS of regfs indexing a %s (uncompressed) layer, max of %d", mb(img.tarSize), len(cold.rss)),
		measured: mib(peak) + " MiB", target: "<= 150 MiB", verdict: verdict(peak <= 150<<20 && img.tarSize >= 200e6),
		detail: "per run (MiB): " + joinInts(cold.rss, func(k int64) string { return mib(k * 1024) }),
	}}
}

// shq quotes s for bash.
func shq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
