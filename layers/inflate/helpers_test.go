package inflate

import (
	"archive/tar"
	"bytes"
	stdgzip "compress/gzip"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	kgzip "github.com/klauspost/compress/gzip"
)

// textContent returns n bytes of log- and source-like lines.
func textContent(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 7))
	words := []string{"func", "return", "err", "nil", "if", "for", "range", "context", "reader", "offset",
		"checkpoint", "window", "layer", "digest", "sha256", "manifest", "config", "cache", "chunk", "span"}
	levels := []string{"INFO", "WARN", "DEBUG", "ERROR"}
	b := make([]byte, 0, n+256)
	for len(b) < n {
		if rng.IntN(3) == 0 {
			b = fmt.Appendf(b, "\t%s := %s(%s, %d)\n", words[rng.IntN(len(words))], words[rng.IntN(len(words))],
				words[rng.IntN(len(words))], rng.IntN(4096))
			continue
		}
		b = fmt.Appendf(b, "2024-%02d-%02dT%02d:%02d:%02dZ %s service=%s req=%08x path=/v2/%s/%s latency=%dms\n",
			1+rng.IntN(12), 1+rng.IntN(28), rng.IntN(24), rng.IntN(60), rng.IntN(60), levels[rng.IntN(len(levels))],
			words[rng.IntN(len(words))], rng.Uint32(), words[rng.IntN(len(words))], words[rng.IntN(len(words))], rng.IntN(900))
	}
	return b[:n]
}

// randomContent returns n incompressible bytes (compressors store them).
func randomContent(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 11))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// mixedTar returns a tar of alternating random files (as .deb or .png would be) and
// text files, about size bytes in all.
func mixedTar(t testing.TB, size int, seed uint64) []byte {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 13))
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for i := 0; buf.Len() < size; i++ {
		var name string
		var body []byte
		n := 1 + rng.IntN(size/8)
		switch i % 3 {
		case 0:
			name, body = fmt.Sprintf("usr/share/pkg/file%d.deb", i), randomContent(n, seed+uint64(i))
		case 1:
			name, body = fmt.Sprintf("etc/conf%d.txt", i), textContent(n, seed+uint64(i))
		default:
			name, body = fmt.Sprintf("small%d", i), textContent(rng.IntN(700), seed+uint64(i))
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// compressor makes a gzip file of its input.
type compressor struct {
	name string
	bin  string // binary it needs, if any
	fn   func(t testing.TB, data []byte) []byte
}

func goGzip(level int, hdr stdgzip.Header) func(testing.TB, []byte) []byte {
	return func(t testing.TB, data []byte) []byte {
		t.Helper()
		var buf bytes.Buffer
		zw, err := stdgzip.NewWriterLevel(&buf, level)
		if err != nil {
			t.Fatal(err)
		}
		zw.Header = hdr
		if _, err := zw.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
}

func klauspostGzip(level int) func(testing.TB, []byte) []byte {
	return func(t testing.TB, data []byte) []byte {
		t.Helper()
		var buf bytes.Buffer
		zw, err := kgzip.NewWriterLevel(&buf, level)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := zw.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
}

// binGzip runs a gzip-compatible binary on a named file (so the header has FNAME).
func binGzip(bin string, args ...string) func(testing.TB, []byte) []byte {
	return func(t testing.TB, data []byte) []byte {
		t.Helper()
		path := filepath.Join(t.TempDir(), "layer.tar")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, append(append([]string{"-c"}, args...), path)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s %v: %v: %s", bin, args, err, stderr.Bytes())
		}
		return out
	}
}

// withHeaderCRC rewrites a gzip member with no optional fields so that its header
// carries FNAME, FCOMMENT, FEXTRA and FHCRC.
func withHeaderCRC(t testing.TB, gz []byte) []byte {
	t.Helper()
	if len(gz) < 10 || gz[3] != 0 {
		t.Fatalf("withHeaderCRC wants a plain header, flags %#x", gz[3])
	}
	h := append([]byte(nil), gz[:10]...)
	h[3] = flagHCRC | flagExtra | flagName | flagComment
	h = append(h, 5, 0, 'A', 'B', 2, 0, 'x') // XLEN 5: one subfield "AB" of 1 byte
	h = append(h, "name.tar\x00a comment\x00"...)
	crc := crc32IEEE(h)
	h = append(h, byte(crc), byte(crc>>8))
	return append(h, gz[10:]...)
}

func requireBinary(t testing.TB, bin string) {
	t.Helper()
	if bin == "" {
		return
	}
	if _, err := exec.LookPath(bin); err != nil {
		t.Skipf("%s not installed", bin)
	}
}

// countingSource counts the bytes a Resume reads.
type countingSource struct {
	r io.Reader
	n int64
}

func (c *countingSource) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// scanAll scans gz and returns the output and the checkpoints.
func scanAll(t testing.TB, gz []byte, span int64) ([]byte, []Checkpoint) {
	t.Helper()
	var out bytes.Buffer
	var cps []Checkpoint
	n, err := Scan(bytes.NewReader(gz), &out, span, func(cp Checkpoint) error {
		cps = append(cps, cp)
		return nil
	})
	if err != nil {
		t.Fatalf("Scan: %v", err)
	}
	if n != int64(out.Len()) {
		t.Fatalf("Scan returned %d, wrote %d", n, out.Len())
	}
	return out.Bytes(), cps
}

func crc32IEEE(b []byte) uint32 { return crc32.ChecksumIEEE(b) }
