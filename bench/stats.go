package main

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// row is one line of the result table. A row without a target is
// information only.
type row struct {
	figure   string
	measured string
	target   string
	verdict  string // "pass", "FAIL" or "" (no target)
	detail   string // per-run values, printed under the table
}

func verdict(ok bool) string {
	if ok {
		return "pass"
	}
	return "FAIL"
}

// median returns the median of xs (the mean of the two middle values for an
// even count); 0 for none.
func median[T cmp.Ordered](xs []T) T {
	return percentileOf(xs, 50)
}

// medianInt is median for int64s.
func medianInt(xs []int64) int64 { return median(xs) }

// percentile returns the p-th percentile of ds (nearest rank, p in 0..100;
// 50 is the median).
func percentile(ds []time.Duration, p int) time.Duration { return percentileOf(ds, p) }

func percentileOf[T cmp.Ordered](xs []T, p int) T {
	var zero T
	if len(xs) == 0 {
		return zero
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if p == 50 && len(s)%2 == 0 {
		return mid(s[len(s)/2-1], s[len(s)/2])
	}
	i := (p*len(s) + 99) / 100
	return s[min(max(i-1, 0), len(s)-1)]
}

// mid returns the mean of two values for numbers, the lower one otherwise.
func mid[T cmp.Ordered](a, b T) T {
	switch x := any(a).(type) {
	case time.Duration:
		return any(x + (any(b).(time.Duration)-x)/2).(T)
	case int64:
		return any(x + (any(b).(int64)-x)/2).(T)
	}
	return a
}

func slicesMax(xs []int64) int64 {
	if len(xs) == 0 {
		return 0
	}
	return slices.Max(xs)
}

// fmtDur prints a duration with 3 significant digits or so.
func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond))
	}
}

// durs lists run times in run order.
func durs(ds []time.Duration) string {
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = fmtDur(d)
	}
	return "runs: " + strings.Join(parts, " ")
}

func joinInts(xs []int64, f func(int64) string) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = f(x)
	}
	return strings.Join(parts, " ")
}

func slicesMin(xs []int64) int64 {
	if len(xs) == 0 {
		return 0
	}
	return slices.Min(xs)
}

// kb prints a byte count in kB (10^3).
func kb(n int64) string { return fmt.Sprintf("%.0f kB", float64(n)/1e3) }

// mb prints a byte count in MB (10^6), the unit of the figures.
func mb(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/1e6) }

// mib prints a byte count in MiB, without the unit.
func mib(n int64) string { return fmt.Sprintf("%.1f", float64(n)/(1<<20)) }

// printTable writes the figures, then the per-run details, then methods (how
// the figures were taken).
func printTable(w io.Writer, img *image, rows []row, took time.Duration, methods string) {
	fmt.Fprintf(w, "\nregfs benchmark (issues 3 and 4): image %s, platform %s, one gzip layer of %s (%s uncompressed, %d entries); took %s\n\n",
		img.repo+":"+img.tag, img.platform, mb(img.layerSize), mb(img.tarSize), img.entries, took.Round(time.Second))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\tmeasured\ttarget\tresult")
	fmt.Fprintln(tw, "------\t--------\t------\t------")
	pass, fail := 0, 0
	for _, r := range rows {
		target, v := r.target, r.verdict
		if target == "" {
			target, v = "-", "info"
		}
		switch v {
		case "pass":
			pass++
		case "FAIL":
			fail++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.figure, r.measured, target, v)
	}
	tw.Flush()
	fmt.Fprintln(w, "\ndetails:")
	for _, r := range rows {
		if r.detail != "" {
			fmt.Fprintf(w, "  %s: %s\n", r.figure, r.detail)
		}
	}
	fmt.Fprint(w, "\nmethod:\n  Comparisons alternate their two sides (A B A B …) and compare medians. Every regfs run is a new\n"+
		"  'regfs mount' process under GNU time -v; the registry is Debian's docker-registry in its own\n"+
		"  process, behind a counting proxy in regfs-bench that every client (regfs, crane) goes through;\n"+
		"  bytes are the blob response bytes that proxy counted.\n"+methods)
	fmt.Fprintf(w, "\nbench: %d passed, %d failed\n", pass, fail)
}

// rootfsMethod explains how the rootfs group's figures were taken.
const rootfsMethod = `  cold: new empty cache per run; the time is the 'cat' alone (the mount is already up, as for a
  user); crane's includes writing the extracted tree to disk, as 'crane export | tar -x' does.
  warm: remounts with the last cold run's cache (index and chunks on disk); each remount is a new
  process, so neither the kernel page cache of the mount nor regfs's memory holds anything; each
  4 KiB pread lies in its own 2 MiB region of the file, so no read is served by an earlier read's
  page cache or decoded span. drop_caches was not used: it would also evict regfs's on-disk chunks
  and every other process's pages on this shared machine.
  read-all: remount with the same cache, then 'tar -cf - . | wc -c' in rootfs/, against
  'regfs-bench gunzip' (klauspost/compress gzip of the layer blob file to io.Discard).
  peak RSS: GNU time's maximum resident set size of each cold regfs process, which indexed the
  whole layer.
`
