package integration

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/regfs/regfs/internal/fixture"
	"github.com/regfs/regfs/internal/testenv"
)

// This file holds the decompression bombs of DESIGN.md section 4 through a real
// mount: a file of GiBs of zeros in a gzip layer and in a single-frame zstd
// layer with a 64 MiB window must be indexed in bounded time and memory, stat
// at their full size and read near their end; a zstd layer whose frame needs a
// 512 MiB window must make its platform answer EIO while the other platforms
// of the same index keep working.

const (
	bombRepo     = "bomb/app"
	bombTag      = "1"
	bombFile     = "bomb/zeros" // the bomb: bombSize() zero bytes
	bombTail     = "bomb/tail"  // an entry after the bomb
	bombTailBody = "after the bomb\n"

	bombGzipPlatform   = "linux/amd64"
	bombZstdPlatform   = "linux/arm64"
	bombWindowPlatform = "linux/riscv64"

	bombZstdWindow = 64 << 20  // the zstd bomb's window: within the 128 MiB bound
	bombHugeWindow = 512 << 20 // the refused layer's window
	bombMaxIndex   = 60 * time.Second
)

// bombMaxRSSGrowth bounds the growth of the peak RSS while one bomb is indexed and
// read: 300 MiB, or 768 MiB under -race, whose shadow memory multiplies the heap (the
// zstd bomb's 64 MiB window alone grows the peak by about 270 MiB there).
func bombMaxRSSGrowth() int64 {
	if raceEnabled {
		return 768 << 20
	}
	return 300 << 20
}

// bombSize is the size of the file of zeros: 2 GiB, or 256 MiB under -race,
// which slows decoding and inflates memory several times.
func bombSize() int64 {
	if raceEnabled {
		return 256 << 20
	}
	return 2 << 30
}

// TestBombs pushes one index of three platforms (a gzip bomb, a zstd bomb and a
// layer needing a 512 MiB zstd window) and checks each through one mount. It
// logs the time to index each bomb and the growth of the process's peak RSS
// (the FUSE server runs in the test process).
func TestBombs(t *testing.T) {
	testenv.RequireFUSE(t)
	size := bombSize()
	start := time.Now()
	gz, zs := bombLayers(t, size)
	window := bombWindowLayer(t)
	t.Logf("fixture: %d MiB of zeros -> gzip %d KiB, zstd %d KiB (window %d MiB), built in %v",
		size>>20, gz.size()>>10, zs.size()>>10, bombZstdWindow>>20, time.Since(start).Round(time.Millisecond))

	srv := testenv.InProcessRegistry(t)
	var imgs []v1.Image
	for _, p := range []struct {
		platform string
		layer    *bombLayer
	}{{bombGzipPlatform, gz}, {bombZstdPlatform, zs}, {bombWindowPlatform, window}} {
		img, err := fixture.Image(fixture.OCI, fixture.Platform(p.platform), p.layer)
		if err != nil {
			t.Fatal(err)
		}
		imgs = append(imgs, img)
	}
	idx, err := fixture.Index(fixture.OCI, imgs...)
	if err != nil {
		t.Fatal(err)
	}
	item := fixture.Item{Repo: bombRepo, Tags: []string{bombTag}, Object: idx}
	if err := (fixture.Set{item}).Push(context.Background(), srv.DirectHost()); err != nil {
		t.Fatal(err)
	}

	logs := &bombLog{}
	m := mountRegfs(t, mountConfig{registry: srv.Host(), logOut: logs})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("regfs log:\n%s", logs)
		}
	})

	for _, tc := range []struct{ name, platform string }{
		{"gzip", bombGzipPlatform},
		{"zstd", bombZstdPlatform},
	} {
		t.Run(tc.name, func(t *testing.T) { bombCheck(t, m, tc.platform, size) })
	}
	t.Run("zstd-window-512MiB", func(t *testing.T) {
		_, err := os.ReadDir(bombPath(m, bombWindowPlatform))
		bombErrno(t, "ls rootfs", err, syscall.EIO)
		_, err = os.Stat(bombPath(m, bombWindowPlatform, "etc", "hostname"))
		bombErrno(t, "stat rootfs/etc/hostname", err, syscall.EIO)
		image := srv.Host() + "/" + bombRepo + ":" + bombTag
		if ln := logs.line("image="+image+" ", "platform="+bombWindowPlatform+" ", window.digest.Hex, "zstd window larger"); ln == "" {
			t.Errorf("no log line names image %s, platform %s, layer %s and the zstd window", image, bombWindowPlatform, window.digest)
		} else {
			t.Logf("log: %s", ln)
		}
		// The other platforms of the same index are unaffected.
		for _, p := range []string{bombGzipPlatform, bombZstdPlatform} {
			if fi, err := os.Stat(bombPath(m, p, bombFile)); err != nil || fi.Size() != size {
				t.Errorf("%s: stat %s = %v, %v; want size %d", p, bombFile, fi, err, size)
			}
			if b, err := os.ReadFile(bombPath(m, p, bombTail)); err != nil || string(b) != bombTailBody {
				t.Errorf("%s: cat %s = %q, %v; want %q", p, bombTail, b, err, bombTailBody)
			}
		}
	})
}

// bombCheck indexes and reads the bomb of one platform, and checks time and memory.
func bombCheck(t *testing.T, m *mounted, platform string, size int64) {
	t.Helper()
	rss := bombRSSStart(t)
	start := time.Now()
	fi, err := os.Stat(bombPath(m, platform, bombFile)) // the merge needs the whole index
	indexed := time.Since(start)
	if err != nil {
		t.Fatalf("stat %s: %v", bombFile, err)
	}
	if fi.Size() != size {
		t.Errorf("stat %s: size %d, want %d", bombFile, fi.Size(), size)
	}
	if indexed > bombMaxIndex {
		t.Errorf("indexing %d MiB of zeros took %v, want < %v", size>>20, indexed, bombMaxIndex)
	}

	f, err := os.Open(bombPath(m, platform, bombFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	start = time.Now()
	buf := make([]byte, 4096)
	for _, off := range []int64{size - 3*4096 - 100, size - 4096} {
		n, err := f.ReadAt(buf, off)
		if n != len(buf) || err != nil {
			t.Fatalf("pread %d at %d: %d, %v", len(buf), off, n, err)
		}
		if i := bytes.IndexFunc(buf, func(r rune) bool { return r != 0 }); i >= 0 {
			t.Fatalf("pread at %d: byte %d is %#x, want zeros", off, off+int64(i), buf[i])
		}
	}
	if n, err := f.ReadAt(buf, size); n != 0 || err != io.EOF {
		t.Errorf("pread at the end: %d, %v; want 0, EOF", n, err)
	}
	readEnd := time.Since(start)
	if b, err := os.ReadFile(bombPath(m, platform, bombTail)); err != nil || string(b) != bombTailBody {
		t.Errorf("cat %s = %q, %v; want %q", bombTail, b, err, bombTailBody)
	}
	growth := rss.growth(t)
	t.Logf("%s: %d MiB of zeros indexed in %v (%.0f MiB/s), 2 reads near the end in %v, peak RSS growth %d MiB%s",
		platform, size>>20, indexed.Round(time.Millisecond), float64(size>>20)/indexed.Seconds(),
		readEnd.Round(time.Microsecond), growth>>20, rss.note)
	if growth > bombMaxRSSGrowth() {
		t.Errorf("peak RSS grew by %d MiB, want < %d MiB", growth>>20, bombMaxRSSGrowth()>>20)
	}
}

// bombPath is the path of a platform's rootfs of bombRepo:bombTag, joined with
// rest (slash-separated names allowed).
func bombPath(m *mounted, platform string, rest ...string) string {
	parts := append(strings.Split(bombRepo, "/"), bombTag)
	parts = append(parts, strings.Split(platform, "/")...)
	parts = append(parts, "rootfs")
	for _, r := range rest {
		parts = append(parts, strings.Split(r, "/")...)
	}
	return m.path(parts...)
}

// bombErrno fails the test unless err is the errno want.
func bombErrno(t *testing.T, what string, err error, want syscall.Errno) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: %v, want %v", what, err, want)
	}
}

// bombLayers returns a gzip and a single-frame zstd layer of one tar stream: the
// directory bomb/, bombFile of size zeros and bombTail. The tar is streamed
// into both compressors and a hash at once; nothing holds it whole.
func bombLayers(t *testing.T, size int64) (gz, zs *bombLayer) {
	t.Helper()
	var gzBuf, zsBuf bytes.Buffer
	gw, err := gzip.NewWriterLevel(&gzBuf, gzip.DefaultCompression)
	if err != nil {
		t.Fatal(err)
	}
	zw, err := zstd.NewWriter(&zsBuf, zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(bombZstdWindow))
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	tw := tar.NewWriter(io.MultiWriter(h, gw, zw))
	hdrs := []*tar.Header{
		{Typeflag: tar.TypeDir, Name: "bomb/", Mode: 0o755},
		{Typeflag: tar.TypeReg, Name: bombFile, Mode: 0o644, Size: size},
		{Typeflag: tar.TypeReg, Name: bombTail, Mode: 0o644, Size: int64(len(bombTailBody))},
	}
	zeros := make([]byte, 1<<20)
	for _, hdr := range hdrs {
		hdr.ModTime, hdr.Format = fixture.Epoch(), tar.FormatUSTAR
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		var err error
		switch hdr.Name {
		case bombFile:
			for left := size; left > 0 && err == nil; left -= int64(len(zeros)) {
				_, err = tw.Write(zeros[:min(left, int64(len(zeros)))])
			}
		case bombTail:
			_, err = io.WriteString(tw, bombTailBody)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []io.Closer{tw, gw, zw} {
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	diffID := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
	return newBombLayer(gzBuf.Bytes(), diffID, types.OCILayer), newBombLayer(zsBuf.Bytes(), diffID, types.OCILayerZStd)
}

// bombWindowLayer returns a zstd layer (etc/hostname and 1 MiB of noise) whose
// frame header declares a 512 MiB window, as an encoder with that window would
// write it. The data itself is encoded with a 1 MiB window, which a 512 MiB one
// contains, so the stream is valid; the test checks that it decodes under a
// 512 MiB bound and is refused under 128 MiB, so that the mount's EIO can only
// be the window.
func bombWindowLayer(t *testing.T) *bombLayer {
	t.Helper()
	raw, err := fixture.Tar([]fixture.Entry{
		fixture.Dir("etc/", 0),
		fixture.File("etc/hostname", "window\n", 0),
		{Name: "etc/noise", Body: fixture.GeneratedBytes(7, 1<<20)},
	})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	zw, err := zstd.NewWriter(&b, zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(1<<20))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := zw.Write(raw); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	blob := b.Bytes()
	// Frame header (RFC 8878 3.1.1.1): magic, descriptor, then the window
	// descriptor unless the frame is single-segment (bit 5 of the descriptor).
	if len(blob) < 6 || blob[4]&0x20 != 0 {
		t.Fatalf("zstd frame has no window descriptor: % x", blob[:min(len(blob), 8)])
	}
	blob[5] = 19 << 3 // exponent 19, mantissa 0: 1<<(10+19) = 512 MiB
	for _, c := range []struct {
		max     uint64
		wantErr bool
	}{{bombHugeWindow, false}, {128 << 20, true}} {
		d, err := zstd.NewReader(bytes.NewReader(blob), zstd.WithDecoderMaxWindow(c.max), zstd.WithDecoderConcurrency(1))
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(d)
		d.Close()
		switch {
		case c.wantErr && !errors.Is(err, zstd.ErrWindowSizeExceeded):
			t.Fatalf("decoding under a %d MiB bound: %v, want %v", c.max>>20, err, zstd.ErrWindowSizeExceeded)
		case !c.wantErr && (err != nil || !bytes.Equal(got, raw)):
			t.Fatalf("decoding under a %d MiB bound: %d bytes, %v; want the tar back", c.max>>20, len(got), err)
		}
	}
	runtime.GC() // the check's decoder history is garbage now
	diffID := v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", sha256.Sum256(raw))}
	return newBombLayer(blob, diffID, types.OCILayerZStd)
}

// bombLayer is a compressed layer held in memory whose diff ID is given (its tar
// is too large to hash again). Immutable; safe for concurrent use.
type bombLayer struct {
	blob           []byte
	digest, diffID v1.Hash
	mt             types.MediaType
}

var _ v1.Layer = (*bombLayer)(nil)

func newBombLayer(blob []byte, diffID v1.Hash, mt types.MediaType) *bombLayer {
	d := v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", sha256.Sum256(blob))}
	return &bombLayer{blob: blob, digest: d, diffID: diffID, mt: mt}
}

func (l *bombLayer) size() int64                         { return int64(len(l.blob)) }
func (l *bombLayer) Digest() (v1.Hash, error)            { return l.digest, nil }
func (l *bombLayer) DiffID() (v1.Hash, error)            { return l.diffID, nil }
func (l *bombLayer) Size() (int64, error)                { return l.size(), nil }
func (l *bombLayer) MediaType() (types.MediaType, error) { return l.mt, nil }
func (l *bombLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.blob)), nil
}
func (l *bombLayer) Uncompressed() (io.ReadCloser, error) { return l.decompressor() }

func (l *bombLayer) decompressor() (io.ReadCloser, error) {
	r := bytes.NewReader(l.blob)
	if l.mt == types.OCILayerZStd {
		d, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("bomb layer %s: %w", l.digest, err)
		}
		return d.IOReadCloser(), nil
	}
	zr, err := gzip.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("bomb layer %s: %w", l.digest, err)
	}
	return zr, nil
}

// bombRSS measures the growth of the process's peak resident set size across
// part of a test.
type bombRSS struct {
	base int64  // bytes: the RSS once the peak was reset, or the old peak
	note string // how base was taken, when not by a reset
}

// bombRSSStart frees what the heap can give back and resets the kernel's peak
// RSS mark (VmHWM) to the current RSS by writing 5 to /proc/self/clear_refs.
// Where that fails, growth is measured from the earlier peak, which understates it.
func bombRSSStart(t *testing.T) bombRSS {
	t.Helper()
	runtime.GC()
	debug.FreeOSMemory()
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		return bombRSS{base: bombProcStatus(t, "VmHWM"), note: fmt.Sprintf(" (from the earlier peak: %v)", err)}
	}
	return bombRSS{base: bombProcStatus(t, "VmRSS")}
}

// growth returns how far the peak RSS rose above the base.
func (r bombRSS) growth(t *testing.T) int64 {
	t.Helper()
	return max(0, bombProcStatus(t, "VmHWM")-r.base)
}

// bombProcStatus returns a "kB" field of /proc/self/status in bytes.
func bombProcStatus(t *testing.T, field string) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("/proc/self/status %s: %v", field, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("/proc/self/status has no %s (%v)", field, sc.Err())
	return 0
}

// bombLog collects regfs's log lines. Safe for concurrent use.
type bombLog struct {
	mu  sync.Mutex
	buf bytes.Buffer // guarded by mu
}

func (l *bombLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *bombLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// line returns the first log line containing every one of subs, or "".
func (l *bombLog) line(subs ...string) string {
	for ln := range strings.Lines(l.String()) {
		ok := true
		for _, s := range subs {
			ok = ok && strings.Contains(ln, s)
		}
		if ok {
			return strings.TrimSpace(ln)
		}
	}
	return ""
}
