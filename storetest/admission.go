package storetest

import (
	"testing"
	"time"

	"github.com/allowancehq/allowance"
)

// testAdmission charges 5/minute to exhaustion and checks every figure of
// every decision against the algorithm's arithmetic.
func (s *suite) testAdmission(t *testing.T) {
	forEachAlgorithm(t, func(t *testing.T, alg allowance.Algorithm) {
		e := s.env(t)
		r := rule(t, "r", alg, "5/minute", 0)
		e.clock.alignTo(time.Minute)
		for k := int64(1); k <= 5; k++ {
			d := e.mustAllow("alice", r)
			var reset time.Duration
			switch alg {
			case allowance.FixedWindow, allowance.SlidingLog:
				reset = time.Minute
			case allowance.SlidingWindow:
				reset = 2 * time.Minute // the charges count, decaying, through the next window
			case allowance.GCRA:
				reset = time.Duration(k) * 12 * time.Second
			}
			e.wantDecision(d, true, 5-k, reset, 0)
			if d.Len() != 1 || d.MostRestrictive() != 0 {
				t.Fatalf("decision has %d states, most restrictive %d; want 1, 0", d.Len(), d.MostRestrictive())
			}
			if c := d.Receipt.Charges(); len(c) != 1 || c[0].Rule != "r" || c[0].Amount != 1 || c[0].Algorithm != alg || c[0].Limit != r.Limits[0] {
				t.Fatalf("receipt charges %+v; want one charge of 1 unit of r 5/minute", c)
			}
		}
		d := e.mustDeny("alice", r)
		switch alg {
		case allowance.FixedWindow:
			e.wantDecision(d, false, 0, time.Minute, time.Minute)
		case allowance.SlidingWindow:
			// The next window starts with the estimate 5; it drops to 4 one
			// microsecond later.
			e.wantDecision(d, false, 0, 2*time.Minute, time.Minute+us)
		case allowance.SlidingLog:
			e.wantDecision(d, false, 0, time.Minute, time.Minute)
		case allowance.GCRA:
			e.wantDecision(d, false, 0, time.Minute, 12*time.Second)
		}
		if st := d.State(0); st.Allowed || st.Rule != "r" || st.Limit != r.Limits[0] {
			t.Fatalf("state %+v; want r 5/minute denied", st)
		}
		if d.Receipt.Identity != "alice" {
			t.Fatalf("denied receipt identity %q, want alice", d.Receipt.Identity)
		}
		u := e.peek("alice", r)
		if u[0].Used != 5 || u[0].Remaining != 0 {
			t.Fatalf("after a denial: used %d remaining %d; want 5, 0 (a denial charges nothing)", u[0].Used, u[0].Remaining)
		}
		// Other identities are unaffected.
		e.mustAllow("bob", r)
	})
}

// testCost charges 3 units a request against 10/minute.
func (s *suite) testCost(t *testing.T) {
	forEachAlgorithm(t, func(t *testing.T, alg allowance.Algorithm) {
		e := s.env(t)
		r := rule(t, "r", alg, "10/minute", 3)
		e.clock.alignTo(time.Minute)
		for _, want := range []int64{7, 4, 1} {
			d := e.mustAllow("alice", r)
			if d.Remaining != want {
				t.Fatalf("remaining %d, want %d", d.Remaining, want)
			}
			if c := d.Receipt.Charge(0); c.Amount != 3 {
				t.Fatalf("receipt amount %d, want 3", c.Amount)
			}
		}
		d := e.mustDeny("alice", r)
		if d.Remaining != 1 {
			t.Fatalf("denied with remaining %d, want 1", d.Remaining)
		}
		u := e.peek("alice", r)
		if u[0].Used != 9 {
			t.Fatalf("used %d, want 9", u[0].Used)
		}
		// One unit is left: a cost-1 rule sharing the limit could take it, but
		// rules are counted by name, so a rule of another name is separate.
		one := rule(t, "one", alg, "10/minute", 1)
		e.mustAllow("alice", one)
	})
}

// testRequestCost charges requests that carry their own cost
// (Request.Costs) against 10/minute, and refunds one through its encoding.
func (s *suite) testRequestCost(t *testing.T) {
	forEachAlgorithm(t, func(t *testing.T, alg allowance.Algorithm) {
		e := s.env(t)
		r := rule(t, "r", alg, "10/minute", 0)
		e.clock.alignTo(time.Minute)
		four := e.chargeCosts("alice", []int64{4}, r)
		if !four.Allowed || four.Remaining != 6 {
			t.Fatalf("cost 4: %s; want allowed with 6 remaining", describe(&four))
		}
		if c := four.Receipt.Charge(0); c.Amount != 4 {
			t.Fatalf("receipt amount %d, want 4", c.Amount)
		}
		// A zero entry keeps the rule's cost, 1.
		one := e.chargeCosts("alice", []int64{0}, r)
		if !one.Allowed || one.Remaining != 5 || one.Receipt.Charge(0).Amount != 1 {
			t.Fatalf("cost 0 (the rule's): %s, amount %d; want allowed with 5 remaining, amount 1", describe(&one), one.Receipt.Charge(0).Amount)
		}
		six := e.chargeCosts("alice", []int64{6}, r)
		if six.Allowed || six.Remaining != 5 || six.RetryAfter <= 0 {
			t.Fatalf("cost 6 with 5 left: %s; want denied, 5 remaining, a retry time", describe(&six))
		}
		// The receipt's encoding carries the cost, under its tag.
		b, err := four.Receipt.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var decoded allowance.Receipt
		if err := decoded.UnmarshalBinary(b); err != nil {
			t.Fatal(err)
		}
		res := e.refund(&decoded)
		if o := res.Charges[0]; o.Outcome != allowance.Restored || o.Restored != 4 {
			t.Fatalf("refund of the cost-4 receipt: %s %d units; want restored 4", o.Outcome, o.Restored)
		}
		if u := e.peek("alice", r); u[0].Used != 1 || u[0].Remaining != 9 {
			t.Fatalf("after the refund: used %d remaining %d; want 1, 9", u[0].Used, u[0].Remaining)
		}
		// Now six fits.
		if d := e.chargeCosts("alice", []int64{6}, r); !d.Allowed || d.Remaining != 3 {
			t.Fatalf("cost 6 after the refund: %s; want allowed with 3 remaining", describe(&d))
		}
	})
}

// testFixedWindowEdges charges at the last microsecond of a window and the
// first of the next.
func (s *suite) testFixedWindowEdges(t *testing.T) {
	e := s.env(t)
	r := rule(t, "r", allowance.FixedWindow, "3/minute", 0)
	e.clock.alignTo(time.Minute)
	e.mustAllow("alice", r) // first microsecond of the window
	e.advance(time.Minute - 2*us)
	e.wantDecision(e.mustAllow("alice", r), true, 1, 2*us, 0)
	e.advance(us) // last microsecond
	e.wantDecision(e.mustAllow("alice", r), true, 0, us, 0)
	e.wantDecision(e.mustDeny("alice", r), false, 0, us, us)
	e.advance(us) // first microsecond of the next window
	e.wantDecision(e.mustAllow("alice", r), true, 2, time.Minute, 0)
	u := e.peek("alice", r)
	e.wantUsage(u, 0, 1, 2, time.Minute)
}

// testSlidingWindowEstimate follows the weighted estimate cur +
// floor(prev*(P-e)/P) across a window boundary.
func (s *suite) testSlidingWindowEstimate(t *testing.T) {
	e := s.env(t)
	r := rule(t, "r", allowance.SlidingWindow, "10 per 10 seconds", 0)
	p := 10 * time.Second
	e.clock.alignTo(p)
	for range 10 {
		e.mustAllow("alice", r)
	}
	// The current window is full: only the next can admit, once the 10 have
	// decayed to 9, one microsecond into it.
	e.wantDecision(e.mustDeny("alice", r), false, 0, 2*p, p+us)
	e.advance(p) // next window, e = 0: estimate floor(10*P/P) = 10
	e.wantDecision(e.mustDeny("alice", r), false, 0, p, us)
	e.wantUsage(e.peek("alice", r), 0, 10, 0, p)
	e.advance(us) // estimate floor(10*(P-1)/P) = 9
	e.wantDecision(e.mustAllow("alice", r), true, 0, 2*p-us, 0)
	e.advance(p/2 - us) // half way: 1 + floor(10/2) = 6
	e.wantUsage(e.peek("alice", r), 0, 6, 4, 3*p/2)
	for range 4 {
		e.mustAllow("alice", r)
	}
	// cur = 5, prev 10 decays: floor(10*(P-e)/P) <= 4 from e = P/2+1.
	e.wantDecision(e.mustDeny("alice", r), false, 0, 3*p/2, us)
	e.advance(us)
	e.wantDecision(e.mustAllow("alice", r), true, 0, 3*p/2-us, 0)
}

// testSlidingLogMovingWindow checks that the log counts exactly the last
// period: an entry at t leaves the window at t+P.
func (s *suite) testSlidingLogMovingWindow(t *testing.T) {
	e := s.env(t)
	r := rule(t, "r", allowance.SlidingLog, "3 per 10 seconds", 0)
	p := 10 * time.Second
	e.advance(1234567 * us) // the log is not aligned to anything
	e.mustAllow("alice", r)
	e.advance(3 * time.Second)
	e.mustAllow("alice", r)
	e.advance(3 * time.Second)
	e.wantDecision(e.mustAllow("alice", r), true, 0, p, 0)
	e.wantDecision(e.mustDeny("alice", r), false, 0, p, 4*time.Second)
	e.advance(4*time.Second - us)
	e.wantDecision(e.mustDeny("alice", r), false, 0, p-4*time.Second+us, us)
	e.advance(us) // the first entry leaves
	e.wantUsage(e.peek("alice", r), 0, 2, 1, 6*time.Second)
	e.wantDecision(e.mustAllow("alice", r), true, 0, p, 0)
	e.wantDecision(e.mustDeny("alice", r), false, 0, p, 3*time.Second)
}

// testGCRABurst checks the burst of N and the emission interval, including
// its rounding up to whole microseconds.
func (s *suite) testGCRABurst(t *testing.T) {
	e := s.env(t)
	r := rule(t, "r", allowance.GCRA, "10 per 10 seconds", 0)
	for k := int64(1); k <= 10; k++ {
		e.wantDecision(e.mustAllow("alice", r), true, 10-k, time.Duration(k)*time.Second, 0)
	}
	e.wantDecision(e.mustDeny("alice", r), false, 0, 10*time.Second, time.Second)
	e.advance(time.Second - us)
	e.wantDecision(e.mustDeny("alice", r), false, 0, 9*time.Second+us, us)
	e.advance(us)
	e.wantDecision(e.mustAllow("alice", r), true, 0, 10*time.Second, 0)
	e.advance(5*time.Second + 500*time.Millisecond)
	// 4.5 s of units outstanding: 5 used (rounded up), 5 remaining.
	e.wantUsage(e.peek("alice", r), 0, 5, 5, 4500*time.Millisecond)

	// 3 per 10 s: T = ceil(10 s / 3) = 3.333334 s.
	odd := rule(t, "odd", allowance.GCRA, "3 per 10 seconds", 0)
	tee := 3333334 * us
	for range 3 {
		e.mustAllow("bob", odd)
	}
	e.wantDecision(e.mustDeny("bob", odd), false, 0, 3*tee, tee)
	e.advance(tee)
	e.wantDecision(e.mustAllow("bob", odd), true, 0, 3*tee, 0)
}
