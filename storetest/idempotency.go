package storetest

import (
	"sync"
	"testing"
	"time"

	"github.com/allowancehq/allowance"
)

// chargeKey charges identity against rules with an idempotency key.
func (e *env) chargeKey(identity, key string, rules ...allowance.Rule) allowance.Decision {
	e.t.Helper()
	d, err := chargeStore(e.ctx, e.store, allowance.Request{Identity: identity, Rules: rules, IdempotencyKey: key})
	if err != nil {
		e.t.Fatalf("charge %q with key %q at %s: %v", identity, key, e.stamp(), err)
	}
	return d
}

// sameDecision fails unless b is a's Decision again: allowed, the same
// receipt (id and windows) and the same figures.
func (e *env) sameDecision(what string, a, b allowance.Decision) {
	e.t.Helper()
	if !b.Allowed || !b.Repeated || a.Repeated || b.Receipt.ID != a.Receipt.ID || b.Len() != a.Len() {
		e.t.Fatalf("%s: %s, receipt %s, Repeated %v; want the first decision again (%s, receipt %s, Repeated false) with Repeated set", what, describe(&b), b.Receipt.ID, b.Repeated, describe(&a), a.Receipt.ID)
	}
	for i := range a.Len() {
		if a.State(i) != b.State(i) || a.Receipt.Charge(i) != b.Receipt.Charge(i) {
			e.t.Fatalf("%s: limit %d: %+v charged %+v; want %+v charged %+v", what, i, b.State(i), b.Receipt.Charge(i), a.State(i), a.Receipt.Charge(i))
		}
	}
}

// testIdempotentRepeat: a repeat of an allowed charge with the same
// identity, rules and key is not charged again and gets the first
// Decision; another key, identity or set of rules is a charge of its own.
func (s *suite) testIdempotentRepeat(t *testing.T) {
	forEachAlgorithm(t, func(t *testing.T, alg allowance.Algorithm) {
		e := s.env(t)
		e.clock.alignTo(time.Minute)
		r := rule(t, "r", alg, "5/minute", 0)
		other := rule(t, "other", alg, "5/minute", 0)
		first := e.chargeKey("alice", "order-1", r)
		if !first.Allowed || first.Remaining != 4 {
			t.Fatalf("first: %s; want allowed with 4 remaining", describe(&first))
		}
		e.advance(time.Second)
		e.sameDecision("repeat", first, e.chargeKey("alice", "order-1", r))
		if u := e.peek("alice", r); u[0].Used != 1 {
			t.Fatalf("after a repeat: used %d, want 1", u[0].Used)
		}
		// The repeat's receipt refunds the one charge, once.
		second := e.chargeKey("alice", "order-2", r)
		if !second.Allowed || second.Receipt.ID == first.Receipt.ID {
			t.Fatalf("another key: %s, receipt %s; want a charge of its own", describe(&second), second.Receipt.ID)
		}
		if d := e.chargeKey("bob", "order-1", r); !d.Allowed || d.Receipt.ID == first.Receipt.ID || d.Remaining != 4 {
			t.Fatalf("another identity, same key: %s; want a charge of its own with 4 remaining", describe(&d))
		}
		if d := e.chargeKey("alice", "order-1", other); !d.Allowed || d.Receipt.ID == first.Receipt.ID || d.Remaining != 4 {
			t.Fatalf("other rules, same key: %s; want a charge of its own with 4 remaining", describe(&d))
		}
		if u := e.peek("alice", r); u[0].Used != 2 {
			t.Fatalf("used %d, want 2 (order-1 once, order-2)", u[0].Used)
		}
		// Still the first decision for the key, not a later one.
		e.sameDecision("repeat after other charges", first, e.chargeKey("alice", "order-1", r))
	})
}

// testIdempotentAfterRefund: once the first charge was refunded (a server
// error, say), a repeat is charged afresh, and its repeats get the new
// decision; a denial leaves no record, so its repeat is judged afresh.
func (s *suite) testIdempotentAfterRefund(t *testing.T) {
	forEachAlgorithm(t, func(t *testing.T, alg allowance.Algorithm) {
		e := s.env(t)
		e.clock.alignTo(time.Minute)
		r := rule(t, "r", alg, "5/minute", 0)
		first := e.chargeKey("alice", "k", r)
		e.wantOutcomes(e.refund(&first.Receipt), allowance.Restored)
		again := e.chargeKey("alice", "k", r)
		if !again.Allowed || again.Repeated || again.Receipt.ID == first.Receipt.ID {
			t.Fatalf("repeat after a refund: %s, receipt %s; want a fresh charge", describe(&again), again.Receipt.ID)
		}
		if u := e.peek("alice", r); u[0].Used != 1 {
			t.Fatalf("used %d, want 1", u[0].Used)
		}
		e.sameDecision("repeat of the fresh charge", again, e.chargeKey("alice", "k", r))

		// A denied check leaves no record.
		one := rule(t, "one", alg, "1/minute", 0)
		e.mustAllow("bob", one)
		if d := e.chargeKey("bob", "k", one); d.Allowed {
			t.Fatalf("over the limit: %s; want denied", describe(&d))
		}
		e.advance(2 * time.Minute)
		if d := e.chargeKey("bob", "k", one); !d.Allowed {
			t.Fatalf("repeat of a denial once there is room: %s; want allowed", describe(&d))
		}
	})
}

// testIdempotentExpiry: the record lasts the longest period of the rules;
// after it a repeat is a new charge.
func (s *suite) testIdempotentExpiry(t *testing.T) {
	e := s.env(t)
	e.clock.alignTo(time.Hour)
	limits, err := allowance.ParseLimits("5/minute; 50/hour")
	if err != nil {
		t.Fatal(err)
	}
	r := allowance.Rule{Name: "r", Limits: limits}
	first := e.chargeKey("alice", "k", r)
	e.advance(59 * time.Minute)
	e.sameDecision("repeat within the hour", first, e.chargeKey("alice", "k", r))
	e.advance(time.Minute)
	if d := e.chargeKey("alice", "k", r); !d.Allowed || d.Receipt.ID == first.Receipt.ID {
		t.Fatalf("repeat an hour later: %s, receipt %s; want a new charge", describe(&d), d.Receipt.ID)
	}
	if u := e.peek("alice", r); u[1].Used != 1 {
		t.Fatalf("hourly used %d, want 1 (the first charge's window ended with the hour)", u[1].Used)
	}
}

// testIdempotentContention: concurrent repeats of one key are charged once
// and all get the one decision.
func (s *suite) testIdempotentContention(t *testing.T) {
	e := s.env(t)
	r := rule(t, "r", allowance.GCRA, "1000/hour", 0)
	n := min(s.opts.Concurrency, 200)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		ids  = map[allowance.ReceiptID]int{}
		errs []error
	)
	ready := make(chan struct{})
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-ready
			d, err := chargeStore(e.ctx, e.store, allowance.Request{Identity: "hot", Rules: []allowance.Rule{r}, IdempotencyKey: "same"})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
			} else if d.Allowed {
				ids[d.Receipt.ID]++
			}
		}()
	}
	close(ready)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d charges failed; first: %v", len(errs), errs[0])
	}
	if len(ids) != 1 {
		t.Fatalf("%d concurrent repeats got %d receipts (%v); want one, shared by all", n, len(ids), ids)
	}
	if u := e.peek("hot", r); u[0].Used != 1 {
		t.Fatalf("%d concurrent repeats: used %d, want 1", n, u[0].Used)
	}
}
