package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/allowancehq/allowance/app/internal/auth"
	"github.com/allowancehq/allowance/app/internal/config"
	"github.com/allowancehq/allowance/app/tasks"
	"github.com/allowancehq/allowance/app/tasks/sqlitestore"
	"github.com/allowancehq/allowance/httplimit"
	"github.com/allowancehq/allowance/memstore"
)

// limitedEnv is an API server over store with the rules of a taskd
// configuration wired as cmd/taskd wires them (conflict refunds by the
// handler, server_error refunds by the middleware on 5xx statuses), and
// the middleware at hand to read a user's usage without charging it. The
// limits store's clock stands still, so usage changes only by charges and
// refunds.
//
// Its methods take the test to fail, so that a fuzz target can set one up
// before fuzzing and use it from every input's test.
type limitedEnv struct {
	srv   *httptest.Server
	store tasks.Store
	mw    *httplimit.Middleware
}

func newLimitedEnv(t testing.TB, store tasks.Store, rules []config.Rule) *limitedEnv {
	t.Helper()
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	limits := memstore.New(memstore.WithClock(func() time.Time { return now }))
	t.Cleanup(func() { limits.Close() })
	hrules := make([]httplimit.Rule, len(rules))
	var conflict []string
	for i, r := range rules {
		hrules[i] = httplimit.Rule{Rule: r.Rule, Match: r.Match, FailOpen: r.FailOpen, RefundOn: r.RefundStatuses(), IdempotencyKey: r.IdempotencyKey}
		if r.RefundsOn(config.Conflict) {
			conflict = append(conflict, r.Name)
		}
	}
	reg := prometheus.NewRegistry()
	log := slog.New(slog.DiscardHandler)
	mw, err := httplimit.New(httplimit.Config{Store: limits, Rules: hrules, Key: httplimit.FromContext(auth.UserFrom), Observer: observer(t, reg), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{Store: store, Limiter: mw, Logger: log, ConflictRefund: conflict, Workers: &fakeWorkers{}, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return &limitedEnv{srv: srv, store: store, mw: mw}
}

// key creates an API key of user.
func (e *limitedEnv) key(t testing.TB, user string) string {
	t.Helper()
	k, h := auth.NewKey()
	if err := e.store.CreateAPIKey(context.Background(), user, h); err != nil {
		t.Fatal(err)
	}
	return k
}

// do sends a request with the API key key (none when empty).
func (e *limitedEnv) do(t testing.TB, method, path, key, body string) response {
	t.Helper()
	return e.doHeader(t, method, path, key, body, nil)
}

// doHeader is do with the request headers h added.
func (e *limitedEnv) doHeader(t testing.TB, method, path, key, body string, h http.Header) response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for k, vs := range h {
		req.Header[k] = vs
	}
	res, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{res.StatusCode, res.Header, b}
}

// used returns how much of each rule's first limit user has used.
func (e *limitedEnv) used(t testing.TB, user string) map[string]int64 {
	t.Helper()
	us, err := e.mw.Peek(context.Background(), user)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, u := range us {
		if _, ok := out[u.Rule]; !ok {
			out[u.Rule] = u.Used
		}
	}
	return out
}

func sqliteStore(t testing.TB) tasks.Store {
	t.Helper()
	ctx := context.Background()
	store, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "tasks.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	if err := store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return store
}

// Ways a faultyStore fails its task calls.
const (
	faultNone    int32 = iota
	faultError         // the database answers with an error
	faultTimeout       // the call runs out of time
	faultPanic         // the store panics
)

var faultNames = map[int32]string{faultError: "error", faultTimeout: "timeout", faultPanic: "panic"}

// faultyStore is a task store whose Create, Get, List and Cancel fail in
// the way mode says; API keys keep working, so requests get through
// authentication to the handlers.
type faultyStore struct {
	tasks.Store
	mode atomic.Int32
}

var errDatabaseDown = errors.New("database is down")

func (s *faultyStore) fault(op string) error {
	switch s.mode.Load() {
	case faultError:
		return fmt.Errorf("%s: %w", op, errDatabaseDown)
	case faultTimeout:
		return fmt.Errorf("%s: %w", op, context.DeadlineExceeded)
	case faultPanic:
		panic(op + ": the store's driver panicked")
	}
	return nil
}

func (s *faultyStore) Create(ctx context.Context, t tasks.Task) (tasks.Task, error) {
	if err := s.fault("create task"); err != nil {
		return tasks.Task{}, err
	}
	return s.Store.Create(ctx, t)
}

func (s *faultyStore) Get(ctx context.Context, userID, id string) (tasks.Task, error) {
	if err := s.fault("get task"); err != nil {
		return tasks.Task{}, err
	}
	return s.Store.Get(ctx, userID, id)
}

func (s *faultyStore) List(ctx context.Context, userID string, o tasks.ListOptions) ([]tasks.Task, error) {
	if err := s.fault("list tasks"); err != nil {
		return nil, err
	}
	return s.Store.List(ctx, userID, o)
}

func (s *faultyStore) Cancel(ctx context.Context, userID, id string) (tasks.Task, error) {
	if err := s.fault("cancel task"); err != nil {
		return tasks.Task{}, err
	}
	return s.Store.Cancel(ctx, userID, id)
}

// faultRules are the default rules plus one that limits cancels, each with
// server_error in its refund_on, and one that limits the same cancels
// without it.
const faultRules = `
rules:
  - name: create-task
    match: POST /v1/tasks
    limits: 5/minute; 50/day
    algorithm: sliding-window
    refund_on: [conflict, server_error]
  - name: read
    match: GET /v1/
    limits: 600/minute
    refund_on: [server_error]
  - name: cancel
    match: POST /v1/tasks/{id}/cancel
    limits: 100/minute
    refund_on: [server_error]
`

func parseConfig(t testing.TB, doc string) []config.Rule {
	t.Helper()
	cfg, err := config.Parse("taskd.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Rules
}

// A response the server fails to produce costs nothing: when the task
// database fails, times out or panics on Create, Get, List or Cancel, the
// answer is 503 (500 for a panic), the charge is given back before the
// status is written, and the rate-limit headers show the budget as it was.
func TestServerErrorsAreRefunded(t *testing.T) {
	store := &faultyStore{Store: sqliteStore(t)}
	e := newLimitedEnv(t, store, parseConfig(t, faultRules))
	k := e.key(t, "alice")

	// One task to get and cancel.
	r := e.do(t, "POST", "/v1/tasks", k, sleep30)
	if r.status != http.StatusAccepted {
		t.Fatalf("submit: %d %s", r.status, r.body)
	}
	var task tasks.Task
	r.json(t, &task)

	for _, mode := range []int32{faultError, faultTimeout, faultPanic} {
		for _, req := range []struct {
			method, path, body, rule string
		}{
			{"POST", "/v1/tasks", `{"kind":"echo","input":1}`, "create-task"},
			{"GET", "/v1/tasks/" + task.ID, "", "read"},
			{"GET", "/v1/tasks", "", "read"},
			{"POST", "/v1/tasks/" + task.ID + "/cancel", "", "cancel"},
		} {
			name := faultNames[mode] + " " + req.method + " " + req.path
			before := e.used(t, "alice")
			store.mode.Store(mode)
			r := e.do(t, req.method, req.path, k, req.body)
			store.mode.Store(faultNone)
			want := http.StatusServiceUnavailable
			if mode == faultPanic {
				want = http.StatusInternalServerError
			}
			p := r.problem(t, want)
			if p.Detail == "" {
				t.Errorf("%s: problem without a detail: %s", name, r.body)
			}
			if ra := r.header.Get("Retry-After"); want == http.StatusServiceUnavailable && ra != "1" {
				t.Errorf("%s: Retry-After %q, want 1", name, ra)
			}
			if after := e.used(t, "alice"); after[req.rule] != before[req.rule] {
				t.Errorf("%s: %s used %d before, %d after; want the charge given back", name, req.rule, before[req.rule], after[req.rule])
			}
			if lim := e.limitOf(req.rule); r.remaining(t) != lim-int(before[req.rule]) {
				t.Errorf("%s: X-RateLimit-Remaining %s, want %d: the headers show the refunded budget",
					name, r.header.Get("X-RateLimit-Remaining"), lim-int(before[req.rule]))
			}
		}
	}

	// The server works again, and charges as before.
	before := e.used(t, "alice")
	r = e.do(t, "GET", "/v1/tasks/"+task.ID, k, "")
	if r.status != http.StatusOK {
		t.Fatalf("get after the faults: %d %s", r.status, r.body)
	}
	if after := e.used(t, "alice"); after["read"] != before["read"]+1 {
		t.Fatalf("a served read: used %d, then %d; want one more", before["read"], after["read"])
	}
}

// limitOf returns the count of rule's first limit in faultRules.
func (e *limitedEnv) limitOf(rule string) int {
	switch rule {
	case "create-task":
		return 5
	case "read":
		return 600
	}
	return 100
}

// Client errors stay charged, but for the 409 of a conflict; a rule
// without server_error keeps the charge of a server error too.
func TestClientErrorsStayCharged(t *testing.T) {
	store := &faultyStore{Store: sqliteStore(t)}
	rules := parseConfig(t, `
rules:
  - name: create-task
    match: POST /v1/tasks
    limits: 100/minute
    refund_on: [conflict]
  - name: read
    match: GET /v1/
    limits: 100/minute
    refund_on: [server_error]
`)
	e := newLimitedEnv(t, store, rules)
	k := e.key(t, "alice")
	for _, c := range []struct {
		method, path, body string
		status             int
		rule               string
		charged            int64
	}{
		{"POST", "/v1/tasks", `{"kind":"sleep","input":{"seconds":-1}}`, 400, "create-task", 1},
		{"POST", "/v1/tasks", `{"kind":"echo","input":"\u0000"}`, 400, "create-task", 1},
		{"POST", "/v1/tasks", `{"kind":"juggle"}`, 400, "create-task", 1},
		{"POST", "/v1/tasks", `{"kind":"echo","input":[1,2,3]}`, 202, "create-task", 1},
		{"POST", "/v1/tasks", `{"kind":"echo","input":1}`, 409, "create-task", 0},
		{"GET", "/v1/tasks/t_00000000000000000000000000", "", 404, "read", 1},
		{"GET", "/v1/tasks?limit=0", "", 400, "read", 1},
		{"GET", "/v1/tasks?color=red", "", 400, "read", 1},
	} {
		before := e.used(t, "alice")
		r := e.do(t, c.method, c.path, k, c.body)
		if r.status != c.status {
			t.Fatalf("%s %s %s: %d, want %d: %s", c.method, c.path, c.body, r.status, c.status, r.body)
		}
		if got := e.used(t, "alice")[c.rule] - before[c.rule]; got != c.charged {
			t.Errorf("%s %s %s answered %d and charged %s %d, want %d", c.method, c.path, c.body, c.status, c.rule, got, c.charged)
		}
	}

	// create-task does not list server_error: its 503 stays charged.
	before := e.used(t, "alice")
	store.mode.Store(faultError)
	r := e.do(t, "POST", "/v1/tasks", k, `{"kind":"echo","input":1}`)
	store.mode.Store(faultNone)
	r.problem(t, http.StatusServiceUnavailable)
	if got := e.used(t, "alice")["create-task"] - before["create-task"]; got != 1 {
		t.Errorf("a 503 of a rule without server_error charged %d, want 1", got)
	}
}

// A panic in a handler is answered with a problem+json 500 that says
// nothing of the panic's value; the panic is logged.
func TestHandlerPanicAnswers500(t *testing.T) {
	store := &faultyStore{Store: sqliteStore(t)}
	e := newLimitedEnv(t, store, config.Default().Rules)
	k := e.key(t, "alice")
	store.mode.Store(faultPanic)
	r := e.do(t, "GET", "/v1/tasks", k, "")
	p := r.problem(t, http.StatusInternalServerError)
	var raw map[string]any
	if err := json.Unmarshal(r.body, &raw); err != nil || p.Instance != "/v1/tasks" {
		t.Fatalf("500: %s (%v)", r.body, err)
	}
	if got := e.used(t, "alice")["read"]; got != 0 {
		t.Fatalf("after a 500 read used = %d, want 0 (the default read rule refunds server errors)", got)
	}
}
