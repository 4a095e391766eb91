//! The fake Atlassian's content endpoints driven over real HTTP: bearer and scope checks, sites
//! and products, Atlassian's shapes and pagination (Confluence on v2, its removed v1 routes
//! gone), rate limiting and injected failures.

use grantry_atlassian_fake::{ACME_SITE_ID, BETA_SITE_ID, FakeAtlassian, FakeConfig, RunningFake};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Every scope the content operations below need.
const SCOPES: &str = "read:me read:jira-user read:jira-work search:confluence \
                      read:space:confluence read:page:confluence offline_access";

async fn start() -> (RunningFake, reqwest::Client, String) {
    let running = FakeAtlassian::start(FakeConfig::default())
        .await
        .expect("fake starts");
    let token = token_for(&running, SCOPES).await;
    (running, reqwest::Client::new(), token)
}

/// An access token of a grant of `scope`.
async fn token_for(running: &RunningFake, scope: &str) -> String {
    let http = reqwest::Client::new();
    let config = running.fake.config().clone();
    let code = running.fake.issue_code(scope);
    let body: Value = http
        .post(running.url("/oauth/token"))
        .json(&json!({
            "grant_type": "authorization_code",
            "client_id": config.client_id,
            "client_secret": config.client_secret,
            "code": code,
            "redirect_uri": config.redirect_uri,
        }))
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    body["access_token"]
        .as_str()
        .expect("access token")
        .to_owned()
}

async fn get(
    running: &RunningFake,
    http: &reqwest::Client,
    token: &str,
    path: &str,
) -> (StatusCode, Value) {
    let resp = http
        .get(running.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn content_needs_a_live_token_a_known_site_and_its_product() {
    let (running, http, token) = start().await;
    let path = format!("/ex/jira/{ACME_SITE_ID}/rest/api/3/myself");
    assert_eq!(get(&running, &http, "bogus", &path).await.0, 401);
    let resp = http.get(running.url(&path)).send().await.expect("request");
    assert_eq!(resp.status(), 401);
    assert_eq!(get(&running, &http, &token, &path).await.0, 200);
    let (status, _) = get(
        &running,
        &http,
        &token,
        "/ex/jira/33333333-3333-4333-8333-333333333333/rest/api/3/myself",
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = get(
        &running,
        &http,
        &token,
        &format!("/ex/confluence/{BETA_SITE_ID}/wiki/api/v2/spaces"),
    )
    .await;
    assert_eq!(status, 404, "Beta Labs has no Confluence");
    running.fake.revoke_all();
    assert_eq!(get(&running, &http, &token, &path).await.0, 401);
    let seen = running.fake.content_requests();
    assert_eq!(seen.len(), 6);
    assert_eq!(seen.iter().filter(|r| r.authorised).count(), 3);
    assert_eq!(running.fake.counters().content, 6);
}

#[tokio::test]
async fn lists_come_two_at_a_time() {
    let (running, http, token) = start().await;
    let (status, page) = get(
        &running,
        &http,
        &token,
        &format!("/ex/jira/{ACME_SITE_ID}/rest/api/3/project/search?startAt=4&maxResults=50"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(page["total"], 5);
    assert_eq!(page["isLast"], true);
    assert_eq!(page["values"][0]["key"], "WEB");
    let (_, first) = get(
        &running,
        &http,
        &token,
        &format!("/ex/jira/{ACME_SITE_ID}/rest/api/3/project/search"),
    )
    .await;
    assert_eq!(first["values"].as_array().map(Vec::len), Some(2));
    assert_eq!(first["isLast"], false);

    let (_, spaces) = get(
        &running,
        &http,
        &token,
        &format!("/ex/confluence/{ACME_SITE_ID}/wiki/api/v2/spaces?limit=50"),
    )
    .await;
    assert_eq!(spaces["results"].as_array().map(Vec::len), Some(2));
    let next = spaces["_links"]["next"].as_str().expect("next").to_owned();
    assert!(next.starts_with("/wiki/api/v2/spaces?cursor="), "{next}");
    let (_, last) = get(
        &running,
        &http,
        &token,
        &format!("/ex/confluence/{ACME_SITE_ID}{next}"),
    )
    .await;
    assert_eq!(last["results"].as_array().map(Vec::len), Some(2));
    assert!(last["_links"].get("next").is_none());
    let (status, _) = get(
        &running,
        &http,
        &token,
        &format!("/ex/confluence/{ACME_SITE_ID}/wiki/api/v2/spaces?cursor=2"),
    )
    .await;
    assert_eq!(status, 400, "a cursor the fake did not hand out");
}

#[tokio::test]
async fn confluence_v2_resolves_keys_lists_pages_and_serves_storage() {
    let (running, http, token) = start().await;
    let base = format!("/ex/confluence/{ACME_SITE_ID}/wiki/api/v2");
    let (status, found) = get(&running, &http, &token, &format!("{base}/spaces?keys=ENG")).await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["results"].as_array().map(Vec::len), Some(1));
    let space_id = found["results"][0]["id"].as_str().expect("id").to_owned();
    let (_, pages) = get(
        &running,
        &http,
        &token,
        &format!("{base}/spaces/{space_id}/pages?limit=25"),
    )
    .await;
    assert_eq!(pages["results"][0]["spaceId"], space_id.as_str());
    assert!(pages["results"][0]["version"]["createdAt"].is_string());
    assert!(pages["_links"]["next"].is_string(), "{pages}");
    let (_, bare) = get(&running, &http, &token, &format!("{base}/pages/123456")).await;
    assert_eq!(bare["body"], json!({}));
    let (_, page) = get(
        &running,
        &http,
        &token,
        &format!("{base}/pages/123456?body-format=storage"),
    )
    .await;
    assert_eq!(page["body"]["storage"]["representation"], "storage");
    assert_eq!(page["spaceId"], space_id.as_str());
    let (status, body) = get(&running, &http, &token, &format!("{base}/pages/999")).await;
    assert_eq!(status, 404);
    assert_eq!(body["errors"][0]["status"], 404);
}

#[tokio::test]
async fn removed_v1_routes_are_gone() {
    let (running, http, token) = start().await;
    for path in [
        "/wiki/rest/api/space",
        "/wiki/rest/api/content?spaceKey=ENG",
        "/wiki/rest/api/content/123456",
    ] {
        let (status, body) = get(
            &running,
            &http,
            &token,
            &format!("/ex/confluence/{ACME_SITE_ID}{path}"),
        )
        .await;
        assert_eq!(status, 410, "{path}: {body}");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("/wiki/api/v2/")),
            "{body}"
        );
    }
}

#[tokio::test]
async fn each_operation_checks_its_scopes() {
    let (running, http, _) = start().await;
    let narrow = token_for(
        &running,
        "read:me read:jira-work read:confluence-content.all",
    )
    .await;
    let refused = [
        format!("/ex/confluence/{ACME_SITE_ID}/wiki/rest/api/search?cql=text%20~%20%22x%22"),
        format!("/ex/confluence/{ACME_SITE_ID}/wiki/api/v2/spaces"),
        format!("/ex/confluence/{ACME_SITE_ID}/wiki/api/v2/pages/123456"),
        format!("/ex/jira/{ACME_SITE_ID}/rest/api/3/myself"),
    ];
    for path in &refused {
        let (status, body) = get(&running, &http, &narrow, path).await;
        assert_eq!(status, 401, "{path}");
        assert_eq!(
            body,
            json!({"code": 401, "message": "Unauthorized; scope does not match"})
        );
    }
    assert_eq!(running.fake.counters().content_scope_refused, 4);
    let (status, _) = get(
        &running,
        &http,
        &narrow,
        &format!("/ex/jira/{ACME_SITE_ID}/rest/api/3/project/search"),
    )
    .await;
    assert_eq!(status, 200, "read:jira-work is enough for projects");
    // The granular set works as well as the classic scope, but only whole.
    let granular = token_for(&running, "read:content-details:confluence").await;
    let (status, _) = get(&running, &http, &granular, &refused[0]).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn searches_understand_quoted_text() {
    let (running, http, token) = start().await;
    let resp = http
        .post(running.url(&format!("/ex/jira/{ACME_SITE_ID}/rest/api/3/search/jql")))
        .bearer_auth(&token)
        .json(&json!({"jql": "text ~ \"Traffic SHARE\"", "maxResults": 10}))
        .send()
        .await
        .expect("jql");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    let keys: Vec<&Value> = body["issues"]
        .as_array()
        .expect("issues")
        .iter()
        .map(|i| &i["key"])
        .collect();
    assert_eq!(keys, [&json!("ACME-3")]);

    let (status, body) = get(
        &running,
        &http,
        &token,
        &format!("/ex/confluence/{ACME_SITE_ID}/wiki/rest/api/search?cql=type%3Dpage%20AND%20text%20~%20%22runbook%22"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["results"][0]["content"]["id"], "123456");
    assert!(
        body["results"][0]["excerpt"]
            .as_str()
            .is_some_and(|e| e.contains("@@@hl@@@runbook@@@endhl@@@")),
        "{body}"
    );
    let (status, _) = get(
        &running,
        &http,
        &token,
        &format!("/ex/confluence/{ACME_SITE_ID}/wiki/rest/api/search?cql=type%3Dpage"),
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn rate_limits_and_failures_can_be_injected() {
    let (running, http, token) = start().await;
    let path = format!("/ex/jira/{ACME_SITE_ID}/rest/api/3/myself");
    running.fake.rate_limit_next_content_calls(1);
    let resp = http
        .get(running.url(&path))
        .bearer_auth(&token)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    // Calling again at once is too early: still 429, and counted.
    assert_eq!(get(&running, &http, &token, &path).await.0, 429);
    let counters = running.fake.counters();
    assert_eq!(
        (counters.content_rate_limited, counters.content_early),
        (2, 1)
    );
    // Another site is not affected by the window.
    let other = format!("/ex/jira/{BETA_SITE_ID}/rest/api/3/myself");
    assert_eq!(get(&running, &http, &token, &other).await.0, 200);

    running.fake.fail_content(BETA_SITE_ID, "jira", 503);
    assert_eq!(get(&running, &http, &token, &other).await.0, 503);
    running.fake.clear_content_failures();
    assert_eq!(get(&running, &http, &token, &other).await.0, 200);
}
