// Package pgstore keeps tasks and API keys in PostgreSQL through pgx
// (github.com/jackc/pgx/v5, a pgxpool.Pool). Several taskd processes may
// share one database: the partial unique index over active tasks gives each
// user one active task across all of them, workers claim with
// FOR UPDATE SKIP LOCKED so no task is claimed twice, and Migrate holds an
// advisory lock so processes that start together migrate once.
//
// Inputs and outputs are jsonb: PostgreSQL stores JSON normalized (keys
// sorted, whitespace and duplicate keys dropped), so they read back equal
// in meaning, not byte for byte. Receipts are bytea and read back byte for
// byte. Times are timestamptz, read back in UTC.
//
// Lease times come from the clock of the process that writes them (see
// WithClock), so the clocks of processes sharing a database must agree to
// well within a lease.
package pgstore

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/allowancehq/allowance/app/tasks"
	"github.com/allowancehq/allowance/app/tasks/internal/backend"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// migrateLockKey is the pg_advisory_xact_lock key Migrate holds.
const migrateLockKey int64 = 0x616c6c6f77616e63 // "allowanc"

// createRetries bounds Create's attempts when the active task it
// conflicted with ends before Create can name it.
const createRetries = 5

// Store is a tasks.Store in PostgreSQL. It is safe for concurrent use.
type Store struct {
	pool  *pgxpool.Pool
	owned bool // Close closes pool
	now   func() time.Time
	// skipConflictRead makes Create go straight to the insert, so tests
	// can reach the conflict that the insert decides.
	skipConflictRead bool
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

// Open connects to the database at url (postgres://user:pass@host:port/db?…,
// any form pgxpool.ParseConfig accepts; pool_max_conns=N in the query sizes
// the connection pool, default the larger of 4 and the number of CPUs) and
// checks that it answers. It does not migrate: call Migrate.
func Open(ctx context.Context, url string, opts ...Option) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("open postgres task store: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open postgres task store: %w", err)
	}
	s := New(pool, opts...)
	s.owned = true
	if err := s.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open postgres task store: %w", err)
	}
	return s, nil
}

// New returns a Store on pool; Close then leaves pool open.
func New(pool *pgxpool.Pool, opts ...Option) *Store {
	s := &Store{pool: pool, now: time.Now}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Close closes the pool if Open made it.
func (s *Store) Close() error {
	if s.owned {
		s.pool.Close()
	}
	return nil
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("ping postgres task store: %w", err)
	}
	return nil
}

// Migrate applies the embedded migrations that schema_migrations does not
// list yet, in one transaction that holds an advisory lock, so processes
// that migrate at once wait for each other and apply each step once. It
// fails when the database has a migration this program does not know.
func (s *Store) Migrate(ctx context.Context) error {
	ms, err := backend.Migrations(migrationFS, "migrations")
	if err != nil {
		return err
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrateLockKey); err != nil {
			return fmt.Errorf("take the migration lock: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    integer     PRIMARY KEY,
			name       text        NOT NULL,
			applied_at timestamptz NOT NULL)`); err != nil {
			return fmt.Errorf("create schema_migrations: %w", err)
		}
		rows, _ := tx.Query(ctx, `SELECT version FROM schema_migrations ORDER BY version`)
		applied, err := pgx.CollectRows(rows, pgx.RowTo[int])
		if err != nil {
			return fmt.Errorf("read schema_migrations: %w", err)
		}
		if n := len(ms); len(applied) > 0 && (n == 0 || applied[len(applied)-1] > ms[n-1].Version) {
			return fmt.Errorf("database schema version %d is newer than this program knows; upgrade the program", applied[len(applied)-1])
		}
		for _, m := range ms {
			if _, ok := slices.BinarySearch(applied, m.Version); ok {
				continue
			}
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return fmt.Errorf("apply %s: %w", m.Name, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)`,
				m.Version, m.Name, s.now()); err != nil {
				return fmt.Errorf("record %s: %w", m.Name, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
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
	// reads; the insert below decides the races.
	if t.IdempotencyKey != "" && !s.skipConflictRead {
		if err := s.keyUsed(ctx, t); err != nil {
			return tasks.Task{}, err
		}
	}
	var active string
	err = pgx.ErrNoRows
	if !s.skipConflictRead {
		err = s.pool.QueryRow(ctx, `SELECT id FROM tasks WHERE user_id = $1 AND status IN ('queued', 'running')`, t.UserID).Scan(&active)
	}
	switch {
	case err == nil:
		// The active task may be a concurrent retry's, made after the
		// key was looked up.
		if t.IdempotencyKey != "" {
			if err := s.keyUsed(ctx, t); err != nil {
				return tasks.Task{}, err
			}
		}
		return tasks.Task{}, fmt.Errorf("create task for %s: %w", t.UserID, &tasks.ActiveTaskError{ActiveID: active})
	case !errors.Is(err, pgx.ErrNoRows):
		return tasks.Task{}, fmt.Errorf("create task for %s: find an active task: %w", t.UserID, err)
	}
	for range createRetries {
		var stored tasks.Task
		stored, err = scanTask(s.pool.QueryRow(ctx, `INSERT INTO tasks (id, user_id, kind, input, status, created_at, receipt, idempotency_key, request_digest)
			VALUES ($1, $2, $3, $4, 'queued', $5, $6, $7, $8)
			ON CONFLICT (user_id) WHERE status IN ('queued', 'running') DO NOTHING
			RETURNING `+columns,
			t.ID, t.UserID, t.Kind, string(t.Input), t.CreatedAt, t.Receipt, optString(t.IdempotencyKey), t.RequestDigest))
		if err == nil {
			return stored, nil
		}
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "tasks_idempotency" {
			// A concurrent retry with the key created its task first.
			if err := s.keyUsed(ctx, t); err != nil {
				return tasks.Task{}, err
			}
			continue // that task was deleted in between: try again
		}
		if !errors.Is(err, tasks.ErrNotFound) {
			return tasks.Task{}, fmt.Errorf("create task for %s: %w", t.UserID, err)
		}
		// The insert conflicted with an active task, which may be a
		// concurrent retry's task with this key: that comes first.
		if t.IdempotencyKey != "" {
			if err := s.keyUsed(ctx, t); err != nil {
				return tasks.Task{}, err
			}
		}
		err = s.pool.QueryRow(ctx, `SELECT id FROM tasks WHERE user_id = $1 AND status IN ('queued', 'running')`, t.UserID).Scan(&active)
		if err == nil {
			return tasks.Task{}, fmt.Errorf("create task for %s: %w", t.UserID, &tasks.ActiveTaskError{ActiveID: active})
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return tasks.Task{}, fmt.Errorf("create task for %s: find the active task: %w", t.UserID, err)
		}
		// The active task ended in between: try again.
	}
	return tasks.Task{}, fmt.Errorf("create task for %s: active tasks kept ending and starting; gave up after %d tries", t.UserID, createRetries)
}

// keyUsed returns a *tasks.KeyUsedError, wrapped, when the user has a task
// created with t's idempotency key, and nil when not.
func (s *Store) keyUsed(ctx context.Context, t tasks.Task) error {
	prev, err := scanTask(s.pool.QueryRow(ctx, `SELECT `+columns+` FROM tasks WHERE user_id = $1 AND idempotency_key = $2`, t.UserID, t.IdempotencyKey))
	switch {
	case err == nil:
		return fmt.Errorf("create task for %s: %w", t.UserID, &tasks.KeyUsedError{Task: prev})
	case errors.Is(err, tasks.ErrNotFound):
		return nil
	}
	return fmt.Errorf("create task for %s: find the task of idempotency key %q: %w", t.UserID, t.IdempotencyKey, err)
}

// optString is s for a nullable column: "" is NULL.
func optString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// Get returns the user's task; see tasks.Store.
func (s *Store) Get(ctx context.Context, userID, id string) (tasks.Task, error) {
	t, err := scanTask(s.pool.QueryRow(ctx, `SELECT `+columns+` FROM tasks WHERE id = $1 AND user_id = $2`, id, userID))
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
	q := `SELECT ` + columns + ` FROM tasks WHERE user_id = $1`
	args := []any{userID}
	if o.Status != "" {
		args = append(args, string(o.Status))
		q += fmt.Sprintf(` AND status = $%d`, len(args))
	}
	if o.Before != "" {
		var seq int64
		err := s.pool.QueryRow(ctx, `SELECT seq FROM tasks WHERE id = $1 AND user_id = $2`, o.Before, userID).Scan(&seq)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, fmt.Errorf("list tasks of %s: cursor %q: %w", userID, o.Before, tasks.ErrNotFound)
		}
		if err != nil {
			return nil, fmt.Errorf("list tasks of %s: cursor %q: %w", userID, o.Before, err)
		}
		args = append(args, seq)
		q += fmt.Sprintf(` AND seq < $%d`, len(args))
	}
	args = append(args, o.PageLimit())
	q += fmt.Sprintf(` ORDER BY seq DESC LIMIT $%d`, len(args))
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list tasks of %s: %w", userID, err)
	}
	defer rows.Close()
	ts := []tasks.Task{}
	for rows.Next() {
		t, err := scanTask(rows)
		if err != nil {
			return nil, fmt.Errorf("list tasks of %s: %w", userID, err)
		}
		ts = append(ts, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list tasks of %s: %w", userID, err)
	}
	return ts, nil
}

// Cancel cancels the user's active task; see tasks.Store.
func (s *Store) Cancel(ctx context.Context, userID, id string) (tasks.Task, error) {
	t, err := scanTask(s.pool.QueryRow(ctx, `UPDATE tasks
		SET status = 'canceled', finished_at = $1, lease_owner = NULL, lease_expires = NULL
		WHERE id = $2 AND user_id = $3 AND status IN ('queued', 'running')
		RETURNING `+columns, backend.Time(s.now()), id, userID))
	if err == nil {
		return t, nil
	}
	if !errors.Is(err, tasks.ErrNotFound) {
		return tasks.Task{}, fmt.Errorf("cancel task %s: %w", id, err)
	}
	t, err = s.Get(ctx, userID, id)
	if err != nil {
		return tasks.Task{}, fmt.Errorf("cancel task %s: %w", id, err)
	}
	return t, fmt.Errorf("cancel task %s: task is %s: %w", id, t.Status, tasks.ErrNotActive)
}

// Claim moves the oldest queued task to running under owner's lease; see
// tasks.Store.
func (s *Store) Claim(ctx context.Context, owner string, lease time.Duration) (tasks.Task, bool, error) {
	if err := backend.CheckLease("claim task", owner, lease); err != nil {
		return tasks.Task{}, false, err
	}
	now := backend.Time(s.now())
	t, err := scanTask(s.pool.QueryRow(ctx, `UPDATE tasks
		SET status = 'running', attempts = attempts + 1, started_at = COALESCE(started_at, $1),
			lease_owner = $2, lease_expires = $3
		WHERE seq = (SELECT seq FROM tasks WHERE status = 'queued' ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED)
		RETURNING `+columns, now, owner, now.Add(lease)))
	if errors.Is(err, tasks.ErrNotFound) {
		return tasks.Task{}, false, nil
	}
	if err != nil {
		return tasks.Task{}, false, fmt.Errorf("claim task: %w", err)
	}
	return t, true, nil
}

// Heartbeat renews owner's lease; see tasks.Store.
func (s *Store) Heartbeat(ctx context.Context, id, owner string, lease time.Duration) error {
	if err := backend.CheckLease("heartbeat task "+id, owner, lease); err != nil {
		return err
	}
	tag, err := s.pool.Exec(ctx, `UPDATE tasks SET lease_expires = $1
		WHERE id = $2 AND lease_owner = $3 AND status = 'running'`, backend.Time(s.now().Add(lease)), id, owner)
	return leaseResult("heartbeat task "+id, tag, err)
}

// Finish ends owner's running task; see tasks.Store.
func (s *Store) Finish(ctx context.Context, id, owner string, st tasks.Status, output json.RawMessage, errMsg string) (tasks.Task, error) {
	out, err := backend.CheckFinish(id, owner, st, output)
	if err != nil {
		return tasks.Task{}, err
	}
	var outArg any // NULL unless there is output
	if out != nil {
		outArg = string(out)
	}
	t, err := scanTask(s.pool.QueryRow(ctx, `UPDATE tasks
		SET status = $1, output = $2, error = $3, finished_at = $4, lease_owner = NULL, lease_expires = NULL,
			`+queueRefund("$7", "$8", "$4")+`
		WHERE id = $5 AND lease_owner = $6 AND status = 'running'
		RETURNING `+columns, string(st), outArg, errMsg, backend.Time(s.now()), id, owner,
		st == tasks.StatusFailed, tasks.RefundWorkerFailure))
	if err == nil {
		return t, nil
	}
	if !errors.Is(err, tasks.ErrNotFound) {
		return tasks.Task{}, fmt.Errorf("finish task %s: %w", id, err)
	}
	var exists bool
	if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM tasks WHERE id = $1)`, id).Scan(&exists); err != nil {
		return tasks.Task{}, fmt.Errorf("finish task %s: %w", id, err)
	}
	if !exists {
		return tasks.Task{}, fmt.Errorf("finish task %s: %w", id, tasks.ErrNotFound)
	}
	return tasks.Task{}, fmt.Errorf("finish task %s: %w", id, tasks.ErrLeaseLost)
}

// Release hands owner's running task back to the queue; see tasks.Store.
func (s *Store) Release(ctx context.Context, id, owner string) error {
	tag, err := s.pool.Exec(ctx, `UPDATE tasks
		SET status = 'queued', lease_owner = NULL, lease_expires = NULL, attempts = GREATEST(attempts - 1, 0)
		WHERE id = $1 AND lease_owner = $2 AND status = 'running'`, id, owner)
	return leaseResult("release task "+id, tag, err)
}

// Reap ends expired leases; see tasks.Store.
func (s *Store) Reap(ctx context.Context, maxAttempts int) ([]tasks.Task, error) {
	maxAttempts = max(maxAttempts, 1)
	now := backend.Time(s.now())
	var reaped []tasks.Task
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		reaped = nil
		rows, _ := tx.Query(ctx, `SELECT id, attempts FROM tasks
			WHERE status = 'running' AND lease_expires < $1 ORDER BY seq FOR UPDATE SKIP LOCKED`, now)
		type expired struct {
			ID       string
			Attempts int
		}
		es, err := pgx.CollectRows(rows, pgx.RowToStructByPos[expired])
		if err != nil {
			return err
		}
		for _, e := range es {
			var t tasks.Task
			if e.Attempts >= maxAttempts {
				t, err = scanTask(tx.QueryRow(ctx, `UPDATE tasks
					SET status = 'stuck', error = $1, finished_at = $2, lease_owner = NULL, lease_expires = NULL,
						`+queueRefund("true", "$4", "$2")+`
					WHERE id = $3 RETURNING `+columns, backend.StuckError(e.Attempts), now, e.ID, tasks.RefundStuck))
			} else {
				t, err = scanTask(tx.QueryRow(ctx, `UPDATE tasks
					SET status = 'queued', lease_owner = NULL, lease_expires = NULL
					WHERE id = $1 RETURNING `+columns, e.ID))
			}
			if err != nil {
				return fmt.Errorf("task %s: %w", e.ID, err)
			}
			reaped = append(reaped, t)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reap expired leases: %w", err)
	}
	return reaped, nil
}

// SetRefundOutcome records a refund's outcome; see tasks.Store.
func (s *Store) SetRefundOutcome(ctx context.Context, id, outcome string) error {
	tag, err := s.pool.Exec(ctx, `UPDATE tasks SET refund_outcome = $1, refund_state = 'done', refund_due = NULL
		WHERE id = $2`, outcome, id)
	if err != nil {
		return fmt.Errorf("set refund outcome of task %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("set refund outcome of task %s: %w", id, tasks.ErrNotFound)
	}
	return nil
}

// queueRefund returns the SET clause that queues a refund for reason, due
// at due, when queue (SQL expressions) is true and the task has a receipt.
func queueRefund(queue, reason, due string) string {
	when := "CASE WHEN " + queue + " AND receipt IS NOT NULL THEN "
	return `refund_state = ` + when + `'pending' ELSE refund_state END,
		refund_reason = ` + when + reason + ` ELSE refund_reason END,
		refund_due = ` + when + due + ` ELSE refund_due END`
}

// ClaimRefund takes the pending refund due first; see tasks.Store.
func (s *Store) ClaimRefund(ctx context.Context, lease time.Duration) (tasks.Task, bool, error) {
	if err := backend.CheckLease("claim refund", "refunder", lease); err != nil {
		return tasks.Task{}, false, err
	}
	now := backend.Time(s.now())
	t, err := scanTask(s.pool.QueryRow(ctx, `UPDATE tasks
		SET refund_attempts = refund_attempts + 1, refund_due = $1
		WHERE seq = (SELECT seq FROM tasks WHERE refund_state = 'pending' AND refund_due <= $2
			ORDER BY refund_due, seq LIMIT 1 FOR UPDATE SKIP LOCKED)
		RETURNING `+columns, now.Add(lease), now))
	if errors.Is(err, tasks.ErrNotFound) {
		return tasks.Task{}, false, nil
	}
	if err != nil {
		return tasks.Task{}, false, fmt.Errorf("claim refund: %w", err)
	}
	return t, true, nil
}

// FinishRefund marks a pending refund done; see tasks.Store.
func (s *Store) FinishRefund(ctx context.Context, id, outcome string) error {
	return s.endRefund(ctx, "finish refund of task "+id, `refund_state = 'done', refund_outcome = $2, refund_due = NULL`, id, outcome)
}

// RetryRefund schedules a pending refund again; see tasks.Store.
func (s *Store) RetryRefund(ctx context.Context, id string, after time.Duration, errMsg string) error {
	return s.endRefund(ctx, "retry refund of task "+id, `refund_due = $2, refund_error = $3`, id, backend.Time(s.now().Add(after)), errMsg)
}

// AbandonRefund gives a pending refund up; see tasks.Store.
func (s *Store) AbandonRefund(ctx context.Context, id, errMsg string) error {
	return s.endRefund(ctx, "abandon refund of task "+id, `refund_state = 'abandoned', refund_error = $2, refund_due = NULL`, id, errMsg)
}

// endRefund applies set to task id ($1) if its refund is pending.
func (s *Store) endRefund(ctx context.Context, what, set string, args ...any) error {
	tag, err := s.pool.Exec(ctx, `UPDATE tasks SET `+set+` WHERE id = $1 AND refund_state = 'pending'`, args...)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%s: %w", what, tasks.ErrNoPendingRefund)
	}
	return nil
}

// CountRefunds counts tasks by refund state; see tasks.Store.
func (s *Store) CountRefunds(ctx context.Context) (tasks.RefundCounts, error) {
	var c tasks.RefundCounts
	err := s.pool.QueryRow(ctx, `SELECT
			count(*) FILTER (WHERE refund_state = 'pending'),
			count(*) FILTER (WHERE refund_state = 'done'),
			count(*) FILTER (WHERE refund_state = 'abandoned')
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
	// SKIP LOCKED: a task another transaction is writing (its refund
	// being recorded, say) waits for the next batch.
	rows, _ := s.pool.Query(ctx, `DELETE FROM tasks WHERE seq IN (
			SELECT seq FROM tasks
			WHERE status IN `+backend.FinalStates+` AND finished_at < $1 AND refund_state <> 'pending'
			ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED)
		RETURNING status`, backend.Time(before), limit)
	states, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("delete finished tasks: %w", err)
	}
	deleted := make(map[tasks.Status]int)
	for _, st := range states {
		deleted[tasks.Status(st)]++
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
	if err := insertKey(ctx, s.pool, userID, keyHash, backend.Time(s.now())); err != nil {
		return fmt.Errorf("create api key for %s: %w", userID, err)
	}
	return nil
}

// execer is a pool or a transaction.
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

func insertKey(ctx context.Context, db execer, userID string, keyHash []byte, now time.Time) error {
	_, err := db.Exec(ctx, `INSERT INTO api_keys (key_hash, key_id, user_id, created_at) VALUES ($1, $2, $3, $4)`,
		keyHash, tasks.APIKeyID(keyHash), userID, now)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" {
		return errors.New("an api key with this hash or id exists")
	}
	return err
}

// UserByAPIKey returns the user of an unexpired key hash; see tasks.Store.
func (s *Store) UserByAPIKey(ctx context.Context, keyHash []byte) (string, error) {
	var user string
	err := s.pool.QueryRow(ctx, `SELECT user_id FROM api_keys WHERE key_hash = $1 AND (expires_at IS NULL OR expires_at > $2)`,
		keyHash, backend.Time(s.now())).Scan(&user)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("api key: %w", tasks.ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("api key: %w", err)
	}
	return user, nil
}

// ListAPIKeys lists API keys; see tasks.Store.
func (s *Store) ListAPIKeys(ctx context.Context, userID string) ([]tasks.APIKey, error) {
	rows, _ := s.pool.Query(ctx, `SELECT `+keyColumns+` FROM api_keys
		WHERE $1 = '' OR user_id = $1 ORDER BY user_id COLLATE "C", created_at, key_id COLLATE "C"`, userID)
	ks, err := collectKeys(rows)
	if err != nil {
		return nil, fmt.Errorf("list api keys: %w", err)
	}
	return ks, nil
}

// RevokeAPIKey deletes a key by id; see tasks.Store.
func (s *Store) RevokeAPIKey(ctx context.Context, id string) (tasks.APIKey, error) {
	rows, _ := s.pool.Query(ctx, `DELETE FROM api_keys WHERE key_id = $1 RETURNING `+keyColumns, id)
	ks, err := collectKeys(rows)
	switch {
	case err != nil:
		return tasks.APIKey{}, fmt.Errorf("revoke api key %s: %w", id, err)
	case len(ks) == 0:
		return tasks.APIKey{}, fmt.Errorf("revoke api key %s: %w", id, tasks.ErrNotFound)
	}
	return ks[0], nil
}

// RevokeUserAPIKeys deletes a user's keys; see tasks.Store.
func (s *Store) RevokeUserAPIKeys(ctx context.Context, userID string) ([]tasks.APIKey, error) {
	rows, _ := s.pool.Query(ctx, `DELETE FROM api_keys WHERE user_id = $1 RETURNING `+keyColumns, userID)
	ks, err := collectKeys(rows)
	if err != nil {
		return nil, fmt.Errorf("revoke api keys of %s: %w", userID, err)
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
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// FOR UPDATE: two rotations of one user take turns.
		rows, _ := tx.Query(ctx, `SELECT `+keyColumns+` FROM api_keys
			WHERE user_id = $1 AND (expires_at IS NULL OR expires_at > $2) ORDER BY created_at, key_id COLLATE "C" FOR UPDATE`, userID, now)
		var err error
		if old, err = collectKeys(rows); err != nil {
			return err
		}
		if len(old) == 0 {
			return fmt.Errorf("%w: the user has no unexpired api key; create one instead", tasks.ErrNotFound)
		}
		end := now.Add(grace)
		if _, err := tx.Exec(ctx, `UPDATE api_keys SET expires_at = $1
			WHERE user_id = $2 AND (expires_at IS NULL OR expires_at > $1)`, end, userID); err != nil {
			return err
		}
		backend.ExpireKeys(old, end)
		return insertKey(ctx, tx, userID, keyHash, now)
	})
	if err != nil {
		return tasks.APIKey{}, nil, fmt.Errorf("rotate api keys of %s: %w", userID, err)
	}
	return tasks.APIKey{ID: tasks.APIKeyID(keyHash), UserID: userID, CreatedAt: now}, old, nil
}

// TouchAPIKeys records key uses; see tasks.Store.
func (s *Store) TouchAPIKeys(ctx context.Context, uses []tasks.APIKeyUse) error {
	if len(uses) == 0 {
		return nil
	}
	var b pgx.Batch
	for _, u := range uses {
		b.Queue(`UPDATE api_keys SET last_used_at = $1
			WHERE key_hash = $2 AND (last_used_at IS NULL OR last_used_at < $1)`, backend.Time(u.At), u.KeyHash)
	}
	if err := s.pool.SendBatch(ctx, &b).Close(); err != nil {
		return fmt.Errorf("record api key uses: %w", err)
	}
	return nil
}

func collectKeys(rows pgx.Rows) ([]tasks.APIKey, error) {
	ks, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (tasks.APIKey, error) {
		var k tasks.APIKey
		if err := row.Scan(&k.ID, &k.UserID, &k.CreatedAt, &k.LastUsedAt, &k.ExpiresAt); err != nil {
			return tasks.APIKey{}, err
		}
		k.CreatedAt = k.CreatedAt.UTC()
		k.LastUsedAt, k.ExpiresAt = utc(k.LastUsedAt), utc(k.ExpiresAt)
		return k, nil
	})
	if err != nil {
		return nil, fmt.Errorf("read api keys: %w", err)
	}
	if ks == nil {
		ks = []tasks.APIKey{}
	}
	return ks, nil
}

func leaseResult(what string, tag pgconn.CommandTag, err error) error {
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%s: %w", what, tasks.ErrLeaseLost)
	}
	return nil
}

// scanTask reads one task; no row is tasks.ErrNotFound.
func scanTask(row pgx.Row) (tasks.Task, error) {
	var (
		t                                          tasks.Task
		input, output                              []byte
		status, refundState                        string
		leaseOwner                                 *string
		started, finished, leaseExpires, refundDue *time.Time
		idemKey                                    *string
	)
	err := row.Scan(&t.ID, &t.UserID, &t.Kind, &input, &status, &output, &t.Error, &t.CreatedAt, &started, &finished,
		&t.Attempts, &leaseOwner, &leaseExpires, &t.Receipt, &t.RefundOutcome,
		&t.RefundReason, &refundState, &t.RefundAttempts, &refundDue, &t.RefundError,
		&idemKey, &t.RequestDigest)
	if errors.Is(err, pgx.ErrNoRows) {
		return tasks.Task{}, tasks.ErrNotFound
	}
	if err != nil {
		return tasks.Task{}, fmt.Errorf("read task: %w", err)
	}
	t.Input = input
	t.Status = tasks.Status(status)
	if output != nil {
		t.Output = output
	}
	t.CreatedAt = t.CreatedAt.UTC()
	t.StartedAt, t.FinishedAt, t.LeaseExpires, t.RefundDue = utc(started), utc(finished), utc(leaseExpires), utc(refundDue)
	t.RefundState = tasks.RefundState(refundState)
	if leaseOwner != nil {
		t.LeaseOwner = *leaseOwner
	}
	if len(t.Receipt) == 0 {
		t.Receipt = nil
	}
	if idemKey != nil {
		t.IdempotencyKey = *idemKey
	}
	return t, nil
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}
