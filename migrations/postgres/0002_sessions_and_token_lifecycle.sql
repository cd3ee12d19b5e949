-- Sessions remember when the user authenticated, for `max_age` and the ID token's auth_time.
-- Rows written before this migration have no such time; 0 makes every max_age check fail
-- for them, which asks the user to log in again rather than trusting an unknown age.
ALTER TABLE sessions ADD COLUMN auth_time BIGINT NOT NULL DEFAULT 0;

-- Housekeeping deletes rotated, idle and revoked rows; without these it scans whole tables.
CREATE INDEX refresh_tokens_rotated_at ON refresh_tokens (rotated_at) WHERE rotated_at IS NOT NULL;
CREATE INDEX refresh_tokens_last_used_at ON refresh_tokens (last_used_at);
CREATE INDEX sessions_revoked_at ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;
