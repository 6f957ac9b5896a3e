-- Idempotency keys of task submits (POST /v1/tasks with Idempotency-Key):
-- the key a task was created with and a digest of its request. A user's
-- keys are unique among the tasks kept, so concurrent retries of one
-- submit create one task. NULL: submitted without a key.
ALTER TABLE tasks ADD COLUMN idempotency_key text;
ALTER TABLE tasks ADD COLUMN request_digest text NOT NULL DEFAULT '';
CREATE UNIQUE INDEX tasks_idempotency ON tasks (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
