package httplimit

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/allowancehq/allowance"
)

// ErrRefundQueued is returned (wrapped) by Refund when the store could not
// be asked now: the check's outcome was unknown, or the store failed. The
// refund is not lost: it is retried off the request path until the store
// answers (see SettleConfig), and counted and logged when it ends.
var ErrRefundQueued = errors.New("httplimit: refund queued: the store has not answered; it is retried in the background")

// Defaults of SettleConfig.
const (
	DefaultSettleMaxPending = 10000
	DefaultSettleMaxAge     = 5 * time.Minute
)

// Backoff between attempts while the store does not answer.
const (
	settleMinBackoff = 50 * time.Millisecond
	settleMaxBackoff = 2 * time.Second
)

// SettleConfig bounds the queue of settlements the middleware still owes
// the store: the voids of uncertain charges (a check whose outcome is
// unknown, because the store timed out or failed after the request was
// sent) and the refunds the store failed to make when asked. One goroutine
// per Middleware retries them in order, with a backoff of 50 ms doubling
// to 2 s while the store does not answer, until each is settled, is older
// than MaxAge, or Shutdown's context ends. A settlement that finds the
// queue full (MaxPending) is abandoned at once. Each abandoned one is
// logged at ERROR with its identity and rules, once, and counted.
type SettleConfig struct {
	// MaxPending caps the settlements waiting; 0 means
	// DefaultSettleMaxPending.
	MaxPending int
	// MaxAge is how long a settlement is retried; 0 means
	// DefaultSettleMaxAge.
	MaxAge time.Duration
}

// settleKind says what a settlement is.
type settleKind uint8

const (
	// kindVoid settles an uncertain charge: it undoes the charge if it
	// landed and makes sure it never lands later.
	kindVoid settleKind = iota
	// kindRefund is a refund of a certain charge that the store failed.
	kindRefund
)

var kindNames = [...]string{kindVoid: "void", kindRefund: "refund"}

// settlement is one void or refund the middleware still owes the store.
type settlement struct {
	r       allowance.Receipt
	guarded bool // apply the rules' refund guards (asked for by the handler)
	kind    settleKind
	reason  string
	since   time.Time
}

// settler retries settlements until the store answers. Its goroutine runs
// only while there is work.
type settler struct {
	m       *Middleware
	max     int
	maxAge  time.Duration
	mu      sync.Mutex
	q       []*settlement // FIFO; q[0] is next
	running bool          // the goroutine runs
	closing bool          // Shutdown was called: new settlements are tried once, then abandoned
	wake    chan struct{} // a settlement was added
	stop    chan struct{} // closed when Shutdown's context ends
	idle    chan struct{} // closed by the goroutine when it exits with q empty, after Shutdown
}

func (s *settler) init(m *Middleware, cfg SettleConfig) {
	s.m, s.max, s.maxAge = m, cfg.MaxPending, cfg.MaxAge
	if s.max == 0 {
		s.max = DefaultSettleMaxPending
	}
	if s.maxAge == 0 {
		s.maxAge = DefaultSettleMaxAge
	}
	s.wake = make(chan struct{}, 1)
	s.stop = make(chan struct{})
	s.idle = make(chan struct{})
}

// add queues e, or abandons it when the queue is full or shut down. A void
// counts as pending from its check on (uncertain); a refund from here.
func (s *settler) add(e *settlement) {
	if e.kind == kindRefund {
		s.m.met.pendingInc(&e.r, kindRefund)
	}
	s.mu.Lock()
	switch {
	case len(s.q) >= s.max:
		s.mu.Unlock()
		s.m.abandon(e, "queue_full")
		return
	case s.stopped():
		s.mu.Unlock()
		s.m.abandon(e, "shutdown")
		return
	}
	s.q = append(s.q, e)
	if !s.running {
		s.running = true
		go s.run()
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *settler) stopped() bool {
	select {
	case <-s.stop:
		return true
	default:
		return false
	}
}

// run settles the queue in order until it is empty.
func (s *settler) run() {
	backoff := settleMinBackoff
	for {
		s.mu.Lock()
		if len(s.q) == 0 {
			s.running = false
			if s.closing {
				select {
				case <-s.idle:
				default:
					close(s.idle)
				}
			}
			s.mu.Unlock()
			return
		}
		e := s.q[0]
		s.mu.Unlock()

		if time.Since(e.since) > s.maxAge {
			s.pop()
			s.m.abandon(e, "too_old")
			continue
		}
		res, err := s.m.attempt(e)
		if err == nil {
			s.pop()
			backoff = settleMinBackoff
			s.m.settled(e, res)
			continue
		}
		s.m.met.obs.SettleRetry()
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-s.stop:
			t.Stop()
			s.abandonAll()
			return
		}
		backoff = min(2*backoff, settleMaxBackoff)
	}
}

func (s *settler) pop() {
	s.mu.Lock()
	s.q[0] = nil
	s.q = s.q[1:]
	s.mu.Unlock()
}

// abandonAll abandons what is left after Shutdown's context ended, then
// lets Shutdown return: every abandon is logged and counted by then.
func (s *settler) abandonAll() {
	s.mu.Lock()
	q := s.q
	s.q = nil
	s.running = false
	s.mu.Unlock()
	for _, e := range q {
		s.m.abandon(e, "shutdown")
	}
	s.mu.Lock()
	select {
	case <-s.idle:
	default:
		close(s.idle)
	}
	s.mu.Unlock()
}

// shutdown waits until the queue is empty or ctx ends; what is left then
// is abandoned.
func (s *settler) shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	if !s.running {
		select {
		case <-s.idle:
		default:
			close(s.idle)
		}
	}
	s.mu.Unlock()
	select {
	case <-s.idle:
		s.mu.Lock()
		select {
		case <-s.stop:
		default:
			close(s.stop)
		}
		s.mu.Unlock()
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	running := s.running
	s.mu.Unlock()
	if !running {
		s.abandonAll()
	}
	<-s.idle
	return ctx.Err()
}

// Pending returns the number of settlements (voids of uncertain charges and
// failed refunds) still waiting for the store.
func (m *Middleware) Pending() int {
	m.settle.mu.Lock()
	defer m.settle.mu.Unlock()
	return len(m.settle.q)
}

// Shutdown waits until every queued settlement (see SettleConfig) is made
// or ctx ends, and abandons (logs and counts) what is left then. Call it
// after the HTTP server's Shutdown, so that no request adds more: later
// settlements are abandoned at once. It returns ctx.Err() when settlements
// were abandoned for it.
func (m *Middleware) Shutdown(ctx context.Context) error {
	return m.settle.shutdown(ctx)
}

// attempt asks the store once for e, bounded by the store timeout, through
// the Limiter of the receipt's rules when their refund guards apply.
func (m *Middleware) attempt(e *settlement) (allowance.RefundResult, error) {
	lim, err := m.refunder(e)
	if err != nil {
		return allowance.RefundResult{}, err
	}
	start := time.Now()
	res, err := lim.Refund(m.storeCtx(context.Background(), nil), &e.r)
	m.met.storeCall("refund", start)
	return res, err
}

// settled counts and logs a settlement the store made.
func (m *Middleware) settled(e *settlement, res allowance.RefundResult) {
	m.met.pendingDec(&e.r, e.kind)
	if e.kind == kindVoid {
		m.met.voidDone(&e.r, voidLabel(res.Outcome()))
	}
	m.report(context.Background(), &e.r, e.reason, res, nil)
}

// abandon counts and logs a settlement given up: its charge may stay.
func (m *Middleware) abandon(e *settlement, why string) {
	m.met.pendingDec(&e.r, e.kind)
	if e.kind == kindVoid {
		m.met.voidDone(&e.r, settleAbandoned)
	} else {
		for i := range e.r.Len() {
			m.met.obs.Refund(e.r.Charge(i).Rule, settleAbandoned)
		}
	}
	m.log.LogAttrs(context.Background(), slog.LevelError, "rate limit "+kindNames[e.kind]+" abandoned: the charge may stay",
		slog.String("user", e.r.Identity),
		slog.Any("rules", ruleNames(&e.r)),
		slog.String("why", why),
		slog.String("reason", e.reason),
		slog.Duration("age", time.Since(e.since)),
		slog.String("receipt", e.r.ID.String()))
}

// Void outcomes, given to Observer.Settled.
const (
	settleVoided    = "voided"    // never landed, and now never can
	settleRefunded  = "refunded"  // landed, and was given back
	settleKept      = "kept"      // landed; the refund guard kept it
	settleEarlier   = "earlier"   // settled before, by an earlier attempt or another caller
	settleAbandoned = "abandoned" // given up: queue full, too old, or shutdown
	// The store refused the receipt: its keys do not verify it (a store
	// configured with other receipt keys). The charge, if it landed, stays.
	settleUnverified = "unverified"
)

var voidOutcomes = [...]string{settleVoided, settleRefunded, settleKept, settleEarlier, settleAbandoned, settleUnverified}

func voidLabel(o allowance.Outcome) string {
	switch o {
	case allowance.NotCharged:
		return settleVoided
	case allowance.Restored, allowance.WindowEnded:
		return settleRefunded
	case allowance.Declined:
		return settleKept
	case allowance.Unverified:
		return settleUnverified
	}
	return settleEarlier
}

func ruleNames(r *allowance.Receipt) []string {
	rules := r.Rules()
	out := make([]string, len(rules))
	for i, rule := range rules {
		out[i] = rule.Name
	}
	return out
}

// refunder returns the Limiter that refunds e: with the refund guards of
// the receipt's rules, that of the rule set that checks those rules (the
// Limiter that charged it, when this process did), else one without guards.
// A rule this middleware does not configure has no guard.
func (m *Middleware) refunder(e *settlement) (*allowance.Limiter, error) {
	if !e.guarded {
		return m.free, nil
	}
	var mask uint64
	for _, rule := range e.r.Rules() {
		if i, ok := m.index[rule.Name]; ok {
			mask |= 1 << i
		}
	}
	if mask == 0 {
		return m.free, nil
	}
	set, err := m.set(mask)
	if err != nil {
		return nil, err
	}
	return set.lim, nil
}
