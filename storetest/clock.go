package storetest

import (
	"sync"
	"time"
)

// Clock is a fake clock for stores under test: it stands still until
// Advance moves it. It is safe for concurrent use.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a Clock reading start, truncated to whole microseconds
// (the resolution every store works in).
func NewClock(start time.Time) *Clock {
	return &Clock{now: start.Truncate(time.Microsecond)}
}

// Now returns the clock's current time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d, truncated to whole microseconds. A
// negative d moves it back, which tests of clock skew may want.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d.Truncate(time.Microsecond))
}

// alignTo advances c to the next start of a window of length p (counted from
// the Unix epoch, as every store aligns windows), or leaves it if it is at one.
func (c *Clock) alignTo(p time.Duration) {
	us := c.Now().UnixMicro()
	pu := p.Microseconds()
	if r := us % pu; r != 0 {
		c.Advance(time.Duration(pu-r) * time.Microsecond)
	}
}

// set moves c to t, forward or back.
func (c *Clock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}
