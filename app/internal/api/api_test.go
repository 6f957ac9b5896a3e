package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/allowancehq/allowance"
	"github.com/allowancehq/allowance/app/internal/auth"
	"github.com/allowancehq/allowance/app/internal/config"
	"github.com/allowancehq/allowance/app/tasks"
	"github.com/allowancehq/allowance/app/tasks/sqlitestore"
	"github.com/allowancehq/allowance/app/tasks/storetest"
	"github.com/allowancehq/allowance/httplimit"
	"github.com/allowancehq/allowance/httplimit/promlimit"
	"github.com/allowancehq/allowance/memstore"
)

// env is an API server on a real SQLite task store and an in-memory limits
// store whose clock stands still unless advanced, with no workers: tasks
// stay queued.
type env struct {
	t       *testing.T
	srv     *httptest.Server
	api     *Server
	store   tasks.Store
	workers *fakeWorkers
	clock   *atomic.Int64 // the limits store's, in Unix nanoseconds
}

// advance moves the limits store's clock on by d.
func (e *env) advance(d time.Duration) { e.clock.Add(int64(d)) }

// fakeWorkers records what the API tells the worker pool.
type fakeWorkers struct{ notified, canceled atomic.Int64 }

func (f *fakeWorkers) Notify()               { f.notified.Add(1) }
func (f *fakeWorkers) Cancel(id string) bool { f.canceled.Add(1); return false }

// newEnv starts an API server with rules; each opt may change its Options,
// given the limits store.
func newEnv(t *testing.T, rules []config.Rule, maxBody int64, opts ...func(o *Options, limits allowance.Store)) *env {
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
	clock := new(atomic.Int64)
	clock.Store(time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC).UnixNano())
	limits := memstore.New(memstore.WithClock(func() time.Time { return time.Unix(0, clock.Load()) }))
	t.Cleanup(func() { limits.Close() })
	var hrules []httplimit.Rule
	var conflict []string
	for _, r := range rules {
		hrules = append(hrules, httplimit.Rule{Rule: r.Rule, Match: r.Match})
		if r.RefundsOn(config.Conflict) {
			conflict = append(conflict, r.Name)
		}
	}
	reg := prometheus.NewRegistry()
	mw, err := httplimit.New(httplimit.Config{Store: limits, Rules: hrules, Key: httplimit.FromContext(auth.UserFrom), Observer: observer(t, reg), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	w := &fakeWorkers{}
	o := Options{Store: store, Limiter: mw, Logger: slog.New(slog.DiscardHandler), ConflictRefund: conflict, Workers: w, Registry: reg, MaxBodyBytes: maxBody,
		Ready: []Check{{Name: "limits", Ping: func(context.Context) error { return nil }}}}
	for _, opt := range opts {
		opt(&o, limits)
	}
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return &env{t: t, srv: srv, api: s, store: store, workers: w, clock: clock}
}

func (e *env) key(user string) string {
	e.t.Helper()
	k, h := auth.NewKey()
	if err := e.store.CreateAPIKey(context.Background(), user, h); err != nil {
		e.t.Fatal(err)
	}
	return k
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

func (r response) remaining(t *testing.T) int {
	t.Helper()
	n, err := strconv.Atoi(r.header.Get("X-RateLimit-Remaining"))
	if err != nil {
		t.Fatalf("X-RateLimit-Remaining %q: %v", r.header.Get("X-RateLimit-Remaining"), err)
	}
	return n
}

func (e *env) do(method, path, key string, body string) response {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	res, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return response{res.StatusCode, res.Header, b}
}

// problem checks that r is a problem+json answer of status and returns it.
func (r response) problem(t *testing.T, status int) Problem {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type %q, want application/problem+json; body %s", ct, r.body)
	}
	var p Problem
	r.json(t, &p)
	if p.Status != status || p.Title == "" || p.Type == "" {
		t.Fatalf("problem %+v lacks type, title or status", p)
	}
	return p
}

const sleep30 = `{"kind":"sleep","input":{"seconds":30}}`

// The story of the service: a submit is charged, a conflicting submit is
// refunded before its 409 is written, a cancel frees the slot, and the next
// submit is charged again.
func TestSubmitConflictRefund(t *testing.T) {
	e := newEnv(t, config.Default().Rules, 0)
	k := e.key("alice")

	r := e.do("POST", "/v1/tasks", k, sleep30)
	if r.status != http.StatusAccepted {
		t.Fatalf("submit: %d %s", r.status, r.body)
	}
	var task tasks.Task
	r.json(t, &task)
	if !tasks.ValidID(task.ID) || task.Status != tasks.StatusQueued || task.Kind != "sleep" || r.header.Get("Location") != "/v1/tasks/"+task.ID {
		t.Fatalf("submit answered %+v, Location %q", task, r.header.Get("Location"))
	}
	if e.workers.notified.Load() != 1 {
		t.Errorf("workers notified %d times, want 1", e.workers.notified.Load())
	}
	left := r.remaining(t)
	if left != 4 {
		t.Fatalf("remaining after the first submit: %d, want 4", left)
	}
	stored, err := e.store.Get(context.Background(), "alice", task.ID)
	if err != nil || len(stored.Receipt) == 0 {
		t.Fatalf("stored task %+v, %v: want it with the submit's receipt", stored, err)
	}

	for i := range 3 {
		r = e.do("POST", "/v1/tasks", k, `{"kind":"echo","input":"hi"}`)
		p := r.problem(t, http.StatusConflict)
		if p.ActiveTaskID != task.ID || p.Type != typeActiveTask {
			t.Fatalf("409 #%d: %+v, want active_task_id %s", i, p, task.ID)
		}
		if got := r.remaining(t); got != left {
			t.Fatalf("409 #%d shows remaining %d, want the unchanged %d", i, got, left)
		}
	}

	r = e.do("POST", "/v1/tasks/"+task.ID+"/cancel", k, "")
	if r.status != http.StatusOK {
		t.Fatalf("cancel: %d %s", r.status, r.body)
	}
	r.json(t, &task)
	if task.Status != tasks.StatusCanceled || e.workers.canceled.Load() != 1 {
		t.Fatalf("cancel answered %+v (workers told %d times)", task, e.workers.canceled.Load())
	}
	p := e.do("POST", "/v1/tasks/"+task.ID+"/cancel", k, "").problem(t, http.StatusConflict)
	if p.TaskStatus != "canceled" || p.Type != typeNotActive {
		t.Errorf("second cancel: %+v", p)
	}

	r = e.do("POST", "/v1/tasks", k, sleep30)
	if r.status != http.StatusAccepted {
		t.Fatalf("submit after cancel: %d %s", r.status, r.body)
	}
	if got := r.remaining(t); got != left-1 {
		t.Fatalf("submit after cancel shows remaining %d, want %d", got, left-1)
	}

	var rl struct {
		User   string  `json:"user"`
		Limits []usage `json:"limits"`
	}
	e.do("GET", "/v1/ratelimit", k, "").json(t, &rl)
	if rl.User != "alice" || len(rl.Limits) != 3 {
		t.Fatalf("ratelimit: %+v", rl)
	}
	if u := rl.Limits[0]; u.Rule != "create-task" || u.Limit != "5/minute" || u.Used != 2 || u.Remaining != 3 || u.Algorithm != "sliding-window" {
		t.Errorf("create-task usage: %+v", u)
	}

	m := string(e.do("GET", "/metrics", "", "").body)
	for _, want := range []string{
		`allowance_http_refunds_total{outcome="restored",rule="create-task"} 6`,
		`allowance_http_checks_total{outcome="allowed",rule="create-task"} 5`,
		`taskd_task_submits_total{outcome="conflict"} 3`,
		`taskd_task_submits_total{outcome="accepted"} 2`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// Without refund_on: [conflict] a 409 costs an attempt.
func TestConflictWithoutRefund(t *testing.T) {
	rules := config.Default().Rules
	rules[0].RefundOn = nil
	e := newEnv(t, rules, 0)
	k := e.key("bob")
	left := e.do("POST", "/v1/tasks", k, sleep30).remaining(t)
	r := e.do("POST", "/v1/tasks", k, sleep30)
	r.problem(t, http.StatusConflict)
	if got := r.remaining(t); got != left-1 {
		t.Fatalf("409 without refund shows remaining %d, want %d", got, left-1)
	}
}

func TestUnauthorized(t *testing.T) {
	e := newEnv(t, config.Default().Rules, 0)
	unknown, _ := auth.NewKey()
	for _, tt := range []struct{ name, header, want string }{
		{"no header", "", "No API key"},
		{"basic", "Basic YTpi", "Bearer <key>"},
		{"malformed", "Bearer nope", "Malformed API key"},
		{"unknown", "Bearer " + unknown, "Unknown API key"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", e.srv.URL+"/v1/tasks", nil)
			if tt.header != "" {
				req.Header.Set("Authorization", tt.header)
			}
			res, err := e.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			p := response{res.StatusCode, res.Header, b}.problem(t, http.StatusUnauthorized)
			if !strings.Contains(p.Detail, tt.want) || res.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("401 %+v (WWW-Authenticate %q), want detail with %q", p, res.Header.Get("WWW-Authenticate"), tt.want)
			}
		})
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		if r := e.do("GET", path, "", ""); r.status != http.StatusOK {
			t.Errorf("GET %s without a key: %d, want 200", path, r.status)
		}
	}
}

// generous returns the default rules with room for many submits.
func generous() []config.Rule {
	rules := config.Default().Rules
	rules[0].Limits = allowance.Limits{{Count: 1000, Period: time.Minute}}
	return rules
}

func TestBadSubmits(t *testing.T) {
	e := newEnv(t, generous(), 256)
	k := e.key("carol")
	for _, tt := range []struct{ name, body, want string }{
		{"empty", "", "body is empty"},
		{"malformed", `{"kind":`, "ends in the middle"},
		{"syntax", `{"kind" "sleep"}`, "Malformed JSON at byte"},
		{"not an object", `[1,2]`, "JSON array"},
		{"kind not a string", `{"kind":5}`, `Field "kind" is a JSON number`},
		{"unknown field", `{"kind":"echo","priority":1}`, `Unknown field "priority"`},
		{"trailing data", `{"kind":"echo"} {}`, "data after its JSON object"},
		{"missing kind", `{"input":{}}`, `"kind" is missing`},
		{"unknown kind", `{"kind":"dance"}`, `"dance"`},
		{"sleep without seconds", `{"kind":"sleep","input":{}}`, "seconds"},
		{"sleep seconds a string", `{"kind":"sleep","input":{"seconds":"ten"}}`, "seconds"},
		{"sleep too long", `{"kind":"sleep","input":{"seconds":99999}}`, "seconds"},
		{"sleep unknown field", `{"kind":"sleep","input":{"seconds":1,"x":1}}`, `"x"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := e.do("POST", "/v1/tasks", k, tt.body).problem(t, http.StatusBadRequest)
			if !strings.Contains(p.Detail, tt.want) {
				t.Errorf("detail %q does not contain %q", p.Detail, tt.want)
			}
		})
	}
	big := `{"kind":"echo","input":"` + strings.Repeat("x", 300) + `"}`
	p := e.do("POST", "/v1/tasks", k, big).problem(t, http.StatusRequestEntityTooLarge)
	if !strings.Contains(p.Detail, "256 bytes") {
		t.Errorf("413 detail %q does not give the limit", p.Detail)
	}
	if list, _ := e.store.List(context.Background(), "carol", tasks.ListOptions{}); len(list) != 0 {
		t.Errorf("bad submits created %d tasks", len(list))
	}
}

func TestOwnTasksOnly(t *testing.T) {
	e := newEnv(t, config.Default().Rules, 0)
	alice, bob := e.key("alice"), e.key("bob")
	var task tasks.Task
	e.do("POST", "/v1/tasks", alice, `{"kind":"echo","input":{"a":1}}`).json(t, &task)
	if r := e.do("GET", "/v1/tasks/"+task.ID, alice, ""); r.status != http.StatusOK || !bytes.Contains(r.body, []byte(task.ID)) {
		t.Fatalf("owner GET: %d %s", r.status, r.body)
	}
	e.do("GET", "/v1/tasks/"+task.ID, bob, "").problem(t, http.StatusNotFound)
	e.do("POST", "/v1/tasks/"+task.ID+"/cancel", bob, "").problem(t, http.StatusNotFound)
	e.do("GET", "/v1/tasks/t_nonsense", alice, "").problem(t, http.StatusNotFound)
	var list taskList
	e.do("GET", "/v1/tasks", bob, "").json(t, &list)
	if len(list.Tasks) != 0 {
		t.Errorf("bob lists %d tasks, want 0", len(list.Tasks))
	}
	// bob's submit is not blocked by alice's active task.
	if r := e.do("POST", "/v1/tasks", bob, sleep30); r.status != http.StatusAccepted {
		t.Errorf("bob's submit: %d %s", r.status, r.body)
	}
}

func TestList(t *testing.T) {
	e := newEnv(t, config.Default().Rules, 0)
	k := e.key("dave")
	var ids []string
	for range 3 {
		var task tasks.Task
		e.do("POST", "/v1/tasks", k, sleep30).json(t, &task)
		ids = append(ids, task.ID)
		e.do("POST", "/v1/tasks/"+task.ID+"/cancel", k, "")
	}
	var list taskList
	e.do("GET", "/v1/tasks?limit=2", k, "").json(t, &list)
	if len(list.Tasks) != 2 || list.Tasks[0].ID != ids[2] || list.Tasks[1].ID != ids[1] || list.NextBefore != ids[1] {
		t.Fatalf("page 1: %+v, want %s, %s newest first", list, ids[2], ids[1])
	}
	next := list.NextBefore
	list = taskList{}
	e.do("GET", "/v1/tasks?limit=2&before="+next, k, "").json(t, &list)
	if len(list.Tasks) != 1 || list.Tasks[0].ID != ids[0] || list.NextBefore != "" {
		t.Fatalf("page 2: %+v", list)
	}
	e.do("GET", "/v1/tasks?status=queued", k, "").json(t, &list)
	if len(list.Tasks) != 0 {
		t.Fatalf("queued: %+v", list)
	}
	e.do("GET", "/v1/tasks?status=canceled", k, "").json(t, &list)
	if len(list.Tasks) != 3 {
		t.Fatalf("canceled: %+v", list)
	}
	for q, want := range map[string]string{
		"status=done":               "status",
		"limit=0":                   "limit",
		"limit=abc":                 "limit",
		"limit=201":                 "limit",
		"before=x":                  "before",
		"before=" + tasks.NewID():   "no such task",
		"sort=asc":                  "Unknown query parameter",
		"status=queued&limit=-1":    "limit",
		"limit=1&before=t_" + "zz2": "before",
	} {
		p := e.do("GET", "/v1/tasks?"+q, k, "").problem(t, http.StatusBadRequest)
		if !strings.Contains(p.Detail, want) {
			t.Errorf("?%s: detail %q does not contain %q", q, p.Detail, want)
		}
	}
}

func TestNotFoundAndMethods(t *testing.T) {
	e := newEnv(t, config.Default().Rules, 0)
	k := e.key("erin")
	e.do("GET", "/v1/nothing", k, "").problem(t, http.StatusNotFound)
	e.do("GET", "/v1/nothing", "", "").problem(t, http.StatusUnauthorized)
	// Outside /v1/ an unknown path is not found, key or no key.
	for _, key := range []string{k, ""} {
		e.do("GET", "/favicon.ico", key, "").problem(t, http.StatusNotFound)
	}
	r := e.do("DELETE", "/v1/tasks", k, "")
	r.problem(t, http.StatusMethodNotAllowed)
	if allow := r.header.Get("Allow"); allow != "POST, GET, HEAD" {
		t.Errorf("Allow %q", allow)
	}
	r = e.do("POST", "/healthz", "", "")
	if r.status != http.StatusMethodNotAllowed || r.header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST /healthz: %d, Allow %q", r.status, r.header.Get("Allow"))
	}
}

func TestReadyz(t *testing.T) {
	e := newEnv(t, config.Default().Rules, 0)
	var body struct {
		Status string            `json:"status"`
		Checks map[string]string `json:"checks"`
	}
	e.do("GET", "/readyz", "", "").json(t, &body)
	if body.Status != "ready" || body.Checks["database"] != "ok" || body.Checks["limits"] != "ok" {
		t.Fatalf("readyz: %+v", body)
	}
	e.store.Close()
	p := e.do("GET", "/readyz", "", "").problem(t, http.StatusServiceUnavailable)
	if !strings.Contains(p.Detail, "database") {
		t.Errorf("readyz with a closed database: %+v", p)
	}
}

func TestNewRequires(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Error("New with no store succeeded")
	}
}

// A request charged by several rules has one receipt: a conflict refunds it
// as a whole when any of its rules lists conflict.
func TestConflictRefundsWholeReceipt(t *testing.T) {
	rules := config.Default().Rules
	rules = append(rules, config.Rule{
		Rule:  allowance.Rule{Name: "all-posts", Limits: allowance.Limits{{Count: 3, Period: time.Hour}}},
		Match: "POST /",
	})
	e := newEnv(t, rules, 0)
	k := e.key("frank")
	e.do("POST", "/v1/tasks", k, sleep30)
	before := usageOf(t, e, k)
	r := e.do("POST", "/v1/tasks", k, sleep30)
	r.problem(t, http.StatusConflict)
	if got := r.remaining(t); got != 2 {
		t.Errorf("409 shows remaining %d, want 2 (all-posts, the most restrictive, unchanged)", got)
	}
	if after := usageOf(t, e, k); after["all-posts"] != before["all-posts"] || after["create-task"] != before["create-task"] {
		t.Errorf("usage before the 409 %v, after %v; want unchanged", before, after)
	}
}

// usageOf returns the used count of the first limit of each rule.
func usageOf(t *testing.T, e *env, key string) map[string]int64 {
	t.Helper()
	var rl struct {
		Limits []usage `json:"limits"`
	}
	e.do("GET", "/v1/ratelimit", key, "").json(t, &rl)
	out := map[string]int64{}
	for _, u := range rl.Limits {
		if _, ok := out[u.Rule]; !ok {
			out[u.Rule] = u.Used
		}
	}
	return out
}

// countingStore counts the API key lookups of a task store.
type countingStore struct {
	tasks.Store
	lookups atomic.Int64
	hold    atomic.Pointer[barrier] // when set, each lookup waits there for the others
}

// barrier lets n goroutines wait until all n have arrived, or 5 s passed.
type barrier struct {
	arrived atomic.Int64
	n       int64
	all     chan struct{}
}

func newBarrier(n int) *barrier { return &barrier{n: int64(n), all: make(chan struct{})} }

func (b *barrier) wait() {
	if b.arrived.Add(1) == b.n {
		close(b.all)
	}
	select {
	case <-b.all:
	case <-time.After(5 * time.Second):
	}
}

func (c *countingStore) UserByAPIKey(ctx context.Context, keyHash []byte) (string, error) {
	c.lookups.Add(1)
	if b := c.hold.Load(); b != nil {
		b.wait()
	}
	return c.Store.UserByAPIKey(ctx, keyHash)
}

// manualClock is taskd's one fake clock for tests, for the key cache.
type manualClock = storetest.Clock

func newManualClock() *manualClock { return storetest.NewClock(time.Unix(0, 0)) }

// frontDoor returns an option that counts key lookups in counter, runs the
// key cache on clock, and, when failures is not zero, limits failed
// authentications per client address, the address being the last one of
// X-Forwarded-For (the test's client is a trusted proxy).
func frontDoor(t *testing.T, failures allowance.Limit, counter **countingStore, clock *manualClock) func(*Options, allowance.Store) {
	return func(o *Options, limits allowance.Store) {
		cs := &countingStore{Store: o.Store}
		*counter = cs
		o.Store = cs
		o.KeyCache.Now = clock.Now
		o.ClientIP = httplimit.ClientIP(netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128"))
		if failures != (allowance.Limit{}) {
			l, err := allowance.NewLimiter(limits, AuthFailureRule(failures))
			if err != nil {
				t.Fatal(err)
			}
			o.AuthFailures = l
		}
	}
}

// from sends GET /v1/tasks from the client address ip with the
// Authorization header auth (none when empty).
func (e *env) from(ip, authorization string) response {
	e.t.Helper()
	req, err := http.NewRequest("GET", e.srv.URL+"/v1/tasks", nil)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("X-Forwarded-For", ip)
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	res, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return response{res.StatusCode, res.Header, b}
}

// limited checks that r is the 429 of too many failed authentications and
// returns its Retry-After.
func (r response) limited(t *testing.T) int {
	t.Helper()
	r.problem(t, http.StatusTooManyRequests)
	var p struct {
		Problem
		Rule       string `json:"rule"`
		Limit      string `json:"limit"`
		RetryAfter int    `json:"retry_after"`
	}
	r.json(t, &p)
	retry, err := strconv.Atoi(r.header.Get("Retry-After"))
	if err != nil || retry < 1 || retry > 120 {
		t.Fatalf("Retry-After %q, want 1 to 120 seconds (a sliding window of a minute)", r.header.Get("Retry-After"))
	}
	if p.Type != typeAuthFailures || p.Rule != AuthFailureRuleName || p.Limit != "3/minute" || p.RetryAfter != retry {
		t.Fatalf("429 %+v (Retry-After %d), want type %s, rule %s, limit 3/minute and retry_after = Retry-After", p, retry, typeAuthFailures, AuthFailureRuleName)
	}
	return retry
}

// Failed authentications are limited per client address: after three (a
// missing key, a malformed one, an unknown one) the fourth gets 429 with
// Retry-After, before its key is looked up, while another address is not
// affected. From the locked address, a key used before keeps working (from
// the cache, and looked up again once stale), a key never seen gets 429
// until the window has passed, and a valid key's charge is refunded.
func TestAuthFailuresLimitedPerIP(t *testing.T) {
	var store *countingStore
	clock := newManualClock()
	e := newEnv(t, generous(), 0, frontDoor(t, allowance.Limit{Count: 3, Period: time.Minute}, &store, clock))
	alice, bob := e.key("alice"), e.key("bob")
	const a, b = "192.0.2.1", "2001:db8::1"

	if r := e.from(a, "Bearer "+alice); r.status != http.StatusOK {
		t.Fatalf("alice from %s: %d %s", a, r.status, r.body)
	}
	lookups := store.lookups.Load()
	for _, h := range []string{"", "Bearer nope", "Bearer " + unknownKey()} {
		e.from(a, h).problem(t, http.StatusUnauthorized)
	}
	if got := store.lookups.Load() - lookups; got != 1 {
		t.Fatalf("%d lookups for a missing, a malformed and an unknown key; want 1", got)
	}
	lookups = store.lookups.Load()
	retry := e.from(a, "Bearer "+unknownKey()).limited(t)
	e.from(a, "").limited(t)
	if got := store.lookups.Load() - lookups; got != 0 {
		t.Fatalf("an address over the limit caused %d lookups, want 0", got)
	}
	e.from(b, "Bearer "+unknownKey()).problem(t, http.StatusUnauthorized) // another address

	// Alice's key, found a moment ago, works from the locked address, from
	// the cache and without a lookup.
	if r := e.from(a, "Bearer "+alice); r.status != http.StatusOK {
		t.Fatalf("alice from the locked address: %d %s", r.status, r.body)
	}
	if got := store.lookups.Load() - lookups; got != 1 {
		t.Fatalf("%d lookups, want 1 (the unknown key from %s)", got, b)
	}
	// Stale after a minute, it is looked up again, without a charge.
	clock.Advance(auth.DefaultValidTTL)
	if r := e.from(a, "Bearer "+alice); r.status != http.StatusOK {
		t.Fatalf("alice's stale key from the locked address: %d %s", r.status, r.body)
	}
	if got := store.lookups.Load() - lookups; got != 2 {
		t.Fatalf("%d lookups, want 2 (alice's stale key looked up again)", got)
	}
	// Bob's key was never seen: from the locked address it is charged
	// like any other, so 429 without a lookup; from elsewhere it works.
	e.from(a, "Bearer "+bob).limited(t)
	if got := store.lookups.Load() - lookups; got != 2 {
		t.Fatalf("bob's key from the locked address was looked up")
	}

	// Once the window has passed, bob's key works from a; its charge is
	// refunded, so three failures are still allowed after it.
	e.advance(time.Duration(retry)*time.Second + 2*time.Minute)
	if r := e.from(a, "Bearer "+bob); r.status != http.StatusOK {
		t.Fatalf("bob from %s after the window: %d %s", a, r.status, r.body)
	}
	for range 3 {
		e.from(a, "Bearer nope").problem(t, http.StatusUnauthorized)
	}
	e.from(a, "Bearer nope").limited(t)

	m := string(e.do("GET", "/metrics", "", "").body)
	for _, want := range []string{
		`taskd_auth_requests_total{result="limited"} 4`,
		`taskd_auth_requests_total{result="no_key"} 5`,
		`taskd_auth_requests_total{result="valid_cached"} 1`,
		`taskd_auth_requests_total{result="valid"} 3`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// Many users behind one address (an office NAT, or a restart that empties
// the key cache) arrive at once with keys the cache has never seen: valid
// keys cost the address no failed authentication, so ten of them whose
// lookups all overlap, against a limit of three, all get in, and three
// failures are still allowed after them.
func TestValidColdKeysCostNothing(t *testing.T) {
	var store *countingStore
	e := newEnv(t, generous(), 0, frontDoor(t, allowance.Limit{Count: 3, Period: time.Minute}, &store, newManualClock()))
	const a, n = "192.0.2.7", 10
	keys := make([]string, n)
	for i := range keys {
		keys[i] = e.key(fmt.Sprintf("user%d", i))
	}
	// Every lookup waits until all n are in flight (or, should fewer come,
	// a few seconds).
	store.hold.Store(newBarrier(n))
	var wg sync.WaitGroup
	codes := make([]int, n)
	for i := range keys {
		wg.Go(func() { codes[i] = e.from(a, "Bearer "+keys[i]).status })
	}
	wg.Wait()
	store.hold.Store(nil)
	for i, c := range codes {
		if c != http.StatusOK {
			t.Errorf("user%d's first request from %s: %d; want 200", i, a, c)
		}
	}
	for range 3 {
		e.from(a, "Bearer "+unknownKey()).problem(t, http.StatusUnauthorized)
	}
	e.from(a, "Bearer "+unknownKey()).limited(t)
}

func unknownKey() string {
	k, _ := auth.NewKey()
	return k
}

// An unknown key is answered from the cache for auth.DefaultUnknownTTL: a
// flood of one key costs one lookup; a key created after it was cached as
// unknown works once the TTL is over.
func TestUnknownKeyCached(t *testing.T) {
	var store *countingStore
	clock := newManualClock()
	e := newEnv(t, generous(), 0, frontDoor(t, allowance.Limit{}, &store, clock))
	key, hash := auth.NewKey()
	for range 50 {
		e.from("192.0.2.1", "Bearer "+key).problem(t, http.StatusUnauthorized)
	}
	if n := store.lookups.Load(); n != 1 {
		t.Fatalf("50 requests with one unknown key made %d lookups, want 1", n)
	}
	if err := e.store.CreateAPIKey(context.Background(), "dave", hash); err != nil {
		t.Fatal(err)
	}
	clock.Advance(auth.DefaultUnknownTTL - time.Nanosecond)
	e.from("192.0.2.1", "Bearer "+key).problem(t, http.StatusUnauthorized)
	clock.Advance(time.Nanosecond)
	if r := e.from("192.0.2.1", "Bearer "+key); r.status != http.StatusOK {
		t.Fatalf("the key created meanwhile, once the TTL is over: %d %s", r.status, r.body)
	}
	for range 10 {
		if r := e.from("192.0.2.1", "Bearer "+key); r.status != http.StatusOK {
			t.Fatalf("dave: %d %s", r.status, r.body)
		}
	}
	if n := store.lookups.Load(); n != 2 {
		t.Fatalf("%d lookups, want 2: dave's key is answered from the cache", n)
	}
	if v, u := e.api.keys.Len(); v != 1 || u != 0 {
		t.Errorf("key cache holds %d valid and %d unknown keys, want 1 and 0", v, u)
	}
}

// failingStore is a limits store that is down.
type failingStore struct{ allowance.Store }

func (failingStore) Charge(context.Context, allowance.Request, *allowance.Decision) error {
	return errors.New("connection refused")
}

// When the limits store fails, failed authentications are not limited:
// they get 401, not 503.
func TestAuthFailuresStoreDown(t *testing.T) {
	var store *countingStore
	e := newEnv(t, generous(), 0, frontDoor(t, allowance.Limit{Count: 1, Period: time.Minute}, &store, newManualClock()),
		func(o *Options, limits allowance.Store) {
			l, err := allowance.NewLimiter(failingStore{limits}, AuthFailureRule(allowance.Limit{Count: 1, Period: time.Minute}))
			if err != nil {
				t.Fatal(err)
			}
			o.AuthFailures = l
		})
	k := e.key("erin")
	for range 3 {
		e.from("192.0.2.1", "Bearer nope").problem(t, http.StatusUnauthorized)
	}
	if r := e.from("192.0.2.1", "Bearer "+k); r.status != http.StatusOK {
		t.Fatalf("a valid key with the limits store down: %d %s", r.status, r.body)
	}
}

// With SeparateMetrics, GET /metrics is not served by Handler but by
// MetricsHandler, on a listener of its own.
func TestSeparateMetrics(t *testing.T) {
	e := newEnv(t, generous(), 0, func(o *Options, _ allowance.Store) { o.SeparateMetrics = true })
	p := e.do("GET", "/metrics", "", "").problem(t, http.StatusNotFound)
	if !strings.Contains(p.Detail, "metrics address") {
		t.Errorf("GET /metrics on the API address: %+v", p)
	}
	if r := e.do("GET", "/healthz", "", ""); r.status != http.StatusOK {
		t.Errorf("GET /healthz: %d", r.status)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ms := httptest.NewUnstartedServer(e.api.MetricsHandler())
	ms.Listener.Close()
	ms.Listener = ln
	ms.Start()
	t.Cleanup(ms.Close)
	get := func(method, path string) (int, string) {
		req, _ := http.NewRequest(method, ms.URL+path, nil)
		res, err := ms.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	if code, body := get("GET", "/metrics"); code != http.StatusOK || !strings.Contains(body, "taskd_auth_requests_total") {
		t.Fatalf("GET /metrics on the metrics address: %d\n%.300s", code, body)
	}
	if code, _ := get("POST", "/metrics"); code != http.StatusMethodNotAllowed {
		t.Errorf("POST /metrics on the metrics address: %d, want 405", code)
	}
	for _, path := range []string{"/healthz", "/v1/tasks"} {
		if code, _ := get("GET", path); code != http.StatusNotFound {
			t.Errorf("GET %s on the metrics address: %d, want 404", path, code)
		}
	}
}

// observer returns the Prometheus Observer of the middleware, as taskd's.
func observer(t testing.TB, reg *prometheus.Registry) httplimit.Observer {
	t.Helper()
	obs, err := promlimit.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	return obs
}
