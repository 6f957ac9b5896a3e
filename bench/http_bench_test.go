package bench

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/allowancehq/allowance"
	"github.com/allowancehq/allowance/httplimit"
	"github.com/allowancehq/allowance/internal/redistest"
	"github.com/allowancehq/allowance/memstore"
	"github.com/allowancehq/allowance/redisstore"
	"github.com/allowancehq/allowance/redisstore/rueidisstore"
	"github.com/go-chi/httprate"
	"github.com/redis/go-redis/v9"
	"github.com/ulule/limiter/v3"
	mstdlib "github.com/ulule/limiter/v3/drivers/middleware/stdlib"
	sredis "github.com/ulule/limiter/v3/drivers/store/redis"
)

// benchUsers is how many identities the HTTP benchmarks spread requests
// over; limits are high enough that no request is denied.
const benchUsers = 1000

// okHandler is the trivial handler every HTTP benchmark wraps.
var okHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })

// headersHandler is okHandler setting the five rate-limit headers httplimit
// sets, with Header.Set: the second baseline, which tells the cost of the
// headers (and of the recorder snapshotting them) from the middleware's own.
var headersHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("RateLimit-Policy", `"read";q=1000000000;w=3600`)
	h.Set("RateLimit", `"read";r=999999;t=3600`)
	h.Set("X-RateLimit-Limit", "1000000000")
	h.Set("X-RateLimit-Remaining", "999999")
	h.Set("X-RateLimit-Reset", "3600")
	w.WriteHeader(http.StatusOK)
})

// serveParallel sends GET /v1/tasks through h from every benchmark
// goroutine, each as one of benchUsers users (header X-User), with a new
// httptest recorder per request, as a server has a new header map per
// response. Besides the wall time it reports cpu-ns/op, the CPU time of
// the whole process (all goroutines, the GC) per request.
func serveParallel(b *testing.B, h http.Handler) {
	b.Helper()
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := processCPU()
	defer func() {
		b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
	}()
	b.RunParallel(func(pb *testing.PB) {
		users := make([]*http.Request, 16)
		for i := range users {
			r := httptest.NewRequest("GET", "/v1/tasks", nil)
			r.Header.Set("X-User", "user-"+strconv.FormatInt(next.Add(1)%benchUsers, 10))
			users[i] = r
		}
		i := 0
		for pb.Next() {
			h.ServeHTTP(httptest.NewRecorder(), users[i%len(users)])
			i++
		}
	})
}

func newAllowance(b *testing.B, store allowance.Store, alg allowance.Algorithm) http.Handler {
	b.Helper()
	m, err := httplimit.New(httplimit.Config{
		Store: store,
		Key:   httplimit.FromHeader("X-User"),
		Rules: []httplimit.Rule{{
			Rule:  allowance.Rule{Name: "read", Limits: allowance.Limits{{Count: 1_000_000_000, Period: time.Hour}}, Algorithm: alg},
			Match: "GET /v1/",
		}},
	})
	if err != nil {
		b.Fatal(err)
	}
	return m.Handler(okHandler)
}

// BenchmarkHTTP compares, in one run, the bare handler, the bare handler
// setting the five headers httplimit sets, the handler behind
// httplimit over memstore (sliding window, default timeout, all headers),
// and behind go-chi/httprate (its sliding-window counter in memory, keyed
// the same way).
func BenchmarkHTTP(b *testing.B) {
	b.Run("impl=bare", func(b *testing.B) { serveParallel(b, okHandler) })
	b.Run("impl=bare-with-headers", func(b *testing.B) { serveParallel(b, headersHandler) })
	b.Run("impl=allowance-memstore", func(b *testing.B) {
		store := memstore.New()
		defer store.Close()
		serveParallel(b, newAllowance(b, store, allowance.SlidingWindow))
	})
	b.Run("impl=httprate", func(b *testing.B) {
		h := httprate.LimitBy(1_000_000_000, time.Hour, func(r *http.Request) (string, error) {
			return r.Header.Get("X-User"), nil
		})(okHandler)
		serveParallel(b, h)
	})
}

// BenchmarkHTTPRedis compares, in one run over one redis-server of its own
// (started by internal/redistest), httplimit over redisstore (rueidis,
// auto-pipelined) and github.com/ulule/limiter/v3's net/http middleware over
// go-redis, both counting in fixed windows, with 32 concurrent requests per
// CPU so that both can pipeline or pool as they would under load.
func BenchmarkHTTPRedis(b *testing.B) {
	addr := redistest.Server(b)
	b.Run("impl=allowance-redis", func(b *testing.B) {
		s, err := rueidisstore.Open(b.Context(), "redis://"+addr+"/0", redisstore.WithPrefix("bench"+strconv.Itoa(b.N)+":"))
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		b.SetParallelism(32)
		serveParallel(b, newAllowance(b, s, allowance.FixedWindow))
	})
	b.Run("impl=ulule-redis", func(b *testing.B) {
		c := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 64})
		defer c.Close()
		store, err := sredis.NewStoreWithOptions(c, limiter.StoreOptions{Prefix: "ulule" + strconv.Itoa(b.N), MaxRetry: 3})
		if err != nil {
			b.Fatal(err)
		}
		lim := limiter.New(store, limiter.Rate{Period: time.Hour, Limit: 1_000_000_000})
		h := mstdlib.NewMiddleware(lim, mstdlib.WithKeyGetter(func(r *http.Request) string { return r.Header.Get("X-User") })).Handler(okHandler)
		b.SetParallelism(32)
		serveParallel(b, h)
	})
}
