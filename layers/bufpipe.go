package layers

import (
	"io"
	"sync"
)

// bufPipe is an in-memory pipe with a few buffers in flight: unlike io.Pipe, whose Write
// waits until a reader has taken every byte, a Write returns once its bytes are copied
// into a free buffer, so that the writer (a decompressor) and the reader (a tar parser)
// run side by side on two cores instead of in lockstep.
type bufPipe struct {
	work chan []byte // filled buffers, in order
	free chan []byte // empty buffers
	done chan struct{}

	cur []byte // reader's: the unread rest of the buffer it holds
	buf []byte // reader's: the buffer cur is in, returned to free once read

	once   sync.Once
	mu     sync.Mutex
	rerr   error // the reader's error (CloseWithError by the reader): the writer's Writes fail with it
	werr   error // the writer's error, returned once the buffers are read (io.EOF if nil)
	closed bool
}

// newBufPipe returns a pipe of n buffers of size bytes.
func newBufPipe(n, size int) *bufPipe {
	p := &bufPipe{work: make(chan []byte, n), free: make(chan []byte, n), done: make(chan struct{})}
	for range n {
		p.free <- make([]byte, size)
	}
	return p
}

// Write copies b into the pipe's buffers, waiting for a free one when all are full. It
// fails once the reader has closed the pipe.
func (p *bufPipe) Write(b []byte) (int, error) {
	n := 0
	for len(b) > 0 {
		var buf []byte
		select {
		case buf = <-p.free:
		case <-p.done:
			return n, p.readerErr()
		}
		k := copy(buf[:cap(buf)], b)
		select {
		case p.work <- buf[:k]:
		case <-p.done:
			return n, p.readerErr()
		}
		n, b = n+k, b[k:]
	}
	return n, nil
}

// CloseWrite ends the writer's side: the reader gets err (io.EOF if nil) after the
// bytes written before.
func (p *bufPipe) CloseWrite(err error) {
	p.mu.Lock()
	if !p.closed {
		p.closed, p.werr = true, err
		close(p.work)
	}
	p.mu.Unlock()
}

// Read reads the written bytes in order.
func (p *bufPipe) Read(b []byte) (int, error) {
	for len(p.cur) == 0 {
		if p.buf != nil {
			p.free <- p.buf[:cap(p.buf)]
			p.buf = nil
		}
		buf, ok := <-p.work
		if !ok {
			p.mu.Lock()
			err := p.werr
			p.mu.Unlock()
			if err == nil {
				err = io.EOF
			}
			return 0, err
		}
		p.buf, p.cur = buf, buf
	}
	n := copy(b, p.cur)
	p.cur = p.cur[n:]
	return n, nil
}

// CloseRead ends the reader's side: the writer's Writes fail with err.
func (p *bufPipe) CloseRead(err error) {
	p.once.Do(func() {
		p.mu.Lock()
		p.rerr = err
		p.mu.Unlock()
		close(p.done)
	})
}

func (p *bufPipe) readerErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.rerr != nil {
		return p.rerr
	}
	return io.ErrClosedPipe
}
