package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/allowancehq/allowance"
)

// testRefundRestores: a refund gives back exactly its charge, once.
func (s *suite) testRefundRestores(t *testing.T) {
	forEachAlgorithm(t, func(t *testing.T, alg allowance.Algorithm) {
		e := s.env(t)
		e.clock.alignTo(time.Minute)
		r := rule(t, "r", alg, "3/minute", 0)
		e.mustAllow("alice", r)
		d2 := e.mustAllow("alice", r)
		e.mustAllow("alice", r)
		e.mustDeny("alice", r)
		e.wantOutcomes(e.refund(&d2.Receipt), allowance.Restored)
		e.wantUsage(e.peek("alice", r), 0, 2, 1, e.peek("alice", r)[0].ResetAfter)
		e.mustAllow("alice", r)
		e.mustDeny("alice", r)
		res := e.refund(&d2.Receipt)
		e.wantOutcomes(res, allowance.AlreadyRefunded)
		if res.Restored() || res.Outcome() != allowance.AlreadyRefunded {
			t.Fatalf("second refund: restored=%v outcome=%s", res.Restored(), res.Outcome())
		}
		e.mustDeny("alice", r)

		// Cost above one comes back whole.
		big := rule(t, "big", alg, "10/minute", 4)
		b1 := e.mustAllow("alice", big)
		e.mustAllow("alice", big)
		e.mustDeny("alice", big)
		e.wantOutcomes(e.refund(&b1.Receipt), allowance.Restored)
		if u := e.peek("alice", big); u[0].Used != 4 || u[0].Remaining != 6 {
			t.Fatalf("after refunding 4 of 8: used %d remaining %d; want 4, 6", u[0].Used, u[0].Remaining)
		}
		e.mustAllow("alice", big)
	})
}

// testRefundWindowEnded: a refund restores until the last microsecond of the
// charge's life (Receipt.Expiry), and from then on reports WindowEnded and
// changes nothing.
func (s *suite) testRefundWindowEnded(t *testing.T) {
	forEachAlgorithm(t, func(t *testing.T, alg allowance.Algorithm) {
		e := s.env(t)
		e.clock.alignTo(time.Minute)
		e.advance(7 * time.Second)
		r := rule(t, "r", alg, "3/minute", 0)
		p := time.Minute.Microseconds()
		now := e.clock.Now().UnixMicro()
		a := e.mustAllow("alice", r)
		b := e.mustAllow("bob", r)
		var wantWindow, wantEnd int64
		switch alg {
		case allowance.FixedWindow:
			wantWindow, wantEnd = now-now%p, now-now%p+p
		case allowance.SlidingWindow:
			wantWindow, wantEnd = now-now%p, now-now%p+2*p
		case allowance.SlidingLog:
			wantWindow, wantEnd = now, now+p
		case allowance.GCRA:
			wantWindow, wantEnd = now+p/3, now+p/3
		}
		if w := a.Receipt.Charge(0).Window; w != wantWindow {
			t.Fatalf("receipt window %d, want %d", w, wantWindow)
		}
		end := a.Receipt.Expiry(e.clock.Now())
		if end.UnixMicro() != wantEnd {
			t.Fatalf("receipt expiry %d, want %d", end.UnixMicro(), wantEnd)
		}
		e.advance(end.Sub(e.clock.Now()) - us)
		e.wantOutcomes(e.refund(&a.Receipt), allowance.Restored)
		e.wantUsage(e.peek("alice", r), 0, 0, 3, 0)
		e.advance(us)
		e.mustAllow("bob", r)
		before := e.peek("bob", r)
		e.wantOutcomes(e.refund(&b.Receipt), allowance.WindowEnded)
		after := e.peek("bob", r)
		if !slices.Equal(before, after) {
			t.Fatalf("refund of an ended window changed usage from %+v to %+v", before, after)
		}
		if after[0].Used != 1 {
			t.Fatalf("used %d, want 1 (the new charge)", after[0].Used)
		}
		e.wantOutcomes(e.refund(&b.Receipt), allowance.AlreadyRefunded)
	})
}

// testRefundNeverBelowZero refunds charges that a Reset already forgot.
func (s *suite) testRefundNeverBelowZero(t *testing.T) {
	forEachAlgorithm(t, func(t *testing.T, alg allowance.Algorithm) {
		e := s.env(t)
		e.clock.alignTo(time.Minute)
		r := rule(t, "r", alg, "3/minute", 0)
		d1 := e.mustAllow("alice", r)
		e.reset("alice", r)
		d2 := e.mustAllow("alice", r)
		var restored int64
		for _, d := range []*allowance.Decision{&d1, &d2} {
			res := e.refund(&d.Receipt)
			for _, c := range res.Charges {
				if c.Restored < 0 || c.Restored > c.Charge.Amount {
					t.Fatalf("refund restored %d units of a %d-unit charge", c.Restored, c.Charge.Amount)
				}
				restored += c.Restored
			}
		}
		if restored > 1 {
			t.Fatalf("refunds restored %d units; only 1 was charged since the reset", restored)
		}
		e.wantUsage(e.peek("alice", r), 0, 0, 3, 0)
		for range 3 {
			e.mustAllow("alice", r)
		}
		e.mustDeny("alice", r)
	})
}

// testRefundGuard: at most N refunds per period per identity and rule; past
// that a refund is declined and changes nothing; the guard counts in fixed
// windows and is forgotten by Reset.
func (s *suite) testRefundGuard(t *testing.T) {
	forEachAlgorithm(t, func(t *testing.T, alg allowance.Algorithm) {
		e := s.env(t)
		e.clock.alignTo(24 * time.Hour)
		r := rule(t, "r", alg, "10/day", 0)
		r.RefundGuard = allowance.Limit{Count: 2, Period: time.Hour}
		lim, err := allowance.NewLimiter(e.store, r)
		if err != nil {
			t.Fatal(err)
		}
		check := func(id string) allowance.Receipt {
			t.Helper()
			d, err := lim.Check(e.ctx, id)
			if err != nil || !d.Allowed {
				t.Fatalf("check %q: allowed=%v err=%v", id, d.Allowed, err)
			}
			return d.Receipt
		}
		refund := func(rc allowance.Receipt, want allowance.Outcome) {
			t.Helper()
			res, err := lim.Refund(e.ctx, &rc)
			if err != nil {
				t.Fatal(err)
			}
			e.wantOutcomes(res, want)
		}
		var rs []allowance.Receipt
		for range 4 {
			rs = append(rs, check("alice"))
		}
		refund(rs[0], allowance.Restored)
		refund(rs[1], allowance.Restored)
		before := e.peek("alice", r)
		refund(rs[2], allowance.Declined)
		if after := e.peek("alice", r); !slices.Equal(before, after) || after[0].Used != 2 {
			t.Fatalf("declined refund changed usage from %+v to %+v", before, after)
		}
		refund(check("bob"), allowance.Restored) // guards are per identity

		e.advance(time.Hour) // the guard's next window
		refund(rs[3], allowance.Restored)
		e.reset("alice", r)
		rs = rs[:0]
		for range 3 {
			rs = append(rs, check("alice"))
		}
		refund(rs[0], allowance.Restored)
		refund(rs[1], allowance.Restored) // the reset forgot the earlier refund
		refund(rs[2], allowance.Declined)
	})
}

// testRefundBinaryReceipt refunds a receipt decoded from its bytes.
func (s *suite) testRefundBinaryReceipt(t *testing.T) {
	forEachAlgorithm(t, func(t *testing.T, alg allowance.Algorithm) {
		e := s.env(t)
		r := rule(t, "r", alg, "3/minute; 10/hour", 2)
		other := rule(t, "other", alg, "5/minute", 0)
		d := e.mustAllow("alice", r, other)
		b, err := d.Receipt.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var got allowance.Receipt
		if err := got.UnmarshalBinary(b); err != nil {
			t.Fatal(err)
		}
		if got.ID != d.Receipt.ID || got.Identity != "alice" || !slices.Equal(got.Charges(), d.Receipt.Charges()) {
			t.Fatalf("decoded receipt %v %q %+v; want %v alice %+v", got.ID, got.Identity, got.Charges(), d.Receipt.ID, d.Receipt.Charges())
		}
		e.wantOutcomes(e.refund(&got), allowance.Restored)
		u := e.peek("alice", r, other)
		for i := range u {
			e.wantUsage(u, i, 0, u[i].Limit.Count, 0)
		}
		e.wantOutcomes(e.refund(&d.Receipt), allowance.AlreadyRefunded)
	})
}

// testRefundNothing: the zero receipt and the receipt of a denied check
// refund nothing.
func (s *suite) testRefundNothing(t *testing.T) {
	e := s.env(t)
	r := rule(t, "r", allowance.FixedWindow, "1/minute", 0)
	e.mustAllow("alice", r)
	d := e.mustDeny("alice", r)
	before := e.peek("alice", r)
	for _, rc := range []*allowance.Receipt{{}, &d.Receipt} {
		res, err := refundStore(e.ctx, e.store, rc, nil)
		if err != nil {
			t.Fatalf("refund of a receipt without charges: %v", err)
		}
		if len(res.Charges) != 0 || res.Restored() {
			t.Fatalf("refund of a receipt without charges: %+v", res)
		}
	}
	if after := e.peek("alice", r); !slices.Equal(before, after) {
		t.Fatalf("refunding nothing changed usage from %+v to %+v", before, after)
	}
	if _, err := d.Receipt.MarshalBinary(); err == nil {
		t.Fatal("a denied check's receipt encodes; want an error")
	}
}

// testUncertain: refunding the uncertain receipt of a charge that was never
// applied, signed as the store signs the ones it returns, voids its ID.
func (s *suite) testUncertain(t *testing.T) {
	forEachAlgorithm(t, func(t *testing.T, alg allowance.Algorithm) {
		_, keys := randomKeys(t, 1)
		e := s.keyedEnv(t, keys[0])
		r := rule(t, "r", alg, "3/minute; 10/hour", 0)
		req := allowance.Request{ID: allowance.NewReceiptID(), Identity: "alice", Rules: []allowance.Rule{r}}
		u := allowance.UncertainReceipt(req)
		keys[0].Sign(&u)
		if !u.Uncertain() || u.Len() != 2 {
			t.Fatalf("uncertain receipt: uncertain=%v len=%d; want true, 2", u.Uncertain(), u.Len())
		}
		// It travels like any receipt.
		b, err := u.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var decoded allowance.Receipt
		if err := decoded.UnmarshalBinary(b); err != nil || !decoded.Uncertain() {
			t.Fatalf("decoded uncertain receipt: uncertain=%v err=%v", decoded.Uncertain(), err)
		}
		e.wantOutcomes(e.refund(&decoded), allowance.NotCharged)
		d, err := chargeStore(e.ctx, e.store, req)
		if !errors.Is(err, allowance.ErrVoided) {
			t.Fatalf("charge of a voided id: allowed=%v err=%v; want ErrVoided", d.Allowed, err)
		}
		if d.Allowed {
			t.Fatal("charge of a voided id is allowed")
		}
		e.wantUsage(e.peek("alice", r), 0, 0, 3, 0)
		e.wantOutcomes(e.refund(&u), allowance.AlreadyRefunded)
		e.mustAllow("alice", r) // a new id charges as usual
	})
}

// testContext: a cancelled context fails every call and charges nothing.
func (s *suite) testContext(t *testing.T) {
	e := s.env(t)
	r := rule(t, "r", allowance.SlidingLog, "3/minute", 0)
	d := e.mustAllow("alice", r)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := chargeStore(ctx, e.store, allowance.Request{ID: allowance.NewReceiptID(), Identity: "alice", Rules: []allowance.Rule{r}}); !errors.Is(err, context.Canceled) {
		t.Fatalf("charge with a cancelled context: %v; want context.Canceled", err)
	}
	if _, err := refundStore(ctx, e.store, &d.Receipt, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("refund with a cancelled context: %v; want context.Canceled", err)
	}
	if _, err := e.store.Peek(ctx, "alice", []allowance.Rule{r}); !errors.Is(err, context.Canceled) {
		t.Fatalf("peek with a cancelled context: %v; want context.Canceled", err)
	}
	if err := e.store.Reset(ctx, "alice", []allowance.Rule{r}); !errors.Is(err, context.Canceled) {
		t.Fatalf("reset with a cancelled context: %v; want context.Canceled", err)
	}
	if u := e.peek("alice", r); u[0].Used != 1 {
		t.Fatalf("used %d after failed calls, want 1", u[0].Used)
	}
	e.wantOutcomes(e.refund(&d.Receipt), allowance.Restored)
}

// testContentionCharge: Concurrency goroutines charge one key of limit 100 at
// one instant; exactly 100 are admitted.
func (s *suite) testContentionCharge(t *testing.T) {
	forEachAlgorithm(t, func(t *testing.T, alg allowance.Algorithm) {
		e := s.env(t)
		r := rule(t, "r", alg, "100/hour", 0)
		n := s.opts.Concurrency
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			allowed int
			errs    []error
		)
		ready := make(chan struct{})
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-ready
				d, err := chargeStore(e.ctx, e.store, allowance.Request{ID: allowance.NewReceiptID(), Identity: "hot", Rules: []allowance.Rule{r}})
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
				} else if d.Allowed {
					allowed++
				}
			}()
		}
		close(ready)
		wg.Wait()
		if len(errs) > 0 {
			t.Fatalf("%d charges failed; first: %v", len(errs), errs[0])
		}
		if want := min(n, 100); allowed != want {
			t.Fatalf("%d goroutines admitted %d charges of a limit of 100; want %d", n, allowed, want)
		}
		if u := e.peek("hot", r); u[0].Used != int64(min(n, 100)) {
			t.Fatalf("used %d, want %d", u[0].Used, min(n, 100))
		}
	})
}

// testContentionRefund: Concurrency goroutines refund one receipt; it is
// restored exactly once.
func (s *suite) testContentionRefund(t *testing.T) {
	forEachAlgorithm(t, func(t *testing.T, alg allowance.Algorithm) {
		e := s.env(t)
		r := rule(t, "r", alg, "100/hour; 1000/day", 3)
		var d allowance.Decision
		for range 5 {
			d = e.mustAllow("hot", r)
		}
		rc := d.Receipt
		var (
			wg       sync.WaitGroup
			mu       sync.Mutex
			restored = make([]int64, rc.Len())
			outcomes = make([]int, rc.Len())
			errs     []error
		)
		n := s.opts.Concurrency
		ready := make(chan struct{})
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-ready
				res, err := refundStore(e.ctx, e.store, &rc, nil)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
					return
				}
				for i, c := range res.Charges {
					switch c.Outcome {
					case allowance.Restored:
						outcomes[i]++
						restored[i] += c.Restored
					case allowance.AlreadyRefunded:
					default:
						errs = append(errs, errors.New("unexpected outcome "+c.Outcome.String()))
					}
				}
			}()
		}
		close(ready)
		wg.Wait()
		if len(errs) > 0 {
			t.Fatalf("%d refunds failed; first: %v", len(errs), errs[0])
		}
		for i := range outcomes {
			if outcomes[i] != 1 || restored[i] != 3 {
				t.Fatalf("charge %d: restored by %d refunds, %d units in all; want once, 3 units", i, outcomes[i], restored[i])
			}
		}
		u := e.peek("hot", r)
		if u[0].Used != 12 || u[1].Used != 12 {
			t.Fatalf("used %d and %d after refunding 3 of 15; want 12 and 12", u[0].Used, u[1].Used)
		}
	})
}

// testReceiptIDs: a charge keeps the id it is given; without one the store
// chooses ids that are never zero and never repeat, across identities and
// concurrent callers, and refunds them at most once.
func (s *suite) testReceiptIDs(t *testing.T) {
	e := s.env(t)
	r := rule(t, "r", allowance.FixedWindow, "1000000/hour", 0)
	want := allowance.NewReceiptID()
	d, err := chargeStore(e.ctx, e.store, allowance.Request{ID: want, Identity: "alice", Rules: []allowance.Rule{r}})
	if err != nil || !d.Allowed || d.Receipt.ID != want {
		t.Fatalf("charge with id %s: allowed=%v id=%s err=%v; want allowed with that id", want, d.Allowed, d.Receipt.ID, err)
	}

	const goroutines, each = 8, 100
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		seen = map[allowance.ReceiptID]string{want: "the caller's"}
		errs []error
	)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				identity := fmt.Sprintf("user-%d", (g*each+i)%37)
				d, err := chargeStore(e.ctx, e.store, allowance.Request{Identity: identity, Rules: []allowance.Rule{r}})
				mu.Lock()
				switch {
				case err != nil:
					errs = append(errs, err)
				case d.Receipt.ID.IsZero():
					errs = append(errs, fmt.Errorf("charge of %q has a zero receipt id", identity))
				case seen[d.Receipt.ID] != "":
					errs = append(errs, fmt.Errorf("receipt id %s of %q was already given to %s", d.Receipt.ID, identity, seen[d.Receipt.ID]))
				default:
					seen[d.Receipt.ID] = fmt.Sprintf("a charge of %q", identity)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d of %d charges went wrong; first: %v", len(errs), goroutines*each, errs[0])
	}

	d = e.mustAllow("bob", r)
	e.wantOutcomes(e.refund(&d.Receipt), allowance.Restored)
	e.wantOutcomes(e.refund(&d.Receipt), allowance.AlreadyRefunded)
}

// testRefundReusesResult: one RefundResult reused across refunds of
// receipts with different numbers of charges holds each refund's outcomes
// only.
func (s *suite) testRefundReusesResult(t *testing.T) {
	e := s.env(t)
	two := rule(t, "two", allowance.FixedWindow, "10/minute; 100/hour", 0)
	one := rule(t, "one", allowance.GCRA, "10/minute", 0)
	a := e.mustAllow("alice", two)
	b := e.mustAllow("alice", one)
	res := allowance.RefundResult{Charges: make([]allowance.ChargeOutcome, 0, 4)}
	for _, step := range []struct {
		d    *allowance.Decision
		want allowance.Outcome
	}{{&a, allowance.Restored}, {&b, allowance.Restored}, {&a, allowance.AlreadyRefunded}, {&b, allowance.AlreadyRefunded}} {
		if err := e.store.Refund(e.ctx, &step.d.Receipt, nil, &res); err != nil {
			t.Fatal(err)
		}
		if res.ReceiptID != step.d.Receipt.ID || len(res.Charges) != step.d.Receipt.Len() {
			t.Fatalf("refund of %s: result of %s with %d outcomes; want %d", step.d.Receipt.ID, res.ReceiptID, len(res.Charges), step.d.Receipt.Len())
		}
		for i, c := range res.Charges {
			if c.Outcome != step.want || c.Charge != step.d.Receipt.Charge(i) {
				t.Fatalf("refund of %s: charge %d: %v of %+v; want %v of %+v", step.d.Receipt.ID, i, c.Outcome, c.Charge, step.want, step.d.Receipt.Charge(i))
			}
		}
	}
	if u := e.peek("alice", two, one); u[0].Used != 0 || u[1].Used != 0 || u[2].Used != 0 {
		t.Fatalf("usage after the refunds: %+v; want none", u)
	}
}
