package tasks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"
)

// Defaults of a Refunder.
const (
	DefaultRefundPoll        = time.Second
	DefaultRefundLease       = time.Minute
	DefaultRefundMinBackoff  = time.Second
	DefaultRefundMaxBackoff  = 5 * time.Minute
	DefaultRefundMaxAttempts = 10
)

// ErrPermanentRefund marks a refund error that retrying cannot cure (a
// receipt that does not decode, say): a RefundFunc wraps it to have the
// refund abandoned at once.
var ErrPermanentRefund = errors.New("refund cannot succeed")

// RefundFunc makes the refund of task t (its Receipt, for its
// RefundReason) and returns the outcome to record as t.RefundOutcome: what
// the refund did, or why nothing was refunded (say "skipped" when no rule
// refunds that reason). An error means "try again later", unless it wraps
// ErrPermanentRefund. It must be safe to call more than once for a task
// (allowance refunds a receipt at most once), since a process may die
// after the refund and before recording it.
type RefundFunc func(ctx context.Context, t Task) (outcome string, err error)

// Refunder works off the durable refund records of a Store: it claims each
// pending refund (Store.ClaimRefund, under a lease so that other
// processes' refunders leave it alone meanwhile), calls its RefundFunc and
// records the result: done, pending again after a backoff that doubles
// with each attempt, or abandoned after the last attempt. A refund whose
// process dies mid-way is claimed again when its lease ends. Create one
// with NewRefunder; the zero value is not usable.
type Refunder struct {
	store       Store
	refund      RefundFunc
	log         *slog.Logger
	poll        time.Duration
	lease       time.Duration
	minBackoff  time.Duration
	maxBackoff  time.Duration
	maxAttempts int
	hook        func(t Task, state RefundState, err error)
	wake        chan struct{}
	started     atomic.Bool
}

// RefunderOption configures a Refunder.
type RefunderOption func(*Refunder)

// WithRefundPoll sets how often an idle Refunder looks for due refunds
// (default DefaultRefundPoll). Values ≤ 0 are ignored.
func WithRefundPoll(d time.Duration) RefunderOption {
	return func(r *Refunder) {
		if d > 0 {
			r.poll = d
		}
	}
}

// WithRefundLease sets how long a claimed refund is left to its claimer
// (default DefaultRefundLease); one attempt may take at most half of it.
// Values ≤ 0 are ignored.
func WithRefundLease(d time.Duration) RefunderOption {
	return func(r *Refunder) {
		if d > 0 {
			r.lease = d
		}
	}
}

// WithRefundRetry sets the delay after the first failed attempt (doubled
// after each further one, up to maxBackoff) and the number of attempts
// after which a refund is abandoned (defaults DefaultRefundMinBackoff,
// DefaultRefundMaxBackoff, DefaultRefundMaxAttempts). Values ≤ 0 keep the
// defaults.
func WithRefundRetry(minBackoff, maxBackoff time.Duration, maxAttempts int) RefunderOption {
	return func(r *Refunder) {
		if minBackoff > 0 {
			r.minBackoff = minBackoff
		}
		if maxBackoff > 0 {
			r.maxBackoff = maxBackoff
		}
		if maxAttempts > 0 {
			r.maxAttempts = maxAttempts
		}
	}
}

// WithRefundHook sets a function called after each attempt with the task
// (as claimed), the refund's new state (pending: it will be retried; done;
// abandoned) and the attempt's error (nil when done). For metrics; keep it
// short.
func WithRefundHook(f func(t Task, state RefundState, err error)) RefunderOption {
	return func(r *Refunder) { r.hook = f }
}

// NewRefunder returns a Refunder of store's refunds that refunds with
// refund. A nil logger discards logs.
func NewRefunder(store Store, refund RefundFunc, logger *slog.Logger, opts ...RefunderOption) *Refunder {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	r := &Refunder{
		store:       store,
		refund:      refund,
		log:         logger,
		poll:        DefaultRefundPoll,
		lease:       DefaultRefundLease,
		minBackoff:  DefaultRefundMinBackoff,
		maxBackoff:  DefaultRefundMaxBackoff,
		maxAttempts: DefaultRefundMaxAttempts,
		wake:        make(chan struct{}, 1),
	}
	for _, o := range opts {
		o(r)
	}
	return r
}

// Notify makes an idle Refunder look for due refunds now; call it after a
// task failed in this process. It never blocks.
func (r *Refunder) Notify() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run works off due refunds until ctx is done, then returns nil; an
// attempt in progress is recorded as failed and retried later. It returns
// an error only when the Refunder is already running.
func (r *Refunder) Run(ctx context.Context) error {
	if !r.started.CompareAndSwap(false, true) {
		return errors.New("tasks: refunder is already running")
	}
	defer r.started.Store(false)
	backoff := r.poll
	for ctx.Err() == nil {
		t, ok, err := r.store.ClaimRefund(ctx, r.lease)
		pause := r.poll
		switch {
		case err != nil && ctx.Err() == nil:
			r.log.Error("claim refund", "err", err, "retry_in", backoff)
			pause, backoff = backoff, min(2*backoff, max(maxClaimBackoff, r.poll))
		case ok:
			backoff = r.poll
			r.attempt(ctx, t)
			continue
		default:
			backoff = r.poll
		}
		select {
		case <-ctx.Done():
		case <-r.wake:
		case <-time.After(pause):
		}
	}
	return nil
}

// attempt makes one attempt at t's refund and records its result.
func (r *Refunder) attempt(ctx context.Context, t Task) {
	log := r.log.With("task_id", t.ID, "user", t.UserID, "reason", t.RefundReason, "attempt", t.RefundAttempts)
	actx, cancel := context.WithTimeout(ctx, r.lease/2)
	outcome, err := r.call(actx, t)
	cancel()
	wctx, wcancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer wcancel()

	state := RefundDone
	var werr error
	switch {
	case err == nil:
		werr = r.store.FinishRefund(wctx, t.ID, outcome)
		if werr == nil {
			log.Info("task refund done", "outcome", outcome)
		}
	case errors.Is(err, ErrPermanentRefund) || t.RefundAttempts >= r.maxAttempts:
		state = RefundAbandoned
		msg := fmt.Sprintf("abandoned after %d attempts: %v", t.RefundAttempts, err)
		werr = r.store.AbandonRefund(wctx, t.ID, msg)
		if werr == nil {
			log.Error("task refund abandoned", "err", err)
		}
	default:
		state = RefundPending
		delay := r.backoff(t.RefundAttempts)
		werr = r.store.RetryRefund(wctx, t.ID, delay, err.Error())
		if werr == nil {
			log.Warn("task refund failed; will retry", "err", err, "retry_in", delay)
		}
	}
	switch {
	case errors.Is(werr, ErrNoPendingRefund):
		log.Info("task refund ended elsewhere meanwhile", "err", err)
		return
	case werr != nil:
		log.Error("record task refund; it will be tried again when its claim ends", "err", werr, "refund_err", err)
		return
	}
	if r.hook != nil {
		r.hook(t, state, err)
	}
}

// call runs the RefundFunc, turning a panic into a permanent error.
func (r *Refunder) call(ctx context.Context, t Task) (outcome string, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("refund panicked: %v: %w", p, ErrPermanentRefund)
		}
	}()
	return r.refund(ctx, t)
}

// backoff returns the delay after the given number of failed attempts:
// minBackoff doubled attempts-1 times, at most maxBackoff.
func (r *Refunder) backoff(attempts int) time.Duration {
	d := r.minBackoff
	for i := 1; i < attempts && d < r.maxBackoff; i++ {
		d *= 2
	}
	return min(d, r.maxBackoff)
}
