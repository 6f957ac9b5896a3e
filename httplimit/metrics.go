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
	checks  *prometheus.CounterVec
	refunds *prometheus.CounterVec
	latency *prometheus.HistogramVec
	timed   bool // observe store latency (only when registered)

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
			Help: "Refunded charges, by rule and outcome (restored, window_ended, duplicate, declined, not_charged, failed).",
		}, []string{"rule", "outcome"}),
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
