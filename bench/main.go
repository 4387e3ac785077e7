// Command regfs-bench measures the figures of issues 3 ("rootfs") and 4 ("fetch
// only what is read") against a real registry on loopback, with real regfs
// processes and real FUSE mounts. The figures come in groups; -figures picks
// some (default: all, in this order).
//
// Group rootfs (issue 3):
//
//   - cold: `cat` of one small file of a single-gzip-layer platform (~100 MB
//     compressed) through a fresh `regfs mount` with an empty cache, against
//     `crane export --platform P IMAGE - | tar -x` of the same platform;
//   - warm: 4 KiB reads at random offsets of a 50 MB file of that layer after a
//     remount with a populated cache (index and chunks on disk);
//   - read-all: `tar -cf - . | wc -c`, and `find . -type f -exec cat {} +`
//     (the two ways), over the whole rootfs after a remount, against
//     a plain klauspost gzip decode of the layer blob;
//   - peak RSS of the regfs process (GNU time -v) while indexing the layer.
//
// Issue 4, one group each (see the file of the same name):
//
//   - refetch: after a cold index pass with a 32 MiB cache (chunks evicted,
//     index kept), 4 KiB reads at random offsets fetch at most 2 spans of
//     compressed bytes;
//   - concurrent: 64 readers of distinct pages of one cold span make one
//     registry request;
//   - diff: diff -r of two platforms sharing a base layer, through one cold
//     mount, against crane export of both and diff -r;
//   - throughput: the index pass's decode rate against a plain gzip decode;
//   - estargz: cat of a 4 KiB file of an eStargz layer fetches footer, TOC
//     and that file's chunks only;
//   - bound: a 1 GiB file of random bytes read whole through a 128 MiB cache,
//     whose disk use is sampled throughout.
//
// Runs of the two sides of a comparison are interleaved (A B A B …) and
// summarised by their medians. Bytes are counted at the registry side by a
// proxy in this process (internal/testenv.Counter) in front of Debian's
// docker-registry, which runs as its own process.
//
// scripts/bench.sh (`make bench`) installs the tools, finds or makes the
// Debian rootfs and runs this program. It is Linux-only and needs root for
// FUSE.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// options are the command-line settings of a benchmark run.
type options struct {
	regfs    string // the regfs binary
	crane    string // the crane binary
	registry string // the docker-registry binary
	timeBin  string // GNU time
	rootfs   string // a Debian rootfs directory (debootstrap)
	work     string // scratch directory, removed at the end unless keep
	keep     bool
	pairs    int // interleaved pairs per comparison
	warmRuns int // remounts for the warm figure
	warmN    int // reads per warm remount
	bigSize  int64
	padTo    int64 // wanted compressed layer size
	logLevel string
	seed     uint64
	perf     bool            // record every regfs process with perf (diagnosis)
	figures  map[string]bool // the groups of figures to measure
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "gunzip" {
		// The baseline of the read-all figure, run as its own process as
		// regfs is.
		if err := cmdGunzip(os.Args[2:], os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "regfs-bench gunzip:", err)
			os.Exit(1)
		}
		return
	}
	var o options
	flag.StringVar(&o.regfs, "regfs", "bin/regfs", "regfs binary")
	flag.StringVar(&o.crane, "crane", "crane", "crane binary")
	flag.StringVar(&o.registry, "registry", "/usr/bin/docker-registry", "docker-registry binary")
	flag.StringVar(&o.timeBin, "time", "/usr/bin/time", "GNU time binary")
	flag.StringVar(&o.rootfs, "rootfs", "", "Debian rootfs directory to build the image from (required)")
	flag.StringVar(&o.work, "work", "", "scratch directory (default: a new temporary directory)")
	flag.BoolVar(&o.keep, "keep", false, "keep the scratch directory (logs, caches) at the end")
	flag.IntVar(&o.pairs, "pairs", 7, "interleaved pairs (A B) per comparison (diff and throughput: at most 5)")
	flag.IntVar(&o.warmRuns, "warm-runs", 6, "remounts for the warm random-read figure")
	flag.IntVar(&o.warmN, "warm-reads", 12, "4 KiB reads per warm remount, each in its own 2 MiB region")
	flag.Int64Var(&o.bigSize, "big-size", 50<<20, "size of the large file read at random offsets")
	flag.Int64Var(&o.padTo, "pad-to", 100<<20, "pad the layer with copies of rootfs files up to about this compressed size")
	flag.StringVar(&o.logLevel, "log-level", "info", "log level of the regfs processes")
	flag.Uint64Var(&o.seed, "seed", 1, "seed of the random offsets")
	figures := flag.String("figures", "all", "comma-separated groups of figures to measure: all, or some of "+strings.Join(groupNames(), ","))
	flag.BoolVar(&o.perf, "perf", false, "run every regfs under `perf record -g` (profiles next to the mount logs; implies -keep; the RSS figure then includes perf)")
	flag.Parse()
	if o.rootfs == "" {
		fmt.Fprintln(os.Stderr, "regfs-bench: -rootfs is required")
		os.Exit(2)
	}
	var err error
	if o.figures, err = parseFigures(*figures); err != nil {
		fmt.Fprintln(os.Stderr, "regfs-bench:", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, os.Stdout, log); err != nil {
		fmt.Fprintln(os.Stderr, "regfs-bench:", err)
		os.Exit(1)
	}
}

// run sets up the registry and the image, measures every figure, and prints
// the table to out. A figure that misses its target is no error: the table
// says so.
func run(ctx context.Context, o options, out io.Writer, log *slog.Logger) (err error) {
	for _, p := range []*string{&o.regfs, &o.crane, &o.registry, &o.timeBin, &o.rootfs} {
		if *p, err = absTool(*p); err != nil {
			return err
		}
	}
	if o.work == "" {
		if o.work, err = os.MkdirTemp("", "regfs-bench-"); err != nil {
			return fmt.Errorf("scratch directory: %w", err)
		}
	}
	if o.perf {
		o.keep = true
	}
	if !o.keep {
		defer os.RemoveAll(o.work)
	} else {
		log.Info("keeping scratch directory", "dir", o.work)
	}
	env, err := startEnv(ctx, o, log)
	if err != nil {
		return err
	}
	defer env.close()

	start := time.Now()
	img, err := buildImage(ctx, o, env, log)
	if err != nil {
		return err
	}
	log.Info("image ready", "ref", img.ref, "layer", img.layerDigest, "compressed", img.layerSize,
		"entries", img.entries, "took", time.Since(start).Round(time.Millisecond))

	b := &bench{o: o, e: env, img: img, log: log}
	var rows []row
	var methods strings.Builder
	var failed []error
	for _, g := range groups {
		if !o.figures[g.name] || ctx.Err() != nil {
			continue
		}
		log.Info("measuring", "figures", g.name)
		t := time.Now()
		r, err := g.run(ctx, b)
		if err != nil {
			// Wrong bytes or a broken run: say so in the table, go on with
			// the other groups, and fail at the end.
			err = fmt.Errorf("%s figures: %w", g.name, err)
			log.Error("figures failed", "figures", g.name, "err", err)
			failed = append(failed, err)
			r = append(r, row{figure: g.name + ": run failed (see details)", measured: "error", target: "no error", verdict: "FAIL", detail: err.Error()})
		}
		log.Info("measured", "figures", g.name, "took", time.Since(t).Round(time.Millisecond))
		rows = append(rows, r...)
		methods.WriteString(g.method)
	}
	printTable(out, img, rows, time.Since(start), methods.String())
	return errors.Join(append(failed, ctx.Err())...)
}

// bench is what every group of figures measures with. Its fields are set
// once before the first group runs; the lazily computed parts (layerScan)
// are used from one goroutine.
type bench struct {
	o   options
	e   *env
	img *image
	log *slog.Logger

	scan *layerScan // the gzip layer's checkpoints, once computed
}

// group is a group of figures that -figures can select.
type group struct {
	name   string
	run    func(ctx context.Context, b *bench) ([]row, error)
	method string // how the figures were taken, printed under the table
}

// groups lists the groups in the order they run. bound runs last: it pushes a
// 1 GiB layer that nothing else reads.
var groups = []group{
	{"rootfs", benchRootfs, rootfsMethod},
	{"refetch", benchRefetch, refetchMethod},
	{"concurrent", benchConcurrent, concurrentMethod},
	{"diff", benchDiff, diffMethod},
	{"throughput", benchThroughput, throughputMethod},
	{"estargz", benchEStargz, estargzMethod},
	{"memory", benchMemory, memoryMethod},
	{"bound", benchBound, boundMethod},
}

// newPairs is the number of interleaved pairs of issue 4's comparisons
// (diff, throughput): -pairs, at most 5, as a pair of the diff figure takes
// seconds.
func (b *bench) newPairs() int { return max(1, min(b.o.pairs, 5)) }

// groupNames returns the names of the groups in run order.
func groupNames() []string {
	names := make([]string, len(groups))
	for i, g := range groups {
		names[i] = g.name
	}
	return names
}

// parseFigures parses -figures: "all" or a comma list of group names.
func parseFigures(s string) (map[string]bool, error) {
	set := map[string]bool{}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		switch {
		case f == "all":
			for _, g := range groups {
				set[g.name] = true
			}
		case slices.Contains(groupNames(), f):
			set[f] = true
		case f != "":
			return nil, fmt.Errorf("-figures: unknown group %q (have all, %s)", f, strings.Join(groupNames(), ", "))
		}
	}
	if len(set) == 0 {
		return nil, errors.New("-figures: no group given")
	}
	return set, nil
}

// benchRootfs measures issue 3's figures: cold, warm, read-all and peak RSS.
func benchRootfs(ctx context.Context, b *bench) ([]row, error) {
	cold, err := benchCold(ctx, b.e, b.img, b.log)
	if err != nil {
		return nil, fmt.Errorf("cold figure: %w", err)
	}
	rows := cold.rows
	warm, err := benchWarm(ctx, b.e, b.img, cold.cache, b.log)
	if err != nil {
		return nil, fmt.Errorf("warm figure: %w", err)
	}
	rows = append(rows, warm...)
	all, err := benchReadAll(ctx, b.e, b.img, cold.cache, b.log)
	if err != nil {
		return nil, fmt.Errorf("read-all figure: %w", err)
	}
	rows = append(rows, all...)
	return append(rows, rssRows(cold, b.img)...), nil
}

// absTool resolves a binary or directory to an absolute path (through PATH for
// a bare name).
func absTool(p string) (string, error) {
	if filepath.Base(p) == p {
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			return lookPath(p)
		}
	}
	a, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("path %s: %w", p, err)
	}
	if _, err := os.Stat(a); err != nil {
		return "", fmt.Errorf("need %s: %w", p, err)
	}
	return a, nil
}
