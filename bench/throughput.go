package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// benchThroughput measures issue 4's "index pass throughput on a gzip layer:
// at least 0.8x of klauspost's plain gzip decode of the same blob". Each pair
// is a fresh regfs (empty cache, --log-level debug) whose first access to
// rootfs/ indexes the layer, and `regfs-bench gunzip` of the blob file.
// regfs's time is the elapsed time of its "layer indexed" log line (the pass
// alone: fetch, hash, inflate and tar parse); the time from the first access
// to its answer is reported beside it. The timed passes talk to the registry
// directly: the counting proxy, which runs in this process, would take its
// share of the two cores the pass overlaps fetch, hash and inflate on. One
// more pass, through the proxy, counts the bytes a pass fetches.
func benchThroughput(ctx context.Context, b *bench) ([]row, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("own path: %w", err)
	}
	var pass, access, gunzip []time.Duration
	for i := range b.newPairs() {
		el, a, _, err := indexPass(ctx, b, i, false)
		if err != nil {
			return nil, err
		}
		pass, access = append(pass, el), append(access, a)
		b.log.Info("throughput regfs", "run", i, "pass", el.Round(time.Millisecond), "access", a.Round(time.Millisecond))

		t0, _, err := runGunzip(ctx, self, b.img)
		if err != nil {
			return nil, err
		}
		gunzip = append(gunzip, t0)
		b.log.Info("throughput gunzip", "run", i, "took", t0.Round(time.Millisecond))
	}
	// One more pass, through the proxy, not timed: the bytes a pass fetches.
	el, _, fetchedBytes, err := indexPass(ctx, b, len(pass), true)
	if err != nil {
		return nil, err
	}
	fetched := []int64{fetchedBytes}
	b.log.Info("throughput regfs, counted", "pass", el.Round(time.Millisecond))
	rate := func(d time.Duration) float64 { return float64(b.img.tarSize) / 1e6 / d.Seconds() }
	mp, mg := median(pass), median(gunzip)
	ratio := rate(mp) / rate(mg)
	return []row{
		{figure: "throughput: regfs index pass (from its log), uncompressed MB/s", measured: fmt.Sprintf("%.0f MB/s (%s)", rate(mp), fmtDur(mp)),
			detail: fmt.Sprintf("%s; first access to its answer: %s", durs(pass), durs(access))},
		{figure: "throughput: klauspost gzip decode of the blob file, uncompressed MB/s", measured: fmt.Sprintf("%.0f MB/s (%s)", rate(mg), fmtDur(mg)), detail: durs(gunzip)},
		{figure: "throughput: ratio index pass / gzip decode", measured: fmt.Sprintf("%.2f", ratio), target: ">= 0.8", verdict: verdict(ratio >= 0.8)},
		{figure: "throughput: registry blob bytes of an index pass (a counted run)", measured: mb(slicesMax(fetched)),
			target: "~layer " + mb(b.img.layerSize), verdict: verdict(slicesMax(fetched) >= b.img.layerSize && slicesMax(fetched) <= b.img.layerSize*102/100+1<<20)},
	}, nil
}

// indexPass runs a fresh regfs (empty cache number i, --log-level debug) whose first
// stat in rootfs/ indexes the layer, fetching from the registry directly or, with
// counted, through the counting proxy. It returns the pass's time from the log, the
// time of that first access, and the blob bytes the proxy counted.
func indexPass(ctx context.Context, b *bench, i int, counted bool) (pass, access time.Duration, fetched int64, err error) {
	extra := []string{"--log-level", "debug"}
	if !counted {
		extra = append(extra, "--registry", b.e.direct)
	}
	cache := filepath.Join(b.o.work, fmt.Sprintf("throughput-cache-%d", i))
	defer os.RemoveAll(cache)
	p, err := b.e.mount(ctx, cache, extra...)
	if err != nil {
		return 0, 0, 0, err
	}
	b.e.take()
	t := time.Now()
	_, err = os.Stat(filepath.Join(p.rootfs(b.img), b.img.smallFile))
	access = time.Since(t)
	c := b.e.take()
	if _, uerr := p.unmount(); err == nil {
		err = uerr
	}
	if err != nil {
		return 0, 0, 0, fmt.Errorf("throughput: first access: %w (log: %s)", err, tail(p.logPath))
	}
	pass, err = indexedLine(p.logPath, b.img.layerDigest, b.img.layerSize, b.img.tarSize)
	return pass, access, c.BlobBytes, err
}

// indexedLine finds layers' debug line "layer indexed" of digest in a regfs
// log, checks its byte counts and returns its elapsed time.
func indexedLine(path, digest string, size, uncompressed int64) (time.Duration, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("regfs log: %w", err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		line := s.Text()
		if !strings.Contains(line, `msg="layer indexed"`) || !strings.Contains(line, "digest="+digest) {
			continue
		}
		kv := logFields(line)
		if kv["bytes"] != strconv.FormatInt(size, 10) || kv["uncompressed"] != strconv.FormatInt(uncompressed, 10) {
			return 0, fmt.Errorf("regfs log: layer indexed with bytes=%s uncompressed=%s, want %d and %d", kv["bytes"], kv["uncompressed"], size, uncompressed)
		}
		d, err := time.ParseDuration(kv["elapsed"])
		if err != nil {
			return 0, fmt.Errorf("regfs log: elapsed %q: %w", kv["elapsed"], err)
		}
		return d, nil
	}
	if err := s.Err(); err != nil {
		return 0, fmt.Errorf("regfs log: %w", err)
	}
	return 0, fmt.Errorf("regfs log %s has no \"layer indexed\" line for %s (is it logged at debug level still?)", path, digest)
}

// logFields splits a slog text line into its key=value pairs (unquoted values
// only; that is all indexedLine needs).
func logFields(line string) map[string]string {
	kv := map[string]string{}
	for _, f := range strings.Fields(line) {
		if k, v, ok := strings.Cut(f, "="); ok {
			kv[k] = v
		}
	}
	return kv
}

// throughputMethod explains how the throughput figures were taken.
const throughputMethod = `  throughput: pairs of a fresh regfs (empty cache, --log-level debug) whose first stat in
  rootfs/ indexes the layer, and 'regfs-bench gunzip' of the blob file (klauspost/compress to
  io.Discard, its own process). regfs's time is the elapsed time of its "layer indexed" log
  line: the pass alone (fetch from docker-registry, sha256, inflate, tar parse). The timed
  passes fetch from the registry directly, not through this program's counting proxy, whose
  copying would take CPU from the two cores the pass runs on; one more pass, through the
  proxy, counts the bytes. MB/s are of the uncompressed stream for both.
`
