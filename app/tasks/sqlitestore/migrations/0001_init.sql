-- Tasks and API keys. Times are Unix microseconds (UTC); JSON is TEXT.
CREATE TABLE tasks (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT, -- creation order: queue and list order
    id             TEXT    NOT NULL UNIQUE,
    user_id        TEXT    NOT NULL,
    kind           TEXT    NOT NULL,
    input          TEXT    NOT NULL,
    status         TEXT    NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'canceled', 'stuck')),
    output         TEXT,
    error          TEXT    NOT NULL DEFAULT '',
    created_at     INTEGER NOT NULL,
    started_at     INTEGER,
    finished_at    INTEGER,
    attempts       INTEGER NOT NULL DEFAULT 0,
    lease_owner    TEXT,
    lease_expires  INTEGER,
    receipt        BLOB,
    refund_outcome TEXT    NOT NULL DEFAULT '',
    -- The durable refund record: a failed or stuck task with a receipt is
    -- queued for a refund (pending) in the same write that ends it.
    refund_reason   TEXT    NOT NULL DEFAULT '',
    refund_state    TEXT    NOT NULL DEFAULT '' CHECK (refund_state IN ('', 'pending', 'done', 'abandoned')),
    refund_attempts INTEGER NOT NULL DEFAULT 0,
    refund_due      INTEGER,
    refund_error    TEXT    NOT NULL DEFAULT ''
);

-- One active task per user: a second queued or running task of a user
-- violates this index, whichever process inserts it.
CREATE UNIQUE INDEX tasks_one_active_per_user ON tasks (user_id) WHERE status IN ('queued', 'running');
CREATE INDEX tasks_by_user ON tasks (user_id, seq);
CREATE INDEX tasks_queue ON tasks (seq) WHERE status = 'queued';
CREATE INDEX tasks_leases ON tasks (lease_expires) WHERE status = 'running';
CREATE INDEX tasks_refunds_due ON tasks (refund_due) WHERE refund_state = 'pending';

CREATE TABLE api_keys (
    key_hash   BLOB    PRIMARY KEY,
    user_id    TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX api_keys_by_user ON api_keys (user_id);
