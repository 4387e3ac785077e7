package layers

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestDetectFormat(t *testing.T) {
	tarBytes := makeTar(t, testFiles(1, 10))
	v7 := bytes.Clone(tarBytes[:512])
	copy(v7[257:265], make([]byte, 8)) // no ustar magic: only the checksum says tar
	sum := int64(0)
	for i, c := range v7 {
		if i >= 148 && i < 156 {
			c = ' '
		}
		sum += int64(c)
	}
	copy(v7[148:156], octal(sum))
	tests := []struct {
		name string
		b    []byte
		want Format
		err  error
	}{
		{"gzip", gzipStd(t, tarBytes), FormatGzip, nil},
		{"zstd", zstdFrames(t, tarBytes, 0, false), FormatZstd, nil},
		{"ustar", tarBytes, FormatTar, nil},
		{"v7 checksum only", v7, FormatTar, nil},
		{"empty archive", make([]byte, 1024), FormatTar, nil},
		{"garbage", bytes.Repeat([]byte("garbage!"), 100), 0, ErrUnknownFormat},
		{"short", []byte{0x1f}, 0, ErrUnknownFormat},
		{"empty blob", nil, 0, ErrUnknownFormat},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DetectFormat(context.Background(), &memBlob{b: tt.b})
			if got != tt.want || !errors.Is(err, tt.err) {
				t.Errorf("got %v, %v; want %v, %v", got, err, tt.want, tt.err)
			}
		})
	}
}

func octal(v int64) string {
	s := []byte("0000000\x00")
	for i := 6; i >= 0; i-- {
		s[i] = byte('0' + v&7)
		v >>= 3
	}
	return string(s)
}

// layerCases returns the same tar in every encoding the package reads.
func layerCases(t testing.TB, tarBytes []byte) []struct {
	name string
	blob []byte
	want Format
} {
	return []struct {
		name string
		blob []byte
		want Format
	}{
		{"tar", tarBytes, FormatTar},
		{"gzip std", gzipStd(t, tarBytes), FormatGzip},
		{"gzip klauspost", gzipKlauspost(t, tarBytes), FormatGzip},
		{"gzip multi-member", gzipMembers(t, tarBytes, 300<<10), FormatGzip},
		{"zstd single frame", zstdFrames(t, tarBytes, 0, false), FormatZstd},
		{"zstd stream", zstdStream(t, tarBytes), FormatZstd},
		{"zstd multi-frame", zstdFrames(t, tarBytes, 200<<10, false), FormatZstd},
		{"zstd skippable frames", zstdFrames(t, tarBytes, 500<<10, true), FormatZstd},
	}
}

func TestBuildIndexAndRead(t *testing.T) {
	tarBytes := makeTar(t, testFiles(2, 700<<10))
	for _, tc := range layerCases(t, tarBytes) {
		t.Run(tc.name, func(t *testing.T) {
			blob := &memBlob{b: tc.blob}
			x, err := BuildIndex(context.Background(), blob, digestOf(tc.blob), nil, WithSpan(128<<10))
			if err != nil {
				t.Fatal(err)
			}
			if x.Format != tc.want {
				t.Errorf("format: got %v, want %v", x.Format, tc.want)
			}
			if x.Format != FormatTar && x.RestartPoints() == 0 {
				t.Errorf("no restart points")
			}
			checkLayer(t, x, NewLayer(x, blob, newMapCache(), nil), tarBytes, 7)
			// And through a marshalled copy of the index, without caches.
			raw, err := x.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			var y Index
			if err := y.UnmarshalBinary(raw); err != nil {
				t.Fatal(err)
			}
			if y.RestartPoints() != x.RestartPoints() || len(y.Entries) != len(x.Entries) {
				t.Fatalf("unmarshalled: %d restarts %d entries, want %d, %d", y.RestartPoints(), len(y.Entries), x.RestartPoints(), len(x.Entries))
			}
			checkLayer(t, &y, NewLayer(&y, blob, nil, nil), tarBytes, 8)
		})
	}
}

func TestEntryFields(t *testing.T) {
	tarBytes := makeTar(t, testFiles(3, 10))
	blob := &memBlob{b: gzipStd(t, tarBytes)}
	x, err := BuildIndex(context.Background(), blob, digestOf(blob.b), nil)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*Entry{}
	for i := range x.Entries {
		byName[x.Entries[i].Name] = &x.Entries[i]
	}
	e := byName["xattr"]
	if e == nil || e.Xattrs["security.capability"] != "\x01\x02" || len(e.Xattrs) != 2 || e.Mode != 0o4755 || e.UID != 1000 || e.GID != 2000 {
		t.Errorf("xattr entry: %+v", e)
	}
	if e, ok := byName[strings.Repeat("long/", 60)+"name"]; !ok || e.Size != 9 {
		t.Errorf("long name entry: %+v", e)
	}
	if e := byName["pax-size"]; e == nil || e.UID != 1<<22 || e.ModTime.Nanosecond() != 123456789 {
		t.Errorf("pax entry: %+v", e)
	}
	if e := byName["dev/null"]; e == nil || e.Typeflag != '3' || e.Devmajor != 1 || e.Devminor != 3 {
		t.Errorf("device entry: %+v", e)
	}
	if e := byName["etc/hard"]; e == nil || e.Typeflag != '1' || e.Linkname != "etc/passwd" || e.Size != 0 {
		t.Errorf("hardlink entry: %+v", e)
	}
}

func TestBuildIndexErrors(t *testing.T) {
	tarBytes := makeTar(t, testFiles(4, 300<<10))
	gz := gzipStd(t, tarBytes)
	zs := zstdFrames(t, tarBytes, 0, false)
	// A tar whose header in the middle is corrupt.
	bad := bytes.Clone(tarBytes)
	midHeader := headerOffsets(t, tarBytes)[100]
	bad[midHeader+10] ^= 0x55
	// A zstd frame with a 256 MiB window.
	bigWindow := append([]byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x90, 0x29, 0, 0}, "hello"...)
	corruptGz := bytes.Clone(gz)
	corruptGz[len(gz)/2] ^= 0xff
	tests := []struct {
		name   string
		blob   []byte
		digest string
		is     error
	}{
		{"digest mismatch", gz, digestOf(tarBytes), ErrDigestMismatch},
		{"truncated gzip", gz[:len(gz)/2], "", nil},
		{"corrupt gzip", corruptGz, "", nil},
		{"truncated zstd", zs[:len(zs)-100], "", nil},
		{"truncated tar", tarBytes[:len(tarBytes)/2+100], "", nil},
		{"malformed header in the middle", bad, "", nil},
		{"garbage", bytes.Repeat([]byte{1, 2, 3}, 1000), "", ErrUnknownFormat},
		{"zstd window too large", bigWindow, "", ErrZstdWindow},
		{"gzip of garbage", gzipStd(t, bytes.Repeat([]byte("not a tar"), 100)), "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := tt.digest
			if d == "" {
				d = digestOf(tt.blob)
			}
			x, err := BuildIndex(context.Background(), &memBlob{b: tt.blob}, d, nil)
			if err == nil {
				t.Fatalf("no error; index has %d entries", len(x.Entries))
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v is not %v", err, tt.is)
			}
			if !strings.Contains(err.Error(), d) {
				t.Errorf("error %q does not name the digest", err)
			}
		})
	}
	t.Run("bad digest string", func(t *testing.T) {
		if _, err := BuildIndex(context.Background(), &memBlob{b: gz}, "sha256:xyz", nil); err == nil {
			t.Error("no error")
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := BuildIndex(ctx, &memBlob{b: gz}, digestOf(gz), nil); !errors.Is(err, context.Canceled) {
			t.Errorf("got %v, want context.Canceled", err)
		}
	})
}

// headerOffsets returns the offsets of the header blocks of a tar's entries.
func headerOffsets(t *testing.T, tarBytes []byte) []int64 {
	t.Helper()
	x, err := BuildIndex(context.Background(), &memBlob{b: tarBytes}, digestOf(tarBytes), nil)
	if err != nil {
		t.Fatal(err)
	}
	var offs []int64
	for _, e := range x.Entries {
		if e.Typeflag == '0' && len(e.Name) < 100 {
			offs = append(offs, e.Offset-512)
		}
	}
	return offs
}

func TestSpanFor(t *testing.T) {
	for _, tt := range []struct{ size, want int64 }{
		{0, 1 << 20}, {100 << 20, 1 << 20}, {1 << 30, 1 << 20}, {1<<30 + 1<<20, 2 << 20}, {10 << 30, 10 << 20},
	} {
		if got := spanFor(tt.size); got != tt.want {
			t.Errorf("spanFor(%d): got %d, want %d", tt.size, got, tt.want)
		}
	}
}

func TestWithSource(t *testing.T) {
	tarBytes := makeTar(t, testFiles(5, 100<<10))
	gz := gzipStd(t, tarBytes)
	blob := &memBlob{b: gz}
	x, err := BuildIndex(context.Background(), blob, digestOf(gz), nil, WithSource(bytes.NewReader(gz)))
	if err != nil {
		t.Fatal(err)
	}
	if got := blob.bytes.Load(); got > 512 {
		t.Errorf("blob read %d bytes; want only the format sniff", got)
	}
	checkLayer(t, x, NewLayer(x, blob, nil, nil), tarBytes, 1)
	// A source that ends early is a truncated blob.
	_, err = BuildIndex(context.Background(), blob, digestOf(gz), nil, WithSource(io.LimitReader(bytes.NewReader(gz), int64(len(gz)-1))))
	if err == nil {
		t.Error("short source: no error")
	}
}
