package httplimit

import (
	"time"

	"github.com/allowancehq/allowance"
)

// Check outcomes, given to Observer.Checks.
const (
	outcomeAllowed     = "allowed"
	outcomeDenied      = "denied"
	outcomeErrorOpen   = "error_open"   // store failed, request served
	outcomeErrorClosed = "error_closed" // store failed, 503
)

var checkOutcomes = [...]string{outcomeAllowed, outcomeDenied, outcomeErrorOpen, outcomeErrorClosed}

const (
	ckAllowed = iota
	ckDenied
	ckErrorOpen
	ckErrorClosed
)

// Refund outcomes, given to Observer.Refund.
const (
	refundRestored        = "restored"
	refundWindowEnded     = "window_ended"
	refundAlreadyRefunded = "already_refunded"
	refundDeclined        = "declined"
	refundNotCharged      = "not_charged"
	refundFailed          = "failed"
)

// refundLabel maps a store outcome to its metric and log name.
func refundLabel(o allowance.Outcome) string {
	switch o {
	case allowance.Restored:
		return refundRestored
	case allowance.WindowEnded:
		return refundWindowEnded
	case allowance.AlreadyRefunded:
		return refundAlreadyRefunded
	case allowance.Declined:
		return refundDeclined
	case allowance.NotCharged:
		return refundNotCharged
	}
	return o.String()
}

// Observer receives what the middleware measures: checks, refunds, the
// latency of store calls and the settlement of uncertain charges. Set one
// in Config.Observer; package promlimit records them as Prometheus metrics
// (and documents their names). Its methods are called concurrently, and on
// the request path: they must be quick.
type Observer interface {
	// Checks returns what counts the checks of rule with outcome (allowed,
	// denied, error_open, error_closed). It is asked once per rule and
	// outcome for each set of rules that match a request together, and
	// what it returns is called once per check.
	Checks(rule, outcome string) func()
	// Refund counts a charge of rule refunded with outcome (restored,
	// window_ended, already_refunded, declined, not_charged, failed, abandoned).
	Refund(rule, outcome string)
	// StoreCall reports how long a store call took; op is check, refund
	// or peek.
	StoreCall(op string, d time.Duration)
	// Uncertain counts a check of rule whose charge may or may not have
	// landed. Each is later settled once.
	Uncertain(rule string)
	// Settled counts how an uncertain charge of rule was settled: voided,
	// refunded, kept, earlier, abandoned or unverified.
	Settled(rule, outcome string)
	// Pending adds delta (1 or -1) to the settlements of rule not yet
	// made, of kind void (uncertain charges, from their check on) or
	// refund (refunds the store failed, queued for retry).
	Pending(rule, kind string, delta int)
	// SettleRetry counts a failed store call of the settlement queue,
	// which is followed by a backoff and a retry.
	SettleRetry()
}

// noObserver is the Observer of a Config without one.
type noObserver struct{}

func nop() {}

func (noObserver) Checks(string, string) func()    { return nop }
func (noObserver) Refund(string, string)           {}
func (noObserver) StoreCall(string, time.Duration) {}
func (noObserver) Uncertain(string)                {}
func (noObserver) Settled(string, string)          {}
func (noObserver) Pending(string, string, int)     {}
func (noObserver) SettleRetry()                    {}

// metrics is the middleware's Observer with what it counts per receipt.
type metrics struct {
	obs   Observer
	timed bool // observe store latency (only when there is an Observer)
}

func newMetrics(obs Observer) *metrics {
	if obs == nil {
		return &metrics{obs: noObserver{}}
	}
	return &metrics{obs: obs, timed: true}
}

// storeCall reports the latency of a store call that started at start.
func (m *metrics) storeCall(op string, start time.Time) {
	if m.timed {
		m.obs.StoreCall(op, time.Since(start))
	}
}

// uncertainCharge counts a check whose charge may have landed: it is
// pending as a void until settled.
func (m *metrics) uncertainCharge(r *allowance.Receipt) {
	for _, rule := range r.Rules() {
		m.obs.Uncertain(rule.Name)
	}
	m.pendingInc(r, kindVoid)
}

func (m *metrics) pendingInc(r *allowance.Receipt, k settleKind) {
	for _, rule := range r.Rules() {
		m.obs.Pending(rule.Name, kindNames[k], 1)
	}
}

func (m *metrics) pendingDec(r *allowance.Receipt, k settleKind) {
	for _, rule := range r.Rules() {
		m.obs.Pending(rule.Name, kindNames[k], -1)
	}
}

// voidDone counts how an uncertain charge was settled.
func (m *metrics) voidDone(r *allowance.Receipt, outcome string) {
	for _, rule := range r.Rules() {
		m.obs.Settled(rule.Name, outcome)
	}
}
