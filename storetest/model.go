package storetest

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/allowancehq/allowance"
)

// model is the reference a store's arithmetic is compared with, all limits
// or none. It is written apart from internal/algo, which the Go stores
// call, from the definitions in allowance.Algorithm's documentation: a bug
// in internal/algo must not hide in both. Where internal/algo has a closed
// form (the sliding window's retry), the model searches instead. It favours
// plainness over speed: the limits the suite draws are small.
type model struct {
	states   map[modelKey]*modelState
	refunded map[allowance.ReceiptID]int64 // receipt → expiry, µs
}

type modelKey struct {
	rule  string
	limit allowance.Limit
}

// modelState is one limit's state: for the windows, the start of the
// window last charged and the units charged per window start; for GCRA the
// TAT; for the log its entries, oldest first.
type modelState struct {
	windows map[int64]int64
	tat     int64
	entries []modelEntry
}

type modelEntry struct {
	at     int64
	id     allowance.ReceiptID
	charge int
	units  int64
}

// modelResult is one limit's verdict, in µs.
type modelResult struct {
	Allowed                           bool
	Remaining, ResetAfter, RetryAfter int64
}

// modelUsage is one limit's usage, in µs.
type modelUsage struct{ Used, Remaining, ResetAfter int64 }

func newModel() *model {
	return &model{states: map[modelKey]*modelState{}, refunded: map[allowance.ReceiptID]int64{}}
}

func (m *model) state(k modelKey) *modelState {
	st := m.states[k]
	if st == nil {
		st = &modelState{windows: map[int64]int64{}}
		m.states[k] = st
	}
	return st
}

// windowStart is the start of the aligned window of period p holding t.
func windowStart(t, p int64) int64 { return t - t%p }

// slidingUsed is the sliding window's estimate at t: the current window's
// units plus the previous window's, weighted by the part of the previous
// window still inside [t-p, t), rounded down.
func (st *modelState) slidingUsed(p, t int64) int64 {
	w := windowStart(t, p)
	return st.windows[w] + st.windows[w-p]*(p-(t-w))/p
}

// logUsed is the units of the log's entries inside (t-p, t].
func (st *modelState) logUsed(p, t int64) int64 {
	var used int64
	for _, e := range st.entries {
		if e.at > t-p {
			used += e.units
		}
	}
	return used
}

// usage is one limit's usage at now, nothing charged.
func (st *modelState) usage(alg allowance.Algorithm, l allowance.Limit, now int64) modelUsage {
	n, p := l.Count, l.Period.Microseconds()
	switch alg {
	case allowance.FixedWindow:
		w := windowStart(now, p)
		used := st.windows[w]
		var reset int64
		if used > 0 {
			reset = w + p - now
		}
		return modelUsage{used, n - used, reset}
	case allowance.SlidingWindow:
		w := windowStart(now, p)
		used := st.slidingUsed(p, now)
		var reset int64
		switch {
		case st.windows[w] > 0:
			reset = w + 2*p - now // the current window weighs until the next ends
		case st.windows[w-p] > 0:
			reset = w + p - now
		}
		return modelUsage{used, max(0, n-used), reset}
	case allowance.GCRA:
		t := (p + n - 1) / n
		ahead := max(0, st.tat-now)
		return modelUsage{(ahead + t - 1) / t, (n*t - ahead) / t, ahead}
	}
	used := st.logUsed(p, now)
	var reset int64
	if k := len(st.entries); k > 0 && used > 0 {
		reset = st.entries[k-1].at + p - now
	}
	return modelUsage{used, n - used, reset}
}

// judge returns the verdict of a charge of c at now, changing nothing.
func (st *modelState) judge(alg allowance.Algorithm, l allowance.Limit, c, now int64) modelResult {
	n, p := l.Count, l.Period.Microseconds()
	u := st.usage(alg, l, now)
	switch alg {
	case allowance.FixedWindow:
		w := windowStart(now, p)
		if u.Used+c <= n {
			return modelResult{true, n - u.Used - c, w + p - now, 0}
		}
		return modelResult{false, u.Remaining, u.ResetAfter, w + p - now}
	case allowance.SlidingWindow:
		if u.Used+c <= n {
			w := windowStart(now, p)
			reset := w + 2*p - now // the charge is in the current window
			return modelResult{true, n - u.Used - c, reset, 0}
		}
		// The estimate never grows without charges: the first µs at which
		// it admits c, found by bisection, within two periods.
		lo, hi := now, now+2*p
		for lo < hi {
			mid := lo + (hi-lo)/2
			if st.slidingUsed(p, mid)+c <= n {
				hi = mid
			} else {
				lo = mid + 1
			}
		}
		return modelResult{false, u.Remaining, u.ResetAfter, lo - now}
	case allowance.GCRA:
		t := (p + n - 1) / n
		tat := max(st.tat, now) + c*t
		if tat-now <= n*t {
			return modelResult{true, (n*t - (tat - now)) / t, tat - now, 0}
		}
		return modelResult{false, u.Remaining, u.ResetAfter, tat - n*t - now}
	}
	if u.Used+c <= n {
		return modelResult{true, n - u.Used - c, p, 0}
	}
	// The first time enough of the oldest entries have left the window.
	var retry, freed int64
	for _, e := range st.entries {
		if e.at <= now-p {
			continue
		}
		freed += e.units
		if u.Used-freed+c <= n {
			retry = e.at + p - now
			break
		}
	}
	return modelResult{false, u.Remaining, u.ResetAfter, retry}
}

// apply records an allowed charge of c at now and returns its window.
func (st *modelState) apply(alg allowance.Algorithm, l allowance.Limit, id allowance.ReceiptID, i int, c, now int64) int64 {
	n, p := l.Count, l.Period.Microseconds()
	switch alg {
	case allowance.FixedWindow, allowance.SlidingWindow:
		w := windowStart(now, p)
		st.windows[w] += c
		return w
	case allowance.GCRA:
		st.tat = max(st.tat, now) + c*((p+n-1)/n)
		return st.tat
	}
	st.entries = append(st.entries, modelEntry{at: now, id: id, charge: i, units: c})
	return now
}

// giveBack undoes up to charge c's amount, if its window still counts at
// now, and returns whether it did and the units given back.
func (st *modelState) giveBack(c allowance.Charge, i int, id allowance.ReceiptID, now int64) (bool, int64) {
	n, p := c.Limit.Count, c.Limit.Period.Microseconds()
	switch c.Algorithm {
	case allowance.FixedWindow, allowance.SlidingWindow:
		w := windowStart(now, p)
		counts := c.Window == w || c.Algorithm == allowance.SlidingWindow && c.Window == w-p
		if !counts {
			return false, 0
		}
		back := min(c.Amount, st.windows[c.Window])
		st.windows[c.Window] -= back
		return true, back
	case allowance.GCRA:
		if now >= c.Window || st.tat <= now {
			return false, 0 // flowed back already
		}
		t := (p + n - 1) / n
		tat := max(st.tat-c.Amount*t, now)
		back := min((st.tat-tat+t-1)/t, c.Amount)
		st.tat = tat
		return true, back
	}
	for k, e := range st.entries {
		if e.id == id && e.charge == i && e.at > now-p {
			st.entries = append(st.entries[:k:k], st.entries[k+1:]...)
			return true, e.units
		}
	}
	return false, 0
}

// charge judges every limit of rules and applies them all when all allow.
func (m *model) charge(id allowance.ReceiptID, rules []allowance.Rule, now int64) (bool, []modelResult, []int64) {
	var results []modelResult
	allowed := true
	for ri := range rules {
		r := &rules[ri]
		for _, l := range r.Limits {
			res := m.state(modelKey{r.Name, l}).judge(r.Algorithm, l, r.Amount(), now)
			results = append(results, res)
			allowed = allowed && res.Allowed
		}
	}
	windows := make([]int64, len(results))
	i := 0
	for ri := range rules {
		r := &rules[ri]
		for _, l := range r.Limits {
			st := m.state(modelKey{r.Name, l})
			if allowed {
				windows[i] = st.apply(r.Algorithm, l, id, i, r.Amount(), now)
			} else if results[i].Allowed {
				// A denial reports every limit as it is now, as Peek does.
				u := st.usage(r.Algorithm, l, now)
				results[i].Remaining, results[i].ResetAfter = u.Remaining, u.ResetAfter
			}
			i++
		}
	}
	return allowed, results, windows
}

// expiry is when no charge of rc counts any more: a fixed window's or a log
// entry's end, the end of the window after a sliding window's, a GCRA TAT.
func expiry(rc *allowance.Receipt) int64 {
	var end int64
	for i := range rc.Len() {
		c := rc.Charge(i)
		p := c.Limit.Period.Microseconds()
		e := c.Window
		switch c.Algorithm {
		case allowance.FixedWindow, allowance.SlidingLog:
			e += p
		case allowance.SlidingWindow:
			e += 2 * p
		}
		end = max(end, e)
	}
	return end
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
	m.refunded[rc.ID] = expiry(rc)
	for i := range out {
		c := rc.Charge(i)
		ok, units := m.state(modelKey{c.Rule, c.Limit}).giveBack(c, i, rc.ID, now)
		out[i] = allowance.ChargeOutcome{Charge: c, Outcome: allowance.WindowEnded}
		if ok {
			out[i].Outcome, out[i].Restored = allowance.Restored, units
		}
	}
	return out, seen
}

// usage is what Peek should report for one limit.
func (m *model) usage(r *allowance.Rule, l allowance.Limit, now int64) allowance.Usage {
	u := m.state(modelKey{r.Name, l}).usage(r.Algorithm, l, now)
	return allowance.Usage{Rule: r.Name, Limit: l, Algorithm: r.Algorithm, Used: u.Used, Remaining: u.Remaining, ResetAfter: time.Duration(u.ResetAfter) * time.Microsecond}
}

// testModelProperty: for any sequence of charges (several rules, several
// limits, costs), refunds, peeks and clock steps, every figure the store
// reports equals the model's (written apart from internal/algo): admission, Remaining,
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
					// Half the charges carry their own cost per rule
					// (Request.Costs), which the model takes as the
					// rules' Cost: a cost in the request charges as a
					// rule of that cost would.
					var costs []int64
					modelSet := set
					if rapid.Bool().Draw(rt, "request costs") {
						costs = make([]int64, len(set))
						modelSet = slices.Clone(set)
						for k := range set {
							least := set[k].Limits[0].Count
							for _, l := range set[k].Limits {
								least = min(least, l.Count)
							}
							if rapid.IntRange(0, 3).Draw(rt, "keep rule cost") > 0 {
								costs[k] = rapid.Int64Range(1, least).Draw(rt, "cost")
								modelSet[k].Cost = costs[k]
							}
						}
					}
					d := e.chargeCosts(id, costs, set...)
					rid := d.Receipt.ID
					allowed, results, windows := m.charge(rid, modelSet, now)
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
