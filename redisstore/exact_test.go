package redisstore_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/allowancehq/allowance"
	"github.com/allowancehq/allowance/internal/redistest"
	"github.com/allowancehq/allowance/memstore"
	"github.com/allowancehq/allowance/redisstore"
	"github.com/allowancehq/allowance/redisstore/rueidisstore"
	"github.com/allowancehq/allowance/storetest"
	"github.com/redis/rueidis"
	"pgregory.net/rapid"
)

// TestMatchesMemstore is the contract between the scripts and
// internal/algo: the Lua (scripts/alg_*.lua, in line in the scripts) and the
// Go (internal/algo, through memstore) are two writings of each algorithm,
// and this test is what keeps them one. For every algorithm it runs random
// checks, refunds and peeks against the Redis store and the memory store on
// one fake clock and requires identical results (every limit's figures, the
// windows charged, every refund's outcomes and units, every peek), with
// counts and periods up to the limits' maxima, where the scripts' products
// pass 2^53 and must still be exact. It runs in CI (make test); a change to
// either side that it does not cover wants a case here.
func TestMatchesMemstore(t *testing.T) {
	addr := redistest.Server(t)
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	_, factory := keyed(func(opts ...redisstore.Option) (*redisstore.Store, error) { return rueidisstore.New(c, opts...) })
	// Both stores sign with one key, so that each refunds the other's
	// receipts as its own.
	keys := allowance.RandomReceiptKeys()
	for _, alg := range allowance.Algorithms() {
		t.Run(alg.String(), func(t *testing.T) { matchMemstore(t, factory, keys, alg) })
	}
}

func matchMemstore(t *testing.T, factory storetest.KeyedFactory, keys *allowance.ReceiptKeys, alg allowance.Algorithm) {
	ctx := context.Background()
	rapid.Check(t, func(rt *rapid.T) {
		clock := storetest.NewClock(time.Date(2031, 5, 17, 3, 4, 5, 0, time.UTC).Add(time.Duration(rapid.Int64Range(0, 1e15).Draw(rt, "start µs")) * time.Microsecond))
		rs := factory(t, clock, keys)
		ms := memstore.New(memstore.WithClock(clock.Now), memstore.WithSweepInterval(0), memstore.WithReceiptKeys(keys))
		big := rapid.Bool().Draw(rt, "big")
		var limits allowance.Limits
		for i := 0; i < rapid.IntRange(1, 3).Draw(rt, "limits"); i++ {
			var l allowance.Limit
			if big {
				l = allowance.Limit{Count: rapid.Int64Range(1, allowance.MaxCount).Draw(rt, "count"), Period: time.Duration(rapid.Int64Range(1, int64(allowance.MaxPeriod/time.Second)).Draw(rt, "seconds")) * time.Second}
			} else {
				l = allowance.Limit{Count: rapid.Int64Range(1, 20).Draw(rt, "count"), Period: time.Duration(rapid.Int64Range(1, 120).Draw(rt, "seconds")) * time.Second}
			}
			dup := false
			for _, p := range limits {
				dup = dup || p == l
			}
			if !dup {
				limits = append(limits, l)
			}
		}
		minCount := limits[0].Count
		for _, l := range limits {
			minCount = min(minCount, l.Count)
		}
		cost := rapid.Int64Range(1, minCount).Draw(rt, "cost")
		if alg == allowance.SlidingLog && big {
			cost = max(cost, minCount/50) // keep the log short
		}
		rule := allowance.Rule{Name: "r", Limits: limits, Algorithm: alg, Cost: cost, RefundGuard: allowance.Limit{Count: 3, Period: time.Minute}}
		guards := []allowance.Guard{{Rule: "r", Limit: rule.RefundGuard}}
		var receipts []allowance.Receipt
		for step := 0; step < 40; step++ {
			switch rapid.IntRange(0, 3).Draw(rt, "op") {
			case 0, 1:
				req := allowance.Request{ID: allowance.NewReceiptID(), Identity: "id", Rules: []allowance.Rule{rule}}
				dr, err := chargeStore(ctx, rs, req)
				if err != nil {
					rt.Fatalf("redis charge: %v", err)
				}
				dm, err := chargeStore(ctx, ms, req)
				if err != nil {
					rt.Fatalf("memstore charge: %v", err)
				}
				if a, b := describe(&dr), describe(&dm); a != b {
					rt.Fatalf("step %d charge at %d:\nredis    %s\nmemstore %s", step, clock.Now().UnixMicro(), a, b)
				}
				if dr.Allowed {
					receipts = append(receipts, dr.Receipt)
				}
			case 2:
				if len(receipts) == 0 {
					continue
				}
				r := receipts[rapid.IntRange(0, len(receipts)-1).Draw(rt, "receipt")]
				a, err := refundStore(ctx, rs, &r, guards)
				if err != nil {
					rt.Fatalf("redis refund: %v", err)
				}
				b, err := refundStore(ctx, ms, &r, guards)
				if err != nil {
					rt.Fatalf("memstore refund: %v", err)
				}
				if fmt.Sprint(a) != fmt.Sprint(b) {
					rt.Fatalf("step %d refund:\nredis    %v\nmemstore %v", step, a, b)
				}
			case 3:
				a, err := rs.Peek(ctx, "id", []allowance.Rule{rule})
				if err != nil {
					rt.Fatalf("redis peek: %v", err)
				}
				b, _ := ms.Peek(ctx, "id", []allowance.Rule{rule})
				if fmt.Sprint(a) != fmt.Sprint(b) {
					rt.Fatalf("step %d peek:\nredis    %v\nmemstore %v", step, a, b)
				}
			}
			p := limits[rapid.IntRange(0, len(limits)-1).Draw(rt, "advance limit")].Period
			clock.Advance(time.Duration(rapid.Int64Range(0, int64(p/time.Microsecond)/3).Draw(rt, "advance µs")) * time.Microsecond)
		}
	})
}

func describe(d *allowance.Decision) string {
	s := fmt.Sprintf("allowed=%v remaining=%d reset=%v retry=%v", d.Allowed, d.Remaining, d.ResetAfter, d.RetryAfter)
	for _, st := range d.States() {
		s += fmt.Sprintf(" [%v %d %v %v]", st.Allowed, st.Remaining, st.ResetAfter, st.RetryAfter)
	}
	for _, c := range d.Receipt.Charges() {
		s += fmt.Sprintf(" w=%d", c.Window)
	}
	return s
}

// TestSlidingEstimateBeyond2To53 checks sliding-window estimates whose
// product prev*(P-e) is an exact multiple of P above 2^53: computed in plain
// doubles they come out one short.
func TestSlidingEstimateBeyond2To53(t *testing.T) {
	addr := redistest.Server(t)
	factory := rueidisFactory(t, []string{addr})
	ctx := context.Background()
	const p = 10 * 365 * 24 * time.Hour
	cases := []struct{ prev, elapsed, want int64 }{
		{31468688, 157680000000000, 15734344},
		{751763964, 210240000000000, 250587988},
		{251607736, 236520000000000, 62901934},
		{603300975, 252288000000000, 120660195},
		{738327546, 262800000000000, 123054591},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprint(tc.prev), func(t *testing.T) {
			clock := storetest.NewClock(time.UnixMicro(6 * p.Microseconds()))
			rs := factory(t, clock)
			ms := memstore.New(memstore.WithClock(clock.Now), memstore.WithSweepInterval(0))
			rule := allowance.Rule{Name: "big", Limits: allowance.Limits{{Count: allowance.MaxCount, Period: p}}, Algorithm: allowance.SlidingWindow, Cost: tc.prev}
			req := allowance.Request{ID: allowance.NewReceiptID(), Identity: "x", Rules: []allowance.Rule{rule}}
			for _, s := range []allowance.Store{rs, ms} {
				if d, err := chargeStore(ctx, s, req); err != nil || !d.Allowed {
					t.Fatalf("charge: %v %v", d.Allowed, err)
				}
			}
			clock.Advance(p + time.Duration(tc.elapsed)*time.Microsecond)
			for _, s := range []allowance.Store{rs, ms} {
				u, err := s.Peek(ctx, "x", []allowance.Rule{rule})
				if err != nil {
					t.Fatal(err)
				}
				if u[0].Used != tc.want {
					t.Errorf("%T: estimate %d, want %d", s, u[0].Used, tc.want)
				}
			}
			// A denied charge's retry-after needs (n-c+1)*P / cur, also past 2^53.
			rule.Cost = allowance.MaxCount
			req = allowance.Request{ID: allowance.NewReceiptID(), Identity: "x", Rules: []allowance.Rule{rule}}
			dr, err := chargeStore(ctx, rs, req)
			if err != nil {
				t.Fatal(err)
			}
			dm, _ := chargeStore(ctx, ms, req)
			if a, b := describe(&dr), describe(&dm); a != b {
				t.Fatalf("denied charge:\nredis    %s\nmemstore %s", a, b)
			}
		})
	}
}
