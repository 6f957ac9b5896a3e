package redisstore_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/allowancehq/allowance"
	"github.com/allowancehq/allowance/internal/redistest"
	"github.com/allowancehq/allowance/redisstore"
	"github.com/allowancehq/allowance/redisstore/goredisstore"
	"github.com/redis/go-redis/v9"
)

// TestKeysOutliveTheirState checks, on the server's clock, that every state
// key expires no earlier than its state ends, across charges that keep the
// key's expiry (KEEPTTL), charges that move it and refunds: the charge
// script only sets an expiry when the window or the TAT's second changes.
func TestKeysOutliveTheirState(t *testing.T) {
	addr := redistest.Server(t)
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { c.Close() })
	s, err := goredisstore.New(c, redisstore.WithPrefix("exp:"))
	if err != nil {
		t.Fatal(err)
	}
	// One limit, with its own key, and two limits sharing one (ruleKey),
	// whose expiry must cover the longer-lived state.
	shortLimit := allowance.Limit{Count: 1000, Period: 3 * time.Second}
	longLimit := allowance.Limit{Count: 600, Period: 5 * time.Second}
	for _, limits := range []allowance.Limits{{shortLimit}, {shortLimit, longLimit}} {
		for _, alg := range []allowance.Algorithm{allowance.GCRA, allowance.FixedWindow, allowance.SlidingWindow} {
			t.Run(fmt.Sprintf("%s/%d-limits", alg, len(limits)), func(t *testing.T) {
				testKeysOutliveTheirState(ctx, t, c, s, alg, limits)
			})
		}
	}
}

func testKeysOutliveTheirState(ctx context.Context, t *testing.T, c *redis.Client, s *redisstore.Store, alg allowance.Algorithm, limits allowance.Limits) {
	rule := allowance.Rule{Name: fmt.Sprintf("r-%s-%d", redisstore.AlgCode(alg), len(limits)), Limits: limits, Algorithm: alg}
	l, err := allowance.NewLimiter(s, rule)
	if err != nil {
		t.Fatal(err)
	}
	key := redisstore.RuleKey(s, "alice", rule.Name, alg, limits)
	check := func(step int) {
		t.Helper()
		if err := keyOutlivesState(ctx, c, l, key, "alice"); err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
	}
	var last allowance.Decision
	for i := 0; i < 400; i++ {
		d, err := l.Check(ctx, "alice")
		if err != nil {
			t.Fatal(err)
		}
		if !d.Allowed {
			t.Fatalf("check %d denied", i)
		}
		last = d
		check(i)
		if i%50 == 49 {
			if _, err := l.Refund(ctx, &last.Receipt); err != nil {
				t.Fatal(err)
			}
			check(i)
			time.Sleep(20 * time.Millisecond) // cross second boundaries of the server's clock
		}
	}
}

// TestRefundAfterRollKeepsKeyAlive: a sliding window's charge refunded
// after its window ended (into the previous window's count) leaves the
// state in its window, so the next charge, in the new window, sets the
// key's expiry for that window rather than keeping the old one. A refund
// that rolled the state forward made that charge keep an expiry set for
// the window before, which ended a period too soon.
func TestRefundAfterRollKeepsKeyAlive(t *testing.T) {
	addr := redistest.Server(t)
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { c.Close() })
	s, err := goredisstore.New(c, redisstore.WithPrefix("roll:"))
	if err != nil {
		t.Fatal(err)
	}
	second := allowance.Limit{Count: 1000, Period: time.Second}
	for _, limits := range []allowance.Limits{{second}, {second, {Count: 1000, Period: 3 * time.Second}}} {
		t.Run(fmt.Sprintf("%d-limits", len(limits)), func(t *testing.T) {
			rule := allowance.Rule{Name: fmt.Sprintf("roll-%d", len(limits)), Limits: limits, Algorithm: allowance.SlidingWindow}
			l, err := allowance.NewLimiter(s, rule)
			if err != nil {
				t.Fatal(err)
			}
			// A machine that stalls for most of a second can make the refund
			// miss the window after the charge's: then try again.
			for attempt := range 3 {
				id := fmt.Sprintf("alice-%d", attempt)
				d, err := l.Check(ctx, id)
				if err != nil || !d.Allowed {
					t.Fatalf("check: allowed=%v err=%v", d.Allowed, err)
				}
				// Into the next one-second window, on the server's clock
				// (this machine's).
				p := second.Period.Microseconds()
				start := d.Receipt.Charges()[0].Window
				time.Sleep(time.Until(time.UnixMicro(start + p + 50_000)))
				res, err := l.Refund(ctx, &d.Receipt)
				if err == nil && !res.Restored() && time.Now().UnixMicro() >= start+2*p {
					continue
				}
				if err != nil || !res.Restored() {
					t.Fatalf("refund after the window ended: %+v, %v; want restored (into the previous window)", res, err)
				}
				if d, err = l.Check(ctx, id); err != nil || !d.Allowed {
					t.Fatalf("second check: allowed=%v err=%v", d.Allowed, err)
				}
				if err := keyOutlivesState(ctx, c, l, redisstore.RuleKey(s, id, rule.Name, rule.Algorithm, limits), id); err != nil {
					t.Error(err)
				}
				return
			}
			t.Fatal("the refund missed the window after its charge's three times: the machine is too slow for this test")
		})
	}
}

// keyOutlivesState reports an error unless the state key of l's rule for
// identity expires no earlier than the state of every limit it holds ends.
func keyOutlivesState(ctx context.Context, c *redis.Client, l *allowance.Limiter, key, identity string) error {
	pttl, err := c.PTTL(ctx, key).Result()
	if err != nil {
		return err
	}
	us, err := l.Peek(ctx, identity)
	if err != nil {
		return err
	}
	for _, u := range us {
		if u.Used > 0 && pttl < u.ResetAfter {
			return fmt.Errorf("key expires in %v, the state of %s ends in %v", pttl, u.Limit, u.ResetAfter)
		}
	}
	return nil
}
