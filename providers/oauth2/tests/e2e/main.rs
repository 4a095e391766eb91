//! grantry-oauth2 end to end: grantry's router over HTTP on SQLite (and PostgreSQL when
//! `GRANTRY_TEST_POSTGRES_URL` is set) against a real OpenID provider (npm `oidc-provider`,
//! installed and started by `idp`), plus configuration and non-standard provider answers.

mod config;
mod flow;
mod harness;
mod idp;
mod shapes;
