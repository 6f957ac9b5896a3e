package storetest

import (
	"context"
	crand "crypto/rand"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/allowancehq/allowance"
)

// keyedEnv is env with a store of s.opts.Keyed that uses keys.
func (s *suite) keyedEnv(t *testing.T, keys *allowance.ReceiptKeys) *env {
	t.Helper()
	if s.opts.Keyed == nil {
		t.Fatal("storetest: Options.Keyed is nil; the suite needs it to sign receipts as the store does (see Options)")
	}
	c := NewClock(start)
	st := s.opts.Keyed(t, c, keys)
	if st == nil {
		t.Fatal("Options.Keyed returned a nil store")
	}
	return &env{t: t, store: st, clock: c, ctx: context.Background()}
}

// randomKeys returns n random keys and the ReceiptKeys of each.
func randomKeys(t *testing.T, n int) ([][]byte, []*allowance.ReceiptKeys) {
	t.Helper()
	keys := make([][]byte, n)
	each := make([]*allowance.ReceiptKeys, n)
	for i := range keys {
		keys[i] = make([]byte, 32)
		crand.Read(keys[i])
		k, err := allowance.NewReceiptKeys(keys[i])
		if err != nil {
			t.Fatal(err)
		}
		each[i] = k
	}
	return keys, each
}

func mustKeys(t *testing.T, keys ...[]byte) *allowance.ReceiptKeys {
	t.Helper()
	k, err := allowance.NewReceiptKeys(keys...)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// refundRefused refunds r and fails unless every charge's outcome is
// Unverified and usage of rules by identity is unchanged.
func (e *env) refundRefused(r *allowance.Receipt, identity string, rules ...allowance.Rule) {
	e.t.Helper()
	before := e.peek(identity, rules...)
	res, err := refundStore(e.ctx, e.store, r, nil)
	if err != nil {
		e.t.Fatalf("refund of an unverifiable receipt %s: %v; want no error", r.ID, err)
	}
	if len(res.Charges) != r.Len() {
		e.t.Fatalf("refund of an unverifiable receipt %s: %d outcomes for %d charges", r.ID, len(res.Charges), r.Len())
	}
	e.wantOutcomes(res, allowance.Unverified)
	if res.Restored() || res.Outcome() != allowance.Unverified {
		e.t.Fatalf("refund of an unverifiable receipt %s: restored=%v outcome=%s", r.ID, res.Restored(), res.Outcome())
	}
	if after := e.peek(identity, rules...); !slices.Equal(before, after) {
		e.t.Fatalf("refund of an unverifiable receipt %s changed usage from %+v to %+v", r.ID, before, after)
	}
}

// testRefundTampered takes a real receipt, flips every bit of its encoding
// in turn, and refunds every variant that still decodes: none restores
// anything or marks any id refunded or voided, before the genuine receipt's
// refund and after it. The genuine receipt restores exactly once, and a
// receipt whose id is a bit away (memstore's ids are consecutive) still
// restores afterwards.
func (s *suite) testRefundTampered(t *testing.T) {
	forEachAlgorithm(t, func(t *testing.T, alg allowance.Algorithm) {
		e := s.env(t)
		e.clock.alignTo(time.Minute)
		r := rule(t, "r", alg, "10/minute; 40/hour", 2)
		other := rule(t, "other", alg, "7/minute", 0)
		d1 := e.mustAllow("alice", r, other)
		d2 := e.mustAllow("alice", r, other)
		e.mustAllow("alice", r, other)
		enc, err := d2.Receipt.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		// flipAll refunds every variant with one bit flipped that decodes,
		// and checks that none restores anything or changes alice's usage.
		flipAll := func() {
			t.Helper()
			before := e.peek("alice", r, other)
			decoded := 0
			for i := range 8 * len(enc) {
				bad := slices.Clone(enc)
				bad[i/8] ^= 1 << (i % 8)
				var x allowance.Receipt
				if x.UnmarshalBinary(bad) != nil {
					continue
				}
				decoded++
				res, err := refundStore(e.ctx, e.store, &x, nil)
				if err != nil {
					t.Fatalf("refund with bit %d flipped: %v; want no error", i, err)
				}
				e.wantOutcomes(res, allowance.Unverified)
			}
			// At least every bit of the id and of the tag.
			if decoded < 8*(16+16) {
				t.Fatalf("%d of %d variants decoded; want at least the %d with a bit of the id or the tag flipped", decoded, 8*len(enc), 8*32)
			}
			if after := e.peek("alice", r, other); !slices.Equal(before, after) {
				t.Fatalf("refunds of tampered receipts changed usage from %+v to %+v", before, after)
			}
		}
		flipAll()
		u := e.peek("alice", r, other)
		e.wantUsage(u, 0, 6, 4, u[0].ResetAfter)
		e.wantUsage(u, 2, 3, 4, u[2].ResetAfter)
		e.wantOutcomes(e.refund(&d2.Receipt), allowance.Restored)
		u = e.peek("alice", r, other)
		e.wantUsage(u, 0, 4, 6, u[0].ResetAfter)
		e.wantUsage(u, 2, 2, 5, u[2].ResetAfter)
		flipAll() // the attack of the issue: variants of a refunded receipt
		e.wantOutcomes(e.refund(&d2.Receipt), allowance.AlreadyRefunded)
		e.wantOutcomes(e.refund(&d1.Receipt), allowance.Restored)
		u = e.peek("alice", r, other)
		e.wantUsage(u, 0, 2, 8, u[0].ResetAfter)
	})
}

// testRefundChangedInMemory: a receipt the store returned, with its ID or
// Identity changed in memory (to another id, to the id of another of the
// identity's receipts, to another identity), restores nothing and marks
// nothing, and neither does its encoding; changed back, it is the genuine
// receipt again. A copy of a receipt is the receipt: it refunds once.
func (s *suite) testRefundChangedInMemory(t *testing.T) {
	forEachAlgorithm(t, func(t *testing.T, alg allowance.Algorithm) {
		e := s.env(t)
		e.clock.alignTo(time.Minute)
		r := rule(t, "r", alg, "10/minute", 0)
		other := rule(t, "other", alg, "7/minute; 30/hour", 0)
		d1 := e.mustAllow("alice", r, other)
		d2 := e.mustAllow("alice", r, other)
		e.mustAllow("bob", r, other)

		moved := d2.Receipt
		moved.ID[15] ^= 1
		e.refundRefused(&moved, "alice", r, other)
		taken := d2.Receipt
		taken.ID = d1.Receipt.ID
		e.refundRefused(&taken, "alice", r, other)
		renamed := d2.Receipt
		renamed.Identity = "bob"
		e.refundRefused(&renamed, "bob", r, other)
		e.refundRefused(&renamed, "alice", r, other)
		for _, x := range []*allowance.Receipt{&moved, &taken, &renamed} {
			b, err := x.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			var decoded allowance.Receipt
			if err := decoded.UnmarshalBinary(b); err != nil {
				t.Fatal(err)
			}
			e.refundRefused(&decoded, decoded.Identity, r, other)
		}

		// Changed back, or to an equal identity of other bytes: genuine.
		moved.ID[15] ^= 1
		renamed.Identity = strings.Clone("alice")
		e.wantOutcomes(e.refund(&moved), allowance.Restored)
		e.wantOutcomes(e.refund(&renamed), allowance.AlreadyRefunded)
		e.wantOutcomes(e.refund(&d2.Receipt), allowance.AlreadyRefunded)
		e.wantOutcomes(e.refund(&d1.Receipt), allowance.Restored)
		u := e.peek("alice", r, other)
		e.wantUsage(u, 0, 0, 10, 0)
		u = e.peek("bob", r, other)
		e.wantUsage(u, 0, 1, 9, u[0].ResetAfter)
	})
}

// testRefundForged: receipts the store never signed restore nothing and
// mark nothing: NewReceipt with a real charge's exact content, with another
// id or identity, hand-made uncertain receipts (of a charged id and of one
// never charged, which stays chargeable), a receipt signed with another key,
// and a receipt of another store from the Factory.
func (s *suite) testRefundForged(t *testing.T) {
	forEachAlgorithm(t, func(t *testing.T, alg allowance.Algorithm) {
		e := s.env(t)
		e.clock.alignTo(time.Minute)
		r := rule(t, "r", alg, "5/minute", 0)
		d := e.mustAllow("alice", r)
		e.mustAllow("alice", r)
		rc := &d.Receipt

		same, err := allowance.NewReceipt(rc.ID, rc.Identity, rc.Charges())
		if err != nil {
			t.Fatal(err)
		}
		e.refundRefused(&same, "alice", r)
		// Encoded and decoded, as it would arrive from a database.
		b, err := same.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var decoded allowance.Receipt
		if err := decoded.UnmarshalBinary(b); err != nil {
			t.Fatal(err)
		}
		e.refundRefused(&decoded, "alice", r)
		fresh, err := allowance.NewReceipt(allowance.NewReceiptID(), "alice", rc.Charges())
		if err != nil {
			t.Fatal(err)
		}
		e.refundRefused(&fresh, "alice", r)
		bob, err := allowance.NewReceipt(allowance.NewReceiptID(), "bob", rc.Charges())
		if err != nil {
			t.Fatal(err)
		}
		e.refundRefused(&bob, "bob", r)

		uncertain := allowance.UncertainReceipt(allowance.Request{ID: rc.ID, Identity: "alice", Rules: []allowance.Rule{r}})
		e.refundRefused(&uncertain, "alice", r)
		neverID := allowance.NewReceiptID()
		never := allowance.UncertainReceipt(allowance.Request{ID: neverID, Identity: "alice", Rules: []allowance.Rule{r}})
		e.refundRefused(&never, "alice", r)
		// The forged void voided nothing: the id charges.
		if dn, err := chargeStore(e.ctx, e.store, allowance.Request{ID: neverID, Identity: "alice", Rules: []allowance.Rule{r}}); err != nil || !dn.Allowed {
			t.Fatalf("charge of an id a forged uncertain receipt named: allowed=%v err=%v; want allowed", dn.Allowed, err)
		}

		_, other := randomKeys(t, 1)
		resigned := d.Receipt
		other[0].Sign(&resigned)
		e.refundRefused(&resigned, "alice", r)

		e2 := s.env(t)
		e2.clock.set(e.clock.Now())
		d2 := e2.mustAllow("alice", r)
		e.refundRefused(&d2.Receipt, "alice", r)

		e.wantUsage(e.peek("alice", r), 0, 3, 2, e.peek("alice", r)[0].ResetAfter)
		e.wantOutcomes(e.refund(rc), allowance.Restored)
		e.wantUsage(e.peek("alice", r), 0, 2, 3, e.peek("alice", r)[0].ResetAfter)
		e.wantOutcomes(e.refund(rc), allowance.AlreadyRefunded)
		e.wantOutcomes(e2.refund(&d2.Receipt), allowance.Restored)
	})
}

// testReceiptKeyRotation: a store signs with its first key and refunds
// receipts of any of its keys, so a receipt signed before a rotation
// refunds after it; once the old key is dropped, its receipts restore
// nothing.
func (s *suite) testReceiptKeyRotation(t *testing.T) {
	forEachAlgorithm(t, func(t *testing.T, alg allowance.Algorithm) {
		raw, each := randomKeys(t, 2)
		oldKey, newKey := each[0], each[1]
		r := rule(t, "r", alg, "5/minute", 0)

		// Rotated: the new key signs, the old one still verifies.
		e := s.keyedEnv(t, mustKeys(t, raw[1], raw[0]))
		d := e.mustAllow("alice", r)
		e.mustAllow("alice", r)
		if !newKey.Verify(&d.Receipt) || oldKey.Verify(&d.Receipt) {
			t.Fatal("the store did not sign with its first key")
		}
		before := d.Receipt
		oldKey.Sign(&before) // as the store signed it before the rotation
		e.wantOutcomes(e.refund(&before), allowance.Restored)
		e.wantUsage(e.peek("alice", r), 0, 1, 4, e.peek("alice", r)[0].ResetAfter)
		e.wantOutcomes(e.refund(&d.Receipt), allowance.AlreadyRefunded)

		// The old key dropped.
		e = s.keyedEnv(t, newKey)
		d = e.mustAllow("alice", r)
		e.mustAllow("alice", r)
		before = d.Receipt
		oldKey.Sign(&before)
		e.refundRefused(&before, "alice", r)
		e.wantUsage(e.peek("alice", r), 0, 2, 3, e.peek("alice", r)[0].ResetAfter)
		e.wantOutcomes(e.refund(&d.Receipt), allowance.Restored)
		e.wantOutcomes(e.refund(&before), allowance.Unverified)
		e.wantOutcomes(e.refund(&d.Receipt), allowance.AlreadyRefunded)
		e.wantUsage(e.peek("alice", r), 0, 1, 4, e.peek("alice", r)[0].ResetAfter)
	})
}
