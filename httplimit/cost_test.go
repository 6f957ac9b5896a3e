package httplimit

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// tokens is a Rule.Cost that reads the request's cost from its "tokens"
// query parameter.
func tokens(r *http.Request) (int64, error) {
	s := r.URL.Query().Get("tokens")
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, errors.New(`query parameter "tokens" is not an integer`)
	}
	return n, nil
}

// TestRuleCost: a rule's cost function sets what each request charges, a
// refund gives that back, and a cost the client got wrong or that no
// request could pass is a 400 that charges nothing.
func TestRuleCost(t *testing.T) {
	c := newClock()
	store := newMemstore(t, c)
	gen := rule(t, "generate", "POST /v1/generate", "100/minute")
	gen.Cost = tokens
	gen.RefundOn = []int{http.StatusServiceUnavailable}
	all := rule(t, "all", "/", "50/minute") // no cost function: 1 a request
	m := mustNew(t, Config{Store: store, Rules: []Rule{gen, all}})
	ok := m.Handler(status(http.StatusOK))

	w := do(ok, "POST", "/v1/generate?tokens=30", "alice")
	if w.Code != http.StatusOK || w.Header().Get("X-RateLimit-Remaining") != "49" {
		t.Fatalf("30 tokens: %d, X-RateLimit-Remaining %q; want 200 and 49 (all, 1 of 50, is the tightest)", w.Code, w.Header().Get("X-RateLimit-Remaining"))
	}
	u, err := m.Peek(t.Context(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]int64{}
	for _, x := range u {
		used[x.Rule] = x.Used
	}
	if used["generate"] != 30 || used["all"] != 1 {
		t.Fatalf("used %v; want generate 30, all 1", used)
	}

	// A refunded status gives the request's own cost back.
	w = do(m.Handler(status(http.StatusServiceUnavailable)), "POST", "/v1/generate?tokens=60", "alice")
	if w.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d", w.Code)
	}
	if u, _ = m.Peek(t.Context(), "alice"); u[0].Used != 30 {
		t.Fatalf("after the refunded 60: generate used %d, want 30", u[0].Used)
	}

	// 71 does not fit in the 70 left: a 429.
	if w := do(ok, "POST", "/v1/generate?tokens=71", "alice"); w.Code != http.StatusTooManyRequests {
		t.Fatalf("71 tokens with 70 left: %d, want 429", w.Code)
	}
	for _, tc := range []struct{ query, want string }{
		{"tokens=abc", `cost for rate limit "generate": query parameter "tokens" is not an integer`},
		{"tokens=101", `cost 101 for rate limit "generate" is out of range: expected 1 to 100`},
		{"tokens=-1", `cost -1 for rate limit "generate" is out of range`},
	} {
		w := do(ok, "POST", "/v1/generate?"+tc.query, "alice")
		var p problem
		if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
			t.Fatalf("%s: body %q: %v", tc.query, w.Body, err)
		}
		if w.Code != http.StatusBadRequest || !strings.Contains(p.Detail, tc.want) {
			t.Fatalf("%s: %d %q; want 400 saying %q", tc.query, w.Code, p.Detail, tc.want)
		}
	}
	if u, _ = m.Peek(t.Context(), "alice"); u[0].Used != 30 || u[1].Used != 1 {
		t.Fatalf("after the refused requests: used %d and %d, want 30 and 1 (the 503 was refunded whole; 400s and the 429 charge nothing)", u[0].Used, u[1].Used)
	}
	// No tokens parameter: the rule's own cost, 1.
	if w := do(ok, "POST", "/v1/generate", "alice"); w.Code != http.StatusOK {
		t.Fatalf("no tokens: %d", w.Code)
	}
	if u, _ = m.Peek(t.Context(), "alice"); u[0].Used != 31 {
		t.Fatalf("no tokens: generate used %d, want 31", u[0].Used)
	}
}
