//! Shared setup of tests that run `grantry serve` processes against the fake Atlassian.

use std::time::Duration;

use grantry_atlassian_fake::RunningFake;
use grantry_server::JwtAuthenticator;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::harness::REDIRECT;
use crate::helpers::{Scratch, Server};

/// The environment of a `grantry serve` with Atlassian pointed at `fake`.
pub(crate) fn atlassian_env(scratch: Scratch, fake: &RunningFake, key: &str, jwt: &str) -> Scratch {
    let config = fake.fake.config();
    scratch
        .with("GRANTRY_ENCRYPTION_KEY", key)
        .with("GRANTRY_JWT_SECRET", jwt)
        .with("ENABLE_ATLASSIAN_INTEGRATION", "true")
        .with("ATLASSIAN_CLIENT_ID", &config.client_id)
        .with("ATLASSIAN_CLIENT_SECRET", &config.client_secret)
        .with("ATLASSIAN_REDIRECT_URI", REDIRECT)
        .with("ATLASSIAN_AUTH_URL", &fake.base_url)
        .with("ATLASSIAN_API_URL", &fake.base_url)
}

/// Tokens of the user `alice` and of an admin, signed with `jwt`.
pub(crate) fn alice_and_admin(jwt: &str) -> (String, String) {
    let secret = SecretString::from(jwt.to_owned());
    let sign = |user: &str, role: &str| {
        JwtAuthenticator::issue(&secret, user, role, Duration::from_secs(600)).expect("sign")
    };
    (sign("alice", "user"), sign("root", "admin"))
}

/// Connects `alice`: the state comes from `authorize_on`, the callback goes to `callback_on`.
/// Returns the callback's body.
pub(crate) async fn connect_alice(
    http: &reqwest::Client,
    authorize_on: &Server,
    callback_on: &Server,
    fake: &RunningFake,
    user: &str,
) -> String {
    let auth: Value = http
        .post(authorize_on.url("/api/v1/atlassian/connection/authorize"))
        .bearer_auth(user)
        .send()
        .await
        .expect("authorize")
        .json()
        .await
        .expect("json");
    // The grant holds what the server asked for, as after a real consent.
    let authorization = url::Url::parse(auth["authorization_url"].as_str().expect("url"))
        .expect("authorization URL");
    let scope = authorization
        .query_pairs()
        .find(|(k, _)| k == "scope")
        .map(|(_, v)| v.into_owned())
        .expect("scope");
    let code = fake.fake.issue_code(&scope);
    let resp = http
        .post(callback_on.url("/api/v1/atlassian/connection/callback"))
        .bearer_auth(user)
        .json(&json!({"code": code, "state": auth["state"]}))
        .send()
        .await
        .expect("callback");
    assert_eq!(resp.status(), 200, "connect");
    resp.text().await.expect("body")
}
