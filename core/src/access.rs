//! What a caller gets when it asks for a usable access token: the token, or why there is none.

use chrono::{DateTime, Utc};
use thiserror::Error;

use crate::error::{Error, ProviderError, StoreError};
use crate::scope::ScopeSet;
use crate::secret::AccessToken;
use crate::token::Resource;

/// A usable access token and where it came from.
#[derive(Debug, Clone)]
pub struct FreshAccess {
    /// The access token.
    pub access_token: AccessToken,
    /// Its type, `Bearer`.
    pub token_type: String,
    /// When it expires.
    pub expires_at: Option<DateTime<Utc>>,
    /// The connection it belongs to.
    pub connection_id: String,
    /// The row version it was read or written at.
    pub version: i64,
    /// Whether this call refreshed it.
    pub refreshed: bool,
    /// The resources (sites) the grant reaches, as stored.
    pub resources: Vec<Resource>,
    /// The scopes granted, as stored.
    pub scopes: ScopeSet,
}

/// Why no fresh token could be had.
#[derive(Debug, Error)]
pub enum AccessError {
    /// The user has no connection to this provider.
    #[error("not connected")]
    NotConnected,
    /// The grant is dead; the user must consent again.
    #[error("the connection needs re-consent")]
    NeedsReauth,
    /// The provider could not refresh now.
    #[error(transparent)]
    Upstream(ProviderError),
    /// Storage or sealing failed.
    #[error(transparent)]
    Core(#[from] Error),
}

impl From<StoreError> for AccessError {
    fn from(e: StoreError) -> Self {
        Self::Core(Error::Store(e))
    }
}
