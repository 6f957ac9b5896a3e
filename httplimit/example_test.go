package httplimit_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/allowancehq/allowance"
	"github.com/allowancehq/allowance/httplimit"
	"github.com/allowancehq/allowance/memstore"
)

// The original design's case with a plain http.ServeMux: POST /v1/tasks
// answers 409 Conflict while the user has a task running, and gives the
// attempt back, so the 409 costs nothing and its headers say so.
func Example_refundOnConflict() {
	store := memstore.New()
	defer store.Close()
	limits, _ := allowance.ParseLimits("5/minute; 50/day")
	lim, err := httplimit.New(httplimit.Config{
		Store: store,
		Key:   httplimit.FromHeader("X-User"), // in production: the authenticated user, httplimit.FromContext
		Rules: []httplimit.Rule{{
			Rule:  allowance.Rule{Name: "create-task", Limits: limits, Algorithm: allowance.SlidingWindow},
			Match: "POST /v1/tasks",
			// RefundOn: []int{http.StatusConflict} would do the same declaratively.
		}},
	})
	if err != nil {
		panic(err)
	}

	running := map[string]bool{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/tasks", func(w http.ResponseWriter, r *http.Request) {
		user := r.Header.Get("X-User")
		if running[user] {
			for _, c := range httplimit.Applied(r.Context()) {
				fmt.Printf("refunding %s %s %s %d\n", c.UserID, c.Rule, c.Limit, c.Amount)
			}
			res, err := httplimit.Refund(r.Context(), "active task exists")
			fmt.Println("refund:", res.Outcome(), err)
			http.Error(w, "a task is already running", http.StatusConflict)
			return
		}
		running[user] = true
		w.WriteHeader(http.StatusAccepted)
	})
	h := lim.Handler(mux)

	for range 3 {
		r := httptest.NewRequest("POST", "/v1/tasks", nil)
		r.Header.Set("X-User", "alice")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		fmt.Println(w.Code, "remaining:", w.Header().Get("X-RateLimit-Remaining"))
	}
	// Output:
	// 202 remaining: 4
	// refunding alice create-task 5/minute 1
	// refunding alice create-task 50/day 1
	// refund: restored <nil>
	// 409 remaining: 4
	// refunding alice create-task 5/minute 1
	// refunding alice create-task 50/day 1
	// refund: restored <nil>
	// 409 remaining: 4
}

// The same, declaratively: the rule refunds every 409 its handler writes,
// before the response's headers go out.
func ExampleRule_refundOn() {
	store := memstore.New()
	defer store.Close()
	lim, _ := httplimit.New(httplimit.Config{
		Store: store,
		Key:   httplimit.FromHeader("X-User"),
		Rules: []httplimit.Rule{{
			Rule:     allowance.Rule{Name: "create-task", Limits: allowance.Limits{{Count: 5, Period: time.Minute}}},
			Match:    "POST /v1/tasks",
			RefundOn: []int{http.StatusConflict},
		}},
	})
	h := lim.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "a task is already running", http.StatusConflict)
	}))
	for range 2 {
		r := httptest.NewRequest("POST", "/v1/tasks", nil)
		r.Header.Set("X-User", "alice")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		fmt.Println(w.Code, w.Header().Get("RateLimit-Policy"), w.Header().Get("X-RateLimit-Remaining"))
	}
	// Output:
	// 409 "create-task";q=5;w=60 5
	// 409 "create-task";q=5;w=60 5
}
