package tasks_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/allowancehq/allowance/app/tasks"
)

func TestValidateInput(t *testing.T) {
	for _, tc := range []struct {
		kind, input string
		field       string // "" when valid
		msg         string // part of the error
	}{
		{"sleep", `{"seconds": 30}`, "", ""},
		{"sleep", `{"seconds": 0.25, "fail": true}`, "", ""},
		{"sleep", `{"seconds": 0}`, "", ""},
		{"sleep", `{"seconds": 3600, "fail": false}`, "", ""},
		{"sleep", ` {"seconds":1e2} `, "", ""},
		{"sleep", ``, "-", `expected an object like {"seconds": 30, "fail": false}, got nothing`},
		{"sleep", `null`, "-", "got null"},
		{"sleep", `[1]`, "-", "got an array"},
		{"sleep", `"30"`, "-", "got a string"},
		{"sleep", `{"seconds": 30`, "-", "malformed JSON"},
		{"sleep", `{}`, "seconds", "required: a number from 0 to 3600"},
		{"sleep", `{"fail": true}`, "seconds", "required"},
		{"sleep", `{"seconds": "30"}`, "seconds", "expected a number from 0 to 3600, got a string"},
		{"sleep", `{"seconds": null}`, "seconds", "got null"},
		{"sleep", `{"seconds": -1}`, "seconds", "got -1"},
		{"sleep", `{"seconds": 3600.5}`, "seconds", "got 3600.5"},
		{"sleep", `{"seconds": 1e400}`, "seconds", "expected a number from 0 to 3600"},
		{"sleep", `{"seconds": 1, "fail": "yes"}`, "fail", "expected true or false, got a string"},
		{"sleep", `{"seconds": 1, "Seconds": 2}`, "Seconds", `unknown field; expected only "seconds" and "fail"`},
		{"sleep", `{"seconds": 1, "extra": {}}`, "extra", "unknown field"},
		{"echo", `{"anything": [1, "two", null]}`, "", ""},
		{"echo", `"text"`, "", ""},
		{"echo", ``, "", ""},
		{"echo", `{"a":`, "-", "expected any JSON value, got malformed JSON"},
		// What a task store cannot keep as it is: refused alike for every
		// kind, before any store sees it.
		{"echo", `"\u0000"`, "-", `the string contains \u0000 (the NUL character)`},
		{"echo", `{"a": {"b": ["x", "y\u0000z"]}}`, "a.b[1]", `the string contains \u0000`},
		{"echo", `{"k\u0000": 1}`, "k\x00", `the key contains \u0000`},
		{"sleep", `{"seconds": 1, "fail\u0000": true}`, "fail\x00", "unknown field"},
		{"echo", "\"a\xffb\"", "-", "the string contains the byte 0xFF (at byte 1), which is not UTF-8"},
		{"echo", "{\"\xc3\": 1}", "\xc3", "the key contains the byte 0xC3 (at byte 0), which is not UTF-8"},
		{"echo", "[\"\xed\xa0\x80\"]", "[0]", "byte 0xED"}, // a surrogate encoded in UTF-8
		{"echo", `"\ud800"`, "-", `the string contains \ud800, a high surrogate without a low one`},
		{"echo", `"\uD800\u0041"`, "-", `\uD800, a high surrogate`},
		{"echo", `["ok", "\udc00"]`, "[1]", `\udc00, a low surrogate without a high one`},
		{"echo", `{"\udfff": 1}`, "\ufffd", `the key contains \udfff, a low surrogate`},
		{"echo", `"\ud83d\ude00 \u00e9 \uffff"`, "", ""}, // a pair, a character, a noncharacter
		{"echo", "\"\xf0\x9f\x98\x80 é\"", "", ""},
		{"echo", `{"n": 1e999999}`, "n", "the number 1e999999 has an exponent beyond 1000"},
		{"echo", `1e400`, "-", "the number 1e400 is too large for a float64"},
		{"echo", `[-1.8e308]`, "[0]", "too large for a float64; expected a magnitude of at most 1.7976931348623157e+308"},
		{"echo", `1e-400`, "-", "the number 1e-400 is too close to 0 for a float64"},
		{"echo", `[1.7976931348623157e308, -5e-324, 0e-1000, -0.0, 1E+2]`, "", ""},
		{"echo", `0e-1001`, "-", "exponent beyond 1000"},
		{"echo", `1.` + strings.Repeat("0", 1000), "-", "has 1001 digits; expected at most 1000"},
		{"echo", `1.` + strings.Repeat("0", 998) + "1", "", ""},
		{"echo", `{"a": 1, "b": 2, "\u0061": 3}`, "a", "the key is given twice in its object"},
		{"echo", `[{"a": 1}, {"a": 2}]`, "", ""},
		{"echo", strings.Repeat("[", 100) + strings.Repeat("]", 100), "", ""},
		// A long path keeps its first and last 100 bytes.
		{"echo", strings.Repeat("[", 101) + strings.Repeat("]", 101), strings.Repeat("[0]", 33) + "[…]" + strings.Repeat("[0]", 33), "nest more than 100 deep"},
		{"echo", `{"a":` + strings.Repeat(`{"a":`, 100) + "1" + strings.Repeat("}", 101), "a" + strings.Repeat(".a", 99), "nest more than 100 deep"},
		{"echo", `{"a":` + strings.Repeat(`{"a":`, 98) + "1" + strings.Repeat("}", 99), "", ""},
	} {
		err := tasks.ValidateInput(tc.kind, json.RawMessage(tc.input))
		if tc.field == "" {
			if err != nil {
				t.Errorf("ValidateInput(%s, %s): %v", tc.kind, tc.input, err)
			}
			continue
		}
		var ie *tasks.InputError
		if !errors.As(err, &ie) || !errors.Is(err, tasks.ErrInvalidInput) {
			t.Errorf("ValidateInput(%s, %s) = %v; want an *InputError", tc.kind, tc.input, err)
			continue
		}
		wantField := tc.field
		if wantField == "-" {
			wantField = ""
		}
		if ie.Kind != tc.kind || ie.Field != wantField || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("ValidateInput(%s, %s) = kind %q field %q %q; want kind %q field %q containing %q",
				tc.kind, tc.input, ie.Kind, ie.Field, err, tc.kind, wantField, tc.msg)
		}
	}
}

func TestValidateInputUnknownKind(t *testing.T) {
	err := tasks.ValidateInput("sleeep", json.RawMessage(`{}`))
	if !errors.Is(err, tasks.ErrUnknownKind) {
		t.Fatalf("unknown kind: %v, want ErrUnknownKind", err)
	}
	if msg := err.Error(); !strings.Contains(msg, `"sleeep"`) || !strings.Contains(msg, `"echo", "sleep"`) {
		t.Errorf("unknown kind error %q: want the kind and the known kinds", msg)
	}
}

func TestInputErrorMessage(t *testing.T) {
	err := tasks.ValidateInput("sleep", json.RawMessage(`{"seconds":"x"}`))
	want := `sleep input: field "seconds": expected a number from 0 to 3600, got a string`
	if err == nil || err.Error() != want {
		t.Errorf("error = %v, want %q", err, want)
	}
}

func TestSleep(t *testing.T) {
	out, err := tasks.Sleep(t.Context(), json.RawMessage(`{"seconds": 0}`))
	if err != nil || string(out) != `{"slept_seconds":0}` {
		t.Errorf("Sleep 0 = %s, %v", out, err)
	}
	_, err = tasks.Sleep(t.Context(), json.RawMessage(`{"seconds": 0, "fail": true}`))
	if err == nil || !strings.Contains(err.Error(), `"fail": true`) {
		t.Errorf("Sleep with fail = %v, want an error saying it failed as asked", err)
	}
	ctx, cancel := context.WithCancelCause(t.Context())
	cause := errors.New("stop now")
	cancel(cause)
	_, err = tasks.Sleep(ctx, json.RawMessage(`{"seconds": 3600}`))
	if !errors.Is(err, cause) {
		t.Errorf("Sleep canceled = %v, want the cancel cause", err)
	}
	if _, err := tasks.Sleep(t.Context(), json.RawMessage(`{"seconds": -5}`)); !errors.Is(err, tasks.ErrInvalidInput) {
		t.Errorf("Sleep with bad input = %v, want ErrInvalidInput", err)
	}
}

func TestEcho(t *testing.T) {
	for in, want := range map[string]string{`{"b":1,"a":[true]}`: `{"b":1,"a":[true]}`, ``: `null`, `7`: `7`} {
		out, err := tasks.Echo(t.Context(), json.RawMessage(in))
		if err != nil || string(out) != want {
			t.Errorf("Echo(%s) = %s, %v; want %s", in, out, err, want)
		}
	}
	if _, err := tasks.Echo(t.Context(), json.RawMessage(`{`)); !errors.Is(err, tasks.ErrInvalidInput) {
		t.Errorf("Echo of malformed JSON = %v, want ErrInvalidInput", err)
	}
}

func TestKindsIsACopy(t *testing.T) {
	k := tasks.Kinds()
	delete(k, "sleep")
	if _, ok := tasks.Kinds()["sleep"]; !ok {
		t.Error("Kinds shares its map between calls")
	}
}

// FuzzValidateInput checks that any input gets a verdict without a panic,
// that accepted sleep inputs are in range, and that rejections are
// *InputErrors.
func FuzzValidateInput(f *testing.F) {
	for _, s := range []string{`{"seconds":30}`, `{"seconds":1,"fail":true}`, `{}`, `null`, `[`, `{"seconds":"1"}`, `{"x":1}`, `1e999`,
		`"\u0000"`, `{"\ud800":1}`, "[\"\xff\"]", `1e-999`, `{"a":1,"a":2}`} {
		f.Add("sleep", s)
		f.Add("echo", s)
	}
	f.Fuzz(func(t *testing.T, kind, input string) {
		err := tasks.ValidateInput(kind, json.RawMessage(input))
		if kind != "sleep" && kind != "echo" {
			if !errors.Is(err, tasks.ErrUnknownKind) {
				t.Fatalf("kind %q: %v, want ErrUnknownKind", kind, err)
			}
			return
		}
		if err != nil {
			var ie *tasks.InputError
			if !errors.As(err, &ie) || ie.Kind != kind {
				t.Fatalf("ValidateInput(%q, %q) = %v; want an *InputError of that kind", kind, input, err)
			}
			if !utf8.ValidString(err.Error()) {
				t.Fatalf("ValidateInput(%q, %q): the message %q is not UTF-8", kind, input, err)
			}
			return
		}
		if !utf8.ValidString(input) {
			t.Fatalf("accepted %q, which is not UTF-8", input)
		}
		if kind == "sleep" {
			in, err := tasks.ParseSleepInput(json.RawMessage(input))
			if err != nil || in.Seconds < 0 || in.Seconds > tasks.MaxSleepSeconds {
				t.Fatalf("accepted %q parses as %+v, %v", input, in, err)
			}
		}
	})
}
