//! Short-lived access tokens (a lifetime below the default five-minute margin) must not cause a
//! refresh storm: many callers share one refresh, and the token it stored serves every call
//! until half its lifetime has passed — in one process, across replicas, across processes.

use std::time::Duration;

use grantry::core::keyring::KeyRing;
use grantry::core::refresh::RefreshSettings;
use grantry::core::store::TokenStore;
use grantry_atlassian_fake::FakeAtlassian;
use grantry_server::testing::{TestDatabase, make_access_token_due};
use serde_json::Value;
use tokio::task::JoinSet;

use crate::harness::{Harness, fake_config, spawn_server};
use crate::helpers::Scratch;
use crate::lifecycle::get_token;
use crate::process::{alice_and_admin, atlassian_env, connect_alice};

const TOKEN_ROUTE: &str = "/api/v1/atlassian/admin/connections/alice/access-token";

/// Access tokens of the fake live this long: below the default five-minute margin (so every use
/// refreshed before the margin was capped), and long enough that the refreshed token stays fresh
/// (half its lifetime) through both phases even on a loaded machine.
const TOKEN_LIFETIME: Duration = Duration::from_secs(60);

fn short_lived_fake() -> grantry_atlassian_fake::FakeConfig {
    let mut config = fake_config();
    config.access_ttl = TOKEN_LIFETIME;
    config
}

fn access_token(body: &Value) -> String {
    body["access_token"].as_str().unwrap_or_default().to_owned()
}

/// Sends 100 concurrent token requests spread over `bases`, then 20 sequential ones within
/// about a second; returns the distinct tokens handed out by each phase.
async fn burst_then_sequence(
    http: &reqwest::Client,
    bases: &[String],
    admin: &str,
    kind: &str,
) -> (Vec<String>, Vec<String>) {
    let started = std::time::Instant::now();
    let mut calls = JoinSet::new();
    for i in 0..100 {
        let url = format!("{}{TOKEN_ROUTE}", bases[i % bases.len()]);
        let (http, admin) = (http.clone(), admin.to_owned());
        calls.spawn(async move { get_token(&http, url, &admin).await });
    }
    let mut burst = Vec::new();
    while let Some(done) = calls.join_next().await {
        let (status, body) = done.expect("join");
        assert_eq!(status, 200, "{kind}: a concurrent caller failed: {body}");
        burst.push(access_token(&body));
    }
    let mut sequence = Vec::new();
    for i in 0..20 {
        let url = format!("{}{TOKEN_ROUTE}", bases[i % bases.len()]);
        let (status, body) = get_token(http, url, admin).await;
        assert_eq!(status, 200, "{kind}: sequential call {i} failed: {body}");
        sequence.push(access_token(&body));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        started.elapsed() < TOKEN_LIFETIME / 2,
        "{kind}: the calls outlasted half the token lifetime ({:?})",
        started.elapsed()
    );
    burst.sort();
    burst.dedup();
    sequence.sort();
    sequence.dedup();
    (burst, sequence)
}

#[tokio::test]
async fn short_lived_tokens_refresh_once_in_one_process_and_across_replicas() {
    for db in TestDatabase::all().await {
        for replicas in [1, 2] {
            let h = Harness::start_with(&db, short_lived_fake(), true, RefreshSettings::default())
                .await;
            h.connect("alice").await;
            let mut bases = vec![h.base.clone()];
            let mut servers = Vec::new();
            if replicas == 2 {
                let (base, server) =
                    spawn_server(h.replica_state(RefreshSettings::default())).await;
                bases.push(base);
                servers.push(server);
            }
            make_access_token_due(&h.store, "alice", "atlassian").await;
            let before = h.fake.fake.counters().token_refresh;
            let version = h
                .store
                .connection("alice", "atlassian")
                .await
                .expect("db")
                .expect("row")
                .version;
            let admin = h.token("admin-1", "admin");
            let kind = format!("{} with {replicas} replica(s)", db.kind);
            let (burst, sequence) = burst_then_sequence(&h.http, &bases, &admin, &kind).await;
            assert_eq!(
                h.fake.fake.counters().token_refresh,
                before + 1,
                "{kind}: 120 calls of a due short-lived token made exactly one refresh"
            );
            assert_eq!(
                burst.len(),
                1,
                "{kind}: every concurrent caller got the new token"
            );
            assert_eq!(sequence, burst, "{kind}: the sequential calls reused it");
            let row = h
                .store
                .connection("alice", "atlassian")
                .await
                .expect("db")
                .expect("row");
            assert_eq!(row.version, version + 1, "{kind}: one write");
            for server in servers {
                server.abort();
            }
            drop(h);
        }
        db.cleanup().await;
    }
}

#[tokio::test]
async fn short_lived_tokens_refresh_once_across_two_processes() {
    let mut dbs = vec![TestDatabase::sqlite()];
    dbs.extend(TestDatabase::postgres().await);
    for db in dbs {
        let fake = FakeAtlassian::start(short_lived_fake())
            .await
            .expect("fake");
        let jwt = "storm-jwt";
        let key = KeyRing::generate_key_base64();
        // The default margin (five minutes) and the default read cache: what an operator runs.
        let env = |scratch: Scratch| {
            atlassian_env(scratch, &fake, &key, jwt).with("DATABASE_URL", &db.url)
        };
        let mut scratch_a = env(Scratch::new());
        let server_a = scratch_a.serve().await;
        let mut scratch_b = env(Scratch::new());
        let server_b = scratch_b.serve().await;
        let (user, admin) = alice_and_admin(jwt);
        let http = reqwest::Client::new();
        connect_alice(&http, &server_a, &server_a, &fake, &user).await;
        let store = db.store().await;
        make_access_token_due(&store, "alice", "atlassian").await;
        // Past the servers' read cache (one second by default): they read the due row.
        tokio::time::sleep(Duration::from_millis(1100)).await;

        let bases = [server_a.url(""), server_b.url("")];
        let (burst, sequence) = burst_then_sequence(&http, &bases, &admin, db.kind).await;
        assert_eq!(
            fake.fake.counters().token_refresh,
            1,
            "{}: exactly one refresh across two processes",
            db.kind
        );
        assert_eq!(burst.len(), 1, "{}", db.kind);
        assert_eq!(sequence, burst, "{}", db.kind);
        store.close().await;
        server_a.stop();
        server_b.stop();
        db.cleanup().await;
    }
}
