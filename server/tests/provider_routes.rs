//! A provider's own routes get the caller and fresh tokens from the `ProviderContext` the server
//! hands to `Provider::routes`, behind the same cross-site guard as the generic routes, whatever
//! the authenticator (here an embedder's own).

use std::sync::Arc;

use async_trait::async_trait;
use axum::body::{Body, to_bytes};
use axum::extract::{FromRef, State};
use axum::http::request::Parts;
use axum::http::{Request, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{Duration, Utc};
use grantry_core::callback::{Callback, Outcome};
use grantry_core::http::{Authentication, Authenticator, Credential, Role};
use grantry_core::keyring::KeyRing;
use grantry_core::refresh::RefreshSettings;
use grantry_core::vault::Vault;
use grantry_core::{
    AccessToken, AccountDetails, ApiError, AuthorizationCode, AuthorizeRequest, CallbackContext,
    FreshToken, Principal, Provider, ProviderContext, ProviderError, RefreshToken, ScopeInfo,
    ScopeSet, StateToken, TokenSet,
};
use grantry_server::testing::TestDatabase;
use grantry_server::{AppState, router};
use secrecy::SecretString;
use serde_json::{Value, json};
use tower::ServiceExt;
use url::Url;

/// An embedder's sign-in: the user named by `x-user`, by a cookie-like credential.
struct Header;

#[async_trait]
impl Authenticator for Header {
    async fn authenticate(&self, parts: &Parts) -> Result<Principal, ApiError> {
        let user = parts
            .headers
            .get("x-user")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ApiError::unauthorized("sign in"))?;
        Ok(Principal {
            user_id: user.to_owned(),
            role: Role::User,
            credential: Credential::Cookie,
        })
    }
}

struct Probe {
    scopes: ScopeSet,
}

/// The state of the probe's own routes.
#[derive(Clone)]
struct Routes {
    context: ProviderContext,
}

impl FromRef<Routes> for ProviderContext {
    fn from_ref(routes: &Routes) -> Self {
        routes.context.clone()
    }
}

/// `Principal` alone needs the context's authentication.
impl FromRef<Routes> for Authentication {
    fn from_ref(routes: &Routes) -> Self {
        routes.context.authentication().clone()
    }
}

async fn me(principal: Principal) -> String {
    principal.user_id
}

async fn token(State(routes): State<Routes>, fresh: FreshToken) -> Json<Value> {
    Json(json!({
        "provider": routes.context.provider_id(),
        "user": fresh.principal.user_id,
        "token": fresh.access.access_token.secret(),
    }))
}

#[async_trait]
impl Provider for Probe {
    fn id(&self) -> &str {
        "probe"
    }

    fn display_name(&self) -> &str {
        "Probe"
    }

    fn scope_catalogue(&self) -> &[ScopeInfo] {
        &[]
    }

    fn requested_scopes(&self) -> &ScopeSet {
        &self.scopes
    }

    fn authorize_url(&self, _request: &AuthorizeRequest<'_>) -> Result<Url, ProviderError> {
        Url::parse("https://probe.example/authorize").map_err(|_| ProviderError::Unsupported("url"))
    }

    async fn exchange_code(
        &self,
        code: &AuthorizationCode,
        _callback: &CallbackContext<'_>,
    ) -> Result<TokenSet, ProviderError> {
        Ok(TokenSet {
            access_token: AccessToken::new(code.secret()),
            refresh_token: None,
            token_type: "Bearer".into(),
            expires_at: Some(Utc::now() + Duration::hours(1)),
            scopes: None,
        })
    }

    async fn refresh(&self, _refresh_token: &RefreshToken) -> Result<TokenSet, ProviderError> {
        Err(ProviderError::Unsupported("refresh"))
    }

    async fn account(&self, _access_token: &AccessToken) -> Result<AccountDetails, ProviderError> {
        Ok(AccountDetails::default())
    }

    fn routes(&self, context: &ProviderContext) -> Option<Router> {
        Some(
            Router::new()
                .route("/me", get(me))
                .route("/token", post(token))
                .with_state(Routes {
                    context: context.clone(),
                }),
        )
    }
}

async fn call(app: &Router, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut request = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).expect("request"))
        .await
        .expect("response");
    let status = response.status().as_u16();
    let body = to_bytes(response.into_body(), 1 << 20).await.expect("body");
    let value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    (status, value)
}

#[tokio::test]
async fn own_routes_authenticate_like_the_generic_ones_and_read_fresh_tokens() {
    let db = TestDatabase::sqlite();
    let store = db.store().await;
    let keys = KeyRing::from_base64(&SecretString::from(KeyRing::generate_key_base64()), None)
        .expect("key");
    let vault = Vault::new(Arc::new(store), Arc::new(keys));
    let probe: Arc<dyn Provider> = Arc::new(Probe {
        scopes: ScopeSet::parse("read"),
    });
    let state = AppState::new(
        vault,
        vec![probe.clone()],
        Arc::new(Header),
        RefreshSettings::default(),
    );
    let app = router(state.clone());
    let alice = ("x-user", "alice");
    let same_site = ("sec-fetch-site", "same-origin");
    let other_site = ("origin", "https://evil.example");

    for path in ["/api/v1/probe/me", "/api/v1/probe/connection/status"] {
        let (status, body) = call(&app, "GET", path, &[]).await;
        assert_eq!((status, &body["error"]), (401, &json!("unauthorized")));
    }
    assert_eq!(
        call(&app, "GET", "/api/v1/probe/me", &[alice]).await,
        (200, json!("alice"))
    );

    // The cross-site guard wraps the embedder's authenticator on the provider's own routes too.
    for path in ["/api/v1/probe/token", "/api/v1/probe/connection/authorize"] {
        let (status, body) = call(&app, "POST", path, &[alice, other_site]).await;
        assert_eq!(
            (status, &body["error"]),
            (403, &json!("cross_site_request")),
            "{path}"
        );
    }

    let (status, body) = call(&app, "POST", "/api/v1/probe/token", &[alice, same_site]).await;
    assert_eq!(
        (status, &body["error"], &body["message"]),
        (
            StatusCode::NOT_FOUND.as_u16(),
            &json!("not_connected"),
            &json!("no probe connection for this user")
        )
    );

    let begun = state
        .connections()
        .begin("alice", probe.as_ref())
        .await
        .expect("begin");
    state
        .connections()
        .complete(
            "alice",
            probe.as_ref(),
            Callback {
                state: StateToken::new(begun.state.secret()),
                outcome: Outcome::Code(AuthorizationCode::new("probe-token")),
                issuer: None,
            },
        )
        .await
        .expect("complete");
    assert_eq!(
        call(&app, "POST", "/api/v1/probe/token", &[alice, same_site]).await,
        (
            200,
            json!({"provider": "probe", "user": "alice", "token": "probe-token"})
        )
    );
    db.cleanup().await;
}
