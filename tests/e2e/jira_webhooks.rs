//! Jira dynamic webhooks end to end, over HTTP against the fake Atlassian: one webhook per Jira
//! site registered on connect with grantry's callback URL (and replaced on a reconnect),
//! refreshed by maintenance before Jira drops it, signed deliveries recorded once as
//! `atlassian.jira.*` events (forged, unsigned, expired, unknown-path and replayed ones not at
//! all), and the webhooks deleted upstream on disconnect.

use std::collections::BTreeMap;
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use grantry::core::keyring::KeyRing;
use grantry::core::provider::build_providers;
use grantry::core::refresh::RefreshSettings;
use grantry::core::store::{Subscription, TokenStore};
use grantry::core::vault::Vault;
use grantry_atlassian_fake::{
    ACME_SITE_ID, BETA_SITE_ID, FakeAtlassian, FakeConfig, FakeWebhook, RunningFake, Signing,
};
use grantry_server::outbox::Outbox;
use grantry_server::testing::TestDatabase;
use grantry_server::webhooks::{WebhookSettings, Webhooks};
use grantry_server::{AppState, Config, JwtAuthenticator, SqlStore, router};
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::harness::REDIRECT;
use crate::helpers::{Scratch, free_port};
use crate::process::atlassian_env;
use crate::receiver::{Answer, Receiver, secret};

const EVENTS: &str = "jira:issue_created,jira:issue_updated,comment_created";
const JQL: &str = "status != Done";
const DAY: Duration = Duration::from_secs(24 * 60 * 60);
const JIRA_SITES: [&str; 2] = [ACME_SITE_ID, BETA_SITE_ID];

/// The fake, with access tokens that outlive the clock jumps of these tests (grantry reads
/// token expiries on the real clock, the fake on its own).
fn fake_config() -> FakeConfig {
    FakeConfig {
        redirect_uri: REDIRECT.into(),
        access_ttl: 200 * DAY,
        ..FakeConfig::default()
    }
}

/// The `atlassian.jira.*` events `receiver` got so far, each with whether its signature verified.
fn jira_events(receiver: &Receiver) -> Vec<(bool, Value)> {
    receiver
        .got()
        .into_iter()
        .filter(|r| {
            r.body["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("atlassian.jira."))
        })
        .map(|r| (r.verified, r.body))
        .collect()
}

/// Waits until `n` `atlassian.jira.*` events arrived at `receiver` (at most 20 s).
async fn wait_for_jira_events(receiver: &Receiver, n: usize) -> Vec<(bool, Value)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = jira_events(receiver);
        if got.len() >= n || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An in-process grantry whose `GRANTRY_PUBLIC_URL` is its own address, with Jira webhooks on,
/// an event outbox and its delivery worker, against a fake Atlassian.
struct Jira {
    base: String,
    fake: RunningFake,
    store: SqlStore,
    state: AppState,
    http: reqwest::Client,
    jwt: SecretString,
    receiver: Receiver,
    _stop: tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Jira {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Jira {
    async fn start(db: &TestDatabase) -> Self {
        let fake = FakeAtlassian::start(fake_config()).await.expect("fake");
        let secret = secret();
        let receiver = Receiver::start(&secret, Vec::new(), Answer::Status(204)).await;
        // The address first: the configuration names it as the public URL.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let cfg = fake.fake.config();
        let env: BTreeMap<String, String> = [
            ("ENABLE_ATLASSIAN_INTEGRATION", "true"),
            ("ATLASSIAN_CLIENT_ID", cfg.client_id.as_str()),
            ("ATLASSIAN_CLIENT_SECRET", cfg.client_secret.as_str()),
            ("ATLASSIAN_REDIRECT_URI", REDIRECT),
            ("ATLASSIAN_AUTH_URL", fake.base_url.as_str()),
            ("ATLASSIAN_API_URL", fake.base_url.as_str()),
            ("ATLASSIAN_WEBHOOK_EVENTS", EVENTS),
            ("ATLASSIAN_WEBHOOK_JQL", JQL),
            ("GRANTRY_PUBLIC_URL", base.as_str()),
            ("GRANTRY_WEBHOOK_URL", receiver.url.as_str()),
            ("GRANTRY_WEBHOOK_SECRET", secret.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let config = Config::load_from(env, &["atlassian"]).expect("config");
        let providers = build_providers(&config.providers).expect("providers");
        let store = db
            .store()
            .await
            .with_event_endpoints(vec![receiver.url.clone()]);
        let keys = KeyRing::from_base64(&SecretString::from(KeyRing::generate_key_base64()), None)
            .expect("key");
        let vault = Vault::new(Arc::new(store.clone()), Arc::new(keys));
        let settings = WebhookSettings {
            first_retry: Duration::from_millis(100),
            timeout: Duration::from_secs(2),
            ..config.webhooks.expect("GRANTRY_WEBHOOK_URL is set")
        };
        let hooks = Arc::new(Webhooks::new(Outbox::new(store.clone()), settings).expect("hooks"));
        let jwt = SecretString::from("jira-webhooks-jwt".to_owned());
        let state = AppState::new(
            vault,
            providers,
            Arc::new(JwtAuthenticator::new(&jwt)),
            RefreshSettings::default(),
        )
        .with_webhooks(hooks.clone());
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(hooks.run(stop_rx));
        let app = router(state.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        Self {
            base,
            fake,
            store,
            state,
            http,
            jwt,
            receiver,
            _stop: stop,
            server,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn token(&self, user: &str) -> String {
        JwtAuthenticator::issue(&self.jwt, user, "user", Duration::from_secs(600)).expect("sign")
    }

    /// Authorize, consent on the fake, callback: the status object of `user`'s connection.
    async fn connect(&self, user: &str) -> Value {
        let auth: Value = self
            .http
            .post(self.url("/api/v1/atlassian/connection/authorize"))
            .bearer_auth(self.token(user))
            .send()
            .await
            .expect("authorize")
            .json()
            .await
            .expect("json");
        let authorization_url =
            url::Url::parse(auth["authorization_url"].as_str().expect("url")).expect("url");
        let q: BTreeMap<String, String> = authorization_url.query_pairs().into_owned().collect();
        assert!(
            q["scope"].split(' ').any(|s| s == "manage:jira-webhook"),
            "the webhook scope is asked for: {}",
            q["scope"]
        );
        let decision = self
            .http
            .post(self.fake.url("/authorize/decision"))
            .form(&[
                ("client_id", q["client_id"].as_str()),
                ("redirect_uri", q["redirect_uri"].as_str()),
                ("scope", q["scope"].as_str()),
                ("state", q["state"].as_str()),
                ("decision", "accept"),
            ])
            .send()
            .await
            .expect("decision");
        assert_eq!(decision.status(), 302);
        let location = url::Url::parse(decision.headers()["location"].to_str().expect("location"))
            .expect("redirect");
        let back: BTreeMap<String, String> = location.query_pairs().into_owned().collect();
        let callback = self
            .http
            .post(self.url("/api/v1/atlassian/connection/callback"))
            .bearer_auth(self.token(user))
            .json(&json!({"code": back["code"], "state": back["state"]}))
            .send()
            .await
            .expect("callback");
        assert_eq!(callback.status(), 200);
        callback.json().await.expect("status object")
    }

    /// Waits until every Jira site has exactly one webhook whose id is not in `previous` and the
    /// connection's subscriptions name those ids (registration runs off the callback's path).
    async fn wait_registered(
        &self,
        connection_id: &str,
        previous: &[i64],
    ) -> (Vec<FakeWebhook>, Vec<Subscription>) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let hooks: Vec<FakeWebhook> = JIRA_SITES
                .iter()
                .flat_map(|site| self.fake.fake.webhooks(site))
                .collect();
            let subscriptions = self
                .store
                .subscriptions(connection_id)
                .await
                .expect("subscriptions");
            let stored: Vec<String> = subscriptions
                .iter()
                .flat_map(|s| s.remote_ids.clone())
                .collect();
            let settled = hooks.len() == JIRA_SITES.len()
                && JIRA_SITES
                    .iter()
                    .all(|site| hooks.iter().any(|h| h.owner.cloud_id == *site))
                && hooks.iter().all(|h| !previous.contains(&h.id))
                && subscriptions.len() == JIRA_SITES.len()
                && hooks.iter().all(|h| stored.contains(&h.id.to_string()));
            if settled {
                return (hooks, subscriptions);
            }
            assert!(
                Instant::now() < deadline,
                "webhooks registered within 10 s: {hooks:?} {subscriptions:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Runs the provider's maintenance as a pass at `now` would.
    async fn maintain(&self, now: chrono::DateTime<chrono::Utc>) {
        let provider = self
            .state
            .providers()
            .iter()
            .find(|p| p.id() == "atlassian")
            .expect("atlassian");
        provider
            .maintain(&self.state.provider_context(provider), now)
            .await;
    }

    /// The `atlassian.jira.*` events in the outbox (recorded synchronously by the route).
    async fn recorded_jira_events(&self) -> usize {
        Outbox::new(self.store.clone())
            .deliveries(None, None, 1000)
            .await
            .expect("outbox")
            .iter()
            .filter(|d| d.event_type.starts_with("atlassian.jira."))
            .count()
    }

    /// POSTs a delivery to `url` the way Jira would, signed per `jwt` (none when `None`).
    async fn post_delivery(
        &self,
        url: &str,
        jwt: Option<&str>,
        body: Vec<u8>,
    ) -> (reqwest::StatusCode, Value) {
        let mut request = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header(
                "X-Atlassian-Webhook-Identifier",
                format!("{:032x}", rand::random::<u128>()),
            )
            .header("X-Atlassian-Webhook-Retry", "0")
            .body(body);
        if let Some(jwt) = jwt {
            request = request.bearer_auth(jwt);
        }
        let response = request.send().await.expect("delivery");
        let status = response.status();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

/// A delivery JWT as Jira signs it (HS256 with `secret`), expiring `exp_in` seconds from now
/// (negative: already expired).
fn delivery_jwt(secret: &str, client_id: &str, exp_in: i64) -> String {
    let now = i64::try_from(jsonwebtoken::get_current_timestamp()).expect("time");
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"iss": client_id, "sub": "fake-account-1", "iat": now - 600, "exp": now + exp_in}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

/// The path secret at the end of a webhook's callback URL.
fn path_secret(webhook: &FakeWebhook) -> String {
    webhook.url.rsplit('/').next().expect("secret").to_owned()
}

fn statuses(deliveries: &[grantry_atlassian_fake::Delivery]) -> Vec<Option<u16>> {
    deliveries
        .iter()
        .map(grantry_atlassian_fake::Delivery::status)
        .collect()
}

#[tokio::test]
async fn connecting_registers_a_webhook_per_jira_site_and_disconnecting_deletes_them() {
    for db in TestDatabase::all().await {
        let jira = Jira::start(&db).await;
        let status = jira.connect("alice").await;
        let connection_id = status["connection_id"].as_str().expect("id").to_owned();
        let (hooks, subscriptions) = jira.wait_registered(&connection_id, &[]).await;
        let callback_base = jira.url("/api/v1/atlassian/webhooks/jira/");
        for hook in &hooks {
            assert!(
                hook.url.starts_with(&callback_base),
                "{} is grantry's callback ({})",
                hook.url,
                db.kind
            );
            let secret = path_secret(hook);
            assert_eq!(secret.len(), 43, "32 random bytes, base64url");
            assert_eq!(
                hook.events,
                [
                    "jira:issue_created",
                    "jira:issue_updated",
                    "comment_created"
                ]
            );
            assert_eq!(hook.jql_filter, JQL);
            assert_eq!(hook.owner.account_id, "fake-account-1");
            let subscription = subscriptions
                .iter()
                .find(|s| s.resource_id == hook.owner.cloud_id)
                .expect("a subscription per site");
            assert_eq!(subscription.remote_ids, [hook.id.to_string()]);
            assert_eq!(subscription.provider, "atlassian");
            assert_eq!(subscription.secret_hash.len(), 64, "SHA-256 hex");
            assert!(!subscription.secret_hash.contains(&secret));
            let expires = subscription.expires_at.expect("expiry");
            let in_days = (expires - chrono::Utc::now()).num_days();
            assert!((29..=30).contains(&in_days), "{in_days} days");
        }
        let secrets: Vec<String> = hooks.iter().map(path_secret).collect();
        assert_ne!(secrets[0], secrets[1], "a secret per site");

        // A reconnect deletes the previous grant's webhooks first, then registers anew.
        let old_ids: Vec<i64> = hooks.iter().map(|h| h.id).collect();
        let again = jira.connect("alice").await;
        assert_eq!(again["connection_id"], connection_id.as_str());
        let (new_hooks, _) = jira.wait_registered(&connection_id, &old_ids).await;
        for site in JIRA_SITES {
            assert_eq!(
                jira.fake.fake.webhooks(site).len(),
                1,
                "{site} ({})",
                db.kind
            );
        }
        assert!(new_hooks.iter().all(|h| !secrets.contains(&path_secret(h))));
        let cfg = jira.fake.fake.config();
        let jwt = delivery_jwt(&cfg.client_secret, &cfg.client_id, 300);
        let (status, body) = jira
            .post_delivery(
                &hooks[0].url,
                Some(&jwt),
                br#"{"webhookEvent":"jira:issue_updated","issue":{"id":"1","key":"ACME-1"}}"#
                    .to_vec(),
            )
            .await;
        assert_eq!(status, 401, "the previous grant's callback is dead: {body}");

        // Disconnecting deletes them upstream, then the subscriptions.
        let deleted = jira
            .http
            .delete(jira.url("/api/v1/atlassian/connection"))
            .bearer_auth(jira.token("alice"))
            .send()
            .await
            .expect("disconnect");
        assert_eq!(deleted.status(), 204);
        for site in JIRA_SITES {
            assert!(
                jira.fake.fake.webhooks(site).is_empty(),
                "{site} has no webhook left ({})",
                db.kind
            );
        }
        assert!(
            jira.store
                .subscriptions(&connection_id)
                .await
                .expect("subscriptions")
                .is_empty()
        );
        let counters = jira.fake.fake.counters();
        assert_eq!(counters.webhooks_registered, 4);
        assert_eq!(counters.webhooks_deleted, 4);
        drop(jira);
        db.cleanup().await;
    }
}

#[tokio::test]
async fn maintenance_refreshes_the_webhooks_before_jira_drops_them() {
    for db in TestDatabase::all().await {
        let jira = Jira::start(&db).await;
        let status = jira.connect("alice").await;
        let connection_id = status["connection_id"].as_str().expect("id").to_owned();
        let (hooks, subscriptions) = jira.wait_registered(&connection_id, &[]).await;
        let expiry_of = |hooks: &[FakeWebhook], site: &str| -> SystemTime {
            hooks
                .iter()
                .find(|h| h.owner.cloud_id == site)
                .expect("webhook")
                .expires_at
        };

        // Nothing is due yet: nothing is refreshed.
        let started = chrono::Utc::now();
        jira.maintain(started).await;
        assert_eq!(jira.fake.fake.counters().webhooks_refreshed, 0);

        // 25 days later the webhooks expire within 10 days: maintenance refreshes them.
        jira.fake.fake.advance_clock(25 * DAY);
        jira.maintain(started + chrono::Duration::days(25)).await;
        assert_eq!(
            jira.fake.fake.counters().webhooks_refreshed,
            2,
            "{}",
            db.kind
        );
        let refreshed: Vec<FakeWebhook> = JIRA_SITES
            .iter()
            .flat_map(|site| jira.fake.fake.webhooks(site))
            .collect();
        assert_eq!(
            refreshed.iter().map(|h| h.id).collect::<Vec<_>>(),
            hooks.iter().map(|h| h.id).collect::<Vec<_>>(),
            "the same webhooks, refreshed"
        );
        for site in JIRA_SITES {
            let moved = expiry_of(&refreshed, site)
                .duration_since(expiry_of(&hooks, site))
                .expect("later");
            assert!(moved >= 24 * DAY, "{site}: expiry moved by {moved:?}");
        }
        let renewed = jira
            .store
            .subscriptions(&connection_id)
            .await
            .expect("subscriptions");
        for subscription in &renewed {
            let before = subscriptions
                .iter()
                .find(|s| s.resource_id == subscription.resource_id)
                .expect("same site");
            let moved =
                subscription.expires_at.expect("expiry") - before.expires_at.expect("expiry");
            assert!(
                moved >= chrono::Duration::days(24),
                "stored expiry moved by {moved}"
            );
            assert_eq!(subscription.secret_hash, before.secret_hash);
            assert_eq!(subscription.remote_ids, before.remote_ids);
        }

        // A further 10 days: past the original 30, the webhooks are still live and deliver.
        jira.fake.fake.advance_clock(10 * DAY);
        let live = jira.fake.fake.webhooks(ACME_SITE_ID);
        assert_eq!(live.len(), 1, "still registered ({})", db.kind);
        let deliveries = jira
            .fake
            .fake
            .deliver_jira_event(ACME_SITE_ID, "jira:issue_created", "ACME-2", Signing::Valid)
            .await;
        assert_eq!(statuses(&deliveries), [Some(200)], "{}", db.kind);
        let got = wait_for_jira_events(&jira.receiver, 1).await;
        assert_eq!(got.len(), 1, "{}", db.kind);
        assert_eq!(got[0].1["type"], "atlassian.jira.issue_created");
        assert_eq!(got[0].1["data"]["issue"]["key"], "ACME-2");
        drop(jira);
        db.cleanup().await;
    }
}

#[tokio::test]
async fn signed_deliveries_become_one_event_each_and_nothing_else_does() {
    for db in TestDatabase::all().await {
        let jira = Jira::start(&db).await;
        let status = jira.connect("alice").await;
        let connection_id = status["connection_id"].as_str().expect("id").to_owned();
        let (hooks, _) = jira.wait_registered(&connection_id, &[]).await;
        let acme = hooks
            .iter()
            .find(|h| h.owner.cloud_id == ACME_SITE_ID)
            .expect("acme")
            .clone();

        // A signed delivery is one event with the site, the issue and the connection's user.
        let deliveries = jira
            .fake
            .fake
            .deliver_jira_event(ACME_SITE_ID, "jira:issue_updated", "ACME-1", Signing::Valid)
            .await;
        assert_eq!(statuses(&deliveries), [Some(200)], "{}", db.kind);
        let got = wait_for_jira_events(&jira.receiver, 1).await;
        assert_eq!(got.len(), 1, "{}", db.kind);
        let (verified, event) = &got[0];
        assert!(verified, "grantry signs the event it delivers");
        assert_eq!(event["type"], "atlassian.jira.issue_updated");
        let data = &event["data"];
        assert_eq!(data["provider"], "atlassian");
        assert_eq!(data["user_id"], "alice");
        assert_eq!(data["connection_id"], connection_id.as_str());
        assert_eq!(data["site"]["id"], ACME_SITE_ID);
        assert_eq!(data["site"]["url"], "https://acme.atlassian.net");
        assert_eq!(data["issue"]["key"], "ACME-1");
        assert!(data["issue"]["id"].is_string(), "{data}");
        assert_eq!(data["webhook_event"], "jira:issue_updated");
        assert_eq!(data["delivery_id"], deliveries[0].identifier.as_str());
        assert!(data.get("changelog").is_none() && data["issue"].get("fields").is_none());
        let text = event.to_string();
        assert!(
            !text.contains(&path_secret(&acme)),
            "no path secret in the event"
        );
        assert!(!text.contains("fake-at-"), "no token in the event");

        // Jira's retry of the same delivery (same identifier) is acknowledged and ignored.
        let replay = jira.fake.fake.replay_last_deliveries().await;
        assert_eq!(statuses(&replay), [Some(200)]);
        assert_eq!(replay[0].identifier, deliveries[0].identifier);
        assert_eq!(replay[0].retry, 1);

        // Forged and unsigned deliveries are refused.
        for signing in [Signing::Forged, Signing::None] {
            let refused = jira
                .fake
                .fake
                .deliver_jira_event(ACME_SITE_ID, "jira:issue_updated", "ACME-1", signing)
                .await;
            assert_eq!(statuses(&refused), [Some(401)], "{signing:?} ({})", db.kind);
        }

        // A valid JWT on an unknown path, an expired JWT, a body that is not JSON, one too big.
        let cfg = jira.fake.fake.config();
        let valid = delivery_jwt(&cfg.client_secret, &cfg.client_id, 300);
        let body =
            br#"{"webhookEvent":"jira:issue_updated","issue":{"id":"10001","key":"ACME-1"}}"#;
        let unknown =
            jira.url("/api/v1/atlassian/webhooks/jira/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
        let (status, error) = jira
            .post_delivery(&unknown, Some(&valid), body.to_vec())
            .await;
        assert_eq!(status, 401, "{error}");
        assert_eq!(error["error"], "unauthorized");
        let expired = delivery_jwt(&cfg.client_secret, &cfg.client_id, -120);
        let (status, error) = jira
            .post_delivery(&acme.url, Some(&expired), body.to_vec())
            .await;
        assert_eq!(status, 401, "expired: {error}");
        assert_eq!(error["error"], "unauthorized");
        let (status, error) = jira
            .post_delivery(&acme.url, Some(&valid), b"<xml/>".to_vec())
            .await;
        assert_eq!(status, 400, "not JSON: {error}");
        let mut huge = br#"{"webhookEvent":"jira:issue_updated","pad":""#.to_vec();
        huge.extend(std::iter::repeat_n(b'x', 1024 * 1024));
        huge.extend(br#""}"#);
        let (status, _) = jira.post_delivery(&acme.url, Some(&valid), huge).await;
        assert_eq!(status, 413, "over 1 MiB");

        // A comment on the other site is its own event.
        let comment = jira
            .fake
            .fake
            .deliver_jira_event(BETA_SITE_ID, "comment_created", "BETA-7", Signing::Valid)
            .await;
        assert_eq!(statuses(&comment), [Some(200)]);
        let got = wait_for_jira_events(&jira.receiver, 2).await;
        assert_eq!(got.len(), 2, "{}", db.kind);
        let comment_event = &got[1].1;
        assert_eq!(comment_event["type"], "atlassian.jira.comment_created");
        assert_eq!(comment_event["data"]["site"]["id"], BETA_SITE_ID);
        assert_eq!(
            comment_event["data"]["site"]["url"],
            "https://beta-labs.atlassian.net"
        );
        assert_eq!(comment_event["data"]["issue"]["key"], "BETA-7");
        assert_eq!(comment_event["data"]["webhook_event"], "comment_created");

        // Exactly the two valid deliveries were recorded: nothing for the refused or the replay.
        assert_eq!(jira.recorded_jira_events().await, 2, "{}", db.kind);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(jira_events(&jira.receiver).len(), 2, "{}", db.kind);
        drop(jira);
        db.cleanup().await;
    }
}

#[tokio::test]
async fn maintenance_registers_again_what_jira_dropped_and_skips_connections_needing_consent() {
    for db in TestDatabase::all().await {
        let jira = Jira::start(&db).await;
        let status = jira.connect("alice").await;
        let connection_id = status["connection_id"].as_str().expect("id").to_owned();
        let (first, _) = jira.wait_registered(&connection_id, &[]).await;
        let started = chrono::Utc::now();

        // Jira dropped the webhooks although grantry's expiry says they have days left: the
        // refresh is ignored upstream, the list lacks them, and maintenance registers anew.
        jira.fake.fake.advance_clock(31 * DAY);
        for site in JIRA_SITES {
            assert!(jira.fake.fake.webhooks(site).is_empty());
        }
        jira.maintain(started + chrono::Duration::days(25)).await;
        let first_ids: Vec<i64> = first.iter().map(|h| h.id).collect();
        let (second, _) = jira.wait_registered(&connection_id, &first_ids).await;
        assert!(
            second
                .iter()
                .all(|h| !first.iter().any(|f| path_secret(f) == path_secret(h))),
            "new callback secrets ({})",
            db.kind
        );
        let sent = jira
            .fake
            .fake
            .deliver_jira_event(BETA_SITE_ID, "jira:issue_updated", "BETA-1", Signing::Valid)
            .await;
        assert_eq!(statuses(&sent), [Some(200)], "{}", db.kind);

        // Past the stored expiry as well: the lapsed subscriptions are registered again.
        jira.fake.fake.advance_clock(31 * DAY);
        jira.maintain(started + chrono::Duration::days(62)).await;
        let second_ids: Vec<i64> = second.iter().map(|h| h.id).collect();
        let (third, _) = jira.wait_registered(&connection_id, &second_ids).await;
        assert_eq!(third.len(), JIRA_SITES.len());

        // A connection that needs consent again is left alone.
        jira.store
            .set_status(
                &connection_id,
                grantry::core::events::StatusChange::NeedsReauth {
                    reason: grantry::core::events::ReauthReason::InvalidGrant,
                    failure: "revoked",
                },
            )
            .await
            .expect("status");
        let before = jira.fake.fake.counters();
        jira.fake.fake.advance_clock(25 * DAY);
        jira.maintain(started + chrono::Duration::days(62 + 25))
            .await;
        let after = jira.fake.fake.counters();
        assert_eq!(after.webhooks_refreshed, before.webhooks_refreshed);
        assert_eq!(after.webhooks_registered, before.webhooks_registered);
        assert_eq!(
            after.content, before.content,
            "no call upstream ({})",
            db.kind
        );
        drop(jira);
        db.cleanup().await;
    }
}

/// Kills the child on drop.
struct ServeProcess(Child);

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_binary_delivers_jira_events_and_never_logs_the_path_secret() {
    let fake = FakeAtlassian::start(fake_config()).await.expect("fake");
    let secret = secret();
    let receiver = Receiver::start(&secret, Vec::new(), Answer::Status(204)).await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let jwt = "jira-webhook-logs-jwt";
    let scratch = atlassian_env(Scratch::new(), &fake, &KeyRing::generate_key_base64(), jwt)
        .with("LOG_LEVEL", "trace")
        .with("GRANTRY_BIND", &format!("127.0.0.1:{port}"))
        .with("GRANTRY_PUBLIC_URL", &base)
        .with("ATLASSIAN_WEBHOOK_EVENTS", EVENTS)
        .with("ATLASSIAN_WEBHOOK_JQL", JQL)
        .with("GRANTRY_WEBHOOK_URL", &receiver.url)
        .with("GRANTRY_WEBHOOK_SECRET", &secret);
    let log = std::fs::File::create(scratch.log_path()).expect("log file");
    let _serve = ServeProcess(
        scratch
            .command(&["serve"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::from(log))
            .spawn()
            .expect("spawn serve"),
    );
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(Instant::now() < deadline, "grantry serve came up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let user = JwtAuthenticator::issue(
        &SecretString::from(jwt.to_owned()),
        "alice",
        "user",
        Duration::from_secs(600),
    )
    .expect("sign");
    let auth: Value = http
        .post(format!("{base}/api/v1/atlassian/connection/authorize"))
        .bearer_auth(&user)
        .send()
        .await
        .expect("authorize")
        .json()
        .await
        .expect("json");
    let code = fake
        .fake
        .issue_code("read:me read:jira-work manage:jira-webhook offline_access");
    let callback = http
        .post(format!("{base}/api/v1/atlassian/connection/callback"))
        .bearer_auth(&user)
        .json(&json!({"code": code, "state": auth["state"]}))
        .send()
        .await
        .expect("callback");
    assert_eq!(callback.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    let hooks = loop {
        let hooks: Vec<FakeWebhook> = JIRA_SITES
            .iter()
            .flat_map(|site| fake.fake.webhooks(site))
            .collect();
        if hooks.len() == JIRA_SITES.len() {
            break hooks;
        }
        assert!(Instant::now() < deadline, "webhooks registered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The row is stored right after the registration: retry until the delivery is accepted.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sent = fake
            .fake
            .deliver_jira_event(ACME_SITE_ID, "jira:issue_updated", "ACME-1", Signing::Valid)
            .await;
        if statuses(&sent) == [Some(200)] {
            break;
        }
        assert!(Instant::now() < deadline, "delivery accepted: {sent:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let unsigned = fake
        .fake
        .deliver_jira_event(ACME_SITE_ID, "jira:issue_updated", "ACME-1", Signing::None)
        .await;
    assert_eq!(statuses(&unsigned), [Some(401)]);
    let got = wait_for_jira_events(&receiver, 1).await;
    assert_eq!(got.len(), 1, "the binary delivers the event");
    assert!(got[0].0, "signed");
    assert_eq!(got[0].1["type"], "atlassian.jira.issue_updated");
    assert_eq!(got[0].1["data"]["user_id"], "alice");
    let logs = std::fs::read_to_string(scratch.log_path()).expect("logs");
    assert!(
        logs.contains("/api/v1/atlassian/webhooks/jira/{secret}"),
        "deliveries are logged under the route's template"
    );
    for hook in &hooks {
        assert!(
            !logs.contains(&path_secret(hook)),
            "the path secret of {} is in the logs",
            hook.owner.cloud_id
        );
    }
    assert!(!logs.contains(&fake.fake.config().client_secret));
}

#[tokio::test]
async fn serve_refuses_jira_webhooks_that_nothing_can_serve() {
    let fake = FakeAtlassian::start(fake_config()).await.expect("fake");
    let configured = || {
        atlassian_env(
            Scratch::new(),
            &fake,
            &KeyRing::generate_key_base64(),
            "jira-refusal-jwt",
        )
        .with("ATLASSIAN_WEBHOOK_EVENTS", EVENTS)
        .with("GRANTRY_PUBLIC_URL", "https://grantry.example.com")
        .with("GRANTRY_WEBHOOK_URL", "https://chat.example.com/hooks")
        .with(
            "GRANTRY_WEBHOOK_SECRET",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        )
    };
    let refusal = |scratch: Scratch| {
        let out = scratch.run(&["serve"]);
        assert!(!out.status.success());
        let err = crate::helpers::stderr(&out);
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(!err.contains("fake-client-secret"), "{err}");
        err
    };
    let err = refusal(configured());
    assert!(err.contains("ATLASSIAN_WEBHOOK_JQL is required"), "{err}");
    let mut scratch = configured().with("ATLASSIAN_WEBHOOK_JQL", JQL);
    scratch.env.retain(|(k, _)| k != "GRANTRY_PUBLIC_URL");
    let err = refusal(scratch);
    assert!(err.contains("GRANTRY_PUBLIC_URL is required"), "{err}");
    let mut scratch = configured().with("ATLASSIAN_WEBHOOK_JQL", JQL);
    scratch
        .env
        .retain(|(k, _)| !k.starts_with("GRANTRY_WEBHOOK_"));
    let err = refusal(scratch);
    assert!(err.contains("GRANTRY_WEBHOOK_URL is required"), "{err}");
    let err = refusal(configured().with("ATLASSIAN_WEBHOOK_JQL", JQL).with(
        "ATLASSIAN_OAUTH_SCOPE",
        "read:me read:jira-work offline_access",
    ));
    assert!(err.contains("ATLASSIAN_OAUTH_SCOPE is invalid"), "{err}");
    assert!(err.contains("manage:jira-webhook"), "{err}");
}

#[tokio::test]
async fn a_grant_without_the_webhook_scope_connects_without_webhooks() {
    for db in TestDatabase::all().await {
        let jira = Jira::start(&db).await;
        let auth: Value = jira
            .http
            .post(jira.url("/api/v1/atlassian/connection/authorize"))
            .bearer_auth(jira.token("bob"))
            .send()
            .await
            .expect("authorize")
            .json()
            .await
            .expect("json");
        let code = jira
            .fake
            .fake
            .issue_code("read:me read:jira-work offline_access");
        let callback = jira
            .http
            .post(jira.url("/api/v1/atlassian/connection/callback"))
            .bearer_auth(jira.token("bob"))
            .json(&json!({"code": code, "state": auth["state"]}))
            .send()
            .await
            .expect("callback");
        assert_eq!(
            callback.status(),
            200,
            "the connection stands ({})",
            db.kind
        );
        let status: Value = callback.json().await.expect("status");
        tokio::time::sleep(Duration::from_millis(300)).await;
        for site in JIRA_SITES {
            assert!(jira.fake.fake.webhooks(site).is_empty());
        }
        assert_eq!(
            jira.fake.fake.counters().content,
            0,
            "no webhook call upstream"
        );
        assert!(
            jira.store
                .subscriptions(status["connection_id"].as_str().expect("id"))
                .await
                .expect("subscriptions")
                .is_empty()
        );
        drop(jira);
        db.cleanup().await;
    }
}
