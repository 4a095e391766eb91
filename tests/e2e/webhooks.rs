//! Outgoing webhooks end to end: every lifecycle event signed (checked with the Standard
//! Webhooks reference library), retries until a failing receiver answers, delivery after
//! `kill -9`, the admin view, and two replicas sharing the outbox.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use grantry::core::events::Event;
use grantry::core::keyring::KeyRing;
use grantry::core::refresh::RefreshSettings;
use grantry::core::store::TokenStore;
use grantry::core::vault::Vault;
use grantry_atlassian_fake::{Failure, FakeAtlassian};
use grantry_server::outbox::Outbox;
use grantry_server::testing::{TestDatabase, make_access_token_due};
use grantry_server::webhooks::{WebhookSecret, WebhookSettings, Webhooks};
use grantry_server::{AppState, JwtAuthenticator, SqlStore};
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::harness::{fake_config, spawn_server};
use crate::helpers::{Scratch, free_port};
use crate::process::{alice_and_admin, atlassian_env, connect_alice};
use crate::receiver::{Answer, Received, Receiver, secret};

/// An in-process grantry whose store records events for `endpoint`, with a delivery worker
/// retrying after `first_retry`; returns the state, the store and the worker's stop switch.
async fn in_process(
    db: &TestDatabase,
    endpoint: &str,
    secret: &str,
    first_retry: Duration,
    retry_window: Duration,
) -> (AppState, SqlStore, tokio::sync::watch::Sender<bool>) {
    let store = db
        .store()
        .await
        .with_event_endpoints(vec![endpoint.to_owned()]);
    let keys = KeyRing::from_base64(&SecretString::from(KeyRing::generate_key_base64()), None)
        .expect("key");
    let vault = Vault::new(Arc::new(store.clone()), Arc::new(keys));
    let settings = WebhookSettings {
        first_retry,
        retry_window,
        timeout: Duration::from_secs(2),
        ..WebhookSettings::new(
            vec![url::Url::parse(endpoint).expect("url")],
            vec![WebhookSecret::parse(secret).expect("secret")],
        )
    };
    let hooks = Arc::new(Webhooks::new(Outbox::new(store.clone()), settings).expect("hooks"));
    let state = AppState::new(
        vault,
        Vec::new(),
        Arc::new(JwtAuthenticator::new(&SecretString::from(
            "hooks-jwt".to_owned(),
        ))),
        RefreshSettings::default(),
    )
    .with_webhooks(hooks.clone());
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(hooks.run(stop_rx));
    (state, store, stop)
}

/// The newest `failed` delivery of the admin view, polled for up to 20 s; `None` if none came.
async fn first_failed(http: &reqwest::Client, base: &str, admin: &str) -> Option<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let rows: Value = http
            .get(format!("{base}/api/v1/webhooks/deliveries?status=failed"))
            .bearer_auth(admin)
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        if rows.as_array().is_some_and(|r| !r.is_empty()) {
            return Some(rows[0].clone());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

fn token(user: &str, role: &str) -> String {
    JwtAuthenticator::issue(
        &SecretString::from("hooks-jwt".to_owned()),
        user,
        role,
        Duration::from_secs(600),
    )
    .expect("sign")
}

/// The event types of `user` among `got`, in the order they happened (deliveries run
/// concurrently, so they may arrive in another order).
fn types_of(got: &[Received], user: &str) -> Vec<String> {
    let mut events: Vec<&Received> = got
        .iter()
        .filter(|r| r.body["data"]["user_id"] == user)
        .collect();
    events.sort_by_key(|r| r.body["timestamp"].as_str().unwrap_or_default().to_owned());
    events
        .iter()
        .map(|r| r.body["type"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn every_lifecycle_event_arrives_signed_with_its_reason() {
    for db in TestDatabase::all().await {
        let secret = secret();
        let receiver = Receiver::start(&secret, Vec::new(), Answer::Status(204)).await;
        let fake = FakeAtlassian::start(fake_config()).await.expect("fake");
        let jwt = "events-jwt";
        let mut scratch =
            atlassian_env(Scratch::new(), &fake, &KeyRing::generate_key_base64(), jwt)
                .with("DATABASE_URL", &db.url)
                .with("GRANTRY_WEBHOOK_URL", &receiver.url)
                .with("GRANTRY_WEBHOOK_SECRET", &secret)
                // The test moves token expiries in the database: no cached copies.
                .with("GRANTRY_CACHE_TTL", "0");
        let server = scratch.serve().await;
        let (alice, admin) = alice_and_admin(jwt);
        let bob = JwtAuthenticator::issue(
            &SecretString::from(jwt.to_owned()),
            "bob",
            "user",
            Duration::from_secs(600),
        )
        .expect("sign");
        let http = reqwest::Client::new();
        let store = db.store().await;

        // created, then reconnected (consent again while connected).
        let first: Value =
            serde_json::from_str(&connect_alice(&http, &server, &server, &fake, &alice).await)
                .expect("status object");
        connect_alice(&http, &server, &server, &fake, &alice).await;
        let handed: Value = http
            .get(server.url("/api/v1/atlassian/admin/connections/alice/access-token"))
            .bearer_auth(&admin)
            .send()
            .await
            .expect("hand-out")
            .json()
            .await
            .expect("json");
        let access_token = handed["access_token"].as_str().expect("token").to_owned();

        // refresh_failed: the token endpoint answers 503 to every attempt.
        make_access_token_due(&store, "alice", "atlassian").await;
        fake.fake.fail_next_token_calls(3, Failure::Status(503));
        let failed = http
            .get(server.url("/api/v1/atlassian/admin/connections/alice/access-token"))
            .bearer_auth(&admin)
            .send()
            .await
            .expect("hand-out");
        assert_eq!(
            failed.status(),
            502,
            "transient failures exhaust the retries"
        );

        // needs_reauth: the grant is revoked upstream (invalid_grant).
        fake.fake.revoke_all();
        let refused = http
            .get(server.url("/api/v1/atlassian/admin/connections/alice/access-token"))
            .bearer_auth(&admin)
            .send()
            .await
            .expect("hand-out");
        assert_eq!(refused.status(), 409);

        // reconnected (from needs_reauth), deleted by the user; bob: created, deleted by an admin.
        connect_alice(&http, &server, &server, &fake, &alice).await;
        let gone = http
            .delete(server.url("/api/v1/atlassian/connection"))
            .bearer_auth(&alice)
            .send()
            .await
            .expect("disconnect");
        assert_eq!(gone.status(), 204);
        connect_alice(&http, &server, &server, &fake, &bob).await;
        let removed = http
            .delete(server.url("/api/v1/atlassian/admin/connections/bob"))
            .bearer_auth(&admin)
            .send()
            .await
            .expect("admin delete");
        assert_eq!(removed.status(), 204);

        let got = receiver.wait_for(9, Duration::from_secs(20)).await;
        assert_eq!(
            types_of(&got, "alice"),
            [
                "connection.created",
                "connection.reconnected",
                "connection.refresh_failed",
                "connection.needs_reauth",
                "connection.reconnected",
                "connection.deleted",
            ],
            "{} ({})",
            db.kind,
            got.len()
        );
        assert_eq!(
            types_of(&got, "bob"),
            ["connection.created", "connection.deleted"]
        );
        for r in &got {
            assert!(r.verified, "signature of {} verifies ({})", r.id, db.kind);
            assert_eq!(r.body["id"], r.id.as_str(), "body id is the webhook-id");
            assert_eq!(r.body["data"]["provider"], "atlassian");
            assert!(r.body["data"]["connection_id"].as_str().is_some());
            assert!(
                chrono::DateTime::parse_from_rfc3339(r.body["timestamp"].as_str().expect("ts"))
                    .is_ok()
            );
            let text = r.body.to_string();
            assert!(!text.contains(&access_token), "no token in an event");
            assert!(!text.contains("access_token") && !text.contains("refresh_token"));
        }
        let by_type = |user: &str, kind: &str| -> Vec<Value> {
            got.iter()
                .filter(|r| r.body["data"]["user_id"] == user && r.body["type"] == kind)
                .map(|r| r.body["data"].clone())
                .collect()
        };
        let reauth = &by_type("alice", "connection.needs_reauth")[0];
        assert_eq!(reauth["status"], "needs_reauth");
        assert_eq!(reauth["reason"], "invalid_grant");
        let failed = &by_type("alice", "connection.refresh_failed")[0];
        assert_eq!(failed["status"], "active");
        let deleted = &by_type("alice", "connection.deleted")[0];
        assert_eq!(deleted["status"], "deleted");
        assert_eq!(deleted["reason"], "user");
        assert_eq!(
            by_type("bob", "connection.deleted")[0]["reason"],
            "admin",
            "an admin's removal says so"
        );
        let created = &by_type("alice", "connection.created")[0];
        assert_eq!(created["status"], "active");
        // The status object names the connection the events name.
        assert_eq!(created["connection_id"], first["connection_id"]);
        assert!(first["connection_id"].is_string());
        drop(server);
        db.cleanup().await;
    }
}

#[tokio::test]
async fn a_receiver_failing_five_times_gets_the_event_once_and_the_admin_sees_it() {
    for db in TestDatabase::all().await {
        let secret = secret();
        let receiver =
            Receiver::start(&secret, vec![Answer::Status(500); 5], Answer::Status(200)).await;
        let (state, store, _stop) = in_process(
            &db,
            &receiver.url,
            &secret,
            Duration::from_millis(100),
            Duration::from_secs(3600),
        )
        .await;
        let (base, _server) = spawn_server(state.clone()).await;
        let event = Event::new("test.ping", json!({"n": 1}));
        store.record_event(&event).await.expect("record");
        state.webhooks().expect("hooks").wake();

        let delivered = receiver.wait_for(1, Duration::from_secs(20)).await;
        assert_eq!(delivered.len(), 1, "{}", db.kind);
        let got = receiver.got();
        assert_eq!(got.len(), 6, "five 500s, then the 200 ({})", db.kind);
        assert!(got.iter().all(|r| r.id == event.id && r.verified));
        assert_eq!(
            got.iter()
                .map(|r| r.body["timestamp"].clone())
                .collect::<std::collections::HashSet<_>>()
                .len(),
            1,
            "the body is the same on every attempt"
        );

        let http = reqwest::Client::new();
        // The outcome is recorded just after the receiver answered.
        let deadline = Instant::now() + Duration::from_secs(10);
        let rows = loop {
            let list = http
                .get(format!("{base}/api/v1/webhooks/deliveries"))
                .bearer_auth(token("root", "admin"))
                .send()
                .await
                .expect("list");
            assert_eq!(list.status(), 200);
            let rows: Value = list.json().await.expect("json");
            if rows[0]["status"] == "delivered" || Instant::now() > deadline {
                break rows;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(rows[0]["event_id"], event.id.as_str());
        assert_eq!(rows[0]["event_type"], "test.ping");
        assert_eq!(rows[0]["status"], "delivered");
        assert_eq!(rows[0]["attempts"], 6);
        assert_eq!(rows[0]["last_status"], 200);
        let user = http
            .get(format!("{base}/api/v1/webhooks/deliveries"))
            .bearer_auth(token("alice", "user"))
            .send()
            .await
            .expect("list");
        assert_eq!(user.status(), 403);
        let bad = http
            .get(format!("{base}/api/v1/webhooks/deliveries?status=lost"))
            .bearer_auth(token("root", "admin"))
            .send()
            .await
            .expect("list");
        assert_eq!(bad.status(), 400);
        let deadline = Instant::now() + Duration::from_secs(5);
        let metrics = loop {
            let text = http
                .get(format!("{base}/metrics"))
                .send()
                .await
                .expect("metrics")
                .text()
                .await
                .expect("text");
            if text.contains("grantry_webhook_attempts_total{result=\"delivered\"} 1")
                || Instant::now() > deadline
            {
                break text;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(metrics.contains("grantry_webhook_attempts_total{result=\"delivered\"} 1"));
        assert!(metrics.contains("grantry_webhook_attempts_total{result=\"failed\"} 5"));
        assert!(metrics.contains("grantry_webhook_deliveries_pending 0"));
        db.cleanup().await;
    }
}

#[tokio::test]
async fn a_delivery_past_its_window_fails_and_an_admin_retry_delivers_it() {
    for db in TestDatabase::all().await {
        let secret = secret();
        let receiver = Receiver::start(&secret, Vec::new(), Answer::Status(503)).await;
        let (state, store, _stop) = in_process(
            &db,
            &receiver.url,
            &secret,
            Duration::from_millis(50),
            Duration::from_millis(400),
        )
        .await;
        let (base, _server) = spawn_server(state.clone()).await;
        let event = Event::new("test.ping", json!({}));
        store.record_event(&event).await.expect("record");
        let http = reqwest::Client::new();
        let admin = token("root", "admin");
        let failed = first_failed(&http, &base, &admin)
            .await
            .unwrap_or_else(|| panic!("the delivery fails for good ({})", db.kind));
        assert_eq!(failed["last_status"], 503);
        assert!(failed["next_attempt_at"].is_null());
        assert!(receiver.delivered().is_empty());

        // An admin's retry opens a new retry window: the endpoint, still failing, is tried
        // again with backoff until that window has passed too.
        let id = failed["id"].as_i64().expect("id");
        let before = receiver.got().len();
        let retry = http
            .post(format!("{base}/api/v1/webhooks/deliveries/{id}/retry"))
            .bearer_auth(&admin)
            .send()
            .await
            .expect("retry");
        assert_eq!(retry.status(), 202);
        let again = first_failed(&http, &base, &admin)
            .await
            .unwrap_or_else(|| panic!("fails again after its new window ({})", db.kind));
        assert!(
            again["attempts"].as_i64().expect("attempts") >= 2,
            "more than one attempt after the retry: {again}"
        );
        assert!(receiver.got().len() >= before + 2);

        receiver.set_then(Answer::Status(200));
        let retry = http
            .post(format!("{base}/api/v1/webhooks/deliveries/{id}/retry"))
            .bearer_auth(&admin)
            .send()
            .await
            .expect("retry");
        assert_eq!(retry.status(), 202);
        let missing = http
            .post(format!("{base}/api/v1/webhooks/deliveries/999999/retry"))
            .bearer_auth(&admin)
            .send()
            .await
            .expect("retry");
        assert_eq!(missing.status(), 404);
        let delivered = receiver.wait_for(1, Duration::from_secs(10)).await;
        assert_eq!(delivered.len(), 1, "{}", db.kind);
        assert_eq!(delivered[0].id, event.id);
        db.cleanup().await;
    }
}

#[tokio::test]
async fn events_pending_at_kill_9_are_delivered_after_a_restart() {
    for db in TestDatabase::all().await {
        let secret = secret();
        let port = free_port();
        // The receiver takes the first request and never answers: the server is killed while
        // it holds the delivery's claim.
        let receiver =
            Receiver::start_on(&secret, vec![Answer::Hang], Answer::Status(200), port).await;
        let fake = FakeAtlassian::start(fake_config()).await.expect("fake");
        let jwt = "kill-jwt";
        let mut scratch =
            atlassian_env(Scratch::new(), &fake, &KeyRing::generate_key_base64(), jwt)
                .with("DATABASE_URL", &db.url)
                .with("GRANTRY_WEBHOOK_URL", &receiver.url)
                .with("GRANTRY_WEBHOOK_SECRET", &secret)
                .with("GRANTRY_WEBHOOK_TIMEOUT", "3");
        let server = scratch.serve().await;
        let (alice, _admin) = alice_and_admin(jwt);
        let http = reqwest::Client::new();
        connect_alice(&http, &server, &server, &fake, &alice).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while receiver.got().is_empty() {
            assert!(
                Instant::now() < deadline,
                "the first attempt reaches the receiver"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.stop();

        let restarted_at = Instant::now();
        let server = scratch.serve().await;
        let delivered = receiver.wait_for(1, Duration::from_secs(10)).await;
        let took = restarted_at.elapsed();
        assert_eq!(
            delivered.len(),
            1,
            "delivered after the restart ({})",
            db.kind
        );
        assert_eq!(delivered[0].body["type"], "connection.created");
        assert!(delivered[0].verified);
        eprintln!(
            "{}: the event held by the killed server arrived {} ms after the restart began",
            db.kind,
            took.as_millis()
        );
        drop(server);
        db.cleanup().await;
    }
}

#[tokio::test]
async fn two_replicas_deliver_a_thousand_events_each_once() {
    for db in TestDatabase::all().await {
        let secret = secret();
        let receiver = Receiver::start(&secret, Vec::new(), Answer::Status(200)).await;
        let (_a, store, _stop_a) = in_process(
            &db,
            &receiver.url,
            &secret,
            Duration::from_secs(5),
            Duration::from_secs(3600),
        )
        .await;
        let (_b, _, _stop_b) = in_process(
            &db,
            &receiver.url,
            &secret,
            Duration::from_secs(5),
            Duration::from_secs(3600),
        )
        .await;
        let started = Instant::now();
        let mut writers = tokio::task::JoinSet::new();
        for w in 0..4 {
            let store = store.clone();
            writers.spawn(async move {
                for i in 0..250 {
                    store
                        .record_event(&Event::new("test.bulk", json!({"writer": w, "i": i})))
                        .await
                        .expect("record");
                }
            });
        }
        while writers.join_next().await.is_some() {}
        let delivered = receiver.wait_for(1000, Duration::from_secs(60)).await;
        let took = started.elapsed();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for r in &delivered {
            *seen.entry(r.id.clone()).or_default() += 1;
        }
        let duplicates: usize = seen.values().map(|n| n - 1).sum();
        eprintln!(
            "{}: 1000 events through two replicas in {} ms, {} duplicates",
            db.kind,
            took.as_millis(),
            duplicates
        );
        assert_eq!(seen.len(), 1000, "every event arrives ({})", db.kind);
        assert!(delivered.iter().all(|r| r.verified));
        assert_eq!(duplicates, 0, "claims keep replicas apart ({})", db.kind);
        db.cleanup().await;
    }
}

#[tokio::test]
async fn an_endpoint_removed_from_the_configuration_gets_nothing_more() {
    for db in TestDatabase::all().await {
        let secret = secret();
        let receiver = Receiver::start(&secret, Vec::new(), Answer::Status(200)).await;
        let removed = Receiver::start(&secret, Vec::new(), Answer::Status(200)).await;
        // Recorded while both endpoints were configured; delivered by a worker that has one.
        let old = db
            .store()
            .await
            .with_event_endpoints(vec![receiver.url.clone(), removed.url.clone()]);
        let event = Event::new("test.ping", json!({}));
        old.record_event(&event).await.expect("record");
        let (state, _store, _stop) = in_process(
            &db,
            &receiver.url,
            &secret,
            Duration::from_millis(50),
            Duration::from_secs(3600),
        )
        .await;
        assert_eq!(receiver.wait_for(1, Duration::from_secs(10)).await.len(), 1);
        let outbox = state.webhooks().expect("hooks").outbox().clone();
        let deadline = Instant::now() + Duration::from_secs(10);
        let failed = loop {
            let failed = outbox
                .deliveries(
                    Some(grantry_server::outbox::DeliveryStatus::Failed),
                    None,
                    10,
                )
                .await
                .expect("list");
            if !failed.is_empty() || Instant::now() > deadline {
                break failed;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(failed.len(), 1, "{}", db.kind);
        assert_eq!(failed[0].endpoint, removed.url);
        assert_eq!(
            failed[0].last_error.as_deref(),
            Some("the endpoint is no longer configured")
        );
        assert!(removed.got().is_empty(), "nothing was sent to it");
        db.cleanup().await;
    }
}
