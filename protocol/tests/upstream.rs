//! The generic provider against a tiny in-process authorization server: code exchange (form and
//! JSON, Basic and body authentication), refresh, account reading with hooks, RFC 7009
//! revocation semantics, capped bodies and `Retry-After`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use grantry_core::{
    AccessToken, AuthorizationCode, AuthorizeRequest, CallbackContext, ClientSecret, PkceVerifier,
    Provider, ProviderError, RefreshToken, Resource, RevokeOutcome, ScopeSet, StateToken, TokenSet,
};
use grantry_protocol::{
    AccountCall, AccountFields, BodyEncoding, Client, Endpoints, Hooks, OAuthProvider, OAuthSpec,
    TokenAuthMethod,
};
use serde_json::{Value, json};
use url::Url;

/// What the fake server saw: path, authorization header, content type and body of each call.
#[derive(Default)]
struct Seen {
    calls: Vec<(String, Option<String>, String, String)>,
    /// How the revocation endpoint answers the access token: status and body.
    access_revocation: Option<(StatusCode, Value)>,
}

type Shared = Arc<Mutex<Seen>>;

fn record(seen: &Shared, path: &str, headers: &HeaderMap, body: &Bytes) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    seen.lock().expect("lock").calls.push((
        path.to_owned(),
        header("authorization"),
        header("content-type").unwrap_or_default(),
        String::from_utf8_lossy(body).into_owned(),
    ));
}

fn params(content_type: &str, body: &str) -> BTreeMap<String, String> {
    if content_type.starts_with("application/json") {
        let value: BTreeMap<String, Value> = serde_json::from_str(body).expect("json body");
        value
            .into_iter()
            .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_owned()))
            .collect()
    } else {
        url::form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect()
    }
}

async fn token(State(seen): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    record(&seen, "/token", &headers, &body);
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let p = params(content_type, &String::from_utf8_lossy(&body));
    match (
        p.get("grant_type").map(String::as_str),
        p.get("refresh_token").map(String::as_str),
    ) {
        (Some("authorization_code"), _) => axum::Json(json!({
            "access_token": "at-1", "refresh_token": "rt-1", "token_type": "bearer",
            "expires_in": "3600"
        }))
        .into_response(),
        (Some("refresh_token"), Some("busy")) => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "12")],
            "slow down",
        )
            .into_response(),
        (Some("refresh_token"), Some("huge")) => "x".repeat(2 * 1024 * 1024).into_response(),
        (Some("refresh_token"), Some("dead")) => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_grant", "error_description": "revoked"})),
        )
            .into_response(),
        (Some("refresh_token"), _) => {
            axum::Json(json!({"access_token": "at-2", "expires_in": 60})).into_response()
        }
        _ => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "unsupported_grant_type"})),
        )
            .into_response(),
    }
}

async fn revoke(State(seen): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    record(&seen, "/revoke", &headers, &body);
    let p = params("", &String::from_utf8_lossy(&body));
    let access = p.get("token_type_hint").map(String::as_str) == Some("access_token");
    match seen.lock().expect("lock").access_revocation.clone() {
        Some((status, body)) if access => (status, axum::Json(body)).into_response(),
        _ => StatusCode::OK.into_response(),
    }
}

async fn me(State(seen): State<Shared>, headers: HeaderMap) -> Response {
    record(&seen, "/me", &headers, &Bytes::new());
    axum::Json(json!({"uid": 42, "login": "ada", "teams": [{"id": "t1", "name": "Core"}]}))
        .into_response()
}

async fn serve() -> (Url, Shared) {
    let seen = Shared::default();
    let app = Router::new()
        .route("/token", post(token))
        .route("/revoke", post(revoke))
        .route("/me", get(me))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base =
        Url::parse(&format!("http://{}/", listener.local_addr().expect("addr"))).expect("url");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, seen)
}

fn spec(base: &Url) -> OAuthSpec {
    let at = |path: &str| base.join(path).expect("url");
    let client = Client {
        id: "app".into(),
        secret: Some(ClientSecret::new("app-secret")),
        redirect_uri: Url::parse("https://grantry.example/cb").expect("url"),
    };
    let endpoints = Endpoints {
        authorization: at("authorize"),
        token: at("token"),
        revocation: Some(at("revoke")),
        account: at("me"),
    };
    let mut spec = OAuthSpec::new("fake", "Fake", client, endpoints);
    spec.scopes = ScopeSet::parse("read write");
    spec.account_fields = AccountFields {
        id: vec!["sub".into(), "uid".into()],
        name: vec!["name".into(), "login".into()],
        email: vec!["email".into()],
    };
    spec
}

fn tokens(refresh: Option<&str>) -> TokenSet {
    TokenSet {
        access_token: AccessToken::new("at-1"),
        refresh_token: refresh.map(RefreshToken::new),
        token_type: "Bearer".into(),
        expires_at: None,
        scopes: None,
    }
}

#[tokio::test]
async fn the_code_exchange_sends_a_form_with_pkce_and_fills_in_the_requested_scopes() {
    let (base, seen) = serve().await;
    let provider: OAuthProvider = OAuthProvider::new(spec(&base)).expect("provider");
    let verifier = PkceVerifier::generate();
    let context = CallbackContext {
        pkce: Some(&verifier),
        issuer: None,
    };
    let got = provider
        .exchange_code(&AuthorizationCode::new("c0de"), &context)
        .await
        .expect("tokens");
    assert_eq!(got.access_token.secret(), "at-1");
    assert_eq!(got.token_type, "Bearer");
    assert!(got.expires_at.is_some(), "a string expires_in counts");
    assert_eq!(got.scopes, Some(ScopeSet::parse("read write")));
    let calls = &seen.lock().expect("lock").calls;
    let (_, auth, content_type, body) = &calls[0];
    assert_eq!(auth, &None);
    let p = params(content_type, body);
    assert_eq!(p["grant_type"], "authorization_code");
    assert_eq!(p["code_verifier"], verifier.secret());
    assert_eq!(p["redirect_uri"], "https://grantry.example/cb");
    assert_eq!(
        (p["client_id"].as_str(), p["client_secret"].as_str()),
        ("app", "app-secret")
    );
}

#[tokio::test]
async fn json_bodies_basic_auth_and_redirect_uri_on_refresh_are_data() {
    let (base, seen) = serve().await;
    let mut s = spec(&base);
    s.body = BodyEncoding::Json;
    s.auth_method = TokenAuthMethod::ClientSecretBasic;
    s.redirect_uri_on_refresh = true;
    let provider: OAuthProvider = OAuthProvider::new(s).expect("provider");
    let previous = RefreshToken::new("rt-0");
    let got = provider.refresh(&previous).await.expect("tokens");
    assert_eq!(got.access_token.secret(), "at-2");
    assert_eq!(
        got.refresh_token,
        Some(previous),
        "kept when none comes back"
    );
    let calls = &seen.lock().expect("lock").calls;
    let (_, auth, content_type, body) = &calls[0];
    assert!(auth.as_deref().is_some_and(|a| a.starts_with("Basic ")));
    assert_eq!(content_type, "application/json");
    let p = params(content_type, body);
    assert_eq!(p["redirect_uri"], "https://grantry.example/cb");
    assert!(!p.contains_key("client_secret"));
}

#[tokio::test]
async fn rate_limits_oversized_bodies_and_dead_grants_are_classified() {
    let (base, _) = serve().await;
    let provider: OAuthProvider = OAuthProvider::new(spec(&base)).expect("provider");
    match provider.refresh(&RefreshToken::new("busy")).await {
        Err(ProviderError::Transient { retry_after, .. }) => assert_eq!(retry_after, Some(12)),
        other => panic!("expected transient, got {other:?}"),
    }
    match provider.refresh(&RefreshToken::new("huge")).await {
        Err(ProviderError::Transient { reason, .. }) => {
            assert!(reason.contains("larger"), "{reason}")
        }
        other => panic!("expected transient, got {other:?}"),
    }
    assert!(matches!(
        provider.refresh(&RefreshToken::new("dead")).await,
        Err(ProviderError::InvalidGrant { .. })
    ));
}

/// Hooks that map `teams` of the account document to resources.
#[derive(Debug, Default)]
struct Teams;

#[async_trait]
impl Hooks for Teams {
    async fn resources(&self, call: AccountCall<'_>) -> Result<Vec<Resource>, ProviderError> {
        assert_eq!(call.token.secret(), "at-1");
        let teams = call.document["teams"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        Ok(teams
            .iter()
            .map(|t| Resource {
                id: t["id"].as_str().unwrap_or_default().into(),
                name: t["name"].as_str().unwrap_or_default().into(),
                url: None,
                scopes: call.spec.scopes.to_vec(),
                avatar_url: None,
            })
            .collect())
    }
}

#[tokio::test]
async fn the_account_is_mapped_and_hooks_add_its_resources() {
    let (base, seen) = serve().await;
    let provider = OAuthProvider::with_hooks(spec(&base), Teams).expect("provider");
    let details = provider
        .account(&AccessToken::new("at-1"))
        .await
        .expect("account");
    assert_eq!(details.account.id, "42");
    assert_eq!(details.account.name.as_deref(), Some("ada"));
    assert_eq!(details.resources.len(), 1);
    assert_eq!(details.resources[0].scopes, ["read", "write"]);
    let calls = &seen.lock().expect("lock").calls;
    assert_eq!(calls[0].1.as_deref(), Some("Bearer at-1"));
}

#[tokio::test]
async fn revocation_goes_refresh_token_first_then_access_token() {
    let (base, seen) = serve().await;
    let provider: OAuthProvider = OAuthProvider::new(spec(&base)).expect("provider");
    let revoked = provider.revoke(&tokens(Some("rt-1"))).await;
    assert_eq!(revoked, Ok(RevokeOutcome::Revoked));
    let hints: Vec<String> = seen
        .lock()
        .expect("lock")
        .calls
        .iter()
        .map(|(_, _, ct, body)| params(ct, body)["token_type_hint"].clone())
        .collect();
    assert_eq!(hints, ["refresh_token", "access_token"]);

    // `unsupported_token_type` for the access token after a revoked refresh token: revoked.
    let unsupported = (
        StatusCode::BAD_REQUEST,
        json!({"error": "unsupported_token_type"}),
    );
    seen.lock().expect("lock").access_revocation = Some(unsupported);
    assert_eq!(
        provider.revoke(&tokens(Some("rt-1"))).await,
        Ok(RevokeOutcome::Revoked)
    );
    // Without a refresh token it is the server's refusal.
    match provider.revoke(&tokens(None)).await {
        Err(ProviderError::Rejected { code, .. }) => assert_eq!(code, "unsupported_token_type"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // 5xx is transient.
    seen.lock().expect("lock").access_revocation =
        Some((StatusCode::SERVICE_UNAVAILABLE, json!({})));
    assert!(matches!(
        provider.revoke(&tokens(None)).await,
        Err(ProviderError::Transient { .. })
    ));
}

#[tokio::test]
async fn one_revocation_when_the_refresh_token_ends_the_grant_and_none_without_endpoint() {
    let (base, seen) = serve().await;
    let mut s = spec(&base);
    s.revoke_access_token = false;
    let provider: OAuthProvider = OAuthProvider::new(s.clone()).expect("provider");
    assert_eq!(
        provider.revoke(&tokens(Some("rt-1"))).await,
        Ok(RevokeOutcome::Revoked)
    );
    assert_eq!(seen.lock().expect("lock").calls.len(), 1);
    s.endpoints.revocation = None;
    let provider: OAuthProvider = OAuthProvider::new(s).expect("provider");
    assert_eq!(
        provider.revoke(&tokens(Some("rt-1"))).await,
        Ok(RevokeOutcome::Unsupported)
    );
}

#[test]
fn the_authorize_url_carries_pkce_and_extra_parameters_and_debug_hides_the_secret() {
    let base = Url::parse("https://idp.example/").expect("url");
    let mut s = spec(&base);
    s.authorize_params = vec![("audience".into(), "api.example".into())];
    let provider: OAuthProvider = OAuthProvider::new(s.clone()).expect("provider");
    let state = StateToken::new("st4te");
    let verifier = PkceVerifier::generate();
    let request = AuthorizeRequest {
        state: &state,
        scopes: provider.requested_scopes(),
        pkce: Some(&verifier),
    };
    let url = provider.authorize_url(&request).expect("url");
    let q: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(url.path(), "/authorize");
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], "app");
    assert_eq!(q["redirect_uri"], "https://grantry.example/cb");
    assert_eq!(q["scope"], "read write");
    assert_eq!(q["state"], "st4te");
    assert_eq!(q["code_challenge"], verifier.challenge_s256());
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["audience"], "api.example");
    s.pkce = false;
    let plain: OAuthProvider = OAuthProvider::new(s).expect("provider");
    let url = plain.authorize_url(&request).expect("url");
    assert!(!url.as_str().contains("code_challenge"));
    assert!(!plain.uses_pkce());
    let shown = format!("{provider:?}");
    assert!(!shown.contains("app-secret"), "{shown}");
}

#[tokio::test]
async fn a_foreign_or_missing_iss_is_refused_before_the_code_leaves() {
    let (base, seen) = serve().await;
    let mut s = spec(&base);
    s.issuer = Some("https://idp.example".into());
    s.require_iss = true;
    let provider: OAuthProvider = OAuthProvider::new(s).expect("provider");
    let code = AuthorizationCode::new("c0de");
    for (issuer, want) in [
        (Some("https://evil.example"), "invalid_issuer"),
        (None, "missing_issuer"),
    ] {
        let context = CallbackContext { pkce: None, issuer };
        match provider.exchange_code(&code, &context).await {
            Err(ProviderError::Rejected { code, .. }) => assert_eq!(code, want),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    assert!(seen.lock().expect("lock").calls.is_empty());
    let context = CallbackContext {
        pkce: None,
        issuer: Some("https://idp.example"),
    };
    assert!(provider.exchange_code(&code, &context).await.is_ok());
}
