package main

import (
	"log/slog"
	"maps"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/allowancehq/allowance/app/tasks"
	"github.com/allowancehq/allowance/app/tasks/sqlitestore"
	"github.com/allowancehq/allowance/app/tasks/storetest"
)

// TestUpkeepCountsDeletions checks serve's retention wiring: a pass
// deletes what is older than the retention and counts it by status in
// taskd_tasks_deleted_total.
func TestUpkeepCountsDeletions(t *testing.T) {
	clock := storetest.NewClock(time.Now().Add(-48 * time.Hour))
	store, err := sqlitestore.Open(t.Context(), filepath.Join(t.TempDir(), "tasks.db"), sqlitestore.WithClock(clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if err := store.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, user := range []string{"alice", "bob"} {
		task, err := store.Create(t.Context(), tasks.Task{UserID: user, Kind: "echo"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := store.Cancel(t.Context(), user, task.ID); err != nil {
			t.Fatal(err)
		}
	}
	registry := prometheus.NewRegistry()
	u, err := newUpkeep(store, 24*time.Hour, registry, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if n, err := u.purger.Purge(t.Context()); n != 2 || err != nil {
		t.Fatalf("Purge = %d, %v; want the 2 tasks of two days ago", n, err)
	}
	mfs, err := registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "taskd_tasks_deleted_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			got[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	if want := map[string]float64{"canceled": 2, "failed": 0, "stuck": 0, "succeeded": 0}; !maps.Equal(got, want) {
		t.Errorf("taskd_tasks_deleted_total = %v, want %v", got, want)
	}

	off, err := newUpkeep(store, 0, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	if err != nil || off.purger != nil {
		t.Errorf("retention off: purger %v, %v; want none", off.purger, err)
	}
}
