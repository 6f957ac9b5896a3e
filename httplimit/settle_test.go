package httplimit

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// settleEnv is a middleware over a memstore whose checks can be made
// uncertain (the reply lost) and whose calls can fail.
type settleEnv struct {
	f    *failing
	m    *Middleware
	reg  *prometheus.Registry
	logs *logs
}

func newSettleEnv(t *testing.T, failOpen bool, cfg SettleConfig) *settleEnv {
	e := &settleEnv{f: &failing{Store: newMemstore(t, newClock()), err: errDown, uncertain: true}, reg: prometheus.NewRegistry(), logs: &logs{}}
	r := rule(t, "submit", "/", "5/day")
	r.FailOpen = failOpen
	e.m = mustNew(t, Config{Store: e.f, Rules: []Rule{r}, Logger: e.logs.logger(), Observer: observe(t, e.reg), Timeout: time.Second, Settle: cfg})
	return e
}

func (e *settleEnv) count(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	return counter(t, e.reg, name, labels)
}

// invariant checks uncertain = settled + pending for rule submit.
func (e *settleEnv) invariant(t *testing.T) (uncertain, pending float64, settled map[string]float64) {
	t.Helper()
	uncertain = e.count(t, "allowance_http_uncertain_total", map[string]string{"rule": "submit"})
	pending = e.count(t, "allowance_http_pending", map[string]string{"rule": "submit", "kind": "void"})
	settled = map[string]float64{}
	var sum float64
	for _, o := range voidOutcomes {
		n := e.count(t, "allowance_http_uncertain_settled_total", map[string]string{"rule": "submit", "outcome": o})
		sum += n
		if n > 0 {
			settled[o] = n
		}
	}
	if sum+pending != uncertain {
		t.Errorf("uncertain %v != settled %v + pending %v", uncertain, settled, pending)
	}
	return
}

// Every kind of request whose check was uncertain is settled by a void: a
// 503, a request served unlimited, a 409 the handler refunds, a status in
// RefundOn, a client that hung up, and a handler that panicked.
func TestUncertainChargesAreVoided(t *testing.T) {
	e := newSettleEnv(t, true, SettleConfig{})
	e.f.set(true, false)
	h := e.m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(Applied(r.Context())) != 1 || !Applied(r.Context())[0].Uncertain {
			t.Errorf("Applied = %+v; want one uncertain charge", Applied(r.Context()))
		}
		if rc, ok := ReceiptFrom(r.Context()); !ok || !rc.Uncertain() {
			t.Errorf("ReceiptFrom = %v, %v; want the uncertain receipt", rc, ok)
		}
		switch r.URL.Path {
		case "/conflict":
			if _, err := Refund(r.Context(), "conflict"); !errors.Is(err, ErrRefundQueued) {
				t.Errorf("Refund of an uncertain charge: %v; want ErrRefundQueued", err)
			}
			w.WriteHeader(http.StatusConflict)
		case "/panic":
			panic(http.ErrAbortHandler)
		}
	}))
	for _, path := range []string{"/served", "/conflict", "/panic"} {
		func() {
			defer func() { _ = recover() }()
			do(h, "POST", path, "alice")
		}()
	}
	// A client that hung up before the check failed.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := newRequest("POST", "/gone", "alice").WithContext(ctx)
	h.ServeHTTP(discard{}, r)

	shutdown(t, e.m)
	uncertain, pending, settled := e.invariant(t)
	if uncertain != 4 || pending != 0 || settled[settleVoided] != 4 {
		t.Errorf("uncertain %v, pending %v, settled %v; want 4 voided", uncertain, pending, settled)
	}
}

// Fail closed: the 503's uncertain charge is voided once the store is back.
func TestUncertainChargeVoidedAfterOutage(t *testing.T) {
	e := newSettleEnv(t, false, SettleConfig{})
	e.f.set(true, true)
	if w := do(e.m.Handler(status(http.StatusOK)), "POST", "/", "alice"); w.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d; want 503", w.Code)
	}
	waitFor(t, "a failed void attempt", func() bool {
		return e.count(t, "allowance_http_settle_retries_total", nil) >= 1
	})
	if _, pending, _ := e.invariant(t); pending != 1 {
		t.Errorf("pending %v while the store is down; want 1", pending)
	}
	e.f.set(false, false)
	shutdown(t, e.m)
	if _, pending, settled := e.invariant(t); pending != 0 || settled[settleVoided] != 1 {
		t.Errorf("pending %v, settled %v; want 1 voided", pending, settled)
	}
	if n := len(e.logs.records(t, "rate limit void abandoned: the charge may stay")); n != 0 {
		t.Errorf("%d abandoned", n)
	}
}

// The queue's bounds: a full queue, an old settlement and a shutdown that
// runs out of time each abandon, log once at ERROR with the identity and
// rules, and count.
func TestSettleAbandons(t *testing.T) {
	t.Run("queue full", func(t *testing.T) {
		e := newSettleEnv(t, false, SettleConfig{MaxPending: 1})
		e.f.set(true, true)
		h := e.m.Handler(status(http.StatusOK))
		do(h, "POST", "/", "alice")
		do(h, "POST", "/", "alice")
		recs := e.logs.records(t, "rate limit void abandoned: the charge may stay")
		if len(recs) != 1 || recs[0]["why"] != "queue_full" || recs[0]["user"] != "alice" || recs[0]["level"] != "ERROR" {
			t.Fatalf("abandon logs %v; want one for alice, queue_full", recs)
		}
		e.f.set(false, false)
		shutdown(t, e.m)
		_, _, settled := e.invariant(t)
		if settled[settleAbandoned] != 1 || settled[settleVoided] != 1 {
			t.Errorf("settled %v; want 1 abandoned, 1 voided", settled)
		}
	})
	t.Run("too old", func(t *testing.T) {
		e := newSettleEnv(t, false, SettleConfig{MaxAge: time.Nanosecond})
		e.f.set(true, false)
		do(e.m.Handler(status(http.StatusOK)), "POST", "/", "alice")
		shutdown(t, e.m)
		recs := e.logs.records(t, "rate limit void abandoned: the charge may stay")
		if len(recs) != 1 || recs[0]["why"] != "too_old" {
			t.Fatalf("abandon logs %v; want one, too_old", recs)
		}
		if _, _, settled := e.invariant(t); settled[settleAbandoned] != 1 {
			t.Errorf("settled %v; want 1 abandoned", settled)
		}
	})
	t.Run("shutdown", func(t *testing.T) {
		e := newSettleEnv(t, false, SettleConfig{})
		e.f.set(true, true)
		h := e.m.Handler(status(http.StatusOK))
		for range 3 {
			do(h, "POST", "/", "alice")
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := e.m.Shutdown(ctx); !errors.Is(err, context.Canceled) {
			t.Fatalf("Shutdown with the store down and no time: %v; want context.Canceled", err)
		}
		if n := len(e.logs.records(t, "rate limit void abandoned: the charge may stay")); n != 3 {
			t.Errorf("%d abandon logs; want 3", n)
		}
		if _, pending, settled := e.invariant(t); pending != 0 || settled[settleAbandoned] != 3 {
			t.Errorf("pending %v, settled %v; want 3 abandoned", pending, settled)
		}
		// After Shutdown, nothing is queued any more.
		do(h, "POST", "/", "alice")
		if e.m.Pending() != 0 {
			t.Errorf("pending %d after Shutdown", e.m.Pending())
		}
		if _, _, settled := e.invariant(t); settled[settleAbandoned] != 4 {
			t.Errorf("settled %v; want 4 abandoned", settled)
		}
	})
}

type discard struct{}

func (discard) Header() http.Header         { return http.Header{} }
func (discard) Write(b []byte) (int, error) { return len(b), nil }
func (discard) WriteHeader(int)             {}
