-- Keyset paging of the admin lists: one provider's connections in user-id order, all of them or
-- those of one status, each page read through an index however deep it is.
CREATE INDEX connections_provider_user ON connections (provider, user_id);
CREATE INDEX connections_provider_status_user ON connections (provider, status, user_id);
