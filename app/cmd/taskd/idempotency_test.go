package main

import (
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/allowancehq/allowance/app/internal/pgtest"
	"github.com/allowancehq/allowance/internal/redistest"
)

// doKey is d.do with the Idempotency-Key header idemKey.
func (d *daemon) doKey(method, path, key, idemKey, body string) reply {
	d.t.Helper()
	req, err := http.NewRequest(method, d.base+path, strings.NewReader(body))
	if err != nil {
		d.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", idemKey)
	res, err := client.Do(req)
	if err != nil {
		d.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		d.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return reply{res.StatusCode, res.Header, b}
}

// idempotencyScenario is the story of retried submits, told by the real
// server on the task database db: a retry gets the same task and is
// charged once; a malformed key is a 400 that charges nothing; the key
// with another request is a 422; another user's key is theirs; concurrent
// retries make one task. With replicas > 1 (limitArgs must then share the
// limits store), that many processes serve: the retry goes to another one,
// and the concurrent retries are spread over all.
func idempotencyScenario(t *testing.T, db string, replicas int, limitArgs ...string) {
	alice, bob := createKey(t, db, "alice"), createKey(t, db, "bob")
	cfg := writeConfig(t)
	ds := make([]*daemon, replicas)
	for i := range ds {
		ds[i] = start(t, append([]string{"-db", db, "-config", cfg, "-workers", "0"}, limitArgs...)...)
	}
	d, other := ds[0], ds[replicas-1]

	first := d.doKey("POST", "/v1/tasks", alice, "order-1", sleepLong).want(t, http.StatusAccepted)
	id, _ := first.decode(t)["id"].(string)
	r := other.doKey("POST", "/v1/tasks", alice, `"order-1"`, `{"input": {"seconds": 60}, "kind": "sleep"}`).want(t, http.StatusAccepted)
	if string(r.body) != string(first.body) || r.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("retry answered %s (Idempotent-Replayed %q), want the first answer %s", r.body, r.header.Get("Idempotent-Replayed"), first.body)
	}
	if used := d.createUsed(alice); used != 1 {
		t.Fatalf("create-task used %d after a submit and its retry, want 1", used)
	}

	d.doKey("POST", "/v1/tasks", alice, "bad key", sleepLong).want(t, http.StatusBadRequest)
	if used := d.createUsed(alice); used != 1 {
		t.Fatalf("create-task used %d after a malformed key, want 1: it charges nothing", used)
	}

	r = d.doKey("POST", "/v1/tasks", alice, "order-1", `{"kind":"echo","input":"other"}`).want(t, http.StatusUnprocessableEntity)
	if got, _ := r.decode(t)["task_id"].(string); got != id {
		t.Fatalf("422 names task %q, want %s: %s", got, id, r.body)
	}

	r = d.doKey("POST", "/v1/tasks", bob, "order-1", sleepLong).want(t, http.StatusAccepted)
	if got, _ := r.decode(t)["id"].(string); got == id || r.header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("bob's submit with alice's key answered %s (replayed %q); want a task of his own", r.body, r.header.Get("Idempotent-Replayed"))
	}

	// Concurrent retries of a new submit: one task, one charge.
	d.do("POST", "/v1/tasks/"+id+"/cancel", alice, "").want(t, http.StatusOK)
	const n = 20
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		ids   = map[string]int{}
		ready = make(chan struct{})
	)
	for i := range n {
		d := ds[i%replicas]
		wg.Go(func() {
			<-ready
			r := d.doKey("POST", "/v1/tasks", alice, "order-2", sleepLong)
			var task struct{ ID string }
			_ = json.Unmarshal(r.body, &task)
			mu.Lock()
			defer mu.Unlock()
			if r.status == http.StatusAccepted {
				ids[task.ID]++
			} else {
				ids["status "+http.StatusText(r.status)]++
			}
		})
	}
	close(ready)
	wg.Wait()
	if len(ids) != 1 {
		t.Fatalf("%d concurrent retries answered %v; want one task for all", n, ids)
	}
	if used := d.createUsed(alice); used != 2 {
		t.Fatalf("create-task used %d after the concurrent retries, want 2", used)
	}
	var list struct{ Tasks []struct{ ID string } }
	if err := json.Unmarshal(d.do("GET", "/v1/tasks", alice, "").want(t, http.StatusOK).body, &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Tasks) != 2 {
		t.Fatalf("alice has %d tasks, want 2", len(list.Tasks))
	}
}

func TestE2EIdempotencySQLite(t *testing.T) {
	t.Parallel()
	idempotencyScenario(t, "sqlite:"+filepath.Join(t.TempDir(), "taskd.db"), 1)
}

func TestE2EIdempotencyPostgres(t *testing.T) {
	t.Parallel()
	idempotencyScenario(t, pgtest.DB(t), 1)
}

// Two replicas sharing PostgreSQL for tasks and Redis for limits: a retry
// on the other replica, and concurrent retries over both, still make one
// task and one charge.
func TestE2EIdempotencyReplicas(t *testing.T) {
	t.Parallel()
	idempotencyScenario(t, pgtest.DB(t), 2, "-redis", "redis://"+redistest.Server(t)+"/0")
}
