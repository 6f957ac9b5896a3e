package allowance

import (
	"errors"
	"fmt"
	"strings"
)

// Algorithm says how a limit counts. Every Store implements every algorithm with
// the same arithmetic, in whole microseconds of the store's clock, so that a
// decision does not depend on which store made it. With P the limit's period in
// microseconds, N its count, c the request's amount (Rule.Amount: the units it
// is charged) and now the store's clock:
//
//   - FixedWindow counts per aligned window [w, w+P) with w = now - now%P. A
//     request is admitted while used+c <= N. Reset: the window's end.
//   - SlidingWindow keeps the counts of the current and the previous aligned
//     window and estimates usage as cur + floor(prev*(P-e)/P), with e = now-w the
//     time elapsed in the current window; admitted while estimate+c <= N. It uses
//     O(1) memory and approximates a moving window.
//   - SlidingLog records one entry per charge, its time and amount, and counts
//     the units of the entries of the last P microseconds (times t with
//     t > now-P); admitted while count+c <= N. Exact, and its memory grows
//     with the number of charges in a period (at most N).
//   - GCRA is a token bucket of size N refilled at N per P, kept as a theoretical
//     arrival time (TAT). With the emission interval T = ceil(P/N) and the burst
//     tolerance N*T, a request is admitted while max(TAT, now)+c*T-now <= N*T,
//     and then TAT becomes max(TAT, now)+c*T.
//
// The zero value is FixedWindow.
type Algorithm uint8

// The algorithms. Their String forms are the names configuration uses.
const (
	FixedWindow Algorithm = iota
	SlidingWindow
	SlidingLog
	GCRA
)

var algorithmNames = [...]string{"fixed-window", "sliding-window", "sliding-log", "gcra"}

// Algorithms lists every algorithm, in the order of their constants.
func Algorithms() []Algorithm { return []Algorithm{FixedWindow, SlidingWindow, SlidingLog, GCRA} }

// String returns the algorithm's configuration name, such as "sliding-window".
func (a Algorithm) String() string {
	if int(a) < len(algorithmNames) {
		return algorithmNames[a]
	}
	return fmt.Sprintf("Algorithm(%d)", uint8(a))
}

// Valid reports whether a is one of the defined algorithms.
func (a Algorithm) Valid() bool { return int(a) < len(algorithmNames) }

// ParseAlgorithm returns the algorithm with the configuration name s
// (fixed-window, sliding-window, sliding-log or gcra; case-insensitive, "_" is
// read as "-").
func ParseAlgorithm(s string) (Algorithm, error) {
	n := strings.ReplaceAll(strings.ToLower(strings.TrimSpace(s)), "_", "-")
	for i, name := range algorithmNames {
		if n == name {
			return Algorithm(i), nil
		}
	}
	return 0, fmt.Errorf("unknown algorithm %q; expected one of fixed-window, sliding-window, sliding-log, gcra", s)
}

// MarshalText encodes a as its configuration name.
func (a Algorithm) MarshalText() ([]byte, error) {
	if !a.Valid() {
		return nil, fmt.Errorf("marshal algorithm: unknown algorithm %d", uint8(a))
	}
	return []byte(a.String()), nil
}

// UnmarshalText parses a configuration name with ParseAlgorithm.
func (a *Algorithm) UnmarshalText(b []byte) error {
	v, err := ParseAlgorithm(string(b))
	if err != nil {
		return err
	}
	*a = v
	return nil
}

// Limits of a rule and of a rule set. They bound the work one check does and
// the size of a receipt.
const (
	MaxLimitsPerRule = 8
	MaxRules         = 16
	maxRuleName      = 64
)

// Rule is a named set of limits charged together with one algorithm. A request
// the rule applies to is charged Cost units against every one of its limits, or
// against none when any of them would be exceeded.
type Rule struct {
	// Name identifies the rule in keys, headers, receipts and metrics: 1 to 64
	// characters of ASCII letters, digits, '-', '_' and '.'.
	Name string
	// Limits all apply; at least one, at most MaxLimitsPerRule.
	Limits Limits
	// Algorithm counts the limits; the zero value is FixedWindow.
	Algorithm Algorithm
	// Cost is how many units one request takes; 0 means 1. It may not exceed
	// the smallest limit's count, since such a request could never pass.
	Cost int64
	// RefundGuard, when non-zero, bounds how many refunds one identity may get
	// for this rule: at most RefundGuard.Count per RefundGuard.Period, counted
	// in fixed windows. Past it a refund is declined, so that a client cannot
	// make free requests by provoking the errors that are refunded.
	RefundGuard Limit
}

// Amount returns the units one request is charged: Cost, or 1 when Cost is 0.
func (r Rule) Amount() int64 {
	if r.Cost == 0 {
		return 1
	}
	return r.Cost
}

// A RuleError is what Rule.Validate returns: the rule, the field of it
// that is wrong, and why, so that a configuration loader can point at the
// field without reading the message.
type RuleError struct {
	Rule  string // the rule's name, as given
	Field string // the Rule field: "Name", "Limits", "Algorithm", "Cost" or "RefundGuard"
	Err   error  // what is wrong with it
}

func (e *RuleError) Error() string {
	if e.Field == "Name" {
		return e.Err.Error() // it quotes the name
	}
	return fmt.Sprintf("rule %q: %v", e.Rule, e.Err)
}

func (e *RuleError) Unwrap() error { return e.Err }

// Validate reports the first problem with r as a *RuleError, naming the
// rule and the field.
func (r Rule) Validate() error {
	if err := validateRuleName(r.Name); err != nil {
		return &RuleError{Rule: r.Name, Field: "Name", Err: err}
	}
	fail := func(field, format string, args ...any) error {
		return &RuleError{Rule: r.Name, Field: field, Err: fmt.Errorf(format, args...)}
	}
	if len(r.Limits) == 0 {
		return fail("Limits", `no limits; expected at least one, such as "10/minute"`)
	}
	if len(r.Limits) > MaxLimitsPerRule {
		return fail("Limits", "%d limits; at most %d are allowed", len(r.Limits), MaxLimitsPerRule)
	}
	for i, l := range r.Limits {
		if err := l.Validate(); err != nil {
			return fail("Limits", "limit %d: %w", i+1, err)
		}
		for _, prev := range r.Limits[:i] {
			if prev == l {
				return fail("Limits", "limit %q is given twice", l)
			}
		}
	}
	if !r.Algorithm.Valid() {
		return fail("Algorithm", "unknown algorithm %d; expected fixed-window, sliding-window, sliding-log or gcra", uint8(r.Algorithm))
	}
	if r.Cost < 0 {
		return fail("Cost", "cost %d must not be negative", r.Cost)
	}
	for _, l := range r.Limits {
		if r.Amount() > l.Count {
			return fail("Cost", "cost %d exceeds limit %q: no request could ever pass", r.Amount(), l)
		}
	}
	if r.RefundGuard != (Limit{}) {
		if err := r.RefundGuard.Validate(); err != nil {
			return fail("RefundGuard", "refund guard: %w", err)
		}
	}
	return nil
}

func validateRuleName(name string) error {
	if name == "" {
		return errors.New("rule name is empty; expected 1 to 64 letters, digits, '-', '_' or '.'")
	}
	if len(name) > maxRuleName {
		return fmt.Errorf("rule name %q is %d bytes long; at most %d are allowed", name, len(name), maxRuleName)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("rule name %q: character %q at byte %d is not allowed; expected letters, digits, '-', '_' or '.'", name, c, i)
		}
	}
	return nil
}

// validateRules checks a rule set: every rule valid, names unique, the total
// number of limits bounded.
func validateRules(rules []Rule) error {
	if len(rules) == 0 {
		return errors.New("no rules; expected at least one")
	}
	if len(rules) > MaxRules {
		return fmt.Errorf("%d rules; at most %d are allowed in one check", len(rules), MaxRules)
	}
	for i, r := range rules {
		if err := r.Validate(); err != nil {
			return err
		}
		for _, prev := range rules[:i] {
			if prev.Name == r.Name {
				return fmt.Errorf("rule %q is given twice", r.Name)
			}
		}
	}
	return nil
}
