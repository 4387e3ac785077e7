package integration

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/regfs/regfs/internal/faultproxy"
	"github.com/regfs/regfs/internal/testenv"
)

// Soak settings: REGFS_SOAK sets the duration (e.g. 5m), REGFS_SOAK_SEED the
// seed of the faults and of the readers' choices.
const (
	soakEnv         = "REGFS_SOAK"
	soakSeedEnv     = "REGFS_SOAK_SEED"
	soakDefault     = 15 * time.Second
	soakReaders     = 16
	soakMaxRead     = 256 << 10
	soakGoroutineOK = 5 // goroutines allowed to remain after the unmount
)

// soakRules are the random faults of the soak, each with its probability.
func soakRules() []faultproxy.Rule {
	blob := func(p float64, f faultproxy.Fault) faultproxy.Rule {
		return faultproxy.Rule{Method: http.MethodGet, Kind: testenv.KindBlob, Prob: p, Fault: f}
	}
	return []faultproxy.Rule{
		{Prob: 0.04, Fault: faultproxy.Status(503)},
		{Prob: 0.01, Fault: faultproxy.StatusRetryAfter(429, "1")},
		{Kind: testenv.KindManifest, Prob: 0.01, Fault: faultproxy.StallAfter(0)},
		blob(0.02, faultproxy.ExpireToken()),
		blob(0.02, faultproxy.RedirectExpired()),
		blob(0.04, faultproxy.ResetAfter(16<<10)),
		blob(0.03, faultproxy.ShortBody(8<<10)),
		blob(0.03, faultproxy.IgnoreRange()),
		blob(0.02, faultproxy.FlipBit(-1)),
		blob(0.01, faultproxy.ShiftContentRange(-512)),
		blob(0.01, faultproxy.DropContentRange()),
		blob(0.005, faultproxy.StallAfter(4096)),
		blob(0.15, faultproxy.Redirect()),
	}
}

// soakFile is a file the soak reads, with its expected content.
type soakFile struct {
	path string
	want []byte
}

// soakStats are what the readers did. Safe for concurrent use.
type soakStats struct {
	reads, bytes, eio atomic.Int64
	mu                sync.Mutex
	maxOp             time.Duration // guarded by mu
	maxOpName         string        // guarded by mu
	other             []string      // guarded by mu; errors other than EIO (at most 20)
	wrong             []string      // guarded by mu; reads that returned wrong bytes (at most 20)
}

func (s *soakStats) op(name string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d > s.maxOp {
		s.maxOp, s.maxOpName = d, name
	}
}

func (s *soakStats) note(list *[]string, msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(*list) < 20 {
		*list = append(*list, msg)
	}
}

// TestSoakFaults reads files of the fault image from many goroutines for a
// bounded time while the proxy injects random faults (seeded): every byte
// read equals the fixture or the read fails with EIO; no operation waits
// longer than the stall timeout + 1 s; no goroutine is left after the
// unmount. It reports the reads, failures and the peak RSS.
func TestSoakFaults(t *testing.T) {
	testenv.RequireFUSE(t)
	dur := soakDefault
	if v := os.Getenv(soakEnv); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("%s=%q: %v", soakEnv, v, err)
		}
		dur = d
	}
	seed := uint64(1)
	if v := os.Getenv(soakSeedEnv); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", soakSeedEnv, v, err)
		}
		seed = n
	}
	env := newFaultsEnv(t, seed)
	env.proxy.SetRules(soakRules()...)
	runtime.GC()
	before := runtime.NumGoroutine()

	// A small cache: chunks are evicted and fetched again, through the faults.
	m := faultMount(t, mountConfig{registry: env.proxy.Host(), cacheSize: 2 << 20,
		tagTTL: time.Second, downTime: time.Second})
	var files []soakFile
	for tag, fs := range map[string]map[string][]byte{"1": faultsFiles(), "2": faultsOtherFiles()} {
		for name, want := range fs {
			files = append(files, soakFile{m.rootfs(tag, name), want})
		}
	}
	slices.SortFunc(files, func(a, b soakFile) int { return strings.Compare(a.path, b.path) })

	var st soakStats
	deadline := time.Now().Add(dur)
	var wg sync.WaitGroup
	for g := range soakReaders {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(seed, uint64(g)))
			buf := make([]byte, soakMaxRead)
			for time.Now().Before(deadline) {
				soakRead(&st, r, files[r.IntN(len(files))], buf)
			}
		})
	}
	wg.Wait()
	proxyCounts := env.proxy.Counters()
	resStats := m.res.Stats()
	m.unmount(t)
	env.proxy.CloseIdleConnections()

	after := runtime.NumGoroutine()
	for end := time.Now().Add(5 * time.Second); after > before+soakGoroutineOK && time.Now().Before(end); {
		time.Sleep(100 * time.Millisecond)
		after = runtime.NumGoroutine()
	}
	if after > before+soakGoroutineOK {
		buf := make([]byte, 1<<20)
		t.Errorf("goroutines: %d before the mount, %d after the unmount\n%s", before, after, buf[:runtime.Stack(buf, true)])
	}

	t.Logf("soak %v, %d readers, seed %d: %d reads (%d MiB), %d EIO, max operation %v (%s), goroutines %d -> %d, peak RSS %s",
		dur, soakReaders, seed, st.reads.Load(), st.bytes.Load()>>20, st.eio.Load(), st.maxOp, st.maxOpName, before, after, peakRSS())
	t.Logf("proxy: %d requests, faults %v, tokens %d, CDN %d (expired %d, auth leaks %d)",
		proxyCounts.Requests, proxyCounts.Faults, proxyCounts.Tokens, proxyCounts.CDNRequests, proxyCounts.CDNExpired, proxyCounts.CDNAuthLeaks)
	t.Logf("resolver: %+v", resStats)
	if st.reads.Load() == 0 {
		t.Errorf("no read completed")
	}
	if st.maxOp > faultsTimeout+faultsSlack {
		t.Errorf("an operation took %v (%s), more than the stall timeout %v + %v", st.maxOp, st.maxOpName, faultsTimeout, faultsSlack)
	}
	if proxyCounts.CDNAuthLeaks != 0 {
		t.Errorf("the CDN received the registry's Authorization header %d times", proxyCounts.CDNAuthLeaks)
	}
	for _, e := range st.other {
		t.Errorf("error other than EIO: %s", e)
	}
	for _, e := range st.wrong {
		t.Errorf("WRONG BYTES: %s", e)
	}
}

// soakRead opens f, reads a random range of it, checks the bytes and drops
// the file's pages from the kernel's cache so later reads reach regfs again.
func soakRead(st *soakStats, r *rand.Rand, f soakFile, buf []byte) {
	fail := func(op string, err error) {
		if isEIO(err) {
			st.eio.Add(1)
			return
		}
		st.note(&st.other, fmt.Sprintf("%s %s: %v", op, f.path, err))
	}
	start := time.Now()
	fh, err := os.Open(f.path)
	st.op("open", time.Since(start))
	if err != nil {
		fail("open", err)
		return
	}
	defer fh.Close()
	size := int64(len(f.want))
	off := r.Int64N(size)
	n := 1 + r.IntN(min(len(buf), int(size-off)))
	start = time.Now()
	k, err := fh.ReadAt(buf[:n], off)
	st.op("read", time.Since(start))
	st.reads.Add(1)
	st.bytes.Add(int64(k))
	if !bytes.Equal(buf[:k], f.want[off:off+int64(k)]) {
		st.note(&st.wrong, fmt.Sprintf("%s [%d,+%d): %d bytes, first difference at %d", f.path, off, n, k, off+int64(firstDiff(buf[:k], f.want[off:off+int64(k)]))))
	}
	if err != nil {
		fail("read", err)
	}
	_ = unix.Fadvise(int(fh.Fd()), 0, 0, unix.FADV_DONTNEED)
}

// peakRSS returns the process's peak resident set size (VmHWM).
func peakRSS() string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "unknown"
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}
