// Package promlimit records what the httplimit middleware measures as
// Prometheus metrics. It is the only part of the library that imports the
// Prometheus client: a program that does not use it does not build it.
//
//	obs, err := promlimit.New(registry)
//	if err != nil { ... }
//	mw, err := httplimit.New(httplimit.Config{..., Observer: obs})
//
// The metrics, all labelled by rule unless said otherwise:
//
//   - allowance_http_checks_total{rule,outcome}: checks, by outcome
//     (allowed, denied, error_open, error_closed);
//   - allowance_http_refunds_total{rule,outcome}: refunded charges, by
//     outcome (restored, window_ended, already_refunded, declined, not_charged,
//     failed, abandoned);
//   - allowance_http_store_duration_seconds{op}: latency of the store
//     calls, by operation (check, refund, peek);
//   - allowance_http_uncertain_total{rule}: checks whose charge may or may
//     not have landed;
//   - allowance_http_uncertain_settled_total{rule,outcome}: how those were
//     settled (voided, refunded, kept, earlier, abandoned, unverified);
//   - allowance_http_pending{rule,kind}: settlements not yet made (void,
//     refund);
//   - allowance_http_settle_retries_total: failed store calls of the
//     settlement queue.
package promlimit

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Observer records the middleware's measurements in Prometheus collectors.
// It implements httplimit.Observer and is safe for concurrent use.
type Observer struct {
	checks    *prometheus.CounterVec
	refunds   *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	uncertain *prometheus.CounterVec
	settled   *prometheus.CounterVec
	pending   *prometheus.GaugeVec
	retries   prometheus.Counter

	checkLatency prometheus.Observer // latency{op="check"}, the hot one
}

// New returns an Observer whose collectors are registered on reg; a nil reg
// leaves them unregistered. Several Observers (and so several Middlewares)
// may share one registry: they then count into the same series.
func New(reg prometheus.Registerer) (*Observer, error) {
	o := &Observer{
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "allowance_http_checks_total",
			Help: "Rate-limit checks of HTTP requests, by rule and outcome (allowed, denied, error_open, error_closed).",
		}, []string{"rule", "outcome"}),
		refunds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "allowance_http_refunds_total",
			Help: "Refunded charges, by rule and outcome (restored, window_ended, already_refunded, declined, not_charged; failed: RefundReceipt's store call failed, the caller retries; abandoned: a queued refund was given up).",
		}, []string{"rule", "outcome"}),
		uncertain: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "allowance_http_uncertain_total",
			Help: "Checks whose charge may or may not have landed (the store failed or timed out after the request was sent), by rule. Each is settled once: uncertain_total = sum of uncertain_settled_total + pending{kind=\"void\"}.",
		}, []string{"rule"}),
		settled: prometheus.NewCounterVec(prometheus.CounterOpts{
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
	if reg != nil {
		var err error
		if o.checks, err = register(reg, o.checks); err != nil {
			return nil, err
		}
		if o.refunds, err = register(reg, o.refunds); err != nil {
			return nil, err
		}
		if o.latency, err = register(reg, o.latency); err != nil {
			return nil, err
		}
		if o.uncertain, err = register(reg, o.uncertain); err != nil {
			return nil, err
		}
		if o.settled, err = register(reg, o.settled); err != nil {
			return nil, err
		}
		if o.pending, err = register(reg, o.pending); err != nil {
			return nil, err
		}
		if o.retries, err = register(reg, o.retries); err != nil {
			return nil, err
		}
	}
	o.checkLatency = o.latency.WithLabelValues("check")
	return o, nil
}

// register registers c on reg; when an identical collector is already
// registered (a second Observer on the same registry) it returns that one,
// so both count into the same series.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if old, ok := are.ExistingCollector.(C); ok {
				return old, nil
			}
		}
		return c, fmt.Errorf("promlimit: register metrics: %w", err)
	}
	return c, nil
}

// Checks returns the counter of rule's checks with outcome.
func (o *Observer) Checks(rule, outcome string) func() {
	return o.checks.WithLabelValues(rule, outcome).Inc
}

// Refund counts a charge of rule refunded with outcome.
func (o *Observer) Refund(rule, outcome string) {
	o.refunds.WithLabelValues(rule, outcome).Inc()
}

// StoreCall observes the latency of a store call: op is check, refund or
// peek.
func (o *Observer) StoreCall(op string, d time.Duration) {
	if op == "check" {
		o.checkLatency.Observe(d.Seconds())
		return
	}
	o.latency.WithLabelValues(op).Observe(d.Seconds())
}

// Uncertain counts a check of rule whose charge may have landed.
func (o *Observer) Uncertain(rule string) {
	o.uncertain.WithLabelValues(rule).Inc()
}

// Settled counts an uncertain charge of rule settled with outcome.
func (o *Observer) Settled(rule, outcome string) {
	o.settled.WithLabelValues(rule, outcome).Inc()
}

// Pending adds delta to the settlements of rule and kind not yet made.
func (o *Observer) Pending(rule, kind string, delta int) {
	o.pending.WithLabelValues(rule, kind).Add(float64(delta))
}

// SettleRetry counts a failed store call of the settlement queue.
func (o *Observer) SettleRetry() {
	o.retries.Inc()
}
