package api

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/allowancehq/allowance"
	"github.com/allowancehq/allowance/app/internal/config"
)

// Right after each kind of answer to a submit — 202, a refunded 409, a
// charged 400 and a 429 — every rate-limit header field says what GET
// /v1/ratelimit says: per limit of create-task its r (remaining) and t
// (reset, whole seconds), and X-RateLimit-Remaining and -Reset those of
// the most restrictive limit. For every algorithm, on a frozen clock.
func TestHeadersAgreeWithUsage(t *testing.T) {
	for _, alg := range []allowance.Algorithm{allowance.FixedWindow, allowance.SlidingWindow, allowance.SlidingLog, allowance.GCRA} {
		t.Run(alg.String(), func(t *testing.T) {
			rules := config.Default().Rules
			rules[0].Limits = allowance.Limits{{Count: 3, Period: time.Minute}, {Count: 10, Period: time.Hour}}
			rules[0].Algorithm = alg
			e := newEnv(t, rules, 0)
			k := e.key("ann")
			valid, invalid := `{"kind":"sleep","input":{"seconds":600}}`, `{"kind":"sleep","input":{"seconds":-1}}`
			steps := []struct {
				body string
				want int
			}{
				{valid, http.StatusAccepted},
				{valid, http.StatusConflict},
				{invalid, http.StatusBadRequest},
				{valid, http.StatusConflict},
				{invalid, http.StatusBadRequest},
				{valid, http.StatusTooManyRequests},
				{invalid, http.StatusTooManyRequests},
			}
			for i, s := range steps {
				e.advance(3 * time.Second)
				r := e.do("POST", "/v1/tasks", k, s.body)
				if r.status != s.want {
					t.Fatalf("step %d: status %d, want %d: %s", i, r.status, s.want, r.body)
				}
				compareWithUsage(t, e, k, r, i)
			}
		})
	}
}

// compareWithUsage checks r's rate-limit headers for create-task against
// GET /v1/ratelimit.
func compareWithUsage(t *testing.T, e *env, key string, r response, step int) {
	t.Helper()
	var u struct {
		Limits []usage `json:"limits"`
	}
	g := e.do("GET", "/v1/ratelimit", key, "")
	if g.status != http.StatusOK {
		t.Fatalf("GET /v1/ratelimit: %d %s", g.status, g.body)
	}
	if err := json.Unmarshal(g.body, &u); err != nil {
		t.Fatal(err)
	}
	items := map[string]string{}
	for _, it := range strings.Split(r.header.Get("RateLimit"), ", ") {
		name, params, _ := strings.Cut(it, ";")
		items[name] = params
	}
	most := -1
	for i, l := range u.Limits {
		if l.Rule != "create-task" {
			continue
		}
		lim, err := allowance.ParseLimit(l.Limit)
		if err != nil {
			t.Fatal(err)
		}
		name := strconv.Quote(l.Rule + "/" + strconv.Itoa(int(lim.Period.Seconds())) + "s")
		want := "r=" + strconv.FormatInt(l.Remaining, 10) + ";t=" + strconv.FormatInt(l.ResetSeconds, 10)
		if items[name] != want {
			t.Errorf("step %d (%d): RateLimit item %s has %q; GET /v1/ratelimit says %q", step, r.status, name, items[name], want)
		}
		if most < 0 || l.Remaining < u.Limits[most].Remaining || l.Remaining == u.Limits[most].Remaining && l.ResetSeconds > u.Limits[most].ResetSeconds {
			most = i
		}
	}
	if r.status == http.StatusTooManyRequests {
		return // X-RateLimit-* name the denying limit, with its retry
	}
	m := u.Limits[most]
	if got := r.header.Get("X-RateLimit-Remaining"); got != strconv.FormatInt(m.Remaining, 10) {
		t.Errorf("step %d (%d): X-RateLimit-Remaining %s; GET /v1/ratelimit's most restrictive limit has %d", step, r.status, got, m.Remaining)
	}
	if got := r.header.Get("X-RateLimit-Reset"); got != strconv.FormatInt(m.ResetSeconds, 10) {
		t.Errorf("step %d (%d): X-RateLimit-Reset %s; GET /v1/ratelimit's most restrictive limit has %d", step, r.status, got, m.ResetSeconds)
	}
}
