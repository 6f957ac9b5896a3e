package storetest

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/allowancehq/allowance"
)

// drawLimit draws a small limit, so that random sequences reach it often.
func drawLimit(t *rapid.T, label string) allowance.Limit {
	return allowance.Limit{
		Count:  rapid.Int64Range(1, 6).Draw(t, label+" count"),
		Period: time.Duration(rapid.Int64Range(1, 4).Draw(t, label+" seconds")) * time.Second,
	}
}

// drawStep draws a clock step up to max, often tiny, sometimes zero.
func drawStep(t *rapid.T, max time.Duration, label string) time.Duration {
	switch rapid.IntRange(0, 3).Draw(t, label+" kind") {
	case 0:
		return 0
	case 1:
		return time.Duration(rapid.Int64Range(1, 3).Draw(t, label+" µs")) * us
	}
	return time.Duration(rapid.Int64Range(1, max.Microseconds()).Draw(t, label)) * us
}

// testRetryAfterProperty: for any sequence of charges, a denied charge's
// RetryAfter is exact (1µs earlier a charge of the same cost is denied, at
// RetryAfter it passes) and so is an allowed charge's ResetAfter (then the
// limit is unused).
func (s *suite) testRetryAfterProperty(t *testing.T) {
	forEachAlgorithm(t, func(t *testing.T, alg allowance.Algorithm) {
		base := s.env(t)
		n := 0
		rapid.Check(t, func(rt *rapid.T) {
			e := base.with(rt)
			n++
			id := fmt.Sprintf("retry-%d", n)
			e.clock.alignTo(time.Hour) // see testRefundProperty
			l := drawLimit(rt, "limit")
			r := allowance.Rule{Name: "r", Limits: allowance.Limits{l}, Algorithm: alg, Cost: rapid.Int64Range(1, l.Count).Draw(rt, "cost")}
			steps := rapid.IntRange(1, 25).Draw(rt, "steps")
			for range steps {
				e.advance(drawStep(rt, 2*l.Period, "step"))
				d := e.charge(id, r)
				if d.Allowed {
					if rapid.IntRange(0, 5).Draw(rt, "drain") == 0 {
						e.advance(d.ResetAfter)
						e.wantUsage(e.peek(id, r), 0, 0, l.Count, 0)
					}
					continue
				}
				if d.RetryAfter <= 0 {
					rt.Fatalf("denied with retry-after %v: %s", d.RetryAfter, describe(&d))
				}
				e.advance(d.RetryAfter - us)
				if early := e.charge(id, r); early.Allowed {
					rt.Fatalf("retry-after %v: allowed 1µs before it", d.RetryAfter)
				}
				e.advance(us)
				if on := e.charge(id, r); !on.Allowed {
					rt.Fatalf("retry-after %v: denied when it has passed: %s", d.RetryAfter, describe(&on))
				}
			}
		})
	})
}

// charged is one charge made in a property test.
type charged struct {
	at       time.Duration // since the sequence began
	rules    []allowance.Rule
	allowed  bool
	receipt  allowance.Receipt
	refunded bool // a refund was made (anything but Declined)
	restored bool // a refund restored some of it
}

// testRefundProperty: for any sequence of charges, refunds and clock steps,
// the store that refunded makes the same later decisions as a second store
// that received only the charges that were admitted and not refunded. That
// holds exactly for the counters and the log; for GCRA it holds when the
// whole sequence happens at one instant, and otherwise each refund is checked
// against GCRA's rule: the TAT moves back by the increment, never before now,
// and a charge whose TAT has passed restores nothing.
func (s *suite) testRefundProperty(t *testing.T) {
	forEachAlgorithm(t, func(t *testing.T, alg allowance.Algorithm) {
		a := s.env(t)
		b := s.env(t)
		n := 0
		rapid.Check(t, func(rt *rapid.T) {
			n++
			ea, eb := a.with(rt), b.with(rt)
			id := fmt.Sprintf("refund-%d", n)
			// Every period drawn divides an hour: starting each sequence on
			// the hour makes it replayable, so that rapid can shrink it.
			ea.clock.alignTo(time.Hour)
			eb.clock.set(ea.clock.Now())
			began := ea.clock.Now()

			l1 := drawLimit(rt, "r1 limit")
			limits := allowance.Limits{l1}
			if rapid.Bool().Draw(rt, "r1 second limit") {
				if l := drawLimit(rt, "r1 limit 2"); l != l1 {
					limits = append(limits, l)
				}
			}
			l2 := drawLimit(rt, "r2 limit")
			minCount := l1.Count
			for _, l := range limits {
				minCount = min(minCount, l.Count)
			}
			r1 := allowance.Rule{Name: "r1", Limits: limits, Algorithm: alg, Cost: rapid.Int64Range(1, minCount).Draw(rt, "r1 cost")}
			r2 := allowance.Rule{Name: "r2", Limits: allowance.Limits{l2}, Algorithm: alg, Cost: rapid.Int64Range(1, l2.Count).Draw(rt, "r2 cost")}
			sets := [][]allowance.Rule{{r1}, {r2}, {r1, r2}}
			instant := rapid.Bool().Draw(rt, "one instant")
			exact := alg != allowance.GCRA || instant

			var log []*charged
			var admitted []int
			ops := rapid.IntRange(1, 30).Draw(rt, "ops")
			for range ops {
				switch op := rapid.IntRange(0, 4).Draw(rt, "op"); {
				case op <= 1 || len(admitted) == 0:
					set := sets[rapid.IntRange(0, 2).Draw(rt, "rules")]
					d := ea.charge(id, set...)
					c := &charged{at: ea.clock.Now().Sub(began), rules: set, allowed: d.Allowed, receipt: d.Receipt}
					log = append(log, c)
					if d.Allowed {
						admitted = append(admitted, len(log)-1)
					}
				case op <= 3:
					c := log[admitted[rapid.IntRange(0, len(admitted)-1).Draw(rt, "refund")]]
					refundChecked(ea, c, exact)
				default:
					if !instant {
						ea.advance(drawStep(rt, 4*time.Second, "step"))
					}
				}
			}
			if !exact {
				return
			}
			// Replay on b only what a kept.
			for _, c := range log {
				if !c.allowed || c.restored {
					continue
				}
				eb.clock.set(began.Add(c.at))
				if d := eb.charge(id, c.rules...); !d.Allowed {
					rt.Fatalf("replay at +%v: a charge that was admitted with more usage is denied: %s", c.at, describe(&d))
				}
			}
			eb.clock.set(ea.clock.Now())
			all := []allowance.Rule{r1, r2}
			for probe := 0; ; probe++ {
				ua, ub := ea.peek(id, all...), eb.peek(id, all...)
				if !slices.Equal(ua, ub) {
					rt.Fatalf("probe %d: usage after refunds %+v; without the refunded charges %+v", probe, ua, ub)
				}
				if probe == 8 {
					break
				}
				set := sets[rapid.IntRange(0, 2).Draw(rt, "probe rules")]
				da, db := ea.charge(id, set...), eb.charge(id, set...)
				if !sameDecision(&da, &db) {
					rt.Fatalf("probe %d: decision after refunds %s; without the refunded charges %s", probe, describe(&da), describe(&db))
				}
				if !instant {
					step := drawStep(rt, 4*time.Second, "probe step")
					ea.advance(step)
					eb.advance(step)
				}
			}
		})
	})
}

// refundChecked refunds c on e and checks each outcome: the first refund
// restores exactly the charges whose windows are live and reports the others
// ended; later refunds report AlreadyRefunded while any charge of the receipt
// is live (after that, the store may have forgotten the refund, and report
// WindowEnded). Unless exact (GCRA across
// clock steps), a GCRA refund is checked against the rule that the TAT moves
// back by the charge's increment and never before now.
func refundChecked(e *env, c *charged, exact bool) {
	t := e.t
	t.Helper()
	rc := &c.receipt
	rules := rc.Rules()
	before := e.peek(rc.Identity, rules...)
	res := e.refund(rc)
	after := e.peek(rc.Identity, rules...)
	now := e.clock.Now().UnixMicro()
	for i, o := range res.Charges {
		ch := rc.Charge(i)
		if c.refunded {
			ended := o.Outcome == allowance.WindowEnded && now >= rc.Expiry(e.clock.Now()).UnixMicro()
			if o.Outcome != allowance.AlreadyRefunded && !ended || o.Restored != 0 {
				t.Fatalf("charge %d refunded again at %d (receipt expiry %d): %s %d units; want already_refunded",
					i, now, rc.Expiry(e.clock.Now()).UnixMicro(), o.Outcome, o.Restored)
			}
			continue
		}
		p := ch.Limit.Period.Microseconds()
		var live bool
		switch ch.Algorithm {
		case allowance.FixedWindow, allowance.SlidingLog:
			live = now < ch.Window+p
		case allowance.SlidingWindow:
			live = now < ch.Window+2*p
		case allowance.GCRA:
			live = now < ch.Window && before[i].ResetAfter > 0
			// What the charge added to the TAT: amount emission intervals.
			n, p := ch.Limit.Count, ch.Limit.Period.Microseconds()
			incµs := ch.Amount * ((p + n - 1) / n)
			inc := time.Duration(incµs) * us
			want := before[i].ResetAfter
			if live {
				want = max(0, want-inc)
			}
			if after[i].ResetAfter != want {
				t.Fatalf("GCRA refund of charge %d (%d µs): time to a full bucket %v, then %v; want %v", i, incµs, before[i].ResetAfter, after[i].ResetAfter, want)
			}
		}
		switch {
		case live && (o.Outcome != allowance.Restored || o.Restored < 1 || o.Restored > ch.Amount || exact && o.Restored != ch.Amount):
			t.Fatalf("refund of live charge %d (%+v) at %d: %s %d units; want restored %d", i, ch, now, o.Outcome, o.Restored, ch.Amount)
		case !live && (o.Outcome != allowance.WindowEnded || o.Restored != 0):
			t.Fatalf("refund of ended charge %d (%+v) at %d: %s %d units; want window_ended", i, ch, now, o.Outcome, o.Restored)
		}
		if live {
			c.restored = true
		}
	}
	c.refunded = true
}

// sameDecision compares two decisions' figures and states.
func sameDecision(a, b *allowance.Decision) bool {
	if a.Allowed != b.Allowed || a.Remaining != b.Remaining || a.ResetAfter != b.ResetAfter || a.RetryAfter != b.RetryAfter || a.Len() != b.Len() {
		return false
	}
	for i := 0; i < a.Len(); i++ {
		if a.State(i) != b.State(i) {
			return false
		}
	}
	return true
}
