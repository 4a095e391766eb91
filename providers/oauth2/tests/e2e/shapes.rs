//! Providers that bend the standard, played by a small axum server: GitHub's token endpoint
//! (errors answered with 200, comma-separated scopes, `bearer`) and `/user` (numeric `id`,
//! `login`), and hostile answers (5xx, oversized bodies).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use grantry_core::{
    AccessToken, AuthorizationCode, CallbackContext, Provider, ProviderError, ProviderSettings,
    RefreshToken,
};
use grantry_oauth2::{OAuth2Provider, config};
use serde_json::json;

type Seen = Arc<Mutex<Vec<BTreeMap<String, String>>>>;

async fn token(
    State(seen): State<Seen>,
    Form(form): Form<BTreeMap<String, String>>,
) -> impl IntoResponse {
    let answer = match (form.get("code"), form.get("refresh_token")) {
        (Some(code), _) if code == "good" => json!({
            "access_token": "gho_access", "token_type": "bearer", "scope": "read:user,user:email"
        }),
        (_, Some(refresh)) if refresh == "dead" => json!({"error": "bad_refresh_token"}),
        (_, Some(refresh)) if refresh == "busy" => {
            return (StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
        }
        (_, Some(refresh)) if refresh == "huge" => {
            return "x".repeat(2 * 1024 * 1024).into_response();
        }
        _ => json!({
            "error": "bad_verification_code",
            "error_description": "The code passed is incorrect or expired."
        }),
    };
    seen.lock().expect("lock").push(form);
    Json(answer).into_response()
}

async fn user(headers: HeaderMap) -> impl IntoResponse {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer gho_access") {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    Json(json!({"id": 583231, "login": "octocat", "name": null, "email": null})).into_response()
}

async fn github_fake() -> (OAuth2Provider, Seen) {
    let seen = Seen::default();
    let app = Router::new()
        .route("/login/oauth/access_token", post(token))
        .route("/user", get(user))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let values: BTreeMap<String, String> = [
        ("enabled", "true".to_owned()),
        ("client_id", "gh-app".to_owned()),
        ("client_secret", "gh-secret-value".to_owned()),
        ("redirect_uri", "https://app.example/connections".to_owned()),
        ("authorization_url", format!("{base}/login/oauth/authorize")),
        ("token_url", format!("{base}/login/oauth/access_token")),
        ("userinfo_url", format!("{base}/user")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let config = config::from_settings(&ProviderSettings::new("github", values)).expect("config");
    (OAuth2Provider::new(config).expect("provider"), seen)
}

#[tokio::test]
async fn github_answers_are_understood() {
    let (github, seen) = github_fake().await;
    let verifier = grantry_core::PkceVerifier::generate();
    let callback = CallbackContext {
        pkce: Some(&verifier),
        issuer: None,
    };
    let tokens = github
        .exchange_code(&AuthorizationCode::new("good"), &callback)
        .await
        .expect("tokens");
    assert_eq!(tokens.token_type, "Bearer");
    assert_eq!(
        tokens.scopes.map(|s| s.to_string()).as_deref(),
        Some("read:user user:email")
    );
    assert!(tokens.refresh_token.is_none());
    let form = seen.lock().expect("lock")[0].clone();
    assert_eq!(form["grant_type"], "authorization_code");
    assert_eq!(form["client_id"], "gh-app");
    assert_eq!(form["client_secret"], "gh-secret-value");
    assert_eq!(form["code_verifier"], verifier.secret());
    assert_eq!(form["redirect_uri"], "https://app.example/connections");

    let details = github.account(&tokens.access_token).await.expect("account");
    assert_eq!(details.account.id, "583231");
    assert_eq!(
        details.account.name.as_deref(),
        Some("octocat"),
        "login when name is null"
    );
    assert_eq!(details.account.email, None);
    assert!(matches!(
        github.account(&AccessToken::new("other")).await,
        Err(ProviderError::Rejected { status: 401, .. })
    ));

    match github
        .exchange_code(&AuthorizationCode::new("bad"), &callback)
        .await
    {
        Err(ProviderError::Rejected {
            code, description, ..
        }) => {
            assert_eq!(code, "bad_verification_code");
            assert!(description.contains("incorrect or expired"));
        }
        other => panic!("a 200 with an error is a refusal: {other:?}"),
    }
    assert!(matches!(
        github.refresh(&RefreshToken::new("dead")).await,
        Err(ProviderError::InvalidGrant { .. })
    ));
    for transient in ["busy", "huge"] {
        match github.refresh(&RefreshToken::new(transient)).await {
            Err(e @ ProviderError::Transient { .. }) => {
                assert!(!e.to_string().contains(transient), "{e}");
            }
            other => panic!("{transient}: expected a transient failure, got {other:?}"),
        }
    }
}
