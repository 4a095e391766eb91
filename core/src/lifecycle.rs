//! The connection lifecycle beside the [`Refresher`](crate::refresh::Refresher): begin an
//! authorization (state, PKCE), complete it (consume the state, exchange the code, read the
//! account, save), read a connection's status, and disconnect (revoke upstream, delete).

use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use thiserror::Error;
use url::Url;

use crate::callback::{Callback, Outcome};
use crate::error::{Error, ProviderError, StoreError};
use crate::events::DeleteReason;
use crate::http::ApiError;
use crate::keyring::{SealContext, TokenField};
use crate::provider::{AuthorizeRequest, CallbackContext, Provider, RevokeOutcome};
use crate::secret::{PkceVerifier, StateToken};
use crate::store::{ConnectionRecord, ConnectionSummary, StateRecord};
use crate::telemetry::{Telemetry, db_span};
use crate::vault::Vault;
use tracing::Instrument;

/// Tuning of the lifecycle.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    /// How long an authorization state is accepted.
    pub state_ttl: chrono::Duration,
    /// How many pending authorizations are kept per user and provider (older ones are dropped).
    pub max_pending_states: usize,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self {
            state_ttl: chrono::Duration::seconds(600),
            max_pending_states: 10,
        }
    }
}

/// A begun authorization: where to send the user, and the state it carries.
pub struct Authorization {
    /// The provider's consent URL.
    pub url: Url,
    /// The single-use state (also inside the URL).
    pub state: StateToken,
    /// When the state stops being accepted.
    pub expires_at: DateTime<Utc>,
    /// How long the state stays valid.
    pub expires_in: chrono::Duration,
}

/// The URL's query carries the state: `Debug` shows the URL without it.
impl std::fmt::Debug for Authorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut url = self.url.clone();
        url.set_query(None);
        f.debug_struct("Authorization")
            .field("url", &url.as_str())
            .field("state", &self.state)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// What became of the upstream grant when a connection was deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    /// The provider revoked the grant.
    Revoked,
    /// The provider has no revocation.
    Unsupported,
    /// Revocation failed (or the tokens did not open); the connection was deleted anyway.
    Failed,
}

impl Revocation {
    /// `revoked`, `unsupported` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Revoked => "revoked",
            Self::Unsupported => "unsupported",
            Self::Failed => "failed",
        }
    }
}

/// Why a lifecycle step failed; [`ApiError::from`] gives its HTTP answer.
#[derive(Debug, Error)]
pub enum LifecycleError {
    /// The state is unknown, expired, already used, or another user's or provider's.
    #[error("unknown, expired or already used state; start the connection again")]
    InvalidState,
    /// The user declined the authorization (`access_denied`).
    #[error("the user declined the authorization")]
    AccessDenied,
    /// The provider answered the authorization with another error.
    #[error("{}", answered(.error, .description))]
    AuthorizationFailed {
        /// The OAuth error code.
        error: String,
        /// Its explanation, possibly empty.
        description: String,
    },
    /// The provider refused the code exchange or the account lookup.
    #[error("{provider} refused the authorization: {source}")]
    Refused {
        /// The provider id.
        provider: String,
        /// The refusal.
        source: ProviderError,
    },
    /// The provider could not be reached or failed for a passing reason.
    #[error("{provider} is unavailable: {source}")]
    Unavailable {
        /// The provider id.
        provider: String,
        /// The failure.
        source: ProviderError,
    },
    /// The user has no connection to the provider.
    #[error("no {provider} connection for this user")]
    NotConnected {
        /// The provider id.
        provider: String,
    },
    /// The database failed.
    #[error(transparent)]
    Database(StoreError),
    /// A fault of the server itself (sealing, a provider that cannot build its URL).
    #[error(transparent)]
    Internal(Error),
}

fn answered(error: &str, description: &str) -> String {
    format!("the provider answered {error} {description}")
        .trim()
        .to_owned()
}

impl From<StoreError> for LifecycleError {
    fn from(e: StoreError) -> Self {
        Self::Database(e)
    }
}

impl From<Error> for LifecycleError {
    fn from(e: Error) -> Self {
        match e {
            Error::Store(e) => Self::Database(e),
            other => Self::Internal(other),
        }
    }
}

impl From<LifecycleError> for ApiError {
    fn from(e: LifecycleError) -> Self {
        use axum::http::StatusCode;
        let bad_request =
            |code, e: &LifecycleError| ApiError::new(StatusCode::BAD_REQUEST, code, e.to_string());
        match e {
            LifecycleError::InvalidState => bad_request("invalid_state", &e),
            LifecycleError::AccessDenied => bad_request("access_denied", &e),
            LifecycleError::AuthorizationFailed { .. } | LifecycleError::Refused { .. } => {
                bad_request("authorization_failed", &e)
            }
            LifecycleError::Unavailable { .. } => ApiError::upstream(e.to_string()),
            LifecycleError::NotConnected { provider } => ApiError::not_connected(&provider),
            LifecycleError::Database(e) => ApiError::database(&e),
            LifecycleError::Internal(e) => ApiError::internal(&e),
        }
    }
}

/// Connects, reports and disconnects users' accounts, over the vault.
#[derive(Debug, Clone)]
pub struct Connections {
    vault: Vault,
    settings: ConnectionSettings,
    telemetry: Telemetry,
}

impl Connections {
    /// The lifecycle over `vault`.
    pub fn new(vault: Vault, settings: ConnectionSettings) -> Self {
        Self {
            vault,
            settings,
            telemetry: Telemetry::default(),
        }
    }

    /// This lifecycle recording its calls to providers into `telemetry`.
    #[must_use]
    pub fn with_telemetry(mut self, telemetry: Telemetry) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// The tuning.
    pub fn settings(&self) -> &ConnectionSettings {
        &self.settings
    }

    /// Begins an authorization of `user_id` with `provider`: a single-use state bound to the
    /// user (with a sealed PKCE verifier when the provider uses PKCE) and the consent URL.
    pub async fn begin(
        &self,
        user_id: &str,
        provider: &dyn Provider,
    ) -> Result<Authorization, LifecycleError> {
        let state = StateToken::generate();
        let state_hash = state.digest();
        let now = Utc::now();
        let pkce = provider.uses_pkce().then(PkceVerifier::generate);
        let code_verifier = pkce
            .as_ref()
            .map(|verifier| {
                self.vault.keys().seal(
                    verifier.secret(),
                    pkce_context(&state_hash, user_id, provider.id()),
                )
            })
            .transpose()
            .map_err(Error::from)?;
        let expires_at = now + self.settings.state_ttl;
        self.vault
            .store()
            .put_state(
                &StateRecord {
                    state_hash: state_hash.clone(),
                    user_id: user_id.to_owned(),
                    provider: provider.id().to_owned(),
                    expires_at,
                    created_at: now,
                    code_verifier,
                },
                self.settings.max_pending_states,
            )
            .instrument(db_span("put_state"))
            .await?;
        let url = provider
            .authorize_url(&AuthorizeRequest {
                state: &state,
                scopes: provider.requested_scopes(),
                pkce: pkce.as_ref(),
            })
            .map_err(Error::from)?;
        Ok(Authorization {
            url,
            state,
            expires_at,
            expires_in: self.settings.state_ttl,
        })
    }

    /// Completes an authorization of `user_id` with what `provider` sent back: consumes the
    /// state, exchanges the code (with the PKCE verifier kept with the state), reads the account
    /// and saves the grant, replacing a previous connection.
    pub async fn complete(
        &self,
        user_id: &str,
        provider: &dyn Provider,
        callback: Callback,
    ) -> Result<ConnectionRecord, LifecycleError> {
        let consumed = self
            .vault
            .store()
            .consume_state(&callback.state.digest(), user_id, provider.id(), Utc::now())
            .instrument(db_span("consume_state"))
            .await?
            .ok_or(LifecycleError::InvalidState)?;
        let code = match callback.outcome {
            Outcome::Code(code) => code,
            Outcome::Error { error, .. } if error == "access_denied" => {
                return Err(LifecycleError::AccessDenied);
            }
            Outcome::Error { error, description } => {
                return Err(LifecycleError::AuthorizationFailed { error, description });
            }
        };
        let pkce = consumed
            .code_verifier
            .as_ref()
            .map(|sealed| {
                self.vault
                    .keys()
                    .open(
                        sealed,
                        pkce_context(&consumed.state_hash, &consumed.user_id, provider.id()),
                    )
                    .map(|verifier| PkceVerifier::new(verifier.expose_secret()))
            })
            .transpose()
            .map_err(Error::from)?;
        let context = CallbackContext {
            pkce: pkce.as_ref(),
            issuer: callback.issuer.as_deref(),
        };
        let tokens = self
            .telemetry
            .upstream(
                provider.id(),
                "exchange_code",
                provider.exchange_code(&code, &context),
            )
            .await
            .map_err(|e| exchange_failed(provider.id(), e))?;
        let details = self
            .telemetry
            .upstream(
                provider.id(),
                "account",
                provider.account(&tokens.access_token),
            )
            .await
            .map_err(|e| exchange_failed(provider.id(), e))?;
        let record = self
            .vault
            .save_grant(
                user_id,
                provider.id(),
                &tokens,
                &details,
                &provider.refresh_policy(),
                Utc::now(),
            )
            .instrument(db_span("save_grant"))
            .await?;
        tracing::info!(provider = provider.id(), user = %user_id, sites = record.resources.len(), "connected");
        Ok(record)
    }

    /// The connection of `user_id` to `provider`, if any.
    pub async fn status(
        &self,
        user_id: &str,
        provider: &dyn Provider,
    ) -> Result<Option<ConnectionSummary>, LifecycleError> {
        Ok(self
            .vault
            .store()
            .connection_summary(user_id, provider.id())
            .instrument(db_span("read_summary"))
            .await?)
    }

    /// Deletes the connection of `user_id` to `provider`, revoking the grant upstream first
    /// (best effort: the connection is deleted whatever the provider answers); `reason` says who
    /// asked, for the `connection.deleted` event.
    pub async fn disconnect(
        &self,
        user_id: &str,
        provider: &dyn Provider,
        reason: DeleteReason,
    ) -> Result<Revocation, LifecycleError> {
        let store = self.vault.store();
        let not_connected = || LifecycleError::NotConnected {
            provider: provider.id().to_owned(),
        };
        let Some(record) = store
            .connection(user_id, provider.id())
            .instrument(db_span("read_connection"))
            .await?
        else {
            return Err(not_connected());
        };
        let revocation = match self.vault.open_tokens(&record) {
            Ok(tokens) => match self
                .telemetry
                .upstream(provider.id(), "revoke", provider.revoke(&tokens))
                .await
            {
                Ok(RevokeOutcome::Revoked) => Revocation::Revoked,
                Ok(RevokeOutcome::Unsupported) => Revocation::Unsupported,
                Err(e) => {
                    tracing::warn!(provider = provider.id(), error = %e, "upstream revocation failed; deleting our copy anyway");
                    Revocation::Failed
                }
            },
            Err(e) => {
                tracing::warn!(provider = provider.id(), error = %e, "tokens do not open; deleting our copy without revocation");
                Revocation::Failed
            }
        };
        if !store
            .delete_connection(user_id, provider.id(), reason)
            .instrument(db_span("delete_connection"))
            .await?
        {
            return Err(not_connected());
        }
        tracing::info!(provider = provider.id(), user = %user_id, revocation = revocation.as_str(), "disconnected");
        Ok(revocation)
    }
}

/// What a PKCE verifier is sealed to: the state's hash, its user and provider.
fn pkce_context<'a>(state_hash: &'a str, user_id: &'a str, provider: &'a str) -> SealContext<'a> {
    SealContext {
        connection_id: state_hash,
        user_id,
        provider,
        field: TokenField::PkceVerifier,
    }
}

/// A failed code exchange or account lookup: passing failures are the upstream's, the rest a
/// refusal of the authorization.
fn exchange_failed(provider: &str, e: ProviderError) -> LifecycleError {
    tracing::warn!(provider, error = %e, "authorization failed");
    let provider = provider.to_owned();
    if e.is_transient() {
        LifecycleError::Unavailable {
            provider,
            source: e,
        }
    } else {
        LifecycleError::Refused {
            provider,
            source: e,
        }
    }
}
