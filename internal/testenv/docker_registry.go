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
	bin := RequireRegistry(t)
	dir := t.TempDir()
	var (
		p   *registryProcess
		err error
	)
	for range 3 { // a free port may be taken between probing and binding
		if p, err = startRegistry(bin, dir); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	t.Cleanup(func() {
		out := p.stop()
		if t.Failed() {
			t.Logf("docker-registry log:\n%s", out)
		}
	})
	rp, tr := reverseProxy(p.host)
	t.Cleanup(tr.CloseIdleConnections)
	return withProxy(t, p.host, NewCounter(rp))
}

const registryConfig = `version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
  relativeurls: true
`

// registryProcess is a running docker-registry.
type registryProcess struct {
	host string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{} // closed when cmd.Wait returned
}

func startRegistry(bin, dir string) (*registryProcess, error) {
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
	body := fmt.Sprintf(registryConfig, filepath.Join(dir, "storage"), host)
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		return nil, fmt.Errorf("writing registry config: %w", err)
	}
	p := &registryProcess{host: host, out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, "serve", cfg)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	// Kill the registry if the test binary dies. Pdeathsig follows the thread
	// that forks, so pin this goroutine to its thread while starting.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	runtime.LockOSThread()
	err = p.cmd.Start()
	runtime.UnlockOSThread()
	if err != nil {
		return nil, fmt.Errorf("running %s: %w", bin, err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	if err := p.waitReady(15 * time.Second); err != nil {
		out := p.stop()
		return nil, fmt.Errorf("%w; log:\n%s", err, out)
	}
	return p, nil
}

// waitReady polls /v2/ until it answers 200.
func (p *registryProcess) waitReady(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
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
			return fmt.Errorf("registry at %s not ready after %v", p.host, timeout)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// stop terminates the registry (SIGTERM, then SIGKILL after 5 s) and returns
// its output.
func (p *registryProcess) stop() string {
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

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer // guarded by mu
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
