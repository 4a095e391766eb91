//! The data of a provider: everything a standards-following OAuth 2.0 provider differs in.

use std::time::Duration;

use grantry_core::provider::classify_token_error;
use grantry_core::{RefreshPolicy, ScopeInfo, ScopeSet, TokenErrorKind};
use url::Url;

use crate::account::AccountFields;
use crate::client::{BodyEncoding, Client, TokenAuthMethod};

/// A scope of a catalogue.
pub const fn scope(name: &'static str, description: &'static str) -> ScopeInfo {
    ScopeInfo {
        name,
        description,
        refresh_token: false,
    }
}

/// A scope of a catalogue whose grant yields a refresh token (`offline_access`).
pub const fn refresh_scope(name: &'static str, description: &'static str) -> ScopeInfo {
    ScopeInfo {
        refresh_token: true,
        ..scope(name, description)
    }
}

/// Default timeout of one upstream call.
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(15);

/// Where the provider's endpoints are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// The authorization endpoint (consent page).
    pub authorization: Url,
    /// The token endpoint (code exchange and refresh).
    pub token: Url,
    /// The RFC 7009 revocation endpoint, when the provider has one.
    pub revocation: Option<Url>,
    /// The JSON document the account is read from (userinfo, `/me`).
    pub account: Url,
}

/// One provider as data: identity, scopes, endpoints, client and the protocol's options.
#[derive(Debug, Clone)]
pub struct OAuthSpec {
    /// Provider id: routes under `/api/v1/{id}`, variables `{ID}_*`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// The scopes the provider knows, with descriptions.
    pub scope_catalogue: &'static [ScopeInfo],
    /// The scopes requested at consent.
    pub scopes: ScopeSet,
    /// The provider's endpoints.
    pub endpoints: Endpoints,
    /// The app registration.
    pub client: Client,
    /// Client authentication at the token and revocation endpoints.
    pub auth_method: TokenAuthMethod,
    /// Encoding of token request bodies.
    pub body: BodyEncoding,
    /// PKCE with S256 (RFC 7636).
    pub pkce: bool,
    /// Extra authorization parameters, in order.
    pub authorize_params: Vec<(String, String)>,
    /// Send `redirect_uri` with refresh requests too.
    pub redirect_uri_on_refresh: bool,
    /// How refresh tokens behave.
    pub refresh_policy: RefreshPolicy,
    /// Token-endpoint error codes that, like `invalid_grant`, end the grant.
    pub terminal_errors: Vec<String>,
    /// Where the account is found in the account document.
    pub account_fields: AccountFields,
    /// The issuer identifier the `iss` of authorization responses must equal (RFC 9207).
    pub issuer: Option<String>,
    /// Refuse authorization responses without `iss`.
    pub require_iss: bool,
    /// On disconnect, revoke the access token too after the refresh token.
    pub revoke_access_token: bool,
    /// Where users revoke the app themselves, for providers without a revocation endpoint
    /// ("your profile → Authorized applications"); shown by the settings page on disconnect.
    pub revocation_hint: Option<String>,
    /// Longest an upstream call may take.
    pub http_timeout: Duration,
}

impl OAuthSpec {
    /// A spec with the standard's defaults: no scopes, `client_secret_post`, form bodies, PKCE
    /// on, no extra parameters, non-rotating refresh tokens, OpenID Connect account claims, no
    /// issuer check, both tokens revoked, a 15 s timeout.
    pub fn new(id: &str, name: &str, client: Client, endpoints: Endpoints) -> Self {
        Self {
            id: id.to_owned(),
            name: name.to_owned(),
            scope_catalogue: &[],
            scopes: ScopeSet::new(),
            endpoints,
            client,
            auth_method: TokenAuthMethod::default(),
            body: BodyEncoding::default(),
            pkce: true,
            authorize_params: Vec::new(),
            redirect_uri_on_refresh: false,
            refresh_policy: RefreshPolicy::default(),
            terminal_errors: Vec::new(),
            account_fields: AccountFields::default(),
            issuer: None,
            require_iss: false,
            revoke_access_token: true,
            revocation_hint: None,
            http_timeout: DEFAULT_HTTP_TIMEOUT,
        }
    }

    /// Classifies a token-endpoint failure: RFC 6749 section 5.2, plus [`Self::terminal_errors`].
    pub fn classify_token_error(&self, status: u16, error_code: Option<&str>) -> TokenErrorKind {
        match error_code {
            Some(code) if self.terminal_errors.iter().any(|t| t == code) => {
                TokenErrorKind::Terminal
            }
            _ => classify_token_error(status, error_code),
        }
    }
}
