-- connections_provider_status_user (provider, status, user_id) begins with (provider, status):
-- it serves the /metrics count by provider and status and every lookup by provider, so the
-- shorter index is one more to write on every insert and status change, for nothing.
DROP INDEX connections_provider_status;
