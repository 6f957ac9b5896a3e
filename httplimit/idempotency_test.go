package httplimit

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestIdempotencyKey: a request retried with its Idempotency-Key is charged
// once; the retry's refunds give nothing back, since the charge is the
// first request's; a malformed key is a 400 that charges nothing.
func TestIdempotencyKey(t *testing.T) {
	c := newClock()
	store := newMemstore(t, c)
	submit := rule(t, "submit", "POST /v1/tasks", "5/minute")
	submit.IdempotencyKey = true
	submit.RefundOn = []int{http.StatusConflict}
	m := mustNew(t, Config{Store: store, Rules: []Rule{submit}})

	send := func(h http.Handler, key string) *httptest.ResponseRecorder {
		r := newRequest("POST", "/v1/tasks", "alice")
		if key != "" {
			r.Header.Set("Idempotency-Key", key)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	used := func() int64 {
		t.Helper()
		u, err := m.Peek(t.Context(), "alice")
		if err != nil {
			t.Fatal(err)
		}
		return u[0].Used
	}

	if w := send(m.Handler(status(http.StatusAccepted)), "a1"); w.Code != http.StatusAccepted || w.Header().Get("X-RateLimit-Remaining") != "4" {
		t.Fatalf("first: %d, remaining %q", w.Code, w.Header().Get("X-RateLimit-Remaining"))
	}
	// The retry finds the task the first one made: 409, whose refund must
	// not give back the first request's charge. The quoted form is the
	// same key.
	var refundErr error
	conflict := m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, refundErr = Refund(r.Context(), "conflict")
		w.WriteHeader(http.StatusConflict)
	}))
	if w := send(conflict, `"a1"`); w.Code != http.StatusConflict {
		t.Fatalf("retry: %d", w.Code)
	}
	if !errors.Is(refundErr, ErrRepeated) {
		t.Fatalf("Refund in the retry: %v, want ErrRepeated", refundErr)
	}
	if n := used(); n != 1 {
		t.Fatalf("after the first and its retry: used %d, want 1", n)
	}
	// Another key is another request; none is checked as usual.
	send(m.Handler(status(http.StatusAccepted)), "a2")
	send(m.Handler(status(http.StatusAccepted)), "")
	if n := used(); n != 3 {
		t.Fatalf("used %d, want 3", n)
	}
	for _, tc := range []struct{ key, want string }{
		{strings.Repeat("k", 256), "256 characters long; expected 1 to 255"},
		{`""`, "0 characters long"},
		{"a b", `holds ' ' at position 2`},
	} {
		w := send(m.Handler(status(http.StatusAccepted)), tc.key)
		if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), tc.want) {
			t.Fatalf("key %q: %d %s; want 400 saying %q", tc.key, w.Code, w.Body, tc.want)
		}
	}
	r := newRequest("POST", "/v1/tasks", "alice")
	r.Header.Add("Idempotency-Key", "x")
	r.Header.Add("Idempotency-Key", "y")
	w := httptest.NewRecorder()
	m.Handler(status(http.StatusAccepted)).ServeHTTP(w, r)
	if w.Code != http.StatusBadRequest {
		t.Fatalf("two keys: %d, want 400", w.Code)
	}
	if n := used(); n != 3 {
		t.Fatalf("after the refused keys: used %d, want 3", n)
	}
}
