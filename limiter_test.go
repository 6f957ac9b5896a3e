package allowance_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/allowancehq/allowance"
	"github.com/allowancehq/allowance/memstore"
)

// failingStore fails every call with err, recording the requests it saw
// with the IDs it chose for them. As the Store contract asks, an uncertain
// failure comes with the charge's uncertain receipt.
type failingStore struct {
	err      error
	requests []allowance.Request
}

func (s *failingStore) Charge(_ context.Context, req allowance.Request, d *allowance.Decision) error {
	if req.ID.IsZero() {
		req.ID = allowance.NewReceiptID()
	}
	s.requests = append(s.requests, req)
	d.Reset(req)
	if errors.Is(s.err, allowance.ErrUncertain) {
		d.Receipt = allowance.UncertainReceipt(req)
	}
	return s.err
}

func (s *failingStore) Refund(_ context.Context, r *allowance.Receipt, _ []allowance.Guard, res *allowance.RefundResult) error {
	res.Reset(r.ID, 0)
	return s.err
}

func (s *failingStore) Peek(context.Context, string, []allowance.Rule) ([]allowance.Usage, error) {
	return nil, s.err
}

func (s *failingStore) Reset(context.Context, string, []allowance.Rule) error { return s.err }

var taskRule = allowance.Rule{Name: "create-task", Limits: allowance.Limits{{Count: 3, Period: time.Minute}, {Count: 20, Period: 24 * time.Hour}}}

func TestLimiterUncertain(t *testing.T) {
	ctx := context.Background()
	store := &failingStore{err: fmt.Errorf("redis: read timeout: %w", allowance.ErrUncertain)}
	lim, err := allowance.NewLimiter(store, taskRule)
	if err != nil {
		t.Fatal(err)
	}
	d, err := lim.Check(ctx, "alice")
	if !errors.Is(err, allowance.ErrUncertain) {
		t.Fatalf("Check error %v, want ErrUncertain", err)
	}
	if d.Allowed {
		t.Fatal("an uncertain check is allowed")
	}
	r := d.Receipt
	if !r.Uncertain() || r.ID != store.requests[0].ID || r.Identity != "alice" || r.Len() != 2 {
		t.Fatalf("receipt uncertain=%v id=%v identity=%q len=%d; want an uncertain receipt of the request", r.Uncertain(), r.ID, r.Identity, r.Len())
	}
	if c := r.Charge(1); c.Rule != "create-task" || c.Limit != taskRule.Limits[1] || c.Amount != 1 {
		t.Fatalf("charge 1 = %+v", c)
	}
	if _, err := lim.Refund(ctx, &r); !errors.Is(err, allowance.ErrUncertain) || !strings.Contains(err.Error(), r.ID.String()) {
		t.Fatalf("Refund error %v; want the store's error with the receipt id", err)
	}

	// Any other store error leaves no receipt and no limit states.
	store.err = errors.New("connection refused")
	d, err = lim.Check(ctx, "alice")
	if err == nil || d.Receipt.Len() != 0 || d.Receipt.Uncertain() || d.Len() != 0 || d.MostRestrictive() != -1 {
		t.Fatalf("Check = %v with %d charges, %d states, most restrictive %d; want an error, nothing and -1", err, d.Receipt.Len(), d.Len(), d.MostRestrictive())
	}
	if d, err := lim.Check(ctx, ""); !errors.Is(err, allowance.ErrNoIdentity) || d.Len() != 0 || d.MostRestrictive() != -1 {
		t.Fatalf("Check of no identity = %v, %d states, most restrictive %d; want ErrNoIdentity, none, -1", err, d.Len(), d.MostRestrictive())
	}
	if _, err := lim.Peek(ctx, "alice"); err == nil || !strings.HasPrefix(err.Error(), "peek: ") {
		t.Fatalf("Peek error %v", err)
	}
	if err := lim.Reset(ctx, "alice"); err == nil || !strings.HasPrefix(err.Error(), "reset: ") {
		t.Fatalf("Reset error %v", err)
	}
}

func TestLimiterNoIdentity(t *testing.T) {
	ctx := context.Background()
	store := &failingStore{}
	lim, err := allowance.NewLimiter(store, taskRule)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lim.Check(ctx, ""); !errors.Is(err, allowance.ErrNoIdentity) {
		t.Errorf("Check: %v", err)
	}
	if _, err := lim.Peek(ctx, ""); !errors.Is(err, allowance.ErrNoIdentity) {
		t.Errorf("Peek: %v", err)
	}
	if err := lim.Reset(ctx, ""); !errors.Is(err, allowance.ErrNoIdentity) {
		t.Errorf("Reset: %v", err)
	}
	if len(store.requests) != 0 {
		t.Error("the store was called without an identity")
	}
	if res, err := lim.Refund(ctx, nil); err != nil || len(res.Charges) != 0 {
		t.Errorf("Refund(nil) = %+v, %v", res, err)
	}
	if res, err := lim.Refund(ctx, &allowance.Receipt{}); err != nil || len(res.Charges) != 0 {
		t.Errorf("Refund(zero) = %+v, %v", res, err)
	}
}

func TestNewLimiter(t *testing.T) {
	if _, err := allowance.NewLimiter(nil, taskRule); err == nil {
		t.Error("nil store accepted")
	}
	if _, err := allowance.NewLimiter(&failingStore{}); err == nil || !strings.Contains(err.Error(), "no rules") {
		t.Errorf("no rules: %v", err)
	}
	if _, err := allowance.NewLimiter(&failingStore{}, allowance.Rule{Name: "r"}); err == nil || !strings.HasPrefix(err.Error(), `new limiter: rule "r": no limits`) {
		t.Errorf("bad rule: %v", err)
	}
	r := taskRule
	r.Limits = append(allowance.Limits(nil), taskRule.Limits...)
	store := memstore.New()
	defer store.Close()
	lim, err := allowance.NewLimiter(store, r)
	if err != nil {
		t.Fatal(err)
	}
	r.Limits[0].Count = 99 // the limiter keeps its own copy: 3 a minute
	for i := range 4 {
		d, err := lim.Check(t.Context(), "alice")
		if err != nil || d.Allowed != (i < 3) {
			t.Fatalf("check %d: allowed %v, %v; want the 4th denied by the limiter's own 3/minute", i+1, d.Allowed, err)
		}
	}
}

// TestLimiterRefundGuard: the limiter passes its rules' guards to the store.
func TestLimiterRefundGuard(t *testing.T) {
	ctx := context.Background()
	store := memstore.New(memstore.WithSweepInterval(0))
	r := taskRule
	r.RefundGuard = allowance.Limit{Count: 1, Period: time.Hour}
	lim, err := allowance.NewLimiter(store, r)
	if err != nil {
		t.Fatal(err)
	}
	d1, _ := lim.Check(ctx, "alice")
	d2, _ := lim.Check(ctx, "alice")
	if res, err := lim.Refund(ctx, &d1.Receipt); err != nil || res.Outcome() != allowance.Restored {
		t.Fatalf("first refund: %v %v", res.Outcome(), err)
	}
	if res, err := lim.Refund(ctx, &d2.Receipt); err != nil || res.Outcome() != allowance.Declined {
		t.Fatalf("second refund: %v %v; want declined", res.Outcome(), err)
	}
}

// TestCheckAllocations: a check of up to four limits against memstore does
// not allocate, once the identity is known.
func TestCheckAllocations(t *testing.T) {
	ctx := context.Background()
	store := memstore.New(memstore.WithSweepInterval(0))
	lim, err := allowance.NewLimiter(store, allowance.Rule{Name: "r", Limits: allowance.Limits{{Count: 1_000_000_000, Period: time.Hour}}, Algorithm: allowance.GCRA})
	if err != nil {
		t.Fatal(err)
	}
	for _, alg := range allowance.Algorithms() {
		if alg == allowance.SlidingLog {
			continue // one log entry a charge
		}
		lim, err = allowance.NewLimiter(store, allowance.Rule{Name: "r", Limits: allowance.Limits{{Count: 1_000_000_000, Period: time.Hour}, {Count: 1_000_000_000, Period: 24 * time.Hour}}, Algorithm: alg})
		if err != nil {
			t.Fatal(err)
		}
		lim.Check(ctx, "alice")
		if n := testing.AllocsPerRun(100, func() {
			if d, err := lim.Check(ctx, "alice"); err != nil || !d.Allowed {
				t.Fatal(d.Allowed, err)
			}
		}); n != 0 {
			t.Errorf("%s: %v allocations a check, want 0", alg, n)
		}
		d := new(allowance.Decision)
		if n := testing.AllocsPerRun(100, func() {
			if err := lim.CheckInto(ctx, "alice", d); err != nil || !d.Allowed {
				t.Fatal(d.Allowed, err)
			}
		}); n != 0 {
			t.Errorf("%s: %v allocations a CheckInto, want 0", alg, n)
		}
		var res allowance.RefundResult
		if n := testing.AllocsPerRun(100, func() {
			if err := lim.CheckInto(ctx, "alice", d); err != nil || !d.Allowed {
				t.Fatal(d.Allowed, err)
			}
			if err := lim.RefundInto(ctx, &d.Receipt, &res); err != nil || !res.Restored() {
				t.Fatal(res, err)
			}
		}); n > 0.1 {
			t.Errorf("%s: %v allocations a CheckInto and RefundInto, want none but the receipt records' growth", alg, n)
		}
	}
}

// TestCheckCost: a check's own cost is charged in place of the rules' and
// given back whole by a refund; an impossible cost is refused, naming the
// cost and the rule, and charges nothing.
func TestCheckCost(t *testing.T) {
	ctx := context.Background()
	store := memstore.New()
	defer store.Close()
	minute, _ := allowance.ParseLimits("10/minute")
	hour, _ := allowance.ParseLimits("50/hour; 8/minute")
	lim, err := allowance.NewLimiter(store,
		allowance.Rule{Name: "minute", Limits: minute},
		allowance.Rule{Name: "hour", Limits: hour, Cost: 2},
	)
	if err != nil {
		t.Fatal(err)
	}
	d, err := lim.CheckN(ctx, "alice", 5)
	if err != nil || !d.Allowed {
		t.Fatalf("CheckN 5: %v, allowed %v", err, d.Allowed)
	}
	for i, c := range d.Receipt.Charges() {
		if c.Amount != 5 {
			t.Fatalf("charge %d (%s %s): amount %d, want 5", i, c.Rule, c.Limit, c.Amount)
		}
	}
	if d.Remaining != 3 { // 8/minute is the tightest
		t.Fatalf("remaining %d, want 3", d.Remaining)
	}
	if d, err := lim.CheckN(ctx, "alice", 4); err != nil || d.Allowed {
		t.Fatalf("CheckN 4 with 3 left: %v, allowed %v; want denied", err, d.Allowed)
	}

	// Per rule: the first rule 1, the second its own Cost (2).
	var one allowance.Decision
	if err := lim.CheckWith(ctx, "alice", allowance.CheckOptions{Costs: []int64{1, 0}}, &one); err != nil || !one.Allowed {
		t.Fatalf("costs [1 0]: %v, allowed %v", err, one.Allowed)
	}
	if got := []int64{one.Receipt.Charge(0).Amount, one.Receipt.Charge(1).Amount}; got[0] != 1 || got[1] != 2 {
		t.Fatalf("amounts %v, want [1 2]", got)
	}

	res, err := lim.Refund(ctx, &d.Receipt)
	if err != nil || !res.Restored() {
		t.Fatalf("refund: %v %+v", err, res)
	}
	for _, o := range res.Charges {
		if o.Restored != 5 {
			t.Fatalf("refund restored %d of %s, want 5", o.Restored, o.Charge.Rule)
		}
	}

	for _, tc := range []struct {
		name  string
		check func() error
		want  string
	}{
		{"zero", func() error { _, err := lim.CheckN(ctx, "bob", 0); return err }, "cost 0; expected at least 1"},
		{"negative", func() error { _, err := lim.CheckN(ctx, "bob", -3); return err }, "cost -3; expected at least 1"},
		{"above the smallest limit", func() error { _, err := lim.CheckN(ctx, "bob", 9); return err }, `cost 9 for rule "hour" exceeds its limit "8/minute"`},
		{"negative per rule", func() error {
			var d allowance.Decision
			return lim.CheckWith(ctx, "bob", allowance.CheckOptions{Costs: []int64{-1, 1}}, &d)
		}, `cost -1 for rule "minute" is negative`},
		{"too few", func() error {
			var d allowance.Decision
			return lim.CheckWith(ctx, "bob", allowance.CheckOptions{Costs: []int64{1}}, &d)
		}, "1 costs for 2 rules"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.check()
			if !errors.Is(err, allowance.ErrInvalidCost) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v; want ErrInvalidCost saying %q", err, tc.want)
			}
		})
	}
	u, err := lim.Peek(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range u {
		if x.Used != 0 {
			t.Fatalf("refused checks charged bob: %+v", x)
		}
	}
}

// TestCheckIdempotencyKey: a repeat with the key gets the first decision
// and is charged once; a key that is too long or not printable ASCII is
// refused, naming what is wrong, and charges nothing.
func TestCheckIdempotencyKey(t *testing.T) {
	ctx := context.Background()
	store := memstore.New()
	defer store.Close()
	limits, _ := allowance.ParseLimits("10/minute")
	lim, err := allowance.NewLimiter(store, allowance.Rule{Name: "submit", Limits: limits})
	if err != nil {
		t.Fatal(err)
	}
	var first, repeat allowance.Decision
	opts := allowance.CheckOptions{IdempotencyKey: "5f0c8e1a-retry"}
	if err := lim.CheckWith(ctx, "alice", opts, &first); err != nil || !first.Allowed {
		t.Fatalf("first: %v, allowed %v", err, first.Allowed)
	}
	if err := lim.CheckWith(ctx, "alice", opts, &repeat); err != nil || repeat.Receipt.ID != first.Receipt.ID {
		t.Fatalf("repeat: %v, receipt %s; want %s", err, repeat.Receipt.ID, first.Receipt.ID)
	}
	for _, tc := range []struct{ name, key, want string }{
		{"too long", strings.Repeat("k", allowance.MaxIdempotencyKeyLen+1), "256 bytes; expected at most 255"},
		{"control byte", "a\nb", "byte 1 is 0xa; expected printable ASCII"},
		{"not ASCII", "clé", "byte 2 is 0xc3; expected printable ASCII"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var d allowance.Decision
			err := lim.CheckWith(ctx, "bob", allowance.CheckOptions{IdempotencyKey: tc.key}, &d)
			if !errors.Is(err, allowance.ErrInvalidIdempotencyKey) || !strings.Contains(err.Error(), tc.want) || d.Allowed {
				t.Fatalf("error %v, allowed %v; want ErrInvalidIdempotencyKey saying %q", err, d.Allowed, tc.want)
			}
		})
	}
	if u, err := lim.Peek(ctx, "alice"); err != nil || u[0].Used != 1 {
		t.Fatalf("alice used %v (%v), want 1", u, err)
	}
	if u, err := lim.Peek(ctx, "bob"); err != nil || u[0].Used != 0 {
		t.Fatalf("bob used %v (%v), want 0", u, err)
	}
}
