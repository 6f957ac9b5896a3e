-- Tasks and API keys.
CREATE TABLE tasks (
    seq            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, -- creation order: queue and list order
    id             text        NOT NULL UNIQUE,
    user_id        text        NOT NULL,
    kind           text        NOT NULL,
    input          jsonb       NOT NULL,
    status         text        NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'canceled', 'stuck')),
    output         jsonb,
    error          text        NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL,
    started_at     timestamptz,
    finished_at    timestamptz,
    attempts       integer     NOT NULL DEFAULT 0,
    lease_owner    text,
    lease_expires  timestamptz,
    receipt        bytea,
    refund_outcome text        NOT NULL DEFAULT '',
    -- The durable refund record: a failed or stuck task with a receipt is
    -- queued for a refund (pending) in the same write that ends it.
    refund_reason   text        NOT NULL DEFAULT '',
    refund_state    text        NOT NULL DEFAULT '' CHECK (refund_state IN ('', 'pending', 'done', 'abandoned')),
    refund_attempts integer     NOT NULL DEFAULT 0,
    refund_due      timestamptz,
    refund_error    text        NOT NULL DEFAULT ''
);

-- One active task per user: a second queued or running task of a user
-- violates this index, whichever process inserts it.
CREATE UNIQUE INDEX tasks_one_active_per_user ON tasks (user_id) WHERE status IN ('queued', 'running');
CREATE INDEX tasks_by_user ON tasks (user_id, seq);
CREATE INDEX tasks_queue ON tasks (seq) WHERE status = 'queued';
CREATE INDEX tasks_leases ON tasks (lease_expires) WHERE status = 'running';
CREATE INDEX tasks_refunds_due ON tasks (refund_due) WHERE refund_state = 'pending';

CREATE TABLE api_keys (
    key_hash   bytea       PRIMARY KEY,
    user_id    text        NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX api_keys_by_user ON api_keys (user_id);
