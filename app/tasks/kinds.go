package tasks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Runner runs one task of a kind: it gets the task's input and returns its
// output (valid JSON) or an error, which fails the task with the error's
// text. A Runner must return soon after ctx is done; ctx is canceled when
// the task is canceled, its lease is lost, or the pool stops.
type Runner func(ctx context.Context, input json.RawMessage) (json.RawMessage, error)

// Kinds returns the built-in kinds, a new map on each call so callers may
// add their own:
//
//   - "sleep": input {"seconds": number from 0 to 3600, "fail": bool
//     (optional)}; waits that long (less when canceled), then fails with an
//     error when fail is true, else outputs {"slept_seconds": seconds}.
//   - "echo": input any JSON value (none means null); outputs it.
//
// Check an input before creating a task with ValidateInput.
func Kinds() map[string]Runner {
	return map[string]Runner{
		"sleep": Sleep,
		"echo":  Echo,
	}
}

// MaxSleepSeconds is the largest "seconds" a sleep task accepts (one hour).
const MaxSleepSeconds = 3600

// ErrUnknownKind means a task names a kind that does not exist.
var ErrUnknownKind = errors.New("unknown task kind")

// ErrInvalidInput means a task's input does not fit its kind; the error is
// an *InputError that says which field and what was expected.
var ErrInvalidInput = errors.New("invalid task input")

// InputError describes what is wrong with a task's input. errors.Is(err,
// ErrInvalidInput) holds.
type InputError struct {
	Kind    string // the task kind, e.g. "sleep"
	Field   string // the input field at fault, "" for the input as a whole
	Problem string // what was expected and what was found
}

// Error reads like `sleep input: field "seconds": expected a number from 0
// to 3600, got a string`.
func (e *InputError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("%s input: %s", e.Kind, e.Problem)
	}
	return fmt.Sprintf("%s input: field %q: %s", e.Kind, e.Field, e.Problem)
}

// Is makes errors.Is(err, ErrInvalidInput) true.
func (e *InputError) Is(target error) bool { return target == ErrInvalidInput }

// ValidateInput checks input against the built-in kind named kind, without
// running anything. An unknown kind gives an error wrapping ErrUnknownKind
// that lists the known ones; a bad input an *InputError.
//
// An input that passes can be stored by every task store, and reads back
// with the same meaning from each: besides fitting its kind, it must be
// valid JSON whose strings (keys too) are valid UTF-8 without \u0000 or
// unpaired UTF-16 surrogate escapes (\ud800), whose numbers a float64 can
// hold (see MaxNumberDigits and MaxNumberExponent), whose objects give each
// key once, and which nests at most MaxInputDepth arrays and objects.
// SQLite would store the others as they are, PostgreSQL's jsonb refuses
// them or keeps only the last of repeated keys; checking here answers the
// same on both.
func ValidateInput(kind string, input json.RawMessage) error {
	var err error
	switch kind {
	case "sleep":
		_, err = ParseSleepInput(input)
	case "echo":
		err = validateEcho(input)
	default:
		return unknownKind(kind)
	}
	if err != nil {
		return err
	}
	return checkStorable(kind, input)
}

// unknownKind is the error of ValidateInput for a kind that does not exist.
func unknownKind(kind string) error {
	known := make([]string, 0, 2)
	for k := range Kinds() {
		known = append(known, fmt.Sprintf("%q", k))
	}
	slices.Sort(known)
	return fmt.Errorf("kind %q: %w; expected one of %s", kind, ErrUnknownKind, strings.Join(known, ", "))
}

// SleepInput is the decoded input of a "sleep" task.
type SleepInput struct {
	Seconds float64 // how long to sleep, 0 to MaxSleepSeconds, fractions allowed
	Fail    bool    // fail with an error after sleeping
}

// Duration is Seconds as a time.Duration.
func (in SleepInput) Duration() time.Duration {
	return time.Duration(in.Seconds * float64(time.Second))
}

// ParseSleepInput decodes and checks a "sleep" input: a JSON object with a
// required number "seconds" from 0 to MaxSleepSeconds and an optional
// boolean "fail". Any other field, type or value is an *InputError.
func ParseSleepInput(input json.RawMessage) (SleepInput, error) {
	const kind = "sleep"
	const shape = `an object like {"seconds": 30, "fail": false}`
	fields, err := decodeObject(kind, shape, input)
	if err != nil {
		return SleepInput{}, err
	}
	for _, name := range sortedKeys(fields) {
		if name != "seconds" && name != "fail" {
			return SleepInput{}, &InputError{Kind: kind, Field: name, Problem: `unknown field; expected only "seconds" and "fail"`}
		}
	}
	var in SleepInput
	raw, ok := fields["seconds"]
	if !ok {
		return SleepInput{}, &InputError{Kind: kind, Field: "seconds", Problem: fmt.Sprintf("required: a number from 0 to %d", MaxSleepSeconds)}
	}
	if jsonType(raw) != "a number" {
		return SleepInput{}, &InputError{Kind: kind, Field: "seconds", Problem: fmt.Sprintf("expected a number from 0 to %d, got %s", MaxSleepSeconds, jsonType(raw))}
	}
	if err := json.Unmarshal(raw, &in.Seconds); err != nil || math.IsInf(in.Seconds, 0) || in.Seconds < 0 || in.Seconds > MaxSleepSeconds {
		return SleepInput{}, &InputError{Kind: kind, Field: "seconds", Problem: fmt.Sprintf("expected a number from 0 to %d, got %s", MaxSleepSeconds, truncate(string(raw)))}
	}
	if raw, ok := fields["fail"]; ok {
		if t := jsonType(raw); t != "a boolean" {
			return SleepInput{}, &InputError{Kind: kind, Field: "fail", Problem: "expected true or false, got " + t}
		}
		_ = json.Unmarshal(raw, &in.Fail) // a JSON boolean: cannot fail
	}
	return in, nil
}

// Sleep is the "sleep" kind; see Kinds.
func Sleep(ctx context.Context, input json.RawMessage) (json.RawMessage, error) {
	in, err := ParseSleepInput(input)
	if err != nil {
		return nil, err
	}
	t := time.NewTimer(in.Duration())
	defer t.Stop()
	select {
	case <-ctx.Done():
		return nil, fmt.Errorf("sleep interrupted: %w", context.Cause(ctx))
	case <-t.C:
	}
	if in.Fail {
		return nil, fmt.Errorf("sleep failed as asked (\"fail\": true) after %g seconds", in.Seconds)
	}
	return json.Marshal(map[string]float64{"slept_seconds": in.Seconds})
}

// Echo is the "echo" kind: it returns its input, or null when there is none.
func Echo(_ context.Context, input json.RawMessage) (json.RawMessage, error) {
	if err := validateEcho(input); err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(input)) == 0 {
		return json.RawMessage("null"), nil
	}
	return input, nil
}

func validateEcho(input json.RawMessage) error {
	if len(bytes.TrimSpace(input)) == 0 || json.Valid(input) {
		return nil
	}
	return &InputError{Kind: "echo", Problem: "expected any JSON value, got malformed JSON"}
}

// decodeObject decodes input as a JSON object of raw fields.
func decodeObject(kind, shape string, input json.RawMessage) (map[string]json.RawMessage, error) {
	if len(bytes.TrimSpace(input)) == 0 {
		return nil, &InputError{Kind: kind, Problem: "expected " + shape + ", got nothing"}
	}
	if !json.Valid(input) {
		return nil, &InputError{Kind: kind, Problem: "expected " + shape + ", got malformed JSON"}
	}
	if t := jsonType(input); t != "an object" {
		return nil, &InputError{Kind: kind, Problem: "expected " + shape + ", got " + t}
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(input, &fields); err != nil {
		return nil, &InputError{Kind: kind, Problem: "expected " + shape + ": " + err.Error()}
	}
	return fields, nil
}

// jsonType names the type of the valid JSON value raw.
func jsonType(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

func sortedKeys(m map[string]json.RawMessage) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// truncate shortens s for an error message, keeping whole characters.
func truncate(s string) string {
	const max = 40
	if len(s) <= max {
		return s
	}
	return prefix(s, max) + "…"
}

// prefix returns the longest start of s of at most n bytes that does not
// end inside a UTF-8 sequence.
func prefix(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// suffix returns the longest end of s of at most n bytes that does not
// start inside a UTF-8 sequence.
func suffix(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := len(s) - n
	for i < len(s) && !utf8.RuneStart(s[i]) {
		i++
	}
	return s[i:]
}

// Bounds of a task input that every task store can keep; see
// ValidateInput.
const (
	// MaxInputDepth is how deeply arrays and objects may nest in a task
	// input: {"a": [1]} is 2 deep.
	MaxInputDepth = 100
	// MaxNumberDigits bounds the digits of a number in a task input,
	// before its exponent.
	MaxNumberDigits = 1000
	// MaxNumberExponent bounds the magnitude of a number's exponent: 1e1000
	// and 0e-1000 are the limits (and 1e1000 is too large for a float64).
	MaxNumberExponent = 1000
)

// checkStorable checks that input, valid JSON or empty, is what every task
// store can keep and reads back with the same meaning (see ValidateInput),
// and otherwise returns an *InputError that names the field at fault and
// says what is wrong with it.
func checkStorable(kind string, input json.RawMessage) error {
	if len(bytes.TrimSpace(input)) == 0 {
		return nil // stored as null
	}
	if !json.Valid(input) {
		return &InputError{Kind: kind, Problem: "expected JSON, got malformed JSON"}
	}
	c := inputChecker{data: input}
	if problem := c.value(0); problem != "" {
		return &InputError{Kind: kind, Field: c.field(), Problem: problem}
	}
	return nil
}

// inputChecker walks a valid JSON text and stops at the first value that a
// task store could not keep as it is. On a problem, path says where.
type inputChecker struct {
	data []byte
	pos  int
	// path has an element per array or object the walk is in: the key
	// (its raw JSON string, quotes included) or index of the current
	// member.
	path []pathElem
}

type pathElem struct {
	key   []byte // nil in an array
	index int
}

// at returns the byte at i, or 0 past the end.
func (c *inputChecker) at(i int) byte {
	if i < len(c.data) {
		return c.data[i]
	}
	return 0
}

func (c *inputChecker) space() {
	for c.pos < len(c.data) {
		switch c.data[c.pos] {
		case ' ', '\t', '\n', '\r':
			c.pos++
		default:
			return
		}
	}
}

// value checks the value at pos, depth arrays and objects deep, and moves
// past it. It returns what is wrong, or "".
func (c *inputChecker) value(depth int) string {
	c.space()
	switch b := c.at(c.pos); b {
	case '{', '[':
		if depth >= MaxInputDepth {
			return fmt.Sprintf("arrays and objects nest more than %d deep here; expected at most %d levels", MaxInputDepth, MaxInputDepth)
		}
		if b == '{' {
			return c.object(depth + 1)
		}
		return c.array(depth + 1)
	case '"':
		end := c.stringEnd(c.pos)
		problem := stringProblem(c.data[c.pos:end])
		c.pos = end
		if problem != "" {
			return "the string " + problem
		}
		return ""
	case 't', 'n':
		c.pos += len("true")
		return ""
	case 'f':
		c.pos += len("false")
		return ""
	}
	start := c.pos
	for c.pos < len(c.data) && strings.IndexByte("+-0123456789.eE", c.data[c.pos]) >= 0 {
		c.pos++
	}
	if c.pos == start {
		return fmt.Sprintf("unexpected %q at byte %d; expected a JSON value", c.at(c.pos), c.pos)
	}
	return numberProblem(c.data[start:c.pos])
}

func (c *inputChecker) object(depth int) string {
	c.pos++ // {
	c.space()
	if c.at(c.pos) == '}' {
		c.pos++
		return ""
	}
	c.path = append(c.path, pathElem{})
	top := len(c.path) - 1
	var seen map[string]bool
	for {
		c.space()
		end := c.stringEnd(c.pos)
		raw := c.data[c.pos:end]
		c.path[top] = pathElem{key: raw}
		c.pos = end
		if problem := stringProblem(raw); problem != "" {
			return "the key " + problem
		}
		if seen == nil {
			seen = make(map[string]bool)
		}
		key := decodeKey(raw)
		if seen[key] {
			return "the key is given twice in its object; expected each key once"
		}
		seen[key] = true
		c.space()
		c.pos++ // :
		if problem := c.value(depth); problem != "" {
			return problem
		}
		c.space()
		if c.at(c.pos) != ',' {
			break
		}
		c.pos++
	}
	c.pos++ // }
	c.path = c.path[:top]
	return ""
}

func (c *inputChecker) array(depth int) string {
	c.pos++ // [
	c.space()
	if c.at(c.pos) == ']' {
		c.pos++
		return ""
	}
	c.path = append(c.path, pathElem{})
	top := len(c.path) - 1
	for i := 0; ; i++ {
		c.path[top] = pathElem{index: i}
		if problem := c.value(depth); problem != "" {
			return problem
		}
		c.space()
		if c.at(c.pos) != ',' {
			break
		}
		c.pos++
	}
	c.pos++ // ]
	c.path = c.path[:top]
	return ""
}

// stringEnd returns the index after the JSON string that starts at start.
func (c *inputChecker) stringEnd(start int) int {
	i := start + 1
	for i < len(c.data) && c.data[i] != '"' {
		if c.data[i] == '\\' {
			i++
		}
		i++
	}
	return min(i+1, len(c.data))
}

// field renders the path of the value at fault: keys joined by dots,
// indexes in brackets, such as `a.b[2].c`; "" for the input as a whole.
func (c *inputChecker) field() string {
	var b strings.Builder
	for i, e := range c.path {
		if e.key == nil {
			fmt.Fprintf(&b, "[%d]", e.index)
			continue
		}
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(truncate(decodeKey(e.key)))
	}
	s := b.String()
	if len(s) > 200 {
		s = prefix(s, 100) + "…" + suffix(s, 100)
	}
	return s
}

// decodeKey returns the text of the JSON string raw (quotes included). A
// string without escapes is returned byte for byte, so that a message
// quoting it shows bytes that are not UTF-8 as they are.
func decodeKey(raw []byte) string {
	if len(raw) < 2 {
		return string(raw)
	}
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw[1 : len(raw)-1])
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return string(raw[1 : len(raw)-1])
	}
	return s
}

// stringProblem says what in the JSON string s (quotes included) a task
// store cannot keep, or returns "". PostgreSQL's jsonb refuses \u0000 and
// escapes of unpaired surrogates; PostgreSQL's text refuses bytes that are
// not UTF-8, which SQLite would store and serve back as they are.
func stringProblem(s []byte) string {
	last := len(s) - 1 // the closing quote
	for i := 1; i < last; {
		b := s[i]
		switch {
		case b == '\\' && i+1 < last && s[i+1] == 'u' && i+6 <= last:
			r := hex4(s[i+2 : i+6])
			switch {
			case r == 0:
				return `contains \u0000 (the NUL character), which cannot be stored; expected text without it`
			case r >= 0xD800 && r <= 0xDBFF:
				if i+12 <= last && s[i+6] == '\\' && s[i+7] == 'u' {
					if lo := hex4(s[i+8 : i+12]); lo >= 0xDC00 && lo <= 0xDFFF {
						i += 12
						continue
					}
				}
				return fmt.Sprintf(`contains \%s, a high surrogate without a low one (\udc00 to \udfff) after it; expected a character or a surrogate pair`, s[i+1:i+6])
			case r >= 0xDC00 && r <= 0xDFFF:
				return fmt.Sprintf(`contains \%s, a low surrogate without a high one (\ud800 to \udbff) before it; expected a character or a surrogate pair`, s[i+1:i+6])
			}
			i += 6
		case b == '\\':
			i += 2
		case b < utf8.RuneSelf:
			i++
		default:
			r, n := utf8.DecodeRune(s[i:last])
			if r == utf8.RuneError && n == 1 {
				return fmt.Sprintf("contains the byte 0x%02X (at byte %d), which is not UTF-8; expected UTF-8 text", b, i-1)
			}
			i += n
		}
	}
	return ""
}

// hex4 decodes 4 hex digits; JSON's \u escapes have exactly that.
func hex4(h []byte) rune {
	var r rune
	for _, c := range h {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		}
	}
	return r
}

// numberProblem says why the JSON number n does not fit in a float64, or
// in PostgreSQL's numeric within the bounds MaxNumberDigits and
// MaxNumberExponent, or returns "".
func numberProblem(n []byte) string {
	mant, exp := n, []byte(nil)
	if i := bytes.IndexAny(n, "eE"); i >= 0 {
		mant, exp = n[:i], n[i+1:]
	}
	digits, nonZero := 0, false
	for _, c := range mant {
		if c >= '0' && c <= '9' {
			digits++
			nonZero = nonZero || c != '0'
		}
	}
	text := truncate(string(n))
	if digits > MaxNumberDigits {
		return fmt.Sprintf("the number %s has %d digits; expected at most %d", text, digits, MaxNumberDigits)
	}
	if exp != nil {
		e := bytes.TrimLeft(bytes.TrimLeft(exp, "+-"), "0")
		if v, err := strconv.Atoi(string(e)); len(e) > 0 && (err != nil || v > MaxNumberExponent) {
			return fmt.Sprintf("the number %s has an exponent beyond %d; expected one from -%d to %d", text, MaxNumberExponent, MaxNumberExponent, MaxNumberExponent)
		}
	}
	f, err := strconv.ParseFloat(string(n), 64)
	switch {
	case err != nil:
		return fmt.Sprintf("the number %s is too large for a float64; expected a magnitude of at most %g", text, math.MaxFloat64)
	case f == 0 && nonZero:
		return fmt.Sprintf("the number %s is too close to 0 for a float64, which would make it 0; expected 0 or a magnitude of at least %g", text, math.SmallestNonzeroFloat64)
	}
	return ""
}
