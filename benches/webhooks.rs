//! Events delivered per second to a local receiver.
//!
//! `cargo bench --bench webhooks` — SQLite in a temporary folder, and PostgreSQL when
//! `GRANTRY_TEST_POSTGRES_URL` names a server (a fresh database, dropped after). Each round
//! records `EVENTS` events through the store API (one transaction each, as a connection change
//! writes them), then lets one or two delivery workers (two replicas sharing the outbox) drain
//! them to an axum receiver on loopback that answers 204, and reports events per second from the
//! first claim to the last delivery.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::routing::post;
use base64::Engine;
use grantry::core::events::Event;
use grantry::core::store::TokenStore;
use grantry_server::outbox::Outbox;
use grantry_server::testing::TestDatabase;
use grantry_server::webhooks::{WebhookSecret, WebhookSettings, Webhooks};
use serde_json::json;

const EVENTS: usize = 5000;

async fn receiver(count: Arc<AtomicUsize>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hooks", listener.local_addr().expect("addr"));
    let app = axum::Router::new().route(
        "/hooks",
        post(move || {
            let count = count.clone();
            async move {
                count.fetch_add(1, Ordering::Relaxed);
                StatusCode::NO_CONTENT
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

async fn round(db: &TestDatabase, workers: usize) {
    let count = Arc::new(AtomicUsize::new(0));
    let url = receiver(count.clone()).await;
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode([42u8; 32])
    );
    let store = db.store().await.with_event_endpoints(vec![url.clone()]);
    let recording = Instant::now();
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..4 {
        let store = store.clone();
        writers.spawn(async move {
            for i in 0..EVENTS / 4 {
                store
                    .record_event(&Event::new("bench.event", json!({"w": w, "i": i})))
                    .await
                    .expect("record");
            }
        });
    }
    while writers.join_next().await.is_some() {}
    let recorded = recording.elapsed();

    let (stop, _) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    for _ in 0..workers {
        let settings = WebhookSettings::new(
            vec![url::Url::parse(&url).expect("url")],
            vec![WebhookSecret::parse(&secret).expect("secret")],
        );
        let store = db.store().await.with_event_endpoints(vec![url.clone()]);
        let hooks = Arc::new(Webhooks::new(Outbox::new(store), settings).expect("hooks"));
        tokio::spawn(hooks.run(stop.subscribe()));
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    while count.load(Ordering::Relaxed) < EVENTS && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed();
    let _ = stop.send(true);
    println!(
        "{:<8} workers={workers}  recorded {EVENTS} events in {:>7.0} ms ({:>6.0}/s)   delivered {} in {:>7.0} ms ({:>6.0}/s)",
        db.kind,
        recorded.as_secs_f64() * 1000.0,
        EVENTS as f64 / recorded.as_secs_f64(),
        count.load(Ordering::Relaxed),
        took.as_secs_f64() * 1000.0,
        count.load(Ordering::Relaxed) as f64 / took.as_secs_f64(),
    );
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        for db in TestDatabase::all().await {
            for workers in [1, 2] {
                let fresh = match db.kind {
                    "postgres" => TestDatabase::postgres().await.expect("postgres"),
                    _ => TestDatabase::sqlite(),
                };
                round(&fresh, workers).await;
                fresh.cleanup().await;
            }
            db.cleanup().await;
        }
    });
}
