package api

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/allowancehq/allowance"
	"github.com/allowancehq/allowance/app/internal/auth"
	"github.com/allowancehq/allowance/app/internal/config"
	"github.com/allowancehq/allowance/app/tasks"
	"github.com/allowancehq/allowance/app/tasks/sqlitestore"
	"github.com/allowancehq/allowance/httplimit"
	"github.com/allowancehq/allowance/memstore"
)

// submitTyped sends POST /v1/tasks with body and Content-Type ct (none when
// empty).
func (e *env) submitTyped(key, ct, body string) response {
	e.t.Helper()
	req, err := http.NewRequest("POST", e.srv.URL+"/v1/tasks", strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	res, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return response{res.StatusCode, res.Header, b}
}

// A submit's body is read as JSON when its Content-Type is
// application/json (charset UTF-8 or none), a +json type, or missing; any
// other type gets 415 with a problem that says what to send, and the
// request's charge is kept: the detail says so.
func TestSubmitContentType(t *testing.T) {
	const echo = `{"kind":"echo","input":1}`
	for _, tt := range []struct {
		ct   string
		want int
		says []string
	}{
		{"", http.StatusAccepted, nil},
		{"application/json", http.StatusAccepted, nil},
		{"application/json; charset=utf-8", http.StatusAccepted, nil},
		{"Application/JSON; charset=UTF-8", http.StatusAccepted, nil},
		{"application/vnd.api+json", http.StatusAccepted, nil},
		{"application/x-www-form-urlencoded", http.StatusUnsupportedMediaType, []string{`"application/x-www-form-urlencoded" is not JSON`, "Content-Type: application/json", "counted against your rate limit"}},
		{"text/plain", http.StatusUnsupportedMediaType, []string{`"text/plain" is not JSON`}},
		{"multipart/form-data; boundary=x", http.StatusUnsupportedMediaType, []string{"not JSON"}},
		{"application/json; charset=iso-8859-1", http.StatusUnsupportedMediaType, []string{`charset "iso-8859-1" is not UTF-8`}},
		{"application/json; charset", http.StatusUnsupportedMediaType, []string{"cannot be read"}},
	} {
		t.Run(tt.ct, func(t *testing.T) {
			e := newEnv(t, generous(), 0)
			k := e.key("carol")
			r := e.submitTyped(k, tt.ct, echo)
			if tt.want == http.StatusAccepted {
				if r.status != tt.want {
					t.Fatalf("Content-Type %q: %d %s; want 202", tt.ct, r.status, r.body)
				}
				return
			}
			p := r.problem(t, tt.want)
			for _, w := range tt.says {
				if !strings.Contains(p.Detail, w) {
					t.Errorf("detail %q does not contain %q", p.Detail, w)
				}
			}
			if got := r.remaining(t); got != 999 {
				t.Errorf("remaining after a 415: %d, want 999 (charged)", got)
			}
			if list, _ := e.store.List(context.Background(), "carol", tasks.ListOptions{}); len(list) != 0 {
				t.Errorf("a 415 created %d tasks", len(list))
			}
		})
	}
}

// Malformed, oversized and wrong-type submits are the client's mistakes:
// each costs its attempt, and its problem detail says so. Without a rule
// charging them the detail says nothing about the rate limit.
func TestBadSubmitsCostTheirAttempt(t *testing.T) {
	rules := config.Default().Rules
	rules[0].Limits = allowance.Limits{{Count: 10, Period: time.Minute}}
	e := newEnv(t, rules, 64)
	k := e.key("dave")
	big := `{"kind":"echo","input":"` + strings.Repeat("x", 100) + `"}`
	for i, tt := range []struct {
		ct, body string
		status   int
	}{
		{"application/x-www-form-urlencoded", `{"kind":"echo"}`, http.StatusUnsupportedMediaType},
		{"application/json", big, http.StatusRequestEntityTooLarge},
		{"application/json", `{"kind":`, http.StatusBadRequest},
		{"application/json", `{"input":1}`, http.StatusBadRequest},                             // no kind
		{"application/json", `{"kind":"sleep","input":{"seconds":-1}}`, http.StatusBadRequest}, // the kind's check
		{"application/json", `{"kind":"echo","input":"\u0000"}`, http.StatusBadRequest},        // what a store cannot keep
	} {
		r := e.submitTyped(k, tt.ct, tt.body)
		p := r.problem(t, tt.status)
		if !strings.Contains(p.Detail, "This request counted against your rate limit") {
			t.Errorf("%d detail %q does not say the request was charged", tt.status, p.Detail)
		}
		if got, want := r.remaining(t), 9-i; got != want {
			t.Errorf("%d: remaining %d, want %d", tt.status, got, want)
		}
	}

	unlimited := newEnv(t, []config.Rule{config.Default().Rules[1]}, 64) // only GET /v1/ limited
	k = unlimited.key("dave")
	for _, r := range []response{unlimited.submitTyped(k, "text/plain", "x"), unlimited.submitTyped(k, "", big), unlimited.submitTyped(k, "", "{")} {
		var p Problem
		r.json(t, &p)
		if strings.Contains(p.Detail, "rate limit") {
			t.Errorf("%d without a charge: detail %q mentions the rate limit", r.status, p.Detail)
		}
	}
}

// A body whose Content-Length is above max_body_bytes gets 413 before any
// of it is read: a client that sent "Expect: 100-continue" gets no
// "100 Continue" (net/http sends it at the handler's first read), only the
// 413, and never has to send the body.
func TestOversizedBodyRefusedBeforeContinue(t *testing.T) {
	e := newEnv(t, generous(), 1024)
	k := e.key("erin")

	// A raw connection shows exactly what the server sends first.
	conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Bounds a broken server's wait; a correct one answers at once.
	if err := conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "POST /v1/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"+
		"Content-Type: application/json\r\nContent-Length: 2000000\r\nExpect: 100-continue\r\n\r\n", k)
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer before the body was sent: %v", err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("first answer %d %s, want 413 (and no 100 Continue)", res.StatusCode, body)
	}
	if !bytes.Contains(body, []byte("2000000 bytes, larger than 1024 bytes")) || res.Header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("413 %s %q; want a problem naming both sizes", res.Header.Get("Content-Type"), body)
	}

	// Go's client waits for the 100 Continue before it sends the body: the
	// body is never read.
	var read atomic.Bool
	tr := e.srv.Client().Transport.(*http.Transport).Clone()
	tr.ExpectContinueTimeout = time.Minute
	defer tr.CloseIdleConnections()
	req, err := http.NewRequest("POST", e.srv.URL+"/v1/tasks", &flagReader{r: strings.NewReader(strings.Repeat("x", 5000)), read: &read})
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = 5000
	req.Header.Set("Authorization", "Bearer "+k)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Expect", "100-continue")
	res, err = (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusRequestEntityTooLarge || read.Load() {
		t.Fatalf("Expect: 100-continue with 5000 bytes: %d, body sent %v; want 413 and the body never sent", res.StatusCode, read.Load())
	}
}

// flagReader records that it was read.
type flagReader struct {
	r    io.Reader
	read *atomic.Bool
}

func (f *flagReader) Read(p []byte) (int, error) {
	f.read.Store(true)
	return f.r.Read(p)
}

// logRecorder keeps the messages and attributes of the records it handles.
type logRecorder struct {
	mu   sync.Mutex
	recs []string // "LEVEL msg key=value ..."
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) WithGroup(string) slog.Handler            { return l }
func (l *logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	return &attrHandler{l: l, attrs: as}
}
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	return (&attrHandler{l: l}).Handle(context.Background(), r)
}

// find returns the records that contain s.
func (l *logRecorder) find(s string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, r := range l.recs {
		if strings.Contains(r, s) {
			out = append(out, r)
		}
	}
	return out
}

type attrHandler struct {
	l     *logRecorder
	attrs []slog.Attr
}

func (h *attrHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *attrHandler) WithGroup(string) slog.Handler            { return h }
func (h *attrHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &attrHandler{l: h.l, attrs: append(append([]slog.Attr(nil), h.attrs...), as...)}
}
func (h *attrHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Level.String() + " " + r.Message)
	for _, a := range h.attrs {
		b.WriteString(" " + a.String())
	}
	r.Attrs(func(a slog.Attr) bool { b.WriteString(" " + a.String()); return true })
	h.l.mu.Lock()
	h.l.recs = append(h.l.recs, b.String())
	h.l.mu.Unlock()
	return nil
}

// The conflict's log line tells a restored refund from a declined one: with
// a refund guard of 1/hour the first conflict is refunded and the second is
// not, and each 409's detail says what became of the attempt.
func TestConflictLogTellsRestoredFromDeclined(t *testing.T) {
	rules := config.Default().Rules
	rules[0].RefundGuard = allowance.Limit{Count: 1, Period: time.Hour}
	logs := &logRecorder{}
	e := newEnv(t, rules, 0, func(o *Options, _ allowance.Store) { o.Logger = slog.New(logs) })
	k := e.key("frank")
	if r := e.do("POST", "/v1/tasks", k, sleep30); r.status != http.StatusAccepted {
		t.Fatalf("submit: %d %s", r.status, r.body)
	}
	first := e.do("POST", "/v1/tasks", k, sleep30)
	if p := first.problem(t, http.StatusConflict); !strings.Contains(p.Detail, "did not count against your rate limit") {
		t.Errorf("refunded 409: detail %q", p.Detail)
	}
	second := e.do("POST", "/v1/tasks", k, sleep30)
	if p := second.problem(t, http.StatusConflict); !strings.Contains(p.Detail, "counted against your rate limit: you have had too many attempts refunded") {
		t.Errorf("declined 409: detail %q", p.Detail)
	}
	if got := second.remaining(t); got != 3 {
		t.Errorf("remaining after a declined refund: %d, want 3", got)
	}
	refunded := logs.find("attempt refunded")
	declined := logs.find("refund not made (declined), the attempt counts")
	if len(refunded) != 1 || !strings.Contains(refunded[0], "refund=restored") || !strings.HasPrefix(refunded[0], "INFO") {
		t.Errorf("restored conflicts logged %q; want one INFO line with refund=restored", refunded)
	}
	if len(declined) != 1 || !strings.Contains(declined[0], "refund=declined") || !strings.Contains(declined[0], "user=frank") {
		t.Errorf("declined conflicts logged %q; want one line with refund=declined", declined)
	}
}

// failingRefunds is a limits store whose refunds fail while fail is set.
type failingRefunds struct {
	allowance.Store
	fail atomic.Bool
}

func (s *failingRefunds) Refund(ctx context.Context, rc *allowance.Receipt, g []allowance.Guard, res *allowance.RefundResult) error {
	if s.fail.Load() {
		return errors.New("limits store down")
	}
	return s.Store.Refund(ctx, rc, g, res)
}

// A conflict whose refund the limits store cannot take now is queued by
// httplimit and retried in the background: the conflict is logged at INFO
// as queued, and the 409 says the attempt will not count once the refund is
// made; once the store is back, the queue makes it.
func TestConflictRefundQueued(t *testing.T) {
	ctx := context.Background()
	store, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "tasks.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	if err := store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	mem := memstore.New()
	t.Cleanup(func() { mem.Close() })
	limits := &failingRefunds{Store: mem}
	rules := config.Default().Rules
	hrules := make([]httplimit.Rule, len(rules))
	for i, r := range rules {
		hrules[i] = httplimit.Rule{Rule: r.Rule, Match: r.Match}
	}
	reg := prometheus.NewRegistry()
	mw, err := httplimit.New(httplimit.Config{Store: limits, Rules: hrules, Key: httplimit.FromContext(auth.UserFrom), Observer: observer(t, reg), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	logs := &logRecorder{}
	s, err := New(Options{Store: store, Limiter: mw, Logger: slog.New(logs), ConflictRefund: []string{"create-task"}, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, srv: httptest.NewServer(s.Handler()), api: s, store: store}
	t.Cleanup(e.srv.Close)
	k := e.key("grace")
	if r := e.do("POST", "/v1/tasks", k, sleep30); r.status != http.StatusAccepted {
		t.Fatalf("submit: %d %s", r.status, r.body)
	}
	limits.fail.Store(true)
	r := e.do("POST", "/v1/tasks", k, sleep30)
	if p := r.problem(t, http.StatusConflict); !strings.Contains(p.Detail, "refund of this attempt is queued") {
		t.Errorf("409 with a queued refund: detail %q", p.Detail)
	}
	queued := logs.find("refund queued, retried in the background")
	if len(queued) != 1 || !strings.HasPrefix(queued[0], "INFO") || !strings.Contains(queued[0], "refund=queued") {
		t.Errorf("queued conflict logged %q; want one INFO line with refund=queued", queued)
	}
	if n := len(logs.find("attempt refunded")) + len(logs.find("refund failed")); n != 0 {
		t.Errorf("a queued refund was also logged as refunded or failed: %q", logs.recs)
	}

	limits.fail.Store(false)
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := mw.Shutdown(sctx); err != nil {
		t.Fatalf("the queued refund was not made once the store was back: %v", err)
	}
	us, err := mw.Peek(ctx, "grace")
	if err != nil {
		t.Fatal(err)
	}
	if us[0].Used != 1 {
		t.Errorf("after the queued refund: %d used of %s, want 1 (the accepted submit)", us[0].Used, us[0].Limit)
	}
}
