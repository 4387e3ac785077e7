package layers

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	kgzip "github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// memBlob is an in-memory BlobReader that counts its reads.
type memBlob struct {
	b     []byte
	reads atomic.Int64
	bytes atomic.Int64
}

func (m *memBlob) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	m.reads.Add(1)
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	if off >= int64(len(m.b)) {
		return 0, io.EOF
	}
	n := copy(p, m.b[off:])
	m.bytes.Add(int64(n))
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *memBlob) Size() int64 { return int64(len(m.b)) }

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// file is one entry of a test tar.
type file struct {
	hdr  tar.Header
	data []byte
}

// randomData returns n bytes: random words (compressible about 3:1) or random bytes.
func randomData(r *rand.Rand, n int, compressible bool) []byte {
	b := make([]byte, n+8)
	words := []string{"layer \n", "index  ", "gzip   ", "zstd   ", "tar    ", "regfs  ", "check  ", "point\n "}
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		if compressible {
			copy(b[i:], words[v%uint64(len(words))])
			b[i+7] = byte('a' + (v>>8)%4)
		} else {
			binary.LittleEndian.PutUint64(b[i:], v)
		}
	}
	return b[:n]
}

// testFiles returns a varied set of entries: many small files, a few large ones,
// directories, links, PAX xattrs and a long name.
func testFiles(seed uint64, bigSize int) []file {
	r := rand.New(rand.NewPCG(seed, 1))
	mt := time.Unix(1700000000, 0)
	fs := []file{
		{hdr: tar.Header{Name: "global", Typeflag: tar.TypeXGlobalHeader, PAXRecords: map[string]string{"comment": "a global header"}}},
		{hdr: tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt}},
		{hdr: tar.Header{Name: "etc/passwd", Typeflag: tar.TypeReg, Mode: 0o644, ModTime: mt},
			data: []byte("root:x:0:0:root:/root:/bin/sh\n")},
		{hdr: tar.Header{Name: "etc/link", Typeflag: tar.TypeSymlink, Linkname: "passwd", ModTime: mt}},
		{hdr: tar.Header{Name: "etc/hard", Typeflag: tar.TypeLink, Linkname: "etc/passwd", ModTime: mt}},
		{hdr: tar.Header{Name: "empty", Typeflag: tar.TypeReg, Mode: 0o600, ModTime: mt}},
		{hdr: tar.Header{Name: "dev/null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3, Mode: 0o666, ModTime: mt}},
		{hdr: tar.Header{Name: "xattr", Typeflag: tar.TypeReg, Mode: 0o4755, Uid: 1000, Gid: 2000, ModTime: mt,
			PAXRecords: map[string]string{"SCHILY.xattr.security.capability": "\x01\x02", "SCHILY.xattr.user.empty": ""},
			Format:     tar.FormatPAX}, data: []byte("with xattrs")},
		{hdr: tar.Header{Name: string(bytes.Repeat([]byte("long/"), 60)) + "name", Typeflag: tar.TypeReg, Mode: 0o644,
			ModTime: mt, Format: tar.FormatGNU}, data: []byte("long name")},
		{hdr: tar.Header{Name: "pax-size", Typeflag: tar.TypeReg, Mode: 0o644, Uid: 1 << 22, ModTime: time.Unix(1700000000, 123456789),
			Format: tar.FormatPAX}, data: []byte("pax")},
	}
	for i := range 200 {
		fs = append(fs, file{hdr: tar.Header{Name: fmt.Sprintf("small/%03d", i), Typeflag: tar.TypeReg, Mode: 0o644, ModTime: mt},
			data: randomData(r, r.IntN(5000), i%2 == 0)})
	}
	for i := range 3 {
		fs = append(fs, file{hdr: tar.Header{Name: fmt.Sprintf("big/%d", i), Typeflag: tar.TypeReg, Mode: 0o644, ModTime: mt},
			data: randomData(r, bigSize+r.IntN(4096), i != 1)})
	}
	return fs
}

func makeTar(t testing.TB, fs []file) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range fs {
		h := f.hdr
		h.Size = int64(len(f.data))
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("tar header %s: %v", h.Name, err)
		}
		if _, err := tw.Write(f.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzipStd(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzipKlauspost(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, _ := kgzip.NewWriterLevel(&buf, kgzip.BestSpeed)
	w.Write(b)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// gzipMembers compresses b as several gzip members of about n bytes each.
func gzipMembers(t testing.TB, b []byte, n int) []byte {
	t.Helper()
	var out []byte
	for len(b) > 0 {
		k := min(n, len(b))
		out = append(out, gzipStd(t, b[:k])...)
		b = b[k:]
	}
	return out
}

func zstdFrames(t testing.TB, b []byte, frameSize int, skippable bool) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	var out []byte
	if frameSize <= 0 {
		frameSize = len(b)
	}
	for len(b) > 0 {
		k := min(frameSize, len(b))
		if skippable {
			out = append(out, 0x5a, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 'a', 'b', 'c')
		}
		out = enc.EncodeAll(b[:k], out)
		b = b[k:]
	}
	return out
}

// zstdStream compresses b with the streaming encoder: one frame without a content size.
func zstdStream(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc, err := zstd.NewWriter(&buf, zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	enc.Write(b)
	if err := enc.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// refEntry is an entry as archive/tar reads it, with its full content.
type refEntry struct {
	hdr  *tar.Header
	data []byte
}

func readRef(t testing.TB, tarBytes []byte) []refEntry {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(tarBytes))
	var out []refEntry
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil && !errors.Is(err, tar.ErrInsecurePath) {
			t.Fatalf("reference tar: %v", err)
		}
		if h.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		d, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("reference tar %s: %v", h.Name, err)
		}
		out = append(out, refEntry{h, d})
	}
}

// checkLayer compares every entry of x, read through a Layer at many offsets, with
// archive/tar's own reading of tarBytes.
func checkLayer(t *testing.T, x *Index, l *Layer, tarBytes []byte, seed uint64) {
	t.Helper()
	ref := readRef(t, tarBytes)
	if got, want := len(x.Entries), len(ref); got != want {
		t.Fatalf("entries: got %d, want %d", got, want)
	}
	if got, want := x.Size, int64(len(tarBytes)); got != want {
		t.Errorf("Size: got %d, want %d", got, want)
	}
	ctx := context.Background()
	r := rand.New(rand.NewPCG(seed, 2))
	for i := range ref {
		e, w := &x.Entries[i], ref[i]
		if e.Name != w.hdr.Name || e.Size != int64(len(w.data)) || e.Linkname != w.hdr.Linkname ||
			e.Mode != w.hdr.Mode&07777 || e.UID != w.hdr.Uid || e.GID != w.hdr.Gid || !e.ModTime.Equal(w.hdr.ModTime) ||
			e.Devmajor != w.hdr.Devmajor || e.Devminor != w.hdr.Devminor {
			t.Fatalf("entry %d: got %+v, want header %+v size %d", i, *e, *w.hdr, len(w.data))
		}
		all := make([]byte, e.Size+10)
		n, err := l.ReadAt(ctx, e, all, 0)
		if n != len(w.data) || !bytes.Equal(all[:n], w.data) || (err != io.EOF) {
			t.Fatalf("entry %s: full read: n=%d err=%v (want %d, EOF), equal=%v", e.Name, n, err, len(w.data), bytes.Equal(all[:n], w.data))
		}
		for range 4 {
			if e.Size == 0 {
				break
			}
			off := r.Int64N(e.Size)
			ln := r.Int64N(min(e.Size-off, 70000)) + 1
			p := make([]byte, ln)
			n, err := l.ReadAt(ctx, e, p, off)
			if n != int(ln) || err != nil || !bytes.Equal(p, w.data[off:off+ln]) {
				t.Fatalf("entry %s: read %d at %d: n=%d err=%v equal=%v", e.Name, ln, off, n, err, bytes.Equal(p[:n], w.data[off:off+int64(n)]))
			}
		}
	}
}

// mapCache is an in-memory DecodedCache and IndexStore.
type mapCache struct {
	mu   sync.Mutex
	m    map[string][]byte // guarded by mu
	gets int               // guarded by mu
	puts int               // guarded by mu
}

func newMapCache() *mapCache { return &mapCache{m: make(map[string][]byte)} }

func (c *mapCache) get(k string) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gets++
	b, ok := c.m[k]
	if !ok {
		return nil, errors.New("miss")
	}
	return b, nil
}

func (c *mapCache) put(k string, b []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.puts++
	c.m[k] = bytes.Clone(b)
	return nil
}

func (c *mapCache) Get(digest string, n int64) ([]byte, error) { return c.get(fmt.Sprint(digest, n)) }
func (c *mapCache) Put(digest string, n int64, b []byte) error {
	return c.put(fmt.Sprint(digest, n), b)
}

type indexStore struct{ *mapCache }

func (s indexStore) Get(digest string) ([]byte, error) { return s.get(digest) }
func (s indexStore) Put(digest string, b []byte) error { return s.put(digest, b) }

// mustIndex indexes the layer blob b held in memory, failing the test on an error.
func mustIndex(t testing.TB, b []byte, opts ...BuildOption) (*memBlob, *Index) {
	t.Helper()
	blob := &memBlob{b: b}
	x, err := BuildIndex(context.Background(), blob, digestOf(b), nil, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return blob, x
}
