//! An example grantry provider in its own crate — the template for adding a provider.
//!
//! "Example" is a made-up OAuth 2.0 service with task lists: PKCE, a form-encoded token
//! endpoint, refresh tokens that do not rotate, RFC 7009 revocation, and a profile that also
//! lists the workspaces the grant reaches. Its paths hang off one base URL:
//!
//! | upstream | what it is |
//! | --- | --- |
//! | `GET {base}/oauth/authorize` | the consent page |
//! | `POST {base}/oauth/token` | code exchange and refresh (form in, JSON out) |
//! | `POST {base}/oauth/revoke` | revocation (RFC 7009) |
//! | `GET {base}/api/me` | `{"id","name","email","workspaces":[{"id","name","url","avatar_url"}]}` |
//! | `GET {base}/api/tasks` | the user's tasks, the content this provider adds a route for |
//!
//! The provider is data ([`OAuthSpec`]: endpoints, scopes, PKCE, the account's fields) plus
//! [`Hooks`] for what data cannot say: the workspaces as resources and the `/tasks` route.
//! [`grantry_protocol`] does the protocol. Configuration: `ENABLE_EXAMPLE_INTEGRATION`,
//! `EXAMPLE_CLIENT_ID`, `EXAMPLE_CLIENT_SECRET`, `EXAMPLE_REDIRECT_URI`, `EXAMPLE_OAUTH_SCOPE`
//! and `EXAMPLE_BASE_URL` (or `[providers.example]` in `grantry.toml`). Linking the crate
//! registers it; a binary names it ([`link`]) so the linker keeps it.
//! `docs/adding-a-provider.md` walks through this file.

use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::State;
use axum::{Json, routing::get};
use grantry_core::{ApiError, ConfigError, FreshToken, Provider, ProviderError, ProviderFactory};
use grantry_core::{ProviderContext, ProvidersConfig, Resource, RouteState, ScopeInfo, ScopeSet};
use grantry_protocol::http::{get_json, transient};
use grantry_protocol::{AccountCall, AccountFields, Client, Endpoints, Hooks, OAuthProvider};
use grantry_protocol::{OAuthSpec, refresh_scope, scope};
use serde::Deserialize;
use url::Url;

/// The provider id: routes under `/api/v1/example`, variables `EXAMPLE_*`.
pub const ID: &str = "example";

/// The scopes the service knows.
pub const SCOPES: &[ScopeInfo] = &[
    scope("profile", "Read your name and e-mail address"),
    scope("tasks:read", "Read your task lists"),
    refresh_scope(
        "offline",
        "Stay connected while you are away (issues a refresh token)",
    ),
];

/// The scopes asked for when `EXAMPLE_OAUTH_SCOPE` is unset.
pub const DEFAULT_SCOPES: &str = "profile tasks:read offline";

/// Makes sure the crate is linked (and so registered) by a binary that names nothing else in it.
pub fn link() {
    let _ = ID;
}

/// Example's hooks; they know where the task list is.
#[derive(Debug, Clone)]
pub struct Workspaces(Url);

/// A workspace in the `/api/me` document.
#[derive(Deserialize)]
struct Workspace {
    id: String,
    name: String,
    url: Option<String>,
    avatar_url: Option<String>,
}

#[async_trait]
impl Hooks for Workspaces {
    /// The workspaces of the profile document, each with the requested scopes.
    async fn resources(&self, call: AccountCall<'_>) -> Result<Vec<Resource>, ProviderError> {
        let workspaces = call.document.get("workspaces").cloned().unwrap_or_default();
        let list: Option<Vec<Workspace>> = serde_json::from_value(workspaces)
            .map_err(|_| transient("the profile's workspaces are malformed", None))?;
        let scopes = call.spec.scopes.to_vec();
        let resource = |w: Workspace| Resource {
            id: w.id,
            name: w.name,
            url: w.url,
            scopes: scopes.clone(),
            avatar_url: w.avatar_url,
        };
        Ok(list.unwrap_or_default().into_iter().map(resource).collect())
    }

    /// `GET /api/v1/example/tasks`: the user's tasks, with a token refreshed on the way in.
    fn routes(&self, context: &ProviderContext, http: &reqwest::Client) -> Option<axum::Router> {
        let router = axum::Router::new().route("/tasks", get(tasks));
        Some(router.with_state(context.with((http.clone(), self.0.clone()))))
    }
}

/// The upstream's task list, passed through. [`FreshToken`] authenticates the user and hands
/// over a valid access token of this provider (refreshed first when due).
async fn tasks(
    State(state): State<RouteState<(reqwest::Client, Url)>>,
    fresh: FreshToken,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (http, url) = state.data;
    let token = &fresh.access.access_token;
    // Recorded in the upstream histogram and traced as an `upstream` span (operation `tasks`).
    let context = &state.context;
    let tasks = context
        .telemetry()
        .upstream(
            context.provider_id(),
            "tasks",
            get_json(&http, url, token, "Example's task list"),
        )
        .await;
    tasks
        .map(Json)
        .map_err(|e| ApiError::upstream(e.to_string()))
}

/// Builds the provider when `ENABLE_EXAMPLE_INTEGRATION` is on; a bad or missing value is an
/// error that names its variable.
fn build(config: &ProvidersConfig) -> Result<Vec<Arc<dyn Provider>>, ConfigError> {
    let section = config.section(ID);
    if !section.enabled()? {
        return Ok(Vec::new());
    }
    let client = Client::from_settings(&section)?;
    let base = section.url("base_url", None)?;
    let at = |path: &str| {
        base.join(path).map_err(|e| ConfigError::Invalid {
            variable: section.variable("base_url"),
            reason: e.to_string(),
        })
    };
    let endpoints = Endpoints {
        authorization: at("oauth/authorize")?,
        token: at("oauth/token")?,
        revocation: Some(at("oauth/revoke")?),
        account: at("api/me")?,
    };
    let mut spec = OAuthSpec::new(ID, "Example", client, endpoints);
    spec.scope_catalogue = SCOPES;
    spec.scopes = ScopeSet::parse(section.get("oauth_scope").unwrap_or(DEFAULT_SCOPES));
    spec.account_fields = AccountFields::new("id", "name", "email");
    // Revoking the refresh token ends the whole grant: one call is enough.
    spec.revoke_access_token = false;
    let hooks = Workspaces(at("api/tasks")?);
    Ok(vec![Arc::new(OAuthProvider::with_hooks(spec, hooks)?)])
}

grantry_core::register_provider!(ProviderFactory {
    id: ID,
    name: "Example",
    build,
});
