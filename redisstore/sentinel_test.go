package redisstore_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/allowancehq/allowance"
	"github.com/allowancehq/allowance/internal/redistest"
	"github.com/allowancehq/allowance/redisstore"
	"github.com/allowancehq/allowance/redisstore/goredisstore"
	"github.com/allowancehq/allowance/redisstore/rueidisstore"
	"github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"
)

// TestConformanceSentinel runs the conformance suite through a Sentinel:
// both clients ask it for the master and send every command there.
func TestConformanceSentinel(t *testing.T) {
	g := redistest.Sentinel(t)
	t.Run("rueidis", func(t *testing.T) {
		c, err := rueidis.NewClient(rueidis.ClientOption{
			InitAddress:  []string{g.Sentinel.Addr()},
			Sentinel:     rueidis.SentinelOption{MasterSet: redistest.MasterSet},
			DisableCache: true,
		})
		if err != nil {
			t.Fatalf("rueidis Sentinel client: %v", err)
		}
		t.Cleanup(c.Close)
		runClient(t, func(opts ...redisstore.Option) (*redisstore.Store, error) { return rueidisstore.New(c, opts...) })
	})
	t.Run("go-redis", func(t *testing.T) {
		runGoRedis(t, redis.NewFailoverClient(&redis.FailoverOptions{MasterName: redistest.MasterSet, SentinelAddrs: []string{g.Sentinel.Addr()}, PoolSize: 64}))
	})
}

// TestSentinelFailover: after the Sentinel promotes the replica, the store
// finds the new master by itself, without a restart, and the limits and
// receipts charged before the failover (replicated before it) still count:
// usage carries over and a receipt from before is refunded exactly once.
// rueidis is opened from a redis:// URL naming the master set.
func TestSentinelFailover(t *testing.T) {
	cases := []struct {
		name string
		open func(t *testing.T, g *redistest.SentinelGroup) *redisstore.Store
	}{
		{"rueidis", func(t *testing.T, g *redistest.SentinelGroup) *redisstore.Store {
			s, err := rueidisstore.Open(t.Context(), "redis://"+g.Sentinel.Addr()+"?master_set="+redistest.MasterSet, redisstore.WithPrefix(freshPrefix()))
			if err != nil {
				t.Fatalf("Open through the Sentinel: %v", err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}},
		{"go-redis", func(t *testing.T, g *redistest.SentinelGroup) *redisstore.Store {
			c := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: redistest.MasterSet, SentinelAddrs: []string{g.Sentinel.Addr()}})
			t.Cleanup(func() { c.Close() })
			s, err := goredisstore.New(c, redisstore.WithPrefix(freshPrefix()))
			if err != nil {
				t.Fatal(err)
			}
			return s
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Each waits about 10 s for the Sentinel to turn the old master
			// into a replica (redistest's Failover), on a group of its own.
			t.Parallel()
			g := redistest.Sentinel(t)
			s := tc.open(t, g)
			// GCRA on the server's clock: no window can end mid-test.
			l, err := allowance.NewLimiter(s, allowance.Rule{Name: "tasks", Limits: allowance.Limits{{Count: 5, Period: 24 * time.Hour}}, Algorithm: allowance.GCRA})
			if err != nil {
				t.Fatal(err)
			}
			ctx := t.Context()
			var before allowance.Decision
			for i := range 2 {
				if before, err = l.Check(ctx, "alice"); err != nil || !before.Allowed || before.Remaining != int64(3-i+1) {
					t.Fatalf("check %d before the failover: allowed %v, remaining %d, %v; want allowed, %d", i, before.Allowed, before.Remaining, err, 3-i+1)
				}
			}
			if _, err := redistest.Command(g.Master.Addr(), "WAIT", "1", "5000"); err != nil {
				t.Fatalf("WAIT for the replica: %v", err)
			}

			g.Failover()

			// The first check after it may fail while the client learns of
			// the new master; one that may have been applied is voided, as
			// a caller would.
			d := checkUntilServed(ctx, t, l, "alice")
			if !d.Allowed || d.Remaining != 2 {
				t.Fatalf("check after the failover: allowed %v, remaining %d; want allowed, 2 (the two charges before it carried over)", d.Allowed, d.Remaining)
			}
			if got := refundOutcome(ctx, t, l, &before.Receipt); got != allowance.Restored {
				t.Fatalf("refund of a receipt from before the failover: %v; want restored", got)
			}
			if got := refundOutcome(ctx, t, l, &before.Receipt); got != allowance.AlreadyRefunded {
				t.Fatalf("second refund of that receipt: %v; want already refunded", got)
			}
			if d, err := l.Check(ctx, "alice"); err != nil || !d.Allowed || d.Remaining != 2 {
				t.Fatalf("check after the refund: allowed %v, remaining %d, %v; want allowed, 2", d.Allowed, d.Remaining, err)
			}
		})
	}
}

// checkUntilServed checks identity until a check succeeds, for up to 30
// seconds, voiding the uncertain ones, and returns the first served decision.
func checkUntilServed(ctx context.Context, t *testing.T, l *allowance.Limiter, identity string) allowance.Decision {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var pending []allowance.Receipt
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		d, err := l.Check(cctx, identity)
		cancel()
		if err == nil {
			for i := range pending {
				if got := refundOutcome(ctx, t, l, &pending[i]); got == allowance.Restored {
					t.Logf("voided an uncertain check that had been applied")
				}
			}
			return d
		}
		if errors.Is(err, allowance.ErrUncertain) {
			pending = append(pending, d.Receipt)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no check served within 30s of the failover; last error: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// refundOutcome refunds receipt, trying again for up to 30 seconds while
// the store fails, and returns the outcome.
func refundOutcome(ctx context.Context, t *testing.T, l *allowance.Limiter, receipt *allowance.Receipt) allowance.Outcome {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := l.Refund(ctx, receipt)
		if err == nil {
			return res.Outcome()
		}
		if time.Now().After(deadline) {
			t.Fatalf("refund of %s failed for 30s: %v", receipt.ID, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
