-- API key ids, last use and expiry (taskd keys list, revoke, rotate), and
-- the index the retention loop finds old finished tasks by.

-- A key's id is "k_" and the first 12 hex digits of its hash
-- (tasks.APIKeyID), so keys stored before ids existed get theirs here.
ALTER TABLE api_keys ADD COLUMN key_id TEXT NOT NULL DEFAULT '';
UPDATE api_keys SET key_id = 'k_' || lower(hex(substr(key_hash, 1, 6)));
CREATE UNIQUE INDEX api_keys_by_id ON api_keys (key_id);
-- Unix microseconds; NULL: never used, and no expiry.
ALTER TABLE api_keys ADD COLUMN last_used_at INTEGER;
ALTER TABLE api_keys ADD COLUMN expires_at INTEGER;

CREATE INDEX tasks_finished ON tasks (finished_at) WHERE status IN ('succeeded', 'failed', 'canceled', 'stuck');
