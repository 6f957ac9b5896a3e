package allowance_test

import (
	"errors"
	"testing"

	"github.com/allowancehq/allowance"
)

// A loader tells which field is wrong from the error's type, not its text.
func TestRuleErrorNamesTheField(t *testing.T) {
	ok, err := allowance.ParseLimits("5/minute")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		rule  allowance.Rule
		field string
	}{
		{allowance.Rule{Name: "", Limits: ok}, "Name"},
		{allowance.Rule{Name: "bad name", Limits: ok}, "Name"},
		{allowance.Rule{Name: "r"}, "Limits"},
		{allowance.Rule{Name: "r", Limits: allowance.Limits{ok[0], ok[0]}}, "Limits"},
		{allowance.Rule{Name: "r", Limits: ok, Algorithm: 200}, "Algorithm"},
		{allowance.Rule{Name: "r", Limits: ok, Cost: -1}, "Cost"},
		{allowance.Rule{Name: "r", Limits: ok, Cost: 6}, "Cost"},
		{allowance.Rule{Name: "r", Limits: ok, RefundGuard: allowance.Limit{Count: -1}}, "RefundGuard"},
	} {
		err := c.rule.Validate()
		re, isRuleError := errors.AsType[*allowance.RuleError](err)
		if !isRuleError || re.Field != c.field || re.Rule != c.rule.Name || re.Unwrap() == nil {
			t.Errorf("%+v: Validate() = %v (%#v); want a *RuleError of field %s", c.rule, err, re, c.field)
		}
	}
}
