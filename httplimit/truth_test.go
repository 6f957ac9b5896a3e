package httplimit

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/allowancehq/allowance"
	"github.com/allowancehq/allowance/internal/redistest"
	"github.com/allowancehq/allowance/redisstore"
	"github.com/allowancehq/allowance/redisstore/rueidisstore"
)

// After a refunded response, every rate-limit header says what the store
// holds after the refund, as Peek reads it: each limit's r and t in
// RateLimit, and the most restrictive limit's X-RateLimit-Remaining and
// X-RateLimit-Reset. Checked for every algorithm, two limits each, with a
// frozen clock, over memstore and a real Redis.
func TestRefundedHeadersAreTheStoresState(t *testing.T) {
	stores := map[string]func(t *testing.T, c *clock) allowance.Store{
		"memstore": func(t *testing.T, c *clock) allowance.Store { return newMemstore(t, c) },
		"redis": func(t *testing.T, c *clock) allowance.Store {
			in := redistest.Start(t)
			s, err := rueidisstore.Open(t.Context(), "redis://"+in.Addr()+"/0", redisstore.WithClock(c.Now))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			return s
		},
	}
	algs := []allowance.Algorithm{allowance.FixedWindow, allowance.SlidingWindow, allowance.SlidingLog, allowance.GCRA}
	for name, open := range stores {
		for _, alg := range algs {
			t.Run(name+"/"+alg.String(), func(t *testing.T) {
				c := newClock()
				r := rule(t, "submit", "/", "3/minute; 10/hour")
				r.Algorithm = alg
				r.RefundOn = []int{http.StatusConflict}
				m := mustNew(t, Config{Store: open(t, c), Rules: []Rule{r}})
				ok, conflict := m.Handler(status(http.StatusAccepted)), m.Handler(status(http.StatusConflict))
				for step, h := range []http.Handler{ok, conflict, ok, conflict, conflict, ok} {
					c.Advance(7 * time.Second)
					w := do(h, "POST", "/", "alice")
					if w.Code != http.StatusAccepted && w.Code != http.StatusConflict {
						t.Fatalf("step %d: status %d", step, w.Code)
					}
					u, err := m.Peek(t.Context(), "alice")
					if err != nil {
						t.Fatal(err)
					}
					var items []string
					most := 0
					for i, x := range u {
						items = append(items, fmt.Sprintf(`"submit/%ds";r=%d;t=%d`, int(x.Limit.Period.Seconds()), x.Remaining, ceilSeconds(x.ResetAfter)))
						if x.Remaining < u[most].Remaining || x.Remaining == u[most].Remaining && x.ResetAfter > u[most].ResetAfter {
							most = i
						}
					}
					want := map[string]string{
						"RateLimit":             strings.Join(items, ", "),
						"X-RateLimit-Remaining": fmt.Sprint(u[most].Remaining),
						"X-RateLimit-Reset":     fmt.Sprint(ceilSeconds(u[most].ResetAfter)),
						"X-RateLimit-Limit":     fmt.Sprint(u[most].Limit.Count),
					}
					for k, v := range want {
						if got := w.Header().Get(k); got != v {
							t.Errorf("step %d (status %d): %s = %q; Peek says %q", step, w.Code, k, got, v)
						}
					}
				}
			})
		}
	}
}
