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

// ErrInvalidCost is wrapped by the error of a check whose cost no request
// could be charged: zero or negative, or more than the smallest count of a
// rule's limits. Nothing is charged.
var ErrInvalidCost = errors.New("invalid cost")

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

// CheckN is Check for a request that costs n units: every limit of every rule
// is charged n in place of the rule's Cost, and a refund gives n back. n must
// be between 1 and the smallest count of the rules' limits; otherwise the
// error wraps ErrInvalidCost and nothing is charged. Use it when requests
// differ in size: bytes, tokens, rows.
func (l *Limiter) CheckN(ctx context.Context, identity string, n int64) (Decision, error) {
	if err := l.validCost(n); err != nil {
		return Decision{}, err
	}
	d := l.decisions.Get().(*Decision)
	err := l.charge(ctx, Request{Identity: identity, Rules: l.rules, Cost: n}, d)
	out := *d
	l.decisions.Put(d)
	return out, err
}

// CheckOptions are what a check may carry beyond its identity.
type CheckOptions struct {
	// Cost, when not zero, is what the request charges every limit of
	// every rule, in place of the rules' Cost, as CheckN.
	Cost int64
	// Costs, when not nil, holds one cost per rule of the limiter, in
	// their order, in place of Cost and the rule's Cost; a zero entry
	// leaves them. The receipt records the costs: Costs may be reused once
	// the check returns.
	Costs []int64
	// IdempotencyKey, when not empty, makes the check idempotent: a check
	// of the same identity, rules and key made while the first one's
	// charge counts (for the longest period of the rules) is not charged
	// again but gets the first one's Decision back, receipt included,
	// across every process that shares the store. A request retried after
	// a timeout or a lost response is then charged once. Only an allowed
	// check is remembered: a denied one charged nothing, so its repeat is
	// judged afresh. The key is 1 to MaxIdempotencyKeyLen bytes of
	// printable ASCII, such as a client's Idempotency-Key header; keys are
	// per identity, so clients cannot collide with each other's.
	IdempotencyKey string
}

// MaxIdempotencyKeyLen is the longest idempotency key, in bytes.
const MaxIdempotencyKeyLen = 255

// CheckWith is CheckInto with options: a cost of the request's own, per
// rule or for all, and an idempotency key. A cost must be between 1 and
// the smallest count of its rule's limits, and a key as CheckOptions says;
// otherwise the error wraps ErrInvalidCost or ErrInvalidIdempotencyKey and
// nothing is charged.
func (l *Limiter) CheckWith(ctx context.Context, identity string, opts CheckOptions, d *Decision) error {
	if opts.Cost != 0 {
		if err := l.validCost(opts.Cost); err != nil {
			*d = Decision{}
			return err
		}
	}
	if err := l.validCosts(opts.Costs); err != nil {
		*d = Decision{}
		return err
	}
	if err := validIdempotencyKey(opts.IdempotencyKey); err != nil {
		*d = Decision{}
		return err
	}
	return l.charge(ctx, Request{Identity: identity, Rules: l.rules, Cost: opts.Cost, Costs: opts.Costs, IdempotencyKey: opts.IdempotencyKey}, d)
}

// ErrInvalidIdempotencyKey is wrapped by the error of a check whose
// idempotency key is too long or holds other bytes than printable ASCII.
var ErrInvalidIdempotencyKey = errors.New("invalid idempotency key")

func validIdempotencyKey(k string) error {
	if len(k) > MaxIdempotencyKeyLen {
		return fmt.Errorf("check: %w: %d bytes; expected at most %d", ErrInvalidIdempotencyKey, len(k), MaxIdempotencyKeyLen)
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return fmt.Errorf("check: %w: byte %d is %#x; expected printable ASCII", ErrInvalidIdempotencyKey, i, k[i])
		}
	}
	return nil
}

// charge makes the check of req into d.
func (l *Limiter) charge(ctx context.Context, req Request, d *Decision) error {
	if req.Identity == "" {
		*d = Decision{}
		return ErrNoIdentity
	}
	// The store chooses the receipt's ID: it can do so more cheaply than a
	// random one (memstore counts them under the lock it takes anyway).
	if err := l.store.Charge(ctx, req, d); err != nil {
		failedCheck(d, err)
		return err
	}
	return nil
}

// validCost checks a cost for every rule.
func (l *Limiter) validCost(n int64) error {
	if n <= 0 {
		return fmt.Errorf("check: %w: cost %d; expected at least 1", ErrInvalidCost, n)
	}
	for k := range l.rules {
		if err := l.validRuleCost(k, n); err != nil {
			return err
		}
	}
	return nil
}

// validRuleCost checks a cost for the k-th rule.
func (l *Limiter) validRuleCost(k int, c int64) error {
	r := &l.rules[k]
	if c < 0 {
		return fmt.Errorf("check: %w: cost %d for rule %q is negative; expected at least 1", ErrInvalidCost, c, r.Name)
	}
	for _, lim := range r.Limits {
		if c > lim.Count {
			return fmt.Errorf("check: %w: cost %d for rule %q exceeds its limit %q: no request of this cost could ever pass", ErrInvalidCost, c, r.Name, lim)
		}
	}
	return nil
}

// validCosts checks costs against the limiter's rules.
func (l *Limiter) validCosts(costs []int64) error {
	if costs == nil {
		return nil
	}
	if len(costs) != len(l.rules) {
		return fmt.Errorf("check: %w: %d costs for %d rules; expected one per rule", ErrInvalidCost, len(costs), len(l.rules))
	}
	for k, c := range costs {
		if c == 0 {
			continue
		}
		if err := l.validRuleCost(k, c); err != nil {
			return err
		}
	}
	return nil
}

// CheckInto is Check writing the Decision to d, which it overwrites. It
// neither allocates (for up to four limits in all) nor copies the Decision:
// the store fills d in place. d escapes, so it belongs in something already on
// the heap, such as a request's state.
func (l *Limiter) CheckInto(ctx context.Context, identity string, d *Decision) error {
	return l.charge(ctx, Request{Identity: identity, Rules: l.rules}, d)
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
