package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"

	"github.com/allowancehq/allowance"
	"github.com/allowancehq/allowance/app/tasks"
	"github.com/allowancehq/allowance/httplimit"
)

// submitRequest is the body of POST /v1/tasks.
type submitRequest struct {
	Kind  string          `json:"kind"`
	Input json.RawMessage `json:"input"`
}

const submitShape = `a JSON object like {"kind": "sleep", "input": {"seconds": 30}}`

// decodeJSON decodes the body of r into v strictly: one JSON object, no
// unknown fields, at most maxBody bytes. It answers the error itself and
// reports false: 415 when the Content-Type is not JSON (see
// jsonContentType), 413 when the body is larger than maxBody, 400 when it is
// not one JSON object of v's fields.
//
// The 415, and the 413 for a Content-Length above maxBody, are answered
// before any of the body is read, so a client that sent "Expect:
// 100-continue" gets no 100 Continue (net/http sends it at the first read)
// and does not send the body. A body without Content-Length is read up to
// maxBody.
//
// These are the client's mistakes: a rule's charge for the request is kept,
// and the answer's detail says so (chargedNote).
func (s *Server) decodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	if detail, ok := jsonContentType(r.Header.Get("Content-Type")); !ok {
		problemf(w, r, http.StatusUnsupportedMediaType, detail+chargedNote(r))
		return false
	}
	if r.ContentLength > s.maxBody {
		problemf(w, r, http.StatusRequestEntityTooLarge,
			fmt.Sprintf("The request body is %d bytes, larger than %d bytes.", r.ContentLength, s.maxBody)+chargedNote(r))
		return false
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, s.maxBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		// One value only: anything after it but spaces is an error.
		if _, terr := dec.Token(); terr != io.EOF {
			err = errTrailing
			var mbe *http.MaxBytesError
			if errors.As(terr, &mbe) {
				err = terr
			}
		}
	}
	if err == nil {
		return true
	}
	var (
		mbe  *http.MaxBytesError
		syn  *json.SyntaxError
		typ  *json.UnmarshalTypeError
		what string
	)
	switch {
	case errors.As(err, &mbe):
		problemf(w, r, http.StatusRequestEntityTooLarge, fmt.Sprintf("The request body is larger than %d bytes.", mbe.Limit)+chargedNote(r))
		return false
	case errors.Is(err, io.EOF):
		what = "The request body is empty; expected " + submitShape + "."
	case errors.Is(err, io.ErrUnexpectedEOF):
		what = "Malformed JSON: the body ends in the middle of a value; expected " + submitShape + "."
	case errors.As(err, &syn):
		what = fmt.Sprintf("Malformed JSON at byte %d: %s; expected %s.", syn.Offset, strings.TrimPrefix(syn.Error(), "json: "), submitShape)
	case errors.As(err, &typ):
		if typ.Field == "" {
			what = fmt.Sprintf("The body is a JSON %s; expected %s.", typ.Value, submitShape)
		} else {
			what = fmt.Sprintf("Field %q is a JSON %s; expected a %s.", typ.Field, typ.Value, jsonKind(typ.Type.String()))
		}
	case errors.Is(err, errTrailing):
		what = "The body has data after its JSON object; expected exactly one JSON object."
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		what = fmt.Sprintf("Unknown field %s; expected only \"kind\" and \"input\".", strings.TrimPrefix(err.Error(), "json: unknown field "))
	default:
		what = "Cannot read the request body: " + err.Error() + "."
	}
	badRequest(w, r, what+chargedNote(r))
	return false
}

// jsonContentType reports whether a request body of Content-Type ct is to
// be read as JSON, or else a detail for the 415 saying what is expected.
// application/json is, with no charset or charset=utf-8 (JSON is UTF-8), and
// so is a type with the +json suffix, such as application/vnd.api+json. A
// missing Content-Type is read as JSON too: the body is parsed strictly, so
// a body that is not JSON still gets a 400 that says why. curl -d sends
// application/x-www-form-urlencoded, which is not JSON.
func jsonContentType(ct string) (detail string, ok bool) {
	if ct == "" {
		return "", true
	}
	const want = "expected application/json (with curl: -H 'Content-Type: application/json')."
	mt, params, err := mime.ParseMediaType(ct)
	switch {
	case err != nil:
		return fmt.Sprintf("Content-Type %q cannot be read (%v); %s", ct, err, want), false
	case mt != "application/json" && !strings.HasSuffix(mt, "+json"):
		return fmt.Sprintf("Content-Type %q is not JSON; %s", mt, want), false
	}
	if cs, set := params["charset"]; set && !strings.EqualFold(cs, "utf-8") {
		return fmt.Sprintf("Content-Type %q: charset %q is not UTF-8; expected JSON in UTF-8, with no charset or charset=utf-8.", ct, cs), false
	}
	return "", true
}

// chargedNote returns the sentence that ends the detail of an answer to a
// request the client got wrong (a body that is not JSON, too large or
// malformed) when a rule charged the request: such a request costs its
// attempt like any other, and says so. It returns "" when nothing was
// charged, or when the charge is uncertain and will be voided.
func chargedNote(r *http.Request) string {
	if rc, ok := httplimit.ReceiptFrom(r.Context()); ok && !rc.Uncertain() {
		return " This request counted against your rate limit, like any request the client got wrong."
	}
	return ""
}

var errTrailing = errors.New("data after the JSON value")

func jsonKind(goType string) string {
	switch goType {
	case "string":
		return "string"
	case "json.RawMessage":
		return "JSON value"
	}
	return goType
}

// createTask is POST /v1/tasks.
//
// With an Idempotency-Key header the task is created with the key, and a
// retry of the request with the key (same kind and input, by the same
// user) answers with that task, as it is now, and Idempotent-Replayed:
// true instead of creating another; another request with the key is a
// 422. See the "Retries and idempotency" section of docs/taskd.md.
func (s *Server) createTask(w http.ResponseWriter, r *http.Request) {
	defer s.recoverPanic(w, r)
	key, err := idempotencyKey(r.Header)
	if err != nil {
		s.submits.WithLabelValues("invalid").Inc()
		badRequest(w, r, upperFirst(err.Error())+"."+chargedNote(r))
		return
	}
	var req submitRequest
	if !s.decodeJSON(w, r, &req) {
		s.submits.WithLabelValues("invalid").Inc()
		return
	}
	if req.Kind == "" {
		s.submits.WithLabelValues("invalid").Inc()
		badRequest(w, r, `Field "kind" is missing; expected a task kind such as "sleep" or "echo".`+chargedNote(r))
		return
	}
	if err := tasks.ValidateInput(req.Kind, req.Input); err != nil {
		s.submits.WithLabelValues("invalid").Inc()
		badRequest(w, r, err.Error()+"."+chargedNote(r))
		return
	}
	t := tasks.Task{UserID: user(r), Kind: req.Kind, Input: req.Input, IdempotencyKey: key}
	if key != "" {
		if t.RequestDigest, err = requestDigest(req.Kind, req.Input); err != nil {
			// ValidateInput accepted the input: the server failed.
			s.submits.WithLabelValues("error").Inc()
			s.log.ErrorContext(r.Context(), "digest of a task submit", "user", t.UserID, "err", err)
			problemf(w, r, http.StatusInternalServerError, "The server failed while answering this request; try again shortly.")
			return
		}
	}
	if rc, ok := httplimit.ReceiptFrom(r.Context()); ok {
		b, err := rc.MarshalBinary()
		if err != nil {
			// The task is still worth running; only a later refund is lost.
			s.log.ErrorContext(r.Context(), "encode rate limit receipt; the task will have none", "err", err)
		} else {
			t.Receipt = b
		}
	}
	created, err := s.store.Create(r.Context(), t)
	var (
		active *tasks.ActiveTaskError
		used   *tasks.KeyUsedError
	)
	switch {
	case errors.As(err, &used):
		s.replay(w, r, t, used.Task)
		return
	case errors.As(err, &active):
		s.submits.WithLabelValues("conflict").Inc()
		s.conflict409(w, r, active.ActiveID)
		return
	case err != nil:
		s.submits.WithLabelValues("error").Inc()
		s.log.ErrorContext(r.Context(), "create task", "user", t.UserID, "err", err)
		problemf(w, r, http.StatusServiceUnavailable, "Cannot store the task now; try again shortly.")
		return
	}
	s.submits.WithLabelValues("accepted").Inc()
	if s.workers != nil {
		s.workers.Notify()
	}
	w.Header().Set("Location", "/v1/tasks/"+created.ID)
	writeJSON(w, http.StatusAccepted, created)
}

// replay answers a submit t whose Idempotency-Key made task prev. The same
// request (equal digests) gets prev, as it is now, with the status the
// first answer had (202) and Idempotent-Replayed: true; the rate limiter
// charged it nothing while the first request's charge counts. Another
// request with the key gets a 422.
func (s *Server) replay(w http.ResponseWriter, r *http.Request, t, prev tasks.Task) {
	if prev.RequestDigest != t.RequestDigest {
		s.submits.WithLabelValues("key_reused").Inc()
		s.log.InfoContext(r.Context(), "task submit reuses an idempotency key for another request", "user", t.UserID, "task_id", prev.ID)
		writeProblem(w, r, Problem{
			Type:   typeKeyReused,
			Title:  "Idempotency key used for another request",
			Status: http.StatusUnprocessableEntity,
			Detail: fmt.Sprintf("This Idempotency-Key was used to submit task %s with another kind or input; use a new key for a new task.", prev.ID) + chargedNote(r),
			TaskID: prev.ID,
		})
		return
	}
	s.submits.WithLabelValues("replayed").Inc()
	s.log.InfoContext(r.Context(), "task submit repeated; answering with its task", "user", t.UserID, "task_id", prev.ID)
	w.Header().Set(headerReplayed, "true")
	w.Header().Set("Location", "/v1/tasks/"+prev.ID)
	writeJSON(w, http.StatusAccepted, prev)
}

// conflict409 answers a submit of a user who has the active task activeID:
// it refunds the request's charge when a charged rule says so, then writes
// the 409, whose rate-limit headers then show the refunded budget.
//
// The conflict is logged at INFO with the refund's outcome, and the message
// says what became of the attempt: refunded (restored), refund queued (the
// limits store did not answer; httplimit retries it in the background),
// or still counted (declined by the refund guard, or any other outcome that
// gave nothing back). A refund that failed outright is logged at WARN.
func (s *Server) conflict409(w http.ResponseWriter, r *http.Request, activeID string) {
	ctx := r.Context()
	log := s.log.With("user", user(r), "active_task_id", activeID)
	const msg = "task submit conflicts with an active task"
	note := ""
	if s.refundsConflict(r) {
		res, err := httplimit.Refund(ctx, "conflict")
		switch {
		case errors.Is(err, httplimit.ErrNotApplied):
			// Logged at WARN by httplimit: nothing was charged.
		case errors.Is(err, httplimit.ErrRepeated):
			log.LogAttrs(ctx, slog.LevelInfo, msg+"; a repeat of an earlier request with its Idempotency-Key, not charged again")
			note = " This attempt repeated an earlier request with the same Idempotency-Key and was not charged again."
		case errors.Is(err, httplimit.ErrRefundQueued):
			log.LogAttrs(ctx, slog.LevelInfo, msg+"; refund queued, retried in the background", slog.String("refund", "queued"), slog.String("err", err.Error()))
			note = " The rate limiter did not answer in time: the refund of this attempt is queued, and once it is made the attempt will not count against your rate limit."
		case err != nil:
			// Logged by httplimit; the 409 stands.
			log.LogAttrs(ctx, slog.LevelWarn, msg+"; refund failed, the attempt stays charged", slog.String("err", err.Error()))
		case res.Restored():
			log.LogAttrs(ctx, slog.LevelInfo, msg+"; attempt refunded", slog.String("refund", res.Outcome().String()))
			note = " This attempt did not count against your rate limit."
		default:
			outcome := res.Outcome()
			log.LogAttrs(ctx, slog.LevelInfo, msg+"; refund not made ("+outcome.String()+"), the attempt counts", slog.String("refund", outcome.String()))
			if outcome == allowance.Declined {
				note = " This attempt counted against your rate limit: you have had too many attempts refunded recently."
			}
		}
	} else {
		log.InfoContext(ctx, msg+"; no rule refunds conflicts")
	}
	detail := fmt.Sprintf("Task %s is still queued or running; wait for it to finish or cancel it (POST /v1/tasks/%s/cancel).", activeID, activeID) + note
	writeProblem(w, r, Problem{
		Type:         typeActiveTask,
		Title:        "User has an active task",
		Status:       http.StatusConflict,
		Detail:       detail,
		ActiveTaskID: activeID,
	})
}

// refundsConflict reports whether a rule the request was charged for lists
// conflict in its refund_on.
func (s *Server) refundsConflict(r *http.Request) bool {
	for _, c := range httplimit.Applied(r.Context()) {
		if slices.Contains(s.conflict, c.Rule) {
			return true
		}
	}
	return false
}

// getTask is GET /v1/tasks/{id}.
func (s *Server) getTask(w http.ResponseWriter, r *http.Request) {
	defer s.recoverPanic(w, r)
	id := r.PathValue("id")
	if !tasks.ValidID(id) {
		taskNotFound(w, r, id)
		return
	}
	t, err := s.store.Get(r.Context(), user(r), id)
	switch {
	case errors.Is(err, tasks.ErrNotFound):
		taskNotFound(w, r, id)
	case err != nil:
		s.storeFailed(w, r, "get task", err)
	default:
		writeJSON(w, http.StatusOK, t)
	}
}

func taskNotFound(w http.ResponseWriter, r *http.Request, id string) {
	problemf(w, r, http.StatusNotFound, fmt.Sprintf("You have no task %q.", id))
}

func (s *Server) storeFailed(w http.ResponseWriter, r *http.Request, what string, err error) {
	s.log.ErrorContext(r.Context(), what, "user", user(r), "err", err)
	problemf(w, r, http.StatusServiceUnavailable, "The task store is unavailable; try again shortly.")
}

// taskList is the body of GET /v1/tasks.
type taskList struct {
	Tasks []tasks.Task `json:"tasks"`
	// NextBefore, when set, is the before= value of the next page.
	NextBefore string `json:"next_before,omitempty"`
}

// listTasks is GET /v1/tasks?status=&limit=&before=.
func (s *Server) listTasks(w http.ResponseWriter, r *http.Request) {
	defer s.recoverPanic(w, r)
	q := r.URL.Query()
	for k := range q {
		if k != "status" && k != "limit" && k != "before" {
			badRequest(w, r, fmt.Sprintf("Unknown query parameter %q; expected status, limit or before.", k))
			return
		}
	}
	var o tasks.ListOptions
	if v := q.Get("status"); v != "" {
		st, err := tasks.ParseStatus(v)
		if err != nil {
			badRequest(w, r, "Query parameter "+err.Error()+".")
			return
		}
		o.Status = st
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > tasks.MaxListLimit {
			badRequest(w, r, fmt.Sprintf("Query parameter limit %q: expected a whole number from 1 to %d.", v, tasks.MaxListLimit))
			return
		}
		o.Limit = n
	}
	if v := q.Get("before"); v != "" {
		if !tasks.ValidID(v) {
			badRequest(w, r, fmt.Sprintf("Query parameter before %q: expected a task id such as the next_before of the previous page.", v))
			return
		}
		o.Before = v
	}
	list, err := s.store.List(r.Context(), user(r), o)
	switch {
	case errors.Is(err, tasks.ErrNotFound):
		badRequest(w, r, fmt.Sprintf("Query parameter before %q: you have no such task.", o.Before))
		return
	case err != nil:
		s.storeFailed(w, r, "list tasks", err)
		return
	}
	out := taskList{Tasks: list}
	if out.Tasks == nil {
		out.Tasks = []tasks.Task{}
	}
	if len(list) == o.PageLimit() {
		out.NextBefore = list[len(list)-1].ID
	}
	writeJSON(w, http.StatusOK, out)
}

// cancelTask is POST /v1/tasks/{id}/cancel.
func (s *Server) cancelTask(w http.ResponseWriter, r *http.Request) {
	defer s.recoverPanic(w, r)
	id := r.PathValue("id")
	if !tasks.ValidID(id) {
		taskNotFound(w, r, id)
		return
	}
	t, err := s.store.Cancel(r.Context(), user(r), id)
	switch {
	case errors.Is(err, tasks.ErrNotFound):
		taskNotFound(w, r, id)
	case errors.Is(err, tasks.ErrNotActive):
		writeProblem(w, r, Problem{
			Type:       typeNotActive,
			Title:      "Task is not active",
			Status:     http.StatusConflict,
			Detail:     fmt.Sprintf("Task %s is already %s; only queued or running tasks can be canceled.", id, t.Status),
			TaskStatus: string(t.Status),
		})
	case err != nil:
		s.storeFailed(w, r, "cancel task", err)
	default:
		if s.workers != nil {
			s.workers.Cancel(id)
		}
		s.log.InfoContext(r.Context(), "task canceled", "user", t.UserID, "task_id", id)
		writeJSON(w, http.StatusOK, t)
	}
}

// usage is one limit's entry in GET /v1/ratelimit.
type usage struct {
	Rule      string `json:"rule"`
	Limit     string `json:"limit"`
	Algorithm string `json:"algorithm"`
	Used      int64  `json:"used"`
	Remaining int64  `json:"remaining"`
	// ResetSeconds is how long until the usage would be zero, rounded up.
	ResetSeconds int64 `json:"reset_seconds"`
}

// rateLimit is GET /v1/ratelimit: the caller's usage of every limit, without
// charging anything beyond this request's own charge.
func (s *Server) rateLimit(w http.ResponseWriter, r *http.Request) {
	defer s.recoverPanic(w, r)
	us, err := s.limiter.Peek(r.Context(), user(r))
	if err != nil {
		s.log.ErrorContext(r.Context(), "peek rate limits", "user", user(r), "err", err)
		problemf(w, r, http.StatusServiceUnavailable, "The rate limiter is unavailable; try again shortly.")
		return
	}
	out := make([]usage, len(us))
	for i, u := range us {
		out[i] = usage{
			Rule:         u.Rule,
			Limit:        u.Limit.String(),
			Algorithm:    u.Algorithm.String(),
			Used:         u.Used,
			Remaining:    u.Remaining,
			ResetSeconds: int64((u.ResetAfter + 999_999_999) / 1_000_000_000),
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"user": user(r), "limits": out})
}

// recoverPanic, deferred first in each rate-limited handler, turns a panic
// of the handler into a 500 problem, logged with its stack, instead of a
// dropped connection. The 500 goes through the rate limiter's writer, so a
// rule that lists server_error in its refund_on gives the request's charge
// back (config.Rule.RefundStatuses). These handlers write their answer only
// as their last step, so one that panicked has written nothing yet.
// http.ErrAbortHandler is passed on: it asks net/http to drop the
// connection.
func (s *Server) recoverPanic(w http.ResponseWriter, r *http.Request) {
	p := recover()
	if p == nil {
		return
	}
	if p == http.ErrAbortHandler {
		panic(p)
	}
	s.log.ErrorContext(r.Context(), "handler panicked; answering 500", "method", r.Method, "path", r.URL.Path,
		"user", user(r), "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
	problemf(w, r, http.StatusInternalServerError, "The server failed while answering this request; try again shortly.")
}

// upperFirst capitalises an error text to start a sentence.
func upperFirst(s string) string {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return s
	}
	return string(s[0]-'a'+'A') + s[1:]
}
