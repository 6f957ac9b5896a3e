package storetest

import (
	"testing"
	"time"

	"github.com/allowancehq/allowance"
)

// testAllOrNothingLimits: a request denied by 5/day does not consume 3/minute
// of the same rule.
func (s *suite) testAllOrNothingLimits(t *testing.T) {
	forEachAlgorithm(t, func(t *testing.T, alg allowance.Algorithm) {
		e := s.env(t)
		r := rule(t, "r", alg, "3/minute; 5/day", 0)
		s.allOrNothing(e, []allowance.Rule{r})
	})
}

// testAllOrNothingRules: the same across two rules of one request, also with
// different algorithms.
func (s *suite) testAllOrNothingRules(t *testing.T) {
	forEachAlgorithm(t, func(t *testing.T, alg allowance.Algorithm) {
		e := s.env(t)
		other := allowance.Algorithm((int(alg) + 1) % len(allowance.Algorithms()))
		s.allOrNothing(e, []allowance.Rule{
			rule(t, "per-minute", alg, "3/minute", 0),
			rule(t, "per-day", other, "5/day", 0),
		})
	})
}

// allOrNothing runs the 3/minute and 5/day story; rules hold those two
// limits in that order.
func (s *suite) allOrNothing(e *env, rules []allowance.Rule) {
	t := e.t
	t.Helper()
	e.clock.alignTo(24 * time.Hour)
	for range 3 {
		e.mustAllow("alice", rules...)
	}
	d := e.mustDeny("alice", rules...)
	if st := d.State(0); st.Allowed {
		t.Fatalf("fourth charge: minute limit allows; want it to deny: %s", describe(&d))
	}
	if st := d.State(1); !st.Allowed {
		t.Fatalf("fourth charge: day limit %+v; want it to allow", st)
	}
	if d.MostRestrictive() != 0 {
		t.Fatalf("most restrictive limit %d, want 0 (the minute): %s", d.MostRestrictive(), describe(&d))
	}
	u := e.peek("alice", rules...)
	if u[1].Used != 3 {
		t.Fatalf("day usage %d after a denied charge, want 3", u[1].Used)
	}
	e.advance(2 * time.Minute) // every algorithm has forgotten the minute
	e.mustAllow("alice", rules...)
	e.mustAllow("alice", rules...)
	e.advance(2 * time.Minute)
	d = e.mustDeny("alice", rules...)
	if st := d.State(0); !st.Allowed {
		t.Fatalf("charge past the day limit: minute limit %+v; want it to allow", st)
	}
	if st := d.State(1); st.Allowed || st.RetryAfter <= 0 {
		t.Fatalf("charge past the day limit: day limit %+v; want denied with a retry-after", st)
	}
	if d.MostRestrictive() != 1 || d.RetryAfter != d.State(1).RetryAfter {
		t.Fatalf("most restrictive %d, retry %v; want the day limit's: %s", d.MostRestrictive(), d.RetryAfter, describe(&d))
	}
	u = e.peek("alice", rules...)
	if u[0].Used != 0 || u[0].Remaining != 3 {
		t.Fatalf("minute usage %+v after a charge denied by the day limit; want nothing used", u[0])
	}
	if u[1].Used != 5 || u[1].Remaining != 0 {
		t.Fatalf("day usage %+v; want 5 used", u[1])
	}
}

// testMultipleRules charges two rules in one request and one of them alone,
// and refunds the pair.
func (s *suite) testMultipleRules(t *testing.T) {
	forEachAlgorithm(t, func(t *testing.T, alg allowance.Algorithm) {
		e := s.env(t)
		e.clock.alignTo(time.Minute)
		a := rule(t, "a", alg, "2/minute", 0)
		b := rule(t, "b", alg, "4/minute; 10/hour", 0)
		d := e.mustAllow("alice", a, b)
		if d.Len() != 3 || d.Receipt.Len() != 3 {
			t.Fatalf("%d states, %d charges; want 3 and 3", d.Len(), d.Receipt.Len())
		}
		if d.MostRestrictive() != 0 || d.Remaining != 1 {
			t.Fatalf("most restrictive %d with %d remaining; want a's 2/minute with 1: %s", d.MostRestrictive(), d.Remaining, describe(&d))
		}
		for i, want := range []struct {
			rule  string
			limit string
		}{{"a", "2/minute"}, {"b", "4/minute"}, {"b", "10/hour"}} {
			c := d.Receipt.Charge(i)
			if c.Rule != want.rule || c.Limit.String() != want.limit || c.Amount != 1 || c.Algorithm != alg {
				t.Fatalf("charge %d is %+v; want 1 unit of %s %s", i, c, want.rule, want.limit)
			}
			st := d.State(i)
			if st.Rule != want.rule || st.Limit.String() != want.limit || !st.Allowed {
				t.Fatalf("state %d is %+v; want %s %s allowed", i, st, want.rule, want.limit)
			}
		}
		pair := d.Receipt
		e.mustAllow("alice", a, b)
		e.mustDeny("alice", a, b)
		e.mustAllow("alice", b) // b alone still has room: 3 of 4
		u := e.peek("alice", a, b)
		if u[0].Used != 2 || u[1].Used != 3 || u[2].Used != 3 {
			t.Fatalf("usage %+v; want 2, 3, 3", u)
		}
		e.wantOutcomes(e.refund(&pair), allowance.Restored)
		u = e.peek("alice", a, b)
		if u[0].Used != 1 || u[1].Used != 2 || u[2].Used != 2 {
			t.Fatalf("usage after refunding the pair %+v; want 1, 2, 2", u)
		}
		e.mustAllow("alice", a, b)
	})
}

// testPeek checks Peek's figures for each algorithm, and that Peek charges
// nothing.
func (s *suite) testPeek(t *testing.T) {
	forEachAlgorithm(t, func(t *testing.T, alg allowance.Algorithm) {
		e := s.env(t)
		r := rule(t, "r", alg, "10 per 10 seconds", 0)
		p := 10 * time.Second
		e.clock.alignTo(p)
		e.wantUsage(e.peek("alice", r), 0, 0, 10, 0)
		e.mustAllow("alice", r)
		e.mustAllow("alice", r)
		e.mustAllow("alice", r)
		e.advance(2500 * time.Millisecond)
		u := e.peek("alice", r)
		if u[0].Rule != "r" || u[0].Limit != r.Limits[0] || u[0].Algorithm != alg {
			t.Fatalf("usage names %s %s %s; want r 10/10 seconds %s", u[0].Rule, u[0].Limit, u[0].Algorithm, alg)
		}
		switch alg {
		case allowance.FixedWindow:
			e.wantUsage(u, 0, 3, 7, p-2500*time.Millisecond)
		case allowance.SlidingWindow:
			e.wantUsage(u, 0, 3, 7, 2*p-2500*time.Millisecond)
		case allowance.SlidingLog:
			e.wantUsage(u, 0, 3, 7, p-2500*time.Millisecond)
		case allowance.GCRA:
			// TAT is 3 s after the charges; 0.5 s are left, one unit.
			e.wantUsage(u, 0, 1, 9, 500*time.Millisecond)
		}
		e.wantUsage(e.peek("alice", r), 0, u[0].Used, u[0].Remaining, u[0].ResetAfter) // peek charges nothing
		e.wantUsage(e.peek("bob", r), 0, 0, 10, 0)
		if alg == allowance.SlidingWindow {
			e.advance(p) // next window, 2.5 s in: floor(3*7.5/10) = 2
			e.wantUsage(e.peek("alice", r), 0, 2, 8, p-2500*time.Millisecond)
		}
	})
}

// testReset forgets an identity's usage of some rules only.
func (s *suite) testReset(t *testing.T) {
	forEachAlgorithm(t, func(t *testing.T, alg allowance.Algorithm) {
		e := s.env(t)
		r := rule(t, "r", alg, "2/minute; 3/hour", 0)
		other := rule(t, "other", alg, "2/minute", 0)
		e.mustAllow("alice", r, other)
		e.mustAllow("alice", r, other)
		e.mustAllow("bob", r)
		e.mustDeny("alice", r)
		e.reset("alice", r)
		u := e.peek("alice", r, other)
		e.wantUsage(u, 0, 0, 2, 0)
		e.wantUsage(u, 1, 0, 3, 0)
		if u[2].Used != 2 {
			t.Fatalf("reset of r changed other: used %d, want 2", u[2].Used)
		}
		if u := e.peek("bob", r); u[0].Used != 1 {
			t.Fatalf("reset of alice changed bob: used %d, want 1", u[0].Used)
		}
		e.mustAllow("alice", r)
		e.mustAllow("alice", r)
		e.mustDeny("alice", r)
		e.reset("nobody", r) // nothing to forget is not an error
	})
}
