-- What a connection set up upstream per resource (Jira webhooks of a site, say), found again by
-- the hash of the secret in its callback path, renewed before it expires, gone with the connection.
CREATE TABLE connection_subscriptions (
    connection_id TEXT NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
    provider      TEXT NOT NULL,
    resource_id   TEXT NOT NULL,
    secret_hash   TEXT NOT NULL UNIQUE,
    remote_ids    TEXT NOT NULL,        -- space-separated upstream ids
    expires_at    BIGINT,               -- epoch ms
    created_at    BIGINT NOT NULL,
    renewed_at    BIGINT NOT NULL,
    PRIMARY KEY (connection_id, resource_id)
);

-- The subscriptions a maintenance pass renews: by provider and expiry.
CREATE INDEX connection_subscriptions_expiry
    ON connection_subscriptions (provider, expires_at, connection_id, resource_id);

-- Upstream notifications already received (deduplication by the provider's delivery id).
CREATE TABLE inbound_receipts (
    provider    TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (provider, delivery_id)
);

CREATE INDEX inbound_receipts_received_at ON inbound_receipts (received_at);
