package layers

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
)

// TestBufPipe checks that bytes arrive in order and whole, that the writer's error
// reaches the reader after the bytes written before it, and that a reader's close
// fails a writer blocked on full buffers.
func TestBufPipe(t *testing.T) {
	data := randomData(rand.New(rand.NewPCG(3, 3)), 1<<20, false)
	p := newBufPipe(3, 1000)
	go func() {
		r := rand.New(rand.NewPCG(4, 4))
		for rest := data; len(rest) > 0; {
			k := min(len(rest), 1+r.IntN(5000))
			if _, err := p.Write(rest[:k]); err != nil {
				t.Error(err)
				return
			}
			rest = rest[k:]
		}
		p.CloseWrite(io.ErrUnexpectedEOF)
	}()
	got, err := io.ReadAll(struct{ io.Reader }{p})
	if !errors.Is(err, io.ErrUnexpectedEOF) || !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes (equal: %v), %v; want all %d, then the writer's error", len(got), bytes.Equal(got, data), err, len(data))
	}

	p = newBufPipe(2, 10)
	stop := errors.New("parser failed")
	done := make(chan error)
	go func() {
		_, err := p.Write(make([]byte, 1000)) // more than the buffers hold
		done <- err
	}()
	p.CloseRead(stop)
	if err := <-done; !errors.Is(err, stop) {
		t.Errorf("Write after CloseRead: %v, want %v", err, stop)
	}
}
