package api

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/allowancehq/allowance"
	"github.com/allowancehq/allowance/app/internal/auth"
	"github.com/allowancehq/allowance/app/internal/config"
	"github.com/allowancehq/allowance/app/internal/pgtest"
	"github.com/allowancehq/allowance/app/tasks"
	"github.com/allowancehq/allowance/app/tasks/taskdb"
	"github.com/allowancehq/allowance/httplimit"
	"github.com/allowancehq/allowance/internal/redistest"
	"github.com/allowancehq/allowance/memstore"
	"github.com/allowancehq/allowance/redisstore/rueidisstore"
)

// benchRules are the default rules' shape with limits no benchmark reaches,
// so that every request takes the path it measures.
const benchRules = `
rules:
  - name: create-task
    match: POST /v1/tasks
    limits: 1000000000/minute
    algorithm: sliding-window
    refund_on: [conflict]
  - name: read
    match: GET /v1/
    limits: 1000000000/minute
`

// BenchmarkAPI measures the API handler in process (no network between the
// client and the handler) on each task database and limits store: the bare
// GET /healthz beside POST /v1/tasks answered 409 (charge, conflict,
// refund) and answered 202 (charge, insert). Besides wall time it reports
// the process's CPU time per request (cpu-ns/op; it leaves out the CPU of
// PostgreSQL and Redis), which other load on the machine does not inflate.
// Compare within one run:
//
//	go test -run '^$' -bench BenchmarkAPI -count 6 ./internal/api | tee api.txt
//	go run golang.org/x/perf/cmd/benchstat@latest api.txt
//
// PostgreSQL and Redis sub-benchmarks skip when the servers are missing
// (see internal/pgtest and internal/redistest).
func BenchmarkAPI(b *testing.B) {
	for _, db := range []string{"sqlite", "postgres"} {
		for _, lim := range []string{"memory", "redis"} {
			b.Run(db+"/"+lim, func(b *testing.B) {
				h, store := benchServer(b, db, lim)
				b.Run("healthz", func(b *testing.B) {
					benchRequests(b, h, http.StatusOK, func(int) *http.Request {
						return httptest.NewRequest("GET", "/healthz", nil)
					})
				})
				key := benchUser(b, store, "busy", true)
				b.Run("conflict", func(b *testing.B) {
					benchRequests(b, h, http.StatusConflict, func(int) *http.Request { return benchSubmit(key) })
				})
				round := 0
				b.Run("accepted", func(b *testing.B) {
					round++
					keys := make([]string, b.N)
					for i := range keys {
						keys[i] = benchUser(b, store, fmt.Sprintf("fresh%d-%d", round, i), false)
					}
					benchRequests(b, h, http.StatusAccepted, func(i int) *http.Request { return benchSubmit(keys[i]) })
				})
			})
		}
	}
}

func benchSubmit(key string) *http.Request {
	r := httptest.NewRequest("POST", "/v1/tasks", strings.NewReader(`{"kind":"sleep","input":{"seconds":3600}}`))
	r.Header.Set("Authorization", "Bearer "+key)
	r.Header.Set("Content-Type", "application/json")
	return r
}

// benchRequests serves b.N requests (req builds the i-th; building it is
// not measured) and fails on any other status than want.
func benchRequests(b *testing.B, h http.Handler, want int, req func(i int) *http.Request) {
	reqs := make([]*http.Request, b.N)
	for i := range reqs {
		reqs[i] = req(i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu := processCPU()
	for i := range b.N {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, reqs[i])
		if w.Code != want {
			b.Fatalf("request %d: status %d, want %d: %s", i, w.Code, want, w.Body)
		}
	}
	if end := processCPU(); cpu >= 0 && end >= 0 {
		b.ReportMetric(float64(end-cpu)/float64(b.N), "cpu-ns/op")
	}
}

// benchUser creates user with an API key, and with an active task when
// active, and returns the key.
func benchUser(b *testing.B, store tasks.Store, user string, active bool) string {
	b.Helper()
	key, hash := auth.NewKey()
	if err := store.CreateAPIKey(context.Background(), user, hash); err != nil {
		b.Fatal(err)
	}
	if active {
		if _, err := store.Create(context.Background(), tasks.Task{UserID: user, Kind: "sleep"}); err != nil {
			b.Fatal(err)
		}
	}
	return key
}

// benchServer returns the API handler on a fresh task database db
// ("sqlite" or "postgres") and limits store lim ("memory" or "redis").
func benchServer(b *testing.B, db, lim string) (http.Handler, tasks.Store) {
	b.Helper()
	ctx := context.Background()
	dsn := "sqlite:" + filepath.Join(b.TempDir(), "tasks.db")
	if db == "postgres" {
		dsn = pgtest.DB(b)
	}
	store, err := taskdb.Open(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	if err := store.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	var limits allowance.Store
	if lim == "redis" {
		rs, err := rueidisstore.Open(ctx, "redis://"+redistest.Server(b)+"/0")
		if err != nil {
			b.Fatal(err)
		}
		limits = rs
	} else {
		limits = memstore.New()
	}
	b.Cleanup(func() { _ = limits.(interface{ Close() error }).Close() })
	cfg, err := config.Parse("bench.yaml", []byte(benchRules))
	if err != nil {
		b.Fatal(err)
	}
	var rules []httplimit.Rule
	var conflict []string
	for _, r := range cfg.Rules {
		rules = append(rules, httplimit.Rule{Rule: r.Rule, Match: r.Match})
		if r.RefundsOn(config.Conflict) {
			conflict = append(conflict, r.Name)
		}
	}
	reg := prometheus.NewRegistry()
	log := slog.New(slog.DiscardHandler)
	mw, err := httplimit.New(httplimit.Config{Store: limits, Rules: rules, Key: httplimit.FromContext(auth.UserFrom), Observer: observer(b, reg), Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	s, err := New(Options{Store: store, Limiter: mw, Logger: log, ConflictRefund: conflict, Workers: &fakeWorkers{}, Registry: reg})
	if err != nil {
		b.Fatal(err)
	}
	return s.Handler(), store
}
