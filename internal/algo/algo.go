// Package algo is the arithmetic of the four algorithms on plain integers, in
// microseconds, shared by the Go stores and mirrored line by line by the Redis
// store's Lua scripts. See allowance.Algorithm for the model.
//
// Every function takes the state as read (possibly from an earlier window),
// the limit (n units per p microseconds), the cost c and the time now, and
// returns what the store needs; none of them keeps state.
//
// A check reports every limit's state: after the charge when the check is
// allowed (Charge's Result); when it is denied, as it is now, nothing
// charged (Peek's Usage), for the limits that would have allowed it as for
// those that did not, so that a denial says the same as a peek at that
// instant.
package algo

import (
	"slices"

	"github.com/allowancehq/allowance/internal/mathx"
)

// Result is one limit's verdict and the numbers a Decision reports. When it
// is allowed they are those after the charge; when it is denied, those of
// Peek at the same time.
type Result struct {
	Allowed    bool
	Remaining  int64 // after the charge when allowed, else now
	ResetAfter int64 // µs until usage would be zero with no more charges
	RetryAfter int64 // µs until a request of the same cost could pass; 0 when allowed
}

// Usage is a limit's state at a time, nothing charged: what a peek reports,
// and what a denied check reports of every limit.
type Usage struct {
	Used       int64 // units counted (see each algorithm's Peek)
	Remaining  int64 // units a request could be charged
	ResetAfter int64 // µs until Used would be zero if nothing more were charged
}

// denied returns the Result of a denied charge: u's numbers and the retry.
func (u Usage) denied(retry int64) Result {
	return Result{Remaining: u.Remaining, ResetAfter: u.ResetAfter, RetryAfter: retry}
}

// Fixed is the state of a fixed window: the start of the window it counts and
// its count.
type Fixed struct{ Start, Count int64 }

// Roll returns the state as seen at now: the count of now's window.
func (s Fixed) Roll(p, now int64) Fixed {
	w := now - now%p
	if s.Start != w {
		return Fixed{Start: w}
	}
	return s
}

// Charge evaluates a charge of c against s (rolled to now) and returns the
// verdict and, when allowed, the new state.
func (s Fixed) Charge(n, p, c, now int64) (Result, Fixed) {
	s = s.Roll(p, now)
	end := s.Start + p - now
	if s.Count+c > n {
		return s.Peek(n, p, now).denied(end), s
	}
	s.Count += c
	return Result{Allowed: true, Remaining: n - s.Count, ResetAfter: end}, s
}

// Peek returns the units counted in now's window, what is left of n, and
// the time until the window ends (zero when it counts nothing).
func (s Fixed) Peek(n, p, now int64) Usage {
	s = s.Roll(p, now)
	if s.Count == 0 {
		return Usage{Remaining: n}
	}
	return Usage{Used: s.Count, Remaining: n - s.Count, ResetAfter: s.Start + p - now}
}

// Refund gives back up to a units charged in the window starting at window.
// It reports whether that window is still the current one, and how many
// units were given back (never more than the count).
func (s Fixed) Refund(p, a, window, now int64) (Fixed, bool, int64) {
	s = s.Roll(p, now)
	if window != s.Start {
		return s, false, 0
	}
	r := min(a, s.Count)
	s.Count -= r
	return s, true, r
}

// Sliding is the state of a sliding window: the start of the current window
// and the counts of it and of the window before.
type Sliding struct{ Start, Cur, Prev int64 }

// Roll returns the state as seen at now.
func (s Sliding) Roll(p, now int64) Sliding {
	w := now - now%p
	switch s.Start {
	case w:
		return s
	case w - p:
		return Sliding{Start: w, Prev: s.Cur}
	}
	return Sliding{Start: w}
}

// estimate returns cur + floor(prev*(p-e)/p), e being the time elapsed in the
// current window.
func (s Sliding) estimate(p, now int64) int64 {
	if s.Prev == 0 {
		return s.Cur
	}
	q, _ := mathx.MulDiv(s.Prev, p-(now-s.Start), p)
	return s.Cur + q
}

func (s Sliding) resetAfter(p, now int64) int64 {
	switch {
	case s.Cur > 0:
		return s.Start + 2*p - now
	case s.Prev > 0:
		return s.Start + p - now
	}
	return 0
}

// Charge evaluates a charge of c against s and returns the verdict and, when
// allowed, the new state.
func (s Sliding) Charge(n, p, c, now int64) (Result, Sliding) {
	s = s.Roll(p, now)
	est := s.estimate(p, now)
	if est+c <= n {
		s.Cur += c
		return Result{Allowed: true, Remaining: n - est - c, ResetAfter: s.resetAfter(p, now)}, s
	}
	var retry int64
	if s.Cur+c > n {
		// Only the next window can admit it, once the current count (then the
		// previous one) has decayed to at most n-c: at e' >= p+1-ceil((n-c+1)*p/cur).
		e := p + 1 - mathx.MulDivCeil(n-c+1, p, s.Cur)
		retry = s.Start + p + e - now
	} else {
		// This window admits it once floor(prev*(p-e)/p) <= n-c-cur.
		e := p + 1 - mathx.MulDivCeil(n-c-s.Cur+1, p, s.Prev)
		retry = s.Start + e - now
	}
	return Usage{Used: est, Remaining: max(0, n-est), ResetAfter: s.resetAfter(p, now)}.denied(retry), s
}

// Peek returns the estimated units used at now, what is left of n, and the
// time until both counts are gone.
func (s Sliding) Peek(n, p, now int64) Usage {
	s = s.Roll(p, now)
	est := s.estimate(p, now)
	return Usage{Used: est, Remaining: max(0, n-est), ResetAfter: s.resetAfter(p, now)}
}

// Refund gives back up to a units charged in the window starting at window,
// if that window is the current or the previous one (the ones the estimate
// uses).
func (s Sliding) Refund(p, a, window, now int64) (Sliding, bool, int64) {
	s = s.Roll(p, now)
	switch window {
	case s.Start:
		r := min(a, s.Cur)
		s.Cur -= r
		return s, true, r
	case s.Start - p:
		r := min(a, s.Prev)
		s.Prev -= r
		return s, true, r
	}
	return s, false, 0
}

// GCRA is the state of a GCRA limit: its theoretical arrival time (0 when
// the bucket is full).
type GCRA struct{ TAT int64 }

// Charge evaluates a charge of c against s and returns the verdict and, when
// allowed, the new state. t is the emission interval ceil(p/n).
func (s GCRA) Charge(n, t, c, now int64) (Result, GCRA) {
	base := max(s.TAT, now)
	tat := base + c*t
	tau := n * t
	if tat-now > tau {
		return s.Peek(n, t, now).denied(tat - tau - now), s
	}
	return Result{Allowed: true, Remaining: (tau - (tat - now)) / t, ResetAfter: tat - now}, GCRA{TAT: tat}
}

// Peek returns the units not yet flowed back at now, rounded up, the units
// a request could be charged, and the time until the bucket is full. t is
// the emission interval.
func (s GCRA) Peek(n, t, now int64) Usage {
	d := max(0, s.TAT-now)
	return Usage{Used: (d + t - 1) / t, Remaining: (n*t - d) / t, ResetAfter: d}
}

// Refund moves the TAT back by inc, never before now, for a charge whose TAT
// right after it was window. A charge whose window has passed has flowed back
// already. It returns the new state, whether anything was still charged, and
// the units given back.
func (s GCRA) Refund(t, inc, window, now int64) (GCRA, bool, int64) {
	if now >= window || s.TAT <= now {
		return s, false, 0
	}
	tat := max(s.TAT-inc, now)
	back := (s.TAT - tat + t - 1) / t
	if tat == now {
		tat = 0
	}
	return GCRA{TAT: tat}, true, min(back, inc/t)
}

// Entry is one sliding-log entry: c units charged at Time by a receipt's
// charge.
type Entry struct {
	Time   int64
	ID     [16]byte
	Charge int // index of the charge in its receipt
	Units  int64
}

// Log is a sliding log: its entries, oldest first, and their total units.
type Log struct {
	Entries []Entry
	Total   int64
}

// Prune drops the entries that have left the window at now: those at
// Time <= now-p.
func (l *Log) Prune(p, now int64) {
	k := 0
	for k < len(l.Entries) && l.Entries[k].Time <= now-p {
		l.Total -= l.Entries[k].Units
		k++
	}
	if k > 0 {
		l.Entries = l.Entries[k:]
		if len(l.Entries) == 0 {
			l.Entries = nil
		}
	}
}

// Check evaluates a charge of c (after Prune) without recording it.
func (l *Log) Check(n, p, c, now int64) Result {
	if l.Total+c <= n {
		return Result{Allowed: true, Remaining: n - l.Total - c, ResetAfter: p}
	}
	var freed, retry int64
	for _, e := range l.Entries {
		freed += e.Units
		if l.Total-freed+c <= n {
			retry = e.Time + p - now
			break
		}
	}
	return l.Peek(n, p, now).denied(retry)
}

func (l *Log) resetAfter(p, now int64) int64 {
	if len(l.Entries) == 0 {
		return 0
	}
	return l.Entries[len(l.Entries)-1].Time + p - now
}

// Peek returns the units in the window (after Prune), what is left of n,
// and the time until the log is empty.
func (l *Log) Peek(n, p, now int64) Usage {
	return Usage{Used: l.Total, Remaining: n - l.Total, ResetAfter: l.resetAfter(p, now)}
}

// Add records c units charged at now. Entries stay in time order: a clock
// that stepped back records at the newest entry's time.
func (l *Log) Add(e Entry) {
	if k := len(l.Entries); k > 0 && e.Time < l.Entries[k-1].Time {
		e.Time = l.Entries[k-1].Time
	}
	l.Entries = append(l.Entries, e)
	l.Total += e.Units
}

// Remove deletes the entry of the given receipt charge, if it is still in the
// log (after Prune), and returns its units.
func (l *Log) Remove(id [16]byte, charge int) (int64, bool) {
	for i, e := range l.Entries {
		if e.ID == id && e.Charge == charge {
			l.Entries = slices.Delete(l.Entries, i, i+1)
			l.Total -= e.Units
			return e.Units, true
		}
	}
	return 0, false
}
