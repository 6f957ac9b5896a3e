package sqlitestore

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/allowancehq/allowance/app/tasks"
	"github.com/allowancehq/allowance/app/tasks/internal/backend"
)

// TestMigrationGivesKeysIDs checks that keys stored before key ids existed
// get the id tasks.APIKeyID computes.
func TestMigrationGivesKeysIDs(t *testing.T) {
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
	for _, m := range ms[:2] {
		if _, err := s.w.ExecContext(ctx, m.SQL); err != nil {
			t.Fatalf("%s: %v", m.Name, err)
		}
		if _, err := s.w.ExecContext(ctx, `INSERT INTO schema_migrations VALUES (?, ?, 0)`, m.Version, m.Name); err != nil {
			t.Fatal(err)
		}
	}
	h := append(bytes.Repeat([]byte{0x0a}, 31), 0xff)
	if _, err := s.w.ExecContext(ctx, `INSERT INTO api_keys (key_hash, user_id, created_at) VALUES (?, 'alice', 0)`, h); err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	ks, err := s.ListAPIKeys(ctx, "")
	if err != nil || len(ks) != 1 || ks[0].ID != tasks.APIKeyID(h) {
		t.Fatalf("ListAPIKeys after migration = %+v, %v; want one key with id %s", ks, err, tasks.APIKeyID(h))
	}
	if k, err := s.RevokeAPIKey(ctx, tasks.APIKeyID(h)); err != nil || k.UserID != "alice" {
		t.Errorf("RevokeAPIKey by the migrated id = %+v, %v", k, err)
	}
}
