package layers

import (
	"bufio"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
)

// zstdMaxWindow bounds the window (and so the memory) of a zstd decoder. A layer that
// needs more is refused with ErrZstdWindow.
const zstdMaxWindow = 128 << 20

// ErrZstdWindow is returned for a zstd layer whose window exceeds the decoder's bound.
var ErrZstdWindow = fmt.Errorf("layers: zstd window larger than the %d MiB limit", zstdMaxWindow>>20)

// newZstdDecoder returns a synchronous (goroutine-free) decoder with bounded memory.
// Low-memory mode is off: on large-window streams it is many times slower.
func newZstdDecoder() (*zstd.Decoder, error) {
	d, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderLowmem(false),
		zstd.WithDecoderMaxWindow(zstdMaxWindow),
		zstd.WithDecoderMaxMemory(zstdMaxWindow))
	if err != nil {
		return nil, fmt.Errorf("layers: zstd decoder: %w", err)
	}
	return d, nil
}

// zstdErr maps the decoder's size-limit errors to ErrZstdWindow.
func zstdErr(err error) error {
	if errors.Is(err, zstd.ErrWindowSizeExceeded) || errors.Is(err, zstd.ErrDecoderSizeExceeded) {
		return fmt.Errorf("%w: %w", ErrZstdWindow, err)
	}
	return err
}

// zstdScanner decodes a zstd stream frame by frame and records a restart point at a
// frame start about every span of output. It is the tar parser's source in the pass.
type zstdScanner struct {
	fr      frameReader
	dec     *zstd.Decoder
	span    int64
	out     int64 // bytes decoded so far
	inFrame bool
	frames  []frameStart
}

func (z *zstdScanner) Read(p []byte) (int, error) {
	for {
		if !z.inFrame {
			start := z.fr.off
			skip, err := z.fr.begin()
			if err != nil {
				return 0, err // io.EOF at the end of the stream
			}
			if skip > 0 {
				continue
			}
			if len(z.frames) == 0 || z.out-z.frames[len(z.frames)-1].Out >= z.span {
				z.frames = append(z.frames, frameStart{In: start, Out: z.out})
			}
			if err := z.dec.Reset(&z.fr); err != nil {
				return 0, zstdErr(err)
			}
			z.inFrame = true
		}
		n, err := z.dec.Read(p)
		z.out += int64(n)
		if errors.Is(err, io.EOF) {
			if !z.fr.done() {
				return n, fmt.Errorf("%w: decoder stopped inside the frame", errZstdFrame)
			}
			z.inFrame = false
			err = nil
		}
		if n > 0 || err != nil {
			return n, zstdErr(err)
		}
	}
}

// scanZstd indexes a zstd layer.
func (x *Index) scanZstd(pr *passReader) error {
	dec, err := newZstdDecoder()
	if err != nil {
		return err
	}
	defer dec.Close()
	z := &zstdScanner{fr: frameReader{src: bufio.NewReaderSize(pr, pipeSize)}, dec: dec, span: x.span}
	br := bufio.NewReaderSize(z, pipeSize)
	entries, err := walkTar(br)
	if err != nil {
		return err
	}
	if _, err := io.Copy(io.Discard, br); err != nil {
		return err
	}
	x.Entries, x.Size, x.frames = entries, z.out, z.frames
	return nil
}
