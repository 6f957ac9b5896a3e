package allowance

import (
	"strings"
	"testing"
	"time"
)

func TestRuleValidate(t *testing.T) {
	minute := Limits{{10, time.Minute}}
	nine := make(Limits, MaxLimitsPerRule+1)
	for i := range nine {
		nine[i] = Limit{int64(i + 1), time.Minute}
	}
	tests := []struct {
		name string
		r    Rule
		want string // "" for valid
	}{
		{"valid", Rule{Name: "create-task", Limits: minute}, ""},
		{"valid all fields", Rule{Name: "a.b_C-9", Limits: Limits{{3, time.Minute}, {20, 24 * time.Hour}}, Algorithm: GCRA, Cost: 3, RefundGuard: Limit{20, time.Hour}}, ""},
		{"cost equal to the count", Rule{Name: "r", Limits: minute, Cost: 10}, ""},
		{"64-character name", Rule{Name: strings.Repeat("n", 64), Limits: minute}, ""},
		{"empty name", Rule{Limits: minute}, "rule name is empty"},
		{"long name", Rule{Name: strings.Repeat("n", 65), Limits: minute}, "at most 64 are allowed"},
		{"bad character", Rule{Name: "create task", Limits: minute}, `rule name "create task": character ' ' at byte 6 is not allowed`},
		{"brace", Rule{Name: "a{b}", Limits: minute}, "is not allowed"},
		{"no limits", Rule{Name: "r"}, `rule "r": no limits`},
		{"too many limits", Rule{Name: "r", Limits: nine}, `rule "r": 9 limits; at most 8`},
		{"invalid limit", Rule{Name: "r", Limits: Limits{{0, time.Minute}}}, `rule "r": limit 1: count 0 must be at least 1`},
		{"duplicate limit", Rule{Name: "r", Limits: Limits{{1, time.Minute}, {1, time.Minute}}}, `limit "1/minute" is given twice`},
		{"unknown algorithm", Rule{Name: "r", Limits: minute, Algorithm: 9}, "unknown algorithm 9"},
		{"negative cost", Rule{Name: "r", Limits: minute, Cost: -1}, "cost -1 must not be negative"},
		{"cost above a count", Rule{Name: "r", Limits: Limits{{10, time.Minute}, {2, time.Second}}, Cost: 3}, `cost 3 exceeds limit "2/second"`},
		{"bad guard", Rule{Name: "r", Limits: minute, RefundGuard: Limit{0, time.Hour}}, `rule "r": refund guard: count 0`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.r.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

func TestValidateRules(t *testing.T) {
	r := Rule{Name: "r", Limits: Limits{{1, time.Second}}}
	if err := validateRules(nil); err == nil {
		t.Error("no rules: no error")
	}
	if err := validateRules([]Rule{r, r}); err == nil || !strings.Contains(err.Error(), `rule "r" is given twice`) {
		t.Errorf("duplicate rules: %v", err)
	}
	many := make([]Rule, MaxRules+1)
	for i := range many {
		many[i] = Rule{Name: "r" + string(rune('a'+i)), Limits: r.Limits}
	}
	if err := validateRules(many); err == nil || !strings.Contains(err.Error(), "at most 16") {
		t.Errorf("17 rules: %v", err)
	}
	if err := validateRules(many[:MaxRules]); err != nil {
		t.Errorf("16 rules: %v", err)
	}
}

func TestRuleAmount(t *testing.T) {
	if a := (Rule{}).Amount(); a != 1 {
		t.Errorf("Amount with cost 0 = %d, want 1", a)
	}
	if a := (Rule{Cost: 7}).Amount(); a != 7 {
		t.Errorf("Amount with cost 7 = %d, want 7", a)
	}
}

func TestAlgorithmNames(t *testing.T) {
	for _, a := range Algorithms() {
		b, err := a.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var got Algorithm
		if err := got.UnmarshalText(b); err != nil || got != a {
			t.Errorf("%s: round trip gave %v, %v", a, got, err)
		}
	}
	for in, want := range map[string]Algorithm{"GCRA": GCRA, " sliding_log ": SlidingLog, "Sliding-Window": SlidingWindow, "fixed-window": FixedWindow} {
		if got, err := ParseAlgorithm(in); err != nil || got != want {
			t.Errorf("ParseAlgorithm(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParseAlgorithm("leaky-bucket"); err == nil || !strings.Contains(err.Error(), `"leaky-bucket"`) || !strings.Contains(err.Error(), "expected one of") {
		t.Errorf("ParseAlgorithm(leaky-bucket) = %v", err)
	}
	if s := Algorithm(7).String(); s != "Algorithm(7)" {
		t.Errorf("String of an unknown algorithm = %q", s)
	}
	if _, err := Algorithm(7).MarshalText(); err == nil {
		t.Error("an unknown algorithm marshals")
	}
}
