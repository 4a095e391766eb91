//! The fake Atlassian Data Center driven over real HTTP.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use grantry_atlassian_fake::{DcConfig, DcProduct, DcUser, FakeDataCenter, RunningDc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use url::Url;

const REDIRECT: &str = "http://localhost:3000/settings/connections";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk-verifier";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

async fn start_jira() -> RunningDc {
    FakeDataCenter::start(DcConfig::default())
        .await
        .expect("fake starts")
}

async fn start_confluence() -> RunningDc {
    FakeDataCenter::start(DcConfig::confluence())
        .await
        .expect("fake starts")
}

fn authorize_params(running: &RunningDc) -> Vec<(&'static str, String)> {
    let config = running.fake.config();
    vec![
        ("client_id", config.client_id.clone()),
        ("redirect_uri", REDIRECT.to_owned()),
        ("response_type", "code".to_owned()),
        ("scope", "READ".to_owned()),
        ("state", "st-1".to_owned()),
        ("code_challenge", challenge(VERIFIER)),
        ("code_challenge_method", "S256".to_owned()),
    ]
}

async fn post_token(running: &RunningDc, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let response = client()
        .post(running.url("/rest/oauth2/latest/token"))
        .form(form)
        .send()
        .await
        .expect("token call");
    let status = response.status();
    let text = response.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, json)
}

async fn exchange(running: &RunningDc, code: &str, verifier: &str) -> (StatusCode, Value) {
    let config = running.fake.config().clone();
    post_token(
        running,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", &config.client_id),
            ("client_secret", &config.client_secret),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
        ],
    )
    .await
}

async fn refresh(
    running: &RunningDc,
    refresh_token: &str,
    redirect_uri: Option<&str>,
) -> (StatusCode, Value) {
    let config = running.fake.config().clone();
    let mut form = vec![
        ("grant_type", "refresh_token"),
        ("client_id", config.client_id.as_str()),
        ("client_secret", config.client_secret.as_str()),
        ("refresh_token", refresh_token),
    ];
    if let Some(redirect_uri) = redirect_uri {
        form.push(("redirect_uri", redirect_uri));
    }
    post_token(running, &form).await
}

/// An access and refresh token for `scope`, through `issue_code` and the token endpoint.
async fn tokens(running: &RunningDc, scope: &str) -> (String, String) {
    let code = running.fake.issue_code(scope, &challenge(VERIFIER));
    let (status, body) = exchange(running, &code, VERIFIER).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (
        body["access_token"].as_str().expect("access").to_owned(),
        body["refresh_token"].as_str().expect("refresh").to_owned(),
    )
}

async fn get(running: &RunningDc, token: &str, path: &str) -> (StatusCode, Value) {
    let response = client()
        .get(running.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("content call");
    let status = response.status();
    let text = response.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, json)
}

#[tokio::test]
async fn the_authorize_page_requires_pkce_and_the_registered_link() {
    let running = start_jira().await;
    let http = client();
    let url = running.url("/rest/oauth2/latest/authorize");
    let response = http
        .get(&url)
        .query(&authorize_params(&running))
        .send()
        .await
        .expect("authorize");
    assert_eq!(response.status(), StatusCode::OK);
    let page = response.text().await.expect("page");
    assert!(page.contains("action=\"/jira/rest/oauth2/latest/authorize/decision\""));
    assert!(page.contains(&challenge(VERIFIER)));
    assert!(page.contains("Alice Example"));

    let broken: [(&str, Option<&str>); 7] = [
        ("code_challenge", None),
        ("code_challenge_method", Some("plain")),
        ("code_challenge_method", None),
        ("redirect_uri", Some("http://localhost:3000/other")),
        ("client_id", Some("someone-else")),
        ("response_type", Some("token")),
        ("response_type", None),
    ];
    for (name, value) in broken {
        let mut params = authorize_params(&running);
        params.retain(|(n, _)| *n != name);
        if let Some(value) = value {
            params.push((name, value.to_owned()));
        }
        let response = http.get(&url).query(&params).send().await.expect("call");
        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "{name}={value:?}"
        );
        let content_type = response.headers()[reqwest::header::CONTENT_TYPE].clone();
        assert!(
            content_type
                .to_str()
                .expect("ascii")
                .starts_with("text/html")
        );
    }
    // A repeated parameter is a bad query string, not a panic.
    let response = http
        .get(format!("{url}?client_id=a&client_id=b"))
        .send()
        .await
        .expect("call");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(running.fake.counters().authorize, 9);
}

#[tokio::test]
async fn the_decision_redirects_with_a_code_or_access_denied() {
    let running = start_jira().await;
    let http = client();
    let mut form = authorize_params(&running);
    form.retain(|(n, _)| *n != "response_type");
    form.push(("decision", "accept".to_owned()));
    let response = http
        .post(running.url("/rest/oauth2/latest/authorize/decision"))
        .form(&form)
        .send()
        .await
        .expect("decision");
    assert_eq!(response.status(), StatusCode::FOUND);
    let location = Url::parse(
        response.headers()[reqwest::header::LOCATION]
            .to_str()
            .expect("ascii"),
    )
    .expect("url");
    assert!(location.as_str().starts_with(REDIRECT));
    let pairs: Vec<(String, String)> = location.query_pairs().into_owned().collect();
    assert_eq!(pairs[1], ("state".to_owned(), "st-1".to_owned()));
    assert_eq!(pairs[0].0, "code");
    let (status, body) = exchange(&running, &pairs[0].1, VERIFIER).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["scope"], "READ");
    assert_eq!(body["expires_in"], 7200);
    assert!(
        body["access_token"]
            .as_str()
            .expect("at")
            .starts_with("dc-at-")
    );
    assert!(
        body["refresh_token"]
            .as_str()
            .expect("rt")
            .starts_with("dc-rt-")
    );
    assert_eq!(running.fake.counters().token_exchange, 1);

    let mut form = authorize_params(&running);
    form.retain(|(n, _)| *n != "response_type");
    form.push(("decision", "deny".to_owned()));
    let response = http
        .post(running.url("/rest/oauth2/latest/authorize/decision"))
        .form(&form)
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
        format!("{REDIRECT}?error=access_denied&state=st-1")
    );

    // A decision without a challenge, or a malformed form, is refused.
    let response = http
        .post(running.url("/rest/oauth2/latest/authorize/decision"))
        .form(&[("decision", "accept"), ("client_id", "dc-fake-client-id")])
        .send()
        .await
        .expect("decision");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = http
        .post(running.url("/rest/oauth2/latest/authorize/decision"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("decision=accept&decision=deny")
        .send()
        .await
        .expect("decision");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn pkce_is_checked_and_failures_counted() {
    let running = start_jira().await;
    let code = running.fake.issue_code("READ", &challenge(VERIFIER));
    let other = "another-verifier-that-is-long-enough-to-be-valid-0123";
    let (status, body) = exchange(&running, &code, other).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");
    // The code was presented once: it is gone even with the right verifier now.
    let (status, _) = exchange(&running, &code, VERIFIER).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let code = running.fake.issue_code("READ", &challenge(VERIFIER));
    let config = running.fake.config().clone();
    let (status, body) = post_token(
        &running,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", &config.client_id),
            ("client_secret", &config.client_secret),
            ("code", &code),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_grant"))
    );
    assert_eq!(running.fake.counters().pkce_failures, 2);

    let code = running.fake.issue_code("READ", &challenge(VERIFIER));
    let (status, _) = exchange(&running, &code, VERIFIER).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(running.fake.counters().pkce_failures, 2);
}

#[tokio::test]
async fn the_token_endpoint_takes_forms_only_and_the_client_in_the_body() {
    let running = start_jira().await;
    let http = client();
    let code = running.fake.issue_code("READ", &challenge(VERIFIER));
    let config = running.fake.config().clone();
    let response = http
        .post(running.url("/rest/oauth2/latest/token"))
        .json(&json!({
            "grant_type": "authorization_code",
            "client_id": config.client_id,
            "client_secret": config.client_secret,
            "code": code,
            "redirect_uri": REDIRECT,
            "code_verifier": VERIFIER,
        }))
        .send()
        .await
        .expect("token");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"], "invalid_request");
    assert!(body["error_description"].is_string());
    assert_eq!(running.fake.counters().json_token_requests, 1);

    // Basic authentication instead of the body does not authenticate the client.
    let response = http
        .post(running.url("/rest/oauth2/latest/token"))
        .basic_auth(&config.client_id, Some(&config.client_secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await
        .expect("token");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"], "invalid_client");

    let (status, body) = post_token(
        &running,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", &config.client_id),
            ("client_secret", "wrong"),
            ("code", &code),
        ],
    )
    .await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::UNAUTHORIZED, &json!("invalid_client"))
    );

    // Malformed bodies are 400s.
    for body in ["grant_type=a&grant_type=b", "%%%", ""] {
        let response = http
            .post(running.url("/rest/oauth2/latest/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("token");
        assert!(response.status().is_client_error(), "{body}");
    }
    let response = http
        .post(running.url("/rest/oauth2/latest/token"))
        .header("content-type", "text/plain")
        .body("grant_type=refresh_token")
        .send()
        .await
        .expect("token");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(running.fake.counters().json_token_requests, 1);

    // No revocation endpoint on Data Center.
    let response = http
        .post(running.url("/rest/oauth2/latest/revoke"))
        .form(&[("token", "x")])
        .send()
        .await
        .expect("revoke");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn codes_are_single_use_bound_to_the_redirect_and_live_one_minute() {
    let running = start_jira().await;
    let code = running.fake.issue_code("READ", &challenge(VERIFIER));
    let (status, _) = exchange(&running, &code, VERIFIER).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = exchange(&running, &code, VERIFIER).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_grant"))
    );

    let code = running.fake.issue_code("READ", &challenge(VERIFIER));
    running.fake.advance_clock(Duration::from_secs(59));
    let (status, _) = exchange(&running, &code, VERIFIER).await;
    assert_eq!(status, StatusCode::OK);

    let code = running.fake.issue_code("READ", &challenge(VERIFIER));
    running.fake.advance_clock(Duration::from_secs(61));
    let (status, body) = exchange(&running, &code, VERIFIER).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_grant"))
    );

    let code = running.fake.issue_code("READ", &challenge(VERIFIER));
    let config = running.fake.config().clone();
    let (status, body) = post_token(
        &running,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", &config.client_id),
            ("client_secret", &config.client_secret),
            ("code", &code),
            ("redirect_uri", "http://localhost:3000/elsewhere"),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_grant"))
    );
    assert_eq!(running.fake.counters().token_exchange, 5);
}

#[tokio::test]
async fn refresh_rotates_and_needs_the_redirect_uri() {
    let running = start_jira().await;
    let (access, refresh_token) = tokens(&running, "READ").await;

    let (status, body) = refresh(&running, &refresh_token, None).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_grant"))
    );
    assert_eq!(running.fake.counters().refresh_without_redirect_uri, 1);
    let (status, body) = refresh(&running, &refresh_token, Some("http://other/cb")).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_grant"))
    );

    // The grant is still alive: the same token refreshes with the redirect URI.
    let (status, body) = refresh(&running, &refresh_token, Some(REDIRECT)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let new_access = body["access_token"].as_str().expect("at").to_owned();
    let new_refresh = body["refresh_token"].as_str().expect("rt").to_owned();
    assert_ne!(new_access, access);
    assert_ne!(new_refresh, refresh_token);
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["scope"], "READ");
    let (status, _) = get(&running, &new_access, "/rest/api/2/myself").await;
    assert_eq!(status, StatusCode::OK);

    let (status, body) = refresh(&running, &new_refresh, Some(REDIRECT)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let counters = running.fake.counters();
    assert_eq!(counters.token_refresh, 4);
    assert_eq!(counters.refresh_reuse, 0);
}

#[tokio::test]
async fn reusing_a_rotated_out_refresh_token_kills_the_grant() {
    let running = start_jira().await;
    let (_, first) = tokens(&running, "READ").await;
    let (_, other_grant_refresh) = tokens(&running, "READ").await;
    let (status, body) = refresh(&running, &first, Some(REDIRECT)).await;
    assert_eq!(status, StatusCode::OK);
    let newest_access = body["access_token"].as_str().expect("at").to_owned();
    let newest_refresh = body["refresh_token"].as_str().expect("rt").to_owned();

    let (status, body) = refresh(&running, &first, Some(REDIRECT)).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_grant"))
    );
    assert_eq!(running.fake.counters().refresh_reuse, 1);
    let (status, body) = refresh(&running, &newest_refresh, Some(REDIRECT)).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_grant"))
    );
    let (status, _) = get(&running, &newest_access, "/rest/api/2/myself").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Other grants live on.
    let (status, _) = refresh(&running, &other_grant_refresh, Some(REDIRECT)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn content_needs_a_live_token_with_the_scope() {
    let running = start_jira().await;
    let http = client();
    let response = http
        .get(running.url("/rest/api/2/myself"))
        .send()
        .await
        .expect("call");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.expect("json");
    assert_eq!(
        body["message"],
        "Client must be authenticated to access this resource."
    );

    let (no_scope, _) = tokens(&running, "").await;
    let (status, body) = get(&running, &no_scope, "/rest/api/2/myself").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body["message"],
        "The access token does not have the required scope"
    );
    let response = http
        .post(running.url("/rest/api/2/search"))
        .bearer_auth(&no_scope)
        .json(&json!({"jql": ""}))
        .send()
        .await
        .expect("search");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(running.fake.counters().content_scope_refused, 2);

    // READ is enough for the search POST; WRITE includes READ.
    let (read, _) = tokens(&running, "READ").await;
    let response = http
        .post(running.url("/rest/api/2/search"))
        .bearer_auth(&read)
        .json(&json!({"jql": ""}))
        .send()
        .await
        .expect("search");
    assert_eq!(response.status(), StatusCode::OK);
    let (write, _) = tokens(&running, "WRITE").await;
    let (status, _) = get(&running, &write, "/rest/api/2/project").await;
    assert_eq!(status, StatusCode::OK);

    running.fake.expire_access_tokens();
    let (status, _) = get(&running, &read, "/rest/api/2/project").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (read, refresh_token) = tokens(&running, "READ").await;
    running.fake.revoke_all();
    let (status, _) = get(&running, &read, "/rest/api/2/project").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = refresh(&running, &refresh_token, Some(REDIRECT)).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_grant"))
    );
}

#[tokio::test]
async fn access_tokens_expire_after_their_ttl() {
    let running = FakeDataCenter::start(DcConfig {
        access_ttl: Duration::from_secs(60),
        ..DcConfig::default()
    })
    .await
    .expect("starts");
    let code = running.fake.issue_code("READ", &challenge(VERIFIER));
    let (_, body) = exchange(&running, &code, VERIFIER).await;
    assert_eq!(body["expires_in"], 60);
    let access = body["access_token"].as_str().expect("at").to_owned();
    running.fake.advance_clock(Duration::from_secs(61));
    let (status, _) = get(&running, &access, "/rest/api/2/myself").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn jira_user_server_and_projects() {
    let running = start_jira().await;
    let (access, _) = tokens(&running, "READ").await;
    let (status, me) = get(&running, &access, "/rest/api/2/myself").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["key"], "JIRAUSER10000");
    assert_eq!(me["name"], "alice");
    assert_eq!(me["displayName"], "Alice Example");
    assert_eq!(me["emailAddress"], "alice@example.com");
    assert_eq!(me["active"], true);
    assert!(me["timeZone"].is_string());
    assert!(
        me["self"]
            .as_str()
            .expect("self")
            .starts_with(&running.base_url)
    );

    running.fake.rename_user("alice.smith", "Alice Smith");
    let (_, me) = get(&running, &access, "/rest/api/2/myself").await;
    assert_eq!(me["key"], "JIRAUSER10000");
    assert_eq!(me["name"], "alice.smith");
    assert_eq!(me["displayName"], "Alice Smith");

    running.fake.set_user(DcUser {
        key: "JIRAUSER10500".to_owned(),
        name: "dave".to_owned(),
        display_name: "Dave Example".to_owned(),
        email: "dave@example.com".to_owned(),
    });
    let (dave, _) = tokens(&running, "READ").await;
    let (_, me) = get(&running, &dave, "/rest/api/2/myself").await;
    assert_eq!(me["key"], "JIRAUSER10500");
    let (_, me) = get(&running, &access, "/rest/api/2/myself").await;
    assert_eq!(
        me["key"], "JIRAUSER10000",
        "earlier grants keep their account"
    );

    let (status, info) = get(&running, &access, "/rest/api/2/serverInfo").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(info["baseUrl"], running.base_url.as_str());
    assert_eq!(info["deploymentType"], "Server");
    assert_eq!(info["serverTitle"], "Acme Jira");
    assert!(info["version"].is_string());

    let (status, projects) = get(&running, &access, "/rest/api/2/project").await;
    assert_eq!(status, StatusCode::OK);
    let projects = projects.as_array().expect("array");
    assert_eq!(projects.len(), 3);
    for project in projects {
        for field in ["self", "id", "key", "name", "projectTypeKey"] {
            assert!(project[field].is_string(), "{field} in {project}");
        }
    }
}

#[tokio::test]
async fn jira_search_pages_two_at_a_time_newest_first() {
    let running = start_jira().await;
    let (access, _) = tokens(&running, "READ").await;
    let mut keys = Vec::new();
    let mut start_at = 0;
    loop {
        let (status, page) = get(
            &running,
            &access,
            &format!("/rest/api/2/search?jql=ORDER%20BY%20updated%20DESC&startAt={start_at}&maxResults=50"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(page["maxResults"], 2);
        assert_eq!(page["total"], 4);
        assert_eq!(page["startAt"], start_at);
        let issues = page["issues"].as_array().expect("issues");
        assert!(issues.len() <= 2);
        if issues.is_empty() {
            break;
        }
        keys.extend(
            issues
                .iter()
                .map(|i| i["key"].as_str().expect("key").to_owned()),
        );
        start_at += issues.len();
    }
    assert_eq!(keys, ["ENG-1", "ENG-2", "OPS-1", "DOC-1"]);

    let jql = r#"text ~ "PAYMENTS" ORDER BY updated DESC"#;
    let response = client()
        .get(running.url("/rest/api/2/search"))
        .bearer_auth(&access)
        .query(&[("jql", jql), ("fields", "summary,status,updated")])
        .send()
        .await
        .expect("search");
    assert_eq!(response.status(), StatusCode::OK);
    let page: Value = response.json().await.expect("json");
    assert_eq!(page["total"], 2);
    let issues = page["issues"].as_array().expect("issues");
    assert_eq!(issues[0]["key"], "ENG-1");
    assert_eq!(issues[1]["key"], "DOC-1");
    let fields = issues[0]["fields"].as_object().expect("fields");
    assert_eq!(fields.len(), 3, "only the fields asked for: {fields:?}");
    assert_eq!(fields["status"]["statusCategory"]["key"], "indeterminate");

    let response = client()
        .post(running.url("/rest/api/2/search"))
        .bearer_auth(&access)
        .json(
            &json!({"jql": "project = ENG ORDER BY updated DESC", "startAt": 0, "maxResults": 10}),
        )
        .send()
        .await
        .expect("search");
    let page: Value = response.json().await.expect("json");
    assert_eq!(page["total"], 2);
    let issue = &page["issues"][0];
    assert_eq!(issue["key"], "ENG-1");
    assert!(
        issue["self"]
            .as_str()
            .expect("self")
            .starts_with(&running.base_url)
    );
    let fields = &issue["fields"];
    assert_eq!(
        fields["summary"],
        "Roll out payments-v2 behind a feature flag"
    );
    assert_eq!(fields["status"]["name"], "In Progress");
    assert_eq!(fields["issuetype"]["name"], "Story");
    assert_eq!(fields["priority"]["name"], "High");
    assert_eq!(fields["labels"], json!(["payments", "rollout"]));
    assert_eq!(fields["assignee"]["key"], "JIRAUSER10000");
    assert_eq!(fields["reporter"]["name"], "bob");
    assert_eq!(fields["updated"], "2024-06-20T16:45:10.000+0000");
    assert_eq!(page["issues"][1]["fields"]["assignee"], Value::Null);
    let description = fields["description"].as_str().expect("description");
    for markup in [
        "h2. Goal\r\n",
        "*payments-v2*",
        "_carefully_",
        "-the old gateway-",
        "[~alice]",
        "[rollout plan|https://",
        "## Tag it",
        "*** Staging first",
        "||Region||Max RPS||Owner||",
        "{code:java}",
        "{noformat}",
        "{quote}",
        "{panel:title=Rollback}",
        "!diagram.png!",
    ] {
        assert!(description.contains(markup), "{markup}");
    }
    assert!(!description.replace("\r\n", "").contains('\n'), "CRLF only");

    for bad in [
        "assignee = alice",
        r#"text ~ "open"#,
        "ORDER BY rank",
        "project = NOPE",
    ] {
        let response = client()
            .get(running.url("/rest/api/2/search"))
            .bearer_auth(&access)
            .query(&[("jql", bad)])
            .send()
            .await
            .expect("search");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
        let body: Value = response.json().await.expect("json");
        assert!(body["errorMessages"][0].is_string());
        assert_eq!(body["errors"], json!({}));
    }
    let (status, _) = get(&running, &access, "/rest/api/2/search?startAt=-1").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let response = client()
        .post(running.url("/rest/api/2/search"))
        .bearer_auth(&access)
        .body("{not json")
        .send()
        .await
        .expect("search");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn jira_issues_and_comments() {
    let running = start_jira().await;
    let (access, _) = tokens(&running, "READ").await;
    let (status, issue) = get(&running, &access, "/rest/api/2/issue/ENG-1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(issue["id"], "10010");
    assert_eq!(issue["fields"]["created"], "2024-06-17T08:00:00.000+0000");
    let (status, by_id) = get(&running, &access, "/rest/api/2/issue/10010").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(by_id["key"], "ENG-1");
    let (status, body) = get(&running, &access, "/rest/api/2/issue/NOPE-9").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        json!({"errorMessages": ["Issue does not exist or you do not have permission to see it."], "errors": {}})
    );

    let (status, first) = get(&running, &access, "/rest/api/2/issue/ENG-1/comment").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["total"], 3);
    assert_eq!(first["maxResults"], 2);
    assert_eq!(first["comments"].as_array().expect("comments").len(), 2);
    let comment = &first["comments"][1];
    assert_eq!(comment["author"]["key"], "JIRAUSER10000");
    assert_eq!(comment["author"]["displayName"], "Alice Example");
    assert!(
        comment["body"]
            .as_str()
            .expect("body")
            .contains("\r\n* check")
    );
    assert_eq!(comment["created"], "2024-06-19T10:05:30.000+0000");
    assert_eq!(comment["updated"], "2024-06-19T11:00:00.000+0000");
    let (_, second) = get(
        &running,
        &access,
        "/rest/api/2/issue/ENG-1/comment?startAt=2&maxResults=2",
    )
    .await;
    assert_eq!(second["startAt"], 2);
    assert_eq!(second["comments"].as_array().expect("comments").len(), 1);
    assert_eq!(second["comments"][0]["id"], "10102");
    let (status, _) = get(&running, &access, "/rest/api/2/issue/NOPE-1/comment").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = get(
        &running,
        &access,
        "/rest/api/2/issue/ENG-1/comment?maxResults=x",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Confluence routes are not served by a Jira instance.
    let response = client()
        .get(running.url("/rest/api/space"))
        .bearer_auth(&access)
        .send()
        .await
        .expect("call");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn confluence_user_spaces_and_content() {
    let running = start_confluence().await;
    assert_eq!(running.fake.config().product, DcProduct::Confluence);
    assert!(running.base_url.ends_with("/confluence"));
    let (access, _) = tokens(&running, "READ").await;
    let (status, me) = get(&running, &access, "/rest/api/user/current").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["type"], "known");
    assert_eq!(me["username"], "alice");
    assert_eq!(me["userKey"], "8a7f808a8e0f0c2a018e0f0c7a2a0000");
    assert_eq!(me["displayName"], "Alice Example");
    assert!(me["_links"].is_object());

    let (status, spaces) = get(&running, &access, "/rest/api/space?limit=1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(spaces["size"], 1);
    assert_eq!(spaces["results"][0]["id"], 98305);
    assert_eq!(spaces["results"][0]["key"], "ENG");
    assert_eq!(spaces["results"][0]["type"], "global");
    assert_eq!(spaces["results"][0]["_links"]["webui"], "/display/ENG");
    assert_eq!(spaces["_links"]["base"], running.base_url.as_str());
    assert_eq!(spaces["_links"]["context"], "/confluence");
    let next = spaces["_links"]["next"].as_str().expect("next");
    assert_eq!(next, "/rest/api/space?limit=1&start=1");
    let (_, second) = get(&running, &access, next).await;
    assert_eq!(second["results"][0]["key"], "OPS");
    assert!(second["_links"].get("next").is_none());
    let (_, all) = get(&running, &access, "/rest/api/space?limit=50").await;
    assert_eq!(all["limit"], 2);
    assert_eq!(all["size"], 2);
    assert!(all["_links"].get("next").is_none());

    let (status, list) = get(
        &running,
        &access,
        "/rest/api/content?spaceKey=ENG&type=page&start=0&limit=1&expand=version",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let page = &list["results"][0];
    assert_eq!(page["id"], "65601");
    assert_eq!(page["type"], "page");
    assert_eq!(page["status"], "current");
    assert_eq!(page["version"]["number"], 7);
    assert_eq!(page["version"]["when"], "2024-06-19T08:30:00.000Z");
    assert_eq!(
        page["_links"]["webui"],
        "/display/ENG/Payment+service+runbook"
    );
    let next = list["_links"]["next"].as_str().expect("next");
    assert_eq!(
        next,
        "/rest/api/content?spaceKey=ENG&type=page&limit=1&expand=version&start=1"
    );
    let (_, rest) = get(&running, &access, next).await;
    assert_eq!(rest["results"][0]["title"], "Release checklist");
    assert!(rest["_links"].get("next").is_none());
    let (status, _) = get(&running, &access, "/rest/api/content?type=comment").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, page) = get(
        &running,
        &access,
        "/rest/api/content/65601?expand=body.storage,version,space",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["title"], "Payment service runbook");
    assert_eq!(page["space"]["key"], "ENG");
    assert_eq!(page["space"]["name"], "Engineering");
    assert_eq!(page["body"]["storage"]["representation"], "storage");
    let storage = page["body"]["storage"]["value"].as_str().expect("storage");
    assert!(storage.contains("<ac:structured-macro ac:name=\"code\""));
    assert!(storage.contains("ri:userkey="));
    assert_eq!(page["_links"]["base"], running.base_url.as_str());
    assert!(page["_links"]["webui"].is_string());
    let (_, bare) = get(&running, &access, "/rest/api/content/65601").await;
    assert!(bare.get("body").is_none(), "the body needs expand");
    let (status, missing) = get(&running, &access, "/rest/api/content/1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(missing["statusCode"], 404);
    assert!(missing["message"].is_string());
}

#[tokio::test]
async fn confluence_cql_search() {
    let running = start_confluence().await;
    let (access, _) = tokens(&running, "READ").await;
    let search = |cql: &'static str, extra: &'static str| {
        let running = &running;
        let access = access.clone();
        async move {
            let response = client()
                .get(running.url(&format!("/rest/api/content/search{extra}")))
                .bearer_auth(access)
                .query(&[("cql", cql)])
                .send()
                .await
                .expect("search");
            let status = response.status();
            (status, response.json::<Value>().await.expect("json"))
        }
    };
    let (status, found) = search(r#"type = page AND text ~ "payments""#, "?limit=10").await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found["size"], 2);
    let titles: Vec<&str> = found["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["title"].as_str().expect("title"))
        .collect();
    assert_eq!(titles, ["Payment service runbook", "Release checklist"]);
    assert_eq!(
        found["results"][0]["version"]["when"],
        "2024-06-19T08:30:00.000Z"
    );
    assert!(found["results"][0]["_links"]["webui"].is_string());
    let (_, found) = search(r#"text ~ "PagerDuty""#, "").await;
    assert_eq!(found["results"][0]["title"], "On-call handbook");
    let (_, found) = search(r#"space = "OPS" AND text ~ "payments""#, "").await;
    assert_eq!(found["size"], 0);
    let (_, first) = search(r#"text ~ "the""#, "?limit=1").await;
    assert_eq!(first["size"], 1);
    assert!(
        first["_links"]["next"]
            .as_str()
            .expect("next")
            .contains("start=1")
    );
    for bad in ["creator = alice", r#"text ~ "open"#, "   "] {
        let (status, body) = search(bad, "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(body["statusCode"], 400);
    }
}

#[tokio::test]
async fn the_manifest_is_anonymous() {
    let running = start_jira().await;
    let response = client()
        .get(running.url("/rest/applinks/1.0/manifest"))
        .header("accept", "application/json")
        .send()
        .await
        .expect("manifest");
    assert_eq!(response.status(), StatusCode::OK);
    let manifest: Value = response.json().await.expect("json");
    assert_eq!(manifest["name"], "Acme Jira");
    assert_eq!(manifest["typeId"], "jira");
    assert_eq!(manifest["url"], running.base_url.as_str());
    assert!(manifest["version"].is_string());
    let id = manifest["id"].as_str().expect("id").to_owned();
    assert_eq!(id.len(), 36);
    let again = start_jira().await;
    let response = client()
        .get(again.url("/rest/applinks/1.0/manifest"))
        .header("accept", "application/json")
        .send()
        .await
        .expect("manifest");
    let other: Value = response.json().await.expect("json");
    assert_eq!(other["id"], id.as_str(), "the id is stable");

    let response = client()
        .get(running.url("/rest/applinks/1.0/manifest"))
        .send()
        .await
        .expect("manifest");
    let xml = response.text().await.expect("xml");
    assert!(xml.contains("<typeId>jira</typeId>"));

    let confluence = start_confluence().await;
    let response = client()
        .get(confluence.url("/rest/applinks/1.0/manifest"))
        .header("accept", "application/json")
        .send()
        .await
        .expect("manifest");
    let manifest: Value = response.json().await.expect("json");
    assert_eq!(manifest["typeId"], "confluence");
    assert_eq!(manifest["name"], "Acme Confluence");
    assert_eq!(
        running.fake.counters().content,
        0,
        "the manifest is not content"
    );
}

#[tokio::test]
async fn failure_switches() {
    let running = start_jira().await;
    let (access, refresh_token) = tokens(&running, "READ").await;

    running.fake.fail_content(503);
    let (status, body) = get(&running, &access, "/rest/api/2/project").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body["errorMessages"].is_array());
    running.fake.clear_content_failures();
    let (status, _) = get(&running, &access, "/rest/api/2/project").await;
    assert_eq!(status, StatusCode::OK);

    running.fake.rate_limit_next_content_calls(2);
    for _ in 0..2 {
        let response = client()
            .get(running.url("/rest/api/2/project"))
            .bearer_auth(&access)
            .send()
            .await
            .expect("call");
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()["retry-after"], "1");
    }
    let (status, _) = get(&running, &access, "/rest/api/2/project").await;
    assert_eq!(status, StatusCode::OK);
    let counters = running.fake.counters();
    assert_eq!(counters.rate_limited, 2);
    assert_eq!(counters.content, 5);

    running.fake.fail_token(500);
    let (status, _) = refresh(&running, &refresh_token, Some(REDIRECT)).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    running.fake.fail_token(429);
    let response = client()
        .post(running.url("/rest/oauth2/latest/token"))
        .form(&[("grant_type", "refresh_token")])
        .send()
        .await
        .expect("token");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "1");
    running.fake.clear_token_failures();
    let (status, _) = refresh(&running, &refresh_token, Some(REDIRECT)).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the failed calls did not rotate the token"
    );

    let confluence = start_confluence().await;
    let (access, _) = tokens(&confluence, "READ").await;
    confluence.fake.fail_content(502);
    let (status, body) = get(&confluence, &access, "/rest/api/space").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(body["statusCode"], 502);
}

#[tokio::test]
async fn the_context_path_is_kept_in_every_url() {
    let running = start_jira().await;
    assert!(running.base_url.starts_with("http://127.0.0.1:"));
    assert!(running.base_url.ends_with("/jira"));
    let (access, _) = tokens(&running, "READ").await;
    let root = format!("http://{}", running.addr);
    let response = client()
        .get(format!("{root}/rest/api/2/myself"))
        .bearer_auth(&access)
        .send()
        .await
        .expect("call");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let response = client()
        .post(format!("{root}/rest/oauth2/latest/token"))
        .form(&[("grant_type", "refresh_token")])
        .send()
        .await
        .expect("call");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    let (_, page) = get(&running, &access, "/rest/api/2/search?jql=&maxResults=1").await;
    let self_link = page["issues"][0]["self"].as_str().expect("self");
    assert!(self_link.starts_with(&format!("{root}/jira/rest/api/2/issue/")));
    let recorded = running.fake.content_requests();
    let last = recorded.last().expect("recorded");
    assert_eq!(last.method, "GET");
    assert_eq!(last.path, "/jira/rest/api/2/search");
    assert_eq!(last.query.as_deref(), Some("jql=&maxResults=1"));
    assert!(last.authorised);
    assert!(last.header_names.iter().any(|h| h == "authorization"));
    assert!(recorded.iter().all(|r| !r.path.contains(&access)));

    // No context path at all works too; a malformed one is refused.
    let bare = FakeDataCenter::start(DcConfig {
        context_path: String::new(),
        ..DcConfig::default()
    })
    .await
    .expect("starts");
    assert_eq!(bare.base_url, format!("http://{}", bare.addr));
    let (access, _) = tokens(&bare, "READ").await;
    let (status, _) = get(&bare, &access, "/rest/api/2/myself").await;
    assert_eq!(status, StatusCode::OK);
    for context in ["jira", "/jira/"] {
        let error = FakeDataCenter::start(DcConfig {
            context_path: context.to_owned(),
            ..DcConfig::default()
        })
        .await
        .expect_err("refused");
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    }
}

#[test]
fn config_defaults() {
    let jira = DcConfig::default();
    assert_eq!(jira.product, DcProduct::Jira);
    assert_eq!(jira.context_path, "/jira");
    assert_eq!(jira.title, "Acme Jira");
    assert_eq!(jira.redirect_uri, REDIRECT);
    assert_eq!(jira.access_ttl, Duration::from_secs(7200));
    assert!(!format!("{jira:?}").contains(&jira.client_secret));
    let confluence = DcConfig::confluence();
    assert_eq!(confluence.product, DcProduct::Confluence);
    assert_eq!(confluence.context_path, "/confluence");
    assert_eq!(confluence.title, "Acme Confluence");
    assert_eq!(
        DcUser::default_for(DcProduct::Confluence).key,
        "8a7f808a8e0f0c2a018e0f0c7a2a0000"
    );
}
