package redisstore_test

import (
	"context"
	"errors"
	"testing"

	"github.com/allowancehq/allowance"
	"github.com/allowancehq/allowance/internal/redistest"
	"github.com/allowancehq/allowance/redisstore"
	"github.com/allowancehq/allowance/redisstore/rueidisstore"
	"github.com/redis/rueidis"
)

// TestIdempotentAcrossStores: a repeat through another Store on the same
// Redis (another replica) gets the first Decision, the receipt's costs
// included, and the usage shows one charge.
func TestIdempotentAcrossStores(t *testing.T) {
	addr := redistest.Server(t)
	prefix := redisstore.WithPrefix(freshPrefix())
	a := clientKinds[0].open(t, addr, prefix)
	b := clientKinds[1].open(t, addr, prefix)
	rules := submitRules(t, allowance.FixedWindow)
	ctx := context.Background()
	req := allowance.Request{Identity: "dave", Rules: rules, Cost: 2, IdempotencyKey: "order-7"}
	first, err := chargeStore(ctx, a, req)
	if err != nil || !first.Allowed {
		t.Fatalf("first charge: %v %v", first.Allowed, err)
	}
	req.Cost = 1 // costs take no part in matching: the first charge's stand
	again, err := chargeStore(ctx, b, req)
	if err != nil || !again.Allowed || !again.Repeated || again.Receipt.ID != first.Receipt.ID {
		t.Fatalf("repeat through another store: allowed %v repeated %v receipt %s, %v; want the first decision (receipt %s)", again.Allowed, again.Repeated, again.Receipt.ID, err, first.Receipt.ID)
	}
	for i := range first.Len() {
		if first.State(i) != again.State(i) || first.Receipt.Charge(i) != again.Receipt.Charge(i) {
			t.Fatalf("limit %d: %+v charged %+v; want %+v charged %+v", i, again.State(i), again.Receipt.Charge(i), first.State(i), first.Receipt.Charge(i))
		}
	}
	if got := used(t, limiter(t, a, allowance.FixedWindow), "dave"); got != 2 {
		t.Fatalf("used %d; want 2 (one charge of cost 2)", got)
	}
	// The repeat's receipt is signed by the store's keys: it refunds the
	// one charge, once.
	res, err := refundStore(ctx, a, &again.Receipt, nil)
	if err != nil || res.Outcome() != allowance.Restored {
		t.Fatalf("refund of the repeat's receipt: %v %v; want restored", res.Outcome(), err)
	}
	if res, err := refundStore(ctx, b, &first.Receipt, nil); err != nil || res.Outcome() != allowance.AlreadyRefunded {
		t.Fatalf("refund of the first receipt after: %v %v; want already_refunded", res.Outcome(), err)
	}
}

// TestIdempotentAfterLostReply: a charge whose reply is lost is uncertain;
// its repeat (a client retrying after the timeout) gets the charge's
// Decision, and the usage shows one charge.
func TestIdempotentAfterLostReply(t *testing.T) {
	addr := redistest.Server(t)
	for _, kind := range clientKinds {
		t.Run(kind.name, func(t *testing.T) {
			p := newProxy(t, addr)
			prefix := redisstore.WithPrefix(freshPrefix())
			s := kind.open(t, p.addr(), prefix)
			direct := kind.open(t, addr, prefix)
			rules := submitRules(t, allowance.GCRA)
			ctx := context.Background()
			req := allowance.Request{Identity: "erin", Rules: rules, IdempotencyKey: "pay-1"}
			if _, err := chargeStore(ctx, s, allowance.Request{Identity: "warm", Rules: rules}); err != nil {
				t.Fatal(err) // warm the connection
			}
			p.scripted.Store(false)
			p.mode.Store(dropReply)
			d, err := chargeStore(ctx, s, req)
			p.mode.Store(pass)
			if !errors.Is(err, allowance.ErrUncertain) {
				t.Fatalf("charge with the reply lost: %v; want ErrUncertain", err)
			}
			again, err := chargeStore(ctx, direct, req)
			if err != nil || !again.Allowed || !again.Repeated || again.Receipt.ID != d.Receipt.ID {
				t.Fatalf("repeat: allowed %v repeated %v receipt %s, %v; want the lost charge's decision, receipt %s", again.Allowed, again.Repeated, again.Receipt.ID, err, d.Receipt.ID)
			}
			if again.Remaining != 2 {
				t.Fatalf("repeat: %d remaining; want 2, as the lost charge left", again.Remaining)
			}
			if got := used(t, limiter(t, direct, allowance.GCRA), "erin"); got != 1 {
				t.Fatalf("used %d; want 1", got)
			}
		})
	}
}

// TestIdempotentConcurrentCluster: 50 concurrent repeats on a Cluster are
// charged once and share one receipt.
func TestIdempotentConcurrentCluster(t *testing.T) {
	addrs := redistest.Cluster(t)
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: addrs, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	s, err := rueidisstore.New(c, redisstore.WithPrefix(freshPrefix()))
	if err != nil {
		t.Fatal(err)
	}
	rules := submitRules(t, allowance.SlidingLog)
	ctx := context.Background()
	type result struct {
		d   allowance.Decision
		err error
	}
	out := make(chan result)
	start := make(chan struct{})
	for range 50 {
		go func() {
			<-start
			d, err := chargeStore(ctx, s, allowance.Request{Identity: "frank", Rules: rules, IdempotencyKey: "k"})
			out <- result{d, err}
		}()
	}
	close(start)
	ids := map[allowance.ReceiptID]int{}
	for range 50 {
		r := <-out
		if r.err != nil || !r.d.Allowed {
			t.Fatalf("charge: %v %v", r.d.Allowed, r.err)
		}
		ids[r.d.Receipt.ID]++
	}
	if len(ids) != 1 {
		t.Fatalf("50 repeats got %d receipts; want one", len(ids))
	}
	u, err := s.Peek(ctx, "frank", rules)
	if err != nil || u[0].Used != 1 {
		t.Fatalf("used %v %v; want 1", u, err)
	}
}
