-- Pending states are capped per user and provider: the cap reads them newest first through this index.
CREATE INDEX oauth_states_owner ON oauth_states (user_id, provider, created_at);
