//! The fake Atlassian driven over real HTTP.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use grantry_atlassian_fake::{
    ACME_SITE_ID, BETA_SITE_ID, Counters, Failure, FakeAtlassian, FakeConfig, RunningFake,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use url::Url;

const REDIRECT: &str = "http://localhost:3000/settings/connections";
const SCOPE: &str = "read:me read:jira-work read:confluence-content.all offline_access";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

async fn start() -> (RunningFake, reqwest::Client) {
    let running = FakeAtlassian::start(FakeConfig::default())
        .await
        .expect("fake starts");
    (running, client())
}

fn authorize_params(state: &str) -> Vec<(&'static str, String)> {
    vec![
        ("audience", "api.atlassian.com".to_owned()),
        ("client_id", "fake-client-id".to_owned()),
        ("scope", SCOPE.to_owned()),
        ("redirect_uri", REDIRECT.to_owned()),
        ("state", state.to_owned()),
        ("response_type", "code".to_owned()),
        ("prompt", "consent".to_owned()),
    ]
}

async fn post_token(
    running: &RunningFake,
    http: &reqwest::Client,
    body: Value,
) -> (StatusCode, Value) {
    let response = http
        .post(running.url("/oauth/token"))
        .json(&body)
        .send()
        .await
        .expect("token call");
    let status = response.status();
    let text = response.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, json)
}

fn exchange_body(code: &str) -> Value {
    json!({
        "grant_type": "authorization_code",
        "client_id": "fake-client-id",
        "client_secret": "fake-client-secret",
        "code": code,
        "redirect_uri": REDIRECT,
    })
}

fn refresh_body(refresh_token: &str) -> Value {
    json!({
        "grant_type": "refresh_token",
        "client_id": "fake-client-id",
        "client_secret": "fake-client-secret",
        "refresh_token": refresh_token,
    })
}

/// Exchanges a freshly minted code; returns (access token, refresh token).
async fn connect(running: &RunningFake, http: &reqwest::Client) -> (String, String) {
    let code = running.fake.issue_code(SCOPE);
    let (status, body) = post_token(running, http, exchange_body(&code)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (
        body["access_token"].as_str().expect("access").to_owned(),
        body["refresh_token"].as_str().expect("refresh").to_owned(),
    )
}

async fn refresh(running: &RunningFake, http: &reqwest::Client, rt: &str) -> (StatusCode, Value) {
    post_token(running, http, refresh_body(rt)).await
}

async fn me_status(running: &RunningFake, http: &reqwest::Client, at: &str) -> StatusCode {
    http.get(running.url("/me"))
        .bearer_auth(at)
        .send()
        .await
        .expect("me")
        .status()
}

fn invalid_grant() -> Value {
    json!({"error": "invalid_grant", "error_description": "Unknown or invalid refresh token."})
}

fn query_of(location: &str) -> HashMap<String, String> {
    Url::parse(location)
        .expect("location is a URL")
        .query_pairs()
        .into_owned()
        .collect()
}

#[tokio::test]
async fn base_url_has_no_trailing_slash() {
    let (running, _) = start().await;
    assert!(running.base_url.starts_with("http://127.0.0.1:"));
    assert!(!running.base_url.ends_with('/'));
    assert_eq!(running.base_url, format!("http://{}", running.addr));
}

#[tokio::test]
async fn consent_page_renders() {
    let (running, http) = start().await;
    let response = http
        .get(running.url("/authorize"))
        .query(&authorize_params("st<a>te-1"))
        .send()
        .await
        .expect("authorize");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()[reqwest::header::CONTENT_TYPE]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let page = response.text().await.expect("page");
    assert!(page.contains(r#"<form method="post" action="/authorize/decision">"#));
    assert!(page.contains(r#"name="decision" value="accept">Accept</button>"#));
    assert!(page.contains(r#"name="decision" value="decline">Decline</button>"#));
    assert!(page.contains(r#"<input type="hidden" name="client_id" value="fake-client-id">"#));
    assert!(page.contains(&format!(
        r#"<input type="hidden" name="redirect_uri" value="{REDIRECT}">"#
    )));
    assert!(page.contains(&format!(
        r#"<input type="hidden" name="scope" value="{SCOPE}">"#
    )));
    // The state is escaped, never injected as markup.
    assert!(page.contains(r#"<input type="hidden" name="state" value="st&lt;a&gt;te-1">"#));
    assert!(page.contains("Ada Lovelace"));
    assert!(page.contains("ada@example.com"));
    assert!(page.contains("<code>read:jira-work</code>"));
    assert!(page.contains("<code>offline_access</code>"));
    assert_eq!(running.fake.counters().authorize, 1);
}

#[tokio::test]
async fn authorize_rejects_bad_requests_without_redirecting() {
    let (running, http) = start().await;
    let cases: [(&str, Option<&str>, &str); 7] = [
        ("client_id", Some("someone-else"), "client_id is unknown"),
        (
            "redirect_uri",
            Some("http://localhost:3000/settings/connections/"),
            "redirect_uri does not match",
        ),
        ("redirect_uri", None, "redirect_uri is missing"),
        ("response_type", Some("token"), "response_type must be code"),
        ("audience", None, "audience is missing"),
        ("state", None, "state is missing"),
        ("scope", Some(""), "scope is missing"),
    ];
    for (key, value, message) in cases {
        let params: Vec<(&str, String)> = authorize_params("s")
            .into_iter()
            .filter_map(|(k, v)| {
                if k != key {
                    Some((k, v))
                } else {
                    value.map(|value| (k, value.to_owned()))
                }
            })
            .collect();
        let response = http
            .get(running.url("/authorize"))
            .query(&params)
            .send()
            .await
            .expect("authorize");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{key}");
        assert!(response.headers().get(reqwest::header::LOCATION).is_none());
        let text = response.text().await.expect("body");
        assert!(text.contains(message), "{key}: {text}");
    }
    assert_eq!(running.fake.counters().authorize, 7);
}

#[tokio::test]
async fn accept_redirects_with_a_code_and_the_state() {
    let (running, http) = start().await;
    let response = http
        .post(running.url("/authorize/decision"))
        .form(&[
            ("client_id", "fake-client-id"),
            ("redirect_uri", REDIRECT),
            ("scope", SCOPE),
            ("state", "abc 123&x"),
            ("decision", "accept"),
        ])
        .send()
        .await
        .expect("decision");
    assert_eq!(response.status(), StatusCode::FOUND);
    let location = response.headers()[reqwest::header::LOCATION]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        location.starts_with(&format!("{REDIRECT}?code=")),
        "{location}"
    );
    let query = query_of(&location);
    assert_eq!(query["state"], "abc 123&x");
    let code = &query["code"];
    assert!(code.len() >= 32, "{code}");
    assert!(!query.contains_key("error"));

    // The code works once, with the scope the user consented to.
    let (status, body) = post_token(&running, &http, exchange_body(code)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["scope"], SCOPE);
    assert!(body["refresh_token"].is_string());
}

#[tokio::test]
async fn decline_redirects_with_access_denied() {
    let (running, http) = start().await;
    let response = http
        .post(running.url("/authorize/decision"))
        .form(&[
            ("client_id", "fake-client-id"),
            ("redirect_uri", REDIRECT),
            ("scope", SCOPE),
            ("state", "st-9"),
            ("decision", "decline"),
        ])
        .send()
        .await
        .expect("decision");
    assert_eq!(response.status(), StatusCode::FOUND);
    let location = response.headers()[reqwest::header::LOCATION]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_eq!(
        location,
        format!("{REDIRECT}?error=access_denied&state=st-9")
    );
    assert!(!query_of(&location).contains_key("code"));
}

#[tokio::test]
async fn decision_with_a_foreign_redirect_uri_is_refused() {
    let (running, http) = start().await;
    let response = http
        .post(running.url("/authorize/decision"))
        .form(&[
            ("client_id", "fake-client-id"),
            ("redirect_uri", "https://evil.example/cb"),
            ("scope", SCOPE),
            ("state", "s"),
            ("decision", "accept"),
        ])
        .send()
        .await
        .expect("decision");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.headers().get(reqwest::header::LOCATION).is_none());
}

#[tokio::test]
async fn code_exchange_gives_tokens() {
    let (running, http) = start().await;
    let code = running.fake.issue_code(SCOPE);
    assert!(code.len() >= 32);
    let (status, body) = post_token(&running, &http, exchange_body(&code)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let access = body["access_token"].as_str().expect("access_token");
    let refresh = body["refresh_token"].as_str().expect("refresh_token");
    assert!(access.len() >= 40, "{access}");
    assert!(refresh.len() >= 40, "{refresh}");
    assert_ne!(access, refresh);
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["scope"], SCOPE);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(me_status(&running, &http, access).await, StatusCode::OK);
    assert_eq!(running.fake.counters().token_exchange, 1);
}

#[tokio::test]
async fn no_offline_access_means_no_refresh_token() {
    let (running, http) = start().await;
    let code = running.fake.issue_code("read:me read:jira-work");
    let (status, body) = post_token(&running, &http, exchange_body(&code)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["access_token"].is_string());
    assert!(body.get("refresh_token").is_none(), "{body}");
    assert_eq!(body["scope"], "read:me read:jira-work");
}

#[tokio::test]
async fn a_code_is_single_use_and_bound_to_its_redirect_uri() {
    let (running, http) = start().await;
    let invalid_code =
        json!({"error": "invalid_request", "error_description": "authorization_code is invalid"});

    let code = running.fake.issue_code(SCOPE);
    let (status, _) = post_token(&running, &http, exchange_body(&code)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = post_token(&running, &http, exchange_body(&code)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body, invalid_code);

    let (status, body) = post_token(&running, &http, exchange_body("no-such-code")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body, invalid_code);

    let code = running.fake.issue_code(SCOPE);
    let mut wrong_redirect = exchange_body(&code);
    wrong_redirect["redirect_uri"] = json!("http://localhost:3000/other");
    let (status, body) = post_token(&running, &http, wrong_redirect).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body, invalid_code);

    assert_eq!(running.fake.counters().token_exchange, 4);
}

#[tokio::test]
async fn a_code_expires_after_ten_minutes() {
    let (running, http) = start().await;
    let fresh = running.fake.issue_code(SCOPE);
    let stale = running.fake.issue_code(SCOPE);
    running.fake.advance_clock(Duration::from_secs(9 * 60));
    let (status, _) = post_token(&running, &http, exchange_body(&fresh)).await;
    assert_eq!(status, StatusCode::OK);
    running.fake.advance_clock(Duration::from_secs(60));
    let (status, body) = post_token(&running, &http, exchange_body(&stale)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error_description"], "authorization_code is invalid");
}

#[tokio::test]
async fn wrong_client_credentials_are_refused() {
    let (running, http) = start().await;
    let code = running.fake.issue_code(SCOPE);
    let mut body = exchange_body(&code);
    body["client_secret"] = json!("not-the-secret");
    let (status, answer) = post_token(&running, &http, body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        answer,
        json!({"error": "access_denied", "error_description": "Unauthorized"})
    );

    let mut body = exchange_body(&code);
    body["client_id"] = json!("someone-else");
    let (status, answer) = post_token(&running, &http, body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer["error"], "access_denied");

    // The refused calls did not burn the code.
    let (status, _) = post_token(&running, &http, exchange_body(&code)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn only_json_token_requests_are_accepted() {
    let (running, http) = start().await;
    let code = running.fake.issue_code(SCOPE);
    let response = http
        .post(running.url("/oauth/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", "fake-client-id"),
            ("client_secret", "fake-client-secret"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
        ])
        .send()
        .await
        .expect("form call");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"], "invalid_request");
    assert!(
        body["error_description"]
            .as_str()
            .expect("text")
            .contains("application/json")
    );

    let response = http
        .post(running.url("/oauth/token"))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body("{\"grant_type\": ")
        .send()
        .await
        .expect("broken json");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"], "invalid_request");

    let (status, body) = post_token(
        &running,
        &http,
        json!({"grant_type": "password", "client_id": "fake-client-id", "client_secret": "fake-client-secret"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "unsupported_grant_type");

    // Nothing of this consumed the code.
    let (status, _) = post_token(&running, &http, exchange_body(&code)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn refresh_rotates_and_reuse_is_a_breach() {
    let (running, http) = start().await;
    let (at1, rt1) = connect(&running, &http).await;

    let (status, body) = refresh(&running, &http, &rt1).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let at2 = body["access_token"].as_str().expect("access").to_owned();
    let rt2 = body["refresh_token"].as_str().expect("refresh").to_owned();
    assert_ne!(at2, at1);
    assert_ne!(rt2, rt1);
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["scope"], SCOPE);
    assert_eq!(body["token_type"], "Bearer");
    // The older access token lives on until it expires.
    assert_eq!(me_status(&running, &http, &at1).await, StatusCode::OK);
    assert_eq!(me_status(&running, &http, &at2).await, StatusCode::OK);

    // Leeway 0: the rotated-out token is refused ...
    let (status, body) = refresh(&running, &http, &rt1).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body, invalid_grant());
    // ... and that reuse killed the whole grant, the new refresh token included.
    let (status, body) = refresh(&running, &http, &rt2).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body, invalid_grant());
    assert_eq!(
        me_status(&running, &http, &at2).await,
        StatusCode::UNAUTHORIZED
    );

    // Other grants are untouched.
    let (_, other_rt) = connect(&running, &http).await;
    let (status, _) = refresh(&running, &http, &other_rt).await;
    assert_eq!(status, StatusCode::OK);

    let (status, body) = refresh(&running, &http, "fake-rt-unknown").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body, invalid_grant());

    let counters = running.fake.counters();
    assert_eq!(counters.token_refresh, 5);
    assert_eq!(counters.token_exchange, 2);
}

#[tokio::test]
async fn reuse_within_the_leeway_works() {
    let (running, http) = start().await;
    running.fake.set_reuse_leeway(Duration::from_secs(60));
    let (_, rt1) = connect(&running, &http).await;

    let (status, body) = refresh(&running, &http, &rt1).await;
    assert_eq!(status, StatusCode::OK);
    let rt2 = body["refresh_token"].as_str().expect("rt2").to_owned();

    // A second replica still holding rt1 is served within the leeway.
    let (status, body) = refresh(&running, &http, &rt1).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rt3 = body["refresh_token"].as_str().expect("rt3").to_owned();
    assert_ne!(rt3, rt2);

    // The token rotated to first still works.
    let (status, _) = refresh(&running, &http, &rt2).await;
    assert_eq!(status, StatusCode::OK);

    // The leeway runs from the first rotation, not from each reuse: past it, reuse is a breach.
    running.fake.advance_clock(Duration::from_secs(61));
    let (status, body) = refresh(&running, &http, &rt1).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body, invalid_grant());
    let (status, _) = refresh(&running, &http, &rt3).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn leeway_from_the_config() {
    let config = FakeConfig {
        reuse_leeway: Duration::from_secs(600),
        ..FakeConfig::default()
    };
    let running = FakeAtlassian::start(config).await.expect("start");
    let http = client();
    let (_, rt1) = connect(&running, &http).await;
    assert_eq!(refresh(&running, &http, &rt1).await.0, StatusCode::OK);
    running.fake.advance_clock(Duration::from_secs(599));
    assert_eq!(refresh(&running, &http, &rt1).await.0, StatusCode::OK);
}

#[tokio::test]
async fn omitted_refresh_token_keeps_the_old_one_valid() {
    let (running, http) = start().await;
    let (_, rt1) = connect(&running, &http).await;
    running.fake.omit_refresh_token_next(2);

    for _ in 0..2 {
        let (status, body) = refresh(&running, &http, &rt1).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body["access_token"].is_string());
        assert!(body.get("refresh_token").is_none(), "{body}");
    }
    // The client kept rt1, as it must; it still works and rotation resumes.
    let (status, body) = refresh(&running, &http, &rt1).await;
    assert_eq!(status, StatusCode::OK);
    let rt2 = body["refresh_token"].as_str().expect("rotated again");
    assert_ne!(rt2, rt1);
    assert_eq!(
        refresh(&running, &http, &rt1).await.0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn revoke_all_kills_every_token_issued_so_far() {
    let (running, http) = start().await;
    let (at1, rt1) = connect(&running, &http).await;
    let (at2, rt2) = connect(&running, &http).await;
    let pending_code = running.fake.issue_code(SCOPE);
    running.fake.revoke_all();

    for (at, rt) in [(&at1, &rt1), (&at2, &rt2)] {
        assert_eq!(
            me_status(&running, &http, at).await,
            StatusCode::UNAUTHORIZED
        );
        let response = http
            .get(running.url("/oauth/token/accessible-resources"))
            .bearer_auth(at)
            .send()
            .await
            .expect("resources");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let (status, body) = refresh(&running, &http, rt).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body, invalid_grant());
    }

    // A new consent works again.
    let (status, body) = post_token(&running, &http, exchange_body(&pending_code)).await;
    assert_eq!(status, StatusCode::OK);
    let at3 = body["access_token"].as_str().expect("access");
    assert_eq!(me_status(&running, &http, at3).await, StatusCode::OK);
}

#[tokio::test]
async fn injected_status_failures() {
    let (running, http) = start().await;
    let (_, rt) = connect(&running, &http).await;
    running.fake.fail_next_token_calls(2, Failure::Status(503));
    for _ in 0..2 {
        let (status, body) = refresh(&running, &http, &rt).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"], "temporarily_unavailable");
        assert!(body["error_description"].is_string());
    }
    // The failed calls did not touch the token: it still works, once.
    let (status, body) = refresh(&running, &http, &rt).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        running.fake.counters(),
        Counters {
            token_exchange: 1,
            token_refresh: 1,
            token_failures: 2,
            ..Counters::default()
        }
    );

    running.fake.fail_next_token_calls(1, Failure::Status(500));
    let (status, body) = post_token(&running, &http, json!({})).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["error"], "server_error");

    running.fake.fail_next_token_calls(1, Failure::Status(429));
    let response = http
        .post(running.url("/oauth/token"))
        .json(&refresh_body("x"))
        .send()
        .await
        .expect("call");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()[reqwest::header::RETRY_AFTER], "1");
    assert_eq!(running.fake.counters().token_failures, 4);
}

#[tokio::test]
async fn injected_malformed_answer() {
    let (running, http) = start().await;
    let code = running.fake.issue_code(SCOPE);
    running.fake.fail_next_token_calls(1, Failure::Malformed);
    let response = http
        .post(running.url("/oauth/token"))
        .json(&exchange_body(&code))
        .send()
        .await
        .expect("call");
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.expect("text");
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
    // The code was not consumed by the failed call.
    let (status, _) = post_token(&running, &http, exchange_body(&code)).await;
    assert_eq!(status, StatusCode::OK);
    let counters = running.fake.counters();
    assert_eq!(counters.token_failures, 1);
    assert_eq!(counters.token_exchange, 1);
}

#[tokio::test]
async fn injected_delay_then_a_normal_answer() {
    let (running, http) = start().await;
    let code = running.fake.issue_code(SCOPE);
    running
        .fake
        .fail_next_token_calls(1, Failure::Delay(Duration::from_millis(300)));
    let started = Instant::now();
    let (status, body) = post_token(&running, &http, exchange_body(&code)).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["refresh_token"].is_string());
    let counters = running.fake.counters();
    assert_eq!(counters.token_failures, 1);
    assert_eq!(counters.token_exchange, 1);

    // Only one call was delayed.
    let started = Instant::now();
    let (status, _) = post_token(&running, &http, exchange_body("x")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(started.elapsed() < Duration::from_millis(300));
}

#[tokio::test]
async fn accessible_resources_lists_every_entry_with_duplicate_ids() {
    let (running, http) = start().await;
    let (at, _) = connect(&running, &http).await;
    let response = http
        .get(running.url("/oauth/token/accessible-resources"))
        .bearer_auth(&at)
        .send()
        .await
        .expect("resources");
    assert_eq!(response.status(), StatusCode::OK);
    let sites: Value = response.json().await.expect("json");
    let sites = sites.as_array().expect("array");
    assert_eq!(sites.len(), 3);
    assert_eq!(sites[0]["id"], ACME_SITE_ID);
    assert_eq!(sites[1]["id"], ACME_SITE_ID);
    assert_eq!(sites[2]["id"], BETA_SITE_ID);
    assert_eq!(sites[0]["name"], "Acme");
    assert_eq!(sites[0]["url"], "https://acme.atlassian.net");
    assert_eq!(
        sites[0]["scopes"],
        json!(["read:jira-work", "read:jira-user"])
    );
    assert_eq!(sites[1]["scopes"], json!(["read:confluence-content.all"]));
    assert_eq!(sites[2]["name"], "Beta Labs");
    assert_eq!(sites[2]["url"], "https://beta-labs.atlassian.net");
    assert_eq!(sites[2]["scopes"], json!(["read:jira-work"]));
    for site in sites {
        assert!(
            site["avatarUrl"]
                .as_str()
                .expect("avatarUrl")
                .starts_with("https://")
        );
        assert!(site.get("avatar_url").is_none());
    }
    assert_eq!(running.fake.counters().accessible_resources, 1);
}

#[tokio::test]
async fn me_returns_the_user() {
    let (running, http) = start().await;
    let (at, _) = connect(&running, &http).await;
    let response = http
        .get(running.url("/me"))
        .bearer_auth(&at)
        .send()
        .await
        .expect("me");
    assert_eq!(response.status(), StatusCode::OK);
    let me: Value = response.json().await.expect("json");
    assert_eq!(me["account_type"], "atlassian");
    assert_eq!(me["account_id"], "fake-account-1");
    assert_eq!(me["email"], "ada@example.com");
    assert_eq!(me["name"], "Ada Lovelace");
    assert_eq!(me["account_status"], "active");
    assert_eq!(me["nickname"], "Ada");
    assert_eq!(me["zoneinfo"], "Europe/London");
    assert_eq!(me["locale"], "en-GB");
    assert!(
        me["picture"]
            .as_str()
            .expect("picture")
            .starts_with("https://")
    );
    assert_eq!(
        me["extended_profile"],
        json!({"job_title": "Engineer", "organization": "Acme", "department": "R&D", "location": "London"})
    );
    assert_eq!(running.fake.counters().me, 1);
}

#[tokio::test]
async fn invalid_or_expired_bearer_is_unauthorized() {
    let (running, http) = start().await;
    let unauthorized = json!({"code": 401, "message": "Unauthorized"});
    for path in ["/me", "/oauth/token/accessible-resources"] {
        let response = http
            .get(running.url(path))
            .bearer_auth("fake-at-nope")
            .send()
            .await
            .expect("call");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(response.json::<Value>().await.expect("json"), unauthorized);

        let response = http.get(running.url(path)).send().await.expect("call");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(response.json::<Value>().await.expect("json"), unauthorized);
    }

    // An access token dies at its expiry.
    let (at, rt) = connect(&running, &http).await;
    running.fake.advance_clock(Duration::from_secs(3600));
    assert_eq!(
        me_status(&running, &http, &at).await,
        StatusCode::UNAUTHORIZED
    );
    // Refreshing brings a working one back.
    let (status, body) = refresh(&running, &http, &rt).await;
    assert_eq!(status, StatusCode::OK);
    let fresh = body["access_token"].as_str().expect("access");
    assert_eq!(me_status(&running, &http, fresh).await, StatusCode::OK);

    let counters = running.fake.counters();
    assert_eq!(counters.me, 4);
    assert_eq!(counters.accessible_resources, 2);
}

#[tokio::test]
async fn access_ttl_is_adjustable() {
    let (running, http) = start().await;
    running.fake.set_access_ttl(Duration::from_secs(5));
    let (at, rt) = connect(&running, &http).await;
    let (_, body) = refresh(&running, &http, &rt).await;
    assert_eq!(body["expires_in"], 5);
    running.fake.set_access_ttl(Duration::ZERO);
    let (_, body) = refresh(&running, &http, body["refresh_token"].as_str().expect("rt")).await;
    assert_eq!(body["expires_in"], 0);
    let dead = body["access_token"].as_str().expect("access");
    assert_eq!(
        me_status(&running, &http, dead).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(me_status(&running, &http, &at).await, StatusCode::OK);
}

#[tokio::test]
async fn refresh_tokens_expire_when_idle_for_90_days() {
    let (running, http) = start().await;
    let (_, rt) = connect(&running, &http).await;
    running
        .fake
        .advance_clock(Duration::from_secs(89 * 24 * 3600));
    let (status, body) = refresh(&running, &http, &rt).await;
    assert_eq!(status, StatusCode::OK);
    let rt = body["refresh_token"].as_str().expect("rt").to_owned();
    running
        .fake
        .advance_clock(Duration::from_secs(90 * 24 * 3600));
    let (status, body) = refresh(&running, &http, &rt).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body, invalid_grant());
}

#[tokio::test]
async fn router_can_be_served_by_the_caller() {
    let fake = FakeAtlassian::new(FakeConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().merge(fake.router());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let code = fake.issue_code("read:me");
    let response = client()
        .post(format!("http://{addr}/oauth/token"))
        .json(&exchange_body(&code))
        .send()
        .await
        .expect("token");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(fake.counters().token_exchange, 1);
    server.abort();
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let (running, http) = start().await;
    let url = running.url("/me");
    assert_eq!(
        http.get(&url).send().await.expect("up").status(),
        StatusCode::UNAUTHORIZED
    );
    running.shutdown().await;
    assert!(client().get(&url).send().await.is_err());
}

#[tokio::test]
async fn dropping_the_handle_stops_the_server() {
    let (running, _) = start().await;
    let url = running.url("/me");
    drop(running);
    let mut stopped = false;
    for _ in 0..50 {
        if client().get(&url).send().await.is_err() {
            stopped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(stopped);
}
