package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzDecodeSubmit: any body either decodes into a submit request, writing
// nothing, or is answered 400 or 413 with a problem that says what is wrong,
// in UTF-8 whatever bytes the body quoted.
func FuzzDecodeSubmit(f *testing.F) {
	for _, s := range []string{
		`{"kind":"sleep","input":{"seconds":30}}`,
		`{"kind":"echo","input":[1,"a",null]}`,
		`{"kind":`, `[]`, `{"kind":1}`, `{"x":1}`, `{} {}`, ``, `null`, `{"kind":"echo"}x`,
		"{\"\xff\":1}", "{\"kind\":\"\xff\"}\xfe", "\xc3",
	} {
		f.Add([]byte(s))
	}
	s := &Server{maxBody: 128}
	f.Fuzz(func(t *testing.T, body []byte) {
		w := httptest.NewRecorder()
		r := httptest.NewRequest("POST", "/v1/tasks", strings.NewReader(string(body)))
		var req submitRequest
		if s.decodeJSON(w, r, &req) {
			if w.Body.Len() != 0 {
				t.Fatalf("decoded %q and wrote %q", body, w.Body.String())
			}
			if len(body) > 128 {
				t.Fatalf("accepted a body of %d bytes over the limit of 128", len(body))
			}
			return
		}
		if w.Code != http.StatusBadRequest && w.Code != http.StatusRequestEntityTooLarge {
			t.Fatalf("body %q answered %d", body, w.Code)
		}
		var p Problem
		if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil || p.Status != w.Code || p.Detail == "" {
			t.Fatalf("body %q: problem %q (%v)", body, w.Body.String(), err)
		}
		if !utf8.Valid(w.Body.Bytes()) {
			t.Fatalf("body %q: the problem %q is not UTF-8", body, w.Body.String())
		}
	})
}
