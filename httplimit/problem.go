package httplimit

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/allowancehq/allowance"
)

// problem is an RFC 9457 problem details object. Type is always
// "about:blank", so Title is the status's text; the extension members say
// which limit denied the request.
type problem struct {
	Type       string `json:"type"`
	Title      string `json:"title"`
	Status     int    `json:"status"`
	Detail     string `json:"detail,omitempty"`
	Instance   string `json:"instance,omitempty"`
	Rule       string `json:"rule,omitempty"`
	Limit      string `json:"limit,omitempty"`
	RetryAfter int64  `json:"retry_after,omitempty"` // seconds
}

// writeProblem answers with p as application/problem+json.
func writeProblem(w http.ResponseWriter, r *http.Request, p problem) {
	p.Type = "about:blank"
	p.Title = http.StatusText(p.Status)
	p.Instance = r.URL.Path
	b, err := json.Marshal(p)
	if err != nil {
		// Only strings and integers: cannot happen.
		panic(err)
	}
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("Content-Length", strconv.Itoa(len(b)+1))
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(p.Status)
	_, _ = w.Write(append(b, '\n'))
}

// writeDenied answers 429 for a denied decision, with Retry-After in whole
// seconds (at least 1) and the denying limit in the body.
func writeDenied(w http.ResponseWriter, r *http.Request, d *allowance.Decision) {
	retry := max(ceilSeconds(d.RetryAfter), 1)
	s := d.State(d.MostRestrictive())
	w.Header().Set("Retry-After", strconv.FormatInt(retry, 10))
	writeProblem(w, r, problem{
		Status:     http.StatusTooManyRequests,
		Detail:     "Rate limit " + strconv.Quote(s.Rule) + " (" + s.Limit.String() + ") is exhausted; retry in " + strconv.FormatInt(retry, 10) + " seconds.",
		Rule:       s.Rule,
		Limit:      s.Limit.String(),
		RetryAfter: retry,
	})
}
