package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/spf13/pflag"

	"github.com/regfs/regfs/cache"
	"github.com/regfs/regfs/fs"
	"github.com/regfs/regfs/internal/fixture"
	"github.com/regfs/regfs/resolver"
)

// cmdMount mounts and serves until ctx ends or the mount is unmounted.
func cmdMount(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, err := parseMount(args)
	if errors.Is(err, pflag.ErrHelp) {
		f, _, _ := mountFlags(&Config{})
		fmt.Fprintf(stdout, "Usage: regfs mount [flags] MOUNTPOINT\n\nFlags:\n%s\nExit codes: 0 after a clean unmount, 1 on a runtime error, 2 on a usage error.\n", f.FlagUsages())
		return nil
	}
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: c.LogLevel}))
	if err := checkMountpoint(c.Mountpoint, log); err != nil {
		return err
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Errorf("FUSE is unavailable: %w (install fuse3 and load the fuse kernel module)", err)
	}
	if c.AllowOther && os.Geteuid() != 0 && !userAllowOther("/etc/fuse.conf") {
		return errors.New("--allow-other as a non-root user needs 'user_allow_other' in /etc/fuse.conf (add that line as root, or mount without --allow-other)")
	}

	store, err := cache.Open(c.CacheDir, c.CacheSize, log)
	if err != nil {
		return err
	}
	defer store.Close()

	if c.Demo {
		host, stop, err := serveDemo(ctx, log)
		if err != nil {
			return err
		}
		defer stop()
		c.Registry = host
	}

	mirrors, err := c.mirrors()
	if err != nil {
		return usageError{err}
	}
	res, err := resolver.New(resolver.Options{
		Mirrors:         mirrors,
		CAFile:          c.CAFile,
		ManifestRate:    c.Rate,
		ManifestBurst:   c.Burst,
		DefaultRegistry: c.Registry,
		Insecure:        c.Insecure,
		Timeout:         c.Timeout,
		TagTTL:          c.TagTTL,
		Docs:            store.Digests(cache.KindDocument),
		Logger:          log,
	})
	if err != nil {
		return err
	}
	server, err := fs.Mount(c.Mountpoint, fs.Config{
		Resolver: res, Store: store, TagTTL: c.TagTTL, AllowOther: c.AllowOther, Logger: log,
		RebaseSymlinks: c.Rebase, PinnedTOCOnly: c.PinnedTOC,
	})
	if err != nil {
		return err
	}
	log.Info("mounted", "mountpoint", c.Mountpoint, "registry", c.Registry, "cache", c.CacheDir)

	done := make(chan struct{})
	go func() {
		server.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		log.Info("unmounting", "mountpoint", c.Mountpoint)
		if err := server.Unmount(); err != nil {
			// Busy (a file open, a shell inside): detach it lazily, as libfuse
			// does on a signal, so that no stale mount is left behind.
			log.Warn("mount point busy: detaching it lazily", "mountpoint", c.Mountpoint, "err", err)
			if derr := detach(c.Mountpoint); derr != nil {
				return fmt.Errorf("unmount %s: %w; lazy unmount: %v", c.Mountpoint, err, derr)
			}
			// Its last users may hold it open for long: do not wait for them.
			select {
			case <-done:
			case <-time.After(2 * time.Second):
			}
		} else {
			<-done
		}
	}
	s := server.Stats()
	log.Info("unmounted", "mountpoint", c.Mountpoint,
		"requests", s.Registry.Requests, "bytes_fetched", s.Registry.BodyBytes,
		"cache_hits", s.Cache.Hits, "cache_misses", s.Cache.Misses, "bytes_served", s.BytesServed)
	return nil
}

// checkMountpoint gives a clear error for a missing, busy or stale mount
// point; a stale regfs mount (its daemon gone) is detached first.
func checkMountpoint(dir string, log *slog.Logger) error {
	// statfs(2) always reaches the daemon; stat(2) of a dead daemon's root
	// may be answered from the kernel's attribute cache and hide it.
	var sfs syscall.Statfs_t
	if err := syscall.Statfs(dir, &sfs); errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.ECONNABORTED) {
		log.Warn("stale mount point: detaching it", "mountpoint", dir)
		if err := detach(dir); err != nil {
			return fmt.Errorf("%s is a stale mount (transport endpoint is not connected) and could not be detached: %w; run 'regfs unmount %s'", dir, err, dir)
		}
	}
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("mount point %s does not exist (create it with 'mkdir -p %s')", dir, dir)
	case err != nil:
		return fmt.Errorf("mount point: %w", err)
	case !st.IsDir():
		return fmt.Errorf("mount point %s is not a directory", dir)
	}
	if mounted(dir) {
		return fmt.Errorf("mount point %s is busy: something is already mounted there (see 'regfs unmount %s')", dir, dir)
	}
	return nil
}

// mounted reports whether dir is a mount point, from /proc/self/mountinfo.
func mounted(dir string) bool {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return false
	}
	if r, err := filepath.EvalSymlinks(abs); err == nil {
		abs = r
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) > 4 && unescapeMount(fields[4]) == abs {
			return true
		}
	}
	return false
}

// userAllowOther reports whether fuse.conf lets users mount with allow_other.
func userAllowOther(conf string) bool {
	b, err := os.ReadFile(conf)
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(line) == "user_allow_other" {
			return true
		}
	}
	return false
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	r := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	return r.Replace(s)
}

// cmdUnmount unmounts a regfs mount, stale or not.
func cmdUnmount(args []string) error {
	if len(args) != 1 {
		return usageError{errors.New("unmount takes exactly one MOUNTPOINT")}
	}
	dir := args[0]
	if os.Geteuid() == 0 {
		if err := syscall.Unmount(dir, 0); err == nil {
			return nil
		} else if !errors.Is(err, syscall.EBUSY) {
			if derr := detach(dir); derr != nil {
				return fmt.Errorf("unmount %s: %w", dir, err)
			}
			return nil
		} else {
			return fmt.Errorf("unmount %s: %w (a process is using it; 'fuser -m %s' shows which)", dir, err, dir)
		}
	}
	out, err := exec.Command("fusermount3", "-u", dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("fusermount3 -u %s: %v: %s", dir, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// detach lazily unmounts dir (MNT_DETACH), as root or through fusermount3 -z.
func detach(dir string) error {
	if os.Geteuid() == 0 {
		return syscall.Unmount(dir, syscall.MNT_DETACH)
	}
	out, err := exec.Command("fusermount3", "-u", "-z", dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// serveDemo serves the built-in sample registry on loopback and returns its host.
func serveDemo(ctx context.Context, log *slog.Logger) (string, func(), error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("demo registry: %w", err)
	}
	srv := &http.Server{Handler: registry.New(registry.Logger(slog.NewLogLogger(log.Handler(), slog.LevelDebug)))}
	go srv.Serve(l)
	host := l.Addr().String()
	if err := fixture.PushDemo(ctx, host); err != nil {
		srv.Close()
		return "", nil, fmt.Errorf("demo registry: %w", err)
	}
	log.Info("demo registry ready", "host", host)
	return host, func() { srv.Close() }, nil
}
