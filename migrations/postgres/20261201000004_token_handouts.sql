-- The audit of admins taking users' access tokens (GET …/admin/connections/{user}/access-token):
-- who, whose, which provider, when. Paged newest first by id within a provider.
CREATE TABLE token_handouts (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider      TEXT NOT NULL,
    admin_id      TEXT NOT NULL,
    user_id       TEXT NOT NULL,
    handed_out_at BIGINT NOT NULL
);

CREATE INDEX token_handouts_provider_id ON token_handouts (provider, id);
