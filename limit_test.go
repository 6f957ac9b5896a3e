package allowance

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseLimits(t *testing.T) {
	day := 24 * time.Hour
	tests := []struct {
		in   string
		want Limits
		str  string // canonical String form
	}{
		{"10/minute", Limits{{10, time.Minute}}, "10/minute"},
		{"10/minutes", Limits{{10, time.Minute}}, "10/minute"},
		{"10 / minute", Limits{{10, time.Minute}}, "10/minute"},
		{"5 per 30 seconds", Limits{{5, 30 * time.Second}}, "5/30 seconds"},
		{"5 PER 30 Seconds", Limits{{5, 30 * time.Second}}, "5/30 seconds"},
		{"5 per second", Limits{{5, time.Second}}, "5/second"},
		{"3/minute; 20/day", Limits{{3, time.Minute}, {20, day}}, "3/minute; 20/day"},
		{"3/minute,20/day", Limits{{3, time.Minute}, {20, day}}, "3/minute; 20/day"},
		{" 3/m ;20 per d ", Limits{{3, time.Minute}, {20, day}}, "3/minute; 20/day"},
		{"1/s", Limits{{1, time.Second}}, "1/second"},
		{"1/sec", Limits{{1, time.Second}}, "1/second"},
		{"1/secs", Limits{{1, time.Second}}, "1/second"},
		{"1/min", Limits{{1, time.Minute}}, "1/minute"},
		{"1/mins", Limits{{1, time.Minute}}, "1/minute"},
		{"100/2h", Limits{{100, 2 * time.Hour}}, "100/2 hours"},
		{"100/2 hrs", Limits{{100, 2 * time.Hour}}, "100/2 hours"},
		{"100/hr", Limits{{100, time.Hour}}, "100/hour"},
		{"7/hours", Limits{{7, time.Hour}}, "7/hour"},
		{"7/d", Limits{{7, day}}, "7/day"},
		{"7/days", Limits{{7, day}}, "7/day"},
		{"7/month", Limits{{7, 30 * day}}, "7/month"},
		{"7/2 months", Limits{{7, 60 * day}}, "7/2 months"},
		{"7/y", Limits{{7, 365 * day}}, "7/year"},
		{"7/years", Limits{{7, 365 * day}}, "7/year"},
		{"7/10 years", Limits{{7, 3650 * day}}, "7/10 years"},
		{"7/60 seconds", Limits{{7, time.Minute}}, "7/minute"},
		{"7/90 seconds", Limits{{7, 90 * time.Second}}, "7/90 seconds"},
		{"7/48 hours", Limits{{7, 2 * day}}, "7/2 days"},
		{"007/minute", Limits{{7, time.Minute}}, "7/minute"},
		{"1000000000/second", Limits{{MaxCount, time.Second}}, "1000000000/second"},
	}
	for _, tc := range tests {
		got, err := ParseLimits(tc.in)
		if err != nil {
			t.Errorf("ParseLimits(%q): %v", tc.in, err)
			continue
		}
		if !equalLimits(got, tc.want) {
			t.Errorf("ParseLimits(%q) = %#v, want %#v", tc.in, got, tc.want)
		}
		if s := got.String(); s != tc.str {
			t.Errorf("ParseLimits(%q).String() = %q, want %q", tc.in, s, tc.str)
		}
		again, err := ParseLimits(got.String())
		if err != nil || !equalLimits(again, got) {
			t.Errorf("ParseLimits(%q) = %v, %v; want it to read back %v", got.String(), again, err, got)
		}
	}
}

func TestParseLimitsErrors(t *testing.T) {
	tests := []struct {
		in   string
		want string // part of the message, after the quoted input
	}{
		{"", "empty"},
		{"   ", "empty"},
		{";", "no limit between the separators"},
		{"10/minute;", "empty limit between separators"},
		{"10/minute;;20/day", "empty limit between separators"},
		{"10", `expected COUNT "/" [N] UNIT`},
		{"ten/minute", `count "ten": not a positive whole number`},
		{"-1/minute", `count "-1": not a positive whole number`},
		{"0/minute", `count "0": must be at least 1`},
		{"1.5/minute", "not a positive whole number"},
		{"1000000001/minute", "too large; the maximum is 1000000000"},
		{"99999999999999999999/minute", "too large"},
		{"/minute", `count "": missing`},
		{"10/", "missing time unit"},
		{"10/30", "missing time unit"},
		{"10/fortnight", `unknown time unit "fortnight"`},
		{"10/minute/hour", `unknown time unit "minute/hour"`},
		{"10/0 seconds", `period multiplier "0" must be at least 1`},
		{"10/-5 seconds", "must be a positive whole number"},
		{"10/11 years", "longer than the maximum of 10 years"},
		{"10/999999999999 days", "longer than the maximum of 10 years"},
		{"10 per", "missing time unit"},
		{"per minute", `expected COUNT "/" [N] UNIT`},
		{"10 every minute", `expected COUNT "/" [N] UNIT`},
		{"10/minute; 10/60 seconds", "the same limit is given twice"},
	}
	for _, tc := range tests {
		_, err := ParseLimits(tc.in)
		if err == nil {
			t.Errorf("ParseLimits(%q): no error, want one saying %q", tc.in, tc.want)
			continue
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, "limit "+quote(tc.in)) {
			t.Errorf("ParseLimits(%q): error %q does not start by quoting the input", tc.in, msg)
		}
		if !strings.Contains(msg, tc.want) {
			t.Errorf("ParseLimits(%q): error %q does not say %q", tc.in, msg, tc.want)
		}
		var pe *ParseError
		if !errors.As(err, &pe) || pe.Input != tc.in {
			t.Errorf("ParseLimits(%q): error %#v is not a *ParseError with the input", tc.in, err)
		}
	}
}

func TestParseErrorNamesThePart(t *testing.T) {
	_, err := ParseLimits("3/minute; 20/fortnight")
	want := `limit "3/minute; 20/fortnight": in "20/fortnight": unknown time unit "fortnight"`
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("error %v; want it to start with %s", err, want)
	}
}

func TestLimitValidate(t *testing.T) {
	tests := []struct {
		l    Limit
		want string
	}{
		{Limit{1, time.Second}, ""},
		{Limit{MaxCount, MaxPeriod}, ""},
		{Limit{0, time.Second}, "count 0 must be at least 1"},
		{Limit{-3, time.Second}, "count -3 must be at least 1"},
		{Limit{MaxCount + 1, time.Second}, "larger than the maximum"},
		{Limit{1, 0}, "period 0s must be positive"},
		{Limit{1, 1500 * time.Millisecond}, "whole number of seconds"},
		{Limit{1, MaxPeriod + time.Second}, "longer than the maximum of 10 years"},
	}
	for _, tc := range tests {
		err := tc.l.Validate()
		if tc.want == "" {
			if err != nil {
				t.Errorf("%#v.Validate() = %v, want nil", tc.l, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%#v.Validate() = %v, want an error saying %q", tc.l, err, tc.want)
		}
	}
}

func TestLimitText(t *testing.T) {
	var ls Limits
	if err := ls.UnmarshalText([]byte("5 per 30 seconds; 100/day")); err != nil {
		t.Fatal(err)
	}
	b, err := ls.MarshalText()
	if err != nil || string(b) != "5/30 seconds; 100/day" {
		t.Fatalf("MarshalText = %q, %v", b, err)
	}
	var l Limit
	if err := l.UnmarshalText([]byte("3/h")); err != nil || l != (Limit{3, time.Hour}) {
		t.Fatalf("UnmarshalText(3/h) = %v, %v", l, err)
	}
	if err := l.UnmarshalText([]byte("3/h; 4/d")); err == nil {
		t.Fatal("Limit.UnmarshalText accepted two limits")
	}
	if _, err := (Limit{}).MarshalText(); err == nil {
		t.Fatal("zero Limit marshals")
	}
	if _, err := (Limits{{1, time.Second}, {}}).MarshalText(); err == nil {
		t.Fatal("Limits with a zero Limit marshal")
	}
}

// FuzzParseLimits: the parser never panics, and whatever it accepts is valid
// and reads back from its String form to the same limits and the same text.
func FuzzParseLimits(f *testing.F) {
	for _, s := range []string{
		"10/minute", "5 per 30 seconds", "3/minute; 20/day", "3/m,20/d", "100/2h", "7/10 years",
		"10/fortnight", "", ";", "10/", "per", "1000000000/second", "10/0 s", "1/ 3650 days", " 1 PER 2 HRS ",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ls, err := ParseLimits(s)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "limit "+quote(s)) {
				t.Fatalf("ParseLimits(%q): error %q does not quote the input", s, err)
			}
			return
		}
		if len(ls) == 0 {
			t.Fatalf("ParseLimits(%q) accepted no limits", s)
		}
		for _, l := range ls {
			if err := l.Validate(); err != nil {
				t.Fatalf("ParseLimits(%q) accepted an invalid limit: %v", s, err)
			}
		}
		str := ls.String()
		again, err := ParseLimits(str)
		if err != nil {
			t.Fatalf("ParseLimits(%q) = %v, whose String %q does not parse: %v", s, ls, str, err)
		}
		if !equalLimits(again, ls) || again.String() != str {
			t.Fatalf("ParseLimits(%q) = %v; its String %q reads back as %v", s, ls, str, again)
		}
		if len(ls) == 1 {
			l, err := ParseLimit(ls[0].String())
			if err != nil || l != ls[0] {
				t.Fatalf("ParseLimit(%q) = %v, %v; want %v", ls[0].String(), l, err, ls[0])
			}
		}
	})
}

func equalLimits(a, b Limits) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func quote(s string) string { return strconv.Quote(s) }
