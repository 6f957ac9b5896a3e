package httplimit

import (
	"net/http"
	"testing"

	"github.com/allowancehq/allowance/internal/redistest"
	"github.com/allowancehq/allowance/redisstore"
)

// redisBackend starts a redis-server of its own for each test (redistest
// skips the test when redis-server is missing, and fails it when CI=true);
// down kills that server, so store calls fail as they do in production.
func redisBackend(t *testing.T) backend {
	in := redistest.Start(t)
	s, err := redisstore.Open(t.Context(), "redis://"+in.Addr()+"/0?dial_timeout=500ms")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return backend{store: s, down: in.Stop}
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
