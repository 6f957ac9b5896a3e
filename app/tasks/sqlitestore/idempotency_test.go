package sqlitestore

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/allowancehq/allowance/app/tasks"
	"github.com/allowancehq/allowance/app/tasks/internal/backend"
)

// TestMigrationKeepsTasksWithoutKeys checks that a database made before
// idempotency keys existed upgrades: its tasks have no key, and keyed
// creates work beside them.
func TestMigrationKeepsTasksWithoutKeys(t *testing.T) {
	ctx := t.Context()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "tasks.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ms, err := backend.Migrations(migrationFS, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.w.ExecContext(ctx, `CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	for _, m := range ms[:3] {
		if _, err := s.w.ExecContext(ctx, m.SQL); err != nil {
			t.Fatalf("%s: %v", m.Name, err)
		}
		if _, err := s.w.ExecContext(ctx, `INSERT INTO schema_migrations VALUES (?, ?, 0)`, m.Version, m.Name); err != nil {
			t.Fatal(err)
		}
	}
	id := tasks.NewID()
	if _, err := s.w.ExecContext(ctx, `INSERT INTO tasks (id, user_id, kind, input, status, created_at) VALUES (?, 'alice', 'echo', '1', 'canceled', 0)`, id); err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	old, err := s.Get(ctx, "alice", id)
	if err != nil || old.IdempotencyKey != "" || old.RequestDigest != "" {
		t.Fatalf("Get of the old task = %+v, %v; want it with no key", old, err)
	}
	first, err := s.Create(ctx, tasks.Task{UserID: "alice", Kind: "echo", IdempotencyKey: "k", RequestDigest: "d"})
	if err != nil {
		t.Fatalf("keyed Create after migration: %v", err)
	}
	_, err = s.Create(ctx, tasks.Task{UserID: "alice", Kind: "echo", IdempotencyKey: "k", RequestDigest: "d"})
	var used *tasks.KeyUsedError
	if !errors.As(err, &used) || used.Task.ID != first.ID {
		t.Fatalf("keyed retry after migration: %v, want *KeyUsedError naming %s", err, first.ID)
	}
}
