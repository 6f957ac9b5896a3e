package allowance

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Limit allows at most Count units in any Period. Its zero value is not a valid
// limit: Count and Period must both be positive, and Period a whole number of
// seconds.
//
// How "any Period" is measured depends on the rule's Algorithm: a fixed window
// counts per aligned window, a sliding log per moving window, and so on.
type Limit struct {
	Count  int64
	Period time.Duration
}

// Bounds a Limit must respect. They keep every counter and every time value of
// every algorithm, in microseconds, far below 2^53, so that the Redis store's
// Lua numbers (doubles) compute exactly what the Go stores compute.
const (
	// MaxCount is the largest Count a Limit may have.
	MaxCount = 1_000_000_000
	// MaxPeriod is the longest Period a Limit may have: ten years.
	MaxPeriod = 10 * 365 * 24 * time.Hour
)

// unit is a time unit of the limit grammar.
type unit struct {
	name string // canonical singular name
	d    time.Duration
}

// units, longest first, as String picks the largest unit that divides a period.
var units = [...]unit{
	{"year", 365 * 24 * time.Hour},
	{"month", 30 * 24 * time.Hour},
	{"day", 24 * time.Hour},
	{"hour", time.Hour},
	{"minute", time.Minute},
	{"second", time.Second},
}

// unitByName maps every accepted spelling of a unit to its length.
func unitByName(s string) (time.Duration, bool) {
	switch strings.ToLower(s) {
	case "s", "sec", "secs", "second", "seconds":
		return time.Second, true
	case "m", "min", "mins", "minute", "minutes":
		return time.Minute, true
	case "h", "hr", "hrs", "hour", "hours":
		return time.Hour, true
	case "d", "day", "days":
		return 24 * time.Hour, true
	case "month", "months":
		return 30 * 24 * time.Hour, true
	case "y", "year", "years":
		return 365 * 24 * time.Hour, true
	}
	return 0, false
}

// ParseError reports a limit string that does not follow the grammar.
type ParseError struct {
	Input string // the whole input as given
	Part  string // the part of it that is wrong
	Msg   string // what is wrong and what was expected
}

func (e *ParseError) Error() string {
	if e.Part != "" && e.Part != strings.TrimSpace(e.Input) {
		return fmt.Sprintf("limit %q: in %q: %s", e.Input, e.Part, e.Msg)
	}
	return fmt.Sprintf("limit %q: %s", e.Input, e.Msg)
}

const grammarHint = `expected COUNT "/" [N] UNIT or COUNT "per" [N] UNIT, such as "10/minute" or "5 per 30 seconds"`

// ParseLimit parses one limit: COUNT "/" [N] UNIT or COUNT "per" [N] UNIT, where
// UNIT is second, minute, hour, day, month (30 days) or year (365 days), singular
// or plural, or one of s, sec, m, min, h, hr, d, y. Spaces around the parts are
// optional: "10/minute", "10 / minute", "5 per 30 seconds", "100/2h".
func ParseLimit(s string) (Limit, error) {
	return parseLimit(s, s)
}

func parseLimit(input, s string) (Limit, error) {
	part := strings.TrimSpace(s)
	fail := func(format string, args ...any) (Limit, error) {
		return Limit{}, &ParseError{Input: input, Part: part, Msg: fmt.Sprintf(format, args...)}
	}
	if part == "" {
		return fail("empty limit; " + grammarHint)
	}
	var count, rest string
	if i := strings.IndexByte(part, '/'); i >= 0 {
		count, rest = part[:i], part[i+1:]
	} else {
		fields := strings.Fields(part)
		j := -1
		for k, f := range fields {
			if strings.EqualFold(f, "per") {
				j = k
				break
			}
		}
		if j != 1 {
			return fail(grammarHint)
		}
		count, rest = fields[0], strings.Join(fields[2:], " ")
	}
	count = strings.TrimSpace(count)
	n, err := parseCount(count)
	if err != nil {
		return fail("count %q: %v", count, err)
	}
	rest = strings.TrimSpace(rest)
	if rest == "" {
		return fail("missing time unit after %q; expected second, minute, hour, day, month or year", count)
	}
	// rest is [N] UNIT, with or without a space between them ("30 seconds", "2h").
	k := 0
	for k < len(rest) && rest[k] >= '0' && rest[k] <= '9' {
		k++
	}
	if k == 0 && (rest[0] == '-' || rest[0] == '+') {
		return fail("period multiplier in %q must be a positive whole number", rest)
	}
	name := strings.TrimSpace(rest[k:])
	u, ok := unitByName(name)
	if !ok {
		if name == "" {
			return fail("missing time unit after %q; expected second, minute, hour, day, month or year", rest)
		}
		return fail("unknown time unit %q; expected second, minute, hour, day, month or year (or s, m, min, h, d)", name)
	}
	mult := int64(1)
	if k > 0 {
		m, err := strconv.ParseInt(rest[:k], 10, 64)
		switch {
		case err != nil || m > int64(MaxPeriod/u):
			return fail("period %s %s is longer than the maximum of 10 years", rest[:k], name)
		case m == 0:
			return fail("period multiplier %q must be at least 1", rest[:k])
		}
		mult = m
	}
	l := Limit{Count: n, Period: time.Duration(mult) * u}
	if err := l.Validate(); err != nil {
		return fail("%v", err)
	}
	return l, nil
}

func parseCount(s string) (int64, error) {
	if s == "" {
		return 0, fmt.Errorf("missing; expected a positive whole number")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("not a positive whole number")
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n > MaxCount {
		return 0, fmt.Errorf("too large; the maximum is %d", MaxCount)
	}
	if n == 0 {
		return 0, fmt.Errorf("must be at least 1")
	}
	return n, nil
}

// Validate reports whether l is a usable limit.
func (l Limit) Validate() error {
	switch {
	case l.Count <= 0:
		return fmt.Errorf("count %d must be at least 1", l.Count)
	case l.Count > MaxCount:
		return fmt.Errorf("count %d is larger than the maximum of %d", l.Count, MaxCount)
	case l.Period <= 0:
		return fmt.Errorf("period %v must be positive", l.Period)
	case l.Period%time.Second != 0:
		return fmt.Errorf("period %v must be a whole number of seconds", l.Period)
	case l.Period > MaxPeriod:
		return fmt.Errorf("period %v is longer than the maximum of 10 years", l.Period)
	}
	return nil
}

// String returns the limit in the canonical form of the grammar, which
// ParseLimit reads back to the same Limit: "10/minute", "5/30 seconds",
// "100/2 hours". The unit is the largest that divides the period.
func (l Limit) String() string {
	if l.Period <= 0 || l.Period%time.Second != 0 {
		return fmt.Sprintf("%d/%v", l.Count, l.Period)
	}
	for _, u := range units {
		if l.Period%u.d == 0 {
			n := int64(l.Period / u.d)
			if n == 1 {
				return strconv.FormatInt(l.Count, 10) + "/" + u.name
			}
			return strconv.FormatInt(l.Count, 10) + "/" + strconv.FormatInt(n, 10) + " " + u.name + "s"
		}
	}
	return "" // unreachable: a whole number of seconds is divisible by a second
}

// MarshalText encodes l as its String form, for configuration files.
func (l Limit) MarshalText() ([]byte, error) {
	if err := l.Validate(); err != nil {
		return nil, fmt.Errorf("marshal limit: %w", err)
	}
	return []byte(l.String()), nil
}

// UnmarshalText parses one limit with ParseLimit.
func (l *Limit) UnmarshalText(b []byte) error {
	v, err := ParseLimit(string(b))
	if err != nil {
		return err
	}
	*l = v
	return nil
}

// Limits is a set of limits that all apply, such as "3/minute; 20/day".
type Limits []Limit

// ParseLimits parses one or more limits separated by ";" or ",", such as
// "3/minute; 20/day". The same limit may not be given twice.
func ParseLimits(s string) (Limits, error) {
	if strings.TrimSpace(s) == "" {
		return nil, &ParseError{Input: s, Msg: "empty; " + grammarHint + `, several joined by ";"`}
	}
	parts := strings.FieldsFunc(s, func(r rune) bool { return r == ';' || r == ',' })
	if len(parts) == 0 {
		return nil, &ParseError{Input: s, Msg: "no limit between the separators; " + grammarHint}
	}
	// FieldsFunc drops empty parts; an empty part between separators is a typo.
	if n := strings.Count(s, ";") + strings.Count(s, ","); n != len(parts)-1 {
		return nil, &ParseError{Input: s, Msg: `empty limit between separators; expected limits joined by ";" such as "3/minute; 20/day"`}
	}
	out := make(Limits, 0, len(parts))
	for _, p := range parts {
		l, err := parseLimit(s, p)
		if err != nil {
			return nil, err
		}
		for _, prev := range out {
			if prev == l {
				return nil, &ParseError{Input: s, Part: strings.TrimSpace(p), Msg: "the same limit is given twice"}
			}
		}
		out = append(out, l)
	}
	return out, nil
}

// String joins the limits with "; ". ParseLimits reads it back to the same
// Limits.
func (ls Limits) String() string {
	var b strings.Builder
	for i, l := range ls {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(l.String())
	}
	return b.String()
}

// MarshalText encodes ls as its String form.
func (ls Limits) MarshalText() ([]byte, error) {
	for _, l := range ls {
		if err := l.Validate(); err != nil {
			return nil, fmt.Errorf("marshal limits: %w", err)
		}
	}
	return []byte(ls.String()), nil
}

// UnmarshalText parses limits with ParseLimits.
func (ls *Limits) UnmarshalText(b []byte) error {
	v, err := ParseLimits(string(b))
	if err != nil {
		return err
	}
	*ls = v
	return nil
}
