package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// EnvRegistry names an environment variable that overrides the path of the
// docker-registry binary.
const EnvRegistry = "REGFS_TEST_REGISTRY"

// DefaultRegistryBinary is where Debian's docker-registry package installs
// the registry.
const DefaultRegistryBinary = "/usr/bin/docker-registry"

// RegistryBinary returns the registry binary to run: $REGFS_TEST_REGISTRY,
// else /usr/bin/docker-registry, else docker-registry on PATH; or "" if none
// is executable.
func RegistryBinary() string {
	if p := os.Getenv(EnvRegistry); p != "" {
		return p
	}
	if fi, err := os.Stat(DefaultRegistryBinary); err == nil && fi.Mode()&0o111 != 0 {
		return DefaultRegistryBinary
	}
	p, _ := exec.LookPath("docker-registry")
	return p
}

// RequireRegistry skips t unless a registry binary is available (see
// [RegistryBinary]) and returns its path.
func RequireRegistry(t testing.TB) string {
	t.Helper()
	p := RegistryBinary()
	if p == "" {
		skip(t, "docker-registry unavailable: set %s or install Debian's docker-registry", EnvRegistry)
	}
	return p
}

// Registry starts Debian's docker-registry (distribution 2.8) on a free
// loopback port with storage in t.TempDir(), no auth, deletes enabled and
// warn-level logs, waits until /v2/ answers, and puts a counting proxy in
// front of it. The registry is stopped in t.Cleanup; its log is printed if
// the test failed.
func Registry(t testing.TB) *Server {
	t.Helper()
	return RegistryWithOptions(t, RegistryOptions{})
}

// RegistryWithOptions is [Registry] with o (o.Binary "" means
// [RequireRegistry]'s binary). [Server.Storage] is its storage directory.
func RegistryWithOptions(t testing.TB, o RegistryOptions) *Server {
	t.Helper()
	if o.Binary == "" {
		o.Binary = RequireRegistry(t)
	}
	p, err := StartRegistry(context.Background(), t.TempDir(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		out := p.Stop()
		if t.Failed() {
			t.Logf("docker-registry log:\n%s", out)
		}
	})
	rp, tr := ReverseProxy(p.Host())
	t.Cleanup(tr.CloseIdleConnections)
	s := withProxy(t, p.Host(), NewCounter(rp))
	s.storage = p.Storage()
	return s
}

// RegistryOptions configures a docker-registry started by [StartRegistry].
type RegistryOptions struct {
	// Binary is the docker-registry to run; "" means [RegistryBinary].
	Binary string
	// ProxyRemoteURL, if set, makes the registry a pull-through cache of
	// the registry at this URL (e.g. "http://127.0.0.1:5000"); deletes are
	// then disabled.
	ProxyRemoteURL string
}

// registryConfig returns a distribution 2.8 configuration: filesystem
// storage under storage, no auth, warn-level logs, the API at addr.
func registryConfig(storage, addr string, o RegistryOptions) string {
	var b strings.Builder
	fmt.Fprintf(&b, `version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
`, storage)
	if o.ProxyRemoteURL == "" {
		b.WriteString(`  delete:
    enabled: true
`)
	}
	fmt.Fprintf(&b, `  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
  relativeurls: true
`, addr)
	if o.ProxyRemoteURL != "" {
		fmt.Fprintf(&b, "proxy:\n  remoteurl: %s\n", o.ProxyRemoteURL)
	}
	return b.String()
}

// RegistryProcess is a running docker-registry. It is killed if the process
// that started it dies. Safe for concurrent use.
type RegistryProcess struct {
	host    string
	storage string
	cmd     *exec.Cmd
	out     *SyncBuffer
	done    chan struct{} // closed when cmd.Wait returned
}

// StartRegistry runs a docker-registry on a free loopback port, with its
// configuration files in dir and its storage in dir/storage, and waits
// (bounded by ctx and 15 s) until /v2/ answers. It tries three ports, as a
// free port may be taken between probing and binding. Stop it with
// [RegistryProcess.Stop].
func StartRegistry(ctx context.Context, dir string, o RegistryOptions) (*RegistryProcess, error) {
	if o.Binary == "" {
		if o.Binary = RegistryBinary(); o.Binary == "" {
			return nil, fmt.Errorf("docker-registry unavailable: set %s or install Debian's docker-registry", EnvRegistry)
		}
	}
	var errs []error
	for range 3 {
		p, err := startRegistry(ctx, dir, o)
		if err == nil {
			return p, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("starting %s: %w", o.Binary, errors.Join(errs...))
}

// startRegistry makes one attempt of StartRegistry.
func startRegistry(ctx context.Context, dir string, o RegistryOptions) (*RegistryProcess, error) {
	host, err := freeAddr()
	if err != nil {
		return nil, err
	}
	n := 0
	var cfg string
	for {
		cfg = filepath.Join(dir, fmt.Sprintf("config-%d.yml", n))
		if _, err := os.Stat(cfg); errors.Is(err, os.ErrNotExist) {
			break
		}
		n++
	}
	storage := filepath.Join(dir, "storage")
	if err := os.WriteFile(cfg, []byte(registryConfig(storage, host, o)), 0o644); err != nil {
		return nil, fmt.Errorf("writing registry config: %w", err)
	}
	p := &RegistryProcess{host: host, storage: storage, out: &SyncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(o.Binary, "serve", cfg)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	// Kill the registry if this process dies. Pdeathsig follows the thread
	// that forks, so pin this goroutine to its thread while starting.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	runtime.LockOSThread()
	err = p.cmd.Start()
	runtime.UnlockOSThread()
	if err != nil {
		return nil, fmt.Errorf("running %s: %w", o.Binary, err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	if err := p.waitReady(ctx, 15*time.Second); err != nil {
		out := p.Stop()
		return nil, fmt.Errorf("%w; log:\n%s", err, out)
	}
	return p, nil
}

// Host returns the registry's address (host:port, plain HTTP).
func (p *RegistryProcess) Host() string { return p.host }

// Storage returns the filesystem driver's root directory.
func (p *RegistryProcess) Storage() string { return p.storage }

// Output returns what the registry printed so far.
func (p *RegistryProcess) Output() string { return p.out.String() }

// waitReady polls /v2/ until it answers 200.
func (p *RegistryProcess) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.host+"/v2/", nil)
		if err != nil {
			return err
		}
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.done:
			return fmt.Errorf("registry exited early: %v", p.cmd.ProcessState)
		case <-ctx.Done():
			return fmt.Errorf("registry at %s not ready after %v: %w", p.host, timeout, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Stop terminates the registry (SIGTERM, then SIGKILL after 5 s), waits for
// it to exit and returns its output. Later calls only return the output.
func (p *RegistryProcess) Stop() string {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	return p.out.String()
}

// freeAddr returns a loopback host:port that was free a moment ago.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("probing a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// SyncBuffer is an io.Writer safe to read while others write to it: a
// process's output, a logger's. The zero value is ready to use.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer // guarded by mu
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
