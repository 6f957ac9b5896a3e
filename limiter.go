package allowance

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// ErrNoIdentity is returned when a check is asked for an empty identity: an
// empty identity would make every anonymous caller share one budget.
var ErrNoIdentity = errors.New("identity is empty")

// Limiter checks one identity at a time against a fixed set of rules kept in a
// Store, and refunds the receipts of its checks. It is safe for concurrent use
// and cheap: make one per set of rules that are charged together.
type Limiter struct {
	store     Store
	rules     []Rule
	guards    []Guard
	decisions sync.Pool // of *Decision, for Check
	results   sync.Pool // of *RefundResult, for Refund
}

// NewLimiter returns a Limiter that charges every one of rules on each check.
// The rules are validated and copied.
func NewLimiter(store Store, rules ...Rule) (*Limiter, error) {
	if store == nil {
		return nil, errors.New("new limiter: store is nil")
	}
	if err := validateRules(rules); err != nil {
		return nil, fmt.Errorf("new limiter: %w", err)
	}
	l := &Limiter{store: store, rules: make([]Rule, len(rules))}
	l.decisions.New = func() any { return new(Decision) }
	l.results.New = func() any { return new(RefundResult) }
	for i, r := range rules {
		r.Limits = append(Limits(nil), r.Limits...)
		l.rules[i] = r
		if r.RefundGuard != (Limit{}) {
			l.guards = append(l.guards, Guard{Rule: r.Name, Limit: r.RefundGuard})
		}
	}
	return l, nil
}

// Check charges identity for one request against every rule, all or nothing.
// When the request is allowed, the Decision's Receipt records the charge
// for Refund.
//
// When the store fails, Check returns the error. If the error wraps
// ErrUncertain, the store may have applied the charge: the Receipt is then an
// uncertain receipt, and refunding it undoes the charge if it was applied
// (exactly once either way).
//
// Check does not allocate for up to four limits in all. CheckInto does the
// same without copying the Decision, for callers that keep one per request.
func (l *Limiter) Check(ctx context.Context, identity string) (out Decision, err error) {
	// The store writes to a pooled Decision: one it were given on Check's
	// stack would escape through the interface call.
	d := l.decisions.Get().(*Decision)
	err = l.CheckInto(ctx, identity, d)
	out = *d
	l.decisions.Put(d)
	return
}

// CheckInto is Check writing the Decision to d, which it overwrites. It
// neither allocates (for up to four limits in all) nor copies the Decision:
// the store fills d in place. d escapes, so it belongs in something already on
// the heap, such as a request's state.
func (l *Limiter) CheckInto(ctx context.Context, identity string, d *Decision) error {
	if identity == "" {
		*d = Decision{}
		return ErrNoIdentity
	}
	// The store chooses the receipt's ID: it can do so more cheaply than a
	// random one (memstore counts them under the lock it takes anyway).
	if err := l.store.Charge(ctx, Request{Identity: identity, Rules: l.rules}, d); err != nil {
		failedCheck(d, err)
		return err
	}
	return nil
}

// failedCheck leaves in d, after the store failed, the store's uncertain
// receipt when the charge may have been applied, and otherwise nothing.
func failedCheck(d *Decision, err error) {
	if errors.Is(err, ErrUncertain) && d.Receipt.Uncertain() {
		*d = Decision{Receipt: d.Receipt}
		return
	}
	*d = Decision{}
}

// Refund gives back what receipt charged, at most once per receipt however
// often and wherever it is called, and reports per charge what happened (see
// Outcome). A zero receipt (from a denied or failed check) refunds nothing.
// The refund guards of the limiter's rules apply to the receipt's rules of the
// same names, so a receipt decoded in another process is guarded the same way.
//
// The result is the caller's to keep; RefundInto reuses one instead.
func (l *Limiter) Refund(ctx context.Context, receipt *Receipt) (RefundResult, error) {
	var res RefundResult
	if receipt == nil || receipt.Len() == 0 {
		return res, nil
	}
	// The store writes to a pooled result: one on Refund's stack would escape
	// through the interface call. Its Charges are the new result's own.
	p := l.results.Get().(*RefundResult)
	p.Charges = make([]ChargeOutcome, 0, receipt.Len())
	err := l.RefundInto(ctx, receipt, p)
	res = *p
	*p = RefundResult{}
	l.results.Put(p)
	return res, err
}

// RefundInto is Refund writing the result to res, whose Charges' storage it
// reuses when it has room: a caller that keeps one RefundResult (per worker,
// or in a request's state) refunds without allocating. Outcomes read from res
// before are overwritten.
func (l *Limiter) RefundInto(ctx context.Context, receipt *Receipt, res *RefundResult) error {
	if receipt == nil || receipt.Len() == 0 {
		res.Reset(ReceiptID{}, 0)
		return nil
	}
	if err := l.store.Refund(ctx, receipt, l.guards, res); err != nil {
		return fmt.Errorf("refund %s: %w", receipt.ID, err)
	}
	return nil
}

// Peek reports identity's usage of every limit without charging.
func (l *Limiter) Peek(ctx context.Context, identity string) ([]Usage, error) {
	if identity == "" {
		return nil, ErrNoIdentity
	}
	u, err := l.store.Peek(ctx, identity, l.rules)
	if err != nil {
		return nil, fmt.Errorf("peek: %w", err)
	}
	return u, nil
}

// Reset forgets identity's usage of every limit, for operators.
func (l *Limiter) Reset(ctx context.Context, identity string) error {
	if identity == "" {
		return ErrNoIdentity
	}
	if err := l.store.Reset(ctx, identity, l.rules); err != nil {
		return fmt.Errorf("reset: %w", err)
	}
	return nil
}
