-- The outbox of connection events: written in the transaction of the change it describes, then
-- delivered to every configured webhook endpoint (one delivery row per endpoint), at least once.
CREATE TABLE events (
    id         TEXT PRIMARY KEY,          -- msg_…, the webhook-id of every attempt
    type       TEXT NOT NULL,
    created_at BIGINT NOT NULL,           -- epoch milliseconds
    body       TEXT NOT NULL              -- the JSON body, the same on every attempt
);

-- Old events are purged by age, oldest first.
CREATE INDEX events_created_at ON events (created_at);

CREATE TABLE event_deliveries (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    endpoint        TEXT NOT NULL,
    status          TEXT NOT NULL,        -- pending, delivered or failed
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,      -- database clock, epoch ms; while claimed, the claim's end
    claim           TEXT,                 -- the attempt in progress
    last_attempt_at BIGINT,
    last_status     BIGINT,               -- the HTTP status of the last answer
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    window_start    BIGINT NOT NULL,      -- the retry window runs from here (creation, or an admin's retry)
    delivered_at    BIGINT
);

-- The deliveries a worker may take: pending ones whose next attempt is due.
CREATE INDEX event_deliveries_due ON event_deliveries (next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX event_deliveries_event ON event_deliveries (event_id);
-- The deliveries of a claim in progress (the claim is cleared when its outcome is recorded).
CREATE INDEX event_deliveries_claim ON event_deliveries (claim) WHERE claim IS NOT NULL;
-- The age of the oldest pending delivery (/metrics).
CREATE INDEX event_deliveries_pending_age ON event_deliveries (created_at) WHERE status = 'pending';
