package layers

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/regfs/regfs/layers/inflate"
)

const (
	// DefaultSpan is the distance between restart points of a layer up to 1 GiB.
	DefaultSpan = 1 << 20
	// passReadSize is the size of the blob reads of the streaming pass.
	passReadSize = 4 << 20
	// pipeSize is the buffering between the decompressor and the tar parser.
	pipeSize = 1 << 20
	// pipeBufs is how many buffers of pipeSize/4 bytes the decoder of a gzip pass
	// may fill ahead of the tar parser.
	pipeBufs = 8
	// progressEvery is how often a long pass logs its progress.
	progressEvery = 5 * time.Second
)

// ErrDigestMismatch is returned when a blob's bytes do not hash to its digest.
var ErrDigestMismatch = errors.New("layers: blob does not match its digest")

// BuildOption configures BuildIndex.
type BuildOption func(*buildOptions)

type buildOptions struct {
	source    io.Reader
	span      int64
	chunkSize int64
}

// WithSource makes BuildIndex read the blob's bytes, from offset 0 to the end, from r
// (for example cache.Blob.Reader, which reads ahead) instead of from the BlobReader.
func WithSource(r io.Reader) BuildOption { return func(o *buildOptions) { o.source = r } }

// WithSpan sets the distance between restart points (default: DefaultSpan, wider for
// layers over 1 GiB). Tests use small spans.
func WithSpan(n int64) BuildOption { return func(o *buildOptions) { o.span = n } }

// WithChunkSize sets the size of the blob chunks whose digests the index records (see
// Index.VerifyChunk). The default is BlobChunkSize, whatever the chunks of the blob reader
// of the pass: the sums serve the range reads after it.
func WithChunkSize(n int64) BuildOption { return func(o *buildOptions) { o.chunkSize = n } }

// spanFor returns the restart point distance for a blob of the given compressed size:
// 1 MiB, widened above 1 GiB so that a layer has at most about 1024 of them per GiB of
// compressed input and its index stays near 1% of the uncompressed size.
func spanFor(size int64) int64 {
	return max(DefaultSpan, (size/1024+DefaultSpan-1)/DefaultSpan*DefaultSpan)
}

// BuildIndex makes one streaming pass over the layer blob b: it detects the format,
// decompresses, lists the tar entries with their data offsets, records restart points,
// verifies the blob's bytes against digest ("sha256:<hex>" or "sha512:<hex>"), and
// records the sha256 of each chunk of the blob (see WithChunkSize) for later range reads.
// Any failure (truncation, garbage, a malformed header, a digest mismatch) is an error
// naming the digest: the layer is unreadable as a whole.
//
// Unless WithSource is given, the blob is read sequentially through its Reader method
// if it has one (cache.Blob), else with large ReadAt calls.
func BuildIndex(ctx context.Context, b BlobReader, digest string, log *slog.Logger, opts ...BuildOption) (*Index, error) {
	log = orDiscard(log)
	var o buildOptions
	for _, opt := range opts {
		opt(&o)
	}
	h, want, err := parseDigest(digest)
	if err != nil {
		return nil, err
	}
	format, err := DetectFormat(ctx, b)
	if err != nil {
		return nil, fmt.Errorf("layers: index %s: %w", digest, err)
	}
	if o.span <= 0 {
		o.span = spanFor(b.Size())
	}
	if o.chunkSize <= 0 {
		o.chunkSize = BlobChunkSize
	}
	var src io.Reader
	switch sr, ok := b.(sequentialOpener); {
	case o.source != nil:
		src = o.source
	case ok:
		src = sr.Reader(ctx, 0)
	default:
		src = newSeqReader(ctx, b, 0, passReadSize)
	}
	start := time.Now()
	hasher := newAsyncHasher(h, o.chunkSize)
	defer hasher.Close()
	pr := &passReader{
		r: ctxReader{ctx, src}, h: hasher, log: log, digest: digest, size: b.Size(),
		start: start, nextLog: start.Add(progressEvery),
	}
	x := &Index{Digest: digest, Format: format, span: o.span}
	switch format {
	case FormatTar:
		err = x.scanTar(pr)
	case FormatGzip:
		err = x.scanGzip(pr)
	case FormatZstd:
		err = x.scanZstd(pr)
	}
	if err == nil {
		_, err = io.Copy(io.Discard, pr) // anything after the end of the stream
	}
	if err != nil {
		return nil, fmt.Errorf("layers: index %s (%s) at blob offset %d: %w", digest, format, pr.n, err)
	}
	if pr.n != b.Size() {
		return nil, fmt.Errorf("layers: index %s: blob has %d bytes, descriptor says %d: %w",
			digest, pr.n, b.Size(), io.ErrUnexpectedEOF)
	}
	if got := hasher.Sum(); string(got) != string(want) {
		return nil, fmt.Errorf("%w: %s hashes to %x", ErrDigestMismatch, digest, got)
	}
	x.chunks = blobChunks{size: o.chunkSize, blob: pr.n, sums: hasher.ChunkSums()}
	elapsed := time.Since(start)
	log.Debug("layer indexed", "digest", digest, "format", format.String(), "bytes", pr.n,
		"uncompressed", x.Size, "entries", len(x.Entries), "restarts", x.RestartPoints(),
		"elapsed", elapsed, "MBps", mbps(pr.n, elapsed))
	return x, nil
}

func orDiscard(log *slog.Logger) *slog.Logger {
	if log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return log
}

func mbps(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / 1e6 / d.Seconds()
}

// parseDigest returns a hash for a digest's algorithm and the expected sum.
func parseDigest(digest string) (hash.Hash, []byte, error) {
	algo, hexSum, _ := strings.Cut(digest, ":")
	var h hash.Hash
	switch algo {
	case "sha256":
		h = sha256.New()
	case "sha512":
		h = sha512.New()
	default:
		return nil, nil, fmt.Errorf("layers: unsupported digest %q", digest)
	}
	sum, err := hex.DecodeString(hexSum)
	if err != nil || len(sum) != h.Size() || strings.ToLower(hexSum) != hexSum {
		return nil, nil, fmt.Errorf("layers: malformed digest %q", digest)
	}
	return h, sum, nil
}

// passReader hashes and counts the compressed bytes of the pass and logs progress.
type passReader struct {
	r       io.Reader
	h       *asyncHasher
	n       int64
	log     *slog.Logger
	digest  string
	size    int64
	start   time.Time
	nextLog time.Time
}

func (p *passReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.h.Write(b[:n])
	p.n += int64(n)
	if now := time.Now(); !now.Before(p.nextLog) {
		p.nextLog = now.Add(progressEvery)
		p.log.Info("indexing layer", "digest", p.digest, "read", p.n, "size", p.size,
			"MBps", mbps(p.n, now.Sub(p.start)))
	}
	return n, err
}

// scanTar indexes an uncompressed tar: the stream is the blob.
func (x *Index) scanTar(pr *passReader) error {
	br := bufio.NewReaderSize(pr, pipeSize)
	entries, err := walkTar(br)
	if err != nil {
		return err
	}
	if _, err := io.Copy(io.Discard, br); err != nil {
		return err
	}
	x.Entries, x.Size = entries, pr.n
	return nil
}

// scanGzip inflates the blob with inflate.Scan, which pushes its output into a pipe
// that the tar parser pulls from.
func (x *Index) scanGzip(pr *passReader) error {
	pipe := newBufPipe(pipeBufs, pipeSize/4)
	type result struct {
		n   int64
		err error
	}
	done := make(chan result, 1)
	var cps []inflate.Checkpoint // written by the Scan goroutine until done
	go func() {
		bw := bufio.NewWriterSize(pipe, pipeSize/4)
		n, err := inflate.Scan(pr, bw, x.span, func(cp inflate.Checkpoint) error {
			cps = append(cps, cp)
			return nil
		})
		if err == nil {
			err = bw.Flush()
		}
		pipe.CloseWrite(err)
		done <- result{n, err}
	}()
	br := bufio.NewReaderSize(pipe, pipeSize)
	entries, err := walkTar(br)
	if err == nil {
		_, err = io.Copy(io.Discard, br)
	}
	if err != nil {
		pipe.CloseRead(err)
	}
	res := <-done
	switch {
	case err != nil:
		return err
	case res.err != nil:
		return res.err
	case len(cps) == 0 || cps[0].Out != 0:
		return errors.New("gzip scan gave no checkpoint at offset 0")
	}
	x.Entries, x.Size, x.checkpoints = entries, res.n, cps
	return nil
}
