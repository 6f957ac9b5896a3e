package httplimit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/allowancehq/allowance"
)

// ErrNotApplied is returned by Refund and RefundReceipt when there is
// nothing to refund: the request matched no rule, was not charged (the store
// failed and the rule fails open), or there is no middleware in front of it.
var ErrNotApplied = errors.New("httplimit: no rate limit was applied to this request")

// ErrRepeated is returned by Refund for a request that repeated an earlier
// one with the same Idempotency-Key (Rule.IdempotencyKey): it was charged
// nothing, and the charge it reports is the first request's, which that
// request's outcome refunds or keeps.
var ErrRepeated = errors.New("httplimit: the request repeats an earlier one (same Idempotency-Key); its charge is that request's")

// Charge is one limit charged for a request: the original design's entry of
// applied_rate_limits_for_refund.
type Charge struct {
	UserID string // the identity charged
	Rule   string // the rule's name, such as "create-task"
	Limit  string // the limit, such as "5/minute"
	Amount int64  // units charged
	// Uncertain: the store failed after the check was sent, so the charge
	// may or may not have landed. The middleware voids it when the request
	// ends (see SettleConfig).
	Uncertain bool
}

// Applied returns what the middleware charged for the request whose context
// is ctx, one Charge per limit of every matched rule, or nil when nothing was
// charged. It reports the charges also after they were refunded, and the
// charges of a check whose outcome is unknown (Uncertain), which Refund
// settles the same way.
func Applied(ctx context.Context) []Charge {
	st := stateFrom(ctx)
	if st == nil || st.d.Receipt.Len() == 0 {
		return nil
	}
	r := &st.d.Receipt
	out := make([]Charge, r.Len())
	for i := range out {
		c := r.Charge(i)
		out[i] = Charge{UserID: r.Identity, Rule: c.Rule, Limit: c.Limit.String(), Amount: c.Amount, Uncertain: r.Uncertain()}
	}
	return out
}

// ReceiptFrom returns the receipt of the request's charge, to be stored with
// the work the request started and refunded later with
// Middleware.RefundReceipt (by this process or another, through
// Receipt.MarshalBinary). It reports false when nothing was charged. The
// receipt of a check whose outcome is unknown is uncertain: the middleware
// voids it when the request ends, and a later refund of it reports
// allowance.AlreadyRefunded. The receipt must not be modified.
func ReceiptFrom(ctx context.Context) (*allowance.Receipt, bool) {
	st := stateFrom(ctx)
	if st == nil || st.d.Receipt.Len() == 0 {
		return nil, false
	}
	return &st.d.Receipt, true
}

// Refund gives back what the middleware charged for the request whose
// context is ctx, because the server, not the client, is why it could not be
// served (such as 409 Conflict). reason is logged.
//
// The store is asked at most once per request, however often and from
// however many goroutines Refund is called: later calls wait for the first
// and report every charge as allowance.AlreadyRefunded. When called before
// the handler writes its status, the response's rate-limit headers are
// rewritten from the store's state after the refund (one Peek), so they
// show the refunded budget and the reset that goes with it.
//
// When the check's outcome was unknown (the store failed and the rule fails
// open), or the store fails now, the refund is queued and retried in the
// background until the store answers (see SettleConfig), and Refund returns
// an error wrapping ErrRefundQueued at once. Nothing is lost: the charge is
// given back exactly once, or, when the queue gives up, logged at ERROR and
// counted as abandoned.
//
// The refund is not cancelled with ctx (a client that hangs up does not stop
// it) but is bounded by Config.Timeout. It is logged at DEBUG when it
// succeeds, at WARN when it was declined by the rule's refund guard, queued,
// or there was nothing to refund (ErrNotApplied); the log has the user,
// rule, limit, amount, reason and receipt id.
func Refund(ctx context.Context, reason string) (allowance.RefundResult, error) {
	st := stateFrom(ctx)
	if st == nil {
		slog.Default().WarnContext(ctx, "rate limit refund asked for, but no rate limit middleware is in front of this request", "reason", reason)
		return allowance.RefundResult{}, ErrNotApplied
	}
	return st.refund(ctx, reason, false)
}

func (st *state) refund(ctx context.Context, reason string, declarative bool) (allowance.RefundResult, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	m, r := st.m, &st.d.Receipt
	if r.Len() == 0 {
		if !declarative {
			m.log.WarnContext(ctx, "rate limit refund asked for, but no limit was applied to the request",
				"reason", reason, "rules", st.set.names)
		}
		return allowance.RefundResult{}, ErrNotApplied
	}
	if st.d.Repeated {
		// The charge is the first request's, which decides its refund.
		if declarative {
			return allowance.RefundResult{}, nil
		}
		return allowance.RefundResult{}, ErrRepeated
	}
	if st.refunded {
		if declarative {
			// The handler refunded already; the status changes nothing.
			return allowance.RefundResult{}, nil
		}
		res := allowance.RefundResult{ReceiptID: r.ID, Charges: make([]allowance.ChargeOutcome, r.Len())}
		for i := range res.Charges {
			res.Charges[i] = allowance.ChargeOutcome{Charge: r.Charge(i), Outcome: allowance.AlreadyRefunded}
		}
		m.report(ctx, r, reason, res, nil)
		return res, nil
	}
	st.refunded = true
	if r.Uncertain() {
		// The store failed moments ago: settle off the request path.
		m.settle.add(&settlement{r: *r, guarded: true, kind: kindVoid, reason: reason, since: time.Now()})
		return allowance.RefundResult{ReceiptID: r.ID}, ErrRefundQueued
	}
	res, err := m.attempt(&settlement{r: *r, guarded: true})
	if err != nil {
		m.log.WarnContext(ctx, "rate limit refund failed; queued for retry",
			"user", r.Identity, "rules", st.set.names, "reason", reason, "receipt", r.ID.String(), "error", err)
		m.settle.add(&settlement{r: *r, guarded: true, kind: kindRefund, reason: reason, since: time.Now()})
		return allowance.RefundResult{ReceiptID: r.ID}, fmt.Errorf("%w: %w", ErrRefundQueued, err)
	}
	m.report(ctx, r, reason, res, nil)
	if st.d.Allowed && !st.wrote && st.w.ResponseWriter != nil {
		h := st.w.ResponseWriter.Header()
		after, perr := st.set.lim.Peek(m.storeCtx(context.WithoutCancel(ctx), nil), r.Identity)
		if perr != nil {
			// The refund stands; the charge-time numbers would understate
			// the budget, so the response says nothing rather than that.
			m.log.WarnContext(ctx, "rate limit refunded, but its state could not be read for the headers", "error", perr)
			h.Del(hRateLimit)
			h.Del(hRemaining)
			h.Del(hReset)
		} else {
			st.setHeaders(h, after)
		}
	}
	return res, nil
}

// RefundReceipt gives back what receipt charged, for refunds made after the
// request: when the work it started failed in a worker, or was stuck. It
// applies the refund guards of the configured rules of the receipt's rule
// names, and logs and counts like Refund. A receipt is refunded at most once
// by the store, however often this is called and by whichever process;
// repeats report allowance.AlreadyRefunded. A nil or empty receipt returns
// ErrNotApplied.
func (m *Middleware) RefundReceipt(ctx context.Context, receipt *allowance.Receipt, reason string) (allowance.RefundResult, error) {
	if receipt == nil || receipt.Len() == 0 {
		m.log.WarnContext(ctx, "rate limit refund asked for an empty receipt", "reason", reason)
		return allowance.RefundResult{}, ErrNotApplied
	}
	res, err := m.attempt(&settlement{r: *receipt, guarded: true})
	m.report(ctx, receipt, reason, res, err)
	if err != nil {
		return res, fmt.Errorf("httplimit: %w", err) // the Limiter names the receipt
	}
	return res, nil
}

// report logs and counts a refund, one log line and count per charge.
func (m *Middleware) report(ctx context.Context, r *allowance.Receipt, reason string, res allowance.RefundResult, err error) {
	for i := range r.Len() {
		c := r.Charge(i)
		attrs := []slog.Attr{
			slog.String("user", r.Identity),
			slog.String("rule", c.Rule),
			slog.String("limit", c.Limit.String()),
			slog.Int64("amount", c.Amount),
			slog.String("reason", reason),
			slog.String("receipt", r.ID.String()),
		}
		if err != nil {
			m.met.obs.Refund(c.Rule, refundFailed)
			m.log.LogAttrs(ctx, slog.LevelError, "rate limit refund failed", append(attrs, slog.String("error", err.Error()))...)
			continue
		}
		o := allowance.Outcome(0)
		var restored int64
		if i < len(res.Charges) {
			o, restored = res.Charges[i].Outcome, res.Charges[i].Restored
		}
		label := refundLabel(o)
		m.met.obs.Refund(c.Rule, label)
		attrs = append(attrs, slog.String("outcome", label), slog.Int64("restored", restored))
		if o == allowance.Declined {
			m.log.LogAttrs(ctx, slog.LevelWarn, "rate limit refund declined: the rule's refund guard is exhausted", attrs...)
			continue
		}
		m.log.LogAttrs(ctx, slog.LevelDebug, "rate limit refunded", attrs...)
	}
}
