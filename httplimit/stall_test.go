package httplimit

import (
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/allowancehq/allowance"
	"github.com/allowancehq/allowance/internal/redistest"
	"github.com/allowancehq/allowance/redisstore/rueidisstore"
)

// TestStallRedis stalls a real redis-server (SIGSTOP) while requests come
// in, so that their checks time out after the charge script was sent: each
// charge is uncertain, and lands when the server goes on (SIGCONT). Whatever
// the request's fate, the model says what must be charged afterwards:
//
//   - a 409 whose handler asks for a refund (fail open): nothing;
//   - a request served unlimited (fail open): nothing, by design;
//   - a 503 (fail closed): nothing.
//
// The one request made before the stall stays charged, for every algorithm.
// The metrics add up: every uncertain charge is settled once, none pending.
func TestStallRedis(t *testing.T) {
	const stalled = 4
	cases := []struct {
		name     string
		failOpen bool
		handler  http.Handler
		want     int // status of the stalled requests
	}{
		{"fail open, 409 refunded", true, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = Refund(r.Context(), "conflict")
			w.WriteHeader(http.StatusConflict)
		}), http.StatusConflict},
		{"fail open, served", true, status(http.StatusAccepted), http.StatusAccepted},
		{"fail closed", false, status(http.StatusAccepted), http.StatusServiceUnavailable},
	}
	algs := []allowance.Algorithm{allowance.FixedWindow, allowance.SlidingWindow, allowance.SlidingLog, allowance.GCRA}
	for _, c := range cases {
		for _, alg := range algs {
			t.Run(c.name+"/"+alg.String(), func(t *testing.T) {
				t.Parallel()
				in := redistest.Start(t)
				s, err := rueidisstore.Open(t.Context(), "redis://"+in.Addr()+"/0")
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = s.Close() })
				var l logs
				reg := prometheus.NewRegistry()
				r := rule(t, "submit", "/", "100/day")
				r.Algorithm, r.FailOpen = alg, c.failOpen
				m := mustNew(t, Config{Store: s, Rules: []Rule{r}, Logger: l.logger(), Observer: observe(t, reg), Timeout: 150 * time.Millisecond})
				h := m.Handler(c.handler)
				if w := do(m.Handler(status(http.StatusAccepted)), "POST", "/", "alice"); w.Code != http.StatusAccepted {
					t.Fatalf("before the stall: status %d", w.Code)
				}

				in.Pause()
				var wg sync.WaitGroup
				codes := make([]int, stalled)
				for i := range stalled {
					wg.Go(func() { codes[i] = do(h, "POST", "/", "alice").Code })
				}
				wg.Wait()
				// The queue tries while the server is stalled, and backs off.
				waitFor(t, "two failed settlement attempts", func() bool {
					return counter(t, reg, "allowance_http_settle_retries_total", nil) >= 2
				})
				in.Resume()
				for i, code := range codes {
					if code != c.want {
						t.Errorf("stalled request %d: status %d; want %d", i, code, c.want)
					}
				}
				shutdown(t, m)

				u, err := m.Peek(t.Context(), "alice")
				if err != nil {
					t.Fatal(err)
				}
				if u[0].Used != 1 {
					t.Errorf("used %d after the stall; want 1 (the request before it): %s", u[0].Used, l.buf.String())
				}
				uncertain := counter(t, reg, "allowance_http_uncertain_total", map[string]string{"rule": "submit"})
				if uncertain != stalled {
					t.Errorf("uncertain charges %v; want %d", uncertain, stalled)
				}
				var settled float64
				outcomes := map[string]float64{}
				for _, o := range voidOutcomes {
					n := counter(t, reg, "allowance_http_uncertain_settled_total", map[string]string{"rule": "submit", "outcome": o})
					settled += n
					if n > 0 {
						outcomes[o] = n
					}
				}
				t.Logf("uncertain charges settled: %v", outcomes)
				pending := counter(t, reg, "allowance_http_pending", map[string]string{"rule": "submit", "kind": "void"})
				if settled+pending != uncertain || pending != 0 {
					t.Errorf("uncertain %v, settled %v, pending %v; want settled + pending = uncertain, none pending", uncertain, settled, pending)
				}
				if n := counter(t, reg, "allowance_http_uncertain_settled_total", map[string]string{"rule": "submit", "outcome": settleAbandoned}); n != 0 {
					t.Errorf("%v abandoned", n)
				}
			})
		}
	}
}
