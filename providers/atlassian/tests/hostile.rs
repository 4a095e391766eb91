//! The Atlassian client against hostile upstreams: huge, malformed, failing, hanging, cut off.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use grantry_core::provider::build_providers;
use grantry_core::{
    AccessToken, AuthorizationCode, CallbackContext, Provider, ProviderError, ProviderSettings,
    ProvidersConfig, RefreshToken,
};

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    base
}

fn provider(base: &str) -> Arc<dyn Provider> {
    let values: BTreeMap<String, String> = [
        ("enabled", "true"),
        ("client_id", "cid"),
        ("client_secret", "csecret"),
        ("redirect_uri", "http://localhost:3000/settings/connections"),
        ("auth_url", base),
        ("api_url", base),
        ("http_timeout", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let config = ProvidersConfig::new([ProviderSettings::new("atlassian", values)]);
    // Naming the crate links it, so its registration is found by `build_providers`.
    assert_eq!(grantry_atlassian::ID, "atlassian");
    build_providers(&config).expect("providers").remove(0)
}

async fn exchange(app: Router) -> ProviderError {
    let base = serve(app).await;
    provider(&base)
        .exchange_code(&AuthorizationCode::new("code"), &CallbackContext::default())
        .await
        .expect_err("must fail")
}

fn assert_transient(e: &ProviderError, needle: &str) {
    match e {
        ProviderError::Transient { reason, .. } => assert!(reason.contains(needle), "{reason}"),
        other => panic!("expected a transient error containing {needle:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn a_huge_body_is_capped() {
    let huge = vec![b'a'; 5 * 1024 * 1024];
    let e =
        exchange(Router::new().route("/oauth/token", post(move || async move { huge.clone() })))
            .await;
    assert_transient(&e, "larger than");
}

#[tokio::test]
async fn a_non_json_body_is_a_transient_error() {
    let e =
        exchange(Router::new().route("/oauth/token", post(|| async { "<html>oops</html>" }))).await;
    assert_transient(&e, "not a token response");
}

#[tokio::test]
async fn server_errors_and_rate_limits_are_transient() {
    let e =
        exchange(Router::new().route("/oauth/token", post(|| async { StatusCode::BAD_GATEWAY })))
            .await;
    assert_transient(&e, "502");
    let e = exchange(Router::new().route(
        "/oauth/token",
        post(|| async {
            let mut headers = HeaderMap::new();
            headers.insert(header::RETRY_AFTER, "7".parse().expect("header"));
            (StatusCode::TOO_MANY_REQUESTS, headers, "slow down")
        }),
    ))
    .await;
    assert!(
        matches!(
            e,
            ProviderError::Transient {
                retry_after: Some(7),
                ..
            }
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn refusals_are_classified() {
    let e = exchange(Router::new().route(
        "/oauth/token",
        post(|| async {
            (
                StatusCode::BAD_REQUEST,
                r#"{"error":"invalid_request","error_description":"authorization_code is invalid"}"#,
            )
        }),
    ))
    .await;
    assert!(
        matches!(&e, ProviderError::Rejected { status: 400, code, .. } if code == "invalid_request"),
        "{e:?}"
    );

    let base = serve(Router::new().route(
        "/oauth/token",
        post(|| async {
            (
                StatusCode::FORBIDDEN,
                r#"{"error":"invalid_grant","error_description":"Unknown or invalid refresh token."}"#,
            )
        }),
    ))
    .await;
    let e = provider(&base)
        .refresh(&RefreshToken::new("old-refresh-token-value"))
        .await
        .expect_err("refused");
    assert!(e.is_terminal(), "{e:?}");
    assert!(!e.to_string().contains("old-refresh-token-value"));
}

#[tokio::test]
async fn a_hanging_upstream_times_out() {
    let e = exchange(Router::new().route(
        "/oauth/token",
        post(|| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            "late"
        }),
    ))
    .await;
    assert_transient(&e, "timed out");
}

#[tokio::test]
async fn a_connection_cut_midway_is_transient() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            let _ = socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{\"access_to")
                .await;
            drop(socket);
        }
    });
    let e = provider(&base)
        .exchange_code(&AuthorizationCode::new("code"), &CallbackContext::default())
        .await
        .expect_err("cut off");
    assert!(e.is_transient(), "{e:?}");
}

#[tokio::test]
async fn identity_and_sites_failures_are_reported() {
    let app = Router::new()
        .route(
            "/me",
            get(|| async {
                (
                    StatusCode::UNAUTHORIZED,
                    r#"{"code":401,"message":"Unauthorized; scope does not match"}"#,
                )
            }),
        )
        .route("/oauth/token/accessible-resources", get(|| async { "[]" }));
    let base = serve(app).await;
    let e = provider(&base)
        .account(&AccessToken::new("at"))
        .await
        .expect_err("refused");
    assert!(
        matches!(e, ProviderError::Rejected { status: 401, .. }),
        "{e:?}"
    );

    let app = Router::new()
        .route(
            "/me",
            get(|| async { r#"{"account_id":"a-1","name":"N","email":"e@x"}"# }),
        )
        .route(
            "/oauth/token/accessible-resources",
            get(|| async { StatusCode::SERVICE_UNAVAILABLE.into_response() }),
        );
    let base = serve(app).await;
    let e = provider(&base)
        .account(&AccessToken::new("at"))
        .await
        .expect_err("sites down");
    assert!(e.is_transient(), "{e:?}");
}
