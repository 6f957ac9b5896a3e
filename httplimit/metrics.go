package httplimit

import (
	"errors"
	"fmt"

	"github.com/allowancehq/allowance"
	"github.com/prometheus/client_golang/prometheus"
)

// Check outcomes, the "outcome" label of allowance_http_checks_total.
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

// Refund outcomes, the "outcome" label of allowance_http_refunds_total.
const (
	refundRestored    = "restored"
	refundWindowEnded = "window_ended"
	refundDuplicate   = "duplicate"
	refundDeclined    = "declined"
	refundNotCharged  = "not_charged"
	refundFailed      = "failed"
)

// refundLabel maps a store outcome to its metric and log name.
func refundLabel(o allowance.Outcome) string {
	switch o {
	case allowance.Restored:
		return refundRestored
	case allowance.WindowEnded:
		return refundWindowEnded
	case allowance.AlreadyRefunded:
		return refundDuplicate
	case allowance.Declined:
		return refundDeclined
	case allowance.NotCharged:
		return refundNotCharged
	}
	return o.String()
}

// metrics are the middleware's Prometheus collectors. They exist (and are
// counted) whether or not they are registered.
type metrics struct {
	checks    *prometheus.CounterVec
	refunds   *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	uncertain *prometheus.CounterVec
	voids     *prometheus.CounterVec
	pending   *prometheus.GaugeVec
	retries   prometheus.Counter
	timed     bool // observe store latency (only when registered)

	checkLatency prometheus.Observer
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "allowance_http_checks_total",
			Help: "Rate-limit checks of HTTP requests, by rule and outcome (allowed, denied, error_open, error_closed).",
		}, []string{"rule", "outcome"}),
		refunds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "allowance_http_refunds_total",
			Help: "Refunded charges, by rule and outcome (restored, window_ended, duplicate, declined, not_charged; failed: RefundReceipt's store call failed, the caller retries; abandoned: a queued refund was given up).",
		}, []string{"rule", "outcome"}),
		uncertain: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "allowance_http_uncertain_total",
			Help: "Checks whose charge may or may not have landed (the store failed or timed out after the request was sent), by rule. Each is settled once: uncertain_total = sum of uncertain_settled_total + pending{kind=\"void\"}.",
		}, []string{"rule"}),
		voids: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "allowance_http_uncertain_settled_total",
			Help: "Uncertain charges settled, by rule and outcome: voided (never landed, and now never can), refunded (landed and given back), kept (landed; the refund guard kept it), earlier (settled by an earlier attempt or another caller), abandoned (queue full, too old, or shutdown: may stay charged), unverified (the store's receipt keys refused it: may stay charged).",
		}, []string{"rule", "outcome"}),
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "allowance_http_pending",
			Help: "Settlements not yet made, by rule and kind: void (uncertain charges, from their check on) and refund (refunds the store failed, queued for retry).",
		}, []string{"rule", "kind"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "allowance_http_settle_retries_total",
			Help: "Failed store calls of the settlement queue, each followed by a backoff and a retry.",
		}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "allowance_http_store_duration_seconds",
			Help:    "Latency of rate-limit store calls made by the HTTP middleware, by operation (check, refund, peek).",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}, []string{"op"}),
	}
	m.checkLatency = m.latency.WithLabelValues("check")
	if reg == nil {
		return m, nil
	}
	var err error
	if m.checks, err = register(reg, m.checks); err != nil {
		return nil, err
	}
	if m.refunds, err = register(reg, m.refunds); err != nil {
		return nil, err
	}
	if m.latency, err = register(reg, m.latency); err != nil {
		return nil, err
	}
	if m.uncertain, err = register(reg, m.uncertain); err != nil {
		return nil, err
	}
	if m.voids, err = register(reg, m.voids); err != nil {
		return nil, err
	}
	if m.pending, err = register(reg, m.pending); err != nil {
		return nil, err
	}
	if m.retries, err = register(reg, m.retries); err != nil {
		return nil, err
	}
	m.checkLatency = m.latency.WithLabelValues("check")
	m.timed = true
	return m, nil
}

// register registers c on reg; when an identical collector is already
// registered (a second Middleware on the same registry) it returns that one,
// so both count into the same series.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if old, ok := are.ExistingCollector.(C); ok {
				return old, nil
			}
		}
		return c, fmt.Errorf("register metrics: %w", err)
	}
	return c, nil
}

// uncertainCharge counts a check whose charge may have landed: it is
// pending as a void until settled.
func (m *metrics) uncertainCharge(r *allowance.Receipt) {
	for _, rule := range r.Rules() {
		m.uncertain.WithLabelValues(rule.Name).Inc()
	}
	m.pendingInc(r, kindVoid)
}

func (m *metrics) pendingInc(r *allowance.Receipt, k settleKind) {
	for _, rule := range r.Rules() {
		m.pending.WithLabelValues(rule.Name, kindNames[k]).Inc()
	}
}

func (m *metrics) pendingDec(r *allowance.Receipt, k settleKind) {
	for _, rule := range r.Rules() {
		m.pending.WithLabelValues(rule.Name, kindNames[k]).Dec()
	}
}

// voidDone counts how an uncertain charge was settled.
func (m *metrics) voidDone(r *allowance.Receipt, outcome string) {
	for _, rule := range r.Rules() {
		m.voids.WithLabelValues(rule.Name, outcome).Inc()
	}
}
