-- lanyard's initial schema (PostgreSQL). Times are Unix seconds; lists and structs are JSON text.

CREATE TABLE clients (
    id                        TEXT    NOT NULL PRIMARY KEY,
    secret_sha256             TEXT,
    redirect_uris             TEXT    NOT NULL,
    trusted_peers             TEXT    NOT NULL,
    is_public                 BOOLEAN NOT NULL,
    name                      TEXT    NOT NULL,
    logo_url                  TEXT,
    grant_types               TEXT    NOT NULL,
    post_logout_redirect_uris TEXT    NOT NULL,
    allowed_connectors        TEXT    NOT NULL,
    created_at                BIGINT  NOT NULL
);

-- The application lower-cases emails, so the primary key is the case-insensitive identity.
-- Usernames are unique too: a login by username must name exactly one user.
CREATE TABLE passwords (
    email       TEXT    NOT NULL PRIMARY KEY,
    hash        TEXT    NOT NULL,
    username    TEXT    NOT NULL UNIQUE,
    user_id     TEXT    NOT NULL,
    user_groups TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL
);

CREATE TABLE auth_requests (
    id              TEXT    NOT NULL PRIMARY KEY,
    client_id       TEXT    NOT NULL,
    params          TEXT    NOT NULL,
    csrf_token      TEXT    NOT NULL,
    browser_binding TEXT    NOT NULL,
    login           TEXT,
    created_at      BIGINT  NOT NULL,
    expires_at      BIGINT  NOT NULL
);
CREATE INDEX auth_requests_expires_at ON auth_requests (expires_at);

-- grant_json is the grant the redemption creates; grant_id repeats its id so that a replay
-- can find the grant to revoke without parsing JSON.
CREATE TABLE auth_codes (
    code_hash             TEXT    NOT NULL PRIMARY KEY,
    grant_id              TEXT    NOT NULL,
    redirect_uri          TEXT    NOT NULL,
    code_challenge        TEXT,
    code_challenge_method TEXT,
    grant_json            TEXT    NOT NULL,
    created_at            BIGINT  NOT NULL,
    expires_at            BIGINT  NOT NULL,
    redeemed_at           BIGINT
);
CREATE INDEX auth_codes_expires_at ON auth_codes (expires_at);
CREATE INDEX auth_codes_grant_id ON auth_codes (grant_id);

-- user_id repeats claims.user_id so that every grant of a user can be found (and revoked).
CREATE TABLE grants (
    id             TEXT    NOT NULL PRIMARY KEY,
    client_id      TEXT    NOT NULL,
    connector_id   TEXT    NOT NULL,
    user_id        TEXT    NOT NULL,
    claims         TEXT    NOT NULL,
    scopes         TEXT    NOT NULL,
    nonce          TEXT,
    auth_time      BIGINT  NOT NULL,
    connector_data TEXT,
    created_at     BIGINT  NOT NULL,
    revoked_at     BIGINT
);
CREATE INDEX grants_revoked_at ON grants (revoked_at) WHERE revoked_at IS NOT NULL;
CREATE INDEX grants_user ON grants (connector_id, user_id);
CREATE INDEX grants_client_id ON grants (client_id);

CREATE TABLE access_tokens (
    token_hash TEXT    NOT NULL PRIMARY KEY,
    grant_id   TEXT    NOT NULL REFERENCES grants (id),
    client_id  TEXT    NOT NULL,
    created_at BIGINT  NOT NULL,
    expires_at BIGINT  NOT NULL
);
CREATE INDEX access_tokens_grant_id ON access_tokens (grant_id);
CREATE INDEX access_tokens_expires_at ON access_tokens (expires_at);

-- A rotated token keeps pointing at its successor (successor_sealed: the successor token
-- encrypted) so that a retry within the reuse interval gets the same answer again.
CREATE TABLE refresh_tokens (
    token_hash       TEXT    NOT NULL PRIMARY KEY,
    grant_id         TEXT    NOT NULL REFERENCES grants (id),
    client_id        TEXT    NOT NULL,
    created_at       BIGINT  NOT NULL,
    last_used_at     BIGINT  NOT NULL,
    expires_at       BIGINT,
    rotated_at       BIGINT,
    successor_hash   TEXT,
    successor_sealed BYTEA
);
CREATE INDEX refresh_tokens_grant_id ON refresh_tokens (grant_id);
CREATE INDEX refresh_tokens_expires_at ON refresh_tokens (expires_at);

CREATE TABLE device_requests (
    user_code        TEXT    NOT NULL PRIMARY KEY,
    device_code_hash TEXT    NOT NULL UNIQUE,
    client_id        TEXT    NOT NULL,
    scopes           TEXT    NOT NULL,
    created_at       BIGINT  NOT NULL,
    expires_at       BIGINT  NOT NULL,
    poll_interval    BIGINT  NOT NULL,
    last_poll_at     BIGINT,
    status           TEXT    NOT NULL,
    grant_json       TEXT
);
CREATE INDEX device_requests_expires_at ON device_requests (expires_at);

-- successor_of is unique: of two replicas that rotate at once, exactly one inserts the successor.
CREATE TABLE signing_keys (
    kid             TEXT    NOT NULL PRIMARY KEY,
    alg             TEXT    NOT NULL,
    public_jwk      TEXT    NOT NULL,
    private_key_enc BYTEA   NOT NULL,
    successor_of    TEXT    NOT NULL UNIQUE,
    created_at      BIGINT  NOT NULL,
    sign_from       BIGINT  NOT NULL
);

CREATE TABLE sessions (
    id             TEXT    NOT NULL PRIMARY KEY,
    user_id        TEXT    NOT NULL,
    connector_id   TEXT    NOT NULL,
    claims         TEXT    NOT NULL,
    connector_data TEXT,
    created_at     BIGINT  NOT NULL,
    expires_at     BIGINT  NOT NULL,
    revoked_at     BIGINT
);
CREATE INDEX sessions_expires_at ON sessions (expires_at);
CREATE INDEX sessions_user ON sessions (connector_id, user_id);
