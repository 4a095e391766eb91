//! An example grantry provider in its own crate — the template for adding a provider.
//!
//! "Example" is a made-up OAuth 2.0 service with task lists. It has what most real services
//! have: an authorization endpoint with PKCE, a JSON token endpoint that takes a form body,
//! refresh tokens that do not rotate, a profile endpoint that also lists the workspaces the
//! grant reaches, and a revocation endpoint. Its paths hang off one base URL:
//!
//! | upstream | what it is |
//! | --- | --- |
//! | `GET {base}/oauth/authorize` | the consent page |
//! | `POST {base}/oauth/token` | code exchange and refresh (form in, JSON out) |
//! | `POST {base}/oauth/revoke` | revocation (RFC 7009) |
//! | `GET {base}/api/me` | `{"id","name","email","workspaces":[{"id","name","url","avatar_url"}]}` |
//! | `GET {base}/api/tasks` | the user's tasks, the content this provider adds a route for |
//!
//! Configuration follows grantry's rule for every provider `foo`, here `example`:
//! `ENABLE_EXAMPLE_INTEGRATION`, `EXAMPLE_CLIENT_ID`, `EXAMPLE_CLIENT_SECRET`,
//! `EXAMPLE_REDIRECT_URI`, `EXAMPLE_OAUTH_SCOPE`, and its own `EXAMPLE_BASE_URL` (or the same
//! keys in lower case under `[providers.example]` in `grantry.toml`).
//!
//! Linking the crate is all it takes: [`register_provider!`](grantry_core::register_provider)
//! puts its factory where the server looks at start-up. A binary must name the crate
//! somewhere ([`link`] is there for that), or the linker drops it.
//! `docs/adding-a-provider.md` walks through this file.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::Json;
use axum::extract::State;
use axum::routing::get;
use chrono::Utc;
use grantry_core::{
    AccessToken, Account, AccountDetails, ApiError, AuthorizationCode, AuthorizeRequest,
    CallbackContext, ClientSecret, ConfigError, FreshToken, Provider, ProviderContext,
    ProviderError, ProviderFactory, ProvidersConfig, RefreshPolicy, RefreshToken, Resource,
    RevokeOutcome, ScopeInfo, ScopeSet, TokenErrorKind, TokenSet,
};
use serde::Deserialize;
use url::Url;

/// The provider id: routes under `/api/v1/example`, variables `EXAMPLE_*`.
pub const ID: &str = "example";

/// The scopes the service knows.
pub const SCOPES: &[ScopeInfo] = &[
    ScopeInfo {
        name: "profile",
        description: "Read your name and e-mail address",
        refresh_token: false,
    },
    ScopeInfo {
        name: "tasks:read",
        description: "Read your task lists",
        refresh_token: false,
    },
    ScopeInfo {
        name: "offline",
        description: "Stay connected while you are away (issues a refresh token)",
        refresh_token: true,
    },
];

/// The scopes asked for when `EXAMPLE_OAUTH_SCOPE` is unset.
pub const DEFAULT_SCOPES: &str = "profile tasks:read offline";

/// How long one upstream call may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);

/// Makes sure the crate is linked (and so registered) by a binary that names nothing else in it.
pub fn link() {
    let _ = ID;
}

/// The provider: the settings of one app registration at the service.
pub struct ExampleProvider {
    client_id: String,
    client_secret: ClientSecret,
    redirect_uri: Url,
    base_url: Url,
    scopes: ScopeSet,
    http: reqwest::Client,
}

impl std::fmt::Debug for ExampleProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExampleProvider")
            .field("client_id", &self.client_id)
            .field("redirect_uri", &self.redirect_uri.as_str())
            .field("base_url", &self.base_url.as_str())
            .finish_non_exhaustive()
    }
}

/// Builds the provider when `ENABLE_EXAMPLE_INTEGRATION` is on; a bad or missing value is an
/// error that names its variable.
fn build(config: &ProvidersConfig) -> Result<Vec<Arc<dyn Provider>>, ConfigError> {
    let section = config.section(ID);
    if !section.enabled()? {
        return Ok(Vec::new());
    }
    let scopes = ScopeSet::parse(section.get("oauth_scope").unwrap_or(DEFAULT_SCOPES));
    let http = reqwest::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| ConfigError::Invalid {
            variable: section.variable("base_url"),
            reason: format!("cannot build an HTTP client: {e}"),
        })?;
    let provider = ExampleProvider {
        client_id: section.require("client_id")?.to_owned(),
        client_secret: section.require_secret("client_secret")?,
        redirect_uri: section.url("redirect_uri", None)?,
        base_url: section.url("base_url", None)?,
        scopes,
        http,
    };
    Ok(vec![Arc::new(provider)])
}

grantry_core::register_provider!(ProviderFactory {
    id: ID,
    name: "Example",
    build,
});

/// A token endpoint answer.
#[derive(Deserialize)]
struct TokenBody {
    access_token: AccessToken,
    refresh_token: Option<RefreshToken>,
    token_type: Option<String>,
    expires_in: Option<i64>,
    scope: Option<String>,
}

/// An OAuth error answer (RFC 6749 section 5.2).
#[derive(Deserialize)]
struct OAuthError {
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /api/me`.
#[derive(Deserialize)]
struct Me {
    id: String,
    name: Option<String>,
    email: Option<String>,
    #[serde(default)]
    workspaces: Vec<Workspace>,
}

#[derive(Deserialize)]
struct Workspace {
    id: String,
    name: String,
    url: Option<String>,
    avatar_url: Option<String>,
}

fn transient(reason: String) -> ProviderError {
    ProviderError::Transient {
        reason,
        retry_after: None,
    }
}

/// A request that did not get an answer: a network failure, never the request's content.
fn send_error(what: &str, e: &reqwest::Error) -> ProviderError {
    let kind = if e.is_timeout() {
        "timed out"
    } else {
        "failed"
    };
    transient(format!("{what} {kind}"))
}

impl ExampleProvider {
    fn endpoint(&self, path: &str) -> Result<Url, ProviderError> {
        self.base_url
            .join(path)
            .map_err(|e| transient(format!("bad upstream URL: {e}")))
    }

    /// Calls the token endpoint with `form`; sorts failures into grantry's three kinds.
    async fn token(&self, form: &[(&str, &str)]) -> Result<TokenSet, ProviderError> {
        let response = self
            .http
            .post(self.endpoint("oauth/token")?)
            .form(form)
            .send()
            .await
            .map_err(|e| send_error("the token request", &e))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| send_error("reading the token answer", &e))?;
        if !status.is_success() {
            let body: Option<OAuthError> = serde_json::from_slice(&bytes).ok();
            let code = body.as_ref().and_then(|b| b.error.clone());
            // Only the error code and description travel on: never the body as a whole.
            let description = body
                .and_then(|b| b.error_description)
                .unwrap_or_else(|| format!("HTTP {}", status.as_u16()));
            return Err(
                match self.classify_token_error(status.as_u16(), code.as_deref()) {
                    TokenErrorKind::Terminal => ProviderError::InvalidGrant { description },
                    TokenErrorKind::Transient => {
                        transient(format!("token endpoint: {description}"))
                    }
                    TokenErrorKind::Rejected => ProviderError::Rejected {
                        status: status.as_u16(),
                        code: code.unwrap_or_else(|| "rejected".to_owned()),
                        description,
                    },
                },
            );
        }
        let body: TokenBody = serde_json::from_slice(&bytes)
            .map_err(|_| transient("the token answer is not the JSON expected".to_owned()))?;
        Ok(TokenSet {
            access_token: body.access_token,
            refresh_token: body.refresh_token,
            token_type: body.token_type.unwrap_or_else(|| "Bearer".to_owned()),
            expires_at: body
                .expires_in
                .map(|s| Utc::now() + chrono::Duration::seconds(s)),
            scopes: body.scope.as_deref().map(ScopeSet::parse),
        })
    }
}

#[async_trait]
impl Provider for ExampleProvider {
    fn id(&self) -> &str {
        ID
    }

    fn display_name(&self) -> &str {
        "Example"
    }

    fn scope_catalogue(&self) -> &[ScopeInfo] {
        SCOPES
    }

    fn requested_scopes(&self) -> &ScopeSet {
        &self.scopes
    }

    fn authorize_url(&self, request: &AuthorizeRequest<'_>) -> Result<Url, ProviderError> {
        let mut url = self.endpoint("oauth/authorize")?;
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("response_type", "code")
                .append_pair("client_id", &self.client_id)
                .append_pair("redirect_uri", self.redirect_uri.as_str())
                .append_pair("scope", &request.scopes.to_string())
                .append_pair("state", request.state.secret());
            if let Some(pkce) = request.pkce {
                query
                    .append_pair("code_challenge", &pkce.challenge_s256())
                    .append_pair("code_challenge_method", "S256");
            }
        }
        Ok(url)
    }

    fn uses_pkce(&self) -> bool {
        true
    }

    async fn exchange_code(
        &self,
        code: &AuthorizationCode,
        callback: &CallbackContext<'_>,
    ) -> Result<TokenSet, ProviderError> {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code.secret()),
            ("redirect_uri", self.redirect_uri.as_str()),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.secret()),
        ];
        if let Some(pkce) = callback.pkce {
            form.push(("code_verifier", pkce.secret()));
        }
        self.token(&form).await
    }

    async fn refresh(&self, refresh_token: &RefreshToken) -> Result<TokenSet, ProviderError> {
        self.token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.secret()),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.secret()),
        ])
        .await
    }

    async fn account(&self, access_token: &AccessToken) -> Result<AccountDetails, ProviderError> {
        let response = self
            .http
            .get(self.endpoint("api/me")?)
            .bearer_auth(access_token.secret())
            .send()
            .await
            .map_err(|e| send_error("the profile request", &e))?;
        let status = response.status();
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(transient(format!("profile: HTTP {}", status.as_u16())));
        }
        if !status.is_success() {
            return Err(ProviderError::Rejected {
                status: status.as_u16(),
                code: "profile_refused".to_owned(),
                description: format!("the profile endpoint answered HTTP {}", status.as_u16()),
            });
        }
        let me: Me = response
            .json()
            .await
            .map_err(|_| transient("the profile is not the JSON expected".to_owned()))?;
        let granted: Vec<String> = self.scopes.iter().map(str::to_owned).collect();
        Ok(AccountDetails {
            account: Account {
                id: me.id,
                name: me.name,
                email: me.email,
            },
            resources: me
                .workspaces
                .into_iter()
                .map(|w| Resource {
                    id: w.id,
                    name: w.name,
                    url: w.url,
                    scopes: granted.clone(),
                    avatar_url: w.avatar_url,
                })
                .collect(),
        })
    }

    async fn revoke(&self, tokens: &TokenSet) -> Result<RevokeOutcome, ProviderError> {
        // Revoking the refresh token ends the whole grant; without one, the access token.
        let (token, hint) = match &tokens.refresh_token {
            Some(refresh) => (refresh.secret(), "refresh_token"),
            None => (tokens.access_token.secret(), "access_token"),
        };
        let response = self
            .http
            .post(self.endpoint("oauth/revoke")?)
            .form(&[
                ("token", token),
                ("token_type_hint", hint),
                ("client_id", self.client_id.as_str()),
                ("client_secret", self.client_secret.secret()),
            ])
            .send()
            .await
            .map_err(|e| send_error("the revocation request", &e))?;
        if response.status().is_success() {
            Ok(RevokeOutcome::Revoked)
        } else {
            Err(transient(format!(
                "revocation: HTTP {}",
                response.status().as_u16()
            )))
        }
    }

    fn refresh_policy(&self) -> RefreshPolicy {
        RefreshPolicy {
            rotates: false,
            refresh_margin: Duration::from_secs(300),
            ..RefreshPolicy::default()
        }
    }

    /// `GET /api/v1/example/tasks`: the user's tasks, with a token refreshed on the way in.
    fn routes(&self, context: &ProviderContext) -> Option<axum::Router> {
        let upstream = TasksUpstream {
            http: self.http.clone(),
            url: self.endpoint("api/tasks").ok()?,
            context: context.clone(),
        };
        Some(
            axum::Router::new()
                .route("/tasks", get(tasks))
                .with_state(upstream),
        )
    }
}

/// What the tasks route needs from the provider, and the context [`FreshToken`] reads.
#[derive(Clone)]
struct TasksUpstream {
    http: reqwest::Client,
    url: Url,
    context: ProviderContext,
}

impl axum::extract::FromRef<TasksUpstream> for ProviderContext {
    fn from_ref(upstream: &TasksUpstream) -> Self {
        upstream.context.clone()
    }
}

/// The upstream's task list, passed through. [`FreshToken`] authenticates the user and hands
/// over an access token of this route's provider that stays valid for a while (refreshed first
/// when due): 404 `not_connected`, 409 `needs_reauth` otherwise.
async fn tasks(
    State(upstream): State<TasksUpstream>,
    fresh: FreshToken,
) -> Result<Json<serde_json::Value>, ApiError> {
    let response = upstream
        .http
        .get(upstream.url)
        .bearer_auth(fresh.access.access_token.secret())
        .send()
        .await
        .map_err(|_| ApiError::upstream("Example does not answer"))?;
    if !response.status().is_success() {
        return Err(ApiError::upstream(format!(
            "Example answered HTTP {}",
            response.status().as_u16()
        )));
    }
    let tasks = response
        .json()
        .await
        .map_err(|_| ApiError::upstream("Example answered something that is not JSON"))?;
    Ok(Json(tasks))
}
