package allowance_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/allowancehq/allowance"
	"github.com/allowancehq/allowance/memstore"
)

// realReceipts returns receipts of real checks against a memstore: every
// algorithm, several rules and limits, costs, and an uncertain one.
func realReceipts(tb testing.TB) []allowance.Receipt {
	tb.Helper()
	store := memstore.New(memstore.WithSweepInterval(0))
	rules := []allowance.Rule{
		{Name: "create-task", Limits: allowance.Limits{{Count: 3, Period: time.Minute}, {Count: 20, Period: 24 * time.Hour}}, Algorithm: allowance.SlidingWindow},
		{Name: "burst", Limits: allowance.Limits{{Count: 100, Period: time.Second}}, Algorithm: allowance.GCRA, Cost: 7},
		{Name: "log", Limits: allowance.Limits{{Count: 5, Period: time.Hour}}, Algorithm: allowance.SlidingLog},
		{Name: "fixed", Limits: allowance.Limits{{Count: 1_000_000_000, Period: 3650 * 24 * time.Hour}}, Algorithm: allowance.FixedWindow, Cost: 1_000_000},
	}
	var out []allowance.Receipt
	for i := range rules {
		lim, err := allowance.NewLimiter(store, rules[:i+1]...)
		if err != nil {
			tb.Fatal(err)
		}
		d, err := lim.Check(context.Background(), strings.Repeat("ü", i)+"alice")
		if err != nil || !d.Allowed {
			tb.Fatalf("check: %v %v", d.Allowed, err)
		}
		out = append(out, d.Receipt)
	}
	out = append(out, allowance.UncertainReceipt(allowance.Request{ID: allowance.NewReceiptID(), Identity: "bob", Rules: rules}))
	return out
}

func TestReceiptRoundTrip(t *testing.T) {
	for _, r := range realReceipts(t) {
		b, err := r.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var got allowance.Receipt
		if err := got.UnmarshalBinary(b); err != nil {
			t.Fatalf("decode %x: %v", b, err)
		}
		if got.ID != r.ID || got.Identity != r.Identity || got.Uncertain() != r.Uncertain() || !slices.Equal(got.Charges(), r.Charges()) {
			t.Fatalf("decoded %v %q %v %+v; want %v %q %v %+v", got.ID, got.Identity, got.Uncertain(), got.Charges(), r.ID, r.Identity, r.Uncertain(), r.Charges())
		}
		if len(got.Rules()) != len(r.Rules()) {
			t.Fatalf("decoded %d rules, want %d", len(got.Rules()), len(r.Rules()))
		}
		again, err := got.MarshalBinary()
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("re-encoded %x, %v; want %x", again, err, b)
		}
		if !r.Expiry(time.Unix(0, 0)).Equal(got.Expiry(time.Unix(0, 0))) {
			t.Fatalf("expiry changed in the round trip")
		}
	}
}

// tagLen is the length of a signed receipt's tag, at the end of its
// encoding.
const tagLen = 16

func TestReceiptDecodeErrors(t *testing.T) {
	good, err := realReceipts(t)[1].MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if good[0] != 2 {
		t.Fatalf("a store's receipt encodes as version %d; want 2, signed", good[0])
	}
	mutate := func(f func(b []byte) []byte) []byte { return f(slices.Clone(good)) }
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "truncated before the version"},
		{"version", mutate(func(b []byte) []byte { b[0] = 3; return b }), "unknown version 3; expected 1 or 2"},
		{"truncated tag", good[:len(good)-tagLen+1], "truncated in the tag"},
		{"flags", mutate(func(b []byte) []byte { b[1] = 2; return b }), "unknown flags"},
		{"truncated id", good[:10], "truncated in the receipt id"},
		{"trailing", append(slices.Clone(good), 0), "1 unexpected bytes"},
		{"truncated", good[:len(good)-tagLen-1], "truncated"},
		{"non-minimal varint", mutate(func(b []byte) []byte {
			// identity length 6 ("üalice" is 7 bytes): rewrite as 0x87 0x00
			return slices.Concat(b[:18], []byte{0x80 | b[18], 0x00}, b[19:])
		}), "non-minimal varint in the identity length"},
		{"no charges", slices.Concat(good[:18], []byte{0, 0}), "no charges"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := realReceipts(t)[0]
			before := r
			err := r.UnmarshalBinary(tc.in)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "decode receipt: ") {
				t.Fatalf("UnmarshalBinary = %v, want an error saying %q", err, tc.want)
			}
			if r.ID != before.ID || !slices.Equal(r.Charges(), before.Charges()) {
				t.Fatal("a failed decode changed the receipt")
			}
		})
	}
}

// v1Receipt is a receipt as encoded before receipts were signed (format
// version 1), by the encoder of that time: NewReceipt of id
// 0123456789abcdef0123456789abcdef for "alice", two sliding-window charges
// of rule create-task (3/minute and 20/day) in the window starting
// 2026-01-01T00:00:00Z.
const v1Receipt = "01000123456789abcdef0123456789abcdef05616c696365020b6372656174652d7461736b033c0101808081b184e991030b6372656174652d7461736b1480a3050101808081b184e99103"

// TestReceiptVersion1 decodes a version 1 receipt: it still decodes,
// unsigned, encodes again to the same bytes, and no key verifies it.
func TestReceiptVersion1(t *testing.T) {
	b, err := hex.DecodeString(v1Receipt)
	if err != nil {
		t.Fatal(err)
	}
	var r allowance.Receipt
	if err := r.UnmarshalBinary(b); err != nil {
		t.Fatalf("decode a version 1 receipt: %v", err)
	}
	if r.ID.String() != "0123456789abcdef0123456789abcdef" || r.Identity != "alice" || r.Len() != 2 || r.Charge(1).Limit.Period != 24*time.Hour {
		t.Fatalf("decoded %s %q %+v", r.ID, r.Identity, r.Charges())
	}
	if r.Signed() {
		t.Fatal("a version 1 receipt decodes as signed")
	}
	again, err := r.MarshalBinary()
	if err != nil || !bytes.Equal(again, b) {
		t.Fatalf("re-encoded %x, %v; want %x", again, err, b)
	}
	if testKeys(t, "key one, sixteen bytes or more").Verify(&r) {
		t.Fatal("a version 1 receipt verifies")
	}
}

func testKeys(t testing.TB, keys ...string) *allowance.ReceiptKeys {
	t.Helper()
	bs := make([][]byte, len(keys))
	for i, k := range keys {
		bs[i] = []byte(k)
	}
	k, err := allowance.NewReceiptKeys(bs...)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// v2Receipt is v1Receipt signed with the key "key one, sixteen bytes or
// more": the format of version 2, tag included, pinned. The tag was checked
// with an implementation of SipHash-2-4-128 written apart from this one:
// SipHash, under the first 16 bytes of SHA-256("allowance receipt key\x00"
// || key), of every byte before it.
const v2Receipt = "02000123456789abcdef0123456789abcdef05616c696365020b6372656174652d7461736b033c0101808081b184e991030b6372656174652d7461736b1480a3050101808081b184e99103" +
	"e8bdd17fa93ad9687f87628a28a61952"

// TestReceiptSignVerify: the first key signs, every key verifies; a receipt
// signed with a key not listed, changed after signing, or never signed does
// not verify; the tag survives encoding.
func TestReceiptSignVerify(t *testing.T) {
	const k1, k2, k3 = "key one, sixteen bytes or more", "key two, sixteen bytes or more", "key three, also long enough"
	b, err := hex.DecodeString(v1Receipt)
	if err != nil {
		t.Fatal(err)
	}
	var r allowance.Receipt
	if err := r.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	testKeys(t, k1).Sign(&r)
	if !r.Signed() {
		t.Fatal("Sign did not sign")
	}
	enc, err := r.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(enc); got != v2Receipt {
		t.Fatalf("signed receipt encodes as %s; want %s", got, v2Receipt)
	}
	for _, tc := range []struct {
		keys []string
		want bool
	}{
		{[]string{k1}, true},
		{[]string{k2, k1}, true}, // k1 rotated to second place
		{[]string{k2}, false},    // k1 rotated out
		{[]string{k3, k2}, false},
	} {
		if got := testKeys(t, tc.keys...).Verify(&r); got != tc.want {
			t.Errorf("Verify with %d keys %q = %v, want %v", len(tc.keys), tc.keys, got, tc.want)
		}
	}
	var dec allowance.Receipt
	if err := dec.UnmarshalBinary(enc); err != nil || !dec.Signed() || !testKeys(t, k1).Verify(&dec) {
		t.Fatalf("decoded signed receipt: signed %v, err %v, or it does not verify", dec.Signed(), err)
	}
	// Any bit flipped: it no longer decodes, or no longer verifies.
	for i := range 8 * len(enc) {
		bad := slices.Clone(enc)
		bad[i/8] ^= 1 << (i % 8)
		var x allowance.Receipt
		if x.UnmarshalBinary(bad) == nil && testKeys(t, k1).Verify(&x) {
			t.Fatalf("bit %d flipped: %x still verifies", i, bad)
		}
	}
	// Changed in memory after signing.
	moved := dec
	moved.ID[0] ^= 1
	renamed := dec
	renamed.Identity = "mallory"
	for _, x := range []*allowance.Receipt{&moved, &renamed} {
		if testKeys(t, k1).Verify(x) {
			t.Fatalf("a receipt changed after signing verifies: %s %q", x.ID, x.Identity)
		}
	}
	// Built from scratch.
	fresh, err := allowance.NewReceipt(dec.ID, dec.Identity, dec.Charges())
	if err != nil {
		t.Fatal(err)
	}
	if fresh.Signed() || testKeys(t, k1).Verify(&fresh) {
		t.Fatal("a receipt built with NewReceipt verifies")
	}
	u := allowance.UncertainReceipt(allowance.Request{ID: dec.ID, Identity: "alice", Rules: dec.Rules()})
	if testKeys(t, k1).Verify(&u) {
		t.Fatal("an unsigned uncertain receipt verifies")
	}
	testKeys(t, k1).Sign(&u)
	if !testKeys(t, k1).Verify(&u) {
		t.Fatal("a signed uncertain receipt does not verify")
	}
	var none allowance.Receipt
	testKeys(t, k1).Sign(&none)
	if none.Signed() || testKeys(t, k1).Verify(&none) {
		t.Fatal("a receipt without charges was signed")
	}
}

// TestReceiptSignedInMemory: a receipt signed in memory verifies without a
// tag, under any keys that list its signing key, until its ID or Identity
// changes; encoded, it carries the tag of what was signed, so that a changed
// receipt encodes to one that does not verify either; signing again replaces
// the signature.
func TestReceiptSignedInMemory(t *testing.T) {
	const k1, k2 = "key one, sixteen bytes or more", "key two, sixteen bytes or more"
	for _, genuine := range realReceipts(t) {
		r := genuine
		testKeys(t, k1).Sign(&r)
		if !r.Signed() {
			t.Fatal("Sign did not sign")
		}
		enc, err := r.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var dec allowance.Receipt
		if err := dec.UnmarshalBinary(enc); err != nil || !testKeys(t, k2, k1).Verify(&dec) {
			t.Fatalf("the encoding of a receipt signed in memory does not verify (err %v)", err)
		}
		if again, _ := dec.MarshalBinary(); !bytes.Equal(again, enc) {
			t.Fatalf("decoded and encoded again: %x; want %x", again, enc)
		}
		for _, tc := range []struct {
			keys []string
			want bool
		}{{[]string{k1}, true}, {[]string{k2, k1}, true}, {[]string{k2}, false}} {
			if got := testKeys(t, tc.keys...).Verify(&r); got != tc.want {
				t.Errorf("Verify with %q = %v, want %v", tc.keys, got, tc.want)
			}
		}

		moved := r
		moved.ID[3] ^= 0x10
		renamed := r
		renamed.Identity = "mallory"
		for _, x := range []*allowance.Receipt{&moved, &renamed} {
			if testKeys(t, k1).Verify(x) {
				t.Fatalf("a receipt changed in memory after signing verifies: %s %q", x.ID, x.Identity)
			}
			b, err := x.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			var y allowance.Receipt
			if err := y.UnmarshalBinary(b); err != nil || !y.Signed() || y.ID != x.ID || y.Identity != x.Identity {
				t.Fatalf("decoded changed receipt: %s %q signed %v, err %v", y.ID, y.Identity, y.Signed(), err)
			}
			if testKeys(t, k1).Verify(&y) {
				t.Fatalf("the encoding of a receipt changed in memory after signing verifies: %s %q", x.ID, x.Identity)
			}
			// Signed again, as it is now: it verifies.
			z := *x
			testKeys(t, k1).Sign(&z)
			if !testKeys(t, k1).Verify(&z) {
				t.Fatal("a changed receipt signed again does not verify")
			}
		}
		moved.ID[3] ^= 0x10
		renamed.Identity = strings.Clone(r.Identity)
		for _, x := range []*allowance.Receipt{&moved, &renamed} {
			if !testKeys(t, k1).Verify(x) {
				t.Fatalf("a receipt changed back does not verify: %s %q", x.ID, x.Identity)
			}
		}

		// Signed again with another key, in memory or after decoding.
		other := r
		testKeys(t, k2).Sign(&other)
		redec := dec
		testKeys(t, k2).Sign(&redec)
		for _, x := range []*allowance.Receipt{&other, &redec} {
			if testKeys(t, k1).Verify(x) || !testKeys(t, k2).Verify(x) {
				t.Fatal("signing again did not replace the signature")
			}
		}
	}
}

func TestNewReceiptKeysErrors(t *testing.T) {
	if _, err := allowance.NewReceiptKeys(); err == nil || !strings.Contains(err.Error(), "none given") {
		t.Errorf("NewReceiptKeys() = %v; want an error saying none given", err)
	}
	if _, err := allowance.NewReceiptKeys(make([]byte, 32), []byte("short")); err == nil || !strings.Contains(err.Error(), "receipt key 2 is 5 bytes; expected at least 16") {
		t.Errorf("NewReceiptKeys with a 5-byte key = %v; want an error saying it is too short", err)
	}
	k := allowance.RandomReceiptKeys()
	if s := fmt.Sprintf("%v %#v %s", k, k, k); s != "ReceiptKeys(1 keys) ReceiptKeys(1 keys) ReceiptKeys(1 keys)" {
		t.Errorf("keys print as %q", s)
	}
	if allowance.Unverified.String() != "unverified" {
		t.Errorf("Unverified.String() = %q", allowance.Unverified.String())
	}
}

func TestSignVerifyNoAllocs(t *testing.T) {
	r := realReceipts(t)[0]
	k := testKeys(t, "another key, long enough", "key one, sixteen bytes or more")
	if n := testing.AllocsPerRun(100, func() {
		k.Sign(&r)
		if !k.Verify(&r) {
			t.Fatal("does not verify")
		}
	}); n != 0 {
		t.Fatalf("%v allocations per sign and verify; want 0", n)
	}
	// A decoded receipt is verified by its tag: here under each key, in
	// vain, as neither is the one that signed it.
	b, err := r.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var dec allowance.Receipt
	if err := dec.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	k = testKeys(t, "key one, sixteen bytes or more", "yet another key, long enough")
	if n := testing.AllocsPerRun(100, func() {
		if k.Verify(&dec) {
			t.Fatal("verifies under keys that do not list its key")
		}
	}); n != 0 {
		t.Fatalf("%v allocations per verification of a decoded receipt; want 0", n)
	}
}

func TestNewReceiptErrors(t *testing.T) {
	id := allowance.NewReceiptID()
	c := allowance.Charge{Rule: "r", Limit: allowance.Limit{Count: 5, Period: time.Minute}, Algorithm: allowance.FixedWindow, Amount: 1, Window: 60_000_000}
	with := func(f func(*allowance.Charge)) allowance.Charge { x := c; f(&x); return x }
	tests := []struct {
		name    string
		charges []allowance.Charge
		want    string
	}{
		{"none", nil, "no charges"},
		{"bad rule", []allowance.Charge{with(func(x *allowance.Charge) { x.Rule = "a b" })}, "not allowed"},
		{"bad limit", []allowance.Charge{with(func(x *allowance.Charge) { x.Limit.Count = 0 })}, "limit: count 0"},
		{"bad algorithm", []allowance.Charge{with(func(x *allowance.Charge) { x.Algorithm = 4 })}, "unknown algorithm 4"},
		{"zero amount", []allowance.Charge{with(func(x *allowance.Charge) { x.Amount = 0 })}, "amount 0 must be between 1 and the limit's count 5"},
		{"amount above count", []allowance.Charge{with(func(x *allowance.Charge) { x.Amount = 6 })}, "amount 6"},
		{"negative window", []allowance.Charge{with(func(x *allowance.Charge) { x.Window = -1 })}, "window -1 is out of range"},
		{"twice", []allowance.Charge{c, c}, "is charged twice"},
		{"amounts differ", []allowance.Charge{c, with(func(x *allowance.Charge) { x.Amount = 2; x.Limit.Period = time.Hour })}, "algorithm or amount differs"},
		{"not adjacent", []allowance.Charge{c, with(func(x *allowance.Charge) { x.Rule = "s" }), with(func(x *allowance.Charge) { x.Limit.Period = time.Hour })}, "not adjacent"},
	}
	for _, tc := range tests {
		if _, err := allowance.NewReceipt(id, "alice", tc.charges); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: NewReceipt = %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
	r, err := allowance.NewReceipt(id, "alice", []allowance.Charge{c, with(func(x *allowance.Charge) { x.Rule = "s"; x.Algorithm = allowance.GCRA; x.Amount = 2 })})
	if err != nil {
		t.Fatal(err)
	}
	if r.Len() != 2 || r.Charge(1).Amount != 2 || r.Charge(1).Algorithm != allowance.GCRA || r.Charge(0).Amount != 1 {
		t.Fatalf("receipt %+v", r.Charges())
	}
}

func TestReceiptID(t *testing.T) {
	id := allowance.NewReceiptID()
	if id.IsZero() || id == allowance.NewReceiptID() {
		t.Fatal("NewReceiptID returned the zero or a repeated id")
	}
	got, err := allowance.ParseReceiptID(id.String())
	if err != nil || got != id {
		t.Fatalf("ParseReceiptID(%s) = %v, %v", id, got, err)
	}
	for _, bad := range []string{"", "00", strings.Repeat("g", 32)} {
		if _, err := allowance.ParseReceiptID(bad); err == nil || !strings.Contains(err.Error(), "expected 32 hex digits") {
			t.Errorf("ParseReceiptID(%q) = %v", bad, err)
		}
	}
}

func TestZeroReceipt(t *testing.T) {
	var r allowance.Receipt
	if r.Len() != 0 || len(r.Charges()) != 0 || r.Uncertain() {
		t.Fatal("the zero receipt has charges")
	}
	if _, err := r.MarshalBinary(); err == nil {
		t.Fatal("the zero receipt encodes")
	}
}

// FuzzReceiptUnmarshal: the decoder never panics, and whatever it accepts
// re-encodes to the same bytes.
func FuzzReceiptUnmarshal(f *testing.F) {
	for _, r := range realReceipts(f) {
		b, err := r.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		var r allowance.Receipt
		if err := r.UnmarshalBinary(b); err != nil {
			if !strings.HasPrefix(err.Error(), "decode receipt: ") {
				t.Fatalf("error %q does not say what failed", err)
			}
			return
		}
		again, err := r.MarshalBinary()
		if err != nil {
			t.Fatalf("accepted %x but cannot re-encode it: %v", b, err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("accepted %x but re-encodes it as %x", b, again)
		}
		_ = r.Expiry(time.Now())
	})
}
