// Package monoclock is memstore's default clock: the wall clock in µs from
// one monotonic clock reading a call. time.Now reads two clocks, and on
// some machines each read costs as much as the rest of a check. A Clock is
// anchored to the wall clock when made and again at every Anchor (memstore
// anchors it at every sweep), so it follows a step of the wall clock within
// a sweep interval, and a slew at once (on Linux a slew changes the
// monotonic clock's rate too). Its benchmark measures it against
// time.Now().UnixMicro(): go test -bench . ./memstore/internal/monoclock.
package monoclock

import (
	"sync/atomic"
	"time"
)

// Clock reads the wall clock in µs. It is safe for concurrent use.
type Clock struct {
	base atomic.Pointer[anchor]
}

type anchor struct {
	t  time.Time // with its monotonic reading
	us int64     // t's wall clock in µs
}

// New returns a Clock anchored now.
func New() *Clock {
	c := &Clock{}
	c.Anchor()
	return c
}

// Anchor takes the wall clock again.
func (c *Clock) Anchor() {
	t := time.Now()
	c.base.Store(&anchor{t: t, us: t.UnixMicro()})
}

// Micros returns the wall clock in µs: the anchor's plus the monotonic time
// elapsed since.
func (c *Clock) Micros() int64 {
	a := c.base.Load()
	return a.us + int64(time.Since(a.t)/time.Microsecond)
}
