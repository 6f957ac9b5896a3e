package algo

import (
	"slices"
	"testing"

	"pgregory.net/rapid"
)

// limiter is one algorithm's state behind one interface, so that a property
// can brute-force every microsecond of a small period.
type limiter interface {
	// check evaluates a charge of c at now without changing the state.
	check(c, now int64) Result
	// charge applies a charge of c at now if it is allowed.
	charge(c, now int64) Result
	// peek returns the usage at now, nothing charged.
	peek(now int64) Usage
}

type fixed struct {
	n, p int64
	s    Fixed
}

func (f *fixed) check(c, now int64) Result { r, _ := f.s.Charge(f.n, f.p, c, now); return r }
func (f *fixed) charge(c, now int64) Result {
	r, s := f.s.Charge(f.n, f.p, c, now)
	f.s = s
	return r
}
func (f *fixed) peek(now int64) Usage { return f.s.Peek(f.n, f.p, now) }

type sliding struct {
	n, p int64
	s    Sliding
}

func (f *sliding) check(c, now int64) Result { r, _ := f.s.Charge(f.n, f.p, c, now); return r }
func (f *sliding) charge(c, now int64) Result {
	r, s := f.s.Charge(f.n, f.p, c, now)
	f.s = s
	return r
}
func (f *sliding) peek(now int64) Usage { return f.s.Peek(f.n, f.p, now) }

type gcra struct {
	n, t int64
	s    GCRA
}

func (f *gcra) check(c, now int64) Result { r, _ := f.s.Charge(f.n, f.t, c, now); return r }
func (f *gcra) charge(c, now int64) Result {
	r, s := f.s.Charge(f.n, f.t, c, now)
	if r.Allowed {
		f.s = s
	}
	return r
}
func (f *gcra) peek(now int64) Usage { return f.s.Peek(f.n, f.t, now) }

type slidingLog struct {
	n, p int64
	l    Log
	next int
}

func (f *slidingLog) check(c, now int64) Result {
	l := Log{Entries: slices.Clone(f.l.Entries), Total: f.l.Total}
	l.Prune(f.p, now)
	return l.Check(f.n, f.p, c, now)
}
func (f *slidingLog) charge(c, now int64) Result {
	f.l.Prune(f.p, now)
	r := f.l.Check(f.n, f.p, c, now)
	if r.Allowed {
		f.next++
		f.l.Add(Entry{Time: now, Charge: f.next, Units: c})
	}
	return r
}
func (f *slidingLog) peek(now int64) Usage {
	l := Log{Entries: slices.Clone(f.l.Entries), Total: f.l.Total}
	l.Prune(f.p, now)
	return l.Peek(f.n, f.p, now)
}

var algorithms = []string{"fixed", "sliding", "sliding-log", "gcra"}

func newLimiter(alg string, n, p int64) limiter {
	switch alg {
	case "fixed":
		return &fixed{n: n, p: p}
	case "sliding":
		return &sliding{n: n, p: p}
	case "sliding-log":
		return &slidingLog{n: n, p: p}
	}
	return &gcra{n: n, t: (p + n - 1) / n}
}

// TestRetryAfterIsExact: for every algorithm and any history, a denied
// charge's RetryAfter is the first microsecond at which the same charge
// passes, and its Remaining and ResetAfter are Peek's at that instant;
// Remaining is the largest charge that passes now (Peek's too); and
// ResetAfter is when usage is gone. Periods are a few microseconds so every
// instant can be tried.
func TestRetryAfterIsExact(t *testing.T) {
	for _, alg := range algorithms {
		t.Run(alg, func(t *testing.T) {
			rapid.Check(t, func(t *rapid.T) {
				n := rapid.Int64Range(1, 8).Draw(t, "n")
				p := rapid.Int64Range(1, 40).Draw(t, "p")
				lim := newLimiter(alg, n, p)
				now := rapid.Int64Range(0, 1000).Draw(t, "start")
				for range rapid.IntRange(1, 40).Draw(t, "ops") {
					now += rapid.Int64Range(0, 2*p).Draw(t, "step")
					c := rapid.Int64Range(1, n).Draw(t, "amount")
					r := lim.check(c, now)
					checkRemaining(t, lim, r, c, now, n)
					u := lim.peek(now)
					checkRemaining(t, lim, Result{Remaining: u.Remaining}, 0, now, n)
					if !r.Allowed {
						if r.Remaining != u.Remaining || r.ResetAfter != u.ResetAfter {
							t.Fatalf("denied with remaining %d, reset %d; peek says %d, %d", r.Remaining, r.ResetAfter, u.Remaining, u.ResetAfter)
						}
						if r.RetryAfter <= 0 {
							t.Fatalf("denied with RetryAfter %d", r.RetryAfter)
						}
						for dt := int64(0); dt < r.RetryAfter; dt++ {
							if lim.check(c, now+dt).Allowed {
								t.Fatalf("RetryAfter %d, but the charge passes after %d", r.RetryAfter, dt)
							}
						}
						if !lim.check(c, now+r.RetryAfter).Allowed {
							t.Fatalf("RetryAfter %d, but the charge is denied then", r.RetryAfter)
						}
						continue
					}
					if r.RetryAfter != 0 {
						t.Fatalf("allowed with RetryAfter %d", r.RetryAfter)
					}
					lim.charge(c, now)
					u = lim.peek(now)
					if u.Used <= 0 || u.ResetAfter != r.ResetAfter || u.Remaining != r.Remaining {
						t.Fatalf("after a charge: peek %+v; the charge said remaining %d, reset %d", u, r.Remaining, r.ResetAfter)
					}
					reset := u.ResetAfter
					if u := lim.peek(now + reset); u.Used != 0 || u.Remaining != n {
						t.Fatalf("at ResetAfter %d: peek %+v; want nothing used", reset, u)
					}
					if alg != "sliding" && reset > 0 {
						// The estimate of the sliding window can round to 0
						// before its counts are gone.
						if u := lim.peek(now + reset - 1); u.Used == 0 {
							t.Fatalf("no units used 1µs before ResetAfter %d", reset)
						}
					}
				}
			})
		})
	}
}

// checkRemaining: Remaining is what can be charged at now, after the charge
// when it is allowed.
func checkRemaining(t *rapid.T, lim limiter, r Result, c, now, n int64) {
	t.Helper()
	left := r.Remaining
	if r.Allowed {
		left += c
	}
	for k := int64(1); k <= n; k++ {
		if got := lim.check(k, now).Allowed; got != (k <= left) {
			t.Fatalf("Remaining %d (amount %d, allowed %v), but a charge of %d allowed=%v", r.Remaining, c, r.Allowed, k, got)
		}
	}
}

// TestRefunds: each algorithm's refund restores exactly the charge while its
// window lives, and nothing after.
func TestRefunds(t *testing.T) {
	const p = 60
	t.Run("fixed", func(t *testing.T) {
		_, s := Fixed{}.Charge(5, p, 2, 125)
		if s != (Fixed{Start: 120, Count: 2}) {
			t.Fatalf("state %+v", s)
		}
		if s2, ok, r := s.Refund(p, 2, 120, 179); !ok || r != 2 || s2.Count != 0 {
			t.Fatalf("refund in the window: %+v %v %d", s2, ok, r)
		}
		if s2, ok, r := s.Refund(p, 2, 120, 180); ok || r != 0 || s2.Count != 0 || s2.Start != 180 {
			t.Fatalf("refund after the window: %+v %v %d", s2, ok, r)
		}
		if _, ok, r := (Fixed{Start: 120, Count: 1}).Refund(p, 3, 120, 130); !ok || r != 1 {
			t.Fatalf("refund above the count: %v %d; want 1 (never below zero)", ok, r)
		}
	})
	t.Run("sliding", func(t *testing.T) {
		s := Sliding{Start: 120, Cur: 3}
		if s2, ok, r := s.Refund(p, 2, 120, 190); !ok || r != 2 || s2 != (Sliding{Start: 180, Prev: 1}) {
			t.Fatalf("refund in the previous window: %+v %v %d", s2, ok, r)
		}
		if _, ok, r := s.Refund(p, 2, 120, 240); ok || r != 0 {
			t.Fatalf("refund two windows on: %v %d", ok, r)
		}
		if s2, ok, r := s.Refund(p, 2, 60, 130); !ok || r != 0 || s2 != s {
			t.Fatalf("refund of the previous window, already at zero: %+v %v %d; want nothing restored", s2, ok, r)
		}
	})
	t.Run("gcra", func(t *testing.T) {
		s := GCRA{TAT: 150}
		if s2, ok, r := s.Refund(10, 30, 150, 100); !ok || r != 3 || s2.TAT != 120 {
			t.Fatalf("refund: %+v %v %d", s2, ok, r)
		}
		if s2, ok, r := s.Refund(10, 30, 150, 140); !ok || r != 1 || s2.TAT != 0 {
			t.Fatalf("refund near the end: %+v %v %d; want the bucket full, 1 unit", s2, ok, r)
		}
		if _, ok, _ := s.Refund(10, 30, 120, 130); ok {
			t.Fatal("refund of a charge whose TAT has passed")
		}
	})
	t.Run("log", func(t *testing.T) {
		var l Log
		l.Add(Entry{Time: 10, ID: [16]byte{1}, Charge: 0, Units: 2})
		l.Add(Entry{Time: 5, ID: [16]byte{2}, Charge: 1, Units: 1}) // clock stepped back
		if l.Entries[1].Time != 10 || l.Total != 3 {
			t.Fatalf("log %+v", l)
		}
		if u, ok := l.Remove([16]byte{2}, 1); !ok || u != 1 || l.Total != 2 {
			t.Fatalf("remove: %d %v %+v", u, ok, l)
		}
		if _, ok := l.Remove([16]byte{2}, 1); ok {
			t.Fatal("removed twice")
		}
		l.Prune(p, 70)
		if len(l.Entries) != 0 || l.Total != 0 || l.Entries != nil {
			t.Fatalf("pruned log %+v", l)
		}
	})
}

// TestLetter: each algorithm's letter, which Redis keys hold, never changes.
func TestLetter(t *testing.T) {
	for k, want := range map[Kind]string{KindFixed: "f", KindSliding: "s", KindLog: "l", KindGCRA: "g", 4: "?"} {
		if got := k.Letter(); got != want {
			t.Errorf("Kind(%d).Letter() = %q, want %q", k, got, want)
		}
	}
}
