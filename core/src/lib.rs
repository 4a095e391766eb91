//! grantry-core: the provider model, token storage contract, key ring and errors of grantry.
//!
//! Core knows no provider by name. A provider crate implements [`Provider`] and registers a
//! [`ProviderFactory`] with [`register_provider!`]; a server builds every enabled provider with
//! [`build_providers`] and keeps tokens sealed through a [`Vault`] over a [`TokenStore`].

pub mod access;
pub mod cache;
pub mod callback;
pub mod error;
pub mod http;
pub mod keyring;
pub mod lifecycle;
pub mod maintenance;
pub mod provider;
pub mod refresh;
pub mod scope;
pub mod secret;
pub mod store;
pub mod token;
pub mod vault;

pub use access::{AccessError, FreshAccess};
pub use cache::CachedStore;
pub use error::{ConfigError, CryptoError, Error, ProviderError, StoreError};
pub use http::{
    ApiError, Authentication, Authenticator, Credential, ErrorBody, FreshToken, Principal,
    ProviderContext, Role, RouteState, TokenSource,
};
pub use keyring::{KeyId, KeyRing, SealContext, SealedValue, TokenField};
pub use lifecycle::{Authorization, ConnectionSettings, Connections, LifecycleError, Revocation};
pub use maintenance::{MaintenanceMetrics, MaintenanceReport, MaintenanceSettings};
pub use provider::{
    AuthorizeRequest, BuildFn, CallbackContext, Provider, ProviderFactory, ProviderSettings,
    ProvidersConfig, RefreshPolicy, RevokeOutcome, TokenErrorKind, build_providers,
    classify_token_error, env_prefix, factories,
};
pub use refresh::{RefreshMetrics, RefreshSettings, Refresher};
pub use scope::{Scope, ScopeInfo, ScopeSet};
pub use secret::{
    AccessToken, AuthorizationCode, ClientSecret, PkceVerifier, RefreshToken, StateToken,
};
pub use store::{
    ConnectionKey, ConnectionPageQuery, ConnectionRecord, ConnectionStatus, ConnectionWalk,
    DueConnection, StateRecord, TokenHandout, TokenStore, TokenUpdate,
};
pub use token::{Account, AccountDetails, Resource, TokenSet};
pub use vault::{BINDING_FAILURE, ReencryptReport, Vault};

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
