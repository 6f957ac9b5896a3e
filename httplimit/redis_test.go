package httplimit

import (
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/allowancehq/allowance/internal/redistest"
	"github.com/allowancehq/allowance/redisstore/rueidisstore"
)

// redisBackend starts a redis-server of its own for each test (redistest
// skips the test when redis-server is missing, and fails it when CI=true);
// down kills that server, so store calls fail as they do in production.
func redisBackend(t *testing.T) backend {
	in := redistest.Start(t)
	s, err := rueidisstore.Open(t.Context(), "redis://"+in.Addr()+"/0?dial_timeout=500ms")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return backend{store: s, down: in.Stop, up: in.Restart}
}

// TestRefundsRedis runs the refund scenarios over a real Redis.
func TestRefundsRedis(t *testing.T) { testRefunds(t, redisBackend) }

// Headers over Redis: the same rule, two users, the same answers as over
// memstore.
func TestHeadersRedis(t *testing.T) {
	e := newEnv(t, redisBackend, rule(t, "create-task", "POST /v1/tasks", "2/day"))
	h := e.m.Handler(status(http.StatusAccepted))
	var remaining []string
	for range 3 {
		w := do(h, "POST", "/v1/tasks", "alice")
		remaining = append(remaining, w.Header().Get("X-RateLimit-Remaining")+"/"+w.Header().Get("RateLimit-Policy"))
		if len(remaining) == 3 && w.Code != http.StatusTooManyRequests {
			t.Fatalf("third request: %d", w.Code)
		}
	}
	want := []string{`1/"create-task";q=2;w=86400`, `0/"create-task";q=2;w=86400`, `0/"create-task";q=2;w=86400`}
	for i := range want {
		if remaining[i] != want[i] {
			t.Fatalf("remaining/policy %q; want %q", remaining, want)
		}
	}
	if w := do(h, "POST", "/v1/tasks", "bob"); w.Code != http.StatusAccepted {
		t.Fatalf("bob: %d", w.Code)
	}
}

// TestFailurePolicyRedis: with the redis-server stopped, a fail-open rule
// serves the request unlimited (logged and counted) and a fail-closed one
// answers 503 problem+json with Retry-After, both within the check
// timeout; when the server is back on its address the same middleware
// limits again, without a restart.
func TestFailurePolicyRedis(t *testing.T) {
	for _, open := range []bool{true, false} {
		in := redistest.Start(t)
		s, err := rueidisstore.Open(t.Context(), "redis://"+in.Addr()+"/0?dial_timeout=500ms")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		var l logs
		reg := prometheus.NewRegistry()
		r := rule(t, "r", "/", "5/day")
		r.FailOpen = open
		m := mustNew(t, Config{Store: s, Rules: []Rule{r}, Logger: l.logger(), Observer: observe(t, reg), Timeout: 2 * time.Second})
		var served int
		h := m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { served++ }))
		if w := do(h, "GET", "/", "alice"); w.Code != 200 || w.Header().Get("X-RateLimit-Remaining") != "4" {
			t.Fatalf("fail open %v, server up: status %d, remaining %q; want 200, 4", open, w.Code, w.Header().Get("X-RateLimit-Remaining"))
		}

		in.Stop()
		start := time.Now()
		w := do(h, "GET", "/", "alice")
		if took := time.Since(start); took > 3*time.Second {
			t.Errorf("fail open %v, server down: the request took %v; want it answered within the check timeout", open, took)
		}
		if open {
			if w.Code != 200 || served != 2 || w.Header().Get("RateLimit") != "" {
				t.Errorf("fail open, server down: status %d, served %d, RateLimit %q; want served unlimited", w.Code, served, w.Header().Get("RateLimit"))
			}
			if n := counter(t, reg, "allowance_http_checks_total", map[string]string{"rule": "r", "outcome": "error_open"}); n != 1 {
				t.Errorf("error_open count %v; want 1", n)
			}
			if len(l.records(t, "rate limit store failed; serving the request unlimited (fail open)")) != 1 {
				t.Errorf("fail open not logged: %s", l.buf.String())
			}
		} else {
			if w.Code != 503 || served != 1 || w.Header().Get("Content-Type") != "application/problem+json" || w.Header().Get("Retry-After") != "1" {
				t.Errorf("fail closed, server down: status %d, served %d, headers %v; want 503 problem+json, not served", w.Code, served, w.Header())
			}
			if n := counter(t, reg, "allowance_http_checks_total", map[string]string{"rule": "r", "outcome": "error_closed"}); n != 1 {
				t.Errorf("error_closed count %v; want 1", n)
			}
			if len(l.records(t, "rate limit store failed; answering 503 (fail closed)")) != 1 {
				t.Errorf("fail closed not logged: %s", l.buf.String())
			}
		}

		// Back on the same address, with an empty dataset: limited again.
		in.Restart()
		deadline := time.Now().Add(10 * time.Second)
		for {
			w := do(h, "GET", "/", "alice")
			if w.Code == 200 && w.Header().Get("X-RateLimit-Remaining") == "4" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("fail open %v, server back: status %d, remaining %q; want 200 limited again", open, w.Code, w.Header().Get("X-RateLimit-Remaining"))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}
