package storetest

import (
	"testing"
	"time"

	"github.com/allowancehq/allowance"
)

// testDeniedStatesArePeek: a denied check reports every limit as it is now,
// nothing charged: each limit's Remaining and ResetAfter are what Peek
// reports right after, for the limits that would have allowed the request
// as for those that denied it. A limit allowed exactly when the cost fits in
// its Remaining; the denying ones have a RetryAfter, the others none. Rules
// of two and three limits, alone and together, with the denial coming from
// the first limit, a later one, or another rule, at clock steps that leave
// windows partly used and GCRA partly flowed back.
func (s *suite) testDeniedStatesArePeek(t *testing.T) {
	forEachAlgorithm(t, func(t *testing.T, alg allowance.Algorithm) {
		for _, tc := range []struct {
			name  string
			rules []allowance.Rule
			step  time.Duration
		}{
			{"first-of-three-denies", []allowance.Rule{rule(t, "r", alg, "2/minute; 10/hour; 45/day", 0)}, 7 * time.Second},
			{"second-of-two-denies", []allowance.Rule{rule(t, "r", alg, "6/minute; 4/hour", 0)}, 1100 * time.Millisecond},
			{"two-rules", []allowance.Rule{
				rule(t, "a", alg, "5/minute; 40/day", 2),
				rule(t, "b", alg, "3 per 10 seconds; 100/hour; 1000/day", 1),
			}, 1300 * time.Millisecond},
		} {
			t.Run(tc.name, func(t *testing.T) {
				e := s.env(t)
				e.clock.alignTo(24 * time.Hour)
				e.advance(13 * time.Hour)
				denials, withAllowing := 0, 0
				for range 60 {
					e.advance(tc.step)
					d := e.charge("alice", tc.rules...)
					if d.Allowed {
						continue
					}
					denials++
					u := e.peek("alice", tc.rules...)
					if d.Len() != len(u) {
						t.Fatalf("at %s: denial of %d limits; peek of %d", e.stamp(), d.Len(), len(u))
					}
					allowing := false
					for i := range d.Len() {
						st := d.State(i)
						cost := ruleOf(tc.rules, st.Rule).Amount()
						if st.Remaining != u[i].Remaining || st.ResetAfter != u[i].ResetAfter {
							t.Fatalf("at %s: denial says %s %s remaining %d, reset after %v; peek right after says %d, %v (%s)",
								e.stamp(), st.Rule, st.Limit, st.Remaining, st.ResetAfter, u[i].Remaining, u[i].ResetAfter, describe(&d))
						}
						if st.Allowed != (cost <= st.Remaining) || st.Allowed != (st.RetryAfter == 0) {
							t.Fatalf("at %s: %s %s allowed=%v with remaining %d for a cost of %d, retry after %v",
								e.stamp(), st.Rule, st.Limit, st.Allowed, st.Remaining, cost, st.RetryAfter)
						}
						allowing = allowing || st.Allowed
					}
					if allowing {
						withAllowing++
					}
					if m := d.MostRestrictive(); m < 0 || d.State(m).Allowed || d.Remaining != d.State(m).Remaining || d.ResetAfter != d.State(m).ResetAfter || d.RetryAfter != d.State(m).RetryAfter {
						t.Fatalf("at %s: denial's figures are not those of a denying limit: %s", e.stamp(), describe(&d))
					}
				}
				if withAllowing < 3 {
					t.Fatalf("%d denials, %d of them with a limit that allowed; want at least 3 such", denials, withAllowing)
				}
			})
		}
	})
}

// ruleOf returns the rule of rules named name.
func ruleOf(rules []allowance.Rule, name string) *allowance.Rule {
	for i := range rules {
		if rules[i].Name == name {
			return &rules[i]
		}
	}
	panic("storetest: no rule " + name)
}
