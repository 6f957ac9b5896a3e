// Benchmarks of redisstore beside the raw Redis floors and the Redis rate
// limiters Go services commonly use, all against one redis-server started for
// the run, so that the ratios mean something. docs/redis.md has the command
// and the table.
package bench

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"
	ulule "github.com/ulule/limiter/v3"
	ulredis "github.com/ulule/limiter/v3/drivers/store/redis"

	"github.com/allowancehq/allowance"
	"github.com/allowancehq/allowance/internal/redistest"
	"github.com/allowancehq/allowance/redisstore"
	"github.com/allowancehq/allowance/redisstore/goredisstore"
	"github.com/allowancehq/allowance/redisstore/rueidisstore"
)

// redisGoroutines are the concurrency levels: one caller, and many callers
// sharing one client as the handlers of a busy API replica do.
var redisGoroutines = []int{1, 64, 256}

// redisKeySets: one hot key, and 10k keys.
var redisKeySets = []struct {
	name string
	n    int
}{{"hot-key", 1}, {"10k-keys", 10_000}}

// runRedisOps runs b.N calls of op spread over g goroutines and reports
// throughput and the 50th and 99th percentile latency of one call.
func runRedisOps(b *testing.B, g int, keys []string, op func(ctx context.Context, key string) error) {
	ctx := context.Background()
	var next atomic.Int64
	lat := make([][]time.Duration, g)
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	b.ResetTimer()
	start := time.Now()
	for w := 0; w < g; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			mine := make([]time.Duration, 0, b.N/g+1)
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					break
				}
				t0 := time.Now()
				if err := op(ctx, keys[int(i)%len(keys)]); err != nil {
					failed.CompareAndSwap(nil, &err)
					break
				}
				mine = append(mine, time.Since(t0))
			}
			lat[w] = mine
		}(w)
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if err := failed.Load(); err != nil {
		b.Fatal(*err)
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	if len(all) == 0 {
		return
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "ops/s")
	b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
}

// redisLimit never denies, so that every check charges: the expensive path.
var redisLimit = allowance.Limit{Count: 1_000_000_000, Period: time.Hour}

func redisLimiter(b *testing.B, s allowance.Store, limits int) *allowance.Limiter {
	ls := allowance.Limits{redisLimit}
	if limits == 3 {
		ls = allowance.Limits{redisLimit, {Count: 1_000_000_000, Period: 24 * time.Hour}, {Count: 999_999_999, Period: time.Minute}}
	}
	l, err := allowance.NewLimiter(s, allowance.Rule{Name: "bench", Limits: ls, Algorithm: allowance.GCRA})
	if err != nil {
		b.Fatal(err)
	}
	return l
}

func checkOp(l *allowance.Limiter) func(ctx context.Context, key string) error {
	return func(ctx context.Context, key string) error {
		_, err := l.Check(ctx, key)
		return err
	}
}

// checkCostOp is checkOp for requests of cost 3 (CheckN).
func checkCostOp(l *allowance.Limiter) func(ctx context.Context, key string) error {
	return func(ctx context.Context, key string) error {
		_, err := l.CheckN(ctx, key, 3)
		return err
	}
}

func checkRefundOp(l *allowance.Limiter) func(ctx context.Context, key string) error {
	return func(ctx context.Context, key string) error {
		d, err := l.Check(ctx, key)
		if err != nil {
			return err
		}
		_, err = l.Refund(ctx, &d.Receipt)
		return err
	}
}

// redisClients starts a redis-server for the benchmark and returns a go-redis
// and a rueidis client of it, both closed when the benchmark ends.
func redisClients(b *testing.B) (*redis.Client, rueidis.Client) {
	addr := redistest.Server(b)
	gr := redis.NewClient(&redis.Options{Addr: addr})
	b.Cleanup(func() { gr.Close() })
	rc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(rc.Close)
	return gr, rc
}

// BenchmarkRedis measures, over one redis-server:
//   - floors: go-redis INCR, go-redis EVALSHA of a one-line script, rueidis
//     (auto-pipelined) INCR and EVALSHA of the same script;
//   - allowance over redisstore with the rueidis and the go-redis adapter: a
//     one-limit check, a three-limit check, and a three-limit check followed
//     by the refund of its receipt (one op); and the one-limit check without
//     charge traces (WithTraceTTL(0)), to show what voidability costs;
//   - github.com/go-redis/redis_rate/v10 Allow and github.com/ulule/limiter/v3
//     Get over its go-redis store.
//
// go-redis clients keep their default pool; rueidis its default pipelining.
func BenchmarkRedis(b *testing.B) {
	gr, rc := redisClients(b)
	ctx := context.Background()

	storeRueidis, err := rueidisstore.New(rc, redisstore.WithPrefix("ar:"))
	if err != nil {
		b.Fatal(err)
	}
	storeNoTrace, err := rueidisstore.New(rc, redisstore.WithPrefix("an:"), redisstore.WithTraceTTL(0))
	if err != nil {
		b.Fatal(err)
	}
	storeGoRedis, err := goredisstore.New(gr, redisstore.WithPrefix("ag:"))
	if err != nil {
		b.Fatal(err)
	}
	trivial := redis.NewScript("return redis.call('INCR', KEYS[1])")
	if err := trivial.Load(ctx, gr).Err(); err != nil {
		b.Fatal(err)
	}
	trivialRueidis := rueidis.NewLuaScript("return redis.call('INCR', KEYS[1])")
	rate := redis_rate.NewLimiter(gr)
	rrLimit := redis_rate.Limit{Rate: 1_000_000_000, Burst: 1_000_000_000, Period: time.Hour}
	ustore, err := ulredis.NewStoreWithOptions(gr, ulule.StoreOptions{Prefix: "ulule", MaxRetry: 3})
	if err != nil {
		b.Fatal(err)
	}
	ul := ulule.New(ustore, ulule.Rate{Period: time.Hour, Limit: 1_000_000_000})

	cases := []struct {
		name string
		op   func(ctx context.Context, key string) error
	}{
		{"goredis-INCR", func(ctx context.Context, key string) error { return gr.Incr(ctx, key).Err() }},
		{"goredis-EVALSHA", func(ctx context.Context, key string) error { return trivial.EvalSha(ctx, gr, []string{key}).Err() }},
		{"rueidis-INCR", func(ctx context.Context, key string) error {
			return rc.Do(ctx, rc.B().Incr().Key(key).Build()).Error()
		}},
		{"rueidis-EVALSHA", func(ctx context.Context, key string) error {
			return trivialRueidis.Exec(ctx, rc, []string{key}, nil).Error()
		}},
		{"allowance-rueidis-1limit", checkOp(redisLimiter(b, storeRueidis, 1))},
		{"allowance-rueidis-1limit-notrace", checkOp(redisLimiter(b, storeNoTrace, 1))},
		{"allowance-rueidis-1limit-cost", checkCostOp(redisLimiter(b, storeRueidis, 1))},
		{"allowance-rueidis-3limits", checkOp(redisLimiter(b, storeRueidis, 3))},
		{"allowance-rueidis-3limits-refund", checkRefundOp(redisLimiter(b, storeRueidis, 3))},
		{"allowance-goredis-1limit", checkOp(redisLimiter(b, storeGoRedis, 1))},
		{"allowance-goredis-3limits", checkOp(redisLimiter(b, storeGoRedis, 3))},
		{"allowance-goredis-3limits-refund", checkRefundOp(redisLimiter(b, storeGoRedis, 3))},
		{"redis_rate-Allow", func(ctx context.Context, key string) error {
			_, err := rate.Allow(ctx, key, rrLimit)
			return err
		}},
		{"ulule-Get", func(ctx context.Context, key string) error {
			_, err := ul.Get(ctx, key)
			return err
		}},
	}
	for _, ks := range redisKeySets {
		keys := makeKeys(ks.n)
		for _, g := range redisGoroutines {
			for _, c := range cases {
				b.Run("keys="+ks.name+"/g="+strconv.Itoa(g)+"/impl="+c.name, func(b *testing.B) {
					runRedisOps(b, g, keys, c.op)
				})
			}
		}
	}
}

// measureServerCost resets the server's statistics, runs op b.N times at 64
// goroutines, and reports the script time and the server's CPU time per op.
func measureServerCost(ctx context.Context, b *testing.B, gr *redis.Client, keys []string, op func(ctx context.Context, key string) error) {
	if err := gr.ConfigResetStat(ctx).Err(); err != nil {
		b.Fatal(err)
	}
	before := readServerCost(ctx, b, gr)
	runRedisOps(b, 64, keys, op)
	after := readServerCost(ctx, b, gr)
	n := float64(b.N)
	b.ReportMetric((after.script-before.script)/n, "script-µs/op")
	b.ReportMetric((after.cpu-before.cpu)/n, "srv-cpu-µs/op")
}

// serverCost reads the server's counters: the time spent in scripts
// (EVAL/EVALSHA, their inner commands included), in top-level commands
// other than scripts, and the process's CPU time, all in µs.
type serverCost struct{ script, other, cpu float64 }

func readServerCost(ctx context.Context, b *testing.B, gr *redis.Client) serverCost {
	var c serverCost
	stats, err := gr.Info(ctx, "commandstats", "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	var scriptInner float64
	for _, line := range strings.Split(stats, "\n") {
		line = strings.TrimSpace(line)
		name, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch name {
		case "used_cpu_sys", "used_cpu_user":
			v, _ := strconv.ParseFloat(rest, 64)
			c.cpu += v * 1e6
			continue
		}
		cmd, ok := strings.CutPrefix(name, "cmdstat_")
		if !ok || cmd == "info" || cmd == "config" {
			continue
		}
		var usec float64
		for _, f := range strings.Split(rest, ",") {
			if v, ok := strings.CutPrefix(f, "usec="); ok {
				usec, _ = strconv.ParseFloat(v, 64)
			}
		}
		switch cmd {
		case "evalsha", "eval":
			c.script += usec
		default:
			scriptInner += usec
		}
	}
	c.other = scriptInner
	return c
}

// BenchmarkRedisServerCost measures what each operation costs the Redis
// server, which a loaded machine distorts far less than wall time: the
// server's time in scripts per operation (commandstats usec of EVAL and
// EVALSHA, which includes the commands a script calls), and its CPU time
// per operation (INFO cpu, network included). 64 goroutines pipeline the
// calls, so the server's per-read cost is shared as in a busy replica.
func BenchmarkRedisServerCost(b *testing.B) {
	gr, rc := redisClients(b)
	ctx := context.Background()
	store := func(opts ...redisstore.Option) allowance.Store {
		s, err := rueidisstore.New(rc, opts...)
		if err != nil {
			b.Fatal(err)
		}
		return s
	}
	trivialRueidis := rueidis.NewLuaScript("return redis.call('INCR', KEYS[1])")
	rate := redis_rate.NewLimiter(gr)
	rrLimit := redis_rate.Limit{Rate: 1_000_000_000, Burst: 1_000_000_000, Period: time.Hour}
	ustore, err := ulredis.NewStoreWithOptions(gr, ulule.StoreOptions{Prefix: "ulule", MaxRetry: 3})
	if err != nil {
		b.Fatal(err)
	}
	ul := ulule.New(ustore, ulule.Rate{Period: time.Hour, Limit: 1_000_000_000})
	cases := []struct {
		name string
		op   func(ctx context.Context, key string) error
	}{
		{"rueidis-EVALSHA", func(ctx context.Context, key string) error {
			return trivialRueidis.Exec(ctx, rc, []string{key}, nil).Error()
		}},
		{"allowance-1limit", checkOp(redisLimiter(b, store(redisstore.WithPrefix("a1:")), 1))},
		{"allowance-1limit-notrace", checkOp(redisLimiter(b, store(redisstore.WithPrefix("an:"), redisstore.WithTraceTTL(0)), 1))},
		{"allowance-3limits", checkOp(redisLimiter(b, store(redisstore.WithPrefix("a3:")), 3))},
		{"allowance-3limits-refund", checkRefundOp(redisLimiter(b, store(redisstore.WithPrefix("ar:")), 3))},
		{"redis_rate-Allow", func(ctx context.Context, key string) error {
			_, err := rate.Allow(ctx, key, rrLimit)
			return err
		}},
		{"ulule-Get", func(ctx context.Context, key string) error {
			_, err := ul.Get(ctx, key)
			return err
		}},
	}
	for _, ks := range redisKeySets {
		keys := makeKeys(ks.n)
		for _, c := range cases {
			b.Run("keys="+ks.name+"/impl="+c.name, func(b *testing.B) {
				measureServerCost(ctx, b, gr, keys, c.op)
			})
		}
	}
}

// refundLimits do not deny a benchmark's charges either (a million of them
// at once), and their emission intervals (31.5 s and more) are long enough
// that every refund made after its check still finds its charge to give
// back, as a handler's refund of a request it answered 409 Conflict does:
// the refund's restoring path.
var refundLimits = allowance.Limits{
	{Count: 1_000_000, Period: 87_600 * time.Hour},
	{Count: 1_000_000, Period: 8_760 * time.Hour},
	{Count: 999_999, Period: 87_600 * time.Hour},
}

// BenchmarkRedisRefundServerCost measures what a refund alone costs the
// Redis server, as BenchmarkRedisServerCost does for checks: it charges b.N
// receipts first (one GCRA rule of one or three limits, never denying), then
// resets the server's statistics and refunds them all at 64 goroutines.
// Every refund restores its charges.
func BenchmarkRedisRefundServerCost(b *testing.B) {
	gr, rc := redisClients(b)
	ctx := context.Background()
	for _, ks := range redisKeySets {
		keys := makeKeys(ks.n)
		for _, limits := range []int{1, 3} {
			name := "allowance-" + strconv.Itoa(limits) + "limit-refund"
			s, err := rueidisstore.New(rc, redisstore.WithPrefix("rf"+strconv.Itoa(limits)+ks.name+":"))
			if err != nil {
				b.Fatal(err)
			}
			l, err := allowance.NewLimiter(s, allowance.Rule{Name: "bench", Limits: refundLimits[:limits], Algorithm: allowance.GCRA})
			if err != nil {
				b.Fatal(err)
			}
			b.Run("keys="+ks.name+"/impl="+name, func(b *testing.B) {
				receipts := make([]allowance.Receipt, b.N)
				var next atomic.Int64
				check := func(ctx context.Context, key string) error {
					i := next.Add(1) - 1
					d, err := l.Check(ctx, key)
					if err == nil && !d.Allowed {
						err = fmt.Errorf("check %d denied", i)
					}
					receipts[i] = d.Receipt
					return err
				}
				runRedisOps(b, 64, keys, check)
				next.Store(0)
				refund := func(ctx context.Context, _ string) error {
					i := next.Add(1) - 1
					res, err := l.Refund(ctx, &receipts[i])
					if err == nil && res.Outcome() != allowance.Restored {
						err = fmt.Errorf("refund %d: %v, want restored", i, res.Outcome())
					}
					return err
				}
				b.StartTimer() // runRedisOps stopped it
				measureServerCost(ctx, b, gr, keys, refund)
			})
		}
	}
}
