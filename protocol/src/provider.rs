//! The generic provider: a [`Provider`] from an [`OAuthSpec`] and [`Hooks`].

use std::sync::Arc;

use async_trait::async_trait;
use grantry_core::provider::env_prefix;
use grantry_core::{
    AccessToken, AccountDetails, AuthorizationCode, AuthorizeRequest, CallbackContext, ConfigError,
    Provider, ProviderContext, ProviderError, RefreshPolicy, RefreshToken, RevokeOutcome,
    ScopeInfo, ScopeSet, TokenErrorKind, TokenSet,
};
use url::Url;

use crate::hooks::{AccountCall, ConnectionCall, Hooks, NoHooks};
use crate::http::{send, short};
use crate::{OAuthSpec, account, authorize, client, revoke, token};
use grantry_core::store::ConnectionRecord;

/// A provider made of a spec and hooks; `Debug` shows no secret.
#[derive(Debug, Clone)]
pub struct OAuthProvider<H = NoHooks> {
    spec: Arc<OAuthSpec>,
    hooks: H,
    http: reqwest::Client,
}

impl<H: Hooks + Default> OAuthProvider<H> {
    /// A provider from its spec, with default hooks.
    pub fn new(spec: OAuthSpec) -> Result<Self, ConfigError> {
        Self::with_hooks(spec, H::default())
    }
}

impl<H: Hooks> OAuthProvider<H> {
    /// A provider from its spec and hooks, with an HTTP client of the spec's timeout.
    pub fn with_hooks(spec: OAuthSpec, hooks: H) -> Result<Self, ConfigError> {
        let http = crate::http::client(spec.http_timeout).map_err(|e| ConfigError::Invalid {
            variable: format!("{}_HTTP_TIMEOUT", env_prefix(&spec.id)),
            reason: format!("cannot build the HTTP client: {e}"),
        })?;
        Ok(Self::with_http(spec, hooks, http))
    }

    /// A provider from its spec and hooks over a given HTTP client, which should come from
    /// [`http::client`](crate::http::client) (timeouts, no redirects) as [`with_hooks`](Self::with_hooks)'s does.
    pub fn with_http(spec: OAuthSpec, hooks: H, http: reqwest::Client) -> Self {
        Self {
            spec: Arc::new(spec),
            hooks,
            http,
        }
    }

    /// The spec in use.
    pub fn spec(&self) -> &OAuthSpec {
        &self.spec
    }

    /// The hooks in use.
    pub fn hooks(&self) -> &H {
        &self.hooks
    }

    /// Calls the token endpoint with `params`; `previous` is kept when no refresh token comes.
    async fn token(
        &self,
        params: Vec<(&str, &str)>,
        previous: Option<&RefreshToken>,
    ) -> Result<TokenSet, ProviderError> {
        let s = &self.spec;
        let request = client::post(
            &self.http,
            &s.endpoints.token,
            &s.client,
            s.auth_method,
            s.body,
            params,
        );
        let answer = send(request, "token endpoint").await?;
        token::parse_token_response(
            answer.status.as_u16(),
            &answer.body,
            answer.retry_after,
            previous,
            |status, code| s.classify_token_error(status, code),
        )
    }

    /// RFC 9207: an `iss` that is not the spec's issuer is refused before the code leaves.
    fn check_issuer(&self, received: Option<&str>) -> Result<(), ProviderError> {
        let refused = |code: &str, description: String| ProviderError::Rejected {
            status: 400,
            code: code.into(),
            description,
        };
        match (received, self.spec.issuer.as_deref()) {
            (Some(got), Some(expected)) if got != expected => Err(refused(
                "invalid_issuer",
                format!(
                    "the authorization response comes from issuer `{}`, expected `{expected}`",
                    short(got)
                ),
            )),
            (None, Some(expected)) if self.spec.require_iss => Err(refused(
                "missing_issuer",
                format!(
                    "{expected} sends `iss` with every authorization response; this one has none"
                ),
            )),
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl<H: Hooks> Provider for OAuthProvider<H> {
    fn id(&self) -> &str {
        &self.spec.id
    }

    fn display_name(&self) -> &str {
        &self.spec.name
    }

    fn scope_catalogue(&self) -> &[ScopeInfo] {
        self.spec.scope_catalogue
    }

    fn requested_scopes(&self) -> &ScopeSet {
        &self.spec.scopes
    }

    fn authorize_url(&self, request: &AuthorizeRequest<'_>) -> Result<Url, ProviderError> {
        Ok(authorize::authorize_url(&self.spec, request))
    }

    fn uses_pkce(&self) -> bool {
        self.spec.pkce
    }

    async fn exchange_code(
        &self,
        code: &AuthorizationCode,
        callback: &CallbackContext<'_>,
    ) -> Result<TokenSet, ProviderError> {
        self.check_issuer(callback.issuer)?;
        let mut params = vec![
            ("grant_type", "authorization_code"),
            ("code", code.secret()),
            ("redirect_uri", self.spec.client.redirect_uri.as_str()),
        ];
        if let Some(verifier) = callback.pkce.filter(|_| self.spec.pkce) {
            params.push(("code_verifier", verifier.secret()));
        }
        let mut tokens = self.token(params, None).await?;
        // RFC 6749 section 5.1: no `scope` means the requested scopes were granted.
        tokens
            .scopes
            .get_or_insert_with(|| self.spec.scopes.clone());
        Ok(tokens)
    }

    async fn refresh(&self, refresh_token: &RefreshToken) -> Result<TokenSet, ProviderError> {
        let mut params = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.secret()),
        ];
        if self.spec.redirect_uri_on_refresh {
            params.push(("redirect_uri", self.spec.client.redirect_uri.as_str()));
        }
        self.token(params, Some(refresh_token)).await
    }

    async fn account(&self, access_token: &AccessToken) -> Result<AccountDetails, ProviderError> {
        let s = &self.spec;
        let (account, document) = account::read_account(
            &self.http,
            &s.endpoints.account,
            access_token,
            &s.account_fields,
        )
        .await?;
        let call = AccountCall {
            http: &self.http,
            token: access_token,
            document: &document,
            spec: s,
        };
        let resources = self.hooks.resources(call).await?;
        Ok(AccountDetails { account, resources })
    }

    async fn revoke(&self, tokens: &TokenSet) -> Result<RevokeOutcome, ProviderError> {
        revoke::revoke(&self.http, &self.spec, tokens).await
    }

    fn revocation_hint(&self) -> Option<&str> {
        self.spec.revocation_hint.as_deref()
    }

    fn refresh_policy(&self) -> RefreshPolicy {
        self.spec.refresh_policy.clone()
    }

    fn classify_token_error(&self, status: u16, error_code: Option<&str>) -> TokenErrorKind {
        self.spec.classify_token_error(status, error_code)
    }

    fn routes(&self, context: &ProviderContext) -> Option<axum::Router> {
        self.hooks.routes(context, &self.http)
    }

    fn openapi(&self) -> Option<utoipa::openapi::OpenApi> {
        self.hooks.openapi()
    }

    async fn connected(&self, context: &ProviderContext, connection: &ConnectionRecord) {
        self.hooks
            .connected(ConnectionCall {
                context,
                http: &self.http,
                connection,
            })
            .await;
    }

    async fn disconnecting(&self, context: &ProviderContext, connection: &ConnectionRecord) {
        self.hooks
            .disconnecting(ConnectionCall {
                context,
                http: &self.http,
                connection,
            })
            .await;
    }

    async fn maintain(&self, context: &ProviderContext, now: chrono::DateTime<chrono::Utc>) {
        self.hooks.maintain(context, &self.http, now).await;
    }
}
