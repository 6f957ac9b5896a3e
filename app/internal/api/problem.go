package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"unicode/utf8"
)

// Problem is an RFC 9457 problem details object, the body of every error
// response (Content-Type application/problem+json). Type is a URI naming the
// kind of problem (relative to the API, such as "/problems/active-task"),
// or "about:blank" when the status says it all; Title is that kind's fixed
// summary and Detail what went wrong with this request.
type Problem struct {
	Type     string `json:"type"`
	Title    string `json:"title"`
	Status   int    `json:"status"`
	Detail   string `json:"detail,omitempty"`
	Instance string `json:"instance,omitempty"`
	// ActiveTaskID is set on 409 answers to POST /v1/tasks: the id of the
	// user's queued or running task.
	ActiveTaskID string `json:"active_task_id,omitempty"`
	// TaskStatus is set on 409 answers to a cancel: the task's final state.
	TaskStatus string `json:"task_status,omitempty"`
	// TaskID is set on 422 answers to POST /v1/tasks whose Idempotency-Key
	// was used for another request: the id of the task that request made.
	TaskID string `json:"task_id,omitempty"`
}

// Problem types of taskd. Others are about:blank.
const (
	typeActiveTask   = "/problems/active-task"
	typeNotActive    = "/problems/task-not-active"
	typeInvalidInput = "/problems/invalid-request"
	typeKeyReused    = "/problems/idempotency-key-reused"
)

// writeProblem answers with p. An empty Type becomes about:blank and an
// empty Title the status's text. A 503 gets Retry-After: 1 unless the
// handler set one.
func writeProblem(w http.ResponseWriter, r *http.Request, p Problem) {
	if p.Type == "" {
		p.Type = "about:blank"
	}
	if p.Title == "" {
		p.Title = http.StatusText(p.Status)
	}
	p.Instance = r.URL.Path
	b, _ := marshal(p) // strings and an int: cannot fail
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	h.Set("Cache-Control", "no-store")
	if p.Status == http.StatusServiceUnavailable && h.Get("Retry-After") == "" {
		// Every 503 is a passing failure of a store; say when to retry.
		h.Set("Retry-After", "1")
	}
	w.WriteHeader(p.Status)
	_, _ = w.Write(b)
}

// marshal encodes v as JSON and a newline, leaving <, > and & as they are
// (a JSON API is not HTML; "Bearer <key>" should read as written).
//
// The result is always valid UTF-8. encoding/json makes Go strings so (a
// detail that quotes a field name, a path), but copies a json.RawMessage
// (a task's input and output) byte for byte, and a task stored before its
// input was checked may hold bytes that are not UTF-8. In valid JSON such
// bytes can only be inside strings, so each run of them becomes U+FFFD and the
// JSON stays valid.
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	if b := buf.Bytes(); !utf8.Valid(b) {
		return bytes.ToValidUTF8(b, []byte("\uFFFD")), nil
	}
	return buf.Bytes(), nil
}

// problemf answers with an about:blank problem of status and detail.
func problemf(w http.ResponseWriter, r *http.Request, status int, detail string) {
	writeProblem(w, r, Problem{Status: status, Detail: detail})
}

// badRequest answers 400 with a detail saying what is wrong with the request.
func badRequest(w http.ResponseWriter, r *http.Request, detail string) {
	writeProblem(w, r, Problem{Type: typeInvalidInput, Title: "Invalid request", Status: http.StatusBadRequest, Detail: detail})
}

// writeJSON answers status with v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := marshal(v)
	if err != nil {
		http.Error(w, "encode response: "+err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
