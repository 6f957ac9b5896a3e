// Package storetest is the conformance suite every allowance.Store runs: exact
// admission for every algorithm at the window edges, all-or-nothing charges,
// denials that report every limit as a peek does, exact and at-most-once
// refunds (with property tests), refunds of only the receipts the store
// signed (every bit of a receipt flipped, receipts changed in memory, forged
// receipts, key rotation), refund guards, peeks, resets, uncertain receipts
// and contention.
//
// A store's test calls Run with a Factory that builds a fresh store reading
// time from the suite's fake Clock:
//
//	func TestConformance(t *testing.T) {
//		keyed := func(t *testing.T, c *storetest.Clock, keys *allowance.ReceiptKeys) allowance.Store {
//			s := memstore.New(memstore.WithClock(c.Now), memstore.WithReceiptKeys(keys))
//			t.Cleanup(func() { s.Close() })
//			return s
//		}
//		storetest.Run(t, func(t *testing.T, c *storetest.Clock) allowance.Store {
//			return keyed(t, c, nil) // nil: the store's default, a random key
//		}, storetest.Options{Keyed: keyed})
//	}
//
// The suite never sleeps; it steps the clock. It runs in seconds, so it can
// run against real servers.
package storetest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/allowancehq/allowance"
)

// Factory returns a fresh, empty store whose time is clock.Now, with its
// default receipt keys. A store that cannot take a clock cannot run the
// suite. The factory registers any clean-up with t.Cleanup. It may be called
// several times in one test; the stores it returns must share neither usage
// nor receipt keys.
type Factory func(t *testing.T, clock *Clock) allowance.Store

// KeyedFactory is a Factory whose store signs receipts with keys (see
// allowance.ReceiptKeys): the first signs, all verify.
type KeyedFactory func(t *testing.T, clock *Clock, keys *allowance.ReceiptKeys) allowance.Store

// Options tunes Run.
type Options struct {
	// Concurrency is the number of goroutines in the contention tests;
	// 0 means 1000.
	Concurrency int
	// Keyed makes stores as the Factory does, but with the receipt keys
	// given. Required: the tests of key rotation and of uncertain receipts
	// sign receipts themselves, as the store would, and fail without it.
	Keyed KeyedFactory
}

// start is where every test's clock starts: a midnight, so that minute, hour
// and day windows begin there.
var start = time.Date(2030, time.January, 1, 0, 0, 0, 0, time.UTC)

// Run runs the conformance suite against the stores f makes, each test in
// its own subtest.
func Run(t *testing.T, f Factory, opts Options) {
	if opts.Concurrency <= 0 {
		opts.Concurrency = 1000
	}
	s := &suite{f: f, opts: opts}
	tests := []struct {
		name string
		run  func(*testing.T)
	}{
		{"Admission", s.testAdmission},
		{"Cost", s.testCost},
		{"RequestCost", s.testRequestCost},
		{"IdempotentRepeat", s.testIdempotentRepeat},
		{"IdempotentAfterRefund", s.testIdempotentAfterRefund},
		{"IdempotentExpiry", s.testIdempotentExpiry},
		{"IdempotentContention", s.testIdempotentContention},
		{"FixedWindowEdges", s.testFixedWindowEdges},
		{"SlidingWindowEstimate", s.testSlidingWindowEstimate},
		{"SlidingLogMovingWindow", s.testSlidingLogMovingWindow},
		{"GCRABurst", s.testGCRABurst},
		{"RetryAfterIsExact", s.testRetryAfterProperty},
		{"Model", s.testModelProperty},
		{"AllOrNothingLimits", s.testAllOrNothingLimits},
		{"AllOrNothingRules", s.testAllOrNothingRules},
		{"MultipleRules", s.testMultipleRules},
		{"DeniedStatesArePeek", s.testDeniedStatesArePeek},
		{"Peek", s.testPeek},
		{"Reset", s.testReset},
		{"RefundRestores", s.testRefundRestores},
		{"RefundWindowEnded", s.testRefundWindowEnded},
		{"RefundNeverBelowZero", s.testRefundNeverBelowZero},
		{"RefundGuard", s.testRefundGuard},
		{"RefundBinaryReceipt", s.testRefundBinaryReceipt},
		{"RefundNothing", s.testRefundNothing},
		{"RefundTampered", s.testRefundTampered},
		{"RefundChangedInMemory", s.testRefundChangedInMemory},
		{"RefundForged", s.testRefundForged},
		{"ReceiptKeyRotation", s.testReceiptKeyRotation},
		{"UncertainReceipt", s.testUncertain},
		{"ReceiptIDs", s.testReceiptIDs},
		{"RefundReusesResult", s.testRefundReusesResult},
		{"ContextCancelled", s.testContext},
		{"RefundProperty", s.testRefundProperty},
		{"ContentionCharge", s.testContentionCharge},
		{"ContentionRefund", s.testContentionRefund},
	}
	for _, tc := range tests {
		t.Run(tc.name, tc.run)
	}
}

type suite struct {
	f    Factory
	opts Options
}

// env is one test's store and clock.
type env struct {
	t     tester
	store allowance.Store
	clock *Clock
	ctx   context.Context
}

func (s *suite) env(t *testing.T) *env {
	t.Helper()
	c := NewClock(start)
	st := s.f(t, c)
	if st == nil {
		t.Fatal("factory returned a nil store")
	}
	return &env{t: t, store: st, clock: c, ctx: context.Background()}
}

// tester is what the suite needs of *testing.T and *rapid.T.
type tester interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
}

// with returns a copy of e that reports to t.
func (e *env) with(t tester) *env {
	c := *e
	c.t = t
	return &c
}

// forEachAlgorithm runs fn in a subtest per algorithm.
func forEachAlgorithm(t *testing.T, fn func(t *testing.T, alg allowance.Algorithm)) {
	for _, alg := range allowance.Algorithms() {
		t.Run(alg.String(), func(t *testing.T) { fn(t, alg) })
	}
}

// rule builds a valid rule or fails the test.
func rule(t tester, name string, alg allowance.Algorithm, limits string, cost int64) allowance.Rule {
	t.Helper()
	ls, err := allowance.ParseLimits(limits)
	if err != nil {
		t.Fatal(err)
	}
	r := allowance.Rule{Name: name, Limits: ls, Algorithm: alg, Cost: cost}
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	return r
}

func (e *env) advance(d time.Duration) { e.clock.Advance(d) }

// charge charges identity against rules with a receipt id the store
// chooses, as Limiter.Check does, and checks that the id is set.
func (e *env) charge(identity string, rules ...allowance.Rule) allowance.Decision {
	e.t.Helper()
	return e.chargeCosts(identity, nil, rules...)
}

// chargeCosts is charge for a request with its own cost per rule
// (Request.Costs).
func (e *env) chargeCosts(identity string, costs []int64, rules ...allowance.Rule) allowance.Decision {
	e.t.Helper()
	d, err := chargeStore(e.ctx, e.store, allowance.Request{Identity: identity, Rules: rules, Costs: costs})
	if err != nil {
		e.t.Fatalf("charge %q at %s: %v", identity, e.clock.Now().Format(time.RFC3339Nano), err)
	}
	if d.Receipt.ID.IsZero() || d.Receipt.Identity != identity {
		e.t.Fatalf("charge %q: receipt id %s, identity %q; want a fresh id and the identity", identity, d.Receipt.ID, d.Receipt.Identity)
	}
	return d
}

// mustAllow charges and fails the test unless the charge is allowed.
func (e *env) mustAllow(identity string, rules ...allowance.Rule) allowance.Decision {
	e.t.Helper()
	d := e.charge(identity, rules...)
	if !d.Allowed {
		e.t.Fatalf("charge %q at %s: denied (%s), want allowed", identity, e.stamp(), describe(&d))
	}
	return d
}

// mustDeny charges and fails the test unless the charge is denied.
func (e *env) mustDeny(identity string, rules ...allowance.Rule) allowance.Decision {
	e.t.Helper()
	d := e.charge(identity, rules...)
	if d.Allowed {
		e.t.Fatalf("charge %q at %s: allowed (%s), want denied", identity, e.stamp(), describe(&d))
	}
	if n := d.Receipt.Len(); n != 0 {
		e.t.Fatalf("denied charge has a receipt with %d charges, want 0", n)
	}
	return d
}

func (e *env) stamp() string { return e.clock.Now().Format("15:04:05.000000") }

func (e *env) refund(r *allowance.Receipt, guards ...allowance.Guard) allowance.RefundResult {
	e.t.Helper()
	res, err := refundStore(e.ctx, e.store, r, guards)
	if err != nil {
		e.t.Fatalf("refund %s: %v", r.ID, err)
	}
	if res.ReceiptID != r.ID {
		e.t.Fatalf("refund %s: result is for receipt %s", r.ID, res.ReceiptID)
	}
	if len(res.Charges) != r.Len() {
		e.t.Fatalf("refund %s: %d charge outcomes for %d charges", r.ID, len(res.Charges), r.Len())
	}
	return res
}

// wantOutcomes checks every charge's outcome, and that Restored carries the
// charge's amount (restored) or 0 (anything else).
func (e *env) wantOutcomes(res allowance.RefundResult, want allowance.Outcome) {
	e.t.Helper()
	for i, c := range res.Charges {
		if c.Outcome != want {
			e.t.Fatalf("refund %s: charge %d (%s %s): outcome %s, want %s", res.ReceiptID, i, c.Charge.Rule, c.Charge.Limit, c.Outcome, want)
		}
		wantUnits := int64(0)
		if want == allowance.Restored {
			wantUnits = c.Charge.Amount
		}
		if c.Restored != wantUnits {
			e.t.Fatalf("refund %s: charge %d (%s %s): %s %d units, want %d", res.ReceiptID, i, c.Charge.Rule, c.Charge.Limit, c.Outcome, c.Restored, wantUnits)
		}
	}
}

func (e *env) peek(identity string, rules ...allowance.Rule) []allowance.Usage {
	e.t.Helper()
	u, err := e.store.Peek(e.ctx, identity, rules)
	if err != nil {
		e.t.Fatalf("peek %q: %v", identity, err)
	}
	n := 0
	for _, r := range rules {
		n += len(r.Limits)
	}
	if len(u) != n {
		e.t.Fatalf("peek %q: %d usages for %d limits", identity, len(u), n)
	}
	return u
}

// wantUsage checks the i-th usage of a peek.
func (e *env) wantUsage(u []allowance.Usage, i int, used, remaining int64, resetAfter time.Duration) {
	e.t.Helper()
	g := u[i]
	if g.Used != used || g.Remaining != remaining || g.ResetAfter != resetAfter {
		e.t.Fatalf("at %s: usage of %s %s: used %d, remaining %d, reset after %v; want %d, %d, %v",
			e.stamp(), g.Rule, g.Limit, g.Used, g.Remaining, g.ResetAfter, used, remaining, resetAfter)
	}
}

func (e *env) reset(identity string, rules ...allowance.Rule) {
	e.t.Helper()
	if err := e.store.Reset(e.ctx, identity, rules); err != nil {
		e.t.Fatalf("reset %q: %v", identity, err)
	}
}

// wantDecision checks a single-limit decision's figures.
func (e *env) wantDecision(d allowance.Decision, allowed bool, remaining int64, resetAfter, retryAfter time.Duration) {
	e.t.Helper()
	if d.Allowed != allowed || d.Remaining != remaining || d.ResetAfter != resetAfter || d.RetryAfter != retryAfter {
		e.t.Fatalf("at %s: decision %s; want allowed=%v remaining=%d reset=%v retry=%v",
			e.stamp(), describe(&d), allowed, remaining, resetAfter, retryAfter)
	}
}

func describe(d *allowance.Decision) string {
	var b strings.Builder
	fmt.Fprintf(&b, "allowed=%v remaining=%d reset=%v retry=%v [", d.Allowed, d.Remaining, d.ResetAfter, d.RetryAfter)
	for i := 0; i < d.Len(); i++ {
		st := d.State(i)
		fmt.Fprintf(&b, "%s %s: allowed=%v remaining=%d reset=%v retry=%v; ", st.Rule, st.Limit, st.Allowed, st.Remaining, st.ResetAfter, st.RetryAfter)
	}
	b.WriteString("]")
	return b.String()
}

const us = time.Microsecond

// chargeStore calls store.Charge with a Decision of its own and returns it.
func chargeStore(ctx context.Context, store allowance.Store, req allowance.Request) (allowance.Decision, error) {
	var d allowance.Decision
	err := store.Charge(ctx, req, &d)
	return d, err
}

// refundStore calls store.Refund with a result of its own and returns it.
func refundStore(ctx context.Context, store allowance.Store, r *allowance.Receipt, guards []allowance.Guard) (allowance.RefundResult, error) {
	var res allowance.RefundResult
	err := store.Refund(ctx, r, guards, &res)
	return res, err
}
