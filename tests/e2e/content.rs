//! Jira and Confluence content end to end: search across two sites, issues and pages as
//! Markdown (golden files), pagination, rate limits, and the authenticated proxy, through the
//! real router over HTTP against the fake Atlassian, on every test database.

use std::time::Duration;

use grantry_atlassian_fake::{ACME_SITE_ID, BETA_SITE_ID};
use grantry_server::testing::TestDatabase;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{Harness, fake_config};

const API: &str = "/api/v1/atlassian";

fn golden(name: &str) -> String {
    let path = format!(
        "{}/providers/atlassian-markdown/tests/golden/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

async fn connected(db: &TestDatabase) -> Harness {
    let h = Harness::start(db, fake_config(), true).await;
    h.connect("alice").await;
    h
}

async fn get(h: &Harness, path: &str) -> (StatusCode, Value) {
    h.call("GET", &format!("{API}{path}"), Some("alice"), None)
        .await
}

/// The user's current access token, as an admin sees it (to prove no other route shows it).
async fn access_token(h: &Harness) -> String {
    let (status, body) = h
        .call(
            "GET",
            &format!("{API}/admin/connections/alice/access-token"),
            Some("admin-1"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().expect("token").to_owned()
}

fn assert_error(status: StatusCode, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"], want_code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

fn results_of(body: &Value) -> &Vec<Value> {
    body["results"].as_array().expect("results")
}

#[tokio::test]
async fn search_over_two_sites_returns_both_kinds() {
    for db in TestDatabase::all().await {
        let h = connected(&db).await;
        let (status, body) = get(&h, "/search?q=rollout").await;
        assert_eq!(status, 200, "{}: {body}", db.kind);
        assert_eq!(body["partial_failures"], json!([]), "{body}");
        let results = results_of(&body);
        let found: Vec<(String, String, String)> = results
            .iter()
            .map(|r| {
                (
                    r["kind"].as_str().unwrap_or("").to_owned(),
                    r["site_id"].as_str().unwrap_or("").to_owned(),
                    r["id"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        for wanted in [
            ("jira_issue", ACME_SITE_ID, "ACME-1"),
            ("jira_issue", ACME_SITE_ID, "ACME-3"),
            ("jira_issue", BETA_SITE_ID, "LAB-7"),
            ("confluence_page", ACME_SITE_ID, "123456"),
        ] {
            assert!(
                found
                    .iter()
                    .any(|f| (f.0.as_str(), f.1.as_str(), f.2.as_str()) == wanted),
                "{wanted:?} missing from {found:?}"
            );
        }
        assert_eq!(results.len(), 4, "{body}");
        // Newest first across sites and products.
        let times: Vec<&str> = results
            .iter()
            .map(|r| r["updated_at"].as_str().expect("updated_at"))
            .collect();
        let mut sorted = times.clone();
        sorted.sort_by(|a, b| b.cmp(a));
        assert_eq!(times, sorted);
        assert_eq!(times[0], "2024-06-20T16:45:10Z");

        let acme_1 = results
            .iter()
            .find(|r| r["id"] == "ACME-1")
            .expect("ACME-1");
        assert_eq!(acme_1["title"], "Roll out the new payment service");
        assert_eq!(acme_1["url"], "https://acme.atlassian.net/browse/ACME-1");
        assert!(
            acme_1["excerpt"]
                .as_str()
                .is_some_and(|e| e.starts_with("Context The payment service moves to payments-v2")),
            "{acme_1}"
        );
        let page = results.iter().find(|r| r["id"] == "123456").expect("page");
        assert_eq!(page["title"], "Payment service runbook");
        assert_eq!(
            page["url"],
            "https://acme.atlassian.net/wiki/spaces/ENG/pages/123456/Payment+service+runbook"
        );
        let excerpt = page["excerpt"].as_str().expect("excerpt");
        assert!(
            excerpt.contains("rollout") && !excerpt.contains("@@@"),
            "{excerpt}"
        );
        assert_eq!(page["updated_at"], "2024-06-19T08:30:00Z");

        // The fake saw JQL and CQL text searches with the words quoted.
        let requests = h.fake.fake.content_requests();
        let jql = requests
            .iter()
            .find(|r| r.method == "POST" && r.path.ends_with("/rest/api/3/search/jql"))
            .expect("a JQL search");
        let sent: Value = serde_json::from_slice(&jql.body).expect("JQL body");
        assert_eq!(sent["jql"], r#"text ~ "rollout" ORDER BY updated DESC"#);
        assert!(requests.iter().all(|r| r.authorised));

        // One site, a limit.
        let (status, body) = get(&h, &format!("/search?q=rollout&site={BETA_SITE_ID}")).await;
        assert_eq!(status, 200, "{body}");
        let ids: Vec<&Value> = results_of(&body).iter().map(|r| &r["id"]).collect();
        assert_eq!(ids, [&json!("LAB-7")]);
        let (status, body) = get(&h, "/search?q=rollout&limit=1").await;
        assert_eq!(status, 200);
        assert_eq!(results_of(&body).len(), 1);
        assert_eq!(results_of(&body)[0]["id"], "ACME-1");

        // Words with search syntax in them are searched for literally, not parsed.
        let (status, body) = get(&h, "/search?q=%22roll%20(out%22%20AND%20*").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["partial_failures"], json!([]), "{body}");
        assert_eq!(results_of(&body).len(), 0, "{body}");

        let token = access_token(&h).await;
        assert!(!body.to_string().contains(&token));
    }
}

#[tokio::test]
async fn a_failing_site_is_a_partial_failure_not_an_error() {
    for db in TestDatabase::all().await {
        let h = connected(&db).await;
        h.fake.fake.fail_content(BETA_SITE_ID, "jira", 500);
        let (status, body) = get(&h, "/search?q=rollout").await;
        assert_eq!(status, 200, "{}: {body}", db.kind);
        let kinds: Vec<&str> = results_of(&body)
            .iter()
            .map(|r| r["kind"].as_str().unwrap_or(""))
            .collect();
        assert!(kinds.contains(&"jira_issue") && kinds.contains(&"confluence_page"));
        assert!(
            results_of(&body)
                .iter()
                .all(|r| r["site_id"] == ACME_SITE_ID)
        );
        let failures = body["partial_failures"].as_array().expect("failures");
        assert_eq!(failures.len(), 1, "{body}");
        assert_eq!(failures[0]["site_id"], BETA_SITE_ID);
        assert_eq!(failures[0]["product"], "jira");
        assert!(
            failures[0]["error"]
                .as_str()
                .is_some_and(|e| e.contains("HTTP 500")),
            "{body}"
        );

        // The single-site routes answer 502 for the same failure.
        let (status, body) = get(&h, &format!("/jira/{BETA_SITE_ID}/projects")).await;
        assert_error(status, &body, 502, "upstream_unavailable");
        let token = access_token(&h).await;
        assert!(!body.to_string().contains(&token));
    }
}

#[tokio::test]
async fn bad_requests_unknown_sites_and_missing_products() {
    for db in TestDatabase::all().await {
        let h = connected(&db).await;
        for (path, status, code) in [
            ("/search", 400, "invalid_request"),
            ("/search?q=%20%20", 400, "invalid_request"),
            ("/search?q=x&limit=0", 400, "invalid_request"),
            ("/search?q=x&limit=51", 400, "invalid_request"),
            ("/search?q=x&limit=many", 400, "invalid_request"),
            ("/search?q=x&site=nope", 404, "unknown_site"),
            ("/jira/nope/projects", 404, "unknown_site"),
            ("/jira/nope/issues/ACME-1", 404, "unknown_site"),
            ("/confluence/nope/spaces", 404, "unknown_site"),
            ("/confluence/nope/pages/1", 404, "unknown_site"),
        ] {
            let (got, body) = get(&h, path).await;
            assert_error(got, &body, status, code);
        }
        let long = "x".repeat(201);
        let (got, body) = get(&h, &format!("/search?q={long}")).await;
        assert_error(got, &body, 400, "invalid_request");
        // Beta Labs has Jira only.
        for path in [
            format!("/confluence/{BETA_SITE_ID}/spaces"),
            format!("/confluence/{BETA_SITE_ID}/spaces/ENG/pages"),
            format!("/confluence/{BETA_SITE_ID}/pages/123456"),
        ] {
            let (got, body) = get(&h, &path).await;
            assert_error(got, &body, 403, "forbidden_site");
        }
        for path in [
            format!("/jira/{ACME_SITE_ID}/issues/ACME%2F1"),
            format!("/jira/{ACME_SITE_ID}/issues/..%20x"),
            format!("/confluence/{ACME_SITE_ID}/pages/12ab"),
            format!("/confluence/{ACME_SITE_ID}/spaces/EN%2FG/pages"),
            format!("/confluence/{ACME_SITE_ID}/spaces/ENG/pages?limit=0"),
            format!("/confluence/{ACME_SITE_ID}/spaces/ENG/pages?limit=101"),
            format!("/confluence/{ACME_SITE_ID}/spaces/ENG/pages?start=-1"),
            format!("/confluence/{ACME_SITE_ID}/spaces/ENG/pages?start=2"),
            format!("/confluence/{ACME_SITE_ID}/spaces/ENG/pages?cursor=bogus"),
            format!(
                "/confluence/{ACME_SITE_ID}/spaces/ENG/pages?cursor={}",
                "A".repeat(3000)
            ),
        ] {
            let (got, body) = get(&h, &path).await;
            assert_error(got, &body, 400, "invalid_request");
        }
        let (got, body) = get(&h, &format!("/jira/{ACME_SITE_ID}/issues/ACME-999")).await;
        assert_error(got, &body, 404, "not_found");
        let (got, body) = get(&h, &format!("/confluence/{ACME_SITE_ID}/pages/999")).await;
        assert_error(got, &body, 404, "not_found");
        let (got, body) = get(&h, &format!("/confluence/{ACME_SITE_ID}/spaces/NOPE/pages")).await;
        assert_error(got, &body, 404, "not_found");

        // No user, or a user without a connection.
        let (got, body) = h
            .call("GET", &format!("{API}/search?q=x"), None, None)
            .await;
        assert_eq!(got, 401, "{body}");
        let (got, body) = h
            .call("GET", &format!("{API}/search?q=x"), Some("bob"), None)
            .await;
        assert_error(got, &body, 404, "not_connected");
        let (got, body) = h
            .call(
                "GET",
                &format!("{API}/proxy/jira/{ACME_SITE_ID}/rest/api/3/myself"),
                Some("bob"),
                None,
            )
            .await;
        assert_error(got, &body, 404, "not_connected");
    }
}

#[tokio::test]
async fn a_jira_issue_comes_as_markdown() {
    for db in TestDatabase::all().await {
        let h = connected(&db).await;
        let (status, issue) = get(&h, &format!("/jira/{ACME_SITE_ID}/issues/ACME-1")).await;
        assert_eq!(status, 200, "{}: {issue}", db.kind);
        assert_eq!(issue["site_id"], ACME_SITE_ID);
        assert_eq!(issue["key"], "ACME-1");
        assert_eq!(issue["id"], "10001");
        assert_eq!(issue["summary"], "Roll out the new payment service");
        assert_eq!(issue["status"], "In Progress");
        assert_eq!(issue["issue_type"], "Story");
        assert_eq!(issue["assignee"]["display_name"], "Grace Hopper");
        assert_eq!(issue["reporter"]["display_name"], "Ada Lovelace");
        assert_eq!(issue["url"], "https://acme.atlassian.net/browse/ACME-1");
        assert_eq!(issue["created_at"], "2024-06-03T09:12:00Z");
        assert_eq!(issue["updated_at"], "2024-06-20T16:45:10Z");
        assert_eq!(issue["labels"], json!(["payments", "rollout"]));
        // Nested lists, a table and a code block, exactly as the golden file says.
        assert_eq!(
            issue["description"].as_str().expect("description"),
            golden("jira_description.md")
        );
        // Three comments, fetched two at a time by the fake: pagination was followed.
        let comments = issue["comments"].as_array().expect("comments");
        assert_eq!(comments.len(), 3, "{issue}");
        assert_eq!(issue["comments_truncated"], false);
        assert_eq!(
            comments[0]["body"],
            "Staging looks good. The [dashboard](https://grafana.acme.example/d/payments) is green.\n"
        );
        assert_eq!(
            comments[1]["body"],
            "Blocked on **legal** review:\n\n- EU data residency\n- PCI scope\n"
        );
        assert_eq!(comments[2]["author"]["display_name"], "Grace Hopper");
        assert_eq!(comments[2]["created_at"], "2024-06-20T16:45:10Z");
        let comment_calls = h
            .fake
            .fake
            .content_requests()
            .iter()
            .filter(|r| r.path.ends_with("/issue/ACME-1/comment"))
            .count();
        assert_eq!(comment_calls, 2);

        // An issue without description or assignee.
        let (status, issue) = get(&h, &format!("/jira/{BETA_SITE_ID}/issues/LAB-8")).await;
        assert_eq!(status, 200, "{issue}");
        assert_eq!(issue["description"], "");
        assert_eq!(issue["assignee"], Value::Null);
        assert_eq!(issue["comments"], json!([]));

        let token = access_token(&h).await;
        assert!(!issue.to_string().contains(&token));
    }
}

#[tokio::test]
async fn jira_projects_follow_pagination() {
    for db in TestDatabase::all().await {
        let h = connected(&db).await;
        let (status, body) = get(&h, &format!("/jira/{ACME_SITE_ID}/projects")).await;
        assert_eq!(status, 200, "{}: {body}", db.kind);
        let keys: Vec<&str> = body["projects"]
            .as_array()
            .expect("projects")
            .iter()
            .map(|p| p["key"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(keys, ["ACME", "DATA", "OPS", "SEC", "WEB"]);
        assert_eq!(body["truncated"], false);
        assert_eq!(body["site_id"], ACME_SITE_ID);
        assert_eq!(body["projects"][2]["name"], "Operations");
        assert_eq!(body["projects"][2]["type"], "service_desk");
        assert_eq!(
            body["projects"][0]["url"],
            "https://acme.atlassian.net/browse/ACME"
        );
        let pages = h
            .fake
            .fake
            .content_requests()
            .iter()
            .filter(|r| r.path.ends_with("/rest/api/3/project/search"))
            .count();
        assert_eq!(pages, 3, "five projects, two a page");
    }
}

#[tokio::test]
async fn confluence_spaces_pages_and_a_page_as_markdown() {
    for db in TestDatabase::all().await {
        let h = connected(&db).await;
        let (status, body) = get(&h, &format!("/confluence/{ACME_SITE_ID}/spaces")).await;
        assert_eq!(status, 200, "{}: {body}", db.kind);
        let keys: Vec<&str> = body["spaces"]
            .as_array()
            .expect("spaces")
            .iter()
            .map(|s| s["key"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(keys, ["ENG", "OPS", "DOC", "~fake-account-1"]);
        assert_eq!(body["truncated"], false);
        assert_eq!(body["spaces"][0]["id"], "98305");
        assert_eq!(
            body["spaces"][0]["url"],
            "https://acme.atlassian.net/wiki/spaces/ENG"
        );
        assert_eq!(body["spaces"][3]["type"], "personal");

        let (status, first) = get(
            &h,
            &format!("/confluence/{ACME_SITE_ID}/spaces/ENG/pages?limit=2"),
        )
        .await;
        assert_eq!(status, 200, "{first}");
        let titles: Vec<&str> = first["pages"]
            .as_array()
            .expect("pages")
            .iter()
            .map(|p| p["title"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(titles, ["Payment service runbook", "Architecture overview"]);
        assert_eq!(first["space_id"], "98305");
        assert_eq!(first["pages"][0]["version"], 7);
        assert_eq!(first["pages"][0]["updated_at"], "2024-06-19T08:30:00Z");
        let cursor = first["next_cursor"].as_str().expect("a next cursor");
        // A cursor Atlassian did not hand out (its own part forged) is the client's mistake.
        let forged = {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(br#"{"k":"ENG","c":"not-a-cursor-of-atlassian"}"#)
        };
        let (got, body) = get(
            &h,
            &format!("/confluence/{ACME_SITE_ID}/spaces/ENG/pages?cursor={forged}"),
        )
        .await;
        assert_error(got, &body, 400, "invalid_request");
        // The cursor is bound to its space.
        let (got, body) = get(
            &h,
            &format!("/confluence/{ACME_SITE_ID}/spaces/OPS/pages?cursor={cursor}"),
        )
        .await;
        assert_error(got, &body, 400, "invalid_request");
        let (status, rest) = get(
            &h,
            &format!("/confluence/{ACME_SITE_ID}/spaces/ENG/pages?limit=2&cursor={cursor}"),
        )
        .await;
        assert_eq!(status, 200, "{rest}");
        assert_eq!(rest["pages"][0]["title"], "Onboarding");
        assert_eq!(rest["pages"].as_array().map(Vec::len), Some(1));
        assert_eq!(rest["next_cursor"], Value::Null);
        // Every Confluence call went to v2 (search aside), with the cursor Atlassian gave.
        let v2: Vec<String> = h
            .fake
            .fake
            .content_requests()
            .iter()
            .filter(|r| r.path.contains("/wiki/"))
            .map(|r| r.path.clone())
            .collect();
        assert!(v2.iter().all(|p| p.contains("/wiki/api/v2/")), "{v2:?}");

        let (status, page) = get(&h, &format!("/confluence/{ACME_SITE_ID}/pages/123456")).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["title"], "Payment service runbook");
        assert_eq!(
            page["space"],
            json!({"id": "98305", "key": "ENG", "name": "Engineering"})
        );
        assert_eq!(page["version"], 7);
        assert_eq!(page["updated_at"], "2024-06-19T08:30:00Z");
        assert_eq!(
            page["url"],
            "https://acme.atlassian.net/wiki/spaces/ENG/pages/123456/Payment+service+runbook"
        );
        // Headings, nested lists, a table, a code macro and other macros degraded to text.
        assert_eq!(
            page["body"].as_str().expect("body"),
            golden("confluence_page.md")
        );
        let token = access_token(&h).await;
        assert!(!page.to_string().contains(&token));
    }
}

#[tokio::test]
async fn a_grant_without_a_routes_scope_gets_insufficient_scope() {
    for db in TestDatabase::all().await {
        // The default scopes: enough for Jira, not for Confluence's search, spaces and pages.
        let h = Harness::start_scoped(
            &db,
            fake_config(),
            true,
            grantry::core::refresh::RefreshSettings::default(),
            grantry::atlassian::DEFAULT_SCOPES,
        )
        .await;
        h.connect("alice").await;
        for (path, scope) in [
            (
                format!("/confluence/{ACME_SITE_ID}/spaces"),
                "read:space:confluence",
            ),
            (
                format!("/confluence/{ACME_SITE_ID}/spaces/ENG/pages"),
                "read:space:confluence",
            ),
            (
                format!("/confluence/{ACME_SITE_ID}/pages/123456"),
                "read:page:confluence",
            ),
            (
                format!("/search?q=rollout&site={ACME_SITE_ID}&limit=5"),
                "search:confluence",
            ),
        ] {
            let before = h.fake.fake.counters().content_scope_refused;
            let (got, body) = get(&h, &path).await;
            if path.starts_with("/search") {
                // Jira still answers; Confluence is a partial failure that says why.
                assert_eq!(got, 200, "{path}: {body}");
                assert!(!results_of(&body).is_empty(), "{body}");
                let failure = &body["partial_failures"][0];
                assert_eq!(failure["product"], "confluence", "{body}");
                assert_eq!(failure["code"], "insufficient_scope", "{body}");
                let message = failure["error"].as_str().unwrap_or("");
                assert!(message.contains(scope), "{message}");
            } else {
                assert_error(got, &body, 403, "insufficient_scope");
                let message = body["message"].as_str().unwrap_or("");
                assert!(
                    message.contains(scope) && message.contains("ATLASSIAN_OAUTH_SCOPE"),
                    "{path}: {message}"
                );
            }
            assert_eq!(
                h.fake.fake.counters().content_scope_refused,
                before + 1,
                "{path}: the fake refused the operation"
            );
        }
        let (got, body) = get(&h, &format!("/jira/{ACME_SITE_ID}/projects")).await;
        assert_eq!(got, 200, "{body}");
    }
}

#[tokio::test]
async fn a_rate_limit_with_retry_after_is_waited_out() {
    for db in TestDatabase::all().await {
        let h = connected(&db).await;
        h.fake.fake.rate_limit_next_content_calls(2);
        let (status, issue) = get(&h, &format!("/jira/{ACME_SITE_ID}/issues/ACME-2")).await;
        assert_eq!(status, 200, "{}: {issue}", db.kind);
        assert_eq!(issue["summary"], "Login page times out on Safari");
        let counters = h.fake.fake.counters();
        assert_eq!(counters.content_rate_limited, 2);
        assert_eq!(
            counters.content_early, 0,
            "every retry came after the Retry-After second"
        );
    }
}

#[tokio::test]
async fn a_rate_limit_that_lasts_is_answered_429_with_retry_after() {
    for db in TestDatabase::all().await {
        let h = connected(&db).await;
        h.fake.fake.rate_limit_next_content_calls(3);
        let resp = h
            .http
            .get(h.url(&format!("{API}/jira/{ACME_SITE_ID}/projects")))
            .bearer_auth(h.token("alice", "user"))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 429, "{}", db.kind);
        assert_eq!(
            resp.headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
            Some("1")
        );
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["error"], "rate_limited");
        let counters = h.fake.fake.counters();
        assert_eq!(counters.content_rate_limited, 3, "one call and two retries");
        assert_eq!(counters.content_early, 0);
        // A good client honours the Retry-After it was given before it calls again.
        tokio::time::sleep(Duration::from_secs(1)).await;

        // Every site rate limited: the whole search is 429; the next try works.
        h.fake.fake.rate_limit_next_content_calls(9);
        let (status, body) = get(&h, "/search?q=rollout").await;
        assert_error(status, &body, 429, "rate_limited");
        assert_eq!(h.fake.fake.counters().content_rate_limited, 12);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (status, body) = get(&h, "/search?q=rollout").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(results_of(&body).len(), 4);
        assert_eq!(h.fake.fake.counters().content_early, 0);
    }
}

#[tokio::test]
async fn content_calls_refresh_a_due_token_first() {
    for db in TestDatabase::all().await {
        let h = Harness::start(&db, fake_config(), true).await;
        // Two-second tokens, each due once half its lifetime has passed.
        h.fake.fake.set_access_ttl(Duration::from_secs(2));
        h.connect("alice").await;
        let before = h.fake.fake.counters().token_refresh;
        h.wait_until_due("alice").await;
        let (status, body) = get(&h, &format!("/jira/{ACME_SITE_ID}/projects")).await;
        assert_eq!(status, 200, "{}: {body}", db.kind);
        h.wait_until_due("alice").await;
        let (status, body) = get(&h, "/search?q=runbook").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(results_of(&body).len(), 1);
        assert_eq!(h.fake.fake.counters().token_refresh, before + 2);
        assert!(h.fake.fake.content_requests().iter().all(|r| r.authorised));
    }
}

#[tokio::test]
async fn the_proxy_forwards_with_the_grant_token_only() {
    for db in TestDatabase::all().await {
        let h = connected(&db).await;
        let jwt = h.token("alice", "user");
        let resp = h
            .http
            .get(h.url(&format!(
                "{API}/proxy/jira/{ACME_SITE_ID}/rest/api/3/myself"
            )))
            .bearer_auth(&jwt)
            .header("cookie", "token=caller-cookie")
            .header("proxy-authorization", "Basic c2VjcmV0")
            .header("x-custom", "stays-here")
            .header("te", "trailers")
            .header("accept", "application/json")
            .header("accept-language", "en-GB")
            .send()
            .await
            .expect("proxy");
        assert_eq!(resp.status(), 200, "{}", db.kind);
        let headers = resp.headers().clone();
        assert!(headers.get("set-cookie").is_none(), "{headers:?}");
        assert!(headers.get("x-arequestid").is_none(), "{headers:?}");
        assert_eq!(headers["x-ratelimit-remaining"], "99");
        assert_eq!(headers["cache-control"], "no-store");
        let me: Value = resp.json().await.expect("json");
        assert_eq!(me["accountId"], "fake-account-1");

        let seen = h.fake.fake.content_requests();
        let last = seen.last().expect("a request reached the fake");
        assert_eq!(
            last.path,
            format!("/ex/jira/{ACME_SITE_ID}/rest/api/3/myself")
        );
        assert!(last.authorised, "the grant's token, not the caller's JWT");
        for dropped in ["cookie", "proxy-authorization", "x-custom", "te"] {
            assert!(
                !last.header_names.iter().any(|n| n == dropped),
                "{dropped} passed: {:?}",
                last.header_names
            );
        }
        for kept in ["accept", "accept-language", "authorization"] {
            assert!(last.header_names.iter().any(|n| n == kept), "{kept}");
        }

        // Query strings pass as they are.
        let (status, body) = get(
            &h,
            &format!("/proxy/jira/{ACME_SITE_ID}/rest/api/3/project/search?startAt=1&maxResults=1"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["values"][0]["key"], "DATA");
        let last = h.fake.fake.content_requests().pop().expect("request");
        assert_eq!(last.query.as_deref(), Some("startAt=1&maxResults=1"));

        // A POST with a JSON body.
        let (status, body) = h
            .call(
                "POST",
                &format!("{API}/proxy/jira/{BETA_SITE_ID}/rest/api/3/search/jql"),
                Some("alice"),
                Some(json!({"jql": "text ~ \"spectrometer\"", "maxResults": 5})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["issues"][0]["key"], "LAB-7");

        // Confluence on v2 (the docs' own example), and a removed v1 route answered as
        // Atlassian answers it.
        let (status, body) = get(
            &h,
            &format!(
                "/proxy/confluence/{ACME_SITE_ID}/wiki/api/v2/pages/123456?body-format=storage"
            ),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["body"]["storage"]["representation"], "storage");
        let (status, body) = get(
            &h,
            &format!("/proxy/confluence/{ACME_SITE_ID}/wiki/rest/api/content/123456"),
        )
        .await;
        assert_eq!(status, 410, "{body}");
        let (status, body) = get(
            &h,
            &format!("/proxy/jira/{ACME_SITE_ID}/rest/api/3/issue/NOPE-1"),
        )
        .await;
        assert_eq!(status, 404, "{body}");
        assert!(body["errorMessages"].is_array(), "{body}");

        // Bodies are capped: a small download passes, a 9 MiB one does not.
        let resp = h
            .http
            .get(h.url(&format!(
                "{API}/proxy/confluence/{ACME_SITE_ID}/wiki/download/attachments/123456/notes.txt"
            )))
            .bearer_auth(&jwt)
            .send()
            .await
            .expect("download");
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.text().await.expect("text"),
            "Rollout notes: staging first.\n"
        );
        let (status, body) = get(
            &h,
            &format!("/proxy/confluence/{ACME_SITE_ID}/wiki/download/attachments/123456/big.bin"),
        )
        .await;
        assert_error(status, &body, 502, "upstream_unavailable");

        // A rate limit is waited out through the proxy too.
        h.fake.fake.rate_limit_next_content_calls(1);
        let (status, body) = get(
            &h,
            &format!("/proxy/jira/{ACME_SITE_ID}/rest/api/3/issue/ACME-2"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(h.fake.fake.counters().content_early, 0);
    }
}

/// Sends a request line exactly as written (an HTTP client would normalise `..` and `%2e`
/// away) and returns the status line and the body.
async fn raw_get(h: &Harness, path: &str) -> (String, String) {
    let address = h.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        h.token("alice", "user")
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status_line = head.lines().next().unwrap_or("").to_owned();
    (status_line, body.to_owned())
}

#[tokio::test]
async fn the_proxy_refuses_foreign_sites_missing_products_and_escapes() {
    for db in TestDatabase::all().await {
        let h = connected(&db).await;
        let foreign = "33333333-3333-4333-8333-333333333333";
        for path in [
            format!("/proxy/jira/{foreign}/rest/api/3/myself"),
            format!("/proxy/confluence/{foreign}/wiki/api/v2/spaces"),
            // Beta Labs has Jira only.
            format!("/proxy/confluence/{BETA_SITE_ID}/wiki/api/v2/spaces"),
        ] {
            let (status, body) = get(&h, &path).await;
            assert_error(status, &body, 403, "forbidden_site");
        }
        let (status, _) = get(&h, &format!("/proxy/bitbucket/{ACME_SITE_ID}/x")).await;
        assert_eq!(status, 404);

        // Encoded slashes survive an HTTP client, so plain requests will do.
        for path in [
            format!("/proxy/jira/{ACME_SITE_ID}/rest%2f..%2f..%2fme"),
            format!(
                "/proxy/jira/{ACME_SITE_ID}/rest%2F..%2F..%2F..%2Fex%2Fjira%2F{BETA_SITE_ID}%2Fx"
            ),
            format!("/proxy/jira/{ACME_SITE_ID}/rest%5c..%5cme"),
            format!("/proxy/jira/{ACME_SITE_ID}/rest//api"),
            format!("/proxy/jira/{ACME_SITE_ID}/x%00y"),
        ] {
            let (status, body) = get(&h, &path).await;
            assert_error(status, &body, 400, "invalid_request");
        }
        // Dot segments only reach the server as written over a raw connection.
        let before = h.fake.fake.counters().content;
        for path in [
            format!("{API}/proxy/jira/{ACME_SITE_ID}/rest/../../../me"),
            format!("{API}/proxy/jira/{ACME_SITE_ID}/../{BETA_SITE_ID}/rest/api/3/myself"),
            format!("{API}/proxy/jira/{ACME_SITE_ID}/%2e%2e/%2e%2e/me"),
            format!("{API}/proxy/jira/{ACME_SITE_ID}/.%2E/me"),
            format!("{API}/proxy/jira/{ACME_SITE_ID}/rest/./api/3/myself"),
        ] {
            let (status_line, body) = raw_get(&h, &path).await;
            assert!(
                status_line.starts_with("HTTP/1.1 400"),
                "{path}: {status_line} {body}"
            );
            let body: Value = serde_json::from_str(&body).expect("JSON error");
            assert_eq!(body["error"], "invalid_request", "{path}");
        }
        assert_eq!(
            h.fake.fake.counters().content,
            before,
            "no refused request reached Atlassian"
        );
        // The raw helper itself gets through when the path is clean.
        let (status_line, _) = raw_get(
            &h,
            &format!("{API}/proxy/jira/{ACME_SITE_ID}/rest/api/3/myself"),
        )
        .await;
        assert!(status_line.starts_with("HTTP/1.1 200"), "{status_line}");
    }
}

/// The real binary at trace level: content routes, their failures and the proxy log no token.
#[tokio::test]
async fn content_routes_log_no_token() {
    use crate::helpers::Scratch;
    use grantry_atlassian_fake::FakeAtlassian;

    let fake = FakeAtlassian::start(fake_config()).await.expect("fake");
    let cfg = fake.fake.config().clone();
    let jwt_secret = "content-logs-jwt-secret";
    let mut scratch = Scratch::new()
        .with(
            "GRANTRY_ENCRYPTION_KEY",
            &grantry::core::keyring::KeyRing::generate_key_base64(),
        )
        .with("GRANTRY_JWT_SECRET", jwt_secret)
        .with("LOG_LEVEL", "trace")
        .with("ENABLE_ATLASSIAN_INTEGRATION", "true")
        .with("ATLASSIAN_CLIENT_ID", &cfg.client_id)
        .with("ATLASSIAN_CLIENT_SECRET", &cfg.client_secret)
        .with("ATLASSIAN_REDIRECT_URI", crate::harness::REDIRECT)
        .with("ATLASSIAN_AUTH_URL", &fake.base_url)
        .with("ATLASSIAN_API_URL", &fake.base_url);
    let server = scratch.serve().await;
    let secret = secrecy::SecretString::from(jwt_secret.to_owned());
    let issue = |user: &str, role: &str| {
        grantry_server::JwtAuthenticator::issue(&secret, user, role, Duration::from_secs(600))
            .expect("sign")
    };
    let (user, admin) = (issue("alice", "user"), issue("root", "admin"));
    let http = reqwest::Client::new();
    let auth: Value = http
        .post(server.url(&format!("{API}/connection/authorize")))
        .bearer_auth(&user)
        .send()
        .await
        .expect("authorize")
        .json()
        .await
        .expect("json");
    let code = fake.fake.issue_code(grantry::atlassian::DEFAULT_SCOPES);
    let resp = http
        .post(server.url(&format!("{API}/connection/callback")))
        .bearer_auth(&user)
        .json(&json!({"code": code, "state": auth["state"]}))
        .send()
        .await
        .expect("callback");
    assert_eq!(resp.status(), 200);
    let token: Value = http
        .get(server.url(&format!("{API}/admin/connections/alice/access-token")))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    let access = token["access_token"].as_str().expect("access").to_owned();

    fake.fake.fail_content(BETA_SITE_ID, "jira", 500);
    let mut bodies = Vec::new();
    for path in [
        "/search?q=rollout".to_owned(),
        format!("/jira/{BETA_SITE_ID}/projects"),
        format!("/jira/{ACME_SITE_ID}/issues/ACME-1"),
        format!("/confluence/{ACME_SITE_ID}/pages/123456"),
        format!("/proxy/jira/{ACME_SITE_ID}/rest/api/3/myself"),
        format!("/proxy/jira/{ACME_SITE_ID}/rest%2f..%2fme"),
        format!("/proxy/confluence/{ACME_SITE_ID}/wiki/download/attachments/123456/big.bin"),
    ] {
        let resp = http
            .get(server.url(&format!("{API}{path}")))
            .bearer_auth(&user)
            .header("cookie", "token=caller-cookie-value")
            .send()
            .await
            .expect("request");
        bodies.push(resp.text().await.unwrap_or_default());
    }
    fake.fake.rate_limit_next_content_calls(3);
    let resp = http
        .get(server.url(&format!("{API}/jira/{ACME_SITE_ID}/projects")))
        .bearer_auth(&user)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 429);
    server.stop();

    let log = std::fs::read_to_string(scratch.log_path()).expect("log");
    assert!(log.contains("TRACE"), "trace level was on");
    assert!(
        log.contains("search failed on a site") && log.contains("atlassian content call failed"),
        "the failures were logged"
    );
    for (what, value) in [
        ("access token", access.as_str()),
        ("user JWT", user.as_str()),
        ("caller cookie", "caller-cookie-value"),
        ("JWT secret", jwt_secret),
        ("client secret", cfg.client_secret.as_str()),
    ] {
        assert!(!log.contains(value), "{what} found in the logs");
        for body in &bodies {
            assert!(!body.contains(value), "{what} found in a response: {body}");
        }
    }
}
