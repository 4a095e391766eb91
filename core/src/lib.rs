//! grantry-core: the provider model, token storage contract, key ring and errors of grantry.
//!
//! Core knows no provider by name. The crate root is the front door for a provider author: a
//! provider crate implements [`Provider`] and registers a [`ProviderFactory`] with
//! [`register_provider!`]. The engine a server or embedder drives stays in its modules.
//!
//! # Front door
//!
//! **Provider**
//! - [`Provider`]: what a provider does (authorize URL, code exchange, refresh, account, revoke).
//! - [`ProviderFactory`] and [`register_provider!`]: how a linked crate offers its provider.
//! - [`ProvidersConfig`], [`ProviderSettings`]: the configuration a factory builds from.
//! - [`AuthorizeRequest`], [`CallbackContext`]: what the server passes to begin and complete.
//! - [`RefreshPolicy`], [`RevokeOutcome`], [`TokenErrorKind`]: how the provider's tokens behave.
//! - [`ScopeInfo`], [`ScopeSet`]: the scope catalogue and sets of scopes.
//! - [`async_trait`](macro@async_trait): the attribute the [`Provider`] implementation needs.
//!
//! **Tokens and account**
//! - [`AccessToken`], [`RefreshToken`], [`AuthorizationCode`], [`ClientSecret`],
//!   [`PkceVerifier`], [`StateToken`]: secret values that never print.
//! - [`TokenSet`]: what a token endpoint answered.
//! - [`Account`], [`AccountDetails`], [`Resource`]: who connected and what they granted.
//!
//! **Errors**
//! - [`ConfigError`]: a provider's configuration is missing or wrong.
//! - [`ProviderError`]: a call to the provider failed.
//!
//! **Routes** (a provider's own HTTP routes)
//! - [`ProviderContext`], [`RouteState`]: the typed state a provider's router gets.
//! - [`Principal`]: the authenticated caller.
//! - [`FreshToken`]: extracts the caller's fresh access token.
//! - [`ApiError`], [`ErrorBody`]: JSON errors answered as `{"error", "message"}`.
//!
//! # Engine (servers and embedders)
//!
//! - [`store`]: the [`TokenStore`](store::TokenStore) contract a database implements.
//! - [`vault`]: the [`Vault`](vault::Vault), a store plus the key ring, sealing tokens.
//! - [`keyring`]: the [`KeyRing`](keyring::KeyRing), AES-256-GCM sealing bound to the row.
//! - [`cache`]: [`CachedStore`](cache::CachedStore), a read cache in front of a store.
//! - [`refresh`]: the [`Refresher`](refresh::Refresher), one refresh per connection.
//! - [`access`]: [`FreshAccess`](access::FreshAccess), a usable token or why there is none.
//! - [`lifecycle`]: [`Connections`](lifecycle::Connections): begin, complete, status, disconnect.
//! - [`maintenance`]: background upkeep of grants and states.
//! - [`events`]: the [`Event`](events::Event)s every change of a connection records.
//! - [`callback`]: the validated parameters of the OAuth callback.
//! - [`http`]: the [`Authenticator`](http::Authenticator) and the rest of the web glue.
//! - [`provider`]: [`build_providers`](provider::build_providers) and the factory registry.
//! - [`telemetry`]: latency histograms, the request id and the trace context of upstream calls.
//! - [`error`]: every error, including [`StoreError`](error::StoreError) and
//!   [`Error`](error::Error).
//! - [`scope`], [`secret`], [`token`]: the modules behind the front door's types.

pub mod access;
pub mod cache;
pub mod callback;
pub mod error;
pub mod events;
pub mod http;
pub mod keyring;
pub mod lifecycle;
pub mod maintenance;
pub mod provider;
pub mod refresh;
pub mod scope;
pub mod secret;
pub mod store;
pub mod telemetry;
pub mod token;
pub mod vault;

pub use error::{ConfigError, ProviderError};
pub use http::{ApiError, ErrorBody, FreshToken, Principal, ProviderContext, RouteState};
pub use provider::{
    AuthorizeRequest, CallbackContext, Provider, ProviderFactory, ProviderSettings,
    ProvidersConfig, RefreshPolicy, RevokeOutcome, TokenErrorKind,
};
pub use scope::{ScopeInfo, ScopeSet};
pub use secret::{
    AccessToken, AuthorizationCode, ClientSecret, PkceVerifier, RefreshToken, StateToken,
};
pub use token::{Account, AccountDetails, Resource, TokenSet};

#[doc(hidden)]
pub mod __private {
    pub use async_trait::async_trait;
    pub use inventory;
}

pub use async_trait::async_trait;

/// Registers a [`ProviderFactory`] so that servers linking the crate find it at start-up.
///
/// ```ignore
/// grantry_core::register_provider!(grantry_core::ProviderFactory {
///     id: "example",
///     name: "Example",
///     build: build,
/// });
/// ```
#[macro_export]
macro_rules! register_provider {
    ($factory:expr) => {
        $crate::__private::inventory::submit! { $factory }
    };
}
