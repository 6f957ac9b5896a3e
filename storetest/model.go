package storetest

import (
	"fmt"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/allowancehq/allowance"
	"github.com/allowancehq/allowance/internal/algo"
)

// model is the reference a store's arithmetic is compared with: the
// internal/algo functions applied to plain state, all limits or none.
type model struct {
	fixed    map[modelKey]algo.Fixed
	sliding  map[modelKey]algo.Sliding
	gcra     map[modelKey]algo.GCRA
	logs     map[modelKey]*algo.Log
	refunded map[allowance.ReceiptID]int64 // receipt → expiry, µs
}

type modelKey struct {
	rule  string
	limit allowance.Limit
}

func newModel() *model {
	return &model{
		fixed:    map[modelKey]algo.Fixed{},
		sliding:  map[modelKey]algo.Sliding{},
		gcra:     map[modelKey]algo.GCRA{},
		logs:     map[modelKey]*algo.Log{},
		refunded: map[allowance.ReceiptID]int64{},
	}
}

// eval judges one limit at now; apply records the charge when it is allowed,
// and returns the charge's window.
func (m *model) eval(r *allowance.Rule, l allowance.Limit, id allowance.ReceiptID, i int, now int64, apply bool) (algo.Result, int64) {
	k := modelKey{r.Name, l}
	n, p, c := l.Count, l.Period.Microseconds(), r.Amount()
	switch r.Algorithm {
	case allowance.FixedWindow:
		res, st := m.fixed[k].Charge(n, p, c, now)
		if apply && res.Allowed {
			m.fixed[k] = st
		}
		return res, st.Start
	case allowance.SlidingWindow:
		res, st := m.sliding[k].Charge(n, p, c, now)
		if apply && res.Allowed {
			m.sliding[k] = st
		}
		return res, st.Start
	case allowance.GCRA:
		res, st := m.gcra[k].Charge(n, allowance.EmissionInterval(l), c, now)
		if apply && res.Allowed {
			m.gcra[k] = st
		}
		return res, st.TAT
	}
	lg := m.logs[k]
	if lg == nil {
		lg = &algo.Log{}
		m.logs[k] = lg
	}
	lg.Prune(p, now)
	res := lg.Check(n, p, c, now)
	if apply && res.Allowed {
		lg.Add(algo.Entry{Time: now, ID: id, Charge: i, Units: c})
	}
	return res, now
}

// charge judges every limit of rules and applies them all when all allow.
func (m *model) charge(id allowance.ReceiptID, rules []allowance.Rule, now int64) (bool, []algo.Result, []int64) {
	var results []algo.Result
	allowed := true
	i := 0
	for ri := range rules {
		for _, l := range rules[ri].Limits {
			res, _ := m.eval(&rules[ri], l, id, i, now, false)
			results = append(results, res)
			allowed = allowed && res.Allowed
			i++
		}
	}
	windows := make([]int64, len(results))
	if !allowed {
		// A denial reports every limit as it is now, as Peek does.
		i = 0
		for ri := range rules {
			for _, l := range rules[ri].Limits {
				if results[i].Allowed {
					u := m.usage(&rules[ri], l, now)
					results[i].Remaining, results[i].ResetAfter = u.Remaining, u.ResetAfter.Microseconds()
				}
				i++
			}
		}
	}
	if allowed {
		i = 0
		for ri := range rules {
			for _, l := range rules[ri].Limits {
				results[i], windows[i] = m.eval(&rules[ri], l, id, i, now, true)
				i++
			}
		}
	}
	return allowed, results, windows
}

// refund undoes receipt rc at now, as the store should. Once every charge
// of a refunded receipt has ended the store may have forgotten the refund:
// then either outcome, AlreadyRefunded or WindowEnded, is right (lenient).
func (m *model) refund(rc *allowance.Receipt, now int64) (out []allowance.ChargeOutcome, lenient bool) {
	out = make([]allowance.ChargeOutcome, rc.Len())
	exp, seen := m.refunded[rc.ID]
	if seen && exp > now {
		for i := range out {
			out[i] = allowance.ChargeOutcome{Charge: rc.Charge(i), Outcome: allowance.AlreadyRefunded}
		}
		return out, false
	}
	m.refunded[rc.ID] = rc.Expiry(time.UnixMicro(now)).UnixMicro()
	for i := range out {
		c := rc.Charge(i)
		k := modelKey{c.Rule, c.Limit}
		p := c.Limit.Period.Microseconds()
		var ok bool
		var units int64
		switch c.Algorithm {
		case allowance.FixedWindow:
			m.fixed[k], ok, units = m.fixed[k].Refund(p, c.Amount, c.Window, now)
		case allowance.SlidingWindow:
			m.sliding[k], ok, units = m.sliding[k].Refund(p, c.Amount, c.Window, now)
		case allowance.GCRA:
			m.gcra[k], ok, units = m.gcra[k].Refund(allowance.EmissionInterval(c.Limit), c.Increment(), c.Window, now)
		case allowance.SlidingLog:
			if lg := m.logs[k]; lg != nil {
				lg.Prune(p, now)
				units, ok = lg.Remove(rc.ID, i)
			}
		}
		out[i] = allowance.ChargeOutcome{Charge: c, Outcome: allowance.WindowEnded}
		if ok {
			out[i].Outcome, out[i].Restored = allowance.Restored, units
		}
	}
	return out, seen
}

// usage is what Peek should report for one limit.
func (m *model) usage(r *allowance.Rule, l allowance.Limit, now int64) allowance.Usage {
	k := modelKey{r.Name, l}
	n, p := l.Count, l.Period.Microseconds()
	var a algo.Usage
	switch r.Algorithm {
	case allowance.FixedWindow:
		a = m.fixed[k].Peek(n, p, now)
	case allowance.SlidingWindow:
		a = m.sliding[k].Peek(n, p, now)
	case allowance.GCRA:
		a = m.gcra[k].Peek(n, allowance.EmissionInterval(l), now)
	case allowance.SlidingLog:
		var lg algo.Log
		if m.logs[k] != nil {
			lg = *m.logs[k]
		}
		lg.Prune(p, now)
		a = lg.Peek(n, p, now)
	}
	return allowance.Usage{Rule: r.Name, Limit: l, Algorithm: r.Algorithm, Used: a.Used, Remaining: a.Remaining, ResetAfter: time.Duration(a.ResetAfter) * time.Microsecond}
}

// testModelProperty: for any sequence of charges (several rules, several
// limits, costs), refunds, peeks and clock steps, every figure the store
// reports equals the internal/algo arithmetic: admission, Remaining,
// ResetAfter and RetryAfter of every limit, the receipt's windows, each
// refund's outcome and units, and every peek.
func (s *suite) testModelProperty(t *testing.T) {
	forEachAlgorithm(t, func(t *testing.T, alg allowance.Algorithm) {
		base := s.env(t)
		n := 0
		rapid.Check(t, func(rt *rapid.T) {
			e := base.with(rt)
			n++
			id := fmt.Sprintf("model-%d", n)
			e.clock.alignTo(time.Hour) // see testRefundProperty
			m := newModel()

			l1 := drawLimit(rt, "r1 limit")
			limits := allowance.Limits{l1}
			if l := drawLimit(rt, "r1 limit 2"); l != l1 && rapid.Bool().Draw(rt, "r1 second limit") {
				limits = append(limits, l)
			}
			l2 := drawLimit(rt, "r2 limit")
			minCount := l1.Count
			for _, l := range limits {
				minCount = min(minCount, l.Count)
			}
			other := alg
			if rapid.Bool().Draw(rt, "r2 another algorithm") {
				other = allowance.Algorithm(rapid.IntRange(0, 3).Draw(rt, "r2 algorithm"))
			}
			r1 := allowance.Rule{Name: "r1", Limits: limits, Algorithm: alg, Cost: rapid.Int64Range(1, minCount).Draw(rt, "r1 cost")}
			r2 := allowance.Rule{Name: "r2", Limits: allowance.Limits{l2}, Algorithm: other, Cost: rapid.Int64Range(1, l2.Count).Draw(rt, "r2 cost")}
			sets := [][]allowance.Rule{{r1}, {r2}, {r1, r2}}

			var receipts []allowance.Receipt
			for range rapid.IntRange(1, 40).Draw(rt, "ops") {
				now := e.clock.Now().UnixMicro()
				switch op := rapid.IntRange(0, 5).Draw(rt, "op"); {
				case op <= 1:
					set := sets[rapid.IntRange(0, 2).Draw(rt, "rules")]
					d := e.charge(id, set...)
					rid := d.Receipt.ID
					allowed, results, windows := m.charge(rid, set, now)
					if d.Allowed != allowed || d.Len() != len(results) {
						rt.Fatalf("at %d: store %s; model allowed=%v with %d limits", now, describe(&d), allowed, len(results))
					}
					for i, res := range results {
						st := d.State(i)
						if st.Allowed != res.Allowed || st.Remaining != res.Remaining || st.ResetAfter != us*time.Duration(res.ResetAfter) || st.RetryAfter != us*time.Duration(res.RetryAfter) {
							rt.Fatalf("at %d: limit %d (%s %s): store %+v; model %+v", now, i, st.Rule, st.Limit, st, res)
						}
						if allowed && d.Receipt.Charge(i).Window != windows[i] {
							rt.Fatalf("at %d: charge %d window %d; model %d", now, i, d.Receipt.Charge(i).Window, windows[i])
						}
					}
					if allowed {
						receipts = append(receipts, d.Receipt)
					}
				case op == 2 && len(receipts) > 0:
					rc := &receipts[rapid.IntRange(0, len(receipts)-1).Draw(rt, "refund")]
					got := e.refund(rc)
					want, lenient := m.refund(rc, now)
					for i := range want {
						g, w := got.Charges[i], want[i]
						if lenient && g.Outcome == allowance.AlreadyRefunded {
							g.Outcome = allowance.WindowEnded
						}
						if g.Outcome != w.Outcome || g.Restored != w.Restored || g.Charge != w.Charge {
							rt.Fatalf("at %d: refund of charge %d: store %s %d units; model %s %d units", now, i, g.Outcome, g.Restored, w.Outcome, w.Restored)
						}
					}
				case op == 3:
					all := []allowance.Rule{r1, r2}
					got := e.peek(id, all...)
					k := 0
					for ri := range all {
						for _, l := range all[ri].Limits {
							if w := m.usage(&all[ri], l, now); got[k] != w {
								rt.Fatalf("at %d: peek of %s %s: store %+v; model %+v", now, w.Rule, w.Limit, got[k], w)
							}
							k++
						}
					}
				default:
					e.advance(drawStep(rt, 5*time.Second, "step"))
				}
			}
		})
	})
}
