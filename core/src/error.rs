//! Errors of grantry-core.

use thiserror::Error;

pub use crate::keyring::CryptoError;
use crate::keyring::KeyId;

/// Failures of a token store.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The database failed or could not be reached.
    #[error("database error: {0}")]
    Database(String),
    /// A concurrent writer changed the row first; the caller may retry.
    #[error("concurrent update of {0}")]
    Conflict(String),
    /// A stored row holds a value the code cannot read.
    #[error("stored row is invalid: {0}")]
    Corrupt(String),
}

/// A configuration value that is missing or invalid; the message names the variable.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// A required value is absent.
    #[error("{variable} is required{context}")]
    Missing {
        /// The environment variable that provides it.
        variable: String,
        /// Why it is required, e.g. " when ENABLE_ATLASSIAN_INTEGRATION=true".
        context: String,
    },
    /// A value is present but unusable.
    #[error("{variable} is invalid: {reason}")]
    Invalid {
        /// The environment variable that provides it.
        variable: String,
        /// What is wrong with it (never the value of a secret).
        reason: String,
    },
    /// Two registered providers claim the same id.
    #[error("two providers are registered with the id `{0}`")]
    DuplicateProvider(String),
    /// A provider section is enabled but no provider crate linked into the binary serves it.
    #[error(
        "{setting} but no provider linked into this binary serves `{section}`{kind}; this binary knows the kinds: {known}"
    )]
    Unserved {
        /// What enables the section, e.g. `ENABLE_JIRA_DC_INTEGRATION=true` or `JIRA_DC_KIND=atlassian-dc`.
        setting: String,
        /// The section's id.
        section: String,
        /// ` (kind `…`)` when the section names a kind, else empty.
        kind: String,
        /// The factory ids linked into the binary (each the kind it serves), comma-separated.
        known: String,
    },
}

/// Failures of a provider's calls to its upstream.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProviderError {
    /// The token endpoint refused the grant for good (`invalid_grant`): the user must consent again.
    #[error("the grant was refused by the provider ({description}); the user must connect again")]
    InvalidGrant {
        /// The upstream's description, without any token.
        description: String,
    },
    /// The upstream refused the request (bad code, bad client, scope mismatch).
    #[error("the provider refused the request: {code}: {description}")]
    Rejected {
        /// HTTP status of the refusal.
        status: u16,
        /// OAuth error code or a short label.
        code: String,
        /// Upstream description.
        description: String,
    },
    /// A failure that may pass: network, timeout, 5xx, 429, a malformed body.
    #[error("the provider is unavailable: {reason}")]
    Transient {
        /// What went wrong.
        reason: String,
        /// Seconds the upstream asked us to wait, if it said.
        retry_after: Option<u64>,
    },
    /// The provider does not offer this operation.
    #[error("the provider does not support {0}")]
    Unsupported(&'static str),
}

impl ProviderError {
    /// Whether the failure means the user must consent again.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::InvalidGrant { .. })
    }

    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient { .. })
    }
}

/// The umbrella error of grantry-core.
#[derive(Debug, Error)]
pub enum Error {
    /// See [`CryptoError`].
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// See [`StoreError`].
    #[error(transparent)]
    Store(#[from] StoreError),
    /// See [`ConfigError`].
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// See [`ProviderError`].
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// A connection's sealed tokens do not open for its row and user (the row was moved to
    /// another user or tampered with); the row is marked `needs_reauth` and kept.
    #[error(
        "the stored tokens of this connection do not open for its user (moved or tampered); connect again"
    )]
    Binding,
    /// Stored values are sealed with keys that are not configured; nothing was changed.
    #[error("stored tokens are sealed with key(s) {} which are not configured; add them to GRANTRY_ENCRYPTION_OLD_KEYS (nothing was deleted)", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    MissingKeys(Vec<KeyId>),
}
