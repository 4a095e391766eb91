-- When the current access token was issued: with its expiry, the lifetime the provider granted,
-- which caps the refresh margin (half the lifetime) so short-lived tokens never refresh on every call.
ALTER TABLE connections ADD COLUMN access_issued_at BIGINT;
