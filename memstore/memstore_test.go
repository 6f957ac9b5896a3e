package memstore_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/allowancehq/allowance"
	"github.com/allowancehq/allowance/memstore"
	"github.com/allowancehq/allowance/storetest"
)

func TestConformance(t *testing.T) {
	keyed := func(t *testing.T, c *storetest.Clock, keys *allowance.ReceiptKeys) allowance.Store {
		s := memstore.New(memstore.WithClock(c.Now), memstore.WithReceiptKeys(keys))
		t.Cleanup(func() { s.Close() })
		return s
	}
	storetest.Run(t, func(t *testing.T, c *storetest.Clock) allowance.Store {
		return keyed(t, c, nil) // the default: a random key
	}, storetest.Options{Keyed: keyed})
}

func rule(alg allowance.Algorithm, limits string) allowance.Rule {
	ls, err := allowance.ParseLimits(limits)
	if err != nil {
		panic(err)
	}
	return allowance.Rule{Name: "r", Limits: ls, Algorithm: alg}
}

// TestSweep: memory is bounded by what is live; the sweep drops identities
// and receipt records once their windows have ended.
func TestSweep(t *testing.T) {
	ctx := context.Background()
	clock := storetest.NewClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	keys := allowance.RandomReceiptKeys()
	s := memstore.New(memstore.WithClock(clock.Now), memstore.WithSweepInterval(0), memstore.WithReceiptKeys(keys))
	defer s.Close()
	for _, alg := range allowance.Algorithms() {
		rules := []allowance.Rule{rule(alg, "5/minute; 10/hour")}
		lim, err := allowance.NewLimiter(s, rules...)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 100 {
			d, err := lim.Check(ctx, fmt.Sprintf("%s-%d", alg, i))
			if err != nil || !d.Allowed {
				t.Fatal(d.Allowed, err)
			}
			if i%2 == 0 {
				if _, err := lim.Refund(ctx, &d.Receipt); err != nil {
					t.Fatal(err)
				}
			}
		}
		u := allowance.Request{ID: allowance.NewReceiptID(), Identity: "void", Rules: rules}
		r := allowance.UncertainReceipt(u)
		keys.Sign(&r)
		if _, err := lim.Refund(ctx, &r); err != nil {
			t.Fatal(err)
		}
	}
	// 200 refunds of ids the store chose, kept up to 64 to a record, and 4
	// voided ids, one record each.
	ids, receipts := s.Len()
	if ids != 400 || receipts < 5 || receipts > 204 {
		t.Fatalf("Len = %d identities, %d receipt records; want 400, and 5 to 204", ids, receipts)
	}
	s.Sweep()
	if ids2, receipts2 := s.Len(); ids2 != ids || receipts2 != receipts {
		t.Fatalf("a sweep while everything is live dropped some: %d, %d", ids2, receipts2)
	}
	clock.Advance(2 * time.Hour) // past every window, also the sliding window's two
	s.Sweep()
	if ids, receipts := s.Len(); ids != 0 || receipts != 0 {
		t.Fatalf("after every window ended: %d identities, %d receipts; want none", ids, receipts)
	}
}

// TestClockStepsBack: a clock that steps back reads as the latest time seen,
// so a window is never rolled back.
func TestClockStepsBack(t *testing.T) {
	ctx := context.Background()
	clock := storetest.NewClock(time.Date(2030, 1, 1, 0, 1, 1, 0, time.UTC))
	s := memstore.New(memstore.WithClock(clock.Now), memstore.WithSweepInterval(0))
	defer s.Close()
	lim, err := allowance.NewLimiter(s, rule(allowance.FixedWindow, "1/minute"))
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := lim.Check(ctx, "alice"); !d.Allowed {
		t.Fatal("first check denied")
	}
	clock.Advance(-2 * time.Second) // into the previous minute
	d, err := lim.Check(ctx, "alice")
	if err != nil || d.Allowed {
		t.Fatalf("check after the clock stepped back: allowed=%v err=%v; want denied by the current window", d.Allowed, err)
	}
	if d.RetryAfter != 59*time.Second {
		t.Fatalf("retry after %v, want 59s (counted from the latest time seen)", d.RetryAfter)
	}
}

// TestSystemClock: without WithClock the store follows the wall clock.
func TestSystemClock(t *testing.T) {
	ctx := context.Background()
	s := memstore.New()
	defer s.Close()
	lim, err := allowance.NewLimiter(s, rule(allowance.SlidingLog, "2/hour"))
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now().UnixMicro()
	d, err := lim.Check(ctx, "alice")
	after := time.Now().UnixMicro()
	if err != nil || !d.Allowed {
		t.Fatal(d.Allowed, err)
	}
	// The log's window is the time of the charge.
	if w := d.Receipt.Charge(0).Window; w < before-1000 || w > after+1000 {
		t.Fatalf("charge at %d µs, outside the wall clock's [%d, %d]", w, before, after)
	}
}

// TestRefundResultsAreTheirOwn: each result of Limiter.Refund must keep its
// outcomes whatever later refunds, or appends to another result, write, also
// from many goroutines at once (run with -race).
func TestRefundResultsAreTheirOwn(t *testing.T) {
	ctx := context.Background()
	s := memstore.New(memstore.WithSweepInterval(0))
	defer s.Close()
	lim, err := allowance.NewLimiter(s, rule(allowance.FixedWindow, "1000000/hour"))
	if err != nil {
		t.Fatal(err)
	}
	const goroutines, refunds = 4, 200
	errs := make(chan error, goroutines)
	for g := 0; g < goroutines; g++ {
		go func() {
			var kept []allowance.RefundResult
			for i := 0; i < refunds; i++ {
				d, err := lim.Check(ctx, fmt.Sprintf("user-%d-%d", g, i))
				if err != nil || !d.Allowed {
					errs <- fmt.Errorf("check: allowed %v, err %v", d.Allowed, err)
					return
				}
				res, err := lim.Refund(ctx, &d.Receipt)
				if err != nil {
					errs <- err
					return
				}
				kept = append(kept, res)
			}
			// Appending to a result must not write into the next one.
			for _, res := range kept {
				_ = append(res.Charges, allowance.ChargeOutcome{Outcome: allowance.Declined})
			}
			for i, res := range kept {
				if len(res.Charges) != 1 || res.Charges[0].Outcome != allowance.Restored || res.Charges[0].Restored != 1 || res.Charges[0].Charge.Rule != "r" {
					errs <- fmt.Errorf("goroutine %d refund %d: result %+v", g, i, res.Charges)
					return
				}
			}
			errs <- nil
		}()
	}
	for g := 0; g < goroutines; g++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// TestVoidedIDNotChosen: an id the store would choose next, voided first by
// a caller (the store's ids are easy to guess) with an uncertain receipt the
// store's keys sign, is skipped: the next charge gets another id and its
// refund restores it.
func TestVoidedIDNotChosen(t *testing.T) {
	ctx := context.Background()
	keys := allowance.RandomReceiptKeys()
	s := memstore.New(memstore.WithSweepInterval(0), memstore.WithReceiptKeys(keys))
	defer s.Close()
	rules := []allowance.Rule{rule(allowance.FixedWindow, "10/minute")}
	lim, err := allowance.NewLimiter(s, rules...)
	if err != nil {
		t.Fatal(err)
	}
	d, err := lim.Check(ctx, "alice")
	if err != nil || !d.Allowed {
		t.Fatal(d.Allowed, err)
	}
	next := d.Receipt.ID
	binary.BigEndian.PutUint64(next[8:], binary.BigEndian.Uint64(next[8:])+1)
	void := allowance.UncertainReceipt(allowance.Request{ID: next, Identity: "alice", Rules: rules})
	keys.Sign(&void)
	if res, err := lim.Refund(ctx, &void); err != nil || res.Outcome() != allowance.NotCharged {
		t.Fatalf("voiding %s: %v, %v; want not_charged", next, res.Outcome(), err)
	}
	d, err = lim.Check(ctx, "alice")
	if err != nil || !d.Allowed || d.Receipt.ID == next {
		t.Fatalf("check after the void: allowed %v, id %s, err %v; want allowed with another id than %s", d.Allowed, d.Receipt.ID, err, next)
	}
	if res, err := lim.Refund(ctx, &d.Receipt); err != nil || res.Outcome() != allowance.Restored {
		t.Fatalf("refund: %v, %v; want restored", res.Outcome(), err)
	}
	if u, _ := lim.Peek(ctx, "alice"); u[0].Used != 1 {
		t.Fatalf("used %d after one kept charge and one refunded; want 1", u[0].Used)
	}
}

// TestUnverified: a receipt of another store (each has a random key of its
// own by default) restores nothing there, and is counted.
func TestUnverified(t *testing.T) {
	ctx := context.Background()
	a, b := memstore.New(memstore.WithSweepInterval(0)), memstore.New(memstore.WithSweepInterval(0))
	defer a.Close()
	defer b.Close()
	r := rule(allowance.GCRA, "10/minute")
	la, err := allowance.NewLimiter(a, r)
	if err != nil {
		t.Fatal(err)
	}
	lb, err := allowance.NewLimiter(b, r)
	if err != nil {
		t.Fatal(err)
	}
	d, err := la.Check(ctx, "alice")
	if err != nil || !d.Allowed {
		t.Fatal(d.Allowed, err)
	}
	if _, err := lb.Check(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if res, err := lb.Refund(ctx, &d.Receipt); err != nil || res.Outcome() != allowance.Unverified || res.Restored() {
		t.Fatalf("refund in another store: %v %v; want unverified", res.Outcome(), err)
	}
	if a.Unverified() != 0 || b.Unverified() != 1 {
		t.Fatalf("Unverified() = %d, %d; want 0, 1", a.Unverified(), b.Unverified())
	}
	if u, _ := lb.Peek(ctx, "alice"); u[0].Used != 1 {
		t.Fatalf("used %d in the other store; want 1", u[0].Used)
	}
	if res, err := la.Refund(ctx, &d.Receipt); err != nil || res.Outcome() != allowance.Restored {
		t.Fatalf("refund in the store that charged: %v %v; want restored", res.Outcome(), err)
	}
}

// TestIdempotencyRecordsSwept: an idempotent charge's record lasts the
// rules' longest period, and the sweep drops it then.
func TestIdempotencyRecordsSwept(t *testing.T) {
	ctx := context.Background()
	clock := storetest.NewClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	s := memstore.New(memstore.WithClock(clock.Now), memstore.WithSweepInterval(0))
	defer s.Close()
	r := rule(allowance.FixedWindow, "10/minute")
	for i := range 3 {
		var d allowance.Decision
		req := allowance.Request{Identity: "alice", Rules: []allowance.Rule{r}, IdempotencyKey: fmt.Sprintf("k%d", i)}
		if err := s.Charge(ctx, req, &d); err != nil || !d.Allowed {
			t.Fatalf("charge %d: %v, allowed %v", i, err, d.Allowed)
		}
	}
	if _, records := s.Len(); records != 3 {
		t.Fatalf("%d records, want 3 (one per key)", records)
	}
	clock.Advance(59 * time.Second)
	s.Sweep()
	if _, records := s.Len(); records != 3 {
		t.Fatalf("within the minute: %d records after a sweep, want 3", records)
	}
	clock.Advance(time.Second)
	s.Sweep()
	if ids, records := s.Len(); ids != 0 || records != 0 {
		t.Fatalf("after the minute: %d identities and %d records, want none", ids, records)
	}
}
