package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/allowancehq/allowance/app/internal/pgtest"
)

// serverErrorConfig refunds conflicts and server errors, over sliding logs
// so that usage changes only by charges and refunds.
const serverErrorConfig = `
rules:
  - name: create-task
    match: POST /v1/tasks
    limits: 100/hour
    algorithm: sliding-log
    refund_on: [conflict, server_error]
  - name: read
    match: GET /v1/
    limits: 1000/hour
    algorithm: sliding-log
    refund_on: [server_error]
`

// usage returns how much of each rule user has used, from GET
// /v1/ratelimit (which charges the read rule once itself).
func (d *daemon) usage(key string) map[string]int {
	d.t.Helper()
	var body struct {
		Limits []struct {
			Rule string `json:"rule"`
			Used int    `json:"used"`
		} `json:"limits"`
	}
	r := d.do("GET", "/v1/ratelimit", key, "").want(d.t, http.StatusOK)
	if err := json.Unmarshal(r.body, &body); err != nil {
		d.t.Fatal(err)
	}
	out := map[string]int{}
	for _, l := range body.Limits {
		out[l.Rule] = l.Used
	}
	return out
}

// With the tasks table gone from under a running taskd, as when the task
// database fails, submits, reads and cancels answer 503 and cost nothing:
// the rules' refund_on server_error gives each charge back before the 503
// is written. Back in place, the table serves the same task.
func TestE2EDatabaseFailureIsRefunded(t *testing.T) {
	t.Parallel()
	db := pgtest.DB(t)
	cfg := filepath.Join(t.TempDir(), "taskd.yaml")
	if err := os.WriteFile(cfg, []byte(serverErrorConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	key := createKey(t, db, "alice")
	d := start(t, "-db", db, "-config", cfg, "-workers", "0")

	r := d.do("POST", "/v1/tasks", key, sleepLong).want(t, http.StatusAccepted)
	left := r.remaining(t)
	id, _ := r.decode(t)["id"].(string)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `ALTER TABLE tasks RENAME TO tasks_away`); err != nil {
		t.Fatal(err)
	}
	r = d.do("POST", "/v1/tasks", key, `{"kind":"echo","input":1}`).want(t, http.StatusServiceUnavailable)
	if got := r.remaining(t); got != left {
		t.Errorf("503 of a submit shows X-RateLimit-Remaining %d, want the unchanged %d", got, left)
	}
	d.do("GET", "/v1/tasks/"+id, key, "").want(t, http.StatusServiceUnavailable)
	d.do("GET", "/v1/tasks", key, "").want(t, http.StatusServiceUnavailable)
	d.do("POST", "/v1/tasks/"+id+"/cancel", key, "").want(t, http.StatusServiceUnavailable)
	if _, err := conn.Exec(ctx, `ALTER TABLE tasks_away RENAME TO tasks`); err != nil {
		t.Fatal(err)
	}

	// One submit charged; of the reads only the usage request itself.
	if u := d.usage(key); u["create-task"] != 1 || u["read"] != 1 {
		t.Errorf("after 1 submit and 4 server errors usage is %v, want create-task 1 and read 1", u)
	}
	if v := d.metric(`allowance_http_refunds_total{outcome="restored",rule="create-task"}`); v != 1 {
		t.Errorf("create-task refunds restored = %v, want 1", v)
	}
	if v := d.metric(`allowance_http_refunds_total{outcome="restored",rule="read"}`); v != 2 {
		t.Errorf("read refunds restored = %v, want 2", v)
	}
	if st := d.do("GET", "/v1/tasks/"+id, key, "").want(t, http.StatusOK).decode(t)["status"]; st != "queued" {
		t.Errorf("task %s is %v after the outage, want queued", id, st)
	}
	d.do("POST", "/v1/tasks/"+id+"/cancel", key, "").want(t, http.StatusOK)
}
