package main

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/regfs/regfs/internal/testenv"
)

const (
	concurrentReaders = 64
	concurrentTrials  = 3 // remounts, each reading another cold span
	// concurrentSettle is how long the bench waits after the readers before
	// taking the counts, so that a fetch still running is counted.
	concurrentSettle = 200 * time.Millisecond
)

// benchConcurrent measures issue 4's "64 concurrent readers of one cold chunk:
// exactly one registry request". After the eviction setup, each trial
// remounts the evicted cache and starts 64 goroutines at once, each reading
// 4 KiB at its own page-aligned offset of the big file, all inside one span
// (between two restart points) whose compressed bytes are not cached. Distinct
// pages matter: reads of one page are merged by the kernel's page cache
// before they reach regfs.
func benchConcurrent(ctx context.Context, b *bench) ([]row, error) {
	s, err := b.layerScan()
	if err != nil {
		return nil, err
	}
	cache, err := b.evictedCache(ctx, "concurrent-cache")
	if err != nil {
		return nil, err
	}
	// Spans wholly inside the big file (the layer's first bytes: the setup's
	// pass leaves only the last 32 MiB of chunks cached) with room for every
	// reader's page.
	var cand []int
	for i := range s.cps {
		lo, hi, _, _ := s.spanOf(i)
		if lo >= s.bigOff && hi <= s.bigOff+b.o.bigSize && (hi-lo)/4096 >= concurrentReaders+2 {
			cand = append(cand, i)
		}
	}
	if len(cand) < concurrentTrials {
		return nil, fmt.Errorf("only %d spans of the big file fit %d readers", len(cand), concurrentReaders)
	}
	rng := rand.New(rand.NewPCG(b.o.seed, 0xc0c0))
	picks := rng.Perm(len(cand))[:concurrentTrials]

	var inSpan, all []int64
	var took []time.Duration
	var details []string
	for t, pick := range picks {
		i := cand[pick]
		lo, hi, in0, in1 := s.spanOf(i)
		first := (lo - s.bigOff + 4095) &^ 4095
		last := (hi - s.bigOff - 4096) &^ 4095
		pages := rng.Perm(int((last-first)/4096 + 1))[:concurrentReaders]

		p, err := b.e.mount(ctx, cache, "--cache-size", fmt.Sprint(evictCacheSize))
		if err != nil {
			return nil, err
		}
		f, err := os.Open(filepath.Join(p.rootfs(b.img), b.img.bigFile))
		if err != nil {
			_, _ = p.unmount()
			return nil, fmt.Errorf("concurrent open: %w (log: %s)", err, tail(p.logPath))
		}
		b.e.take()
		d, rerr := readConcurrently(f, b.img.bigBody, first, pages)
		time.Sleep(concurrentSettle)
		c := b.e.take()
		f.Close()
		if _, uerr := p.unmount(); rerr == nil {
			rerr = uerr
		}
		if rerr != nil {
			return nil, fmt.Errorf("concurrent trial %d: %w (log: %s)", t, rerr, tail(p.logPath))
		}
		n, ranges := blobGETs(c, in0, in1)
		inSpan, all, took = append(inSpan, n), append(all, int64(c.N("GET", testenv.KindBlob))), append(took, d)
		details = append(details, fmt.Sprintf("trial %d: span %d (compressed %d-%d): %s", t, i, in0, in1, strings.Join(ranges, ", ")))
		b.log.Info("concurrent trial", "trial", t, "span", i, "took", d.Round(time.Microsecond), "requests", c.String())
	}
	ok := true
	for _, n := range inSpan {
		ok = ok && n == 1
	}
	return []row{
		{figure: fmt.Sprintf("concurrent: blob GETs for one cold span read by %d readers at once (per trial)", concurrentReaders),
			measured: joinInts(inSpan, itoa), target: "1 each", verdict: verdict(ok), detail: strings.Join(details, "; ")},
		{figure: "concurrent: all blob GETs during the reads (per trial)", measured: joinInts(all, itoa)},
		{figure: fmt.Sprintf("concurrent: time for the %d reads (median)", concurrentReaders), measured: fmtDur(median(took)), detail: durs(took)},
	}, nil
}

// readConcurrently reads 4 KiB at first+4096*page for each page, all at once,
// and checks every read against want.
func readConcurrently(f *os.File, want []byte, first int64, pages []int) (time.Duration, error) {
	start := make(chan struct{})
	errs := make([]error, len(pages))
	var wg sync.WaitGroup
	for g, pg := range pages {
		wg.Add(1)
		go func() {
			defer wg.Done()
			off := first + int64(pg)*4096
			buf := make([]byte, 4096)
			<-start
			n, err := f.ReadAt(buf, off)
			if err != nil || !bytes.Equal(buf[:n], want[off:off+4096]) {
				errs[g] = fmt.Errorf("read at %d: %d bytes, %v, or wrong bytes", off, n, err)
			}
		}()
	}
	t := time.Now()
	close(start)
	wg.Wait()
	return time.Since(t), errors.Join(errs...)
}

// blobGETs counts the blob GETs of c whose range overlaps [in0, in1) and
// describes every blob GET.
func blobGETs(c testenv.Counts, in0, in1 int64) (int64, []string) {
	var n int64
	var all []string
	for _, r := range c.Requests {
		if r.Method != "GET" || r.Kind != testenv.KindBlob {
			continue
		}
		lo, hi, ok := parseRange(r.Range)
		if !ok || lo < in1 && hi > in0 {
			n++
		}
		all = append(all, fmt.Sprintf("%q %d bytes", cmp.Or(r.Range, "whole"), r.Bytes))
	}
	return n, all
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// parseRange parses a Range header "bytes=a-b" or "bytes=a-" into [lo, hi);
// ok is false for anything else (a whole-blob GET).
func parseRange(h string) (lo, hi int64, ok bool) {
	spec, found := strings.CutPrefix(h, "bytes=")
	a, z, dash := strings.Cut(spec, "-")
	if !found || !dash || strings.Contains(spec, ",") {
		return 0, 0, false
	}
	lo, err := strconv.ParseInt(a, 10, 64)
	if err != nil {
		return 0, 0, false
	}
	if z == "" {
		return lo, 1 << 62, true
	}
	end, err := strconv.ParseInt(z, 10, 64)
	if err != nil || end < lo {
		return 0, 0, false
	}
	return lo, end + 1, true
}

// concurrentMethod explains how the concurrent figures were taken.
const concurrentMethod = `  concurrent: after the eviction setup (as for refetch), 3 remounts; in each, 64 goroutines
  released at once pread 4 KiB at distinct page-aligned offsets of the big file, all inside one
  span (between two restart points) of the file, whose chunks the setup evicted (the big file
  is the layer's first entry). Counted: blob GETs whose range overlaps that span's compressed bytes (200 ms after
  the reads end); every blob GET is listed in the details.
`
