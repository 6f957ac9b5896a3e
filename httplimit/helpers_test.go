package httplimit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/allowancehq/allowance"
	"github.com/allowancehq/allowance/httplimit/promlimit"
	"github.com/allowancehq/allowance/memstore"
	"github.com/allowancehq/allowance/storetest"
	"github.com/prometheus/client_golang/prometheus"
)

// clock is the library's one fake clock for tests.
type clock = storetest.Clock

func newClock() *clock { return storetest.NewClock(time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)) }

// testKeys sign the receipts of the tests' memstores and of failing's
// uncertain charges, as a store would sign its own.
var testKeys = allowance.RandomReceiptKeys()

func newMemstore(t testing.TB, c *clock) *memstore.Store {
	s := memstore.New(memstore.WithClock(c.Now), memstore.WithSweepInterval(0), memstore.WithReceiptKeys(testKeys))
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// logs collects JSON log lines.
type logs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logs) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// records returns the log records with message msg.
func (l *logs) records(t testing.TB, msg string) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for line := range strings.SplitSeq(strings.TrimSpace(l.buf.String()), "\n") {
		if line == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// rule builds a Rule from a name, a pattern and limits.
func rule(t testing.TB, name, match, limits string) Rule {
	t.Helper()
	ls, err := allowance.ParseLimits(limits)
	if err != nil {
		t.Fatal(err)
	}
	return Rule{Rule: allowance.Rule{Name: name, Limits: ls}, Match: match}
}

func mustNew(t testing.TB, cfg Config) *Middleware {
	t.Helper()
	if cfg.Key == nil {
		cfg.Key = FromHeader("X-User")
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// do sends one request as user through h.
func do(h http.Handler, method, target, user string) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, newRequest(method, target, user))
	return w
}

// newRequest is a request as user (header X-User).
func newRequest(method, target, user string) *http.Request {
	r := httptest.NewRequest(method, target, nil)
	if user != "" {
		r.Header.Set("X-User", user)
	}
	return r
}

func status(code int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(code)
	})
}

// counter returns the value of a counter series of reg.
func counter(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue metric
				}
			}
			if g := m.GetGauge(); g != nil {
				return g.GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// failing is a Store whose calls fail with err when its switch is on, and
// otherwise go to the wrapped store. For unit tests of the failure paths;
// the integration tests stop a real Redis instead.
type failing struct {
	allowance.Store
	mu                 sync.Mutex
	charge, refund     bool
	uncertain          bool // a failed charge is uncertain
	err                error
	blockUntilCanceled bool
}

func (f *failing) set(charge, refund bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.charge, f.refund = charge, refund
}

func (f *failing) Charge(ctx context.Context, req allowance.Request, d *allowance.Decision) error {
	f.mu.Lock()
	fail, block := f.charge, f.blockUntilCanceled
	f.mu.Unlock()
	if block {
		<-ctx.Done()
		d.Reset(req)
		return ctx.Err()
	}
	if fail {
		d.Reset(req)
		if f.uncertain {
			// The reply was lost: the charge was not applied (memstore
			// voids such an id), but the caller cannot know.
			if req.ID.IsZero() {
				req.ID = allowance.NewReceiptID()
			}
			d.Receipt = allowance.UncertainReceipt(req)
			testKeys.Sign(&d.Receipt)
			return fmt.Errorf("%w: %w", allowance.ErrUncertain, f.err)
		}
		return f.err
	}
	return f.Store.Charge(ctx, req, d)
}

func (f *failing) Refund(ctx context.Context, r *allowance.Receipt, g []allowance.Guard, res *allowance.RefundResult) error {
	f.mu.Lock()
	fail := f.refund
	f.mu.Unlock()
	if fail {
		res.Reset(r.ID, 0)
		return f.err
	}
	return f.Store.Refund(ctx, r, g, res)
}

var errDown = errors.New("store is down")

// waitFor polls cond until it holds, failing the test after 30 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// observe returns an Observer that records to reg, as taskd's does.
func observe(t testing.TB, reg *prometheus.Registry) Observer {
	t.Helper()
	obs, err := promlimit.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	return obs
}

var _ Observer = (*promlimit.Observer)(nil)
