package httplimit

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// deadlines hands out the deadline contexts of store calls. A
// context.WithTimeout per call would cost four allocations and a timer; a
// check must be cheaper than that. So calls that start within the same
// slack (an eighth of the timeout, at least a millisecond) share one
// deadline, which falls between timeout and timeout+slack after each of them
// started.
type deadlines struct {
	timeout, slack time.Duration
	cur            atomic.Pointer[deadline]
	mu             sync.Mutex
}

// deadline is one shared deadline context.
type deadline struct {
	ctx    context.Context
	cancel context.CancelFunc // never called: the deadline cancels it
	start  time.Time
}

func (d *deadlines) init(timeout time.Duration) {
	d.timeout = timeout
	d.slack = max(timeout/8, time.Millisecond)
}

// get returns the shared deadline for a call starting now. It reads only
// the monotonic clock (time.Since), unless a new deadline is due.
func (d *deadlines) get() *deadline {
	if dl := d.cur.Load(); dl != nil && time.Since(dl.start) < d.slack {
		return dl
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if dl := d.cur.Load(); dl != nil && time.Since(dl.start) < d.slack {
		return dl
	}
	now := time.Now()
	dl := &deadline{start: now}
	dl.ctx, dl.cancel = context.WithDeadline(context.Background(), now.Add(d.timeout+d.slack))
	d.cur.Store(dl)
	return dl
}

// callCtx is the context of one store call: the values of the request's
// context (so that tracing still sees the request), the shared deadline's
// Done, Err and Deadline. It is not cancelled when the request is: a store
// call is short, and a charge or refund half made on a hang-up helps no one.
type callCtx struct {
	context.Context // the request's, for Value
	dl              *deadline
}

func (c *callCtx) Deadline() (time.Time, bool) { return c.dl.ctx.Deadline() }
func (c *callCtx) Done() <-chan struct{}       { return c.dl.ctx.Done() }
func (c *callCtx) Err() error                  { return c.dl.ctx.Err() }

// AfterFunc lets context.WithCancel and friends derived from a callCtx hook
// into the shared deadline without a goroutine each.
func (c *callCtx) AfterFunc(f func()) func() bool { return context.AfterFunc(c.dl.ctx, f) }

// storeCtx returns the context of a store call starting now on behalf of
// ctx, in c when it is not nil (to save an allocation).
func (m *Middleware) storeCtx(ctx context.Context, c *callCtx) context.Context {
	if m.timeout < 0 {
		return ctx
	}
	if c == nil {
		c = new(callCtx)
	}
	c.Context, c.dl = ctx, m.deadline.get()
	return c
}
