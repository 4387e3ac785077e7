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
	f.StringVar(&c.Registry, "registry", "docker.io", "default registry (`HOST[:PORT]`) for names without a host, e.g. ghcr.io or localhost:5000")
	f.StringArrayVar(&c.Insecure, "insecure", nil, "allow plain HTTP to `HOST[:PORT]` (repeatable; loopback hosts always are)")
	f.StringArrayVar(&c.Mirrors, "mirror", nil, "pull through `[REGISTRY=]HOST[:PORT]` first, in order, falling back to the registry (repeatable; without REGISTRY= it mirrors --registry)")
	f.StringVar(&c.CAFile, "ca-file", "", "PEM `FILE` of CA certificates to trust besides the system's (SSL_CERT_FILE also works)")
	f.Float64Var(&c.Rate, "manifest-rate", resolver.DefaultManifestRate, "manifest GETs per second per registry, so that a crawl cannot exhaust a pull limit (0: unlimited)")
	f.IntVar(&c.Burst, "manifest-burst", resolver.DefaultManifestBurst, "manifest GETs allowed at once above --manifest-rate")
	f.StringVar(&c.CacheDir, "cache-dir", defaultCacheDir(), "on-disk cache `DIR`")
	size := f.String("cache-size", "10GiB", "bound of the on-disk cache (`SIZE`), e.g. 512MiB, 10GiB, 2TB")
	f.DurationVar(&c.TagTTL, "tag-ttl", 60*time.Second, "how long a tag's answer is kept before it is asked again")
	f.DurationVar(&c.Timeout, "timeout", 30*time.Second, "per-request stall timeout: a request with no progress for this long fails")
	f.BoolVar(&c.AllowOther, "allow-other", false, "let other users read the mount (needs user_allow_other in /etc/fuse.conf when not root)")
	f.BoolVar(&c.Rebase, "rebase-symlinks", false, "show absolute symlink targets under their rootfs/, so that tools following them read the image's file, not the host's")
	level := f.String("log-level", "info", "log level: debug, info, warn or error")
	f.BoolVar(&c.Demo, "demo", false, "serve a built-in sample registry instead of --registry (no network needed)")
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
	case c.TagTTL < 0:
		return usageError{errors.New("--tag-ttl: must not be negative")}
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
