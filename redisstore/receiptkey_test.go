package redisstore_test

import (
	"context"
	"strings"
	"testing"

	"github.com/allowancehq/allowance"
	"github.com/allowancehq/allowance/internal/redistest"
	"github.com/allowancehq/allowance/redisstore"
	"github.com/allowancehq/allowance/redisstore/rueidisstore"
	"github.com/redis/go-redis/v9"
)

// TestReceiptKeyShared: stores on one Redis and prefix, without configured
// keys, share the key the first stored there, whatever their client, and
// refund each other's receipts; a store on another prefix, or with keys of
// its own, refunds none of them. When the key is lost (a Redis without
// persistence restarted, a flush), a new store makes another, and receipts
// of the old one are Unverified there.
func TestReceiptKeyShared(t *testing.T) {
	addr := redistest.Server(t)
	ctx := context.Background()
	prefix := freshPrefix()
	a := clientKinds[0].open(t, addr, redisstore.WithPrefix(prefix))
	b := clientKinds[1].open(t, addr, redisstore.WithPrefix(prefix))
	other := clientKinds[0].open(t, addr, redisstore.WithPrefix(freshPrefix()))
	own := clientKinds[0].open(t, addr, redisstore.WithPrefix(prefix), redisstore.WithReceiptKeys(allowance.RandomReceiptKeys()))
	la, lb := limiter(t, a, allowance.FixedWindow), limiter(t, b, allowance.FixedWindow)
	lother, lown := limiter(t, other, allowance.FixedWindow), limiter(t, own, allowance.FixedWindow)

	d, err := la.Check(ctx, "alice")
	if err != nil || !d.Allowed {
		t.Fatal(d.Allowed, err)
	}
	for _, l := range []*allowance.Limiter{lother, lown} {
		if res, err := l.Refund(ctx, &d.Receipt); err != nil || res.Outcome() != allowance.Unverified {
			t.Fatalf("refund in a store with another key: %v %v; want unverified", res.Outcome(), err)
		}
	}
	if n := own.Unverified(); n != 1 {
		t.Fatalf("Unverified() = %d after one refused refund; want 1", n)
	}
	if res, err := lb.Refund(ctx, &d.Receipt); err != nil || res.Outcome() != allowance.Restored {
		t.Fatalf("refund in another store of the same prefix: %v %v; want restored", res.Outcome(), err)
	}

	// The key lost: a new store makes a new one.
	key := prefix + "receipt-key"
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	if err := c.Del(ctx, key).Err(); err != nil {
		t.Fatal(err)
	}
	fresh := clientKinds[0].open(t, addr, redisstore.WithPrefix(prefix))
	d, err = la.Check(ctx, "alice")
	if err != nil || !d.Allowed {
		t.Fatal(d.Allowed, err)
	}
	if res, err := limiter(t, fresh, allowance.FixedWindow).Refund(ctx, &d.Receipt); err != nil || res.Outcome() != allowance.Unverified {
		t.Fatalf("refund of a receipt of the lost key: %v %v; want unverified", res.Outcome(), err)
	}
	if res, err := la.Refund(ctx, &d.Receipt); err != nil || res.Outcome() != allowance.Restored {
		t.Fatalf("refund in the store that signed it: %v %v; want restored", res.Outcome(), err)
	}
}

// TestReceiptKeyErrors: a key in Redis that is not one fails Open with a
// message saying what to do; so do nil keys.
func TestReceiptKeyErrors(t *testing.T) {
	addr := redistest.Server(t)
	ctx := context.Background()
	prefix := freshPrefix()
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	for _, bad := range []string{"not hex", "00112233"} {
		if err := c.Set(ctx, prefix+"receipt-key", bad, 0).Err(); err != nil {
			t.Fatal(err)
		}
		_, err := rueidisstore.Open(ctx, "redis://"+addr, redisstore.WithPrefix(prefix))
		if err == nil || !strings.Contains(err.Error(), "delete it to make a new one") {
			t.Fatalf("Open with the receipt key %q in Redis: %v; want an error saying what to do", bad, err)
		}
	}
	if _, err := rueidisstore.Open(ctx, "redis://"+addr, redisstore.WithReceiptKeys(nil)); err == nil || !strings.Contains(err.Error(), "receipt keys are nil") {
		t.Fatalf("Open with nil receipt keys: %v; want an error", err)
	}
	// Configured keys need nothing in Redis.
	s, err := rueidisstore.Open(ctx, "redis://"+addr, redisstore.WithPrefix(prefix), redisstore.WithReceiptKeys(allowance.RandomReceiptKeys()))
	if err != nil {
		t.Fatalf("Open with keys, beside a bad key in Redis: %v", err)
	}
	s.Close()
}
