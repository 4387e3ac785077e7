package inflate

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"sync"
	"testing"
	"testing/iotest"
)

// TestOddReaders feeds Scan and Resume readers that return one byte or half the
// request at a time: the checkpoints and bytes must not change.
func TestOddReaders(t *testing.T) {
	plain, gz := smallGzip(t)
	_, want := scanAll(t, gz, 4<<10)
	wrappers := []struct {
		name string
		wrap func(io.Reader) io.Reader
	}{
		{"one byte", iotest.OneByteReader},
		{"half", iotest.HalfReader},
		{"data with EOF", iotest.DataErrReader},
	}
	for _, w := range wrappers {
		t.Run(w.name, func(t *testing.T) {
			var got []Checkpoint
			var out bytes.Buffer
			if _, err := Scan(w.wrap(bytes.NewReader(gz)), &out, 4<<10, func(cp Checkpoint) error {
				got = append(got, cp)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), plain) || !reflect.DeepEqual(got, want) {
				t.Fatalf("Scan through %s reader: output or checkpoints differ", w.name)
			}
			for _, cp := range want {
				z, err := Resume(w.wrap(bytes.NewReader(gz[cp.In:])), cp)
				if err != nil {
					t.Fatal(err)
				}
				b, err := io.ReadAll(iotest.OneByteReader(z))
				if err != nil || !bytes.Equal(b, plain[cp.Out:]) {
					t.Fatalf("Resume from out %d: err %v, bytes equal %v", cp.Out, err, bytes.Equal(b, plain[cp.Out:]))
				}
			}
		})
	}
}

// TestReadError checks that an error of the underlying reader is returned.
func TestReadError(t *testing.T) {
	_, gz := smallGzip(t)
	_, cps := scanAll(t, gz, 4<<10)
	boom := errors.New("network down")
	r := io.MultiReader(bytes.NewReader(gz[:len(gz)/2]), iotest.ErrReader(boom))
	if _, err := Scan(r, io.Discard, 4<<10, nil); !errors.Is(err, boom) {
		t.Fatalf("Scan: %v, want %v", err, boom)
	}
	cp := cps[1]
	z, err := Resume(io.MultiReader(bytes.NewReader(gz[cp.In:cp.In+100]), iotest.ErrReader(boom)), cp)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(z); !errors.Is(err, boom) {
		t.Fatalf("Resume: %v, want %v", err, boom)
	}
	if err := z.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := z.Read(make([]byte, 1)); err == nil {
		t.Fatal("Read after Close: no error")
	}
}

// TestConcurrentResume resumes from every checkpoint at once (run with -race).
func TestConcurrentResume(t *testing.T) {
	plain, gz := smallGzip(t)
	_, cps := scanAll(t, gz, 4<<10)
	var wg sync.WaitGroup
	errs := make([]error, len(cps))
	for i, cp := range cps {
		wg.Go(func() {
			z, err := Resume(bytes.NewReader(gz[cp.In:]), cp)
			if err != nil {
				errs[i] = err
				return
			}
			b, err := io.ReadAll(z)
			if err == nil && !bytes.Equal(b, plain[cp.Out:]) {
				err = errors.New("bytes differ")
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("checkpoint %d: %v", i, err)
		}
	}
}
