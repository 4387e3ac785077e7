package resolver

import (
	"context"
	"sync"
)

// group joins concurrent calls with the same key (a minimal singleflight). The shared work
// runs on its own context (the first caller's values, without its cancellation; every
// request in it is bounded by the stall timeout), so a caller that gives up returns its
// ctx.Err() alone and does not cancel the work other callers wait for.
type group struct {
	mu    sync.Mutex
	calls map[string]*flightCall // guarded by mu
}

type flightCall struct {
	done chan struct{} // closed when val and err are set
	val  any
	err  error
}

// do runs fn once for concurrent callers of key; every caller gets its result, or its own
// ctx.Err() if ctx ends first.
func (g *group) do(ctx context.Context, key string, fn func(context.Context) (any, error)) (any, error) {
	g.mu.Lock()
	if g.calls == nil {
		g.calls = map[string]*flightCall{}
	}
	c, ok := g.calls[key]
	if !ok {
		c = &flightCall{done: make(chan struct{})}
		g.calls[key] = c
		go func(ctx context.Context) {
			c.val, c.err = fn(ctx)
			g.mu.Lock()
			delete(g.calls, key)
			g.mu.Unlock()
			close(c.done)
		}(context.WithoutCancel(ctx))
	}
	g.mu.Unlock()
	select {
	case <-c.done:
		return c.val, c.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
