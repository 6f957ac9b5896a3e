package backend

import (
	"encoding/json"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/allowancehq/allowance/app/tasks"
)

func TestMigrations(t *testing.T) {
	fsys := fstest.MapFS{
		"m/0002_more.sql": {Data: []byte("B")},
		"m/0001_init.sql": {Data: []byte("A")},
		"m/README.md":     {Data: []byte("not a migration")},
	}
	ms, err := Migrations(fsys, "m")
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 || ms[0].Version != 1 || ms[0].SQL != "A" || ms[1].Version != 2 || ms[1].Name != "0002_more.sql" {
		t.Errorf("Migrations = %+v", ms)
	}
	for name, bad := range map[string]fstest.MapFS{
		"no number":    {"m/init.sql": {}},
		"zero":         {"m/0000_x.sql": {}},
		"same version": {"m/0001_a.sql": {}, "m/1_b.sql": {}},
	} {
		if _, err := Migrations(bad, "m"); err == nil {
			t.Errorf("Migrations with %s: no error", name)
		}
	}
	if _, err := Migrations(fsys, "missing"); err == nil {
		t.Error("Migrations of a missing directory: no error")
	}
}

func TestNewTask(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 6789, time.FixedZone("X", 3600))
	receipt := []byte{1, 2}
	got, err := NewTask(tasks.Task{UserID: "u", Kind: "echo", Receipt: receipt, Status: tasks.StatusFailed, Attempts: 3}, now)
	if err != nil {
		t.Fatal(err)
	}
	if !tasks.ValidID(got.ID) || got.Status != tasks.StatusQueued || got.Attempts != 0 || string(got.Input) != "null" ||
		!got.CreatedAt.Equal(now.Truncate(time.Microsecond)) || got.CreatedAt.Location() != time.UTC {
		t.Errorf("NewTask = %+v", got)
	}
	receipt[0] = 9
	if got.Receipt[0] != 1 {
		t.Error("NewTask kept the caller's receipt slice")
	}
	if got, _ := NewTask(tasks.Task{UserID: "u", Kind: "echo", Receipt: []byte{}}, now); got.Receipt != nil {
		t.Errorf("empty receipt = %#v, want nil", got.Receipt)
	}
	for _, bad := range []tasks.Task{
		{Kind: "echo"}, {UserID: "u"}, {UserID: "u", Kind: "echo", ID: "x"},
		{UserID: "u", Kind: "echo", Input: json.RawMessage("{")},
	} {
		if _, err := NewTask(bad, now); err == nil {
			t.Errorf("NewTask(%+v): no error", bad)
		}
	}
}

func TestCheckFinish(t *testing.T) {
	if out, err := CheckFinish("t", "w", tasks.StatusSucceeded, json.RawMessage(" ")); err != nil || out != nil {
		t.Errorf("blank output = %q, %v; want nil, nil", out, err)
	}
	_, err := CheckFinish("t", "w", tasks.StatusStuck, nil)
	if err == nil || !strings.Contains(err.Error(), "expected succeeded or failed") {
		t.Errorf("stuck status: %v", err)
	}
}
