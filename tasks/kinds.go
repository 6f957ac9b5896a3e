package tasks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
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
func ValidateInput(kind string, input json.RawMessage) error {
	switch kind {
	case "sleep":
		_, err := ParseSleepInput(input)
		return err
	case "echo":
		return validateEcho(input)
	}
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

// truncate shortens s for an error message.
func truncate(s string) string {
	const max = 40
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}
