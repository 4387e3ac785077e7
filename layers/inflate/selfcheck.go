package inflate

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"

	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/gzip"
)

// checked holds the outcome of the self-check. It is the package's only global
// state: written once, by the first Scan or Resume of the process, read-only after.
var checked struct {
	once sync.Once
	err  error
}

// selfCheck verifies, once per process, that checkpoints taken by scan resume to the
// right bytes on this build of the deflate library (see the package doc).
func selfCheck() error {
	checked.once.Do(func() { checked.err = runSelfCheck() })
	return checked.err
}

// runSelfCheck scans a built-in stream with a checkpoint at every block and resumes
// from each one to the end of the stream.
func runSelfCheck() error {
	plain, gz, err := selfCheckStream()
	if err != nil {
		return fmt.Errorf("%w: building the test stream: %v", ErrSelfCheck, err)
	}
	var cps []Checkpoint
	var out bytes.Buffer
	if _, err := scan(bytes.NewReader(gz), &out, 1, func(cp Checkpoint) error {
		cps = append(cps, cp)
		return nil
	}); err != nil {
		return fmt.Errorf("%w: scan: %v", ErrSelfCheck, err)
	}
	if !bytes.Equal(out.Bytes(), plain) {
		return fmt.Errorf("%w: scan output differs from the input", ErrSelfCheck)
	}
	for _, cp := range cps {
		z, err := resume(bytes.NewReader(gz[cp.In:]), cp)
		if err != nil {
			return fmt.Errorf("%w: checkpoint in %d bit %d out %d: %v", ErrSelfCheck, cp.In, cp.Bit, cp.Out, err)
		}
		got, err := io.ReadAll(z)
		if err != nil || !bytes.Equal(got, plain[cp.Out:]) {
			return fmt.Errorf("%w: resume from in %d bit %d out %d gives wrong bytes (err %v)", ErrSelfCheck, cp.In, cp.Bit, cp.Out, err)
		}
	}
	return nil
}

// selfCheckStream builds two gzip members mixing Huffman blocks, stored blocks (of
// random bytes) and empty stored blocks (flushes) at odd bit positions: the cases
// where flate v1.20.4 reports offsets too large.
func selfCheckStream() (plain, gz []byte, err error) {
	rng := rand.New(rand.NewPCG(1, 2))
	var buf bytes.Buffer
	for member := range 2 {
		zw, err := gzip.NewWriterLevel(&buf, flate.BestSpeed)
		if err != nil {
			return nil, nil, err
		}
		for i := range 12 {
			var part []byte
			if i%3 == 1 {
				part = make([]byte, 3000+rng.IntN(9000))
				for j := range part {
					part[j] = byte(rng.Uint32())
				}
			} else {
				for range 40 + rng.IntN(200) {
					part = fmt.Appendf(part, "member %d line %d value=%d\n", member, i, rng.IntN(1000))
				}
			}
			plain = append(plain, part...)
			if _, err := zw.Write(part); err != nil {
				return nil, nil, err
			}
			if err := zw.Flush(); err != nil {
				return nil, nil, err
			}
		}
		if err := zw.Close(); err != nil {
			return nil, nil, err
		}
	}
	return plain, buf.Bytes(), nil
}
