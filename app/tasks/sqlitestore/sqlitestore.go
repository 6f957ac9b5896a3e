// Package sqlitestore keeps tasks and API keys in SQLite through the pure-Go
// driver modernc.org/sqlite (no cgo). It is taskd's embedded default.
//
// The database runs in WAL mode with a busy timeout, so readers never block
// the writer and other processes (say `taskd keys create` beside a running
// server) wait for the write lock instead of failing. All writes of a Store
// go through one connection and start with BEGIN IMMEDIATE, so claims and
// creates are serialized and race-free; reads use a small pool of their own.
//
// Times are stored as Unix microseconds (UTC), JSON as TEXT, receipts as
// BLOB. The schema comes from embedded migrations recorded in the table
// schema_migrations; see Store.Migrate.
//
// The path ":memory:" opens a private in-memory database on a single
// connection (reads and writes share it): for tests and trials only; it is
// gone when the Store is closed, and other processes cannot see it.
package sqlitestore

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/allowancehq/allowance/app/tasks"
	"github.com/allowancehq/allowance/app/tasks/internal/backend"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// busyTimeout is how long a statement waits for another connection's or
// process's write lock before it fails with SQLITE_BUSY.
const busyTimeout = 10 * time.Second

// readConns is the size of the read pool of a file database.
const readConns = 4

// Store is a tasks.Store in SQLite. It is safe for concurrent use.
type Store struct {
	w   *sql.DB // one connection: every write
	r   *sql.DB // reads; w itself for ":memory:"
	now func() time.Time
	// skipConflictRead makes Create go straight to the insert, so tests
	// can reach the conflict that the insert decides.
	skipConflictRead bool

	// stmts holds the prepared statements of the reads on every request's
	// path (see readRow): compiling a statement costs about as much as
	// running it.
	stmtMu sync.Mutex
	stmts  map[string]*sql.Stmt
}

var _ tasks.Store = (*Store)(nil)

// Option configures a Store.
type Option func(*Store)

// WithClock makes the store read the time from now instead of time.Now
// (tests use it to expire leases without waiting).
func WithClock(now func() time.Time) Option {
	return func(s *Store) {
		if now != nil {
			s.now = now
		}
	}
}

// Open opens (creating it if needed) the SQLite database at path, or a
// private in-memory database for ":memory:", and checks that it answers.
// It does not migrate: call Migrate. A path must not contain '?'.
func Open(ctx context.Context, path string, opts ...Option) (*Store, error) {
	if path == "" {
		return nil, errors.New("open sqlite task store: empty path")
	}
	if strings.ContainsRune(path, '?') {
		return nil, fmt.Errorf("open sqlite task store %q: a path must not contain '?'", path)
	}
	s := &Store{now: time.Now, stmts: make(map[string]*sql.Stmt)}
	for _, o := range opts {
		o(s)
	}
	pragmas := fmt.Sprintf("_pragma=busy_timeout(%d)&_pragma=foreign_keys(1)&_txlock=immediate", busyTimeout.Milliseconds())
	if path == ":memory:" {
		db, err := sql.Open("sqlite", path+"?"+pragmas)
		if err != nil {
			return nil, fmt.Errorf("open sqlite task store %s: %w", path, err)
		}
		db.SetMaxOpenConns(1)
		db.SetConnMaxIdleTime(0)
		db.SetConnMaxLifetime(0)
		s.w, s.r = db, db
	} else {
		pragmas += "&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)"
		w, err := sql.Open("sqlite", path+"?"+pragmas)
		if err != nil {
			return nil, fmt.Errorf("open sqlite task store %s: %w", path, err)
		}
		w.SetMaxOpenConns(1)
		r, err := sql.Open("sqlite", path+"?"+pragmas+"&_pragma=query_only(1)")
		if err != nil {
			w.Close()
			return nil, fmt.Errorf("open sqlite task store %s: %w", path, err)
		}
		r.SetMaxOpenConns(readConns)
		s.w, s.r = w, r
	}
	// The writer first: it sets WAL mode, which the readers then find.
	if err := s.w.PingContext(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("open sqlite task store %s: %w", path, err)
	}
	if err := s.r.PingContext(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("open sqlite task store %s: %w", path, err)
	}
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error {
	s.stmtMu.Lock()
	for q, st := range s.stmts {
		_ = st.Close()
		delete(s.stmts, q)
	}
	s.stmtMu.Unlock()
	err := s.w.Close()
	if s.r != s.w {
		err = errors.Join(err, s.r.Close())
	}
	if err != nil {
		return fmt.Errorf("close sqlite task store: %w", err)
	}
	return nil
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.r.PingContext(ctx); err != nil {
		return fmt.Errorf("ping sqlite task store: %w", err)
	}
	return nil
}

// Migrate applies the embedded migrations that schema_migrations does not
// list yet, each in the same IMMEDIATE transaction as its record, so two
// processes migrating at once apply each step once. It fails when the
// database has a migration this program does not know (a newer program
// migrated it).
func (s *Store) Migrate(ctx context.Context) error {
	ms, err := backend.Migrations(migrationFS, "migrations")
	if err != nil {
		return err
	}
	return s.write(ctx, "migrate", func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    INTEGER PRIMARY KEY,
			name       TEXT    NOT NULL,
			applied_at INTEGER NOT NULL)`); err != nil {
			return fmt.Errorf("create schema_migrations: %w", err)
		}
		applied, err := appliedVersions(ctx, tx)
		if err != nil {
			return err
		}
		if n := len(ms); len(applied) > 0 && (n == 0 || applied[len(applied)-1] > ms[n-1].Version) {
			return fmt.Errorf("database schema version %d is newer than this program knows; upgrade the program", applied[len(applied)-1])
		}
		for _, m := range ms {
			if _, ok := slices.BinarySearch(applied, m.Version); ok {
				continue
			}
			if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
				return fmt.Errorf("apply %s: %w", m.Name, err)
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
				m.Version, m.Name, micros(s.now())); err != nil {
				return fmt.Errorf("record %s: %w", m.Name, err)
			}
		}
		return nil
	})
}

func appliedVersions(ctx context.Context, tx *sql.Tx) ([]int, error) {
	rows, err := tx.QueryContext(ctx, `SELECT version FROM schema_migrations ORDER BY version`)
	if err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}
	defer rows.Close()
	var vs []int
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("read schema_migrations: %w", err)
		}
		vs = append(vs, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}
	return vs, nil
}

// columns of a task, in the order scanTask reads them.
const columns = `id, user_id, kind, input, status, output, error, created_at, started_at, finished_at,
	attempts, lease_owner, lease_expires, receipt, refund_outcome,
	refund_reason, refund_state, refund_attempts, refund_due, refund_error,
	idempotency_key, request_digest`

// Create stores a new queued task; see tasks.Store.
func (s *Store) Create(ctx context.Context, t tasks.Task) (tasks.Task, error) {
	t, err := backend.NewTask(t, s.now())
	if err != nil {
		return tasks.Task{}, err
	}
	// A retry of a submit with an idempotency key, and the common
	// conflict (a user resubmitting while a task runs), are answered from
	// reads, without taking the write lock; the write below decides the
	// races.
	if t.IdempotencyKey != "" && !s.skipConflictRead {
		prev, err := scanTask(s.readRow(ctx, `SELECT `+columns+` FROM tasks WHERE user_id = ? AND idempotency_key = ?`, t.UserID, t.IdempotencyKey))
		switch {
		case err == nil:
			return tasks.Task{}, fmt.Errorf("create task for %s: %w", t.UserID, &tasks.KeyUsedError{Task: prev})
		case !errors.Is(err, tasks.ErrNotFound):
			return tasks.Task{}, fmt.Errorf("create task for %s: find the task of idempotency key %q: %w", t.UserID, t.IdempotencyKey, err)
		}
	}
	var active string
	err = sql.ErrNoRows
	if !s.skipConflictRead {
		err = s.readRow(ctx, `SELECT id FROM tasks WHERE user_id = ? AND status IN ('queued', 'running')`, t.UserID).Scan(&active)
	}
	switch {
	case err == nil && t.IdempotencyKey == "":
		return tasks.Task{}, fmt.Errorf("create task for %s: %w", t.UserID, &tasks.ActiveTaskError{ActiveID: active})
	case err == nil:
		// The active task may be a concurrent retry's, made after the key
		// was looked up: the write below tells.
	case !errors.Is(err, sql.ErrNoRows):
		return tasks.Task{}, fmt.Errorf("create task for %s: find an active task: %w", t.UserID, err)
	}
	err = s.write(ctx, "create task for "+t.UserID, func(tx *sql.Tx) error {
		// Writes are serialized, so this read decides which of concurrent
		// retries with one key creates the task.
		if t.IdempotencyKey != "" {
			prev, err := scanTask(tx.QueryRowContext(ctx, `SELECT `+columns+` FROM tasks WHERE user_id = ? AND idempotency_key = ?`, t.UserID, t.IdempotencyKey))
			switch {
			case err == nil:
				return &tasks.KeyUsedError{Task: prev}
			case !errors.Is(err, tasks.ErrNotFound):
				return fmt.Errorf("find the task of idempotency key %q: %w", t.IdempotencyKey, err)
			}
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO tasks (id, user_id, kind, input, status, created_at, receipt, idempotency_key, request_digest)
			VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?)
			ON CONFLICT (user_id) WHERE status IN ('queued', 'running') DO NOTHING`,
			t.ID, t.UserID, t.Kind, string(t.Input), micros(t.CreatedAt), blob(t.Receipt), optString(t.IdempotencyKey), t.RequestDigest)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 1 {
			return err
		}
		err = tx.QueryRowContext(ctx, `SELECT id FROM tasks WHERE user_id = ? AND status IN ('queued', 'running')`, t.UserID).Scan(&active)
		if err != nil {
			return fmt.Errorf("find the active task: %w", err)
		}
		return &tasks.ActiveTaskError{ActiveID: active}
	})
	if err != nil {
		return tasks.Task{}, err
	}
	return t, nil
}

// Get returns the user's task; see tasks.Store.
func (s *Store) Get(ctx context.Context, userID, id string) (tasks.Task, error) {
	t, err := scanTask(s.readRow(ctx, `SELECT `+columns+` FROM tasks WHERE id = ? AND user_id = ?`, id, userID))
	if err != nil {
		return tasks.Task{}, fmt.Errorf("get task %s: %w", id, err)
	}
	return t, nil
}

// List returns a page of the user's tasks, newest first; see tasks.Store.
func (s *Store) List(ctx context.Context, userID string, o tasks.ListOptions) ([]tasks.Task, error) {
	if err := backend.CheckList(userID, o); err != nil {
		return nil, err
	}
	q := `SELECT ` + columns + ` FROM tasks WHERE user_id = ?`
	args := []any{userID}
	if o.Status != "" {
		q += ` AND status = ?`
		args = append(args, string(o.Status))
	}
	if o.Before != "" {
		var seq int64
		err := s.r.QueryRowContext(ctx, `SELECT seq FROM tasks WHERE id = ? AND user_id = ?`, o.Before, userID).Scan(&seq)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("list tasks of %s: cursor %q: %w", userID, o.Before, tasks.ErrNotFound)
		}
		if err != nil {
			return nil, fmt.Errorf("list tasks of %s: cursor %q: %w", userID, o.Before, err)
		}
		q += ` AND seq < ?`
		args = append(args, seq)
	}
	q += ` ORDER BY seq DESC LIMIT ?`
	args = append(args, o.PageLimit())
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list tasks of %s: %w", userID, err)
	}
	ts, err := scanTasks(rows)
	if err != nil {
		return nil, fmt.Errorf("list tasks of %s: %w", userID, err)
	}
	return ts, nil
}

// Cancel cancels the user's active task; see tasks.Store.
func (s *Store) Cancel(ctx context.Context, userID, id string) (tasks.Task, error) {
	var t tasks.Task
	err := s.write(ctx, "cancel task "+id, func(tx *sql.Tx) error {
		var err error
		t, err = scanTask(tx.QueryRowContext(ctx, `UPDATE tasks
			SET status = 'canceled', finished_at = ?, lease_owner = NULL, lease_expires = NULL
			WHERE id = ? AND user_id = ? AND status IN ('queued', 'running')
			RETURNING `+columns, micros(s.now()), id, userID))
		if !errors.Is(err, tasks.ErrNotFound) {
			return err
		}
		t, err = scanTask(tx.QueryRowContext(ctx, `SELECT `+columns+` FROM tasks WHERE id = ? AND user_id = ?`, id, userID))
		if err != nil {
			return err
		}
		return fmt.Errorf("task is %s: %w", t.Status, tasks.ErrNotActive)
	})
	return t, err
}

// Claim moves the oldest queued task to running under owner's lease; see
// tasks.Store.
func (s *Store) Claim(ctx context.Context, owner string, lease time.Duration) (tasks.Task, bool, error) {
	if err := backend.CheckLease("claim task", owner, lease); err != nil {
		return tasks.Task{}, false, err
	}
	now := backend.Time(s.now())
	var t tasks.Task
	err := s.write(ctx, "claim task", func(tx *sql.Tx) error {
		var err error
		t, err = scanTask(tx.QueryRowContext(ctx, `UPDATE tasks
			SET status = 'running', attempts = attempts + 1, started_at = COALESCE(started_at, ?),
				lease_owner = ?, lease_expires = ?
			WHERE seq = (SELECT seq FROM tasks WHERE status = 'queued' ORDER BY seq LIMIT 1)
			RETURNING `+columns, micros(now), owner, micros(now.Add(lease))))
		return err
	})
	if errors.Is(err, tasks.ErrNotFound) {
		return tasks.Task{}, false, nil
	}
	if err != nil {
		return tasks.Task{}, false, err
	}
	return t, true, nil
}

// Heartbeat renews owner's lease; see tasks.Store.
func (s *Store) Heartbeat(ctx context.Context, id, owner string, lease time.Duration) error {
	if err := backend.CheckLease("heartbeat task "+id, owner, lease); err != nil {
		return err
	}
	return s.write(ctx, "heartbeat task "+id, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE tasks SET lease_expires = ?
			WHERE id = ? AND lease_owner = ? AND status = 'running'`, micros(s.now().Add(lease)), id, owner)
		return leaseResult(res, err)
	})
}

// Finish ends owner's running task; see tasks.Store.
func (s *Store) Finish(ctx context.Context, id, owner string, st tasks.Status, output json.RawMessage, errMsg string) (tasks.Task, error) {
	out, err := backend.CheckFinish(id, owner, st, output)
	if err != nil {
		return tasks.Task{}, err
	}
	var t tasks.Task
	err = s.write(ctx, "finish task "+id, func(tx *sql.Tx) error {
		var err error
		now := micros(s.now())
		t, err = scanTask(tx.QueryRowContext(ctx, `UPDATE tasks
			SET status = ?, output = ?, error = ?, finished_at = ?, lease_owner = NULL, lease_expires = NULL,
				`+queueRefund+`
			WHERE id = ? AND lease_owner = ? AND status = 'running'
			RETURNING `+columns, slices.Concat([]any{string(st), text(out), errMsg, now},
			refundArgs(st == tasks.StatusFailed, tasks.RefundWorkerFailure, now), []any{id, owner})...))
		if !errors.Is(err, tasks.ErrNotFound) {
			return err
		}
		var one int
		if err := tx.QueryRowContext(ctx, `SELECT 1 FROM tasks WHERE id = ?`, id).Scan(&one); errors.Is(err, sql.ErrNoRows) {
			return tasks.ErrNotFound
		} else if err != nil {
			return err
		}
		return tasks.ErrLeaseLost
	})
	return t, err
}

// Release hands owner's running task back to the queue; see tasks.Store.
func (s *Store) Release(ctx context.Context, id, owner string) error {
	return s.write(ctx, "release task "+id, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE tasks
			SET status = 'queued', lease_owner = NULL, lease_expires = NULL, attempts = MAX(attempts - 1, 0)
			WHERE id = ? AND lease_owner = ? AND status = 'running'`, id, owner)
		return leaseResult(res, err)
	})
}

// Reap ends expired leases; see tasks.Store.
func (s *Store) Reap(ctx context.Context, maxAttempts int) ([]tasks.Task, error) {
	maxAttempts = max(maxAttempts, 1)
	now := micros(s.now())
	var reaped []tasks.Task
	err := s.write(ctx, "reap expired leases", func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT id, attempts FROM tasks
			WHERE status = 'running' AND lease_expires < ? ORDER BY seq`, now)
		if err != nil {
			return err
		}
		type expired struct {
			id       string
			attempts int
		}
		var es []expired
		for rows.Next() {
			var e expired
			if err := rows.Scan(&e.id, &e.attempts); err != nil {
				rows.Close()
				return err
			}
			es = append(es, e)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, e := range es {
			var t tasks.Task
			if e.attempts >= maxAttempts {
				t, err = scanTask(tx.QueryRowContext(ctx, `UPDATE tasks
					SET status = 'stuck', error = ?, finished_at = ?, lease_owner = NULL, lease_expires = NULL,
						`+queueRefund+`
					WHERE id = ? RETURNING `+columns, slices.Concat([]any{backend.StuckError(e.attempts), now},
					refundArgs(true, tasks.RefundStuck, now), []any{e.id})...))
			} else {
				t, err = scanTask(tx.QueryRowContext(ctx, `UPDATE tasks
					SET status = 'queued', lease_owner = NULL, lease_expires = NULL
					WHERE id = ? RETURNING `+columns, e.id))
			}
			if err != nil {
				return fmt.Errorf("task %s: %w", e.id, err)
			}
			reaped = append(reaped, t)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return reaped, nil
}

// SetRefundOutcome records a refund's outcome; see tasks.Store.
func (s *Store) SetRefundOutcome(ctx context.Context, id, outcome string) error {
	return s.write(ctx, "set refund outcome of task "+id, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE tasks SET refund_outcome = ?, refund_state = 'done', refund_due = NULL
			WHERE id = ?`, outcome, id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return tasks.ErrNotFound
		}
		return nil
	})
}

// queueRefund is the SET clause that queues a refund when the task has a
// receipt; its arguments come from refundArgs.
const queueRefund = `refund_state = CASE WHEN ? AND receipt IS NOT NULL THEN 'pending' ELSE refund_state END,
	refund_reason = CASE WHEN ? AND receipt IS NOT NULL THEN ? ELSE refund_reason END,
	refund_due = CASE WHEN ? AND receipt IS NOT NULL THEN ? ELSE refund_due END`

// refundArgs are the arguments of queueRefund: queue a refund for reason,
// due at due (Unix microseconds), if queue is true.
func refundArgs(queue bool, reason string, due int64) []any {
	return []any{queue, queue, reason, queue, due}
}

// ClaimRefund takes the pending refund due first; see tasks.Store.
func (s *Store) ClaimRefund(ctx context.Context, lease time.Duration) (tasks.Task, bool, error) {
	if err := backend.CheckLease("claim refund", "refunder", lease); err != nil {
		return tasks.Task{}, false, err
	}
	now := s.now()
	var t tasks.Task
	err := s.write(ctx, "claim refund", func(tx *sql.Tx) error {
		var err error
		t, err = scanTask(tx.QueryRowContext(ctx, `UPDATE tasks
			SET refund_attempts = refund_attempts + 1, refund_due = ?
			WHERE seq = (SELECT seq FROM tasks WHERE refund_state = 'pending' AND refund_due <= ? ORDER BY refund_due, seq LIMIT 1)
			RETURNING `+columns, micros(now.Add(lease)), micros(now)))
		return err
	})
	if errors.Is(err, tasks.ErrNotFound) {
		return tasks.Task{}, false, nil
	}
	if err != nil {
		return tasks.Task{}, false, err
	}
	return t, true, nil
}

// FinishRefund marks a pending refund done; see tasks.Store.
func (s *Store) FinishRefund(ctx context.Context, id, outcome string) error {
	return s.endRefund(ctx, "finish refund of task "+id, `refund_state = 'done', refund_outcome = ?, refund_due = NULL`, outcome, id)
}

// RetryRefund schedules a pending refund again; see tasks.Store.
func (s *Store) RetryRefund(ctx context.Context, id string, after time.Duration, errMsg string) error {
	return s.endRefund(ctx, "retry refund of task "+id, `refund_due = ?, refund_error = ?`, micros(s.now().Add(after)), errMsg, id)
}

// AbandonRefund gives a pending refund up; see tasks.Store.
func (s *Store) AbandonRefund(ctx context.Context, id, errMsg string) error {
	return s.endRefund(ctx, "abandon refund of task "+id, `refund_state = 'abandoned', refund_error = ?, refund_due = NULL`, errMsg, id)
}

// endRefund applies set to task id (the last argument) if its refund is
// pending.
func (s *Store) endRefund(ctx context.Context, what, set string, args ...any) error {
	return s.write(ctx, what, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE tasks SET `+set+` WHERE id = ? AND refund_state = 'pending'`, args...)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return tasks.ErrNoPendingRefund
		}
		return nil
	})
}

// CountRefunds counts tasks by refund state; see tasks.Store.
func (s *Store) CountRefunds(ctx context.Context) (tasks.RefundCounts, error) {
	var c tasks.RefundCounts
	err := s.r.QueryRowContext(ctx, `SELECT
			COALESCE(SUM(refund_state = 'pending'), 0),
			COALESCE(SUM(refund_state = 'done'), 0),
			COALESCE(SUM(refund_state = 'abandoned'), 0)
		FROM tasks WHERE refund_state <> ''`).Scan(&c.Pending, &c.Done, &c.Abandoned)
	if err != nil {
		return tasks.RefundCounts{}, fmt.Errorf("count refunds: %w", err)
	}
	return c, nil
}

// DeleteFinished deletes old finished tasks; see tasks.Store.
func (s *Store) DeleteFinished(ctx context.Context, before time.Time, limit int) (map[tasks.Status]int, error) {
	if err := backend.CheckDeleteFinished(limit); err != nil {
		return nil, err
	}
	deleted := make(map[tasks.Status]int)
	err := s.write(ctx, "delete finished tasks", func(tx *sql.Tx) error {
		clear(deleted)
		rows, err := tx.QueryContext(ctx, `DELETE FROM tasks WHERE seq IN (
				SELECT seq FROM tasks
				WHERE status IN `+backend.FinalStates+` AND finished_at < ? AND refund_state <> 'pending'
				ORDER BY finished_at LIMIT ?)
			RETURNING status`, micros(before), limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var st string
			if err := rows.Scan(&st); err != nil {
				return err
			}
			deleted[tasks.Status(st)]++
		}
		return rows.Err()
	})
	if err != nil {
		return nil, err
	}
	return deleted, nil
}

// keyColumns of an API key, in the order scanKey reads them.
const keyColumns = `key_id, user_id, created_at, last_used_at, expires_at`

// CreateAPIKey stores a key hash for userID; see tasks.Store.
func (s *Store) CreateAPIKey(ctx context.Context, userID string, keyHash []byte) error {
	if err := backend.CheckAPIKey(userID, keyHash); err != nil {
		return err
	}
	return s.write(ctx, "create api key for "+userID, func(tx *sql.Tx) error {
		return insertKey(ctx, tx, userID, keyHash, micros(s.now()))
	})
}

func insertKey(ctx context.Context, tx *sql.Tx, userID string, keyHash []byte, now int64) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO api_keys (key_hash, key_id, user_id, created_at) VALUES (?, ?, ?, ?)`,
		keyHash, tasks.APIKeyID(keyHash), userID, now)
	if isUniqueViolation(err) {
		return errors.New("an api key with this hash or id exists")
	}
	return err
}

// UserByAPIKey returns the user of an unexpired key hash; see tasks.Store.
func (s *Store) UserByAPIKey(ctx context.Context, keyHash []byte) (string, error) {
	var user string
	err := s.readRow(ctx, `SELECT user_id FROM api_keys WHERE key_hash = ? AND (expires_at IS NULL OR expires_at > ?)`,
		keyHash, micros(s.now())).Scan(&user)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("api key: %w", tasks.ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("api key: %w", err)
	}
	return user, nil
}

// ListAPIKeys lists API keys; see tasks.Store.
func (s *Store) ListAPIKeys(ctx context.Context, userID string) ([]tasks.APIKey, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+keyColumns+` FROM api_keys
		WHERE ? = '' OR user_id = ? ORDER BY user_id, created_at, key_id`, userID, userID)
	if err != nil {
		return nil, fmt.Errorf("list api keys: %w", err)
	}
	ks, err := scanKeys(rows)
	if err != nil {
		return nil, fmt.Errorf("list api keys: %w", err)
	}
	return ks, nil
}

// RevokeAPIKey deletes a key by id; see tasks.Store.
func (s *Store) RevokeAPIKey(ctx context.Context, id string) (tasks.APIKey, error) {
	var k tasks.APIKey
	err := s.write(ctx, "revoke api key "+id, func(tx *sql.Tx) error {
		var err error
		k, err = scanKey(tx.QueryRowContext(ctx, `DELETE FROM api_keys WHERE key_id = ? RETURNING `+keyColumns, id))
		return err
	})
	return k, err
}

// RevokeUserAPIKeys deletes a user's keys; see tasks.Store.
func (s *Store) RevokeUserAPIKeys(ctx context.Context, userID string) ([]tasks.APIKey, error) {
	var ks []tasks.APIKey
	err := s.write(ctx, "revoke api keys of "+userID, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `DELETE FROM api_keys WHERE user_id = ? RETURNING `+keyColumns, userID)
		if err != nil {
			return err
		}
		ks, err = scanKeys(rows)
		return err
	})
	if err != nil {
		return nil, err
	}
	backend.SortKeys(ks)
	return ks, nil
}

// RotateAPIKeys adds a key and sets the others to expire; see tasks.Store.
func (s *Store) RotateAPIKeys(ctx context.Context, userID string, keyHash []byte, grace time.Duration) (tasks.APIKey, []tasks.APIKey, error) {
	if err := backend.CheckRotate(userID, keyHash, grace); err != nil {
		return tasks.APIKey{}, nil, err
	}
	now := backend.Time(s.now())
	var old []tasks.APIKey
	err := s.write(ctx, "rotate api keys of "+userID, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT `+keyColumns+` FROM api_keys
			WHERE user_id = ? AND (expires_at IS NULL OR expires_at > ?) ORDER BY created_at, key_id`, userID, micros(now))
		if err != nil {
			return err
		}
		if old, err = scanKeys(rows); err != nil {
			return err
		}
		if len(old) == 0 {
			return fmt.Errorf("%w: the user has no unexpired api key; create one instead", tasks.ErrNotFound)
		}
		end := now.Add(grace)
		if _, err := tx.ExecContext(ctx, `UPDATE api_keys SET expires_at = ?
			WHERE user_id = ? AND (expires_at IS NULL OR expires_at > ?)`, micros(end), userID, micros(end)); err != nil {
			return err
		}
		backend.ExpireKeys(old, end)
		return insertKey(ctx, tx, userID, keyHash, micros(now))
	})
	if err != nil {
		return tasks.APIKey{}, nil, err
	}
	return tasks.APIKey{ID: tasks.APIKeyID(keyHash), UserID: userID, CreatedAt: now}, old, nil
}

// TouchAPIKeys records key uses; see tasks.Store.
func (s *Store) TouchAPIKeys(ctx context.Context, uses []tasks.APIKeyUse) error {
	if len(uses) == 0 {
		return nil
	}
	return s.write(ctx, "record api key uses", func(tx *sql.Tx) error {
		for _, u := range uses {
			at := micros(u.At)
			if _, err := tx.ExecContext(ctx, `UPDATE api_keys SET last_used_at = ?
				WHERE key_hash = ? AND (last_used_at IS NULL OR last_used_at < ?)`, at, u.KeyHash, at); err != nil {
				return err
			}
		}
		return nil
	})
}

// scanKey reads one API key; no row is tasks.ErrNotFound.
func scanKey(row scanner) (tasks.APIKey, error) {
	var (
		k             tasks.APIKey
		created       int64
		used, expires sql.NullInt64
	)
	err := row.Scan(&k.ID, &k.UserID, &created, &used, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return tasks.APIKey{}, tasks.ErrNotFound
	}
	if err != nil {
		return tasks.APIKey{}, fmt.Errorf("read api key: %w", err)
	}
	k.CreatedAt = fromMicros(created)
	k.LastUsedAt = optTime(used)
	k.ExpiresAt = optTime(expires)
	return k, nil
}

func scanKeys(rows *sql.Rows) ([]tasks.APIKey, error) {
	defer rows.Close()
	ks := []tasks.APIKey{}
	for rows.Next() {
		k, err := scanKey(rows)
		if err != nil {
			return nil, err
		}
		ks = append(ks, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read api keys: %w", err)
	}
	return ks, nil
}

// readRow runs query, a read of at most one row, on the read pool as a
// statement prepared once and kept until Close. Only reads use the cache: a
// statement of the single-connection writer would have to be prepared
// while a transaction may hold that connection.
func (s *Store) readRow(ctx context.Context, query string, args ...any) scanner {
	s.stmtMu.Lock()
	st, ok := s.stmts[query]
	s.stmtMu.Unlock()
	if !ok {
		var err error
		if st, err = s.r.PrepareContext(ctx, query); err != nil {
			return errRow{err}
		}
		s.stmtMu.Lock()
		if old, raced := s.stmts[query]; raced {
			_ = st.Close()
			st = old
		} else {
			s.stmts[query] = st
		}
		s.stmtMu.Unlock()
	}
	return st.QueryRowContext(ctx, args...)
}

// errRow is a row whose query failed before it ran.
type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

// write runs f in an IMMEDIATE transaction on the writer connection and
// commits when f returns nil; errors are wrapped with what.
func (s *Store) write(ctx context.Context, what string, f func(tx *sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("%s: begin: %w", what, err)
	}
	if err := f(tx); err != nil {
		_ = tx.Rollback()
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("%s: commit: %w", what, err)
	}
	return nil
}

func leaseResult(res sql.Result, err error) error {
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return tasks.ErrLeaseLost
	}
	return nil
}

func isUniqueViolation(err error) bool {
	var e *sqlite.Error
	if !errors.As(err, &e) {
		return false
	}
	return e.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || e.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
}

type scanner interface{ Scan(dest ...any) error }

// scanTask reads one task; no row is tasks.ErrNotFound.
func scanTask(row scanner) (tasks.Task, error) {
	var (
		t                                          tasks.Task
		input, status, refundState                 string
		output, leaseOwner                         sql.NullString
		created                                    int64
		started, finished, leaseExpires, refundDue sql.NullInt64
		receipt                                    []byte
		idemKey                                    sql.NullString
	)
	err := row.Scan(&t.ID, &t.UserID, &t.Kind, &input, &status, &output, &t.Error, &created, &started, &finished,
		&t.Attempts, &leaseOwner, &leaseExpires, &receipt, &t.RefundOutcome,
		&t.RefundReason, &refundState, &t.RefundAttempts, &refundDue, &t.RefundError,
		&idemKey, &t.RequestDigest)
	if errors.Is(err, sql.ErrNoRows) {
		return tasks.Task{}, tasks.ErrNotFound
	}
	if err != nil {
		return tasks.Task{}, fmt.Errorf("read task: %w", err)
	}
	t.Input = json.RawMessage(input)
	t.Status = tasks.Status(status)
	if output.Valid {
		t.Output = json.RawMessage(output.String)
	}
	t.CreatedAt = fromMicros(created)
	t.StartedAt = optTime(started)
	t.FinishedAt = optTime(finished)
	t.LeaseOwner = leaseOwner.String
	t.LeaseExpires = optTime(leaseExpires)
	t.RefundState = tasks.RefundState(refundState)
	t.RefundDue = optTime(refundDue)
	if len(receipt) > 0 {
		t.Receipt = receipt
	}
	t.IdempotencyKey = idemKey.String
	return t, nil
}

func scanTasks(rows *sql.Rows) ([]tasks.Task, error) {
	defer rows.Close()
	ts := []tasks.Task{}
	for rows.Next() {
		t, err := scanTask(rows)
		if err != nil {
			return nil, err
		}
		ts = append(ts, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read tasks: %w", err)
	}
	return ts, nil
}

func micros(t time.Time) int64 { return t.UnixMicro() }

func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

func optTime(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := fromMicros(v.Int64)
	return &t
}

// blob binds b as a BLOB, or NULL when empty.
func blob(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

// text binds JSON as TEXT, or NULL when empty.
func text(b json.RawMessage) any {
	if len(b) == 0 {
		return nil
	}
	return string(b)
}

// optString is s for a nullable column: "" is NULL.
func optString(s string) any {
	if s == "" {
		return nil
	}
	return s
}
