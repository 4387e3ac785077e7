// Command regfs-bench measures the figures of issue 3 ("rootfs") against a real
// registry on loopback, with real regfs processes and real FUSE mounts:
//
//   - cold: `cat` of one small file of a single-gzip-layer platform (~100 MB
//     compressed) through a fresh `regfs mount` with an empty cache, against
//     `crane export --platform P IMAGE - | tar -x` of the same platform;
//   - warm: 4 KiB reads at random offsets of a 50 MB file of that layer after a
//     remount with a populated cache (index and chunks on disk);
//   - read-all: `tar -cf - . | wc -c` over the whole rootfs after a remount,
//     against a plain klauspost gzip decode of the layer blob;
//   - peak RSS of the regfs process (GNU time -v) while indexing the layer.
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
	perf     bool // record every regfs process with perf (diagnosis)
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
	flag.IntVar(&o.pairs, "pairs", 7, "interleaved pairs (A B) per comparison")
	flag.IntVar(&o.warmRuns, "warm-runs", 6, "remounts for the warm random-read figure")
	flag.IntVar(&o.warmN, "warm-reads", 12, "4 KiB reads per warm remount, each in its own 2 MiB region")
	flag.Int64Var(&o.bigSize, "big-size", 50<<20, "size of the large file read at random offsets")
	flag.Int64Var(&o.padTo, "pad-to", 100<<20, "pad the layer with copies of rootfs files up to about this compressed size")
	flag.StringVar(&o.logLevel, "log-level", "info", "log level of the regfs processes")
	flag.Uint64Var(&o.seed, "seed", 1, "seed of the random offsets")
	flag.BoolVar(&o.perf, "perf", false, "run every regfs under `perf record -g` (profiles next to the mount logs; implies -keep; the RSS figure then includes perf)")
	flag.Parse()
	if o.rootfs == "" {
		fmt.Fprintln(os.Stderr, "regfs-bench: -rootfs is required")
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

	var rows []row
	cold, err := benchCold(ctx, env, img, log)
	if err != nil {
		return fmt.Errorf("cold figure: %w", err)
	}
	rows = append(rows, cold.rows...)
	warm, err := benchWarm(ctx, env, img, cold.cache, log)
	if err != nil {
		return fmt.Errorf("warm figure: %w", err)
	}
	rows = append(rows, warm...)
	all, err := benchReadAll(ctx, env, img, cold.cache, log)
	if err != nil {
		return fmt.Errorf("read-all figure: %w", err)
	}
	rows = append(rows, all...)
	rows = append(rows, rssRows(cold, img)...)
	printTable(out, img, rows, time.Since(start))
	return nil
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
