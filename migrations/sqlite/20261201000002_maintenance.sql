-- Maintenance reads only what is due, start-up checks keys through an index, one pass at a time.

-- Active grants with a refresh token, by provider and inactivity expiry: the keep-alive batches.
CREATE INDEX connections_keep_alive ON connections (provider, refresh_idle_expires_at, id)
    WHERE status = 'active' AND refresh_token IS NOT NULL;

-- Active grants by provider and absolute expiry: the batches of grants to retire.
CREATE INDEX connections_absolute_expiry ON connections (provider, refresh_expires_at, id)
    WHERE status = 'active';

-- The key ids in use, read by a skip scan at start-up.
CREATE INDEX connections_key_id ON connections (key_id);

-- Connections by provider and status (the /metrics gauge) also serve every lookup by provider.
DROP INDEX connections_provider;
CREATE INDEX connections_provider_status ON connections (provider, status);

-- The key that sealed a state's PKCE verifier, filled from the sealed bytes
-- (format version 1, then the 8-byte key id).
ALTER TABLE oauth_states ADD COLUMN key_id TEXT;
UPDATE oauth_states SET key_id = lower(hex(substr(code_verifier, 2, 8)))
    WHERE code_verifier IS NOT NULL AND length(code_verifier) >= 21 AND substr(code_verifier, 1, 1) = x'01';

-- Leases of background tasks (the maintenance pass): one holder at a time across replicas,
-- until lease_until (epoch milliseconds of the database clock).
CREATE TABLE task_leases (
    name        TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    lease_until BIGINT NOT NULL
);
