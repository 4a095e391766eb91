//! Token sets and account details returned by providers.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::scope::ScopeSet;
use crate::secret::{AccessToken, RefreshToken};

/// The tokens of one grant as a provider returned them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSet {
    /// The access token.
    pub access_token: AccessToken,
    /// The refresh token, when the provider issued one.
    pub refresh_token: Option<RefreshToken>,
    /// The token type, usually `Bearer`.
    pub token_type: String,
    /// When the access token expires, if known.
    pub expires_at: Option<DateTime<Utc>>,
    /// The scopes granted, when the provider said.
    pub scopes: Option<ScopeSet>,
}

/// The account behind a grant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// The provider's stable account id.
    pub id: String,
    /// Display name.
    pub name: Option<String>,
    /// Email address, when the provider shares it.
    pub email: Option<String>,
}

/// Something a grant can reach, such as an Atlassian site.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Resource {
    /// The provider's id of the resource (an Atlassian cloud id).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Where it lives.
    pub url: Option<String>,
    /// The scopes the grant holds on this resource.
    pub scopes: Vec<String>,
    /// An avatar image.
    pub avatar_url: Option<String>,
}

/// What a provider knows about a grant: who, and what it reaches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountDetails {
    /// The account.
    pub account: Account,
    /// The resources the grant reaches.
    pub resources: Vec<Resource>,
}
