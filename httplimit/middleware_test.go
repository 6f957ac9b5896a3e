package httplimit

import (
	"bufio"
	"encoding/json"
	"fmt"
	"hash/maphash"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/allowancehq/allowance"
	"github.com/prometheus/client_golang/prometheus"
)

func TestMatch(t *testing.T) {
	m := mustNew(t, Config{Store: newMemstore(t, newClock()), Rules: []Rule{
		rule(t, "create-task", "POST /v1/tasks", "5/minute"),
		rule(t, "read", "GET /v1/", "600/minute"),
		rule(t, "task", "/v1/tasks/{id}", "100/minute"),
		rule(t, "everything", "/", "1000/minute"),
		rule(t, "admin-host", "admin.example.com/", "10/minute"),
		rule(t, "create-task-2", "POST /v1/tasks", "50/day"),
		rule(t, "exact", "/v1/exact/{$}", "10/minute"),
	}})
	tests := []struct {
		method, target string
		want           []string
	}{
		{"POST", "/v1/tasks", []string{"create-task", "everything", "create-task-2"}},
		{"GET", "/v1/tasks", []string{"read", "everything"}},
		{"HEAD", "/v1/tasks", []string{"read", "everything"}},
		{"PUT", "/v1/tasks", []string{"everything"}},
		{"GET", "/v1/tasks/42", []string{"read", "task", "everything"}},
		{"DELETE", "/v1/tasks/42", []string{"task", "everything"}},
		{"GET", "/healthz", []string{"everything"}},
		{"GET", "http://admin.example.com/x", []string{"everything", "admin-host"}},
		{"GET", "http://admin.example.com:8443/x", []string{"everything", "admin-host"}},
		{"GET", "/v1/exact/", []string{"read", "everything", "exact"}},
		{"GET", "/v1/exact/more", []string{"read", "everything"}},
		{"GET", "/v1/../v1/tasks", []string{"read", "everything"}},
		{"POST", "/v1//tasks", []string{"create-task", "everything", "create-task-2"}},
		{"POST", "/v1/./tasks", []string{"create-task", "everything", "create-task-2"}},
		{"GET", "/v1", []string{"everything"}},
	}
	for _, tt := range tests {
		r := httptest.NewRequest(tt.method, tt.target, nil)
		if got := m.Rules(r); !slices.Equal(got, tt.want) {
			t.Errorf("%s %s matches %q; want %q", tt.method, tt.target, got, tt.want)
		}
	}
}

// A request that matches no rule is not touched: no headers, no identity
// needed, no context state.
func TestUnmatchedPassesThrough(t *testing.T) {
	m := mustNew(t, Config{Store: newMemstore(t, newClock()), Rules: []Rule{rule(t, "create-task", "POST /v1/tasks", "1/minute")}})
	var applied []Charge
	h := m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		applied = Applied(r.Context())
		w.WriteHeader(http.StatusTeapot)
	}))
	for range 3 {
		w := do(h, "GET", "/v1/tasks", "")
		if w.Code != http.StatusTeapot || w.Header().Get("RateLimit") != "" || applied != nil {
			t.Fatalf("unmatched request: status %d, RateLimit %q, applied %v", w.Code, w.Header().Get("RateLimit"), applied)
		}
	}
}

func TestNewErrors(t *testing.T) {
	store := newMemstore(t, newClock())
	good := rule(t, "r", "/", "1/minute")
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no store", Config{Rules: []Rule{good}}, "Store is nil"},
		{"no rules", Config{Store: store}, "no rules"},
		{"bad pattern", Config{Store: store, Rules: []Rule{rule(t, "r", "FETCH", "1/minute")}}, `match "FETCH"`},
		{"bad wildcard", Config{Store: store, Rules: []Rule{rule(t, "r", "/x/{a", "1/minute")}}, `rule "r": match "/x/{a"`},
		{"empty match", Config{Store: store, Rules: []Rule{rule(t, "r", " ", "1/minute")}}, "match is empty"},
		{"duplicate name", Config{Store: store, Rules: []Rule{good, good}}, `rule "r" is given twice`},
		{"bad status", Config{Store: store, Rules: []Rule{{Rule: good.Rule, Match: "/", RefundOn: []int{99}}}}, "refund_on status 99"},
		{"invalid rule", Config{Store: store, Rules: []Rule{{Rule: allowance.Rule{Name: "x"}, Match: "/"}}}, `rule "x": no limits`},
		{"bad anonymous", Config{Store: store, Rules: []Rule{good}, Anonymous: 7}, "unknown Anonymous"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New: %v; want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestHeaders(t *testing.T) {
	c := newClock()
	c.Advance(23 * time.Second) // 12:00:23: 37 s left in the minute
	m := mustNew(t, Config{Store: newMemstore(t, c), Rules: []Rule{
		rule(t, "create-task", "POST /v1/tasks", "5/minute; 50/day"),
		rule(t, "all", "/", "100/hour"),
	}})
	h := m.Handler(status(http.StatusAccepted))

	w := do(h, "POST", "/v1/tasks", "alice")
	if w.Code != http.StatusAccepted {
		t.Fatalf("status %d", w.Code)
	}
	want := map[string]string{
		"RateLimit-Policy":      `"create-task/60s";q=5;w=60, "create-task/86400s";q=50;w=86400, "all";q=100;w=3600`,
		"RateLimit":             `"create-task/60s";r=4;t=37, "create-task/86400s";r=49;t=43177, "all";r=99;t=3577`,
		"X-RateLimit-Limit":     "5",
		"X-RateLimit-Remaining": "4",
		"X-RateLimit-Reset":     "37",
	}
	for k, v := range want {
		if got := w.Header().Values(k); len(got) != 1 || got[0] != v {
			t.Errorf("%s = %q; want %q", k, got, v)
		}
	}

	// A single-limit rule's item is the rule's name.
	w = do(h, "GET", "/v1/tasks", "alice")
	if got, want := w.Header().Get("RateLimit"), `"all";r=98;t=3577`; got != want {
		t.Errorf("RateLimit = %q; want %q", got, want)
	}
	if got, want := w.Header().Get("RateLimit-Policy"), `"all";q=100;w=3600`; got != want {
		t.Errorf("RateLimit-Policy = %q; want %q", got, want)
	}
}

// The X-RateLimit headers are those of the most restrictive limit, wherever
// its item is in RateLimit: the one with the fewest remaining, or on a
// denial the denying one.
func TestHeadersMostRestrictive(t *testing.T) {
	c := newClock()
	c.Advance(23 * time.Second)
	m := mustNew(t, Config{Store: newMemstore(t, c), Rules: []Rule{
		rule(t, "create-task", "POST /v1/tasks", "5/minute"),
		rule(t, "all", "/", "1/hour"),
	}})
	h := m.Handler(status(http.StatusAccepted))
	for _, tt := range []struct {
		code         int
		rateLimit, x string
	}{
		{http.StatusAccepted, `"create-task";r=4;t=37, "all";r=0;t=3577`, "1 0 3577"},
		{http.StatusTooManyRequests, `"create-task";r=4;t=37, "all";r=0;t=3577`, "1 0 3577"},
	} {
		w := do(h, "POST", "/v1/tasks", "alice")
		x := w.Header().Get("X-RateLimit-Limit") + " " + w.Header().Get("X-RateLimit-Remaining") + " " + w.Header().Get("X-RateLimit-Reset")
		if got := w.Header().Get("RateLimit"); w.Code != tt.code || got != tt.rateLimit || x != tt.x {
			t.Errorf("status %d, RateLimit %q, X-RateLimit-Limit, -Remaining, -Reset %q; want %d, %q, %q", w.Code, got, x, tt.code, tt.rateLimit, tt.x)
		}
	}
}

func TestDeny(t *testing.T) {
	c := newClock()
	c.Advance(23 * time.Second)
	m := mustNew(t, Config{Store: newMemstore(t, c), Rules: []Rule{rule(t, "create-task", "POST /v1/tasks", "2/minute")}})
	calls := 0
	h := m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { calls++ }))
	do(h, "POST", "/v1/tasks", "alice")
	do(h, "POST", "/v1/tasks", "alice")
	w := do(h, "POST", "/v1/tasks", "alice")
	if w.Code != http.StatusTooManyRequests || calls != 2 {
		t.Fatalf("third request: status %d, handler calls %d; want 429 and 2", w.Code, calls)
	}
	if got := w.Header().Get("Content-Type"); got != "application/problem+json" {
		t.Errorf("Content-Type %q", got)
	}
	if got := w.Header().Get("Retry-After"); got != "37" {
		t.Errorf("Retry-After %q; want 37", got)
	}
	if got := w.Header().Get("RateLimit"); got != `"create-task";r=0;t=37` {
		t.Errorf("RateLimit %q", got)
	}
	if got := w.Header().Get("X-RateLimit-Remaining"); got != "0" {
		t.Errorf("X-RateLimit-Remaining %q", got)
	}
	var p map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"type": "about:blank", "title": "Too Many Requests", "status": 429.0, "instance": "/v1/tasks",
		"rule": "create-task", "limit": "2/minute", "retry_after": 37.0,
		"detail": `Rate limit "create-task" (2/minute) is exhausted; retry in 37 seconds.`,
	}
	for k, v := range want {
		if p[k] != v {
			t.Errorf("problem %s = %v; want %v", k, p[k], v)
		}
	}
	// Another user has their own budget.
	if w := do(h, "POST", "/v1/tasks", "bob"); w.Code != http.StatusOK {
		t.Errorf("bob: status %d", w.Code)
	}
}

func TestAnonymous(t *testing.T) {
	for _, tt := range []struct {
		anon Anonymous
		want int
	}{{RejectUnauthorized, 401}, {RejectBadRequest, 400}, {LimitByIP, 200}} {
		m := mustNew(t, Config{Store: newMemstore(t, newClock()), Anonymous: tt.anon, Rules: []Rule{rule(t, "r", "/", "1/minute")}})
		var applied []Charge
		h := m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { applied = Applied(r.Context()) }))
		w := do(h, "GET", "/", "")
		if w.Code != tt.want {
			t.Fatalf("anonymous %d: status %d; want %d", tt.anon, w.Code, tt.want)
		}
		if tt.anon != LimitByIP {
			if ct := w.Header().Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("anonymous %d: Content-Type %q", tt.anon, ct)
			}
			continue
		}
		if len(applied) != 1 || applied[0].UserID != "ip:192.0.2.1" {
			t.Fatalf("limited by IP: applied %+v; want user ip:192.0.2.1", applied)
		}
		// The IP's budget is its own: a user of that name does not share it.
		if w := do(h, "GET", "/", "192.0.2.1"); w.Code != 200 {
			t.Errorf("user named like the IP: status %d", w.Code)
		}
		if w := do(h, "GET", "/", ""); w.Code != 429 {
			t.Errorf("second anonymous request: status %d; want 429", w.Code)
		}
	}
}

func TestKeyError(t *testing.T) {
	m := mustNew(t, Config{Store: newMemstore(t, newClock()), Key: ClientIP(), Rules: []Rule{rule(t, "r", "/", "1/minute")}})
	r := httptest.NewRequest("GET", "/", nil)
	r.RemoteAddr = "garbage"
	w := httptest.NewRecorder()
	m.Handler(status(200)).ServeHTTP(w, r)
	if w.Code != 400 || !strings.Contains(w.Body.String(), "garbage") {
		t.Fatalf("status %d body %s; want 400 naming the address", w.Code, w.Body)
	}
}

func TestFailurePolicy(t *testing.T) {
	for _, open := range []bool{true, false} {
		var l logs
		reg := prometheus.NewRegistry()
		st := &failing{Store: newMemstore(t, newClock()), err: errDown}
		r := rule(t, "r", "/", "5/minute")
		r.FailOpen = open
		m := mustNew(t, Config{Store: st, Rules: []Rule{r}, Logger: l.logger(), Observer: observe(t, reg)})
		var applied []Charge
		h := m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { applied = Applied(r.Context()) }))
		st.set(true, false)
		w := do(h, "GET", "/", "alice")
		if open {
			if w.Code != 200 || w.Header().Get("RateLimit") != "" || applied != nil {
				t.Errorf("fail open: status %d, RateLimit %q, applied %v; want served, unlimited", w.Code, w.Header().Get("RateLimit"), applied)
			}
			if n := counter(t, reg, "allowance_http_checks_total", map[string]string{"rule": "r", "outcome": "error_open"}); n != 1 {
				t.Errorf("error_open count %v", n)
			}
			if len(l.records(t, "rate limit store failed; serving the request unlimited (fail open)")) != 1 {
				t.Errorf("fail open not logged: %s", l.buf.String())
			}
		} else {
			if w.Code != 503 || w.Header().Get("Content-Type") != "application/problem+json" || w.Header().Get("Retry-After") != "1" {
				t.Errorf("fail closed: status %d, headers %v; want 503 problem", w.Code, w.Header())
			}
			if n := counter(t, reg, "allowance_http_checks_total", map[string]string{"rule": "r", "outcome": "error_closed"}); n != 1 {
				t.Errorf("error_closed count %v", n)
			}
		}
		st.set(false, false)
		if w := do(h, "GET", "/", "alice"); w.Code != 200 || w.Header().Get("X-RateLimit-Remaining") != "4" {
			t.Errorf("store back: status %d remaining %q", w.Code, w.Header().Get("X-RateLimit-Remaining"))
		}
	}
}

// A request matching a fail-open and a fail-closed rule fails closed.
func TestFailClosedWins(t *testing.T) {
	st := &failing{Store: newMemstore(t, newClock()), err: errDown}
	open := rule(t, "open", "/", "5/minute")
	open.FailOpen = true
	m := mustNew(t, Config{Store: st, Rules: []Rule{open, rule(t, "closed", "POST /", "5/minute")}, Logger: (&logs{}).logger()})
	st.set(true, false)
	h := m.Handler(status(200))
	if w := do(h, "GET", "/", "a"); w.Code != 200 {
		t.Errorf("GET (open only): %d", w.Code)
	}
	if w := do(h, "POST", "/", "a"); w.Code != 503 {
		t.Errorf("POST (open and closed): %d", w.Code)
	}
}

func TestTimeout(t *testing.T) {
	st := &failing{Store: newMemstore(t, newClock()), blockUntilCanceled: true}
	var l logs
	m := mustNew(t, Config{Store: st, Rules: []Rule{rule(t, "r", "/", "5/minute")}, Timeout: 20 * time.Millisecond, Logger: l.logger()})
	w := do(m.Handler(status(200)), "GET", "/", "alice")
	if w.Code != 503 {
		t.Fatalf("status %d; want 503", w.Code)
	}
	recs := l.records(t, "rate limit store failed; answering 503 (fail closed)")
	if len(recs) != 1 || !strings.Contains(recs[0]["error"].(string), "deadline exceeded") {
		t.Fatalf("logs: %s", l.buf.String())
	}
}

// The wrapped ResponseWriter keeps flushing and hijacking working through
// http.ResponseController and the Flusher interface.
func TestResponseController(t *testing.T) {
	m := mustNew(t, Config{Store: newMemstore(t, newClock()), Rules: []Rule{rule(t, "r", "/", "100/minute")}})
	mux := http.NewServeMux()
	mux.HandleFunc("/flush", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "a")
		if err := http.NewResponseController(w).Flush(); err != nil {
			t.Errorf("Flush: %v", err)
		}
		if _, ok := w.(http.Flusher); !ok {
			t.Error("wrapped writer is not an http.Flusher")
		}
		if err := http.NewResponseController(w).SetWriteDeadline(time.Now().Add(time.Minute)); err != nil {
			t.Errorf("SetWriteDeadline: %v", err)
		}
	})
	mux.HandleFunc("/copy", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := w.(io.ReaderFrom); !ok {
			t.Error("wrapped writer is not an io.ReaderFrom")
		}
		_, _ = io.Copy(w, strings.NewReader("copied"))
	})
	mux.HandleFunc("/hijack", func(w http.ResponseWriter, r *http.Request) {
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("Hijack: %v", err)
			return
		}
		defer conn.Close()
		_, _ = buf.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nhijacked")
		_ = buf.Flush()
	})
	srv := httptest.NewServer(m.Handler(mux))
	defer srv.Close()

	req, _ := http.NewRequest("GET", srv.URL+"/flush", nil)
	req.Header.Set("X-User", "alice")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "a" || resp.Header.Get("RateLimit") == "" {
		t.Fatalf("flush: body %q RateLimit %q", body, resp.Header.Get("RateLimit"))
	}

	req, _ = http.NewRequest("GET", srv.URL+"/copy", nil)
	req.Header.Set("X-User", "alice")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "copied" || resp.StatusCode != 200 || resp.Header.Get("X-RateLimit-Remaining") != "98" {
		t.Fatalf("copy: %d body %q remaining %q", resp.StatusCode, body, resp.Header.Get("X-RateLimit-Remaining"))
	}

	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = io.WriteString(conn, "GET /hijack HTTP/1.1\r\nHost: x\r\nX-User: alice\r\n\r\n")
	resp, err = http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	if string(body) != "hijacked" {
		t.Fatalf("hijack: body %q", body)
	}
}

func TestMetricsChecks(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := mustNew(t, Config{Store: newMemstore(t, newClock()), Observer: observe(t, reg), Rules: []Rule{
		rule(t, "a", "/", "2/minute"), rule(t, "b", "POST /", "100/minute"),
	}})
	h := m.Handler(status(200))
	for range 3 {
		do(h, "POST", "/", "alice")
	}
	for _, c := range []struct {
		rule, outcome string
		want          float64
	}{{"a", "allowed", 2}, {"a", "denied", 1}, {"b", "allowed", 2}, {"b", "denied", 1}} {
		if got := counter(t, reg, "allowance_http_checks_total", map[string]string{"rule": c.rule, "outcome": c.outcome}); got != c.want {
			t.Errorf("checks{rule=%s,outcome=%s} = %v; want %v", c.rule, c.outcome, got, c.want)
		}
	}
	mfs, _ := reg.Gather()
	var found bool
	for _, mf := range mfs {
		if mf.GetName() == "allowance_http_store_duration_seconds" {
			found = mf.GetMetric()[0].GetHistogram().GetSampleCount() == 3
		}
	}
	if !found {
		t.Error("store latency histogram did not see 3 checks")
	}
	// A second middleware on the same registry shares the series.
	if _, err := New(Config{Store: newMemstore(t, newClock()), Observer: observe(t, reg), Rules: []Rule{rule(t, "a", "/", "2/minute")}}); err != nil {
		t.Fatalf("second middleware on one registry: %v", err)
	}
}

func TestPeek(t *testing.T) {
	m := mustNew(t, Config{Store: newMemstore(t, newClock()), Rules: []Rule{
		rule(t, "a", "/", "2/minute; 10/day"), rule(t, "b", "POST /", "100/minute"),
	}})
	do(m.Handler(status(200)), "POST", "/", "alice")
	u, err := m.Peek(t.Context(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	if len(u) != 3 || u[0].Rule != "a" || u[0].Used != 1 || u[2].Rule != "b" || u[2].Remaining != 99 {
		t.Fatalf("Peek = %+v", u)
	}
}

// The match cache holds a few recent requests per slot; thousands of
// distinct paths evict each other, and every answer stays that of the
// ServeMux.
func TestMatchCache(t *testing.T) {
	m := mustNew(t, Config{Store: newMemstore(t, newClock()), Rules: []Rule{
		rule(t, "task", "GET /v1/tasks/{id}", "100/minute"),
		rule(t, "all", "/", "100/minute"),
	}})
	for round := range 2 {
		for i := range 3000 {
			target := "/v1/tasks/" + strconv.Itoa(i)
			method := "GET"
			if i%3 == 0 {
				method = "POST"
			}
			r := httptest.NewRequest(method, target, nil)
			got, want := m.match(r), m.matchMux(r)
			if got != want || (method == "GET") != (got == 3) {
				t.Fatalf("round %d: %s %s: cached %b, mux %b", round, method, target, got, want)
			}
		}
	}
}

// Only the path is hashed to find a request's cache slot; the usual methods
// on one path, and hosts that differ at either end, still get slots of their
// own.
func TestMatchCacheSlots(t *testing.T) {
	c := &matchCache{seed: maphash.MakeSeed()}
	seen := map[*atomic.Pointer[matchEntry]]string{}
	for _, method := range []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"} {
		for _, host := range []string{"example.com", "api.example.com", "www.example.com", "api.example.net"} {
			r := httptest.NewRequest(method, "http://"+host+"/v1/tasks", nil)
			s := c.slot(r)
			if prev, ok := seen[s]; ok {
				t.Errorf("%s %s shares a slot with %s", method, host, prev)
			}
			seen[s] = method + " " + host
		}
	}
	// Per-tenant hosts of one length that differ only inside.
	seen = map[*atomic.Pointer[matchEntry]]string{}
	for i := range 8 {
		host := fmt.Sprintf("t%02d.example.com", i)
		s := c.slot(httptest.NewRequest("GET", "http://"+host+"/v1/tasks", nil))
		if prev, ok := seen[s]; ok {
			t.Errorf("GET %s shares a slot with %s", host, prev)
		}
		seen[s] = "GET " + host
	}
}

// LimitByIP and the default Key find the client behind trusted proxies.
func TestClientBehindProxy(t *testing.T) {
	proxies := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	for _, cfg := range []Config{
		{Anonymous: LimitByIP, Key: FromHeader("X-User")},
		{}, // Key nil: ClientIP(TrustedProxies...)
	} {
		cfg.Store, cfg.TrustedProxies, cfg.Rules = newMemstore(t, newClock()), proxies, []Rule{rule(t, "r", "/", "5/minute")}
		m, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		var applied []Charge
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = "10.0.0.1:443"
		r.Header.Set("X-Forwarded-For", "6.6.6.6, 198.51.100.7")
		m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { applied = Applied(r.Context()) })).ServeHTTP(httptest.NewRecorder(), r)
		want := "198.51.100.7"
		if cfg.Anonymous == LimitByIP {
			want = "ip:" + want
		}
		if len(applied) != 1 || applied[0].UserID != want {
			t.Errorf("anonymous %d: applied %+v; want user %s", cfg.Anonymous, applied, want)
		}
	}
}
