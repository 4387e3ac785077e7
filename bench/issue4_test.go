package main

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/regfs/regfs/internal/fixture"
)

func TestParseFigures(t *testing.T) {
	tests := []struct {
		in      string
		want    []string
		wantErr bool
	}{
		{in: "all", want: groupNames()},
		{in: "refetch,diff", want: []string{"refetch", "diff"}},
		{in: " bound , bound ", want: []string{"bound"}},
		{in: "rootfs,all", want: groupNames()},
		{in: "nope", wantErr: true},
		{in: "refetch,nope", wantErr: true},
		{in: "", wantErr: true},
		{in: ",", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseFigures(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseFigures(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("parseFigures(%q) = %v, want %v", tt.in, got, tt.want)
			}
			for _, w := range tt.want {
				if !got[w] {
					t.Errorf("parseFigures(%q) = %v, lacks %s", tt.in, got, w)
				}
			}
		})
	}
}

func TestParseRange(t *testing.T) {
	tests := []struct {
		in     string
		lo, hi int64
		ok     bool
	}{
		{"bytes=0-99", 0, 100, true},
		{"bytes=65536-131071", 65536, 131072, true},
		{"bytes=10-", 10, 1 << 62, true},
		{"", 0, 0, false},
		{"bytes=5-4", 0, 0, false},
		{"bytes=0-1,5-6", 0, 0, false},
		{"items=0-1", 0, 0, false},
		{"bytes=-500", 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			lo, hi, ok := parseRange(tt.in)
			if lo != tt.lo || hi != tt.hi || ok != tt.ok {
				t.Errorf("parseRange(%q) = %d, %d, %v; want %d, %d, %v", tt.in, lo, hi, ok, tt.lo, tt.hi, tt.ok)
			}
		})
	}
}

// writeTestLayer writes a gzip layer (a few files, then a 3 MiB file) to a
// temporary file and returns its path and the big file's contents.
func writeTestLayer(t *testing.T) (string, []byte) {
	t.Helper()
	big := fixture.GeneratedBytes(7, 3<<20+123)
	l, err := fixture.Layer(fixture.Gzip, fixture.OCI,
		fixture.File("etc/a", strings.Repeat("a line of text\n", 1000), 0o644),
		fixture.Dir("data", 0o755),
		fixture.File("data/big.bin", string(big), 0o644),
		fixture.File("etc/z", "after\n", 0o644),
	)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "layer.tar.gz")
	if err := writeBlob(l, path); err != nil {
		t.Fatal(err)
	}
	return path, big
}

func TestScanLayer(t *testing.T) {
	path, big := writeTestLayer(t)
	s, err := scanLayer(path, "data/big.bin", big)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.cps) < 3 || s.cps[0].Out != 0 {
		t.Fatalf("checkpoints: got %d starting at %d, want >= 3 starting at 0", len(s.cps), s.cps[0].Out)
	}
	if s.bigOff <= 0 || s.bigOff%512 != 0 || s.bigOff+int64(len(big)) > s.out {
		t.Errorf("big file at %d of %d: not a data offset", s.bigOff, s.out)
	}
	// One byte in the middle of a span needs that span alone; a range across a
	// checkpoint needs both spans around it.
	lo, hi, in0, in1 := s.spanOf(1)
	if c, n := s.spans(lo+(hi-lo)/2, 1); c != in1-in0 || n != 1 {
		t.Errorf("spans(middle of span 1) = %d, %d; want %d, 1", c, n, in1-in0)
	}
	_, _, _, in2 := s.spanOf(2)
	if c, n := s.spans(hi-10, 20); c != in2-in0 || n != 2 {
		t.Errorf("spans(across checkpoint 2) = %d, %d; want %d, 2", c, n, in2-in0)
	}
	if c, n := s.spans(s.out-1, 1); n != 1 || c != s.size-s.cps[len(s.cps)-1].In {
		t.Errorf("spans(last byte) = %d, %d; want to the blob's end, 1", c, n)
	}

	wrong := bytes.Clone(big)
	wrong[len(wrong)/2+100] ^= 1
	if _, err := scanLayer(path, "data/big.bin", wrong); err == nil {
		t.Error("scanLayer with other bytes than the file's: no error")
	}
	if _, err := scanLayer(path, "data/none", big); err == nil {
		t.Error("scanLayer of a missing file: no error")
	}
}

func TestCheckDiff(t *testing.T) {
	out := []byte(`diff -r --no-dereference /m/a/etc/motd /m/b/etc/motd
1c1
< arm64
---
> amd64
File /m/a/dev/null is a character special file while file /m/b/dev/null is a character special file
Only in /m/a/opt: arm64.txt
`)
	want := []string{"diff -r --no-dereference A/etc/motd B/etc/motd", "Only in A/opt: arm64.txt"}
	got, err := checkDiff(out, "/m/a", "/m/b", want)
	if err != nil {
		t.Fatal(err)
	}
	if wantOut := "diff -r --no-dereference A/etc/motd B/etc/motd\n1c1\n< arm64\n---\n> amd64\nOnly in A/opt: arm64.txt\n"; got != wantOut {
		t.Errorf("checkDiff = %q, want %q", got, wantOut)
	}
	if _, err := checkDiff(out, "/m/a", "/m/b", append(want, "Only in B/opt: amd64.txt")); err == nil {
		t.Error("checkDiff without a wanted line: no error")
	}
}

func TestIndexedLine(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, f func(*slog.Logger)) string {
		t.Helper()
		path := filepath.Join(dir, name)
		w, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		f(slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})))
		return path
	}
	indexed := func(digest string, bytes int64) func(*slog.Logger) {
		return func(l *slog.Logger) {
			l.Info("cache: opened", "dir", "/x y")
			l.Debug("layer indexed", "digest", digest, "format", "gzip", "bytes", bytes, "uncompressed", int64(300),
				"entries", 3, "restarts", 2, "elapsed", 1500*time.Millisecond, "MBps", 66.7)
		}
	}
	good := write("good", indexed("sha256:ab", 100))
	if d, err := indexedLine(good, "sha256:ab", 100, 300); err != nil || d != 1500*time.Millisecond {
		t.Errorf("indexedLine = %v, %v; want 1.5s", d, err)
	}
	if _, err := indexedLine(good, "sha256:cd", 100, 300); err == nil {
		t.Error("indexedLine of another digest: no error")
	}
	if _, err := indexedLine(write("short", indexed("sha256:ab", 99)), "sha256:ab", 100, 300); err == nil {
		t.Error("indexedLine with the wrong byte count: no error")
	}
}

func TestDiskUsage(t *testing.T) {
	dir := t.TempDir()
	for name, size := range map[string]int{"a": 10, "v1/chunk/aa/x.0": 1000, "v1/index/bb/y": 5} {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, make([]byte, size), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := diskUsage(dir); err != nil || got != 1015 {
		t.Errorf("diskUsage = %d, %v; want 1015", got, err)
	}
	s := sampleDiskUsage(dir, time.Millisecond, slog.New(slog.DiscardHandler))
	time.Sleep(10 * time.Millisecond)
	if peak, n, err := s.Stop(); peak != 1015 || n < 2 || err != nil {
		t.Errorf("sampler: peak %d, %d samples, %v; want 1015, >= 2, nil", peak, n, err)
	}
}

func TestFileNear(t *testing.T) {
	entries := []fixture.Entry{
		fixture.Dir("d", 0o755),
		fixture.File("d/small", "x", 0o644),
		fixture.File("d/near", strings.Repeat("n", 4000), 0o644),
		{Name: "d/opened", Kind: fixture.KindFile, Size: 4100, Open: func() (io.ReadCloser, error) {
			return io.NopCloser(strings.NewReader(strings.Repeat("o", 4100))), nil
		}},
		fixture.File("d/big", strings.Repeat("b", 9000), 0o644),
	}
	name, body, err := fileNear(entries, 4096)
	if err != nil || name != "d/opened" || len(body) != 4100 {
		t.Errorf("fileNear = %s, %d bytes, %v; want d/opened, 4100", name, len(body), err)
	}
}

func TestRandomBytes(t *testing.T) {
	a, _ := io.ReadAll(randomBytes(1, 1000))
	b, _ := io.ReadAll(randomBytes(1, 1000))
	c, _ := io.ReadAll(randomBytes(2, 1000))
	if len(a) != 1000 || !bytes.Equal(a, b) || bytes.Equal(a, c) {
		t.Errorf("randomBytes: %d bytes, same seed equal %v, other seed equal %v; want 1000, true, false",
			len(a), bytes.Equal(a, b), bytes.Equal(a, c))
	}
}
