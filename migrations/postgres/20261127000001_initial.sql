-- grantry schema (PostgreSQL). Times are Unix epoch milliseconds.
CREATE TABLE connections (
    id                      TEXT PRIMARY KEY,
    user_id                 TEXT NOT NULL,
    provider                TEXT NOT NULL,
    account_id              TEXT NOT NULL,
    account_name            TEXT,
    account_email           TEXT,
    scopes                  TEXT NOT NULL,
    status                  TEXT NOT NULL,
    access_token            BYTEA NOT NULL,
    refresh_token           BYTEA,
    key_id                  TEXT NOT NULL,
    access_expires_at       BIGINT,
    refresh_idle_expires_at BIGINT,
    refresh_expires_at      BIGINT,
    version                 BIGINT NOT NULL DEFAULT 0,
    lease_until             BIGINT,
    lease_owner             TEXT,
    last_failure            TEXT,
    connected_at            BIGINT NOT NULL,
    updated_at              BIGINT NOT NULL,
    last_refreshed_at       BIGINT,
    UNIQUE (user_id, provider)
);

CREATE INDEX connections_provider ON connections (provider);

CREATE TABLE connection_resources (
    connection_id TEXT NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
    position      BIGINT NOT NULL,
    resource_id   TEXT NOT NULL,
    name          TEXT NOT NULL,
    url           TEXT,
    scopes        TEXT NOT NULL,
    avatar_url    TEXT,
    PRIMARY KEY (connection_id, position)
);

CREATE TABLE oauth_states (
    state_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    provider   TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    used       INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX oauth_states_expires ON oauth_states (expires_at);
