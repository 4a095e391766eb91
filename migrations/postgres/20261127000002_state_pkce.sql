-- PKCE verifiers (sealed) kept with pending OAuth states.
ALTER TABLE oauth_states ADD COLUMN code_verifier BYTEA;
