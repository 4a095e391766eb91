//! The fake's Jira dynamic webhooks driven over real HTTP: registration and its validation, the
//! scope check, ownership, paging, refresh and expiry on the fake's clock, deletion, and signed
//! deliveries to a local receiver that verifies the JWT.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::routing::post;
use grantry_atlassian_fake::{
    ACME_SITE_ID, BETA_SITE_ID, FakeAtlassian, FakeConfig, RunningFake, Signing, WEBHOOK_LIFETIME,
    WebhookOwner,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

const WEBHOOK_SCOPE: &str = "read:me read:jira-work manage:jira-webhook offline_access";
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

struct Setup {
    running: RunningFake,
    http: reqwest::Client,
    token: String,
}

async fn token_for(running: &RunningFake, http: &reqwest::Client, scope: &str) -> String {
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
        .expect("token call")
        .json()
        .await
        .expect("token JSON");
    body["access_token"]
        .as_str()
        .expect("access token")
        .to_owned()
}

async fn setup() -> Setup {
    let running = FakeAtlassian::start(FakeConfig::default())
        .await
        .expect("fake starts");
    let http = reqwest::Client::new();
    let token = token_for(&running, &http, WEBHOOK_SCOPE).await;
    Setup {
        running,
        http,
        token,
    }
}

fn webhook_path(site: &str) -> String {
    format!("/ex/jira/{site}/rest/api/3/webhook")
}

fn refresh_path(site: &str) -> String {
    format!("/ex/jira/{site}/rest/api/3/webhook/refresh")
}

impl Setup {
    /// Moves the fake's clock and takes a new access token (the old one died on the way).
    async fn advance(&mut self, by: Duration) {
        self.running.fake.advance_clock(by);
        self.token = token_for(&self.running, &self.http, WEBHOOK_SCOPE).await;
    }

    /// Sends `body` (raw bytes, sent as JSON) and returns the status and the JSON answer
    /// (`Null` for an empty or non-JSON one).
    async fn call_raw(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<&[u8]>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, self.running.url(path))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_vec());
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let bytes = body.map(|b| serde_json::to_vec(&b).expect("serialises"));
        self.call_raw(method, path, &self.token, bytes.as_deref())
            .await
    }

    async fn register(&self, site: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, &webhook_path(site), Some(body))
            .await
    }

    /// Registers one webhook and returns its id.
    async fn register_one(&self, url: &str, events: &[&str]) -> i64 {
        let (status, body) = self
            .register(
                ACME_SITE_ID,
                json!({"url": url, "webhooks": [{"events": events, "jqlFilter": "project = ACME"}]}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["webhookRegistrationResult"][0]["createdWebhookId"]
            .as_i64()
            .unwrap_or_else(|| panic!("created: {body}"))
    }

    async fn list(&self, site: &str, query: &str) -> Value {
        let (status, body) = self
            .call(Method::GET, &format!("{}{query}", webhook_path(site)), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    async fn listed_ids(&self, site: &str) -> Vec<i64> {
        let mut ids = Vec::new();
        let mut start = 0;
        loop {
            let page = self.list(site, &format!("?startAt={start}")).await;
            let values = page["values"].as_array().expect("values");
            ids.extend(values.iter().map(|v| v["id"].as_i64().expect("id")));
            start += values.len();
            if page["isLast"] == true {
                return ids;
            }
        }
    }
}

fn epoch_ms(time: SystemTime) -> i64 {
    i64::try_from(
        time.duration_since(UNIX_EPOCH)
            .expect("after the epoch")
            .as_millis(),
    )
    .expect("fits")
}

fn other_owner(client_id: &str, account_id: &str) -> WebhookOwner {
    WebhookOwner {
        client_id: client_id.to_owned(),
        account_id: account_id.to_owned(),
        cloud_id: ACME_SITE_ID.to_owned(),
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    iat: u64,
    exp: u64,
}

/// What the receiver saw of one POST.
#[derive(Debug, Clone)]
struct Received {
    identifier: String,
    retry: String,
    content_type: String,
    claims: Result<(String, String, u64), String>,
    body: Value,
}

#[derive(Clone)]
struct Receiver {
    secret: String,
    client_id: String,
    seen: Arc<Mutex<Vec<Received>>>,
}

/// A receiver that checks the JWT like a grantry deployment would: 200 when it verifies
/// against the client secret, 401 otherwise.
async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> AxumStatus {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let authorization = header("authorization");
    let claims = match authorization.strip_prefix("Bearer ") {
        None => Err("no bearer token".to_owned()),
        Some(jwt) => {
            let mut validation = Validation::new(Algorithm::HS256);
            validation.set_issuer(&[receiver.client_id.as_str()]);
            validation.set_required_spec_claims(&["exp", "iat", "iss", "sub"]);
            jsonwebtoken::decode::<Claims>(
                jwt,
                &DecodingKey::from_secret(receiver.secret.as_bytes()),
                &validation,
            )
            .map(|data| {
                (
                    data.claims.iss,
                    data.claims.sub,
                    data.claims.exp - data.claims.iat,
                )
            })
            .map_err(|error| error.to_string())
        }
    };
    let valid = claims.is_ok();
    receiver.seen.lock().expect("lock").push(Received {
        identifier: header("x-atlassian-webhook-identifier"),
        retry: header("x-atlassian-webhook-retry"),
        content_type: header("content-type"),
        claims,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    if valid {
        AxumStatus::OK
    } else {
        AxumStatus::UNAUTHORIZED
    }
}

/// Serves the receiver on a local port; returns its `/hook` URL and what it saw.
async fn start_receiver(config: &FakeConfig) -> (String, Arc<Mutex<Vec<Received>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(Receiver {
            secret: config.client_secret.clone(),
            client_id: config.client_id.clone(),
            seen: seen.clone(),
        });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("receiver serves");
    });
    (format!("http://{addr}/hook"), seen)
}

fn seen(received: &Arc<Mutex<Vec<Received>>>) -> Vec<Received> {
    received.lock().expect("lock").clone()
}

#[tokio::test]
async fn registration_answers_in_request_order() {
    let s = setup().await;
    let before = s.running.fake.now();
    let (status, body) = s
        .register(
            ACME_SITE_ID,
            json!({
                "url": "https://hooks.example.com/jira",
                "webhooks": [
                    {"events": ["jira:issue_created", "jira:issue_updated"], "jqlFilter": "project = ACME"},
                    {"events": ["jira:issue_exploded"], "jqlFilter": "project = ACME"},
                    {"events": ["jira:issue_created"], "jqlFilter": "  "},
                    {"events": ["jira:issue_created"]},
                    {"events": [], "jqlFilter": "project = ACME"},
                    {"events": ["comment_created"], "jqlFilter": "watchCount = 2"},
                    {"events": ["jira:issue_updated"], "jqlFilter": "project in (ACME, DATA)", "fieldIdsFilter": ["summary"]},
                ],
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let results = body["webhookRegistrationResult"]
        .as_array()
        .expect("results");
    assert_eq!(results.len(), 7);
    assert_eq!(results[0], json!({"createdWebhookId": 10000}));
    assert_eq!(
        results[1],
        json!({"errors": ["The event jira:issue_exploded is not supported."]})
    );
    for refused in &results[2..6] {
        let errors = refused["errors"].as_array().expect("errors");
        assert!(!errors.is_empty() && refused.get("createdWebhookId").is_none());
    }
    assert_eq!(
        results[5],
        json!({"errors": ["The clause watchCount is unsupported."]})
    );
    assert_eq!(results[6], json!({"createdWebhookId": 10001}));

    let webhooks = s.running.fake.webhooks(ACME_SITE_ID);
    assert_eq!(
        webhooks.iter().map(|w| w.id).collect::<Vec<_>>(),
        [10000, 10001]
    );
    let first = &webhooks[0];
    assert_eq!(first.url, "https://hooks.example.com/jira");
    assert_eq!(first.events, ["jira:issue_created", "jira:issue_updated"]);
    assert_eq!(first.jql_filter, "project = ACME");
    assert_eq!(first.owner.client_id, "fake-client-id");
    assert_eq!(first.owner.account_id, "fake-account-1");
    assert_eq!(first.owner.cloud_id, ACME_SITE_ID);
    assert!(first.expires_at >= before + WEBHOOK_LIFETIME);
    assert!(first.expires_at <= s.running.fake.now() + WEBHOOK_LIFETIME);
    assert_eq!(
        webhooks[1].field_ids_filter.as_deref(),
        Some(&["summary".to_owned()][..])
    );
    assert!(s.running.fake.webhooks(BETA_SITE_ID).is_empty());
    assert_eq!(s.running.fake.counters().webhooks_registered, 2);
}

#[tokio::test]
async fn malformed_registrations_are_400() {
    let s = setup().await;
    let path = webhook_path(ACME_SITE_ID);
    let hook = json!([{"events": ["jira:issue_created"], "jqlFilter": "project = ACME"}]);
    let bodies: Vec<Vec<u8>> = vec![
        b"this is not JSON".to_vec(),
        Vec::new(),
        b"[]".to_vec(),
        serde_json::to_vec(&json!({"webhooks": hook})).expect("json"),
        serde_json::to_vec(&json!({"url": "https://hooks.example.com/jira"})).expect("json"),
        serde_json::to_vec(&json!({"url": "https://h.example.com", "webhooks": hook, "name": "x"}))
            .expect("json"),
        serde_json::to_vec(&json!({"url": "https://h.example.com", "webhooks": [{"events": ["jira:issue_created"], "jqlFilter": "project = A", "extra": 1}]}))
            .expect("json"),
        serde_json::to_vec(&json!({"url": "http://hooks.example.com/jira", "webhooks": hook}))
            .expect("json"),
        serde_json::to_vec(&json!({"url": "http://10.1.2.3/jira", "webhooks": hook}))
            .expect("json"),
        serde_json::to_vec(&json!({"url": "ftp://127.0.0.1/jira", "webhooks": hook}))
            .expect("json"),
        serde_json::to_vec(&json!({"url": "not a url", "webhooks": hook})).expect("json"),
    ];
    for body in &bodies {
        let (status, answer) = s.call_raw(Method::POST, &path, &s.token, Some(body)).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{}",
            String::from_utf8_lossy(body)
        );
        let messages = answer["errorMessages"].as_array().expect("errorMessages");
        assert!(!messages.is_empty(), "{answer}");
    }
    let (status, answer) = s.call_raw(Method::POST, &path, &s.token, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(s.running.fake.webhooks(ACME_SITE_ID).is_empty());

    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://[::1]:9/hook",
        "https://hooks.example.com/hook",
    ] {
        s.register_one(url, &["jira:issue_created"]).await;
    }
    assert_eq!(s.running.fake.webhooks(ACME_SITE_ID).len(), 4);
}

#[tokio::test]
async fn every_webhook_call_needs_the_webhook_scopes() {
    let s = setup().await;
    let id = s
        .register_one("https://hooks.example.com/jira", &["jira:issue_created"])
        .await;
    let narrow = token_for(&s.running, &s.http, "read:me read:jira-work offline_access").await;
    let no_read = token_for(&s.running, &s.http, "manage:jira-webhook").await;
    let register = serde_json::to_vec(&json!({
        "url": "https://hooks.example.com/jira",
        "webhooks": [{"events": ["jira:issue_created"], "jqlFilter": "project = ACME"}],
    }))
    .expect("json");
    let ids = serde_json::to_vec(&json!({"webhookIds": [id]})).expect("json");
    let calls: [(Method, String, Option<&[u8]>); 4] = [
        (Method::POST, webhook_path(ACME_SITE_ID), Some(&register)),
        (Method::GET, webhook_path(ACME_SITE_ID), None),
        (Method::DELETE, webhook_path(ACME_SITE_ID), Some(&ids)),
        (Method::PUT, refresh_path(ACME_SITE_ID), Some(&ids)),
    ];
    let mismatch = json!({"code": 401, "message": "Unauthorized; scope does not match"});
    for (method, path, body) in &calls {
        for token in [&narrow, &no_read] {
            let (status, answer) = s.call_raw(method.clone(), path, token, *body).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
            assert_eq!(answer, mismatch, "{method} {path}");
        }
        let (status, answer) = s.call_raw(method.clone(), path, "bogus", *body).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
        assert_eq!(answer, json!({"code": 401, "message": "Unauthorized"}));
        let elsewhere = path.replace(ACME_SITE_ID, "33333333-3333-4333-8333-333333333333");
        let (status, _) = s
            .call_raw(method.clone(), &elsewhere, &s.token, *body)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {elsewhere}");
    }
    let webhooks = s.running.fake.webhooks(ACME_SITE_ID);
    assert_eq!(webhooks.len(), 1);
    assert_eq!(s.running.fake.counters().webhooks_refreshed, 0);
    assert_eq!(s.running.fake.counters().webhooks_deleted, 0);

    s.running.fake.advance_clock(Duration::from_secs(2 * 3600));
    let (status, _) = s.call(Method::GET, &webhook_path(ACME_SITE_ID), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the access token expired");
}

#[tokio::test]
async fn listing_pages_through_the_callers_webhooks_on_that_site() {
    let s = setup().await;
    let mut ids = Vec::new();
    for event in [
        "jira:issue_created",
        "jira:issue_updated",
        "jira:issue_deleted",
    ] {
        ids.push(
            s.register_one("https://hooks.example.com/jira", &[event])
                .await,
        );
    }
    let other_user = s.running.fake.register_webhook_as(
        other_owner("fake-client-id", "someone-else"),
        "https://hooks.example.com/jira",
        &["jira:issue_created"],
        "project = ACME",
    );
    let other_app = s.running.fake.register_webhook_as(
        other_owner("another-app", "fake-account-1"),
        "https://other.example.com/jira",
        &["jira:issue_created"],
        "project = ACME",
    );
    let (status, beta) = s
        .register(
            BETA_SITE_ID,
            json!({"url": "https://hooks.example.com/jira", "webhooks": [{"events": ["jira:issue_created"], "jqlFilter": "project = LAB"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{beta}");
    let beta_id = beta["webhookRegistrationResult"][0]["createdWebhookId"]
        .as_i64()
        .expect("beta id");
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    assert!(beta_id > other_app && other_app > other_user && other_user > ids[2]);

    let first = s.list(ACME_SITE_ID, "").await;
    assert_eq!(first["startAt"], 0);
    assert_eq!(first["total"], 3);
    assert_eq!(first["isLast"], false);
    assert_eq!(first["maxResults"], 2);
    assert!(
        first["nextPage"]
            .as_str()
            .expect("next")
            .contains("startAt=2")
    );
    let value = &first["values"][0];
    assert_eq!(value["id"], ids[0]);
    assert_eq!(value["url"], "https://hooks.example.com/jira");
    assert_eq!(value["jqlFilter"], "project = ACME");
    assert_eq!(value["events"], json!(["jira:issue_created"]));
    let expires = s.running.fake.webhooks(ACME_SITE_ID)[0].expires_at;
    assert_eq!(value["expirationDate"], epoch_ms(expires));

    let second = s.list(ACME_SITE_ID, "?startAt=2&maxResults=50").await;
    assert_eq!(second["startAt"], 2);
    assert_eq!(second["isLast"], true);
    assert_eq!(second["values"].as_array().expect("values").len(), 1);
    assert!(second.get("nextPage").is_none());
    let one = s.list(ACME_SITE_ID, "?maxResults=1").await;
    assert_eq!(one["values"].as_array().expect("values").len(), 1);

    assert_eq!(s.listed_ids(ACME_SITE_ID).await, ids);
    assert_eq!(s.listed_ids(BETA_SITE_ID).await, [beta_id]);
    assert_eq!(s.running.fake.webhooks(ACME_SITE_ID).len(), 5);

    let (status, answer) = s
        .call(
            Method::GET,
            &format!("{}?startAt=-1", webhook_path(ACME_SITE_ID)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
}

#[tokio::test]
async fn refresh_and_delete_touch_only_the_callers_webhooks() {
    let mut s = setup().await;
    let mine = s
        .register_one("https://hooks.example.com/jira", &["jira:issue_created"])
        .await;
    let kept = s
        .register_one("https://hooks.example.com/jira", &["jira:issue_updated"])
        .await;
    let other_user = s.running.fake.register_webhook_as(
        other_owner("fake-client-id", "someone-else"),
        "https://hooks.example.com/jira",
        &["jira:issue_created"],
        "project = ACME",
    );
    let other_app = s.running.fake.register_webhook_as(
        other_owner("another-app", "fake-account-1"),
        "https://other.example.com/jira",
        &["jira:issue_created"],
        "project = ACME",
    );
    let fake = s.running.fake.clone();
    let expiry_of = |id: i64| {
        fake.webhooks(ACME_SITE_ID)
            .into_iter()
            .find(|w| w.id == id)
            .map(|w| w.expires_at)
    };
    let foreign_expiry = expiry_of(other_user);

    s.advance(5 * DAY).await;
    let ids = json!({"webhookIds": [mine, other_user, other_app, 999_999]});
    let (status, answer) = s
        .call(Method::PUT, &refresh_path(ACME_SITE_ID), Some(ids.clone()))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let promised = answer["expirationDate"].as_i64().expect("expirationDate");
    assert_eq!(
        promised,
        epoch_ms(s.running.fake.webhooks(ACME_SITE_ID)[0].expires_at)
    );
    assert_eq!(expiry_of(other_user), foreign_expiry);
    assert_eq!(s.running.fake.counters().webhooks_refreshed, 1);

    for body in [None, Some(json!({})), Some(json!({"webhookIds": "x"}))] {
        for (method, path) in [
            (Method::DELETE, webhook_path(ACME_SITE_ID)),
            (Method::PUT, refresh_path(ACME_SITE_ID)),
        ] {
            let (status, answer) = s.call(method.clone(), &path, body.clone()).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {body:?}");
            assert!(answer["errorMessages"].is_array(), "{answer}");
        }
    }

    let (status, answer) = s
        .call(Method::DELETE, &webhook_path(ACME_SITE_ID), Some(ids))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer, Value::Null);
    let left: Vec<i64> = s
        .running
        .fake
        .webhooks(ACME_SITE_ID)
        .iter()
        .map(|w| w.id)
        .collect();
    assert_eq!(left, [kept, other_user, other_app]);
    assert_eq!(s.listed_ids(ACME_SITE_ID).await, [kept]);
    assert_eq!(s.running.fake.counters().webhooks_deleted, 1);
}

#[tokio::test]
async fn an_unrefreshed_webhook_lapses_after_thirty_days_and_is_not_delivered() {
    let mut s = setup().await;
    let (url, received) = start_receiver(s.running.fake.config()).await;
    let refreshed = s.register_one(&url, &["jira:issue_updated"]).await;
    let lapsing = s.register_one(&url, &["jira:issue_updated"]).await;
    let registered_expiry = s.running.fake.webhooks(ACME_SITE_ID)[1].expires_at;

    s.advance(10 * DAY).await;
    let (status, answer) = s
        .call(
            Method::PUT,
            &refresh_path(ACME_SITE_ID),
            Some(json!({"webhookIds": [refreshed]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let now = s.running.fake.now();
    let promised = answer["expirationDate"].as_i64().expect("expirationDate");
    assert!(promised >= epoch_ms(now + WEBHOOK_LIFETIME) - 1000);
    assert!(promised <= epoch_ms(now + WEBHOOK_LIFETIME));
    let listed = s.list(ACME_SITE_ID, "").await;
    assert_eq!(listed["values"][0]["expirationDate"], promised);
    assert_eq!(
        listed["values"][1]["expirationDate"],
        epoch_ms(registered_expiry)
    );
    assert!(promised - epoch_ms(registered_expiry) >= 10 * 86_400_000 - 1000);

    // Day 31: the refreshed webhook has nine days left, the other one lapsed a day ago.
    s.advance(21 * DAY).await;
    let deliveries = s
        .running
        .fake
        .deliver_jira_event(ACME_SITE_ID, "jira:issue_updated", "ACME-1", Signing::Valid)
        .await;
    assert_eq!(deliveries.len(), 1, "{deliveries:?}");
    assert_eq!(deliveries[0].webhook_id, refreshed);
    assert_eq!(deliveries[0].status(), Some(200));
    let seen = seen(&received);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body["matchedWebhookIds"], json!([refreshed]));

    assert_eq!(s.listed_ids(ACME_SITE_ID).await, [refreshed]);
    let (status, _) = s
        .call(
            Method::PUT,
            &refresh_path(ACME_SITE_ID),
            Some(json!({"webhookIds": [lapsing]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let left: Vec<i64> = s
        .running
        .fake
        .webhooks(ACME_SITE_ID)
        .iter()
        .map(|w| w.id)
        .collect();
    assert_eq!(
        left,
        [refreshed],
        "a lapsed webhook cannot be refreshed back"
    );
    assert_eq!(s.running.fake.counters().webhooks_refreshed, 1);
}

#[tokio::test]
async fn deliveries_carry_a_jwt_signed_with_the_client_secret() {
    let s = setup().await;
    let config = s.running.fake.config().clone();
    let (url, received) = start_receiver(&config).await;
    let updates = s
        .register_one(&url, &["jira:issue_updated", "jira:issue_created"])
        .await;
    let comments = s.register_one(&url, &["comment_created"]).await;
    s.running.fake.register_webhook_as(
        other_owner("another-app", "fake-account-1"),
        &url,
        &["jira:issue_updated"],
        "project = ACME",
    );
    let (status, issue) = s
        .call(
            Method::GET,
            &format!("/ex/jira/{ACME_SITE_ID}/rest/api/3/issue/ACME-1"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let valid = s
        .running
        .fake
        .deliver_jira_event(ACME_SITE_ID, "jira:issue_updated", "ACME-1", Signing::Valid)
        .await;
    assert_eq!(valid.len(), 1, "only the app's own webhook: {valid:?}");
    assert_eq!(valid[0].webhook_id, updates);
    assert_eq!(valid[0].url, url);
    assert_eq!(valid[0].retry, 0);
    assert_eq!(valid[0].outcome, Ok(200));
    let got = seen(&received);
    let first = &got[0];
    assert_eq!(first.identifier, valid[0].identifier);
    assert!(!first.identifier.is_empty());
    assert_eq!(first.retry, "0");
    assert_eq!(first.content_type, "application/json");
    assert_eq!(
        first.claims,
        Ok((
            "fake-client-id".to_owned(),
            "fake-account-1".to_owned(),
            300
        ))
    );
    let body = &first.body;
    assert_eq!(body["webhookEvent"], "jira:issue_updated");
    assert_eq!(body["issue_event_type_name"], "issue_generic");
    assert_eq!(body["matchedWebhookIds"], json!([updates]));
    assert_eq!(body["issue"]["key"], "ACME-1");
    assert_eq!(body["issue"]["id"], issue["id"]);
    assert_eq!(
        body["issue"]["fields"]["summary"],
        issue["fields"]["summary"]
    );
    assert_eq!(body["issue"]["fields"]["project"]["key"], "ACME");
    assert_eq!(
        body["issue"]["self"],
        format!(
            "https://acme.atlassian.net/rest/api/2/issue/{}",
            issue["id"].as_str().expect("id")
        )
    );
    assert_eq!(body["user"]["accountId"], "fake-account-1");
    assert_eq!(body["user"]["displayName"], "Ada Lovelace");
    assert!(body["changelog"]["items"].is_array());
    let ms = body["timestamp"].as_i64().expect("timestamp");
    assert!((ms - epoch_ms(SystemTime::now())).abs() < 60_000);

    let forged = s
        .running
        .fake
        .deliver_jira_event(
            ACME_SITE_ID,
            "jira:issue_created",
            "ACME-1",
            Signing::Forged,
        )
        .await;
    assert_eq!(forged[0].outcome, Ok(401));
    let unsigned = s
        .running
        .fake
        .deliver_jira_event(ACME_SITE_ID, "jira:issue_created", "NOPE-7", Signing::None)
        .await;
    assert_eq!(unsigned[0].outcome, Ok(401));
    let got = seen(&received);
    assert!(
        got[1]
            .claims
            .as_ref()
            .is_err_and(|e| e.contains("Signature")),
        "{:?}",
        got[1].claims
    );
    assert_eq!(got[2].claims, Err("no bearer token".to_owned()));
    assert_eq!(got[2].body["issue_event_type_name"], "issue_created");
    assert_eq!(got[2].body["issue"]["key"], "NOPE-7");
    assert_eq!(got[2].body["issue"]["fields"]["summary"], "Issue NOPE-7");
    let identifiers: Vec<&str> = got.iter().map(|r| r.identifier.as_str()).collect();
    assert!(
        identifiers[0] != identifiers[1]
            && identifiers[1] != identifiers[2]
            && identifiers[0] != identifiers[2]
    );

    let comment = s
        .running
        .fake
        .deliver_jira_event(ACME_SITE_ID, "comment_created", "ACME-1", Signing::Valid)
        .await;
    assert_eq!(comment.len(), 1);
    assert_eq!(comment[0].webhook_id, comments);
    let replayed = s.running.fake.replay_last_deliveries().await;
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0].identifier, comment[0].identifier);
    assert_eq!(replayed[0].retry, 1);
    assert_eq!(replayed[0].outcome, Ok(200));
    let got = seen(&received);
    let (original, replay) = (&got[3], &got[4]);
    assert_eq!(original.identifier, replay.identifier);
    assert_eq!((original.retry.as_str(), replay.retry.as_str()), ("0", "1"));
    assert_eq!(original.body, replay.body);
    assert!(replay.claims.is_ok());
    assert!(original.body["comment"]["author"]["accountId"].is_string());
    assert!(original.body.get("issue_event_type_name").is_none());

    assert!(
        s.running
            .fake
            .deliver_jira_event(ACME_SITE_ID, "sprint_started", "ACME-1", Signing::Valid)
            .await
            .is_empty()
    );
    assert_eq!(s.running.fake.counters().webhook_deliveries, 5);
}

#[tokio::test]
async fn an_unreachable_receiver_is_a_transport_error() {
    let s = setup().await;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let id = s
        .register_one(&format!("http://{addr}/hook"), &["jira:issue_deleted"])
        .await;
    let deliveries = s
        .running
        .fake
        .deliver_jira_event(ACME_SITE_ID, "jira:issue_deleted", "ACME-2", Signing::Valid)
        .await;
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].webhook_id, id);
    assert!(deliveries[0].outcome.is_err(), "{deliveries:?}");
    assert_eq!(deliveries[0].status(), None);
}
