//! grantry-protocol: the OAuth 2.0 protocol layer every grantry provider stands on.
//!
//! A provider that differs from the standard only in data is an [`OAuthSpec`] (endpoints,
//! scopes, client authentication, body encoding, PKCE, extra authorization parameters, refresh
//! policy, account field mapping); [`OAuthProvider`] turns it into a [`grantry_core::Provider`].
//! What data cannot say goes into [`Hooks`] (the resources of an account, extra routes).
//!
//! Underneath: the upstream HTTP client and capped reads ([`http`]), client authentication and
//! body encoding ([`client`]), token-response parsing with every known quirk ([`token`]), the
//! authorization URL ([`authorize`]), RFC 7009 revocation ([`revoke`]) and account reading
//! ([`account`]).

pub mod account;
pub mod authorize;
pub mod client;
mod hooks;
pub mod http;
mod provider;
pub mod revoke;
mod spec;
pub mod token;

pub use account::AccountFields;
pub use client::{BodyEncoding, Client, TokenAuthMethod};
pub use hooks::{AccountCall, ConnectionCall, Hooks, NoHooks};
pub use provider::OAuthProvider;
pub use spec::{DEFAULT_HTTP_TIMEOUT, Endpoints, OAuthSpec, refresh_scope, scope};
pub use token::parse_token_response;
