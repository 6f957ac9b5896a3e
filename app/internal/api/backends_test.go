package api

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/allowancehq/allowance/app/internal/pgtest"
	"github.com/allowancehq/allowance/app/tasks"
	"github.com/allowancehq/allowance/app/tasks/pgstore"
)

// backendRules are generous enough that no request of these tests is
// refused for its rate, with taskd's refunds.
const backendRules = `
rules:
  - name: create-task
    match: POST /v1/tasks
    limits: 100000/hour
    algorithm: sliding-log
    refund_on: [conflict, server_error]
  - name: read
    match: GET /v1/
    limits: 100000/hour
    algorithm: sliding-log
    refund_on: [server_error]
`

// backend is an API server on one task store, with a user's key.
type backend struct {
	name string
	*limitedEnv
	key string
}

// backends returns an API server on SQLite and one on PostgreSQL (a fresh
// database; the test skips when there is no server, and fails when
// CI=true), each with the user alice.
func backends(t testing.TB, doc string) []backend {
	t.Helper()
	rules := parseConfig(t, doc)
	pgURL := pgtest.DB(t)
	ctx := context.Background()
	pg, err := pgstore.Open(ctx, pgURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Close() })
	if err := pg.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	var out []backend
	for _, b := range []struct {
		name  string
		store tasks.Store
	}{{"sqlite", sqliteStore(t)}, {"postgres", pg}} {
		e := newLimitedEnv(t, b.store, rules)
		out = append(out, backend{name: b.name, limitedEnv: e, key: e.key(t, "alice")})
	}
	return out
}

// submitted is what one backend answered to a submit.
type submitted struct {
	status int
	detail string // of a problem
	input  any    // of an accepted task, decoded
}

// submit sends body as a submit and checks what every answer must be: not
// a server error, valid UTF-8, a problem with a detail when an error. An
// accepted task is canceled, so that the user's next submit is not a
// conflict.
func (b backend) submit(t *testing.T, body string) submitted {
	t.Helper()
	r := b.do(t, "POST", "/v1/tasks", b.key, body)
	if r.status >= 500 {
		t.Fatalf("%s: submit %q answered %d: %s", b.name, body, r.status, r.body)
	}
	if !utf8.Valid(r.body) || !json.Valid(r.body) {
		t.Fatalf("%s: submit %q answered %d with a body that is not valid UTF-8 JSON: %q", b.name, body, r.status, r.body)
	}
	out := submitted{status: r.status}
	if r.status != http.StatusAccepted {
		out.detail = r.problem(t, r.status).Detail
		if out.detail == "" {
			t.Fatalf("%s: submit %q: problem without a detail: %s", b.name, body, r.body)
		}
		return out
	}
	var task struct {
		ID    string
		Input json.RawMessage
	}
	r.json(t, &task)
	if err := json.Unmarshal(task.Input, &out.input); err != nil {
		t.Fatalf("%s: submit %q: input %s: %v", b.name, body, task.Input, err)
	}
	if c := b.do(t, "POST", "/v1/tasks/"+task.ID+"/cancel", b.key, ""); c.status != http.StatusOK {
		t.Fatalf("%s: cancel %s: %d %s", b.name, task.ID, c.status, c.body)
	}
	return out
}

// hostileBodies are submits whose input (or kind) a backend could not
// store as given, and neighbours of them that it can.
var hostileBodies = []string{
	`{"kind":"echo","input":"\u0000"}`,
	`{"kind":"echo","input":{"\u0000":1}}`,
	`{"kind":"echo","input":{"a":["x","\u0000"]}}`,
	"{\"kind\":\"echo\",\"input\":\"\xff\"}",
	"{\"kind\":\"echo\",\"input\":{\"\xc3\":1}}",
	"{\"kind\":\"echo\",\"input\":\"\xed\xa0\x80\"}",
	`{"kind":"echo","input":"\ud800"}`,
	`{"kind":"echo","input":"\udc00"}`,
	`{"kind":"echo","input":"\ud800\u0041"}`,
	`{"kind":"echo","input":{"\udfff":"x"}}`,
	`{"kind":"echo","input":1e999999}`,
	`{"kind":"echo","input":-1e999999}`,
	`{"kind":"echo","input":1e-999999}`,
	`{"kind":"echo","input":1e400}`,
	`{"kind":"echo","input":1e-400}`,
	`{"kind":"echo","input":0e-20000}`,
	`{"kind":"echo","input":0e99999999999}`,
	`{"kind":"echo","input":1.` + strings.Repeat("0", 17000) + `1}`,
	`{"kind":"echo","input":{"a":1,"a":2}}`,
	`{"kind":"echo","input":` + strings.Repeat("[", 101) + strings.Repeat("]", 101) + `}`,
	`{"kind":"echo","input":` + strings.Repeat(`{"a":`, 5000) + "1" + strings.Repeat("}", 5000) + `}`,
	`{"kind":"sleep","input":{"seconds":1e999999}}`,
	`{"kind":"sleep","input":{"seconds":1,"fail\u0000":true}}`,
	`{"kind":"sleep","input":{"seconds":1,"seconds":2}}`,
	`{"kind":"\u0000","input":1}`,
	"{\"kind\":\"\xff\",\"input\":1}",
	`{"kind":"echo\ud800","input":1}`,
	"{\"kind\":\"echo\",\"input\":1,\"\xff\":2}",
	"{\"kind\":\"echo\",\"input\":\"\x00\"}",
}

// fineBodies are submits every backend stores.
var fineBodies = []string{
	`{"kind":"echo","input":"\ud83d\ude00 \u00e9 \uffff"}`,
	"{\"kind\":\"echo\",\"input\":\"\xf0\x9f\x98\x80 é\"}",
	`{"kind":"echo","input":[1.7976931348623157e308,-5e-324,0e-1000,-0,1E+2,0.1]}`,
	`{"kind":"echo","input":{"b":1,"a":{"c":[true,false,null]}}}`,
	`{"kind":"echo","input":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`,
	`{"kind":"echo","input":"\\u0000"}`,
	`{"kind":"echo"}`,
	`{"kind":"sleep","input":{"seconds":30,"fail":true}}`,
}

// generatedBodies returns n submits of echo inputs built at random (from a
// fixed seed, so every run sends the same ones) out of the pieces that
// trouble backends: NUL escapes, lone and paired surrogates, bytes that
// are not UTF-8, numbers at and past float64's range, repeated keys and
// deep nesting, mixed with harmless ones.
func generatedBodies(n int) []string {
	rng := rand.New(rand.NewPCG(13, 2030))
	out := make([]string, n)
	for i := range out {
		out[i] = `{"kind":"echo","input":` + genValue(rng, 0) + `}`
	}
	return out
}

var (
	genPieces = []string{"a", "Z9", " ", "é", `\u00e9`, `\u0000`, `\ud800`, `\udbff\udfff`, `\udc00`,
		`\ud83d\ude00`, "\xff", "\xc3", "\xed\xa0\x80", "\xf0\x9f\x98\x80", `\"`, `\\`, `\n`, `\u0041`, `\\u0000`}
	genNumbers = []string{"0", "-0", "1", "-1.5", "1e308", "1.7976931348623157e308", "1.8e308", "5e-324", "2e-324",
		"1e-400", "1e999999", "0e-1000", "0e-1001", "123456789012345678901234567890", "1E+2", "0.1"}
)

func genValue(rng *rand.Rand, depth int) string {
	switch n := rng.IntN(10); {
	case depth < 3 && n < 2:
		var b strings.Builder
		b.WriteByte('{')
		for i := range rng.IntN(4) {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(genString(rng))
			b.WriteByte(':')
			b.WriteString(genValue(rng, depth+1))
		}
		b.WriteByte('}')
		return b.String()
	case depth < 3 && n < 4:
		parts := make([]string, rng.IntN(4))
		for i := range parts {
			parts[i] = genValue(rng, depth+1)
		}
		return "[" + strings.Join(parts, ",") + "]"
	case n < 7:
		return genString(rng)
	case n < 9:
		return genNumbers[rng.IntN(len(genNumbers))]
	}
	return []string{"true", "false", "null"}[rng.IntN(3)]
}

func genString(rng *rand.Rand) string {
	var b strings.Builder
	b.WriteByte('"')
	for range rng.IntN(4) {
		b.WriteString(genPieces[rng.IntN(len(genPieces))])
	}
	b.WriteByte('"')
	return b.String()
}

// One validation on every backend: each submit of the corpus (the hostile
// cases, their harmless neighbours and 300 generated ones) gets the same
// status from a server on SQLite and one on PostgreSQL, never a server
// error; a refusal has the same detail on both, and an accepted input
// reads back with the same meaning.
func TestBackendsAnswerAlike(t *testing.T) {
	bs := backends(t, backendRules)
	corpus := append(append(append([]string{}, hostileBodies...), fineBodies...), generatedBodies(300)...)
	counts := map[int]int{}
	for _, body := range corpus {
		var got []submitted
		for _, b := range bs {
			got = append(got, b.submit(t, body))
		}
		sq, pg := got[0], got[1]
		counts[sq.status]++
		if sq.status != pg.status || sq.detail != pg.detail {
			t.Errorf("submit %q: sqlite %d %q, postgres %d %q; want the same answer", body, sq.status, sq.detail, pg.status, pg.detail)
			continue
		}
		if !reflect.DeepEqual(sq.input, pg.input) {
			t.Errorf("submit %q: sqlite stored %#v, postgres %#v; want the same meaning", body, sq.input, pg.input)
		}
	}
	for _, body := range hostileBodies {
		if r := bs[0].submit(t, body); r.status != http.StatusBadRequest {
			t.Errorf("hostile submit %q: %d, want 400", body, r.status)
		}
	}
	for _, body := range fineBodies {
		if r := bs[0].submit(t, body); r.status != http.StatusAccepted {
			t.Errorf("submit %q: %d %s, want 202", body, r.status, r.detail)
		}
	}
	// The generated corpus must exercise both answers.
	if counts[http.StatusAccepted] < 20 || counts[http.StatusBadRequest] < 20 {
		t.Errorf("answers by status %v: the corpus should have many of both 202 and 400", counts)
	}
	t.Logf("answers by status: %v", counts)
}

// FuzzBackendsAnswerAlike is TestBackendsAnswerAlike for any input of an
// echo task: go test -run '^$' -fuzz FuzzBackendsAnswerAlike ./internal/api/
func FuzzBackendsAnswerAlike(f *testing.F) {
	for _, s := range []string{`"\u0000"`, `{"\ud800":1}`, "\"\xff\"", `1e999999`, `{"a":1,"a":2}`, `[1,"x",null]`} {
		f.Add(s)
	}
	bs := backends(f, backendRules)
	f.Fuzz(func(t *testing.T, input string) {
		body := `{"kind":"echo","input":` + input + `}`
		sq, pg := bs[0].submit(t, body), bs[1].submit(t, body)
		if sq.status != pg.status || sq.detail != pg.detail || !reflect.DeepEqual(sq.input, pg.input) {
			t.Fatalf("submit %q: sqlite %+v, postgres %+v; want the same answer", body, sq, pg)
		}
	})
}

// Hostile inputs cost a user what a client error costs, no more: each
// submit is a 400 (charged: the input is the client's fault), none is a
// server error, and the budget afterwards is exactly one charge per submit
// lower, on both backends.
func TestHostileInputsSpendOnlyTheirOwnCharge(t *testing.T) {
	for _, b := range backends(t, backendRules) {
		before := b.used(t, "alice")["create-task"]
		for _, body := range hostileBodies {
			if r := b.submit(t, body); r.status != http.StatusBadRequest {
				t.Errorf("%s: hostile submit %q: %d, want 400", b.name, body, r.status)
			}
		}
		if got, want := b.used(t, "alice")["create-task"]-before, int64(len(hostileBodies)); got != want {
			t.Errorf("%s: %d hostile submits charged %d, want %d", b.name, want, got, want)
		}
		// And the user can still submit.
		if r := b.submit(t, `{"kind":"echo","input":"fine"}`); r.status != http.StatusAccepted {
			t.Errorf("%s: a fine submit after the hostile ones: %d %s", b.name, r.status, r.detail)
		}
	}
}

// Every JSON answer is valid UTF-8: a task stored before its input was
// checked, with bytes that are not UTF-8 (SQLite keeps them), reads back
// with U+FFFD in their place; problems that quote a kind, a field, a path
// or a query parameter quote them so too.
func TestAnswersAreUTF8(t *testing.T) {
	store := sqliteStore(t)
	e := newLimitedEnv(t, store, parseConfig(t, backendRules))
	k := e.key(t, "alice")
	old, err := store.Create(context.Background(), tasks.Task{UserID: "alice", Kind: "echo", Input: json.RawMessage("{\"a\xff\":\"b\xfe\xfd\"}")})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		method, path, body string
		status             int
	}{
		{"GET", "/v1/tasks/" + old.ID, "", 200},
		{"GET", "/v1/tasks", "", 200},
		{"POST", "/v1/tasks/" + old.ID + "/cancel", "", 200},
		{"POST", "/v1/tasks", "{\"kind\":\"\xff\"}", 400},
		{"POST", "/v1/tasks", "{\"kind\":\"echo\",\"\xff\":1}", 400},
		{"POST", "/v1/tasks", "{\"kind\":\"echo\",\"input\":{\"\xff\":1}}", 400},
		{"POST", "/v1/tasks", "{\"kind\":\"sleep\",\"input\":{\"seconds\":1,\"\xe2\x82\":1}}", 400},
		{"POST", "/v1/tasks", "\xff", 400},
		{"GET", "/v1/tasks/%FF%FE", "", 404},
		{"GET", "/v1/tasks?status=%FF", "", 400},
		{"GET", "/v1/tasks?before=%FF", "", 400},
		{"GET", "/v1/tasks?%FF=1", "", 400},
		{"GET", "/v1/%FF", "", 404},
	} {
		r := e.do(t, c.method, c.path, k, c.body)
		if r.status != c.status {
			t.Errorf("%s %s %q: %d, want %d: %q", c.method, c.path, c.body, r.status, c.status, r.body)
		}
		if !utf8.Valid(r.body) || !json.Valid(r.body) {
			t.Errorf("%s %s %q: %d with a body that is not valid UTF-8 JSON: %q", c.method, c.path, c.body, r.status, r.body)
		}
	}
	var got tasks.Task
	e.do(t, "GET", "/v1/tasks/"+old.ID, k, "").json(t, &got)
	if want := "{\"a\uFFFD\":\"b\uFFFD\"}"; string(got.Input) != want {
		t.Errorf("stored input reads back as %q, want %q", got.Input, want)
	}
}
