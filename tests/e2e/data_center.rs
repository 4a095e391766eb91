//! Atlassian Data Center end to end: two instances (Jira DC at `/jira`, Confluence DC at
//! `/confluence`) mounted beside Atlassian Cloud, connected through the strict fake Data Center
//! (PKCE checked, form bodies only, `redirect_uri` required on refresh, rotation without reuse
//! leeway), content with the Cloud routes' shapes, rotation, a stolen refresh token, and
//! disconnect without a revocation endpoint; on every test database.

use std::collections::BTreeMap;
use std::time::Duration;

use grantry_atlassian_fake::{DcConfig, FakeDataCenter, RunningDc};
use grantry_server::testing::TestDatabase;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Harness, REDIRECT, fake_config};

const JIRA: &str = "/api/v1/jira-dc";
const WIKI: &str = "/api/v1/wiki-dc";

/// Grantry with Cloud, `jira-dc` and `wiki-dc`, each instance against its own fake.
struct Setup {
    h: Harness,
    jira: RunningDc,
    wiki: RunningDc,
}

fn instance_env(id: &str, dc: &RunningDc, product: &str) -> Vec<(String, String)> {
    let prefix = id.to_ascii_uppercase().replace('-', "_");
    let config = dc.fake.config();
    [
        ("KIND", "atlassian-dc".to_owned()),
        ("BASE_URL", dc.base_url.clone()),
        ("PRODUCT", product.to_owned()),
        ("CLIENT_ID", config.client_id.clone()),
        ("CLIENT_SECRET", config.client_secret.clone()),
        ("REDIRECT_URI", REDIRECT.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (format!("{prefix}_{k}"), v))
    .collect()
}

async fn setup(db: &TestDatabase, access_ttl: Duration) -> Setup {
    let jira = FakeDataCenter::start(DcConfig {
        redirect_uri: REDIRECT.into(),
        access_ttl,
        ..DcConfig::default()
    })
    .await
    .expect("fake jira dc");
    let wiki = FakeDataCenter::start(DcConfig {
        redirect_uri: REDIRECT.into(),
        access_ttl,
        ..DcConfig::confluence()
    })
    .await
    .expect("fake confluence dc");
    let mut env = instance_env("jira-dc", &jira, "jira");
    env.extend(instance_env("wiki-dc", &wiki, "confluence"));
    let h = Harness::start_with_env(db, fake_config(), env).await;
    Setup { h, jira, wiki }
}

impl Setup {
    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.h.call("GET", path, Some("alice"), None).await
    }

    /// The whole dance on an instance through its consent page; returns the status object.
    async fn connect(&self, api: &str, dc: &RunningDc) -> Value {
        let (status, body) = self
            .h
            .call(
                "POST",
                &format!("{api}/connection/authorize"),
                Some("alice"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let authorization_url = body["authorization_url"].as_str().expect("url");
        assert!(
            authorization_url.starts_with(&dc.url("/rest/oauth2/latest/authorize?")),
            "{authorization_url}"
        );
        let q: BTreeMap<String, String> = url::Url::parse(authorization_url)
            .expect("url")
            .query_pairs()
            .into_owned()
            .collect();
        assert_eq!(q["code_challenge_method"], "S256");
        assert!(q["code_challenge"].len() >= 43, "{q:?}");
        let page = self
            .h
            .http
            .get(authorization_url)
            .send()
            .await
            .expect("consent page");
        assert_eq!(page.status(), 200);
        let mut form: Vec<(&str, &str)> = [
            "client_id",
            "redirect_uri",
            "scope",
            "state",
            "code_challenge",
            "code_challenge_method",
        ]
        .iter()
        .map(|k| (*k, q[*k].as_str()))
        .collect();
        form.push(("decision", "accept"));
        let resp = self
            .h
            .http
            .post(dc.url("/rest/oauth2/latest/authorize/decision"))
            .form(&form)
            .send()
            .await
            .expect("decision");
        assert_eq!(resp.status(), 302);
        let location = resp.headers()["location"].to_str().expect("location");
        let back: BTreeMap<String, String> = url::Url::parse(location)
            .expect("redirect")
            .query_pairs()
            .into_owned()
            .collect();
        let (status, body) = self
            .h
            .call(
                "POST",
                &format!("{api}/connection/callback"),
                Some("alice"),
                Some(json!({"code": back["code"], "state": back["state"]})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Sleeps until alice's stored token of `provider` is past half its lifetime (due).
    async fn wait_until_due(&self, provider: &str) {
        use grantry::core::store::TokenStore;
        let row = self
            .h
            .store
            .connection("alice", provider)
            .await
            .expect("db")
            .expect("row");
        let expires = row.access_expires_at.expect("expiry");
        let issued = row.access_issued_at.expect("issued");
        let due = expires - (expires - issued) / 2;
        let wait = (due - chrono::Utc::now()).to_std().unwrap_or_default();
        tokio::time::sleep(wait + Duration::from_millis(100)).await;
    }

    /// Alice's stored refresh token of `provider`, opened with the vault.
    async fn refresh_token(&self, provider: &str) -> String {
        use grantry::core::store::TokenStore;
        let row = self
            .h
            .store
            .connection("alice", provider)
            .await
            .expect("db")
            .expect("row");
        let tokens = self.h.vault.open_tokens(&row).expect("open");
        tokens
            .refresh_token
            .expect("a refresh token")
            .secret()
            .to_owned()
    }
}

#[tokio::test]
async fn two_instances_and_cloud_connect_side_by_side_with_pkce() {
    for db in TestDatabase::all().await {
        let s = setup(&db, Duration::from_secs(7200)).await;
        let (status, providers) =
            s.h.call("GET", "/api/v1/providers", Some("alice"), None)
                .await;
        assert_eq!(status, 200, "{providers}");
        let ids: Vec<&str> = providers
            .as_array()
            .expect("providers")
            .iter()
            .filter_map(|p| p["id"].as_str())
            .collect();
        for id in ["atlassian", "jira-dc", "wiki-dc"] {
            assert!(ids.contains(&id), "{id}: {ids:?}");
        }
        let jira_info = providers
            .as_array()
            .and_then(|list| list.iter().find(|p| p["id"] == "jira-dc"))
            .expect("jira-dc listed");
        assert_eq!(jira_info["name"], "Jira Data Center");
        assert!(
            jira_info["revocation_hint"]
                .as_str()
                .is_some_and(|h| h.contains("Authorized applications")),
            "{jira_info}"
        );

        let jira = s.connect(JIRA, &s.jira).await;
        assert_eq!(jira["provider"], "jira-dc", "{}: {jira}", db.kind);
        assert_eq!(jira["status"], "active");
        assert_eq!(
            jira["account"]["id"], "JIRAUSER10000",
            "the stable key, not the name"
        );
        assert_eq!(jira["account"]["name"], "Alice Example");
        assert_eq!(jira["account"]["email"], "alice@example.com");
        assert_eq!(jira["scopes"], json!(["READ"]));
        let sites = jira["sites"].as_array().expect("sites");
        assert_eq!(sites.len(), 1, "{jira}");
        assert_eq!(sites[0]["name"], "Acme Jira");
        assert_eq!(sites[0]["url"], format!("{}", s.jira.base_url));
        let wiki = s.connect(WIKI, &s.wiki).await;
        assert_eq!(wiki["account"]["id"], "8a7f808a8e0f0c2a018e0f0c7a2a0000");
        assert_eq!(wiki["sites"][0]["name"], "Acme Confluence");
        assert_ne!(wiki["sites"][0]["id"], jira["sites"][0]["id"]);
        let cloud = s.h.connect("alice").await;
        assert_eq!(cloud["provider"], "atlassian");

        for dc in [&s.jira, &s.wiki] {
            let c = dc.fake.counters();
            assert_eq!((c.token_exchange, c.pkce_failures), (1, 0));
            assert_eq!(c.json_token_requests, 0, "form bodies only");
        }
        // A renamed user is the same account.
        s.jira.fake.rename_user("alice.renamed", "Alice Renamed");
        let (_, again) = s.get(&format!("{JIRA}/connection/status")).await;
        assert_eq!(again["account"]["id"], "JIRAUSER10000");
    }
}

#[tokio::test]
async fn data_center_content_has_the_cloud_shapes() {
    for db in TestDatabase::all().await {
        let s = setup(&db, Duration::from_secs(7200)).await;
        let jira = s.connect(JIRA, &s.jira).await;
        let site = jira["sites"][0]["id"].as_str().expect("site").to_owned();
        let wiki = s.connect(WIKI, &s.wiki).await;
        let wiki_site = wiki["sites"][0]["id"].as_str().expect("site").to_owned();

        // Search: Jira REST v2 JQL on the Jira instance, CQL on the Confluence one.
        let (status, body) = s.get(&format!("{JIRA}/search?q=payment")).await;
        assert_eq!(status, 200, "{}: {body}", db.kind);
        assert_eq!(body["partial_failures"], json!([]), "{body}");
        let hits = body["results"].as_array().expect("results");
        assert!(!hits.is_empty(), "{body}");
        assert!(
            hits.iter()
                .all(|h| h["kind"] == "jira_issue" && h["site_id"] == site.as_str())
        );
        assert!(
            hits[0]["url"]
                .as_str()
                .is_some_and(|u| u.starts_with(&format!("{}/browse/", s.jira.base_url))),
            "{body}"
        );
        let (status, body) = s.get(&format!("{WIKI}/search?q=runbook")).await;
        assert_eq!(status, 200, "{body}");
        assert!(
            body["results"]
                .as_array()
                .is_some_and(|r| r.iter().all(|h| h["kind"] == "confluence_page")),
            "{body}"
        );

        // Projects, and an issue with its wiki markup as Markdown.
        let (status, projects) = s.get(&format!("{JIRA}/jira/{site}/projects")).await;
        assert_eq!(status, 200, "{projects}");
        assert_eq!(projects["truncated"], false);
        let key = projects["projects"][0]["key"]
            .as_str()
            .expect("key")
            .to_owned();
        let (status, found) = s.get(&format!("{JIRA}/search?q=rollout&limit=5")).await;
        assert_eq!(status, 200, "{found}");
        let issue_key = found["results"][0]["id"]
            .as_str()
            .unwrap_or(&format!("{key}-1"))
            .to_owned();
        let (status, issue) = s
            .get(&format!("{JIRA}/jira/{site}/issues/{issue_key}"))
            .await;
        assert_eq!(status, 200, "{issue}");
        assert_eq!(issue["site_id"], site.as_str());
        let description = issue["description"].as_str().expect("description");
        assert!(!description.contains("\r"), "{description:?}");
        assert!(
            description.contains("## ") || description.contains("**"),
            "wiki markup became Markdown: {description}"
        );
        assert!(issue["reporter"]["account_id"].is_string(), "{issue}");

        // Spaces, a space's pages by cursor, a page as Markdown.
        let (status, spaces) = s
            .get(&format!("{WIKI}/confluence/{wiki_site}/spaces"))
            .await;
        assert_eq!(status, 200, "{spaces}");
        let space = spaces["spaces"][0]["key"]
            .as_str()
            .expect("space")
            .to_owned();
        let mut pages = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..10 {
            let path = match &cursor {
                Some(c) => {
                    format!("{WIKI}/confluence/{wiki_site}/spaces/{space}/pages?limit=2&cursor={c}")
                }
                None => format!("{WIKI}/confluence/{wiki_site}/spaces/{space}/pages?limit=2"),
            };
            let (status, list) = s.get(&path).await;
            assert_eq!(status, 200, "{list}");
            pages.extend(list["pages"].as_array().expect("pages").clone());
            cursor = list["next_cursor"].as_str().map(str::to_owned);
            if cursor.is_none() {
                break;
            }
        }
        assert!(!pages.is_empty());
        let page_id = pages[0]["id"].as_str().expect("id").to_owned();
        let (status, page) = s
            .get(&format!("{WIKI}/confluence/{wiki_site}/pages/{page_id}"))
            .await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["space"]["key"], space.as_str());
        assert!(
            page["body"].as_str().is_some_and(|b| !b.is_empty()),
            "{page}"
        );
        assert!(
            page["url"]
                .as_str()
                .is_some_and(|u| u.starts_with(&s.wiki.base_url)),
            "{page}"
        );

        // The other product of an instance is refused; so is Cloud's site.
        let (status, body) = s.get(&format!("{JIRA}/confluence/{site}/spaces")).await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["error"], "forbidden_site");

        // The proxy, with the same path rules.
        let (status, me) = s
            .get(&format!("{JIRA}/proxy/jira/{site}/rest/api/2/myself"))
            .await;
        assert_eq!(status, 200, "{me}");
        assert_eq!(me["key"], "JIRAUSER10000");
        let (status, body) = s
            .get(&format!("{JIRA}/proxy/jira/{site}/rest/api/2/..%2f..%2fx"))
            .await;
        assert_eq!(status, 400, "{body}");
        // Only the REST API and attachments: never the OAuth endpoints or the web UI.
        for path in [
            "rest/oauth2/latest/token",
            "secure/admin/ViewApplicationProperties.jspa",
            "rest/api",
        ] {
            let (status, body) = s.get(&format!("{JIRA}/proxy/jira/{site}/{path}")).await;
            assert_eq!(status, 400, "{path}: {body}");
            assert_eq!(body["error"], "invalid_request");
        }
        assert!(s.jira.fake.content_requests().iter().all(|r| r.authorised));
    }
}

#[tokio::test]
async fn rotation_sends_redirect_uri_and_a_stolen_refresh_token_ends_the_grant() {
    for db in TestDatabase::all().await {
        let s = setup(&db, Duration::from_secs(2)).await;
        s.connect(JIRA, &s.jira).await;
        let first = s.refresh_token("jira-dc").await;
        // Two refreshes, each rotating the refresh token.
        for round in 1..=2 {
            s.wait_until_due("jira-dc").await;
            let (status, body) = s
                .get(&format!("{JIRA}/jira/{}/projects", instance(&s).await))
                .await;
            assert_eq!(status, 200, "round {round}: {body}");
            assert_eq!(s.jira.fake.counters().token_refresh, round, "{}", db.kind);
        }
        let c = s.jira.fake.counters();
        assert_eq!(
            c.refresh_without_redirect_uri, 0,
            "the fake refuses a refresh without redirect_uri; grantry always sends it"
        );
        let current = s.refresh_token("jira-dc").await;
        assert_ne!(first, current, "rotated");

        // Someone replays the first, rotated-out refresh token: the fake kills the whole grant.
        let config = s.jira.fake.config().clone();
        let resp =
            s.h.http
                .post(s.jira.url("/rest/oauth2/latest/token"))
                .form(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", first.as_str()),
                    ("client_id", config.client_id.as_str()),
                    ("client_secret", config.client_secret.as_str()),
                    ("redirect_uri", REDIRECT),
                ])
                .send()
                .await
                .expect("replay");
        assert_eq!(resp.status(), 400);
        assert_eq!(s.jira.fake.counters().refresh_reuse, 1);
        // Grantry's next refresh is refused: the connection needs consent again, kept.
        s.wait_until_due("jira-dc").await;
        let (status, body) = s
            .get(&format!("{JIRA}/jira/{}/projects", instance(&s).await))
            .await;
        assert_eq!(status, 409, "{body}");
        assert_eq!(body["error"], "needs_reauth");
        let (_, status_object) = s.get(&format!("{JIRA}/connection/status")).await;
        assert_eq!(status_object["status"], "needs_reauth", "{status_object}");
    }
}

/// The Jira instance's site id, as the status object shows it.
async fn instance(s: &Setup) -> String {
    let (_, status) = s.get(&format!("{JIRA}/connection/status")).await;
    status["sites"][0]["id"].as_str().expect("site").to_owned()
}

#[tokio::test]
async fn disconnect_deletes_the_tokens_and_says_revocation_is_unsupported() {
    for db in TestDatabase::all().await {
        let s = setup(&db, Duration::from_secs(7200)).await;
        s.connect(JIRA, &s.jira).await;
        let resp =
            s.h.http
                .delete(s.h.url(&format!("{JIRA}/connection")))
                .bearer_auth(s.h.token("alice", "user"))
                .send()
                .await
                .expect("delete");
        assert_eq!(resp.status(), 204);
        assert_eq!(resp.headers()["grantry-revocation"], "unsupported");
        let (_, status) = s.get(&format!("{JIRA}/connection/status")).await;
        assert_eq!(status["connected"], false, "{status}");
    }
}
