package redisstore

import (
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

// FuzzParseCharge: any reply either parses into a Decision that holds what
// the parser promises, or is refused; nothing panics.
func FuzzParseCharge(f *testing.F) {
	for _, s := range []string{"1 4 200 8 300 1000 2000", "0 0 0 200 7 1 8 300 0", "-1", "-2", "1 4 200 1000", "0 0 1 2 3", "", " ", "+1", "1 -0 0 0"} {
		f.Add(s, uint8(2))
		f.Add(s, uint8(1))
	}
	f.Fuzz(func(t *testing.T, reply string, mb uint8) {
		m := int(mb%4) + 1
		var ls allowance.Limits
		for i := 0; i < m; i++ {
			ls = append(ls, allowance.Limit{Count: int64(i + 1), Period: time.Second})
		}
		req := allowance.Request{ID: allowance.NewReceiptID(), Identity: "a", Rules: []allowance.Rule{{Name: "r", Limits: ls}}}
		var d allowance.Decision
		d.Reset(req)
		code, err := parseCharge(reply, m, &d)
		if err != nil || code != 0 {
			return
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
		}
	})
}
