package allowance

import (
	"context"
	"errors"
	"time"
)

// Store keeps usage and applies the algorithms. One Store serves any number of
// Limiters and identities. Implementations: memstore (in process) and
// redisstore (Redis, Redis Cluster).
//
// Identities are often personal data (user ids, IP addresses); stores keep
// them as given or encode them in keys, so hash them first if that matters.
//
// Every method is safe for concurrent use. Implementations must make Charge and
// Refund each one atomic step with respect to every other call on the same
// identity: that is what makes limits exact and refunds at most once.
type Store interface {
	// Charge charges req.Identity for every limit of every rule in req.Rules,
	// all or nothing, and writes the outcome to d, which it first resets with
	// d.Reset: when any limit would be exceeded nothing is charged and the
	// Decision is a denial. An allowed Decision carries a Receipt whose ID is
	// req.ID, or one the store chose when req.ID is zero, signed with the
	// store's ReceiptKeys.
	//
	// The Decision is the caller's, filled in place so that a check copies
	// nothing; Charge must not keep d after it returns. On an error, d
	// describes no charge, except that a store whose round trip can fail after
	// the charge may have been applied returns an error wrapping ErrUncertain
	// with d.Receipt set to the charge's uncertain receipt (UncertainReceipt of
	// the request, with the ID used, signed); refunding it voids the charge.
	Charge(ctx context.Context, req Request, d *Decision) error

	// Refund undoes the charges of one receipt, at most once per receipt ID
	// across all callers and processes, and writes to res what happened, per
	// charge, after res.Reset. It first verifies the receipt with the
	// store's ReceiptKeys (ReceiptKeys.Verify: a receipt signed in memory by
	// what Sign recorded, a decoded one by its tag): a receipt that no key
	// verifies (altered, built with NewReceipt, signed by another key, or
	// encoded before receipts were signed) changes nothing, not even the
	// record of refunded or voided IDs, and every charge's outcome is
	// Unverified (RefundResult.SetUnverified); that is not an error. The
	// outcomes reuse the storage of res.Charges when it has room, so that a
	// caller that keeps a RefundResult refunds without allocating. On an
	// error res holds no outcomes. guards are the refund guards of the
	// receipt's rules, by rule name; a rule without one is not bounded.
	Refund(ctx context.Context, receipt *Receipt, guards []Guard, res *RefundResult) error

	// Peek reports identity's usage of every limit of rules without charging.
	Peek(ctx context.Context, identity string, rules []Rule) ([]Usage, error)

	// Reset forgets identity's usage of every limit of rules, and its refund
	// guard counts for them.
	Reset(ctx context.Context, identity string, rules []Rule) error
}

// Request is one charge: an identity against a set of rules.
type Request struct {
	// ID becomes the receipt's ID. When it is zero, the store chooses a
	// fresh one, before anything that could leave the charge uncertain, so
	// that a charge whose outcome is uncertain can be voided by that ID. An
	// ID chosen by the caller must be unique, as NewReceiptID's are; a store
	// may choose cheaper IDs that are unique among its own (memstore counts
	// them).
	ID ReceiptID
	// Identity is who is charged: a user id, an API key's id, an IP address.
	// It may hold any bytes; stores encode it.
	Identity string
	// Rules are charged together; they must be valid, with unique names.
	// The Decision's receipt shares them, as the charges it describes: they
	// must not be modified while it may be refunded or encoded.
	Rules []Rule
	// Cost, when not zero, is what this request charges each limit of every
	// rule, in place of the rules' Cost (Limiter.CheckN).
	Cost int64
	// Costs, when not nil, holds one cost per rule, in the order of Rules,
	// in place of Cost and the rule's Cost; a zero entry leaves them
	// (CheckOptions.Costs). Every cost is between 1 and the smallest
	// count of its rule's limits: Limiter checks it. The receipt records
	// the costs (Decision.Reset copies them), so Costs may be reused after
	// Charge returns.
	Costs []int64
	// IdempotencyKey, when not empty, makes the charge idempotent
	// (CheckOptions.IdempotencyKey): the store remembers an allowed
	// charge of req.Identity, the same rules and this key for the longest
	// period of the rules, and answers a repeat with that charge's
	// Decision, the same receipt ID included, charging nothing.
	IdempotencyKey string
}

// cost returns the cost the request sets for Rules[k], or 0 when it
// leaves the rule's.
func (r *Request) cost(k int) int64 {
	if k < len(r.Costs) && r.Costs[k] != 0 {
		return r.Costs[k]
	}
	return r.Cost
}

// Amount returns the units the request charges each limit of Rules[k]: its
// cost from Costs or Cost, or else the rule's Amount.
func (r *Request) Amount(k int) int64 {
	if c := r.cost(k); c != 0 {
		return c
	}
	return r.Rules[k].Amount()
}

// Guard is a rule's refund guard as a store sees it.
type Guard struct {
	Rule  string
	Limit Limit
}

// ErrUncertain marks a Charge error after which the store cannot tell whether
// the charge was applied, such as a timeout after the request was sent.
var ErrUncertain = errors.New("outcome of the charge is unknown")

// ErrVoided is returned by Charge when req.ID was voided before the charge
// could be applied: nothing was charged.
var ErrVoided = errors.New("charge was voided before it was applied")

// maxInline is how many limit states a Decision holds without allocating.
const maxInline = 4

// LimitState is one limit's state after a check.
type LimitState struct {
	Rule  string // the rule's name
	Limit Limit  // the limit
	// Allowed is false when this limit would have been exceeded.
	Allowed bool
	// Remaining is how many units could still be charged now. For 10/minute
	// with 6 used in the current window, Remaining is 4. In an allowed
	// Decision it counts the request's own charge. In a denied one nothing
	// was charged, and every limit, whether it allowed the request or not,
	// reports its state without it: what Peek reports at the same instant
	// (Usage.Remaining).
	Remaining int64
	// ResetAfter is the time until usage would be back to zero if nothing
	// more were charged: in an allowed Decision counting the request's
	// charge, in a denied one without it, as Peek reports it
	// (Usage.ResetAfter).
	ResetAfter time.Duration
	// RetryAfter is, when Allowed is false, the time until a request of the
	// same cost could pass this limit; zero when Allowed.
	RetryAfter time.Duration
}

// state is what a Decision keeps per limit; the rule and limit come from the
// receipt's rules, and whether the limit allowed from Decision.denied for the
// inline states.
type state struct {
	remaining  int64
	resetAfter time.Duration
	retryAfter time.Duration
}

// moreState is a state beyond the inline ones.
type moreState struct {
	state
	allowed bool
}

// Decision is the outcome of a check. It holds up to four limit states
// inline, so that a check needs no allocation; Store.Charge and
// Limiter.CheckInto fill one in place. Copying a Decision is safe: the copies
// share nothing that is written again.
type Decision struct {
	// Allowed reports whether the request was admitted and charged.
	Allowed bool
	// Repeated reports that the check repeated an earlier allowed one with
	// the same idempotency key (CheckOptions.IdempotencyKey): the Decision
	// is that check's, receipt included, and nothing was charged now. The
	// charge belongs to the first request; refund it only for what became
	// of that one.
	Repeated bool

	// Unexported fields packed beside Allowed, in what would be padding.
	most   uint8 // index of the most restrictive limit plus one, 0 before any
	n      uint8 // number of limit states (at most MaxRules*MaxLimitsPerRule)
	denied uint8 // bit i: the i-th inline state did not allow

	// Remaining, ResetAfter and RetryAfter are those of the most restrictive
	// limit: when denied, the denying limit with the longest RetryAfter; when
	// allowed, the limit with the fewest remaining units (the longest
	// ResetAfter among equals).
	Remaining  int64
	ResetAfter time.Duration
	RetryAfter time.Duration
	// Receipt records what was charged. It holds the charges only when
	// Allowed; its ID and Identity are set either way.
	Receipt Receipt

	inline [maxInline]state
	more   *[]moreState // states beyond the inline ones
}

// Reset makes d the start of the Decision for req: not allowed, no limit
// states yet, a receipt of req.ID and req.Identity with no charges. A Store
// calls it first in Charge, fills d with SetLimit for each limit of each rule,
// in order, and calls Allow when it charged them; a store that chooses the
// receipt's ID sets d.Receipt.ID. Reset never reuses what an earlier decision
// held beyond its inline states, so copies made of d before stay intact.
func (d *Decision) Reset(req Request) {
	*d = Decision{}
	d.Receipt.ID = req.ID
	d.Receipt.Identity = req.Identity
	d.Receipt.rules = req.Rules
	d.Receipt.setCosts(&req)
}

// SetLimit records the state of the i-th limit of the request (counting the
// limits of every rule in order). window is what the refund of this limit
// needs: for FixedWindow and SlidingWindow the start of the window charged,
// for SlidingLog the time of the charge, for GCRA the TAT right after the
// charge, all in microseconds of the store's clock. For use by Store
// implementations.
func (d *Decision) SetLimit(i int, allowed bool, remaining int64, resetAfter, retryAfter time.Duration, window int64) {
	s := state{remaining: remaining, resetAfter: resetAfter, retryAfter: retryAfter}
	if i < maxInline {
		d.inline[i] = s
		if allowed {
			d.denied &^= 1 << i
		} else {
			d.denied |= 1 << i
		}
	} else {
		if d.more == nil {
			d.more = new([]moreState)
		}
		for len(*d.more) <= i-maxInline {
			*d.more = append(*d.more, moreState{})
		}
		(*d.more)[i-maxInline] = moreState{state: s, allowed: allowed}
	}
	if i >= int(d.n) {
		d.n = uint8(i + 1)
	}
	d.Receipt.setWindow(i, window)
	if d.most == 0 || moreRestrictive(allowed, s, d.allowed(int(d.most)-1), d.state(int(d.most)-1)) {
		d.most = uint8(i + 1)
		d.Remaining, d.ResetAfter, d.RetryAfter = s.remaining, s.resetAfter, s.retryAfter
	}
}

// Allow marks the decision allowed and its receipt as holding the charges.
// For use by Store implementations, after SetLimit for every limit.
func (d *Decision) Allow() {
	d.Allowed = true
	d.Receipt.charged = true
}

func moreRestrictive(aAllowed bool, a state, bAllowed bool, b state) bool {
	if aAllowed != bAllowed {
		return !aAllowed
	}
	if !aAllowed {
		return a.retryAfter > b.retryAfter
	}
	if a.remaining != b.remaining {
		return a.remaining < b.remaining
	}
	return a.resetAfter > b.resetAfter
}

func (d *Decision) state(i int) state {
	if i < maxInline {
		return d.inline[i]
	}
	return (*d.more)[i-maxInline].state
}

func (d *Decision) allowed(i int) bool {
	if i < maxInline {
		return d.denied&(1<<i) == 0
	}
	return (*d.more)[i-maxInline].allowed
}

// Len returns the number of limit states: one per limit of every rule checked.
func (d *Decision) Len() int { return int(d.n) }

// State returns the state of the i-th limit, 0 <= i < Len(), counting the
// limits of every rule in order.
func (d *Decision) State(i int) LimitState {
	s := d.state(i)
	r, _, l := d.Receipt.ruleLimit(i)
	return LimitState{Rule: r.Name, Limit: l, Allowed: d.allowed(i), Remaining: s.remaining, ResetAfter: s.resetAfter, RetryAfter: s.retryAfter}
}

// States returns every limit's state.
func (d *Decision) States() []LimitState {
	out := make([]LimitState, d.Len())
	for i := range out {
		out[i] = d.State(i)
	}
	return out
}

// MostRestrictive returns the index of the limit that Remaining, ResetAfter
// and RetryAfter describe, or -1 when the Decision has no limits.
func (d *Decision) MostRestrictive() int { return int(d.most) - 1 }

// Outcome is what a refund did to one charge.
type Outcome uint8

// Refund outcomes.
const (
	// Restored: the charge was given back.
	Restored Outcome = iota + 1
	// WindowEnded: the window the charge counted in is over (for GCRA, the
	// charge has already flowed back into the bucket), so there is nothing to
	// give back; the caller already has that budget again.
	WindowEnded
	// AlreadyRefunded: this receipt was refunded before; nothing changed.
	AlreadyRefunded
	// Declined: the rule's refund guard is exhausted for this identity.
	Declined
	// NotCharged: the receipt was uncertain and the charge was never applied;
	// it is now void and cannot be applied later.
	NotCharged
	// Unverified: no key of the store verifies the receipt's tag, so the
	// store cannot tell that it made the charge: the receipt was altered,
	// built with NewReceipt, signed under a key the store does not list (a
	// key rotated out, another deployment's), or encoded before receipts
	// were signed (format version 1). Nothing changed.
	Unverified
)

var outcomeNames = [...]string{"", "restored", "window_ended", "already_refunded", "declined", "not_charged", "unverified"}

// String returns the outcome's name as used in logs and metrics, such as
// "window_ended".
func (o Outcome) String() string {
	if int(o) < len(outcomeNames) && o != 0 {
		return outcomeNames[o]
	}
	return "unknown"
}

// ChargeOutcome is the outcome of refunding one charge of a receipt.
type ChargeOutcome struct {
	Charge  Charge
	Outcome Outcome
	// Restored is how many units were given back: the charge's amount when
	// Outcome is Restored (less if usage had already dropped below it), else 0.
	Restored int64
}

// RefundResult reports what a refund did, charge by charge. Unlike a
// Decision, a copy shares its Charges with the original: a later RefundInto
// (or Store.Refund) into the original overwrites what the copy shows. Copy
// Charges to keep them.
type RefundResult struct {
	ReceiptID ReceiptID
	Charges   []ChargeOutcome
}

// Reset makes r the start of the result of refunding the receipt id with n
// charges: n zero outcomes, in the storage of r.Charges when it has room.
// For use by Store implementations, which then fill r.Charges.
func (r *RefundResult) Reset(id ReceiptID, n int) {
	r.ReceiptID = id
	if cap(r.Charges) < n {
		r.Charges = make([]ChargeOutcome, n)
		return
	}
	r.Charges = r.Charges[:n]
	clear(r.Charges)
}

// SetUnverified makes r the result of refusing receipt, which no key of the
// store verifies: every charge's outcome Unverified, nothing restored. For
// use by Store implementations.
func (r *RefundResult) SetUnverified(receipt *Receipt) {
	r.Reset(receipt.ID, receipt.Len())
	for i := range r.Charges {
		r.Charges[i] = ChargeOutcome{Charge: receipt.Charge(i), Outcome: Unverified}
	}
}

// Restored reports whether any charge was given back.
func (r RefundResult) Restored() bool {
	for _, c := range r.Charges {
		if c.Outcome == Restored {
			return true
		}
	}
	return false
}

// Outcome summarises the result in one outcome: Restored when any charge was
// restored, otherwise the outcome shared by the charges (the first one's when
// they differ).
func (r RefundResult) Outcome() Outcome {
	if len(r.Charges) == 0 {
		return 0
	}
	if r.Restored() {
		return Restored
	}
	return r.Charges[0].Outcome
}

// Usage is one limit's usage, as Peek reports it.
type Usage struct {
	Rule      string
	Limit     Limit
	Algorithm Algorithm
	// Used is how many units count against the limit now (for SlidingWindow
	// the weighted estimate, for GCRA the units not yet flowed back).
	Used int64
	// Remaining is how many units a request could be charged now.
	Remaining int64
	// ResetAfter is the time until Used would be zero if nothing more were
	// charged.
	ResetAfter time.Duration
}
