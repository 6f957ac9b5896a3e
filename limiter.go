package allowance

import (
	"context"
	"errors"
	"fmt"
)

// ErrNoIdentity is returned when a check is asked for an empty identity: an
// empty identity would make every anonymous caller share one budget.
var ErrNoIdentity = errors.New("identity is empty")

// Limiter checks one identity at a time against a fixed set of rules kept in a
// Store, and refunds the receipts of its checks. It is safe for concurrent use
// and cheap: make one per set of rules that are charged together.
type Limiter struct {
	store  Store
	rules  []Rule
	guards []Guard
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
	for i, r := range rules {
		r.Limits = append(Limits(nil), r.Limits...)
		l.rules[i] = r
		if r.RefundGuard != (Limit{}) {
			l.guards = append(l.guards, Guard{Rule: r.Name, Limit: r.RefundGuard})
		}
	}
	return l, nil
}

// Rules returns the limiter's rules. The slice must not be modified.
func (l *Limiter) Rules() []Rule { return l.rules }

// Store returns the limiter's store.
func (l *Limiter) Store() Store { return l.store }

// Check charges identity for one request against every rule, all or nothing.
// When the request is allowed, the Decision's Receipt records the charge
// for Refund.
//
// When the store fails, Check returns the error. If the error wraps
// ErrUncertain, the store may have applied the charge: the Receipt is then an
// uncertain receipt, and refunding it undoes the charge if it was applied
// (exactly once either way).
//
// Check does not allocate for up to four limits in all.
func (l *Limiter) Check(ctx context.Context, identity string) (Decision, error) {
	if identity == "" {
		return Decision{}, ErrNoIdentity
	}
	req := Request{ID: NewReceiptID(), Identity: identity, Rules: l.rules}
	d, err := l.store.Charge(ctx, req)
	if err != nil {
		return failedCheck(req, err)
	}
	return d, nil
}

// failedCheck is Check's result when the store failed: an uncertain receipt
// when the charge may have been applied. Apart from Check, so that Check's
// frame and its copies of the Decision stay small.
func failedCheck(req Request, err error) (Decision, error) {
	if errors.Is(err, ErrUncertain) {
		return Decision{Receipt: UncertainReceipt(req)}, err
	}
	return Decision{}, err
}

// Refund gives back what receipt charged, at most once per receipt however
// often and wherever it is called, and reports per charge what happened (see
// Outcome). A zero receipt (from a denied or failed check) refunds nothing.
// The refund guards of the limiter's rules apply to the receipt's rules of the
// same names, so a receipt decoded in another process is guarded the same way.
func (l *Limiter) Refund(ctx context.Context, receipt *Receipt) (RefundResult, error) {
	if receipt == nil || receipt.Len() == 0 {
		return RefundResult{}, nil
	}
	res, err := l.store.Refund(ctx, receipt, l.guards)
	if err != nil {
		return res, fmt.Errorf("refund %s: %w", receipt.ID, err)
	}
	return res, nil
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
