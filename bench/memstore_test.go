// Benchmarks of memstore beside the in-memory limiters Go services commonly
// use instead, measured in one run so that the ratios mean something. See
// README.md for the command.
package bench

import (
	"context"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/sethvargo/go-limiter/memorystore"
	ulule "github.com/ulule/limiter/v3"
	ululemem "github.com/ulule/limiter/v3/drivers/store/memory"
	"golang.org/x/time/rate"

	"github.com/allowancehq/allowance"
	"github.com/allowancehq/allowance/memstore"
)

// The limits never deny in the check benchmarks (except the sliding log, see
// logLimit), so that every check is a full charge: the expensive path.
const (
	bigCount  = 1_000_000_000
	bigPeriod = time.Hour
)

// logLimit keeps the sliding log small: it holds one entry per charge for a
// whole period, so a limit that never denies would grow by millions of
// entries a second. With 10 per second most checks are denials once a key
// is warm.
var logLimit = allowance.Limit{Count: 10, Period: time.Second}

// keySets are the benchmarks' identity populations: one hot key, and many
// keys checked in parallel.
var keySets = []struct {
	name string
	n    int
}{
	{"keys=1", 1},
	{"keys=10k", 10_000},
	{"keys=100k", 100_000},
}

func makeKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "user-" + strconv.Itoa(i)
	}
	return keys
}

// runKeys runs check in parallel, each goroutine walking keys from a random
// start, so that with many keys the goroutines rarely meet.
//
// Besides the wall time per op it reports cpu-ns/op, the process's CPU time
// per op (all goroutines, spinning on locks included), which the load of a
// shared machine distorts far less than the wall time.
func runKeys(b *testing.B, keys []string, check func(key string) bool) {
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := processCPU()
	defer func() { b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op") }()
	b.RunParallel(func(pb *testing.PB) {
		i := rand.IntN(len(keys))
		for pb.Next() {
			if !check(keys[i]) && len(keys) > 1<<30 {
				b.Error("unreachable: keeps the result live")
			}
			i++
			if i == len(keys) {
				i = 0
			}
		}
	})
}

// state is what a goroutine of runDecisions keeps, as a server keeps it in a
// request's state: a Decision for CheckInto and a result for RefundInto.
type state struct {
	d   allowance.Decision
	res allowance.RefundResult
}

// runDecisions is runKeys for Limiter.CheckInto and RefundInto: each
// goroutine fills a state of its own.
func runDecisions(b *testing.B, keys []string, check func(key string, st *state) bool) {
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := processCPU()
	defer func() { b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op") }()
	b.RunParallel(func(pb *testing.PB) {
		st := new(state)
		i := rand.IntN(len(keys))
		for pb.Next() {
			if !check(keys[i], st) && len(keys) > 1<<30 {
				b.Error("unreachable: keeps the result live")
			}
			i++
			if i == len(keys) {
				i = 0
			}
		}
	})
}

func rule(alg allowance.Algorithm) allowance.Rule {
	l := allowance.Limit{Count: bigCount, Period: bigPeriod}
	if alg == allowance.SlidingLog {
		l = logLimit
	}
	return allowance.Rule{Name: "bench", Limits: allowance.Limits{l}, Algorithm: alg}
}

// BenchmarkMemstoreCheck is one single-limit check per op: allowance.Limiter.Check
// on memstore for each algorithm, and the baselines' equivalent call.
func BenchmarkMemstoreCheck(b *testing.B) {
	ctx := context.Background()
	for _, ks := range keySets {
		keys := makeKeys(ks.n)
		b.Run(ks.name, func(b *testing.B) {
			for _, alg := range allowance.Algorithms() {
				b.Run("impl=memstore-"+alg.String(), func(b *testing.B) {
					store := memstore.New()
					defer store.Close()
					lim, err := allowance.NewLimiter(store, rule(alg))
					if err != nil {
						b.Fatal(err)
					}
					runDecisions(b, keys, func(key string, st *state) bool {
						if err := lim.CheckInto(ctx, key, &st.d); err != nil {
							b.Error(err)
						}
						return st.d.Allowed
					})
				})
			}
			// The GCRA check with a cost of its own (CheckWith), as
			// httplimit makes it for a rule with a Cost function. The
			// receipt copies the costs, so one slice serves every check.
			b.Run("impl=memstore-gcra-cost", func(b *testing.B) {
				store := memstore.New()
				defer store.Close()
				lim, err := allowance.NewLimiter(store, rule(allowance.GCRA))
				if err != nil {
					b.Fatal(err)
				}
				costs := []int64{3}
				runDecisions(b, keys, func(key string, st *state) bool {
					if err := lim.CheckWith(ctx, key, allowance.CheckOptions{Costs: costs}, &st.d); err != nil {
						b.Error(err)
					}
					return st.d.Allowed
				})
			})
			// The same check through Check, which returns the Decision by
			// value: one GCRA case shows what the copy costs.
			b.Run("impl=memstore-gcra-by-value", func(b *testing.B) {
				store := memstore.New()
				defer store.Close()
				lim, err := allowance.NewLimiter(store, rule(allowance.GCRA))
				if err != nil {
					b.Fatal(err)
				}
				runKeys(b, keys, func(key string) bool {
					d, err := lim.Check(ctx, key)
					if err != nil {
						b.Error(err)
					}
					return d.Allowed
				})
			})
			b.Run("impl=x-time-rate", func(b *testing.B) {
				every := rate.Every(bigPeriod / bigCount)
				if len(keys) == 1 {
					lim := rate.NewLimiter(every, bigCount)
					runKeys(b, keys, func(string) bool { return lim.Allow() })
					return
				}
				// The usual per-key set-up: a map of Limiters behind a mutex.
				var mu sync.Mutex
				m := make(map[string]*rate.Limiter)
				runKeys(b, keys, func(key string) bool {
					mu.Lock()
					lim, ok := m[key]
					if !ok {
						lim = rate.NewLimiter(every, bigCount)
						m[key] = lim
					}
					mu.Unlock()
					return lim.Allow()
				})
			})
			b.Run("impl=sethvargo-go-limiter", func(b *testing.B) {
				store, err := memorystore.New(&memorystore.Config{Tokens: bigCount, Interval: bigPeriod})
				if err != nil {
					b.Fatal(err)
				}
				defer store.Close(ctx)
				runKeys(b, keys, func(key string) bool {
					_, _, _, ok, err := store.Take(ctx, key)
					if err != nil {
						b.Error(err)
					}
					return ok
				})
			})
			b.Run("impl=ulule-limiter", func(b *testing.B) {
				lim := ulule.New(ululemem.NewStore(), ulule.Rate{Period: bigPeriod, Limit: bigCount})
				runKeys(b, keys, func(key string) bool {
					c, err := lim.Get(ctx, key)
					if err != nil {
						b.Error(err)
					}
					return !c.Reached
				})
			})
		})
	}
}

// BenchmarkMemstoreCheckRefund is one check and the refund of its receipt per op,
// so its cost less BenchmarkMemstoreCheck's is the refund's. Refunded receipts are
// remembered until their windows end, so the limits here are per second and
// the sweeper runs every second to keep memory flat.
func BenchmarkMemstoreCheckRefund(b *testing.B) {
	ctx := context.Background()
	for _, ks := range keySets[:2] {
		keys := makeKeys(ks.n)
		b.Run(ks.name, func(b *testing.B) {
			for _, alg := range allowance.Algorithms() {
				b.Run("impl=memstore-"+alg.String(), func(b *testing.B) {
					store := memstore.New(memstore.WithSweepInterval(time.Second))
					defer store.Close()
					r := allowance.Rule{Name: "bench", Limits: allowance.Limits{{Count: bigCount, Period: time.Second}}, Algorithm: alg}
					lim, err := allowance.NewLimiter(store, r)
					if err != nil {
						b.Fatal(err)
					}
					runDecisions(b, keys, func(key string, st *state) bool {
						if err := lim.CheckInto(ctx, key, &st.d); err != nil || !st.d.Allowed {
							b.Errorf("check: allowed=%v err=%v", st.d.Allowed, err)
							return false
						}
						if err := lim.RefundInto(ctx, &st.d.Receipt, &st.res); err != nil {
							b.Error(err)
						}
						return st.res.Restored()
					})
				})
			}
		})
	}
}

// BenchmarkReceiptSign is what signing costs: ReceiptKeys.Sign, as memstore
// does it on every allowed check (it records the keys, no hashing); Verify,
// as every refund does, of the receipt in memory (no hashing either) and of
// the receipt decoded from its encoding (its tag computed and compared); and
// MarshalBinary, which computes the tag when a receipt leaves memory. On the
// receipt of a real check of one limit and of three limits (two rules).
// Compare with BenchmarkMemstoreCheck of the same run.
func BenchmarkReceiptSign(b *testing.B) {
	ctx := context.Background()
	keys := allowance.RandomReceiptKeys()
	one := rule(allowance.GCRA)
	three := []allowance.Rule{
		{Name: "create-task", Limits: allowance.Limits{{Count: 3, Period: time.Minute}, {Count: 20, Period: 24 * time.Hour}}, Algorithm: allowance.SlidingWindow},
		{Name: "burst", Limits: allowance.Limits{{Count: 100, Period: time.Second}}, Algorithm: allowance.GCRA},
	}
	for _, tc := range []struct {
		name  string
		rules []allowance.Rule
	}{{"limits=1", []allowance.Rule{one}}, {"limits=3", three}} {
		store := memstore.New(memstore.WithReceiptKeys(keys))
		lim, err := allowance.NewLimiter(store, tc.rules...)
		if err != nil {
			b.Fatal(err)
		}
		d, err := lim.Check(ctx, "user-12345")
		store.Close()
		if err != nil || !d.Allowed {
			b.Fatalf("check: allowed=%v err=%v", d.Allowed, err)
		}
		r := d.Receipt
		b.Run(tc.name+"/op=sign", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				keys.Sign(&r)
			}
		})
		b.Run(tc.name+"/op=verify", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if !keys.Verify(&r) {
					b.Fatal("does not verify")
				}
			}
		})
		enc, err := r.MarshalBinary()
		if err != nil {
			b.Fatal(err)
		}
		var dec allowance.Receipt
		if err := dec.UnmarshalBinary(enc); err != nil {
			b.Fatal(err)
		}
		b.Run(tc.name+"/op=verify-decoded", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if !keys.Verify(&dec) {
					b.Fatal("does not verify")
				}
			}
		})
		b.Run(tc.name+"/op=marshal", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := r.MarshalBinary(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
