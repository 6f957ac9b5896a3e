package api

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/allowancehq/allowance/app/internal/config"
	"github.com/allowancehq/allowance/app/tasks"
)

func idemHeader(key string) http.Header { return http.Header{"Idempotency-Key": {key}} }

// accepted checks that r is a 202 with a task and returns it.
func (r response) accepted(t *testing.T) tasks.Task {
	t.Helper()
	if r.status != http.StatusAccepted {
		t.Fatalf("status %d, want 202; body %s", r.status, r.body)
	}
	var task tasks.Task
	r.json(t, &task)
	return task
}

// A retry of a submit with its Idempotency-Key gets the same task, marked
// replayed, instead of the active-task 409, and is not charged again;
// after the task ended it still gets it, as it is now. The same key from
// another user is that user's own; another request with the key is a 422.
func TestSubmitIdempotencyKey(t *testing.T) {
	store := sqliteStore(t)
	e := newLimitedEnv(t, store, config.Default().Rules)
	alice, bob := e.key(t, "alice"), e.key(t, "bob")

	r := e.doHeader(t, "POST", "/v1/tasks", alice, `{"kind":"sleep","input":{"seconds":30}}`, idemHeader("order-1"))
	first := r.accepted(t)
	if r.header.Get(headerReplayed) != "" {
		t.Errorf("first submit has %s: %q", headerReplayed, r.header.Get(headerReplayed))
	}
	// The same request, written differently (quoted key, spaces, key order).
	r = e.doHeader(t, "POST", "/v1/tasks", alice, `{ "input": { "seconds": 30 }, "kind": "sleep" }`, idemHeader(`"order-1"`))
	again := r.accepted(t)
	if again.ID != first.ID || string(r.body) != string(mustJSON(t, first)) {
		t.Fatalf("retry answered %s, want the first task %s", r.body, mustJSON(t, first))
	}
	if r.header.Get(headerReplayed) != "true" || r.header.Get("Location") != "/v1/tasks/"+first.ID {
		t.Errorf("retry headers %s %q, Location %q", headerReplayed, r.header.Get(headerReplayed), r.header.Get("Location"))
	}
	if u := e.used(t, "alice")["create-task"]; u != 1 {
		t.Errorf("create-task used %d after a submit and its retry, want 1", u)
	}

	// Another request with the key.
	p := e.doHeader(t, "POST", "/v1/tasks", alice, `{"kind":"sleep","input":{"seconds":31}}`, idemHeader("order-1")).problem(t, http.StatusUnprocessableEntity)
	if p.Type != typeKeyReused || p.TaskID != first.ID {
		t.Errorf("422: %+v, want type %s naming %s", p, typeKeyReused, first.ID)
	}

	// Bob's key is his own.
	bobs := e.doHeader(t, "POST", "/v1/tasks", bob, `{"kind":"sleep","input":{"seconds":30}}`, idemHeader("order-1")).accepted(t)
	if bobs.ID == first.ID {
		t.Fatalf("bob's submit with alice's key got her task")
	}

	// Once the task ended, the retry gets it as it is now.
	if r := e.do(t, "POST", "/v1/tasks/"+first.ID+"/cancel", alice, ""); r.status != http.StatusOK {
		t.Fatalf("cancel: %d %s", r.status, r.body)
	}
	r = e.doHeader(t, "POST", "/v1/tasks", alice, `{"kind":"sleep","input":{"seconds":30}}`, idemHeader("order-1"))
	if ended := r.accepted(t); ended.ID != first.ID || ended.Status != tasks.StatusCanceled || r.header.Get(headerReplayed) != "true" {
		t.Errorf("retry after cancel answered %s (%s %q)", r.body, headerReplayed, r.header.Get(headerReplayed))
	}
	if ts, err := store.List(context.Background(), "alice", tasks.ListOptions{}); err != nil || len(ts) != 1 {
		t.Errorf("alice has %d tasks, %v; want 1", len(ts), err)
	}
	if u := e.used(t, "alice")["create-task"]; u != 1 {
		t.Errorf("create-task used %d at the end, want 1", u)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

// Concurrent retries of one submit create one task, all answered with it,
// and charge once.
func TestSubmitIdempotencyKeyConcurrent(t *testing.T) {
	store := sqliteStore(t)
	e := newLimitedEnv(t, store, config.Default().Rules)
	k := e.key(t, "alice")
	const n = 20
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			r := e.doHeader(t, "POST", "/v1/tasks", k, sleep30, idemHeader("same"))
			if r.status == http.StatusAccepted {
				var task tasks.Task
				if json.Unmarshal(r.body, &task) == nil {
					ids[i] = task.ID
				}
			}
		})
	}
	wg.Wait()
	for i, id := range ids {
		if id == "" || id != ids[0] {
			t.Fatalf("retry %d got task %q, want %q like the first", i, id, ids[0])
		}
	}
	if ts, err := store.List(context.Background(), "alice", tasks.ListOptions{}); err != nil || len(ts) != 1 {
		t.Errorf("alice has %d tasks, %v; want 1", len(ts), err)
	}
	if u := e.used(t, "alice")["create-task"]; u != 1 {
		t.Errorf("create-task used %d, want 1", u)
	}
}

// A malformed key is a 400 that charges nothing, from the middleware when
// the rule reads keys and from the handler when it does not.
func TestSubmitIdempotencyKeyMalformed(t *testing.T) {
	off := config.Default().Rules
	off[0].IdempotencyKey = false
	for _, c := range []struct {
		name  string
		rules []config.Rule
		used  int64
	}{{"rule reads keys", config.Default().Rules, 0}, {"rule ignores keys", off, 1}} {
		t.Run(c.name, func(t *testing.T) {
			store := sqliteStore(t)
			e := newLimitedEnv(t, store, c.rules)
			k := e.key(t, "alice")
			for _, key := range []string{"", "has space", `bad\key`, strings.Repeat("k", 256)} {
				r := e.doHeader(t, "POST", "/v1/tasks", k, sleep30, idemHeader(key))
				if r.status != http.StatusBadRequest || !strings.Contains(string(r.body), "Idempotency-Key") {
					t.Fatalf("key %q: %d %s; want a 400 about the Idempotency-Key", key, r.status, r.body)
				}
			}
			r := e.doHeader(t, "POST", "/v1/tasks", k, sleep30, http.Header{"Idempotency-Key": {"a", "b"}})
			if r.status != http.StatusBadRequest {
				t.Fatalf("two keys: %d %s", r.status, r.body)
			}
			// Without the middleware's check the handler's 400 is a client
			// error like any other: charged, each time.
			if u := e.used(t, "alice")["create-task"]; u != 5*c.used {
				t.Errorf("create-task used %d after malformed keys, want %d", u, 5*c.used)
			}
			if ts, err := store.List(context.Background(), "alice", tasks.ListOptions{}); err != nil || len(ts) != 0 {
				t.Errorf("alice has %d tasks, %v; want none", len(ts), err)
			}
		})
	}
}

// A retry whose first attempt failed with a server error (refunded) is
// served afresh: charged, and it creates the task the failure did not.
func TestSubmitIdempotencyKeyAfterServerError(t *testing.T) {
	store := &faultyStore{Store: sqliteStore(t)}
	e := newLimitedEnv(t, store, config.Default().Rules)
	k := e.key(t, "alice")
	store.mode.Store(faultError)
	r := e.doHeader(t, "POST", "/v1/tasks", k, sleep30, idemHeader("retry-me"))
	store.mode.Store(faultNone)
	if r.status != http.StatusServiceUnavailable {
		t.Fatalf("failing submit: %d %s", r.status, r.body)
	}
	if u := e.used(t, "alice")["create-task"]; u != 0 {
		t.Fatalf("create-task used %d after a refunded 503, want 0", u)
	}
	r = e.doHeader(t, "POST", "/v1/tasks", k, sleep30, idemHeader("retry-me"))
	task := r.accepted(t)
	if r.header.Get(headerReplayed) != "" {
		t.Errorf("retry after a 503 is marked replayed")
	}
	if u := e.used(t, "alice")["create-task"]; u != 1 {
		t.Errorf("create-task used %d after the retry, want 1", u)
	}
	if got, err := store.Get(context.Background(), "alice", task.ID); err != nil || got.IdempotencyKey != "retry-me" {
		t.Errorf("stored task %+v, %v; want it with its key", got, err)
	}
}
