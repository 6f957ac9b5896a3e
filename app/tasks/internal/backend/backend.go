// Package backend holds what the task store backends (tasks/sqlitestore,
// tasks/pgstore) share: the checks of their arguments, the time precision
// they store, and reading their embedded migrations.
package backend

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/allowancehq/allowance/app/tasks"
)

// Time returns t in UTC truncated to microseconds, the precision both
// backends store, so a task reads back equal to what was written.
func Time(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// NewTask checks t for Store.Create and returns it as it is to be stored:
// queued at now, with an id, no run fields and Input "null" when empty.
// No check passes: the error names the field and what was expected.
func NewTask(t tasks.Task, now time.Time) (tasks.Task, error) {
	switch {
	case t.UserID == "":
		return tasks.Task{}, fmt.Errorf("create task: empty user id")
	case t.Kind == "":
		return tasks.Task{}, fmt.Errorf("create task: empty kind")
	case t.ID != "" && !tasks.ValidID(t.ID):
		return tasks.Task{}, fmt.Errorf("create task: id %q: expected \"t_\" and 26 base32 characters (tasks.NewID)", t.ID)
	}
	in, err := JSON(t.Input, "null")
	if err != nil {
		return tasks.Task{}, fmt.Errorf("create task: input: %w", err)
	}
	if t.ID == "" {
		t.ID = tasks.NewID()
	}
	receipt := t.Receipt
	if len(receipt) == 0 {
		receipt = nil
	} else {
		receipt = bytes.Clone(receipt)
	}
	return tasks.Task{
		ID:        t.ID,
		UserID:    t.UserID,
		Kind:      t.Kind,
		Input:     in,
		Status:    tasks.StatusQueued,
		CreatedAt: Time(now),
		Receipt:   receipt,

		IdempotencyKey: t.IdempotencyKey,
		RequestDigest:  t.RequestDigest,
	}, nil
}

// JSON checks that raw is valid JSON and returns it; empty raw gives
// empty (which may be "" for SQL NULL).
func JSON(raw json.RawMessage, empty string) (json.RawMessage, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		if empty == "" {
			return nil, nil
		}
		return json.RawMessage(empty), nil
	}
	if !json.Valid(raw) {
		return nil, fmt.Errorf("expected valid JSON, got %q", truncate(string(raw)))
	}
	return raw, nil
}

// CheckFinish checks the arguments of Store.Finish and returns the output
// to store (nil for none).
func CheckFinish(id, owner string, st tasks.Status, output json.RawMessage) (json.RawMessage, error) {
	if st != tasks.StatusSucceeded && st != tasks.StatusFailed {
		return nil, fmt.Errorf("finish task %s: status %q: expected succeeded or failed", id, st)
	}
	if owner == "" {
		return nil, fmt.Errorf("finish task %s: empty lease owner", id)
	}
	out, err := JSON(output, "")
	if err != nil {
		return nil, fmt.Errorf("finish task %s: output: %w", id, err)
	}
	return out, nil
}

// CheckLease checks the arguments of Claim and Heartbeat.
func CheckLease(what, owner string, lease time.Duration) error {
	if owner == "" {
		return fmt.Errorf("%s: empty lease owner", what)
	}
	if lease <= 0 {
		return fmt.Errorf("%s: lease %v: expected a positive duration", what, lease)
	}
	return nil
}

// CheckList checks ListOptions.
func CheckList(userID string, o tasks.ListOptions) error {
	if o.Status != "" && !o.Status.Valid() {
		_, err := tasks.ParseStatus(string(o.Status))
		return fmt.Errorf("list tasks of %s: %w", userID, err)
	}
	return nil
}

// CheckAPIKey checks the arguments of CreateAPIKey.
func CheckAPIKey(userID string, keyHash []byte) error {
	switch {
	case userID == "":
		return fmt.Errorf("create api key: empty user id")
	case len(keyHash) == 0:
		return fmt.Errorf("create api key for %s: empty key hash", userID)
	}
	return nil
}

// CheckRotate checks the arguments of RotateAPIKeys.
func CheckRotate(userID string, keyHash []byte, grace time.Duration) error {
	if err := CheckAPIKey(userID, keyHash); err != nil {
		return fmt.Errorf("rotate api keys: %w", err)
	}
	if grace < 0 {
		return fmt.Errorf("rotate api keys of %s: grace %v: expected 0 or more", userID, grace)
	}
	return nil
}

// CheckDeleteFinished checks the arguments of DeleteFinished.
func CheckDeleteFinished(limit int) error {
	if limit < 1 {
		return fmt.Errorf("delete finished tasks: limit %d: expected 1 or more", limit)
	}
	return nil
}

// ExpireKeys sets the expiry of each key that has none or a later one to
// end, as RotateAPIKeys does in the database.
func ExpireKeys(ks []tasks.APIKey, end time.Time) {
	for i := range ks {
		if ks[i].ExpiresAt == nil || ks[i].ExpiresAt.After(end) {
			e := end
			ks[i].ExpiresAt = &e
		}
	}
}

// SortKeys orders keys by user, creation and id, the order of
// ListAPIKeys.
func SortKeys(ks []tasks.APIKey) {
	slices.SortFunc(ks, func(a, b tasks.APIKey) int {
		if c := strings.Compare(a.UserID, b.UserID); c != 0 {
			return c
		}
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
}

// FinalStates is the SQL list of the final states, which DeleteFinished
// deletes; it matches the predicate of the index tasks_finished.
const FinalStates = `('succeeded', 'failed', 'canceled', 'stuck')`

// Migration is one schema step, read from a file named NNNN_name.sql.
type Migration struct {
	Version int
	Name    string // the file name
	SQL     string
}

// Migrations reads the *.sql files of dir in fsys, ordered by version.
func Migrations(fsys fs.FS, dir string) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("read migrations: %w", err)
	}
	var ms []Migration
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".sql") {
			continue
		}
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: expected a name like 0001_init.sql", e.Name())
		}
		b, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", e.Name(), err)
		}
		ms = append(ms, Migration{Version: v, Name: e.Name(), SQL: string(b)})
	}
	slices.SortFunc(ms, func(a, b Migration) int { return a.Version - b.Version })
	for i := 1; i < len(ms); i++ {
		if ms[i].Version == ms[i-1].Version {
			return nil, fmt.Errorf("migrations %s and %s have the same version", ms[i-1].Name, ms[i].Name)
		}
	}
	return ms, nil
}

// StuckError is the Error of a task the reaper marks stuck after attempts
// claims.
func StuckError(attempts int) string {
	return fmt.Sprintf("lease expired on attempt %d: its worker stopped renewing it", attempts)
}

func truncate(s string) string {
	const max = 40
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}
