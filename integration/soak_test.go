package integration

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
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
// seed of the faults and of the readers' choices, REGFS_SOAK_BOUND a latency
// bound other than the stall timeout + 1 s (a lower one shows the failure
// report of the slowest operations).
const (
	soakEnv         = "REGFS_SOAK"
	soakSeedEnv     = "REGFS_SOAK_SEED"
	soakBoundEnv    = "REGFS_SOAK_BOUND"
	soakDefault     = 15 * time.Second
	soakReaders     = 16
	soakMaxRead     = 256 << 10
	soakMaxRSS      = 256 << 20 // growth of the peak RSS allowed over the RSS before the mount
	soakEvents      = 50_000    // proxy events kept for the failure report
	soakLogLines    = 20_000    // regfs log lines kept for the failure report
	soakKeep        = 20        // slow, failed and wrong operations kept for the report, each
	soakShow        = 3         // operations of each list the failure report details
	soakTick        = 10 * time.Millisecond
	soakSampleEvery = 100 * time.Millisecond
)

// soakSettle is how long the goroutines of the mount may take to end after
// the unmount: a fetch in flight then (shared work no reader waits for any
// more) ends within the stall timeout and its grace, and its connections go
// idle and are closed.
const soakSettle = 2*faultsTimeout + 5*time.Second

// soakRules are the random faults of the soak, each with its probability.
func soakRules() []faultproxy.Rule {
	blob := func(p float64, f faultproxy.Fault) faultproxy.Rule {
		return faultproxy.Rule{Method: http.MethodGet, Kind: testenv.KindBlob, Prob: p, Fault: f}
	}
	return []faultproxy.Rule{
		{Prob: 0.04, Fault: faultproxy.Status(503)},
		{Prob: 0.01, Fault: faultproxy.StatusRetryAfter(429, "1")},
		{Kind: testenv.KindManifest, Prob: 0.01, Fault: faultproxy.StallAfter(0)},
		// Tokens expire once they have been in use a while: a token the
		// registry rejects just after issuing it is a denial (EACCES). With
		// ExpireToken, the retry that re-authenticated after an expiry met a
		// second expiry at once 1 time in 50 and failed EACCES (seed 11).
		blob(0.02, faultproxy.ExpireTokenOlderThan(time.Second)),
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

// soakOp is one operation of a reader: an open or a read.
type soakOp struct {
	reader int
	name   string // "open" or "read"
	path   string
	off    int64 // reads: the offset and length asked for
	n      int
	start  time.Time
	dur    time.Duration
	err    error
	note   string // what was wrong with it
}

// format describes the operation with its start relative to base.
func (o soakOp) format(base time.Time) string {
	s := fmt.Sprintf("reader %d %s %s", o.reader, o.name, o.path)
	if o.name == "read" {
		s += fmt.Sprintf(" [%d,+%d)", o.off, o.n)
	}
	s += fmt.Sprintf(": %v from %+.3fs to %+.3fs", o.dur.Round(time.Millisecond), o.start.Sub(base).Seconds(), o.end().Sub(base).Seconds())
	if o.err != nil {
		s += fmt.Sprintf(", error %v", o.err)
	}
	if o.note != "" {
		s += ", " + o.note
	}
	return s
}

func (o soakOp) end() time.Time { return o.start.Add(o.dur) }

// soakStats are what the readers did. Safe for concurrent use.
type soakStats struct {
	bound             time.Duration // operations longer than this fail
	reads, bytes, eio atomic.Int64
	mu                sync.Mutex
	slowest           []soakOp // guarded by mu; the soakKeep slowest operations, slowest first
	slow              []soakOp // guarded by mu; operations over the bound
	nslow             int      // guarded by mu; operations over the bound
	other             []soakOp // guarded by mu; errors other than EIO (the first soakKeep)
	nother            int      // guarded by mu
	wrong             []soakOp // guarded by mu; reads that returned wrong bytes (the first soakKeep)
	nwrong            int      // guarded by mu
}

// op records a finished operation.
func (s *soakStats) op(o soakOp) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.slowest) < soakKeep || o.dur > s.slowest[len(s.slowest)-1].dur {
		i, _ := slices.BinarySearchFunc(s.slowest, o.dur, func(a soakOp, d time.Duration) int { return -int(a.dur - d) })
		s.slowest = slices.Insert(s.slowest, i, o)
		s.slowest = s.slowest[:min(len(s.slowest), soakKeep)]
	}
	if o.dur > s.bound {
		s.nslow++
		s.slow = append(s.slow, o) // all of them: each is checked for CPU starvation
	}
}

// soakKeepOp appends o to list unless it holds soakKeep already. Under mu.
func soakKeepOp(list *[]soakOp, o soakOp) {
	if len(*list) < soakKeep {
		*list = append(*list, o)
	}
}

func (s *soakStats) failed(o soakOp, wrong bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if wrong {
		s.nwrong++
		soakKeepOp(&s.wrong, o)
	} else {
		s.nother++
		soakKeepOp(&s.other, o)
	}
}

// TestSoakFaults reads files of the fault image from many goroutines for a
// bounded time while the proxy injects random faults (seeded): every byte
// read equals the fixture or the read fails with EIO; no operation (an open,
// or a read: one FUSE READ, see soakRead) waits longer than the stall
// timeout + 1 s; every goroutine of the mount ends after the unmount; the
// peak RSS stays bounded. It reports the reads, failures and the peak RSS.
// When it fails it reports, for each failed operation, the proxy's events and
// regfs's log lines of its time and how much the process was kept from
// running then (CPU load), and the load.
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
	env.proxy.RecordEvents(soakEvents)
	runtime.GC()
	before := runtime.NumGoroutine()
	beforeStacks := goroutineStacks()
	rssBefore := procStatus("VmRSS")
	// The peak RSS of the process so far may be another test's: reset it
	// (else only a new peak counts).
	hwmBefore := int64(0)
	if os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) != nil {
		hwmBefore = procStatus("VmHWM")
	}
	loadBefore := loadAvg()

	// A small cache: chunks are evicted and fetched again, through the faults.
	logs := newSoakLog(soakLogLines)
	m := faultMount(t, mountConfig{registry: env.proxy.Host(), cacheSize: 2 << 20,
		tagTTL: time.Second, downTime: time.Second, logOut: logs})
	var files []soakFile
	for tag, fs := range map[string]map[string][]byte{"1": faultsFiles(), "2": faultsOtherFiles()} {
		for name, want := range fs {
			files = append(files, soakFile{m.rootfs(tag, name), want})
		}
	}
	slices.SortFunc(files, func(a, b soakFile) int { return strings.Compare(a.path, b.path) })

	st := soakStats{bound: faultsTimeout + faultsSlack}
	if v := os.Getenv(soakBoundEnv); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("%s=%q: %v", soakBoundEnv, v, err)
		}
		st.bound = d
	}
	mon := startSoakMonitor()
	base := time.Now()
	deadline := base.Add(dur)
	var wg sync.WaitGroup
	for g := range soakReaders {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(seed, uint64(g)))
			buf := make([]byte, soakMaxRead)
			for time.Now().Before(deadline) {
				soakRead(&st, g, r, files[r.IntN(len(files))], buf)
			}
		})
	}
	wg.Wait()
	mon.stop()
	proxyCounts := env.proxy.Counters()
	resStats := m.res.Stats()
	m.unmount(t)

	// The mount's goroutines end shortly after the unmount; a fetch still in
	// flight then takes up to the stall timeout, and its connections go idle
	// afterwards: close idle connections until the count is back.
	settleStart := time.Now()
	atUnmount := runtime.NumGoroutine()
	after := atUnmount
	for end := settleStart.Add(soakSettle); after > before && time.Now().Before(end); after = runtime.NumGoroutine() {
		env.proxy.CloseIdleConnections()
		if tr, ok := m.transport.(interface{ CloseIdleConnections() }); ok {
			tr.CloseIdleConnections()
		}
		time.Sleep(50 * time.Millisecond)
	}
	settled := time.Since(settleStart)
	peak := procStatus("VmHWM")

	t.Logf("soak %v, %d readers, seed %d: %d reads (%d MiB), %d EIO, %d slow, %d other errors, %d wrong; peak RSS %d MiB (%d MiB before the mount)",
		dur, soakReaders, seed, st.reads.Load(), st.bytes.Load()>>20, st.eio.Load(), st.nslow, st.nother, st.nwrong, peak>>20, rssBefore>>20)
	t.Logf("goroutines: %d before the mount, %d at the unmount, %d %v later", before, atUnmount, after, settled.Round(time.Millisecond))
	t.Logf("proxy: %d requests, faults %v, tokens %d, CDN %d (expired %d, auth leaks %d)",
		proxyCounts.Requests, proxyCounts.Faults, proxyCounts.Tokens, proxyCounts.CDNRequests, proxyCounts.CDNExpired, proxyCounts.CDNAuthLeaks)
	t.Logf("resolver: %+v", resStats)
	t.Logf("load: %s before, %s after; %s", loadBefore, loadAvg(), mon.window(base, deadline))
	for i, o := range st.slowest[:min(len(st.slowest), 3)] {
		t.Logf("slowest %d: %s; %s", i+1, o.format(base), mon.window(o.start, o.end()))
	}

	if st.reads.Load() == 0 {
		t.Errorf("no read completed")
	}
	if proxyCounts.CDNAuthLeaks != 0 {
		t.Errorf("the CDN received the registry's Authorization header %d times", proxyCounts.CDNAuthLeaks)
	}
	if peak > hwmBefore && peak-rssBefore > soakMaxRSS {
		t.Errorf("peak RSS %d MiB, %d MiB over the RSS before the mount (bound %d MiB)", peak>>20, (peak-rssBefore)>>20, soakMaxRSS>>20)
	}
	report := func(kind string, n int, list []soakOp) {
		for i, o := range list {
			if i == soakShow {
				t.Errorf("%s: %d operations in all; the first %d are detailed above, the next %d:", kind, n, soakShow, len(list)-soakShow)
			}
			if i >= soakShow {
				t.Errorf("  %s", o.format(base))
				continue
			}
			t.Errorf("%s: %s", kind, o.format(base))
			soakExplain(t, base, o, st.bound, mon, env.proxy, logs)
		}
	}
	// An operation over the bound fails the test unless the process was kept
	// from running for longer than it went over (CPU starvation on a loaded
	// machine, which -race makes likelier): a hang on the registry is not.
	var slow []soakOp
	for _, o := range st.slow {
		if late, excess, starved := soakStarved(mon, o, st.bound); starved {
			t.Logf("over the bound by %v, not counted: the process could not run for %v of it: %s",
				excess.Round(time.Millisecond), late.Round(time.Millisecond), o.format(base))
			continue
		}
		slow = append(slow, o)
	}
	report(fmt.Sprintf("SLOW (over %v)", st.bound), len(slow), slow)
	report("ERROR OTHER THAN EIO", st.nother, st.other)
	report("WRONG BYTES", st.nwrong, st.wrong)
	if after > before {
		t.Errorf("GOROUTINES: %d before the mount, %d at the unmount, still %d after %v; the new ones:\n%s",
			before, atUnmount, after, settled.Round(time.Millisecond), newGoroutines(beforeStacks, goroutineStacks(), 64<<10))
	}
	if t.Failed() {
		t.Logf("at the failure: uptime: %s (the load average counts this test's readers waiting in FUSE requests; CPU pressure and the heartbeat above do not)", uptime())
		tail := logs.tail(40)
		t.Logf("regfs log, last %d of %d lines:\n%s", len(tail), logs.count(), strings.Join(formatLines(base, tail), "\n"))
	}
}

// soakRead opens f, reads a random range of it with O_DIRECT and checks the
// bytes.
//
// O_DIRECT makes the read one FUSE READ of exactly that range (up to the
// mount's max_pages, 1 MiB): the operation the stall timeout bounds (DESIGN
// section 5). A buffered read is served by the kernel's readahead as several
// FUSE READs one after the other, each bounded on its own: a read(2) that
// needed a chunk retried after a 429's Retry-After (1 s) in one and met a
// stalled chunk (2 s) in the next took 3.01 s (seed 16), over the bound for
// one operation though regfs kept it for each. O_DIRECT also bypasses the
// page cache, so every read reaches regfs.
func soakRead(st *soakStats, reader int, r *rand.Rand, f soakFile, buf []byte) {
	fail := func(o soakOp) {
		if isEIO(o.err) {
			st.eio.Add(1)
			return
		}
		st.failed(o, false)
	}
	o := soakOp{reader: reader, name: "open", path: f.path, start: time.Now()}
	fh, err := os.OpenFile(f.path, os.O_RDONLY|unix.O_DIRECT, 0)
	o.dur, o.err = time.Since(o.start), err
	st.op(o)
	if err != nil {
		fail(o)
		return
	}
	defer fh.Close()
	size := int64(len(f.want))
	off := r.Int64N(size)
	n := 1 + r.IntN(min(len(buf), int(size-off)))
	o = soakOp{reader: reader, name: "read", path: f.path, off: off, n: n, start: time.Now()}
	k, err := fh.ReadAt(buf[:n], off)
	o.dur, o.err = time.Since(o.start), err
	st.op(o)
	st.reads.Add(1)
	st.bytes.Add(int64(k))
	if want := f.want[off : off+int64(k)]; !bytes.Equal(buf[:k], want) {
		o.note = fmt.Sprintf("%d bytes, first difference at file offset %d", k, off+int64(firstDiff(buf[:k], want)))
		st.failed(o, true)
	}
	if err != nil {
		fail(o)
	}
}

// soakStarved reports how far o went over bound (excess) and for how long the
// process was kept from running during it (late, the heartbeat's lateness: a
// lower bound); CPU load explains the excess (starved) only if late is both
// more than the excess and a good part of the operation.
func soakStarved(mon *soakMonitor, o soakOp, bound time.Duration) (late, excess time.Duration, starved bool) {
	excess = o.dur - bound
	if excess <= 0 {
		return 0, excess, false
	}
	late = mon.lateness(o.start, o.end())
	return late, excess, late >= excess && late >= o.dur/5
}

// soakExplain reports what happened around a failed operation: how much the
// process was kept from running (load), the proxy's events that could have
// served it (in flight from a stall timeout before it to its end) and regfs's
// log lines of its time.
func soakExplain(t *testing.T, base time.Time, o soakOp, bound time.Duration, mon *soakMonitor, p *faultproxy.Proxy, logs *soakLog) {
	t.Helper()
	const maxEvents, maxLines, maxReadFailed = 100, 40, 5
	var b strings.Builder
	fmt.Fprintf(&b, "  during it: %s\n", mon.window(o.start, o.end()))
	if late, excess, starved := soakStarved(mon, o, bound); excess > 0 {
		verdict := "the load does not explain it: see the events"
		if starved {
			verdict = "CPU starvation, not a hang"
		}
		fmt.Fprintf(&b, "  the process could not run for at least %v of it (%.0f%%); it is %v over the bound: %s\n",
			late.Round(time.Millisecond), 100*late.Seconds()/o.dur.Seconds(), excess.Round(time.Millisecond), verdict)
	}
	// The requests in flight during it, and the failed ones of the stall
	// timeout before it (a retry it waited for follows them).
	from := o.start.Add(-faultsTimeout)
	var evs []faultproxy.Event
	for _, e := range p.EventsBetween(from, o.end()) {
		if e.Overlaps(o.start, o.end()) || (e.Fault != "" && e.Fault != "redirect") || e.Status >= 400 || e.Outcome != "ok" {
			evs = append(evs, e)
		}
	}
	fmt.Fprintf(&b, "  proxy events in flight during it, and the failed ones from %+.3fs (%d):\n", from.Sub(base).Seconds(), len(evs))
	for i, e := range evs {
		if i == maxEvents {
			fmt.Fprintf(&b, "    … %d more\n", len(evs)-maxEvents)
			break
		}
		fmt.Fprintf(&b, "    %s\n", e.Format(base))
	}
	if o.note != "" {
		// Wrong bytes may come from a chunk stored long before: every answer
		// the proxy changed, over the whole run.
		var changed []faultproxy.Event
		for _, e := range p.Events() {
			if f := e.Fault; f != "" && f != "redirect" && !strings.HasPrefix(f, "status") && !strings.HasPrefix(f, "expire-token") && f != "redirect-expired" {
				changed = append(changed, e)
			}
		}
		fmt.Fprintf(&b, "  answers whose body or headers the proxy changed, the whole run (%d):\n", len(changed))
		for i, e := range changed {
			if i == maxEvents {
				fmt.Fprintf(&b, "    … %d more\n", len(changed)-maxEvents)
				break
			}
			fmt.Fprintf(&b, "    %s\n", e.Format(base))
		}
	}
	lines := logs.between(o.start.Add(-faultsSlack), o.end().Add(100*time.Millisecond))
	fmt.Fprintf(&b, "  regfs log from %+.3fs to its end + 100ms (%d lines; \"read failed\" after the first %d left out):\n",
		o.start.Add(-faultsSlack).Sub(base).Seconds(), len(lines), maxReadFailed)
	shown, failed := 0, 0
	for _, ln := range formatLines(base, lines) {
		if strings.Contains(ln, `msg="read failed"`) {
			if failed++; failed > maxReadFailed {
				continue
			}
		}
		if shown++; shown > maxLines {
			b.WriteString("    … more\n")
			break
		}
		fmt.Fprintf(&b, "    %s\n", ln)
	}
	if failed > maxReadFailed {
		fmt.Fprintf(&b, "    (%d \"read failed\" lines in all)\n", failed)
	}
	t.Log(b.String())
}

// soakLine is a log line and when it was written.
type soakLine struct {
	at   time.Time
	text string
}

// formatLines prefixes each line with its time relative to base.
func formatLines(base time.Time, lines []soakLine) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = fmt.Sprintf("%+.3fs %s", l.at.Sub(base).Seconds(), faultproxy.ShortDigests(l.text))
	}
	return out
}

// soakLog is an io.Writer that keeps the last n lines written, each with the
// time it was written. Safe for concurrent use.
type soakLog struct {
	mu    sync.Mutex
	lines []soakLine // guarded by mu; ring
	head  int        // guarded by mu; oldest line once full
	n     int
	total int    // guarded by mu; lines written
	part  []byte // guarded by mu; an unfinished line
}

func newSoakLog(n int) *soakLog { return &soakLog{n: n} }

func (l *soakLog) Write(p []byte) (int, error) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.part = append(l.part, p...)
	for {
		i := bytes.IndexByte(l.part, '\n')
		if i < 0 {
			break
		}
		ln := soakLine{now, string(l.part[:i])}
		l.part = l.part[i+1:]
		l.total++
		if len(l.lines) < l.n {
			l.lines = append(l.lines, ln)
		} else {
			l.lines[l.head] = ln
			l.head = (l.head + 1) % l.n
		}
	}
	return len(p), nil
}

// all returns the kept lines, oldest first.
func (l *soakLog) all() []soakLine {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]soakLine, 0, len(l.lines))
	for i := range l.lines {
		out = append(out, l.lines[(l.head+i)%len(l.lines)])
	}
	return out
}

func (l *soakLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// between returns the kept lines written in [from, to].
func (l *soakLog) between(from, to time.Time) []soakLine {
	var out []soakLine
	for _, ln := range l.all() {
		if !ln.at.Before(from) && !ln.at.After(to) {
			out = append(out, ln)
		}
	}
	return out
}

// tail returns the last n lines kept.
func (l *soakLog) tail(n int) []soakLine {
	all := l.all()
	return all[max(len(all)-n, 0):]
}

// soakMonitor measures how much the process was kept from running: a
// heartbeat goroutine that sleeps soakTick and records how late it wakes
// (lateness: time the process, or at least that goroutine, could not run),
// and every soakSampleEvery the process's CPU time, the time its threads waited
// for a CPU (schedstat) and the system's CPU pressure (PSI "some").
type soakMonitor struct {
	done chan struct{}
	wg   sync.WaitGroup

	mu      sync.Mutex
	late    []soakLate   // guarded by mu; wake-ups later than 2 ms
	samples []soakSample // guarded by mu
}

type soakLate struct {
	at   time.Time // the wake-up
	late time.Duration
}

type soakSample struct {
	at    time.Time
	cpu   time.Duration // process user+system time
	runq  time.Duration // summed over the process's threads: time runnable, waiting for a CPU
	psi   time.Duration // system: time some task waited for a CPU (0 if unknown)
	load1 string
}

// soakMonitorMax bounds the records a monitor keeps.
const soakMonitorMax = 1 << 20

func startSoakMonitor() *soakMonitor {
	m := &soakMonitor{done: make(chan struct{})}
	m.sample()
	m.wg.Go(func() {
		next := time.Now().Add(soakTick)
		sampleAt := time.Now().Add(soakSampleEvery)
		for {
			select {
			case <-m.done:
				return
			case <-time.After(time.Until(next)):
			}
			now := time.Now()
			if late := now.Sub(next); late > 2*time.Millisecond {
				m.mu.Lock()
				if len(m.late) < soakMonitorMax {
					m.late = append(m.late, soakLate{now, late})
				}
				m.mu.Unlock()
			}
			next = now.Add(soakTick)
			if now.After(sampleAt) {
				m.sample()
				sampleAt = now.Add(soakSampleEvery)
			}
		}
	})
	return m
}

func (m *soakMonitor) stop() {
	close(m.done)
	m.wg.Wait()
	m.sample()
}

func (m *soakMonitor) sample() {
	s := soakSample{at: time.Now(), runq: threadsRunqWait(), psi: cpuPressure(), load1: strings.Fields(loadAvg() + " ?")[0]}
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) == nil {
		s.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.samples) < soakMonitorMax {
		m.samples = append(m.samples, s)
	}
}

// lateness returns the heartbeat's lateness summed over [from, to]: a lower
// bound of the time the process could not run then.
func (m *soakMonitor) lateness(from, to time.Time) time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	var sum time.Duration
	for _, l := range m.late {
		// A late wake-up covers [at-late, at]; count its part in the window.
		a, b := l.at.Add(-l.late), l.at
		if a.Before(from) {
			a = from
		}
		if b.After(to) {
			b = to
		}
		if b.After(a) {
			sum += b.Sub(a)
		}
	}
	return sum
}

// window describes the process's and the system's state over [from, to].
func (m *soakMonitor) window(from, to time.Time) string {
	m.mu.Lock()
	var maxLate time.Duration
	for _, l := range m.late {
		if !l.at.Before(from) && !l.at.After(to.Add(soakTick)) {
			maxLate = max(maxLate, l.late)
		}
	}
	// The samples around the window: the last at or before from, the first at or after to.
	var a, b *soakSample
	for i := range m.samples {
		s := &m.samples[i]
		if !s.at.After(from) || a == nil {
			a = s
		}
		if b == nil && !s.at.Before(to) {
			b = s
		}
	}
	if b == nil && len(m.samples) > 0 {
		b = &m.samples[len(m.samples)-1]
	}
	m.mu.Unlock()
	late := m.lateness(from, to)
	out := fmt.Sprintf("heartbeat late %v in all (longest %v)", late.Round(time.Millisecond), maxLate.Round(time.Millisecond))
	if a != nil && b != nil && b.at.After(a.at) {
		wall := b.at.Sub(a.at)
		out += fmt.Sprintf("; over %v: process CPU %v, its threads waited %v for a CPU, system CPU pressure %.0f%%, load %s..%s",
			wall.Round(time.Millisecond), (b.cpu - a.cpu).Round(time.Millisecond), (b.runq - a.runq).Round(time.Millisecond),
			100*float64(b.psi-a.psi)/float64(wall), a.load1, b.load1)
	}
	return out
}

// threadsRunqWait returns the time the process's threads spent runnable but
// waiting for a CPU (the second field of /proc/self/task/*/schedstat), summed.
func threadsRunqWait() time.Duration {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return 0
	}
	var sum time.Duration
	for _, e := range tasks {
		b, err := os.ReadFile(filepath.Join("/proc/self/task", e.Name(), "schedstat"))
		if err != nil {
			continue
		}
		if f := strings.Fields(string(b)); len(f) >= 2 {
			ns, _ := strconv.ParseInt(f[1], 10, 64)
			sum += time.Duration(ns)
		}
	}
	return sum
}

// cpuPressure returns the system's total time some task waited for a CPU
// (/proc/pressure/cpu "some total=", microseconds), 0 if unknown.
func cpuPressure() time.Duration {
	f, err := os.Open("/proc/pressure/cpu")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "some "); ok {
			for _, kv := range strings.Fields(rest) {
				if v, ok := strings.CutPrefix(kv, "total="); ok {
					us, _ := strconv.ParseInt(v, 10, 64)
					return time.Duration(us) * time.Microsecond
				}
			}
		}
	}
	return 0
}

// loadAvg returns the 1, 5 and 15 minute load averages.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

// uptime returns uptime(1)'s output, or the load averages if it cannot run.
func uptime() string {
	out, err := exec.Command("uptime").Output()
	if err != nil {
		return "load average: " + loadAvg()
	}
	return strings.TrimSpace(string(out))
}

// procStatus returns a size field of /proc/self/status ("VmRSS", "VmHWM") in bytes; 0 if unknown.
func procStatus(field string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(v)
			if len(f) == 0 {
				return 0
			}
			kb, _ := strconv.ParseInt(f[0], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// goroutineStacks returns the stacks of every goroutine, one string each.
func goroutineStacks() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Split(string(buf[:n]), "\n\n")
		}
		buf = make([]byte, 2*len(buf))
	}
}

// newGoroutines returns the stacks of now whose goroutine ID is not in
// before, at most limit bytes.
func newGoroutines(before, now []string, limit int) string {
	id := func(s string) string { // "goroutine 123 [running]:" -> "123"
		f := strings.Fields(s)
		if len(f) < 2 {
			return s
		}
		return f[1]
	}
	old := map[string]bool{}
	for _, s := range before {
		old[id(s)] = true
	}
	var b strings.Builder
	for _, s := range now {
		if old[id(s)] {
			continue
		}
		if b.Len()+len(s) > limit {
			b.WriteString("…\n")
			break
		}
		b.WriteString(s + "\n\n")
	}
	return b.String()
}
