package httplimit

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/allowancehq/allowance"
	"github.com/allowancehq/allowance/memstore"
)

var benchTimeout time.Duration

// BenchmarkHandler measures the middleware over memstore around a trivial
// handler, 1000 users, one rule; bench/ compares it with other limiters.
func BenchmarkHandler(b *testing.B) {
	store := memstore.New()
	defer store.Close()
	m, err := New(Config{Store: store, Key: FromHeader("X-User"), Timeout: benchTimeout, Rules: []Rule{{
		Rule:  allowance.Rule{Name: "read", Limits: allowance.Limits{{Count: 1_000_000_000, Period: 3600_000_000_000}}, Algorithm: allowance.SlidingWindow},
		Match: "GET /v1/",
	}}})
	if err != nil {
		b.Fatal(err)
	}
	h := m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) }))
	var next atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		r := httptest.NewRequest("GET", "/v1/tasks", nil)
		r.Header.Set("X-User", "user-"+strconv.FormatInt(next.Add(1)%1000, 10))
		w := httptest.NewRecorder()
		for pb.Next() {
			h.ServeHTTP(w, r)
		}
	})
}
