package main

import (
	"bufio"
	"bytes"
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
	"strconv"
	"strings"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/regfs/regfs/internal/fixture"
	"github.com/regfs/regfs/internal/testenv"
)

// env is the registry, its counting proxy and the regfs mounts of one run.
// Its methods are called from one goroutine.
type env struct {
	o   options
	log *slog.Logger

	registry *testenv.RegistryProcess
	direct   string // the registry's own host:port (pushes go there, uncounted)

	counter *testenv.Counter
	proxy   *http.Server
	host    string // the counted host:port every measured client uses

	mounts map[*regfsProc]bool // running mounts, for close
	nMount int
}

// startEnv starts docker-registry (a separate process, storage under o.work)
// and the counting proxy in front of it.
func startEnv(ctx context.Context, o options, log *slog.Logger) (*env, error) {
	e := &env{o: o, log: log, mounts: map[*regfsProc]bool{}}
	dir := filepath.Join(o.work, "registry")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("registry directory: %w", err)
	}
	var err error
	if e.registry, err = testenv.StartRegistry(ctx, dir, testenv.RegistryOptions{Binary: o.registry}); err != nil {
		return nil, err
	}
	e.direct = e.registry.Host()

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.close()
		return nil, fmt.Errorf("proxy listener: %w", err)
	}
	rp, tr := testenv.ReverseProxy(e.direct)
	tr.MaxIdleConnsPerHost = 32
	e.counter = testenv.NewCounter(rp)
	e.proxy = &http.Server{Handler: e.counter, ReadHeaderTimeout: 10 * time.Second}
	go e.proxy.Serve(l)
	e.host = l.Addr().String()
	e.log.Info("registry up", "registry", e.direct, "counted", e.host)
	return e, nil
}

// close unmounts what is still mounted and stops the proxy and the registry.
func (e *env) close() {
	for p := range e.mounts {
		if _, err := p.unmount(); err != nil {
			e.log.Warn("unmount at exit", "mountpoint", p.dir, "err", err)
		}
	}
	if e.proxy != nil {
		_ = e.proxy.Close()
	}
	if e.registry != nil {
		e.registry.Stop()
	}
}

// take returns what the counter saw since the last take and resets it.
func (e *env) take() testenv.Counts {
	c := e.counter.Counts()
	e.counter.Reset()
	return c
}

// regfsProc is one `regfs mount` process, run under GNU time -v.
type regfsProc struct {
	e       *env
	dir     string // mount point
	cmd     *exec.Cmd
	done    chan struct{} // closed when cmd exited
	logPath string        // regfs's stderr
	stats   string        // GNU time's report
	started time.Time
	ready   time.Duration // from exec to the mount appearing
}

// pushIndex pushes an OCI index of imgs as repo:tag to the registry directly (not
// through the counting proxy).
func (e *env) pushIndex(ctx context.Context, repo, tag string, imgs ...v1.Image) error {
	idx, err := fixture.Index(fixture.OCI, imgs...)
	if err != nil {
		return err
	}
	return (fixture.Set{{Repo: repo, Tags: []string{tag}, Object: idx}}).Push(ctx, e.direct)
}

// mount starts regfs on a new mount point with cacheDir and waits until the
// mount is up. extra flags go after the usual ones (a repeated flag's last
// value wins: "--log-level", "debug" overrides -log-level).
func (e *env) mount(ctx context.Context, cacheDir string, extra ...string) (*regfsProc, error) {
	e.nMount++
	base := filepath.Join(e.o.work, "mounts", fmt.Sprintf("m%02d", e.nMount))
	p := &regfsProc{e: e, dir: base + ".mnt", logPath: base + ".log", stats: base + ".time", done: make(chan struct{})}
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		return nil, fmt.Errorf("mount point: %w", err)
	}
	logf, err := os.Create(p.logPath)
	if err != nil {
		return nil, fmt.Errorf("regfs log: %w", err)
	}
	defer logf.Close()
	args := []string{"-v", "-o", p.stats}
	if e.o.perf {
		args = append(args, "perf", "record", "-F", "999", "-g", "-q", "-o", base+".perf.data", "--")
	}
	args = append(args, e.o.regfs, "mount", "--registry", e.host, "--cache-dir", cacheDir,
		"--log-level", e.o.logLevel, "--timeout", "120s")
	args = append(append(args, extra...), p.dir)
	p.cmd = exec.Command(e.o.timeBin, args...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.started = time.Now()
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting regfs: %w", err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	e.mounts[p] = true
	deadline := time.Now().Add(15 * time.Second)
	for !isMounted(p.dir) {
		select {
		case <-p.done:
			delete(e.mounts, p)
			return nil, fmt.Errorf("regfs exited before mounting: %s", tail(p.logPath))
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("regfs did not mount %s within 15s: %s", p.dir, tail(p.logPath))
		}
	}
	p.ready = time.Since(p.started)
	return p, nil
}

// rootfs returns the path of the benchmark image's rootfs in this mount.
func (p *regfsProc) rootfs(img *image) string {
	return p.rootfsOf(img.repo, img.tag, img.platform)
}

// rootfsOf returns the path of the rootfs of repo:tag's platform in this mount.
func (p *regfsProc) rootfsOf(repo, tag, platform string) string {
	return filepath.Join(p.dir, repo, tag, platform, "rootfs")
}

// unmount unmounts, waits for regfs to exit and returns its peak RSS and CPU
// time as GNU time measured them.
func (p *regfsProc) unmount() (procStats, error) {
	delete(p.e.mounts, p)
	out, err := exec.Command(p.e.o.regfs, "unmount", p.dir).CombinedOutput()
	if err != nil {
		select {
		case <-p.done:
		default:
			_ = syscall.Unmount(p.dir, syscall.MNT_DETACH)
		}
	}
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		return procStats{}, fmt.Errorf("regfs did not exit after unmount (%v %s): %s", err, out, tail(p.logPath))
	}
	if err != nil {
		return procStats{}, fmt.Errorf("regfs unmount %s: %v: %s", p.dir, err, out)
	}
	f, err := os.Open(p.stats)
	if err != nil {
		return procStats{}, fmt.Errorf("GNU time report: %w", err)
	}
	defer f.Close()
	return parseTimeReport(f)
}

// isMounted reports whether dir is a mount point, from /proc/self/mountinfo.
func isMounted(dir string) bool {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) > 4 && strings.ReplaceAll(fields[4], `\040`, " ") == dir {
			return true
		}
	}
	return false
}

// tail returns the last lines of a log file, for error messages.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-8):], "\n")
}

// lookPath finds a bare command name on PATH.
func lookPath(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("need %s: %w", name, err)
	}
	return p, nil
}

// timed runs a bash command line (with pipefail) in dir and returns how long
// it took, the CPU time of the command and its children, and its standard
// output.
func timed(ctx context.Context, script string, dir string) (wall, cpu time.Duration, stdout []byte, err error) {
	var out, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", "-o", "pipefail", "-c", script)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = &out, &stderr
	start := time.Now()
	err = cmd.Run()
	wall = time.Since(start)
	if cmd.ProcessState != nil {
		cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	if err != nil {
		return wall, cpu, nil, fmt.Errorf("%s: %w: %s", script, err, strings.TrimSpace(stderr.String()))
	}
	return wall, cpu, out.Bytes(), nil
}

// procStats is what GNU time -v reports of a process.
type procStats struct {
	maxRSS int64         // peak resident set size, KiB
	cpu    time.Duration // user + system time
}

// errNoRSS is returned when GNU time's report has no peak RSS line.
var errNoRSS = errors.New("no \"Maximum resident set size\" in GNU time's report")

// parseTimeReport reads GNU time -v's report: peak RSS and CPU time.
func parseTimeReport(r io.Reader) (procStats, error) {
	var st procStats
	found := false
	s := bufio.NewScanner(r)
	for s.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(s.Text()), ": ")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "Maximum resident set size (kbytes)":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return st, fmt.Errorf("GNU time report: peak RSS %q: %w", v, err)
			}
			st.maxRSS, found = n, true
		case "User time (seconds)", "System time (seconds)":
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return st, fmt.Errorf("GNU time report: %s %q: %w", k, v, err)
			}
			st.cpu += time.Duration(f * float64(time.Second))
		}
	}
	if err := s.Err(); err != nil {
		return st, fmt.Errorf("GNU time report: %w", err)
	}
	if !found {
		return st, errNoRSS
	}
	return st, nil
}
