package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/regfs/regfs/resolver"
)

// Config is what `regfs mount` is told by its flags.
type Config struct {
	Mountpoint string
	Registry   string
	Insecure   []string
	Mirrors    []string // [REGISTRY=]HOST[:PORT], parsed against Registry at mount
	CAFile     string
	Rate       float64
	Burst      int
	CacheDir   string
	CacheSize  int64
	TagTTL     time.Duration
	Timeout    time.Duration
	AllowOther bool
	Rebase     bool
	PinnedTOC  bool
	LogLevel   slog.Level
	Demo       bool
}

// usageError is a mistake in the command line: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// mountFlags returns the flag set of `regfs mount`, filling c.
func mountFlags(c *Config) (*pflag.FlagSet, *string, *string) {
	f := pflag.NewFlagSet("mount", pflag.ContinueOnError)
	f.SortFlags = false
	// Each usage is examples first, then what the flag does, so that pflag's
	// "(default …)" ends the description; its first `word` is the value name.
	f.StringVar(&c.Registry, "registry", "docker.io",
		"e.g. --registry ghcr.io, --registry localhost:5000\n"+
			"the `HOST[:PORT]` that names without a host go to")
	f.StringArrayVar(&c.Insecure, "insecure", nil,
		"e.g. --insecure registry.lan:5000 --insecure 10.0.0.5\n"+
			"allow plain HTTP to this `HOST[:PORT]` (repeatable; loopback hosts always are)")
	f.StringArrayVar(&c.Mirrors, "mirror", nil,
		"e.g. --mirror mirror.example:5000, --mirror ghcr.io=ghcr-cache.example,\n"+
			"--mirror http://10.0.0.5:5000 (plain HTTP)\n"+
			"pull through `[REGISTRY=]HOST[:PORT]` first, in order, falling back to the registry;\n"+
			"listings and the registry's credentials never go to a mirror (repeatable; without\n"+
			"REGISTRY= it mirrors --registry)")
	f.StringVar(&c.CAFile, "ca-file", "",
		"e.g. --ca-file /usr/local/share/ca-certificates/corp.crt\n"+
			"PEM `FILE` of CA certificates to trust besides the system's (SSL_CERT_FILE also works)")
	f.Float64Var(&c.Rate, "manifest-rate", resolver.DefaultManifestRate,
		"e.g. --manifest-rate 2 under a tight pull limit, --manifest-rate 0 for your own registry\n"+
			"at most `N` manifest GETs per second per registry, so that a crawl (find, updatedb, a\n"+
			"scanner) cannot spend a pull limit; 0: unlimited")
	f.IntVar(&c.Burst, "manifest-burst", resolver.DefaultManifestBurst,
		"e.g. --manifest-burst 5\n"+
			"`N` manifest GETs allowed at once above --manifest-rate")
	f.StringVar(&c.CacheDir, "cache-dir", defaultCacheDir(),
		"e.g. --cache-dir /var/cache/regfs\n"+
			"on-disk cache `DIR`, kept across mounts, used by one mount at a time")
	size := f.String("cache-size", "10GiB",
		"e.g. --cache-size 512MiB, --cache-size 2TB\n"+
			"bound the on-disk cache to `SIZE` (KiB, MiB, GiB, TiB, KB, MB, GB, TB; at least 16MiB)")
	f.DurationVar(&c.TagTTL, "tag-ttl", 60*time.Second,
		"e.g. --tag-ttl 5s to follow a tag as it moves, --tag-ttl 1h\n"+
			"keep a tag's answer (and a listing) for `DURATION` before asking the registry again")
	f.DurationVar(&c.Timeout, "timeout", 30*time.Second,
		"e.g. --timeout 2m on a slow link\n"+
			"fail a registry request that makes no progress for `DURATION` (the read gets EIO)")
	f.BoolVar(&c.AllowOther, "allow-other", false,
		"e.g. --allow-other for a scanner running as another user\n"+
			"let other users read the mount (when not root: needs user_allow_other in /etc/fuse.conf)")
	f.BoolVar(&c.Rebase, "rebase-symlinks", false,
		"e.g. --rebase-symlinks, then file -L /mnt/reg/alpine/latest/linux/arm64/v8/rootfs/bin/sh\n"+
			"show absolute symlink targets under their own rootfs/, so that plain tools (cat, file,\n"+
			"diff -r) read the image's file, not the host's")
	f.BoolVar(&c.PinnedTOC, "pinned-toc-only", false,
		"e.g. --pinned-toc-only when every byte served must trace back to a digest\n"+
			"read an eStargz or zstd:chunked layer lazily only when its manifest annotations pin its\n"+
			"TOC; other layers are read whole and checked against their digest")
	level := f.String("log-level", "info",
		"e.g. --log-level debug to see mirror fallbacks and rate-limit waits\n"+
			"log at `LEVEL` on stderr: debug, info, warn or error")
	f.BoolVar(&c.Demo, "demo", false,
		"e.g. regfs mount --demo /mnt/reg; ls /mnt/reg/demo/hello/1.0/linux/\n"+
			"serve a built-in sample registry instead of --registry (no network needed)")
	return f, size, level
}

// parseMount parses the arguments of `regfs mount`.
func parseMount(args []string) (*Config, error) {
	c := &Config{}
	f, size, level := mountFlags(c)
	f.Usage = func() {}
	if err := f.Parse(args); err != nil {
		return nil, usageError{err}
	}
	if f.NArg() != 1 {
		return nil, usageError{errors.New("mount takes exactly one MOUNTPOINT")}
	}
	c.Mountpoint = f.Arg(0)
	n, err := parseSize(*size)
	if err != nil {
		return nil, usageError{fmt.Errorf("--cache-size: %w", err)}
	}
	c.CacheSize = n
	if err := c.LogLevel.UnmarshalText([]byte(*level)); err != nil {
		return nil, usageError{fmt.Errorf("--log-level: %w", err)}
	}
	return c, c.Validate()
}

// Validate checks values that flags alone cannot.
func (c *Config) Validate() error {
	switch {
	case c.Registry == "" || strings.ContainsAny(c.Registry, "/ "):
		return usageError{fmt.Errorf("--registry %q: want HOST[:PORT]", c.Registry)}
	case c.CacheDir == "":
		return usageError{errors.New("--cache-dir: no directory (set it, or HOME or XDG_CACHE_HOME)")}
	case c.CacheSize < 16<<20:
		return usageError{fmt.Errorf("--cache-size %d: at least 16MiB", c.CacheSize)}
	case c.TagTTL <= 0:
		return usageError{errors.New("--tag-ttl: must be positive (1s re-checks tags almost every time)")}
	case c.Timeout <= 0:
		return usageError{errors.New("--timeout: must be positive")}
	case c.Rate < 0 || c.Burst < 0:
		return usageError{errors.New("--manifest-rate and --manifest-burst must not be negative")}
	}
	if _, err := c.mirrors(); err != nil {
		return usageError{err}
	}
	for _, h := range c.Insecure {
		if h == "" || strings.ContainsAny(h, "/ ") {
			return usageError{fmt.Errorf("--insecure %q: want HOST[:PORT]", h)}
		}
	}
	return nil
}

// mirrors parses --mirror values into the resolver's map.
func (c *Config) mirrors() (map[string][]string, error) {
	m := map[string][]string{}
	for _, v := range c.Mirrors {
		reg, host, err := resolver.ParseMirror(v, c.Registry)
		if err != nil {
			return nil, fmt.Errorf("--mirror %q: %w", v, err)
		}
		m[reg] = append(m[reg], host)
	}
	return m, nil
}

// defaultCacheDir is $XDG_CACHE_HOME/regfs, else ~/.cache/regfs.
func defaultCacheDir() string {
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "regfs")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".cache", "regfs")
	}
	return ""
}

// sizeUnits are the suffixes --cache-size takes, longest first.
var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40},
	{"B", 1},
}

// parseSize parses a byte count with an optional unit: 1048576, 512MiB, 10GiB, 2TB.
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseFloat(s, 64)
	if err != nil || !(n >= 0) {
		return 0, fmt.Errorf("%q is not a size (want e.g. 512MiB, 10GiB, 2TB)", s)
	}
	v := n * float64(mult)
	if v > 1<<62 {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return int64(v), nil
}
