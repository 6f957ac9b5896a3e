// Package tasks is the task domain of taskd: what a task is, the states it
// moves through, the [Store] that keeps tasks, the built-in task kinds and
// the worker [Pool] that runs them.
//
// # Lifecycle
//
// A task is created queued. A worker claims the oldest queued task, which
// makes it running under a lease (an owner name and an expiry time) that
// the worker renews by heartbeat. The worker finishes it as succeeded or
// failed. A user may cancel a queued or running task. When a lease runs out
// (the worker died), [Store.Reap] puts the task back in the queue, or, once
// it has been started maxAttempts times, marks it stuck.
//
//	queued   → running     Claim (a worker takes the oldest queued task)
//	running  → succeeded   Finish (the kind returned an output)
//	running  → failed      Finish (the kind returned an error)
//	queued   → canceled    Cancel (by the task's user)
//	running  → canceled    Cancel (the worker stops it)
//	running  → queued      Reap (lease expired, attempts < max) or Release (pool stopping)
//	running  → stuck       Reap (lease expired, attempts ≥ max)
//
// A user has at most one active (queued or running) task. The database
// enforces it with a partial unique index over the active states, so
// concurrent submits, even from several processes sharing one database,
// create exactly one task; the others get an [*ActiveTaskError] naming it.
//
// # Refunds
//
// A task carries the receipt of the submit that created it. When it fails
// in its worker or gets stuck, the store queues a refund in the same write
// (Task.RefundState pending), so no crash loses it; a [Refunder] in any
// process claims it, refunds through its RefundFunc, and records done,
// pending again after a backoff, or abandoned.
//
// # Backends
//
// Package tasks/sqlitestore keeps tasks in SQLite (pure Go, the embedded
// default), package tasks/pgstore in PostgreSQL. Package tasks/taskdb opens
// either from a DSN ("sqlite:PATH", "postgres://…"); it lives apart from
// this package so that tasks imports no backend. Both backends pass the
// conformance suite in package tasks/storetest.
package tasks

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Status is the state of a task.
type Status string

// The states of a task. Queued and running are active: a user has at most
// one active task. The others are final.
const (
	StatusQueued    Status = "queued"    // waiting for a worker
	StatusRunning   Status = "running"   // claimed by a worker under a lease
	StatusSucceeded Status = "succeeded" // the kind returned an output
	StatusFailed    Status = "failed"    // the kind returned an error
	StatusCanceled  Status = "canceled"  // canceled by its user
	StatusStuck     Status = "stuck"     // its lease ran out too many times
)

// Active reports whether s is queued or running.
func (s Status) Active() bool { return s == StatusQueued || s == StatusRunning }

// Final reports whether s is a final state: succeeded, failed, canceled or
// stuck.
func (s Status) Final() bool {
	switch s {
	case StatusSucceeded, StatusFailed, StatusCanceled, StatusStuck:
		return true
	}
	return false
}

// Valid reports whether s is one of the defined states.
func (s Status) Valid() bool { return s.Active() || s.Final() }

// ParseStatus returns the Status named s, or an error naming the valid
// states.
func ParseStatus(s string) (Status, error) {
	st := Status(s)
	if !st.Valid() {
		return "", fmt.Errorf("status %q: expected one of queued, running, succeeded, failed, canceled, stuck", s)
	}
	return st, nil
}

// Task is one unit of work submitted by a user. Times are UTC with
// microsecond precision (what both backends store).
type Task struct {
	ID     string          `json:"id"`     // "t_" and 26 base32 characters; see NewID
	UserID string          `json:"-"`      // the owner; a user sees only their own tasks
	Kind   string          `json:"kind"`   // the name of the Runner, e.g. "sleep"
	Input  json.RawMessage `json:"input"`  // the kind's input; JSON null when none was given
	Status Status          `json:"status"` // see Status
	// Output is the kind's result once succeeded, else nil.
	Output json.RawMessage `json:"output,omitempty"`
	// Error is why the task failed or got stuck, else "".
	Error string `json:"error,omitempty"`

	CreatedAt  time.Time  `json:"created_at"`
	StartedAt  *time.Time `json:"started_at,omitempty"`  // first claim
	FinishedAt *time.Time `json:"finished_at,omitempty"` // entry into a final state

	// Attempts counts the claims of the task, less hand-backs by a stopping
	// pool (Release): a task that ran once has 1.
	Attempts int `json:"attempts"`
	// LeaseOwner and LeaseExpires are set only while the task is running:
	// the worker that holds it and when its lease ends unless renewed.
	LeaseOwner   string     `json:"-"`
	LeaseExpires *time.Time `json:"-"`

	// Receipt is the accepted submit's allowance receipt
	// (allowance.Receipt.MarshalBinary), kept byte-exact; nil when none.
	// An empty slice is stored as nil.
	Receipt []byte `json:"-"`
	// RefundOutcome is "" until a refund was made for the task, then the
	// allowance.Outcome string of that refund.
	RefundOutcome string `json:"refund_outcome,omitempty"`

	// The durable refund record. Finish (failed) and Reap (stuck) of a task
	// with a Receipt queue a refund in the same write: RefundReason becomes
	// RefundWorkerFailure or RefundStuck and RefundState pending, so the
	// refund survives a crash; a Refunder then works it off (ClaimRefund,
	// FinishRefund, RetryRefund, AbandonRefund).
	RefundReason   string      `json:"refund_reason,omitempty"`
	RefundState    RefundState `json:"refund_state,omitempty"`
	RefundAttempts int         `json:"-"` // refund attempts started
	RefundDue      *time.Time  `json:"-"` // pending: when the next attempt may start
	RefundError    string      `json:"-"` // the last failed attempt's error

	// IdempotencyKey is the Idempotency-Key the submit that created the
	// task carried, "" when none. A user's keys are unique among the
	// tasks the store keeps: Create of a second task with the same key
	// fails with *KeyUsedError. The key is forgotten with the task
	// (retention).
	IdempotencyKey string `json:"-"`
	// RequestDigest identifies the request that created the task, so a
	// retry with the same IdempotencyKey can be told apart from another
	// request reusing the key; opaque to the store, "" when none.
	RequestDigest string `json:"-"`
}

// Refund reasons a task store records; they match taskd's refund_on names.
const (
	RefundWorkerFailure = "worker_failure" // the task failed in its worker
	RefundStuck         = "stuck"          // the task's lease ran out too often
)

// RefundState is where a task's durable refund record stands.
type RefundState string

// The refund states; "" means no refund was queued.
const (
	RefundPending   RefundState = "pending"   // queued, not yet done
	RefundDone      RefundState = "done"      // made; RefundOutcome says how it went
	RefundAbandoned RefundState = "abandoned" // given up after repeated failures
)

// RefundCounts counts tasks by refund state, for metrics.
type RefundCounts struct {
	Pending, Done, Abandoned int
}

// APIKey describes a stored API key: never the key itself, nor its hash.
type APIKey struct {
	// ID names the key in listings and for revocation; see APIKeyID.
	ID        string
	UserID    string
	CreatedAt time.Time
	// LastUsedAt is when the key last authenticated a request, to within
	// about a minute (uses are recorded in batches, and a key is looked up
	// in the database at most about once a minute per process); nil when
	// it never did.
	LastUsedAt *time.Time
	// ExpiresAt is when the key stops working (RotateAPIKeys sets it);
	// nil when it does not expire.
	ExpiresAt *time.Time
}

// Expired reports whether the key no longer works at now.
func (k APIKey) Expired(now time.Time) bool {
	return k.ExpiresAt != nil && !k.ExpiresAt.After(now)
}

// APIKeyUse is one use of an API key, for Store.TouchAPIKeys.
type APIKeyUse struct {
	KeyHash []byte
	At      time.Time
}

// apiKeyIDBytes is how many bytes of a key's hash its id shows.
const apiKeyIDBytes = 6

// APIKeyID returns the id of the API key whose hash is keyHash: "k_" and
// the first 12 hex digits of the hash. The id is not secret (the hash is
// one-way, and 48 bits of it tell nothing about the key), yet whoever holds
// a key can compute its id, with `printf %s "$KEY" | sha256sum | cut -c1-12`
// for SHA-256 hashes. Since it is derived from the hash, keys stored before
// ids existed got theirs by migration.
func APIKeyID(keyHash []byte) string {
	return "k_" + hex.EncodeToString(keyHash[:min(len(keyHash), apiKeyIDBytes)])
}

// ValidAPIKeyID reports whether id has the form APIKeyID returns.
func ValidAPIKeyID(id string) bool {
	rest, ok := strings.CutPrefix(id, "k_")
	if !ok || len(rest) != 2*apiKeyIDBytes {
		return false
	}
	for _, c := range []byte(rest) {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// ErrNotFound means no such task (or API key). A task of another user is
// not found either: callers cannot tell it exists.
var ErrNotFound = errors.New("not found")

// ErrActiveTask means the user already has a queued or running task. Create
// returns it as an *ActiveTaskError; test with errors.Is or errors.As.
var ErrActiveTask = errors.New("user has an active task")

// ErrNotActive means the task is in a final state, so it cannot be
// canceled. Cancel returns it together with the unchanged task.
var ErrNotActive = errors.New("task is not active")

// ErrLeaseLost means the caller does not hold the task's lease any more: the
// task was canceled, finished, reaped, or claimed by another worker.
// Heartbeat, Finish and Release return it; the worker must stop the task
// and write nothing.
var ErrLeaseLost = errors.New("task lease lost")

// ErrNoPendingRefund means the task has no pending refund: none was
// queued, or it was done or abandoned already (perhaps by another
// process). FinishRefund, RetryRefund and AbandonRefund return it.
var ErrNoPendingRefund = errors.New("task has no pending refund")

// ActiveTaskError is the error of a Create for a user who has an active
// task. errors.Is(err, ErrActiveTask) holds.
type ActiveTaskError struct {
	ActiveID string // the id of the user's queued or running task
}

// Error says which task is active.
func (e *ActiveTaskError) Error() string {
	return fmt.Sprintf("user has an active task %s", e.ActiveID)
}

// Is makes errors.Is(err, ErrActiveTask) true.
func (e *ActiveTaskError) Is(target error) bool { return target == ErrActiveTask }

// ErrKeyUsed means the user already has a task created with the same
// idempotency key. Create returns it as a *KeyUsedError; test with
// errors.Is or errors.As.
var ErrKeyUsed = errors.New("idempotency key already used")

// KeyUsedError is the error of a Create whose IdempotencyKey the user has
// used before. errors.Is(err, ErrKeyUsed) holds.
type KeyUsedError struct {
	Task Task // the task created with the key, as it is now
}

// Error names the task created with the key.
func (e *KeyUsedError) Error() string {
	return fmt.Sprintf("idempotency key already used by task %s", e.Task.ID)
}

// Is makes errors.Is(err, ErrKeyUsed) true.
func (e *KeyUsedError) Is(target error) bool { return target == ErrKeyUsed }

// Bounds of ListOptions.Limit.
const (
	DefaultListLimit = 50  // used when Limit is 0 or negative
	MaxListLimit     = 200 // larger limits are lowered to this
)

// ListOptions selects a page of one user's tasks, newest first.
type ListOptions struct {
	// Status keeps only tasks in this state; "" keeps all.
	Status Status
	// Limit is the page size: ≤ 0 means DefaultListLimit, more than
	// MaxListLimit means MaxListLimit.
	Limit int
	// Before is a cursor: when set, only tasks created before the task with
	// this id are listed (pass the last id of the previous page). An id that
	// is not one of the user's tasks gives ErrNotFound.
	Before string
}

// PageLimit returns the effective page size of o (see Limit).
func (o ListOptions) PageLimit() int {
	switch {
	case o.Limit <= 0:
		return DefaultListLimit
	case o.Limit > MaxListLimit:
		return MaxListLimit
	}
	return o.Limit
}

// Store keeps tasks and API keys. Implementations: tasks/sqlitestore and
// tasks/pgstore; both pass tasks/storetest. All methods are safe for
// concurrent use, also by several processes sharing one database. A method
// that returns an error has written nothing.
type Store interface {
	// Migrate brings the schema up to date. It is idempotent, and safe when
	// several processes run it at once.
	Migrate(ctx context.Context) error

	// Create stores t as a new queued task and returns it as stored. It
	// sets ID (when empty, with NewID), Status (queued), CreatedAt (now),
	// Attempts (0) and clears the run fields (StartedAt, FinishedAt,
	// Output, Error, lease, RefundOutcome); it keeps UserID, Kind, Input
	// and Receipt. UserID and Kind must not be empty and Input, when not
	// empty, must be valid JSON (empty is stored as null). When the user
	// has a queued or running task, Create fails with *ActiveTaskError.
	// When t.IdempotencyKey is set and the user has a task created with
	// that key, Create fails with *KeyUsedError carrying that task; this
	// is checked first, so a retry of a submit finds its own task rather
	// than the active-task conflict. Of concurrent Creates with one key,
	// exactly one creates the task. Create keeps IdempotencyKey and
	// RequestDigest.
	Create(ctx context.Context, t Task) (Task, error)

	// Get returns the user's task id, or ErrNotFound (also when the task
	// belongs to another user).
	Get(ctx context.Context, userID, id string) (Task, error)

	// List returns a page of the user's tasks, newest first; see
	// ListOptions. No tasks is an empty slice and no error.
	List(ctx context.Context, userID string, o ListOptions) ([]Task, error)

	// Cancel moves the user's queued or running task to canceled and
	// returns it. A task in a final state is returned unchanged with an
	// error wrapping ErrNotActive; an unknown task (or another user's) is
	// ErrNotFound. A running task's worker learns of the cancel from its
	// next heartbeat (ErrLeaseLost), or at once through Pool.Cancel.
	Cancel(ctx context.Context, userID, id string) (Task, error)

	// Claim moves the oldest queued task to running under a lease held by
	// owner until now+lease, counts an attempt, sets StartedAt on the first
	// claim, and returns it with true. With no queued task it returns
	// false. Two claimers never get the same task.
	Claim(ctx context.Context, owner string, lease time.Duration) (Task, bool, error)

	// Heartbeat renews owner's lease on the running task id until
	// now+lease. It fails with ErrLeaseLost when owner no longer holds it
	// (canceled, finished, reaped, reclaimed).
	Heartbeat(ctx context.Context, id, owner string, lease time.Duration) error

	// Finish ends owner's running task id with st (succeeded or failed),
	// output (valid JSON or empty) and errMsg, and returns the finished
	// task. A failed task with a receipt gets a pending refund
	// (RefundWorkerFailure) in the same write. It fails with ErrLeaseLost
	// when owner no longer holds the lease, and ErrNotFound for an unknown
	// id; any other st is an error.
	Finish(ctx context.Context, id, owner string, st Status, output json.RawMessage, errMsg string) (Task, error)

	// Release hands owner's running task id back to the queue (queued, no
	// lease, the attempt not counted), for a pool that stops before the
	// task ends. ErrLeaseLost when owner no longer holds it.
	Release(ctx context.Context, id, owner string) error

	// Reap ends the leases that ran out before now. A task that was
	// claimed fewer than maxAttempts times goes back to queued; the others
	// become stuck (final, with an Error saying why), which frees the
	// user's slot, and get a pending refund (RefundStuck) when they carry
	// a receipt. It returns the tasks it changed, in their new state.
	// maxAttempts < 1 is taken as 1.
	Reap(ctx context.Context, maxAttempts int) ([]Task, error)

	// SetRefundOutcome records the outcome of the refund made for task id
	// (any user's) and marks its refund record done (see Task.RefundState),
	// whatever its state. ErrNotFound for an unknown id.
	SetRefundOutcome(ctx context.Context, id, outcome string) error

	// ClaimRefund takes the pending refund due first (RefundDue ≤ now),
	// counts an attempt and moves RefundDue to now+lease, so that no other
	// claimer takes it while this one works; it returns the task and true,
	// or false when no refund is due.
	ClaimRefund(ctx context.Context, lease time.Duration) (Task, bool, error)

	// FinishRefund marks task id's pending refund done with outcome (stored
	// as RefundOutcome). ErrNoPendingRefund when it is not pending.
	FinishRefund(ctx context.Context, id, outcome string) error

	// RetryRefund keeps task id's refund pending, due again after the
	// given delay, and records errMsg as RefundError. ErrNoPendingRefund
	// when it is not pending.
	RetryRefund(ctx context.Context, id string, after time.Duration, errMsg string) error

	// AbandonRefund gives task id's pending refund up, recording errMsg.
	// ErrNoPendingRefund when it is not pending.
	AbandonRefund(ctx context.Context, id, errMsg string) error

	// CountRefunds counts the tasks in each refund state.
	CountRefunds(ctx context.Context) (RefundCounts, error)

	// DeleteFinished deletes at most limit tasks in a final state
	// (succeeded, failed, canceled, stuck) that finished before before,
	// oldest first, and returns how many it deleted of each state. A task
	// whose refund is pending is kept until the refund is done or
	// abandoned; active tasks are never deleted. limit < 1 is an error.
	DeleteFinished(ctx context.Context, before time.Time, limit int) (map[Status]int, error)

	// CreateAPIKey stores the hash of a new API key of userID, with the id
	// APIKeyID(keyHash). Store only a hash (e.g. SHA-256), never the key.
	// A hash or id that exists is an error; empty userID or keyHash is an
	// error.
	CreateAPIKey(ctx context.Context, userID string, keyHash []byte) error

	// UserByAPIKey returns the user whose key has hash keyHash, or
	// ErrNotFound, also when the key expired (APIKey.ExpiresAt ≤ now).
	UserByAPIKey(ctx context.Context, keyHash []byte) (string, error)

	// ListAPIKeys returns the API keys of userID, or of every user when
	// userID is "", ordered by user and then creation, expired ones
	// included. No keys is an empty slice and no error.
	ListAPIKeys(ctx context.Context, userID string) ([]APIKey, error)

	// RevokeAPIKey deletes the key whose APIKey.ID is id and returns it as
	// it was, or ErrNotFound.
	RevokeAPIKey(ctx context.Context, id string) (APIKey, error)

	// RevokeUserAPIKeys deletes every key of userID and returns them (none
	// is an empty slice and no error).
	RevokeUserAPIKeys(ctx context.Context, userID string) ([]APIKey, error)

	// RotateAPIKeys stores keyHash as a new key of userID and, in the same
	// write, makes every other unexpired key of the user expire at
	// now+grace (a key that expires sooner keeps its expiry). It returns
	// the new key and the old keys as they now are. A user without an
	// unexpired key is ErrNotFound (create a key instead); grace < 0 is an
	// error; grace 0 ends the old keys at once.
	RotateAPIKeys(ctx context.Context, userID string, keyHash []byte, grace time.Duration) (APIKey, []APIKey, error)

	// TouchAPIKeys records uses of API keys: each key's LastUsedAt becomes
	// the use's time unless it is later already. Unknown hashes are
	// ignored. Callers batch uses (see KeyUseRecorder), so that
	// authentication does not write.
	TouchAPIKeys(ctx context.Context, uses []APIKeyUse) error

	// Ping checks that the database answers.
	Ping(ctx context.Context) error

	// Close releases the store's connections.
	Close() error
}
