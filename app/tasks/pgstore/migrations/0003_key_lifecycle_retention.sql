-- API key ids, last use and expiry (taskd keys list, revoke, rotate), and
-- the index the retention loop finds old finished tasks by.

-- A key's id is "k_" and the first 12 hex digits of its hash
-- (tasks.APIKeyID), so keys stored before ids existed get theirs here.
ALTER TABLE api_keys ADD COLUMN key_id text NOT NULL DEFAULT '';
UPDATE api_keys SET key_id = 'k_' || encode(substring(key_hash from 1 for 6), 'hex');
ALTER TABLE api_keys ALTER COLUMN key_id DROP DEFAULT;
CREATE UNIQUE INDEX api_keys_by_id ON api_keys (key_id);
-- NULL: never used, and no expiry.
ALTER TABLE api_keys ADD COLUMN last_used_at timestamptz, ADD COLUMN expires_at timestamptz;

CREATE INDEX tasks_finished ON tasks (finished_at) WHERE status IN ('succeeded', 'failed', 'canceled', 'stuck');
