package redisstore

import (
	"strings"
	"testing"
	"time"

	"github.com/allowancehq/allowance"
)

func TestParseCharge(t *testing.T) {
	req := allowance.Request{ID: allowance.NewReceiptID(), Identity: "a", Rules: []allowance.Rule{{Name: "r", Limits: allowance.Limits{{Count: 5, Period: time.Second}, {Count: 9, Period: time.Minute}}}}}
	cases := []struct {
		name, reply string
		code        int64
		allowed     bool
		windows     []int64
		bad         bool
	}{
		{name: "allowed", reply: "1 4 200 8 300 1000 2000", allowed: true, windows: []int64{1000, 2000}},
		{name: "denied", reply: "0 0 0 200 7 1 8 300 0", windows: []int64{0, 0}},
		{name: "voided", reply: "-1", code: replyVoided},
		{name: "charged before", reply: "-2", code: replyCharged},
		{name: "allowed without windows", reply: "1 4 200 8 300", bad: true},
		{name: "allowed with more", reply: "1 4 200 8 300 1000 2000 3000", bad: true},
		{name: "denied with windows", reply: "0 0 0 200 7 1 8 300 0 1000 2000", bad: true},
		{name: "short", reply: "0 0 0 200 7", bad: true},
		{name: "not a number", reply: "1 4 x 8 300 1000 2000", bad: true},
		{name: "unknown first", reply: "2 4 200 8 300 1000 2000", bad: true},
		{name: "empty", reply: "", bad: true},
		{name: "code with more", reply: "-1 4", bad: true},
		{name: "plus sign", reply: "+1 4 200 8 300 1000 2000", bad: true},
		{name: "leading space", reply: " 1 4 200 8 300 1000 2000", bad: true},
		{name: "trailing space", reply: "1 4 200 8 300 1000 2000 ", bad: true},
		{name: "two spaces", reply: "1 4  200 8 300 1000 2000", bad: true},
		{name: "code with a space", reply: "-1 ", bad: true},
		{name: "flag not 0 or 1", reply: "0 7 0 200 7 0 8 300 0", bad: true},
		{name: "denied by no limit", reply: "0 1 0 200 0 1 8 300 0", bad: true},
		{name: "negative window", reply: "1 4 200 8 300 -1000 2000", bad: true},
		{name: "negative reset", reply: "1 4 -200 8 300 1000 2000", bad: true},
		{name: "negative retry", reply: "0 0 0 200 -7 1 8 300 0", bad: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var d allowance.Decision
			d.Reset(req)
			code, err := parseCharge(tc.reply, 2, &d)
			if tc.bad {
				if err == nil {
					t.Fatalf("parseCharge(%q) = %d, nil; want an error", tc.reply, code)
				}
				return
			}
			if err != nil || code != tc.code {
				t.Fatalf("parseCharge(%q) = %d, %v; want %d, nil", tc.reply, code, err, tc.code)
			}
			if code != 0 {
				return
			}
			if d.Allowed != tc.allowed {
				t.Errorf("allowed %v, want %v", d.Allowed, tc.allowed)
			}
			st := d.States()
			if len(st) != 2 || st[0].Remaining != 0 && !tc.allowed || st[1].ResetAfter != 300*time.Microsecond {
				t.Errorf("states %+v", st)
			}
			if tc.allowed {
				for i, c := range d.Receipt.Charges() {
					if c.Window != tc.windows[i] {
						t.Errorf("charge %d window %d, want %d", i, c.Window, tc.windows[i])
					}
				}
			}
		})
	}
}

func TestParseChargeGCRA(t *testing.T) {
	// 5/second: T = 200,000 µs, n*T = 1,000,000; 9/minute: T = 6,666,667 µs,
	// n*T = 60,000,003.
	gcra := allowance.Request{ID: allowance.NewReceiptID(), Identity: "a", Rules: []allowance.Rule{{Name: "r", Algorithm: allowance.GCRA, Limits: allowance.Limits{{Count: 5, Period: time.Second}, {Count: 9, Period: time.Minute}}}}}
	fixed := gcra
	fixed.Rules = []allowance.Rule{{Name: "r", Algorithm: allowance.FixedWindow, Limits: gcra.Rules[0].Limits}}
	cases := []struct {
		name, reply string
		req         allowance.Request
		bad         bool
	}{
		{name: "allowed", reply: "3 1 0 1400000 7666667", req: gcra},
		{name: "allowed, a test clock's time", reply: "3 0 1000000 1400000 7666667", req: gcra},
		{name: "TAT at now", reply: "3 1 0 1000000 7666667", req: gcra},
		{name: "TAT before now", reply: "3 1 0 999999 7666667", req: gcra, bad: true},
		{name: "TAT past the burst", reply: "3 1 0 2000001 7666667", req: gcra, bad: true},
		{name: "a TAT missing", reply: "3 1 0 1400000", req: gcra, bad: true},
		{name: "a TAT more", reply: "3 1 0 1400000 7666667 7666667", req: gcra, bad: true},
		{name: "no time", reply: "3", req: gcra, bad: true},
		{name: "no microseconds", reply: "3 1", req: gcra, bad: true},
		{name: "negative seconds", reply: "3 -1 0 1400000 7666667", req: gcra, bad: true},
		{name: "negative microseconds", reply: "3 1 -1 1400000 7666667", req: gcra, bad: true},
		{name: "time past int64", reply: "3 9223372036854 775808 1400000 7666667", req: gcra, bad: true},
		{name: "not GCRA", reply: "3 1 0 1400000 7666667", req: fixed, bad: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var d allowance.Decision
			d.Reset(tc.req)
			code, err := parseCharge(tc.reply, 2, &d)
			if tc.bad {
				if err == nil {
					t.Fatalf("parseCharge(%q) = %d, nil; want an error", tc.reply, code)
				}
				return
			}
			if err != nil || code != 0 || !d.Allowed {
				t.Fatalf("parseCharge(%q) = %d, %v, allowed %v; want 0, nil, allowed", tc.reply, code, err, d.Allowed)
			}
			st := d.States()
			_, _, _, tat := ints{s: tc.reply}.all4()
			wantRem := (1_000_000 - (tat - 1_000_000)) / 200_000
			if st[0].Remaining != wantRem || st[0].ResetAfter != time.Duration(tat-1_000_000)*time.Microsecond {
				t.Errorf("limit 0: remaining %d, reset %v; want %d, %v", st[0].Remaining, st[0].ResetAfter, wantRem, time.Duration(tat-1_000_000)*time.Microsecond)
			}
			if st[1].Remaining != 8 || st[1].ResetAfter != 6_666_667*time.Microsecond {
				t.Errorf("limit 1: remaining %d, reset %v; want 8, 6.666667s", st[1].Remaining, st[1].ResetAfter)
			}
			if w := d.Receipt.Charges()[1].Window; w != 7_666_667 {
				t.Errorf("limit 1 window %d, want the TAT 7666667", w)
			}
		})
	}
}

// all4 reads the first four integers of a reply, for tests.
func (r ints) all4() (a, b, c, d int64) {
	a, _ = r.next()
	b, _ = r.next()
	c, _ = r.next()
	d, _ = r.next()
	return a, b, c, d
}

// FuzzParseCharge: any reply either parses into a Decision that holds what
// the parser promises, or is refused; nothing panics.
func FuzzParseCharge(f *testing.F) {
	for _, s := range []string{"1 4 200 8 300 1000 2000", "0 0 0 200 7 1 8 300 0", "-1", "-2", "1 4 200 1000", "0 0 1 2 3", "", " ", "+1", "1 -0 0 0", "3 1 0 1400000 1500000", "3 0 1000000 1400000", "3 0 0", "-3 000102030405060708090a0b0c0d0e0f 0 1 4 200 8 300 1000 2000", "-3 000102030405060708090a0b0c0d0e0f 1 2 3 0 1000000 1400000", "-3 000102030405060708090a0b0c0d0e0f 0 0 0 0 200 7"} {
		f.Add(s, uint8(2))
		f.Add(s, uint8(1))
		f.Add(s, uint8(1|4))
		f.Add(s, uint8(2|4))
	}
	f.Fuzz(func(t *testing.T, reply string, mb uint8) {
		m := int(mb%4) + 1
		var ls allowance.Limits
		for i := 0; i < m; i++ {
			ls = append(ls, allowance.Limit{Count: int64(i + 1), Period: time.Second})
		}
		alg := allowance.FixedWindow
		if mb&4 != 0 {
			alg = allowance.GCRA
		}
		req := allowance.Request{ID: allowance.NewReceiptID(), Identity: "a", Rules: []allowance.Rule{{Name: "r", Limits: ls, Algorithm: alg}}}
		var d allowance.Decision
		d.Reset(req)
		code, err := parseReply(reply, req, m, &d)
		if err != nil || code != 0 {
			return
		}
		if strings.HasPrefix(reply, replyRepeat) && (!d.Allowed || !d.Repeated || d.Receipt.ID == req.ID) {
			t.Fatalf("parseReply(%q, %d): a repeat gave allowed %v, repeated %v, receipt %s", reply, m, d.Allowed, d.Repeated, d.Receipt.ID)
		}
		if d.Len() != m {
			t.Fatalf("parseCharge(%q, %d) gave %d limit states", reply, m, d.Len())
		}
		denied := false
		for i := 0; i < m; i++ {
			st := d.State(i)
			if st.ResetAfter < 0 || st.RetryAfter < 0 {
				t.Fatalf("parseCharge(%q, %d): negative times in %+v", reply, m, st)
			}
			denied = denied || !st.Allowed
		}
		if d.Allowed == denied {
			t.Fatalf("parseCharge(%q, %d): allowed %v with a denying limit %v", reply, m, d.Allowed, denied)
		}
		if d.Allowed {
			for i, c := range d.Receipt.Charges() {
				if c.Window < 0 {
					t.Fatalf("parseCharge(%q, %d): charge %d window %d", reply, m, i, c.Window)
				}
			}
			if alg == allowance.GCRA && strings.HasPrefix(reply, "3 ") {
				for i := 0; i < m; i++ {
					if st := d.State(i); st.Remaining < 0 || st.Remaining > ls[i].Count {
						t.Fatalf("parseCharge(%q, %d): GCRA limit %d remaining %d of %d", reply, m, i, st.Remaining, ls[i].Count)
					}
				}
			}
		}
	})
}

func TestParseRefund(t *testing.T) {
	charges := []allowance.Charge{{Rule: "r", Amount: 1}, {Rule: "r", Amount: 3}}
	cases := []struct {
		name, reply string
		want        []allowance.ChargeOutcome
		bad         bool
	}{
		{name: "restored", reply: "1 1 1 3", want: []allowance.ChargeOutcome{{Outcome: allowance.Restored, Restored: 1}, {Outcome: allowance.Restored, Restored: 3}}},
		{name: "restored less", reply: "1 0 1 2", want: []allowance.ChargeOutcome{{Outcome: allowance.Restored}, {Outcome: allowance.Restored, Restored: 2}}},
		{name: "window ended", reply: "2 0 1 3", want: []allowance.ChargeOutcome{{Outcome: allowance.WindowEnded}, {Outcome: allowance.Restored, Restored: 3}}},
		{name: "declined", reply: "4 0 4 0", want: []allowance.ChargeOutcome{{Outcome: allowance.Declined}, {Outcome: allowance.Declined}}},
		{name: "already refunded", reply: "3 0 3 0", want: []allowance.ChargeOutcome{{Outcome: allowance.AlreadyRefunded}, {Outcome: allowance.AlreadyRefunded}}},
		{name: "not charged", reply: "5 0 5 0", want: []allowance.ChargeOutcome{{Outcome: allowance.NotCharged}, {Outcome: allowance.NotCharged}}},
		{name: "short", reply: "1 1 1", bad: true},
		{name: "long", reply: "1 1 1 3 1", bad: true},
		{name: "empty", reply: "", bad: true},
		{name: "outcome 0", reply: "0 0 1 3", bad: true},
		{name: "outcome 6", reply: "1 1 6 0", bad: true},
		{name: "more than charged", reply: "1 2 1 3", bad: true},
		{name: "negative units", reply: "1 -1 1 3", bad: true},
		{name: "units not restored", reply: "2 1 1 3", bad: true},
		{name: "already refunded in part", reply: "3 0 1 3", bad: true},
		{name: "already refunded after", reply: "1 1 3 0", bad: true},
		{name: "two whole outcomes", reply: "3 0 5 0", bad: true},
		{name: "plus sign", reply: "+1 1 1 3", bad: true},
		{name: "leading space", reply: " 1 1 1 3", bad: true},
		{name: "trailing space", reply: "1 1 1 3 ", bad: true},
		{name: "two spaces", reply: "1 1  1 3", bad: true},
		{name: "not a number", reply: "1 1 x 3", bad: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := make([]allowance.ChargeOutcome, len(charges))
			err := parseRefund(tc.reply, charges, out)
			if tc.bad {
				if err == nil {
					t.Fatalf("parseRefund(%q) = %+v, nil; want an error", tc.reply, out)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseRefund(%q): %v", tc.reply, err)
			}
			for i := range out {
				want := tc.want[i]
				want.Charge = charges[i]
				if out[i] != want {
					t.Errorf("charge %d: %+v, want %+v", i, out[i], want)
				}
			}
		})
	}
}

// FuzzParseRefund: any reply either parses into outcomes that hold what the
// parser promises, or is refused; nothing panics.
func FuzzParseRefund(f *testing.F) {
	for _, s := range []string{"1 1 1 3", "2 0 4 0", "3 0 3 0", "5 0 5 0", "1 1", "1 1 1 3 1", "", " ", "+1 1", "1 -0 2 0", "6 0 6 0"} {
		f.Add(s, uint8(2))
		f.Add(s, uint8(1))
	}
	f.Fuzz(func(t *testing.T, reply string, mb uint8) {
		m := int(mb%4) + 1
		charges := make([]allowance.Charge, m)
		for i := range charges {
			charges[i] = allowance.Charge{Rule: "r", Amount: int64(i + 1)}
		}
		out := make([]allowance.ChargeOutcome, m)
		if err := parseRefund(reply, charges, out); err != nil {
			return
		}
		whole := 0 // charges whose outcome is of the whole receipt
		for i, c := range out {
			if c.Charge != charges[i] {
				t.Fatalf("parseRefund(%q, %d): charge %d is %+v, want %+v", reply, m, i, c.Charge, charges[i])
			}
			if c.Outcome < allowance.Restored || c.Outcome > allowance.NotCharged {
				t.Fatalf("parseRefund(%q, %d): charge %d outcome %d", reply, m, i, c.Outcome)
			}
			if c.Restored < 0 || c.Restored > c.Charge.Amount || c.Restored > 0 && c.Outcome != allowance.Restored {
				t.Fatalf("parseRefund(%q, %d): charge %d %v with %d units restored of %d", reply, m, i, c.Outcome, c.Restored, c.Charge.Amount)
			}
			if c.Outcome == allowance.AlreadyRefunded || c.Outcome == allowance.NotCharged {
				if c.Outcome != out[0].Outcome {
					t.Fatalf("parseRefund(%q, %d): charge %d %v, charge 0 %v", reply, m, i, c.Outcome, out[0].Outcome)
				}
				whole++
			}
		}
		if whole != 0 && whole != m {
			t.Fatalf("parseRefund(%q, %d): a whole-receipt outcome for %d charges of %d", reply, m, whole, m)
		}
	})
}

// TestParseRepeat: a repeat's reply gives the first charge's receipt id,
// costs and figures, marked Repeated unless the id is the request's own.
func TestParseRepeat(t *testing.T) {
	rules := []allowance.Rule{{Name: "r", Limits: allowance.Limits{{Count: 5, Period: time.Second}, {Count: 9, Period: time.Minute}}}}
	req := allowance.Request{ID: allowance.NewReceiptID(), Identity: "a", Rules: rules, Cost: 1}
	first := allowance.NewReceiptID()
	var d allowance.Decision
	if _, err := parseReply("-3 "+first.String()+" 1 3 1 4 200 8 300 1000 2000", req, 2, &d); err != nil {
		t.Fatal(err)
	}
	if !d.Allowed || !d.Repeated || d.Receipt.ID != first || d.Receipt.Charge(1).Amount != 3 || d.Receipt.Charge(1).Window != 2000 || d.State(0).Remaining != 4 {
		t.Fatalf("repeat: allowed %v repeated %v id %s charge %+v state %+v; want the first charge's", d.Allowed, d.Repeated, d.Receipt.ID, d.Receipt.Charge(1), d.State(0))
	}
	if _, err := parseReply("-3 "+req.ID.String()+" 0 1 4 200 8 300 1000 2000", req, 2, &d); err != nil || d.Repeated || d.Receipt.Charge(0).Amount != 1 {
		t.Fatalf("the request's own id: repeated %v, amount %d, %v; want not repeated, the rule's amount", d.Repeated, d.Receipt.Charge(0).Amount, err)
	}
	for _, bad := range []string{
		"-3 " + first.String(),
		"-3 " + first.String() + " 0",
		"-3 " + first.String() + " 2 1 1 1 4 200 8 300 1000 2000", // two costs for one rule
		"-3 " + first.String() + " 0 0 0 0 200 7 1 8 300 0",       // a denial
		"-3 " + first.String() + " 0 -1",
		"-3 xyz 0 1 4 200 8 300 1000 2000",
		"-3 " + first.String() + " 1 -2 1 4 200 8 300 1000 2000",
	} {
		if _, err := parseReply(bad, req, 2, &d); err == nil {
			t.Errorf("parseReply(%q) = nil; want an error", bad)
		}
	}
}
