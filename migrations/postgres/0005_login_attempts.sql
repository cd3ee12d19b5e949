-- Password-guessing budgets shared by every replica: one row per limited key (the SHA-256 of
-- an account or a client address, never the name itself). Times are Unix seconds.
CREATE TABLE login_attempts (
    key_hash TEXT PRIMARY KEY,
    -- Attempts counted since the key was last fresh.
    failures INTEGER NOT NULL,
    -- 0: not locked since last fresh; n: the n-th consecutive lockout.
    level INTEGER NOT NULL,
    last_attempt BIGINT NOT NULL,
    -- 0 when not locked.
    locked_until BIGINT NOT NULL,
    -- From this time on the row remembers nothing (housekeeping deletes it).
    forget_at BIGINT NOT NULL
);
CREATE INDEX login_attempts_forget_at ON login_attempts (forget_at);
