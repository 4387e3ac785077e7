package inflate

import (
	"bytes"
	stdgzip "compress/gzip"
	"io"
	"testing"

	kflate "github.com/klauspost/compress/flate"
	kgzip "github.com/klauspost/compress/gzip"
)

// testSpan is the checkpoint spacing of the cost tests: small, so that streams of a
// few hundred KiB have many spans.
const testSpan = 64 << 10

func compressors() []compressor {
	return []compressor{
		{"gzip-1", "gzip", binGzip("gzip", "-1")},
		{"gzip-6", "gzip", binGzip("gzip", "-6")},
		{"gzip-9", "gzip", binGzip("gzip", "-9")},
		{"pigz-6", "pigz", binGzip("pigz", "-6")},
		{"pigz-i", "pigz", binGzip("pigz", "-i")},
		{"pigz-i-b32", "pigz", binGzip("pigz", "-i", "-b", "32")},
		{"pigz-9-b128", "pigz", binGzip("pigz", "-9", "-b", "128")},
		{"go-1", "", goGzip(stdgzip.BestSpeed, stdgzip.Header{})},
		{"go-6", "", goGzip(stdgzip.DefaultCompression, stdgzip.Header{})},
		{"go-9", "", goGzip(stdgzip.BestCompression, stdgzip.Header{})},
		{"go-huffman", "", goGzip(stdgzip.HuffmanOnly, stdgzip.Header{})},
		{"go-store", "", goGzip(stdgzip.NoCompression, stdgzip.Header{})},
		{"go-header-fields", "", goGzip(stdgzip.DefaultCompression,
			stdgzip.Header{Name: "layer.tar", Comment: "a layer", Extra: []byte("AB\x03\x00xyz")})},
		{"header-crc", "", func(t testing.TB, b []byte) []byte {
			return withHeaderCRC(t, goGzip(stdgzip.BestSpeed, stdgzip.Header{})(t, b))
		}},
		{"klauspost-1", "", klauspostGzip(kflate.BestSpeed)},
		{"klauspost-5", "", klauspostGzip(5)},
		{"klauspost-9", "", klauspostGzip(kflate.BestCompression)},
		{"klauspost-huffman", "", klauspostGzip(kflate.HuffmanOnly)},
		{"klauspost-store", "", klauspostGzip(kflate.NoCompression)},
		{"klauspost-stateless", "", klauspostGzip(kgzip.StatelessCompression)},
	}
}

type content struct {
	name string
	data func(testing.TB) []byte
}

func contents() []content {
	return []content{
		{"text", func(testing.TB) []byte { return textContent(384<<10, 1) }},
		{"random", func(testing.TB) []byte { return randomContent(256<<10, 2) }},
		{"tar", func(t testing.TB) []byte { return mixedTar(t, 768<<10, 3) }},
	}
}

// TestResumeEveryCheckpoint resumes from every block boundary of streams written by
// several compressors, and checks spacing and cost of span-spaced checkpoints.
func TestResumeEveryCheckpoint(t *testing.T) {
	datas := map[string][]byte{}
	for _, c := range contents() {
		datas[c.name] = c.data(t)
	}
	for _, comp := range compressors() {
		for _, c := range contents() {
			t.Run(comp.name+"/"+c.name, func(t *testing.T) {
				requireBinary(t, comp.bin)
				plain := datas[c.name]
				gz := comp.fn(t, plain)
				every := checkEveryBlock(t, gz, plain)
				checkSpans(t, gz, plain, every)
			})
		}
	}
}

// checkEveryBlock scans with a checkpoint at every block, resumes from each one up to
// the next and, from a few, to the end. It returns the checkpoints.
func checkEveryBlock(t *testing.T, gz, plain []byte) []Checkpoint {
	t.Helper()
	out, cps := scanAll(t, gz, 1)
	if !bytes.Equal(out, plain) {
		t.Fatalf("Scan output differs from the input (%d bytes, want %d)", len(out), len(plain))
	}
	if len(cps) == 0 || !cps[0].Header || cps[0].In != 0 || cps[0].Out != 0 {
		t.Fatalf("first checkpoint %+v, want a header checkpoint at 0", cps[0])
	}
	stored := 0
	for i, cp := range cps {
		if err := cp.validate(); err != nil {
			t.Fatalf("checkpoint %d: %v", i, err)
		}
		if i > 0 && (cp.Out < cps[i-1].Out || cp.In < cps[i-1].In) {
			t.Fatalf("checkpoint %d (%d, %d) before checkpoint %d (%d, %d)", i, cp.In, cp.Out, i-1, cps[i-1].In, cps[i-1].Out)
		}
		end := int64(len(plain))
		if i+1 < len(cps) {
			end = cps[i+1].Out
		}
		if !cp.Header && cp.Bit == 0 {
			stored++ // at least all boundaries after stored blocks
		}
		// Windows are copies, kept after Scan returned.
		if want := plain[cp.Out-int64(len(cp.Window)) : cp.Out]; !bytes.Equal(cp.Window, want) {
			t.Fatalf("checkpoint %d (out %d): window is not the output before it", i, cp.Out)
		}
		got := resumeRead(t, gz, cp, end-cp.Out)
		if !bytes.Equal(got, plain[cp.Out:end]) {
			t.Fatalf("checkpoint %d of %d (in %d bit %d out %d): resumed bytes differ", i, len(cps), cp.In, cp.Bit, cp.Out)
		}
	}
	for _, i := range []int{0, len(cps) / 3, len(cps) - 1} {
		cp := cps[i]
		z, err := Resume(bytes.NewReader(gz[cp.In:]), cp)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(z)
		if err != nil {
			t.Fatalf("checkpoint %d: read to end: %v", i, err)
		}
		if !bytes.Equal(got, plain[cp.Out:]) {
			t.Fatalf("checkpoint %d: bytes to end differ", i)
		}
	}
	t.Logf("%d bytes -> %d, %d block checkpoints (%d byte-aligned)", len(plain), len(gz), len(cps), stored)
	return cps
}

// resumeRead reads n bytes from cp.
func resumeRead(t *testing.T, gz []byte, cp Checkpoint, n int64) []byte {
	t.Helper()
	z, err := Resume(bytes.NewReader(gz[cp.In:]), cp)
	if err != nil {
		t.Fatalf("Resume(in %d bit %d out %d): %v", cp.In, cp.Bit, cp.Out, err)
	}
	defer z.Close()
	got := make([]byte, n)
	if _, err := io.ReadFull(z, got); err != nil {
		t.Fatalf("Resume(in %d bit %d out %d): reading %d bytes: %v", cp.In, cp.Bit, cp.Out, n, err)
	}
	return got
}

// checkSpans scans with testSpan and checks that each checkpoint is the first block
// boundary a span after the previous one, and that a read of one span from it reads
// about one span of compressed input.
func checkSpans(t *testing.T, gz, plain []byte, every []Checkpoint) {
	t.Helper()
	_, cps := scanAll(t, gz, testSpan)
	j := 0 // index in every
	for i, cp := range cps {
		var want Checkpoint
		if i == 0 {
			want = every[0]
		} else {
			for j < len(every) && !every[j].Header && every[j].Out-cps[i-1].Out < testSpan {
				j++
			}
			if j == len(every) {
				t.Fatalf("checkpoint %d (out %d) beyond every block boundary", i, cp.Out)
			}
			want = every[j]
		}
		if cp.In != want.In || cp.Bit != want.Bit || cp.Out != want.Out || cp.Header != want.Header || cp.CRC != want.CRC {
			t.Fatalf("checkpoint %d = in %d bit %d out %d header %v, want the first boundary a span on: in %d bit %d out %d header %v",
				i, cp.In, cp.Bit, cp.Out, cp.Header, want.In, want.Bit, want.Out, want.Header)
		}
		j++
		end, endIn := int64(len(plain)), int64(len(gz))
		if i+1 < len(cps) {
			end, endIn = cps[i+1].Out, cps[i+1].In
		}
		src := &countingSource{r: bytes.NewReader(gz[cp.In:])}
		z, err := Resume(src, cp)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, end-cp.Out)
		if _, err := io.ReadFull(z, got); err != nil {
			t.Fatalf("span %d: %v", i, err)
		}
		if !bytes.Equal(got, plain[cp.Out:end]) {
			t.Fatalf("span %d (in %d bit %d out %d): bytes differ", i, cp.In, cp.Bit, cp.Out)
		}
		// Beyond the span's own bytes: the input buffer, and the input of at most a
		// window of output that flate decodes ahead of the caller.
		if limit := endIn - cp.In + resumeBufSize + WindowSize + 1024; src.n > limit {
			t.Fatalf("span %d: read %d compressed bytes for %d bytes of output, want at most %d",
				i, src.n, len(got), limit)
		}
	}
}

func TestMultiMember(t *testing.T) {
	requireBinary(t, "gzip")
	requireBinary(t, "pigz")
	parts := []struct {
		plain []byte
		gz    func(testing.TB, []byte) []byte
	}{
		{textContent(200<<10, 4), binGzip("gzip", "-6")},
		{nil, goGzip(stdgzip.DefaultCompression, stdgzip.Header{})},
		{randomContent(150<<10, 5), binGzip("pigz", "-6")},
		{mixedTar(t, 300<<10, 6), klauspostGzip(kflate.BestSpeed)},
		{textContent(1000, 7), func(t testing.TB, b []byte) []byte {
			return withHeaderCRC(t, goGzip(stdgzip.BestSpeed, stdgzip.Header{})(t, b))
		}},
	}
	var plain, gz []byte
	var starts, outs []int64
	for _, p := range parts {
		starts, outs = append(starts, int64(len(gz))), append(outs, int64(len(plain)))
		plain = append(plain, p.plain...)
		gz = append(gz, p.gz(t, p.plain)...)
	}
	for _, span := range []int64{1, testSpan} {
		out, cps := scanAll(t, gz, span)
		if !bytes.Equal(out, plain) {
			t.Fatalf("span %d: Scan output differs", span)
		}
		var gotStarts, gotOuts []int64
		for _, cp := range cps {
			if cp.Header {
				gotStarts, gotOuts = append(gotStarts, cp.In), append(gotOuts, cp.Out)
			}
		}
		if !equalInts(gotStarts, starts) || !equalInts(gotOuts, outs) {
			t.Fatalf("span %d: header checkpoints at in %v out %v, want in %v out %v", span, gotStarts, gotOuts, starts, outs)
		}
		for i, cp := range cps {
			z, err := Resume(bytes.NewReader(gz[cp.In:]), cp)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(z)
			if err != nil {
				t.Fatalf("span %d checkpoint %d (in %d out %d): %v", span, i, cp.In, cp.Out, err)
			}
			if !bytes.Equal(got, plain[cp.Out:]) {
				t.Fatalf("span %d checkpoint %d (in %d out %d): bytes differ", span, i, cp.In, cp.Out)
			}
		}
	}
}

func equalInts(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
