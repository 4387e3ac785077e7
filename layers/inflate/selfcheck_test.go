package inflate

import (
	"bytes"
	"io"
	"testing"

	kflate "github.com/klauspost/compress/flate"
)

func TestSelfCheckPasses(t *testing.T) {
	if err := runSelfCheck(); err != nil {
		t.Fatal(err)
	}
	if err := selfCheck(); err != nil {
		t.Fatal(err)
	}
}

// TestUpstreamStoredBlockTrap documents the klauspost/compress offset bug: it resumes
// from the library's own checkpoints of a stream with stored blocks after Huffman
// blocks. Where the library's offsets are wrong, Scan's must differ from them and
// resume correctly (TestResumeEveryCheckpoint checks the latter for every stream).
func TestUpstreamStoredBlockTrap(t *testing.T) {
	plain, gz, err := selfCheckStream()
	if err != nil {
		t.Fatal(err)
	}
	// The first member: a plain 10-byte header, its deflate data, an 8-byte trailer.
	_, cps := scanAll(t, gz, 1)
	var member2 int64
	for _, cp := range cps[1:] {
		if cp.Header {
			member2 = cp.In
			break
		}
	}
	deflate := gz[10 : member2-8]
	var raw []kflate.InflateCheckpoint
	fr := kflate.NewReaderOpts(bytes.NewReader(deflate), kflate.WithEobCallback(func(cp kflate.InflateCheckpoint) {
		if !cp.Final {
			cp.Window = append([]byte(nil), cp.Window...)
			raw = append(raw, cp)
		}
	}))
	if _, err := io.Copy(io.Discard, fr); err != nil {
		t.Fatal(err)
	}
	wrong := 0
	for _, rc := range raw {
		ok := false
		if rc.CompressedOffset <= int64(len(deflate)) {
			z := kflate.NewReaderOpts(bytes.NewReader(deflate[rc.CompressedOffset:]), kflate.WithResumeFrom(rc))
			got := make([]byte, 2000)
			n, _ := io.ReadFull(z, got)
			ok = n > 0 && bytes.Equal(got[:n], plain[rc.UncompressedOffset:rc.UncompressedOffset+int64(n)])
		}
		if ok {
			continue
		}
		wrong++
		for _, cp := range cps {
			if cp.Out == rc.UncompressedOffset && !cp.Header {
				if cp.In-10 == rc.CompressedOffset && cp.Bit == rc.BitOffset {
					t.Errorf("library checkpoint at out %d does not resume, and Scan reports the same position", cp.Out)
				}
			}
		}
	}
	t.Logf("klauspost/compress: %d of %d raw block checkpoints do not resume (the v1.20.4 stored-block bug)", wrong, len(raw))
}
