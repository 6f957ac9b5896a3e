package allowance

import (
	"testing"
	"time"
)

func TestDecisionMostRestrictive(t *testing.T) {
	type lim struct {
		allowed      bool
		remaining    int64
		reset, retry time.Duration
	}
	tests := []struct {
		name   string
		limits []lim
		want   int
	}{
		{"one", []lim{{true, 3, time.Second, 0}}, 0},
		{"fewest remaining", []lim{{true, 3, time.Second, 0}, {true, 1, time.Second, 0}, {true, 2, time.Hour, 0}}, 1},
		{"longest reset among equals", []lim{{true, 1, time.Second, 0}, {true, 1, time.Hour, 0}, {true, 1, time.Minute, 0}}, 1},
		{"first among equals", []lim{{true, 1, time.Second, 0}, {true, 1, time.Second, 0}}, 0},
		{"denial beats allowance", []lim{{true, 0, time.Hour, 0}, {false, 0, time.Second, time.Second}}, 1},
		{"longest retry", []lim{{false, 0, time.Hour, time.Second}, {false, 0, time.Second, time.Minute}, {true, 5, 0, 0}}, 1},
		{"beyond the inline states", []lim{{true, 5, 0, 0}, {true, 5, 0, 0}, {true, 5, 0, 0}, {true, 5, 0, 0}, {true, 4, 0, 0}, {false, 0, 0, time.Millisecond}, {false, 0, 0, time.Second}}, 6},
	}
	t.Run("none", func(t *testing.T) {
		var d Decision
		if d.MostRestrictive() != -1 || d.Len() != 0 {
			t.Fatalf("zero decision: most restrictive %d, len %d; want -1, 0", d.MostRestrictive(), d.Len())
		}
	})
	t.Run("the most limits a check may have", func(t *testing.T) {
		const n = MaxRules * MaxLimitsPerRule
		var d Decision
		d.Reset(Request{})
		for i := 0; i < n; i++ {
			d.SetLimit(i, true, int64(n-i), time.Second, 0, 0)
		}
		if d.MostRestrictive() != n-1 || d.Len() != n || d.Remaining != 1 {
			t.Fatalf("most restrictive %d of %d, remaining %d; want the last, %d, 1", d.MostRestrictive(), d.Len(), d.Remaining, n-1)
		}
	})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var ls Limits
			for i := range tc.limits {
				ls = append(ls, Limit{int64(10 + i), time.Minute})
			}
			req := Request{ID: NewReceiptID(), Identity: "alice", Rules: []Rule{{Name: "r", Limits: ls}}}
			var d Decision
			d.SetLimit(0, false, 1, time.Hour, time.Hour, 1) // what Reset must forget
			d.Reset(req)
			if d.Allowed || d.Receipt.ID != req.ID || d.Receipt.Identity != "alice" || d.Receipt.Len() != 0 {
				t.Fatalf("reset decision: allowed %v, receipt %s of %q with %d charges", d.Allowed, d.Receipt.ID, d.Receipt.Identity, d.Receipt.Len())
			}
			if d.MostRestrictive() != -1 || d.Len() != 0 {
				t.Fatalf("new decision: most restrictive %d, len %d; want -1, 0", d.MostRestrictive(), d.Len())
			}
			for i, l := range tc.limits {
				d.SetLimit(i, l.allowed, l.remaining, l.reset, l.retry, int64(i))
			}
			if d.MostRestrictive() != tc.want {
				t.Fatalf("most restrictive %d, want %d", d.MostRestrictive(), tc.want)
			}
			w := tc.limits[tc.want]
			if d.Remaining != w.remaining || d.ResetAfter != w.reset || d.RetryAfter != w.retry {
				t.Fatalf("decision figures %d %v %v, want %d %v %v", d.Remaining, d.ResetAfter, d.RetryAfter, w.remaining, w.reset, w.retry)
			}
			states := d.States()
			if len(states) != len(tc.limits) {
				t.Fatalf("%d states, want %d", len(states), len(tc.limits))
			}
			for i, s := range states {
				l := tc.limits[i]
				if s.Rule != "r" || s.Limit != ls[i] || s.Allowed != l.allowed || s.Remaining != l.remaining || s.ResetAfter != l.reset || s.RetryAfter != l.retry {
					t.Fatalf("state %d = %+v, want %+v of %v", i, s, l, ls[i])
				}
			}
			if d.Allowed || d.Receipt.Len() != 0 {
				t.Fatalf("decision allowed %v with %d charges before Allow", d.Allowed, d.Receipt.Len())
			}
			d.Allow()
			if !d.Allowed || d.Receipt.Len() != len(tc.limits) || d.Receipt.Identity != "alice" || d.Receipt.ID != req.ID {
				t.Fatalf("after Allow: allowed %v, %d charges, identity %q", d.Allowed, d.Receipt.Len(), d.Receipt.Identity)
			}
			for i, c := range d.Receipt.Charges() {
				if c.Window != int64(i) || c.Limit != ls[i] || c.Amount != 1 {
					t.Fatalf("charge %d = %+v", i, c)
				}
			}
		})
	}
}

func TestOutcome(t *testing.T) {
	names := map[Outcome]string{0: "unknown", Restored: "restored", WindowEnded: "window_ended", AlreadyRefunded: "already_refunded", Declined: "declined", NotCharged: "not_charged", 99: "unknown"}
	for o, want := range names {
		if o.String() != want {
			t.Errorf("Outcome(%d).String() = %q, want %q", o, o.String(), want)
		}
	}
	var res RefundResult
	if res.Outcome() != 0 || res.Restored() {
		t.Errorf("empty result: outcome %v restored %v", res.Outcome(), res.Restored())
	}
	res.Charges = []ChargeOutcome{{Outcome: WindowEnded}, {Outcome: Restored, Restored: 1}}
	if res.Outcome() != Restored || !res.Restored() {
		t.Errorf("one restored: outcome %v restored %v", res.Outcome(), res.Restored())
	}
	res.Charges = []ChargeOutcome{{Outcome: Declined}, {Outcome: WindowEnded}}
	if res.Outcome() != Declined || res.Restored() {
		t.Errorf("none restored: outcome %v restored %v", res.Outcome(), res.Restored())
	}
}
