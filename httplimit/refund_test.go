package httplimit

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/allowancehq/allowance"
	"github.com/prometheus/client_golang/prometheus"
)

// backend is a store under test and a way to take it down: after down,
// every store call fails.
type backend struct {
	store allowance.Store
	down  func()
	up    func() // the store answers again (Redis: restarted, empty)
}

type factory func(t *testing.T) backend

func memBackend(t *testing.T) backend {
	f := &failing{Store: newMemstore(t, newClock()), err: errDown}
	return backend{store: f, down: func() { f.set(true, true) }, up: func() { f.set(false, false) }}
}

// TestRefundsMemstore runs the refund scenarios over memstore; the
// Redis tests run the same scenarios over a real redis-server.
func TestRefundsMemstore(t *testing.T) { testRefunds(t, memBackend) }

// env is a middleware over one backend with its logs and metrics.
type env struct {
	backend
	m    *Middleware
	logs *logs
	reg  *prometheus.Registry
}

func newEnv(t *testing.T, f factory, rules ...Rule) *env {
	e := &env{backend: f(t), logs: &logs{}, reg: prometheus.NewRegistry()}
	e.m = mustNew(t, Config{Store: e.store, Rules: rules, Logger: e.logs.logger(), Observer: observe(t, e.reg), Timeout: 5 * time.Second})
	return e
}

func (e *env) refunds(t *testing.T, rule, outcome string) float64 {
	return counter(t, e.reg, "allowance_http_refunds_total", map[string]string{"rule": rule, "outcome": outcome})
}

func (e *env) used(t *testing.T, user string) int64 {
	t.Helper()
	u, err := e.m.Peek(t.Context(), user)
	if err != nil {
		t.Fatal(err)
	}
	return u[0].Used
}

// shutdown drains m's settlement queue, failing the test if it cannot
// within a bound far above what the test needs.
func shutdown(t *testing.T, m *Middleware) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := m.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v (%d settlements left)", err, m.Pending())
	}
}

func createTask(t *testing.T, refundOn ...int) Rule {
	r := rule(t, "create-task", "POST /v1/tasks", "5/day")
	r.RefundOn = refundOn
	return r
}

func testRefunds(t *testing.T, f factory) {
	// The motivating case, declaratively: the rule refunds 409, and the 409
	// response already shows the budget as it was before the request.
	t.Run("declarative 409", func(t *testing.T) {
		e := newEnv(t, f, createTask(t, http.StatusConflict))
		h := e.m.Handler(status(http.StatusConflict))
		for range 3 {
			w := do(h, "POST", "/v1/tasks", "alice")
			if w.Code != 409 || w.Header().Get("X-RateLimit-Remaining") != "5" || w.Header().Get("RateLimit")[:len(`"create-task";r=5;`)] != `"create-task";r=5;` {
				t.Fatalf("409: status %d, headers %v; want remaining 5", w.Code, w.Header())
			}
		}
		if u := e.used(t, "alice"); u != 0 {
			t.Fatalf("used %d after refunded 409s; want 0", u)
		}
		if n := e.refunds(t, "create-task", "restored"); n != 3 {
			t.Errorf("restored refunds %v; want 3", n)
		}
		// A status not in RefundOn is charged.
		w := do(e.m.Handler(status(http.StatusAccepted)), "POST", "/v1/tasks", "alice")
		if w.Header().Get("X-RateLimit-Remaining") != "4" || e.used(t, "alice") != 1 {
			t.Fatalf("202: remaining %q used %d; want 4 and 1", w.Header().Get("X-RateLimit-Remaining"), e.used(t, "alice"))
		}
		// A handler that only writes a body has status 200: not refunded here.
		hw := e.m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) }))
		if w := do(hw, "POST", "/v1/tasks", "alice"); w.Code != 200 || e.used(t, "alice") != 2 {
			t.Fatalf("body only: status %d used %d", w.Code, e.used(t, "alice"))
		}
	})

	// The motivating case, explicitly, as the original design's endpoint
	// does it: look at what was applied, refund, answer 409.
	t.Run("explicit refund", func(t *testing.T) {
		e := newEnv(t, f, createTask(t))
		var applied []Charge
		var results []allowance.RefundResult
		h := e.m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			applied = Applied(r.Context())
			for range 2 {
				res, err := Refund(r.Context(), "active task exists")
				if err != nil {
					t.Errorf("Refund: %v", err)
				}
				results = append(results, res)
			}
			w.WriteHeader(http.StatusConflict)
		}))
		w := do(h, "POST", "/v1/tasks", "alice")
		if w.Code != 409 || w.Header().Get("X-RateLimit-Remaining") != "5" {
			t.Fatalf("status %d remaining %q; want 409 and 5", w.Code, w.Header().Get("X-RateLimit-Remaining"))
		}
		want := []Charge{{UserID: "alice", Rule: "create-task", Limit: "5/day", Amount: 1}}
		if len(applied) != 1 || applied[0] != want[0] {
			t.Fatalf("Applied = %+v; want %+v", applied, want)
		}
		if results[0].Outcome() != allowance.Restored || results[1].Outcome() != allowance.AlreadyRefunded {
			t.Fatalf("outcomes %v, %v; want restored, already_refunded", results[0].Outcome(), results[1].Outcome())
		}
		if u := e.used(t, "alice"); u != 0 {
			t.Fatalf("used %d; want 0", u)
		}
		recs := e.logs.records(t, "rate limit refunded")
		if len(recs) != 2 {
			t.Fatalf("%d refund logs; want 2: %s", len(recs), e.logs.buf.String())
		}
		r := recs[0]
		for k, v := range map[string]any{"level": "DEBUG", "user": "alice", "rule": "create-task", "limit": "5/day", "amount": 1.0, "reason": "active task exists", "outcome": "restored"} {
			if r[k] != v {
				t.Errorf("log %s = %v; want %v", k, r[k], v)
			}
		}
		if id, _ := r["receipt"].(string); len(id) != 32 {
			t.Errorf("log receipt = %v; want a receipt id", r["receipt"])
		}
		if recs[1]["outcome"] != "already_refunded" || e.refunds(t, "create-task", "already_refunded") != 1 {
			t.Errorf("second refund: log %v, already_refunded count %v", recs[1], e.refunds(t, "create-task", "already_refunded"))
		}
	})

	// An explicit refund before a RefundOn status: the status adds nothing.
	t.Run("explicit and declarative", func(t *testing.T) {
		e := newEnv(t, f, createTask(t, http.StatusConflict))
		h := e.m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if _, err := Refund(r.Context(), "active task exists"); err != nil {
				t.Errorf("Refund: %v", err)
			}
			w.WriteHeader(http.StatusConflict)
		}))
		if w := do(h, "POST", "/v1/tasks", "alice"); w.Header().Get("X-RateLimit-Remaining") != "5" {
			t.Fatalf("remaining %q; want 5", w.Header().Get("X-RateLimit-Remaining"))
		}
		if r, d := e.refunds(t, "create-task", "restored"), e.refunds(t, "create-task", "already_refunded"); r != 1 || d != 0 {
			t.Fatalf("restored %v already_refunded %v; want 1 and 0", r, d)
		}
		if n := len(e.logs.records(t, "rate limit refunded")); n != 1 {
			t.Fatalf("%d refund logs; want 1", n)
		}
	})

	// Many goroutines refunding one request reach the store once.
	t.Run("concurrent refunds of one request", func(t *testing.T) {
		e := newEnv(t, f, createTask(t))
		h := e.m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var wg sync.WaitGroup
			for range 20 {
				wg.Go(func() {
					if _, err := Refund(r.Context(), "conflict"); err != nil {
						t.Errorf("Refund: %v", err)
					}
				})
			}
			wg.Wait()
			w.WriteHeader(http.StatusConflict)
		}))
		if w := do(h, "POST", "/v1/tasks", "alice"); w.Header().Get("X-RateLimit-Remaining") != "5" {
			t.Fatalf("remaining %q; want 5", w.Header().Get("X-RateLimit-Remaining"))
		}
		if r, d := e.refunds(t, "create-task", "restored"), e.refunds(t, "create-task", "already_refunded"); r != 1 || d != 19 {
			t.Fatalf("restored %v already_refunded %v; want 1 and 19", r, d)
		}
	})

	// Concurrent 409s of one user: every one is refunded, none is lost, and
	// the user ends with the whole budget.
	t.Run("concurrent 409s", func(t *testing.T) {
		e := newEnv(t, f, createTask(t, http.StatusConflict))
		h := e.m.Handler(status(http.StatusConflict))
		const n = 50
		codes := make([]int, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { codes[i] = do(h, "POST", "/v1/tasks", "alice").Code })
		}
		wg.Wait()
		conflicts := 0
		for _, c := range codes {
			switch c {
			case 409:
				conflicts++
			case 429:
			default:
				t.Fatalf("status %d; want 409 or 429", c)
			}
		}
		if conflicts < 5 {
			t.Errorf("%d of %d requests got through; want at least the budget of 5", conflicts, n)
		}
		if got := e.refunds(t, "create-task", "restored"); got != float64(conflicts) {
			t.Errorf("restored %v; want %d (one per 409)", got, conflicts)
		}
		if u := e.used(t, "alice"); u != 0 {
			t.Fatalf("used %d; want 0", u)
		}
	})

	// A refund that fails does not change the handler's response; it is
	// queued, logged once at WARN, and made when the store is back.
	t.Run("refund fails", func(t *testing.T) {
		e := newEnv(t, f, createTask(t, http.StatusConflict))
		var refundErr error
		h := e.m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			e.down()
			_, refundErr = Refund(r.Context(), "active task exists")
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusConflict)
			_, _ = w.Write([]byte(`{"status":409}`))
		}))
		w := do(h, "POST", "/v1/tasks", "alice")
		if w.Code != 409 || w.Body.String() != `{"status":409}` {
			t.Fatalf("status %d body %q; want the handler's 409", w.Code, w.Body)
		}
		if !errors.Is(refundErr, ErrRefundQueued) {
			t.Fatalf("Refund with the store down: %v; want ErrRefundQueued", refundErr)
		}
		if got := w.Header().Get("X-RateLimit-Remaining"); got != "4" {
			t.Errorf("remaining %q; want 4 (the refund is not made yet)", got)
		}
		// Explicit, then declarative on 409: one refund, queued once.
		recs := e.logs.records(t, "rate limit refund failed; queued for retry")
		if len(recs) != 1 {
			t.Fatalf("%d logs; want 1: %s", len(recs), e.logs.buf.String())
		}
		for k, v := range map[string]any{"level": "WARN", "user": "alice", "reason": "active task exists"} {
			if recs[0][k] != v {
				t.Errorf("log %s = %v; want %v", k, recs[0][k], v)
			}
		}
		if n := counter(t, e.reg, "allowance_http_pending", map[string]string{"rule": "create-task", "kind": "refund"}); n != 1 {
			t.Errorf("pending refunds %v; want 1", n)
		}
		e.up()
		shutdown(t, e.m)
		if e.refunds(t, "create-task", "restored")+e.refunds(t, "create-task", "window_ended") != 1 {
			t.Errorf("refund not made after the store came back: %s", e.logs.buf.String())
		}
		// A restarted Redis breaks the client's pooled connections: each
		// fails once before the client dials anew.
		var used int64
		waitFor(t, "a peek after the store came back", func() bool {
			u, err := e.m.Peek(t.Context(), "alice")
			if err == nil {
				used = u[0].Used
			}
			return err == nil
		})
		if used != 0 {
			t.Errorf("used %d after the queued refund; want 0", used)
		}
		if n := counter(t, e.reg, "allowance_http_pending", map[string]string{"rule": "create-task", "kind": "refund"}); n != 0 {
			t.Errorf("pending refunds %v after Shutdown; want 0", n)
		}
		if len(e.logs.records(t, "rate limit refund abandoned: the charge may stay")) != 0 {
			t.Errorf("abandoned: %s", e.logs.buf.String())
		}
	})

	t.Run("fail open", func(t *testing.T) {
		r := createTask(t, http.StatusConflict)
		r.FailOpen = true
		e := newEnv(t, f, r)
		e.down()
		var refundErr error
		h := e.m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, refundErr = Refund(r.Context(), "conflict")
			w.WriteHeader(http.StatusConflict)
		}))
		w := do(h, "POST", "/v1/tasks", "alice")
		if w.Code != 409 || w.Header().Get("RateLimit") != "" {
			t.Fatalf("status %d RateLimit %q; want the handler's 409 without rate-limit headers", w.Code, w.Header().Get("RateLimit"))
		}
		if counter(t, e.reg, "allowance_http_checks_total", map[string]string{"outcome": "error_open"}) != 1 {
			t.Error("error_open not counted")
		}
		// Nothing was charged (unless the store's answer was lost: then the
		// refund voids it and fails too, as the store is down).
		if refundErr == nil {
			t.Error("Refund after a failed check: no error")
		}
	})

	t.Run("fail closed", func(t *testing.T) {
		e := newEnv(t, f, createTask(t))
		e.down()
		called := false
		w := do(e.m.Handler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { called = true })), "POST", "/v1/tasks", "alice")
		if w.Code != 503 || called || w.Header().Get("Content-Type") != "application/problem+json" {
			t.Fatalf("status %d, handler called %v; want 503 problem without calling the handler", w.Code, called)
		}
		if len(e.logs.records(t, "rate limit store failed; answering 503 (fail closed)")) != 1 {
			t.Errorf("not logged: %s", e.logs.buf.String())
		}
	})

	// A task carries its receipt; when its worker fails, another process
	// refunds it later.
	t.Run("refund receipt later", func(t *testing.T) {
		e := newEnv(t, f, createTask(t))
		var saved []byte
		h := e.m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rc, ok := ReceiptFrom(r.Context())
			if !ok {
				t.Error("no receipt")
				return
			}
			saved, _ = rc.MarshalBinary()
			w.WriteHeader(http.StatusAccepted)
		}))
		do(h, "POST", "/v1/tasks", "alice")
		var rc allowance.Receipt
		if err := rc.UnmarshalBinary(saved); err != nil {
			t.Fatal(err)
		}
		res, err := e.m.RefundReceipt(context.Background(), &rc, "worker failed")
		if err != nil || res.Outcome() != allowance.Restored {
			t.Fatalf("RefundReceipt: %v, %v; want restored", res.Outcome(), err)
		}
		res, err = e.m.RefundReceipt(context.Background(), &rc, "worker failed")
		if err != nil || res.Outcome() != allowance.AlreadyRefunded {
			t.Fatalf("second RefundReceipt: %v, %v; want already refunded", res.Outcome(), err)
		}
		if e.used(t, "alice") != 0 {
			t.Fatalf("used %d", e.used(t, "alice"))
		}
	})

	// The refund guard bounds refunds per user; past it, a refund is
	// declined and logged at WARN.
	t.Run("refund guard", func(t *testing.T) {
		r := createTask(t, http.StatusConflict)
		r.RefundGuard = allowance.Limit{Count: 2, Period: 24 * time.Hour}
		e := newEnv(t, f, r)
		h := e.m.Handler(status(http.StatusConflict))
		var remaining []string
		for range 3 {
			remaining = append(remaining, do(h, "POST", "/v1/tasks", "alice").Header().Get("X-RateLimit-Remaining"))
		}
		if remaining[0] != "5" || remaining[1] != "5" || remaining[2] != "4" {
			t.Fatalf("remaining %q; want 5, 5, 4", remaining)
		}
		recs := e.logs.records(t, "rate limit refund declined: the rule's refund guard is exhausted")
		if len(recs) != 1 || recs[0]["level"] != "WARN" || e.refunds(t, "create-task", "declined") != 1 {
			t.Fatalf("declined: logs %v count %v", recs, e.refunds(t, "create-task", "declined"))
		}
	})
}

// Refund with nothing applied reports ErrNotApplied and logs a warning.
func TestRefundNothingApplied(t *testing.T) {
	_, err := Refund(context.Background(), "conflict")
	if !errors.Is(err, ErrNotApplied) {
		t.Fatalf("Refund without middleware: %v; want ErrNotApplied", err)
	}
	st := &failing{Store: newMemstore(t, newClock()), err: errDown}
	st.set(true, false)
	var l logs
	r := rule(t, "r", "/", "5/minute")
	r.FailOpen = true
	m := mustNew(t, Config{Store: st, Rules: []Rule{r}, Logger: l.logger()})
	do(m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := Refund(r.Context(), "conflict"); !errors.Is(err, ErrNotApplied) {
			t.Errorf("Refund after fail-open: %v; want ErrNotApplied", err)
		}
		if _, ok := ReceiptFrom(r.Context()); ok {
			t.Error("ReceiptFrom after fail-open: ok")
		}
	})), "GET", "/", "alice")
	recs := l.records(t, "rate limit refund asked for, but no limit was applied to the request")
	if len(recs) != 1 || recs[0]["level"] != "WARN" || recs[0]["reason"] != "conflict" {
		t.Fatalf("logs: %s", l.buf.String())
	}
}

// A refund from a goroutine that outlives its request does not touch the
// finished response's headers (the race detector watches).
func TestRefundAfterHandlerReturned(t *testing.T) {
	m := mustNew(t, Config{Store: newMemstore(t, newClock()), Rules: []Rule{rule(t, "r", "/", "5/minute")}, Logger: (&logs{}).logger()})
	done := make(chan allowance.RefundResult)
	release := make(chan struct{})
	h := m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		go func() {
			<-release
			res, _ := Refund(ctx, "worker gave up")
			done <- res
		}()
	}))
	w := do(h, "GET", "/", "alice")
	close(release)
	_ = w.Header().Get("X-RateLimit-Remaining")
	if res := <-done; res.Outcome() != allowance.Restored {
		t.Fatalf("late refund: %v", res.Outcome())
	}
	if got := w.Header().Get("X-RateLimit-Remaining"); got != "4" {
		t.Fatalf("remaining %q after the response; want 4 (untouched)", got)
	}
}

// A refund rewrites every limit's item in RateLimit and picks the most
// restrictive limit anew.
func TestRefundRewritesHeaders(t *testing.T) {
	c := newClock()
	m := mustNew(t, Config{Store: newMemstore(t, c), Rules: []Rule{
		{Rule: rule(t, "create-task", "POST /v1/tasks", "2/minute; 50/day").Rule, Match: "POST /v1/tasks", RefundOn: []int{409}},
		rule(t, "all", "/", "100/hour"),
	}})
	do(m.Handler(status(202)), "POST", "/v1/tasks", "alice") // create-task/60s has 1 left
	w := do(m.Handler(status(409)), "POST", "/v1/tasks", "alice")
	want := `"create-task/60s";r=1;t=60, "create-task/86400s";r=49;t=43200, "all";r=99;t=3600`
	if got := w.Header().Get("RateLimit"); got != want {
		t.Errorf("RateLimit = %q; want %q", got, want)
	}
	if got := w.Header().Get("X-RateLimit-Limit") + " " + w.Header().Get("X-RateLimit-Remaining"); got != "2 1" {
		t.Errorf("X-RateLimit-Limit and -Remaining = %q; want 2 1", got)
	}
}

// A refund after the charged window ended gives nothing back and says so.
func TestRefundWindowEnded(t *testing.T) {
	c := newClock()
	reg := prometheus.NewRegistry()
	m := mustNew(t, Config{Store: newMemstore(t, c), Observer: observe(t, reg), Rules: []Rule{rule(t, "r", "/", "5/minute")}, Logger: (&logs{}).logger()})
	var out allowance.RefundResult
	do(m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.Advance(time.Minute)
		out, _ = Refund(r.Context(), "too late")
	})), "GET", "/", "alice")
	if out.Outcome() != allowance.WindowEnded || counter(t, reg, "allowance_http_refunds_total", map[string]string{"outcome": "window_ended"}) != 1 {
		t.Fatalf("outcome %v; want window_ended, counted", out.Outcome())
	}
}
