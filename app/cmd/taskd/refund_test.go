package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/allowancehq/allowance"
	"github.com/allowancehq/allowance/app/internal/auth"
	"github.com/allowancehq/allowance/app/internal/config"
	"github.com/allowancehq/allowance/app/internal/pgtest"
	"github.com/allowancehq/allowance/app/tasks"
	"github.com/allowancehq/allowance/httplimit"
	"github.com/allowancehq/allowance/httplimit/promlimit"
	"github.com/allowancehq/allowance/internal/redistest"
	"github.com/allowancehq/allowance/memstore"
	"github.com/allowancehq/allowance/redisstore/rueidisstore"
	"github.com/allowancehq/allowance/storetest"
)

// refundRules is a configuration whose create-task rule refunds worker
// failures but not stuck tasks.
const refundRules = `
rules:
  - name: create-task
    match: POST /v1/tasks
    limits: 5/minute
    algorithm: fixed-window
    refund_on: [conflict, worker_failure]
`

func parseRules(t *testing.T) []config.Rule {
	t.Helper()
	cfg, err := config.Parse("refund.yaml", []byte(refundRules))
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Rules
}

// middleware builds the rate-limit middleware of a taskd process over
// limits, as serve does.
func middleware(t *testing.T, limits allowance.Store, rules []config.Rule) *httplimit.Middleware {
	t.Helper()
	hr := make([]httplimit.Rule, len(rules))
	for i, r := range rules {
		hr[i] = httplimit.Rule{Rule: r.Rule, Match: r.Match, FailOpen: r.FailOpen}
	}
	obs, err := promlimit.New(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	mw, err := httplimit.New(httplimit.Config{
		Store:    limits,
		Rules:    hr,
		Key:      httplimit.FromContext(auth.UserFrom),
		Observer: obs,
	})
	if err != nil {
		t.Fatal(err)
	}
	return mw
}

// submit sends user's POST /v1/tasks through mw and returns the receipt of
// the accepted charge, as the API stores it with the task.
func submit(t *testing.T, mw *httplimit.Middleware, user string) []byte {
	t.Helper()
	var receipt []byte
	h := mw.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc, ok := httplimit.ReceiptFrom(r.Context())
		if !ok {
			t.Error("accepted request without a receipt")
			return
		}
		b, err := rc.MarshalBinary()
		if err != nil {
			t.Error(err)
		}
		receipt = b
		w.WriteHeader(http.StatusAccepted)
	}))
	req := httptest.NewRequestWithContext(auth.WithUser(t.Context(), user), "POST", "/v1/tasks", nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusAccepted || receipt == nil {
		t.Fatalf("submit of %s: status %d, receipt %v", user, rec.Code, receipt != nil)
	}
	return receipt
}

// used returns how much of create-task's limit user has used.
func used(t *testing.T, mw *httplimit.Middleware, user string) int64 {
	t.Helper()
	us, err := mw.Peek(t.Context(), user)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range us {
		if u.Rule == "create-task" {
			return u.Used
		}
	}
	t.Fatalf("no create-task usage for %s: %+v", user, us)
	return 0
}

// failTask creates user's task with receipt, claims and fails it, which
// queues its worker_failure refund, and returns its id.
func failTask(t *testing.T, s tasks.Store, user string, receipt []byte) string {
	t.Helper()
	ctx := t.Context()
	if _, err := s.Create(ctx, tasks.Task{UserID: user, Kind: "sleep", Receipt: receipt}); err != nil {
		t.Fatal(err)
	}
	c, ok, err := s.Claim(ctx, "worker", time.Minute)
	if err != nil || !ok {
		t.Fatalf("Claim = %v, %v", ok, err)
	}
	f, err := s.Finish(ctx, c.ID, "worker", tasks.StatusFailed, nil, "failed")
	if err != nil || f.RefundState != tasks.RefundPending {
		t.Fatalf("Finish = %+v, %v; want a pending refund", f, err)
	}
	return f.ID
}

// runRefunder runs r until the test ends.
func runRefunder(t *testing.T, r *tasks.Refunder) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// waitRefunds waits until s has no pending refund and done of them are
// done, and fails the test after 20s.
func waitRefunds(t *testing.T, s tasks.Store, done int) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		n, err := s.CountRefunds(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if n.Pending == 0 && n.Done == done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("refund records %+v after 20s; want %d done, none pending", n, done)
		}
	}
}

// A receipt whose window has ended refunds nothing, and the task says so
// (refund_outcome window_ended); a reason no rule lists refunds nothing
// either and is recorded as skipped.
func TestRefundAfterWindowEnded(t *testing.T) {
	clock := storetest.NewClock(time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC))
	limits := memstore.New(memstore.WithClock(clock.Now))
	t.Cleanup(func() { _ = limits.Close() })
	rules := parseRules(t)
	mw := middleware(t, limits, rules)
	store, err := openTasks(t.Context(), "sqlite:"+filepath.Join(t.TempDir(), "taskd.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })

	late := failTask(t, store, "alice", submit(t, mw, "alice"))
	clock.Advance(2 * time.Minute) // past alice's fixed one-minute window
	bob := submit(t, mw, "bob")
	if _, err := store.Create(t.Context(), tasks.Task{UserID: "bob", Kind: "sleep", Receipt: bob}); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := store.Claim(t.Context(), "worker", time.Millisecond); !ok || err != nil {
		t.Fatalf("Claim = %v, %v", ok, err)
	}
	time.Sleep(10 * time.Millisecond)         // the lease runs out
	reaped, err := store.Reap(t.Context(), 1) // bob's task: stuck, which no rule refunds
	if err != nil || len(reaped) != 1 || reaped[0].Status != tasks.StatusStuck {
		t.Fatalf("Reap = %+v, %v; want bob's task stuck", reaped, err)
	}

	runRefunder(t, tasks.NewRefunder(store, refundFunc(mw, rules), nil, tasks.WithRefundPoll(10*time.Millisecond)))
	waitRefunds(t, store, 2)
	for _, tt := range []struct{ user, id, outcome string }{
		{"alice", late, "window_ended"},
		{"bob", reaped[0].ID, "skipped"},
	} {
		task, err := store.Get(t.Context(), tt.user, tt.id)
		if err != nil {
			t.Fatal(err)
		}
		if task.RefundState != tasks.RefundDone || task.RefundOutcome != tt.outcome {
			t.Errorf("%s's task: refund %s, outcome %q; want done, %q", tt.user, task.RefundState, task.RefundOutcome, tt.outcome)
		}
	}
	if n := used(t, mw, "bob"); n != 1 {
		t.Errorf("bob's create-task usage = %d after a stuck task no rule refunds, want 1", n)
	}
}

// Two taskd processes (here: two task stores on one PostgreSQL database and
// two Redis clients of one Redis, each with its own middleware and
// Refunder) work off the same refund records: every failed task is
// refunded once, and its user's budget is restored exactly once. When both
// processes make the same refund at once (a claim that lapsed while its
// process stalled), one restores and the other finds it already refunded.
func TestRefundByTwoProcessesRestoresOnce(t *testing.T) {
	redisURL := "redis://" + redistest.Server(t) + "/0"
	dsn := pgtest.DB(t)
	rules := parseRules(t)
	type process struct {
		store tasks.Store
		mw    *httplimit.Middleware
	}
	var procs [2]process
	for i := range procs {
		limits, err := rueidisstore.Open(t.Context(), redisURL)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = limits.Close() })
		store, err := openTasks(t.Context(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = store.Close() })
		procs[i] = process{store, middleware(t, limits, rules)}
	}

	// The same receipt refunded by both processes at once.
	receipt := submit(t, procs[0].mw, "carol")
	var rc allowance.Receipt
	if err := rc.UnmarshalBinary(receipt); err != nil {
		t.Fatal(err)
	}
	task := tasks.Task{Receipt: receipt, RefundReason: tasks.RefundWorkerFailure}
	outcomes := make([]string, len(procs))
	var wg sync.WaitGroup
	for i, p := range procs {
		wg.Go(func() {
			out, err := refundFunc(p.mw, rules)(t.Context(), task)
			if err != nil {
				t.Errorf("process %d: refund: %v", i, err)
			}
			outcomes[i] = out
		})
	}
	wg.Wait()
	if !(outcomes[0] == "restored" && outcomes[1] == "already_refunded" ||
		outcomes[1] == "restored" && outcomes[0] == "already_refunded") {
		t.Errorf("outcomes of one refund made by two processes: %q; want one restored and one already_refunded", outcomes)
	}
	if n := used(t, procs[1].mw, "carol"); n != 0 {
		t.Errorf("carol's usage after the double refund = %d, want 0", n)
	}

	// Many failed tasks, their refunds worked off by both processes. The
	// rule counts in fixed one-minute windows on Redis' clock (this
	// machine's): if one ends before the usage is read, the charges made
	// before it no longer count, and the usage says nothing about a second
	// restore.
	began := time.Now()
	const users = 20
	ids := make(map[string]string, users)
	for i := range users {
		user := "user" + string(rune('a'+i))
		// Two charges, so a second restore would show as usage 0.
		submit(t, procs[i%2].mw, user)
		ids[user] = failTask(t, procs[i%2].store, user, submit(t, procs[(i+1)%2].mw, user))
	}
	var mu sync.Mutex
	calls := map[string]int{}
	for _, p := range procs {
		refund := refundFunc(p.mw, rules)
		counting := func(ctx context.Context, t tasks.Task) (string, error) {
			mu.Lock()
			calls[t.ID]++
			mu.Unlock()
			return refund(ctx, t)
		}
		runRefunder(t, tasks.NewRefunder(p.store, counting, nil, tasks.WithRefundPoll(5*time.Millisecond)))
	}
	waitRefunds(t, procs[0].store, users)
	checkUsage := true
	defer func() {
		if !checkUsage {
			t.Log("a one-minute window ended during the test: usage after the refunds not checked")
		}
	}()
	for user, id := range ids {
		got, err := procs[1].store.Get(t.Context(), user, id)
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		n := calls[id]
		mu.Unlock()
		if got.RefundOutcome != "restored" || n != 1 {
			t.Errorf("%s's task: outcome %q after %d refund calls; want restored after 1", user, got.RefundOutcome, n)
		}
		u := used(t, procs[0].mw, user)
		if !began.Truncate(time.Minute).Equal(time.Now().Truncate(time.Minute)) {
			checkUsage = false
		}
		if checkUsage && u != 1 {
			t.Errorf("%s's usage = %d after two charges and one refund, want 1", user, u)
		}
	}
}
