-- Personal data reporting (Atlassian's report-accounts cycle).

-- When a connection's personal data (account name and email) was last read from the provider,
-- epoch milliseconds: the account's `updatedAt` in a report. NULL means at `connected_at` (rows
-- stored before this column); every connect and reconnect sets it.
ALTER TABLE connections ADD COLUMN account_read_at BIGINT;

-- A provider's small durable state (when its next report cycle is due, where a cycle stopped),
-- seen by every replica and kept across restarts.
CREATE TABLE provider_state (
    provider   TEXT NOT NULL,
    name       TEXT NOT NULL,
    value      TEXT NOT NULL,
    updated_at BIGINT NOT NULL,            -- epoch milliseconds
    PRIMARY KEY (provider, name)
);
