//! The token lifecycle: single-flight rotating refresh across tasks, replicas and processes.

use std::time::Duration;

use chrono::Utc;
use grantry::core::keyring::KeyRing;
use grantry::core::maintenance;
use grantry::core::maintenance::MaintenanceSettings;
use grantry::core::refresh::RefreshSettings;
use grantry::core::store::{ConnectionStatus, TokenStore};
use grantry_atlassian_fake::{Failure, FakeAtlassian};
use grantry_server::JwtAuthenticator;
use grantry_server::testing::TestDatabase;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::harness::{Harness, REDIRECT, fake_config, spawn_server};
use crate::helpers::Scratch;
use crate::process::{alice_and_admin, atlassian_env, connect_alice};

const TOKEN_ROUTE: &str = "/api/v1/atlassian/admin/connections/alice/access-token";

/// Two-second access tokens, a one-second margin, a two-second lease.
fn short_settings() -> RefreshSettings {
    RefreshSettings {
        margin: Some(Duration::from_secs(1)),
        lease: Duration::from_secs(2),
        ..RefreshSettings::default()
    }
}

fn short_fake() -> grantry_atlassian_fake::FakeConfig {
    let mut config = fake_config();
    config.access_ttl = Duration::from_secs(2);
    config
}

/// Sleeps until alice's stored access token is due (expiry minus the one-second margin).
async fn wait_until_due(store: &dyn TokenStore) {
    let row = store
        .connection("alice", "atlassian")
        .await
        .expect("db")
        .expect("row");
    let due = row.access_expires_at.expect("expiry") - chrono::Duration::seconds(1);
    let wait = (due - Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(100);
    tokio::time::sleep(wait).await;
}

/// Waits for every call, asserts each answered 200, and returns the distinct tokens handed out.
async fn distinct_tokens(
    mut calls: JoinSet<(u16, Value)>,
    kind: &str,
) -> std::collections::BTreeSet<String> {
    let mut tokens = std::collections::BTreeSet::new();
    while let Some(done) = calls.join_next().await {
        let (status, body) = done.expect("join");
        assert_eq!(status, 200, "{kind}: {body}");
        tokens.insert(body["access_token"].as_str().expect("token").to_owned());
    }
    tokens
}

/// Asks `url` for a token as `admin`: status and JSON body.
pub(crate) async fn get_token(http: &reqwest::Client, url: String, admin: &str) -> (u16, Value) {
    let resp = http
        .get(url)
        .bearer_auth(admin)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn two_hundred_concurrent_callers_share_one_refresh() {
    for db in TestDatabase::all().await {
        let h = Harness::start_with(&db, short_fake(), true, short_settings()).await;
        h.connect("alice").await;
        let before = h
            .store
            .connection("alice", "atlassian")
            .await
            .expect("db")
            .expect("row");
        h.fake.fake.set_access_ttl(Duration::from_secs(3600));
        wait_until_due(&h.store).await;

        let admin = h.token("admin-1", "admin");
        let mut calls = JoinSet::new();
        for _ in 0..200 {
            let (http, url, admin) = (h.http.clone(), h.url(TOKEN_ROUTE), admin.clone());
            calls.spawn(async move { get_token(&http, url, &admin).await });
        }
        let tokens = distinct_tokens(calls, db.kind).await;
        assert_eq!(
            h.fake.fake.counters().token_refresh,
            1,
            "{}: exactly one refresh",
            db.kind
        );
        assert_eq!(tokens.len(), 1, "every caller got the one new token");
        let after = h
            .store
            .connection("alice", "atlassian")
            .await
            .expect("db")
            .expect("row");
        assert_eq!(
            after.version,
            before.version + 1,
            "version rose by exactly 1"
        );
        assert_eq!(after.lease_owner, None, "lease released");

        let metrics = h
            .http
            .get(h.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        assert!(
            metrics.contains("grantry_refreshes_started_total 1\n"),
            "{metrics}"
        );
        assert!(
            metrics.contains("grantry_refreshes_succeeded_total 1\n"),
            "{metrics}"
        );
        assert!(
            metrics.contains("grantry_connections{provider=\"atlassian\",status=\"active\"} 1"),
            "{metrics}"
        );
        let served: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("grantry_refresh_waiters_served_total "))
            .and_then(|v| v.parse().ok())
            .expect("waiters metric");
        assert!(
            served >= 1,
            "waiters were served by the one refresh: {metrics}"
        );
        drop(h);
        db.cleanup().await;
    }
}

#[tokio::test]
async fn a_refresh_without_a_new_refresh_token_keeps_the_old_one() {
    for db in TestDatabase::all().await {
        let h = Harness::start_with(&db, short_fake(), true, short_settings()).await;
        h.connect("alice").await;
        h.fake.fake.omit_refresh_token_next(1);
        for round in 1..=2u64 {
            wait_until_due(&h.store).await;
            let (status, body) =
                get_token(&h.http, h.url(TOKEN_ROUTE), &h.token("admin-1", "admin")).await;
            assert_eq!(status, 200, "{} round {round}: {body}", db.kind);
            assert_eq!(h.fake.fake.counters().token_refresh, round);
        }
        let row = h
            .store
            .connection("alice", "atlassian")
            .await
            .expect("db")
            .expect("row");
        assert_eq!(row.version, 2);
        assert_eq!(row.status, ConnectionStatus::Active);
        drop(h);
        db.cleanup().await;
    }
}

#[tokio::test]
async fn a_crashed_winner_is_taken_over_after_its_lease() {
    for db in TestDatabase::all().await {
        let h = Harness::start_with(&db, short_fake(), true, short_settings()).await;
        h.connect("alice").await;
        h.fake.fake.set_reuse_leeway(Duration::from_secs(600));
        h.fake.fake.set_access_ttl(Duration::from_secs(3600));
        wait_until_due(&h.store).await;

        // Replica A wins the lease, then hangs at the token endpoint and dies there.
        let a = h.replica_state(short_settings());
        let a_owner = a.refresher().owner().to_owned();
        h.fake
            .fake
            .fail_next_token_calls(1, Failure::Delay(Duration::from_secs(30)));
        let (a_base, a_server) = spawn_server(a).await;
        let admin = h.token("admin-1", "admin");
        let hung = {
            let (http, url, admin) = (
                h.http.clone(),
                format!("{a_base}{TOKEN_ROUTE}"),
                admin.clone(),
            );
            tokio::spawn(async move { get_token(&http, url, &admin).await })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let row = h
                .store
                .connection("alice", "atlassian")
                .await
                .expect("db")
                .expect("row");
            // The lease is taken before the token call: wait until the call reached the fake too,
            // so the injected hang is A's and not the next caller's.
            if row.lease_owner.as_deref() == Some(a_owner.as_str())
                && h.fake.fake.counters().token_failures == 1
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "replica A never took the lease"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        hung.abort();
        a_server.abort();

        // Replica B (the harness) waits out the lease and refreshes; nothing is lost.
        let (status, body) = get_token(&h.http, h.url(TOKEN_ROUTE), &admin).await;
        assert_eq!(status, 200, "{}: {body}", db.kind);
        let row = h
            .store
            .connection("alice", "atlassian")
            .await
            .expect("db")
            .expect("row");
        assert_eq!(row.status, ConnectionStatus::Active);
        assert_eq!(row.version, 1);
        assert_ne!(row.lease_owner.as_deref(), Some(a_owner.as_str()));
        let (status, again) = get_token(&h.http, h.url(TOKEN_ROUTE), &admin).await;
        assert_eq!(
            (status, &again["access_token"]),
            (200, &body["access_token"])
        );
        drop(h);
        db.cleanup().await;
    }
}

#[tokio::test]
async fn maintenance_keeps_idle_grants_alive_and_retires_expired_ones() {
    for db in TestDatabase::all().await {
        let h = Harness::start(&db, fake_config(), true).await;
        h.connect("alice").await;
        h.connect("bob").await;
        let (_, _) = h.authorize("carol").await;
        let soon = (Utc::now() + chrono::Duration::days(2)).timestamp_millis();
        let past = (Utc::now() - chrono::Duration::seconds(1)).timestamp_millis();
        for (sql, value, user) in [
            (
                "UPDATE connections SET refresh_idle_expires_at = $1 WHERE user_id = $2",
                soon,
                "alice",
            ),
            (
                "UPDATE connections SET refresh_expires_at = $1 WHERE user_id = $2",
                past,
                "bob",
            ),
        ] {
            sqlx::query(sql)
                .bind(value)
                .bind(user)
                .execute(h.store.pool())
                .await
                .expect("update");
        }
        sqlx::query("UPDATE oauth_states SET expires_at = $1")
            .bind(past)
            .execute(h.store.pool())
            .await
            .expect("expire states");

        let report = maintenance::run_once(
            h.state.refresher(),
            h.state.providers(),
            &MaintenanceSettings::default(),
            Utc::now(),
        )
        .await
        .expect("maintenance");
        assert_eq!(
            (report.kept_alive, report.expired, report.failures),
            (1, 1, 0),
            "{}: {report:?}",
            db.kind
        );
        assert!(report.states_purged >= 1);
        let alice = h
            .store
            .connection("alice", "atlassian")
            .await
            .expect("db")
            .expect("row");
        assert_eq!(alice.version, 1, "alice's idle grant was refreshed");
        assert!(
            alice.refresh_idle_expires_at.expect("idle") > Utc::now() + chrono::Duration::days(80)
        );
        let bob = h
            .store
            .connection("bob", "atlassian")
            .await
            .expect("db")
            .expect("row kept");
        assert_eq!(bob.status, ConnectionStatus::NeedsReauth);
        assert_eq!(h.fake.fake.counters().token_refresh, 1);
        let again = maintenance::run_once(
            h.state.refresher(),
            h.state.providers(),
            &MaintenanceSettings::default(),
            Utc::now(),
        )
        .await
        .expect("second pass");
        assert_eq!(
            (again.kept_alive, again.expired),
            (0, 0),
            "nothing more to do"
        );
        drop(h);
        db.cleanup().await;
    }
}

/// Sets `column` of each user's connection to `at`.
async fn set_time(h: &Harness, column: &str, at: chrono::DateTime<Utc>, users: &[&str]) {
    for user in users {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE connections SET {column} = $1 WHERE user_id = $2"
        )))
        .bind(at.timestamp_millis())
        .bind(*user)
        .execute(h.store.pool())
        .await
        .expect("update");
    }
}

#[tokio::test]
async fn a_pass_touches_only_due_rows_and_runs_on_one_replica_at_a_time() {
    for db in TestDatabase::all().await {
        let h = Harness::start(&db, fake_config(), true).await;
        let users = ["u0", "u1", "u2", "u3", "u4", "u5"];
        for user in users {
            h.connect(user).await;
        }
        set_time(
            &h,
            "refresh_idle_expires_at",
            Utc::now() + chrono::Duration::days(2),
            &["u1", "u3"],
        )
        .await;
        set_time(
            &h,
            "refresh_expires_at",
            Utc::now() - chrono::Duration::seconds(1),
            &["u4"],
        )
        .await;
        let settings = MaintenanceSettings {
            batch_size: 1,
            concurrency: 2,
            ..MaintenanceSettings::default()
        };
        let a = h.state.clone();
        let b = h.replica_state(RefreshSettings::default());

        // While replica b holds the pass lease, replica a skips its pass and touches nothing.
        assert!(
            h.store
                .try_acquire_task_lease(
                    maintenance::LEASE_NAME,
                    b.refresher().owner(),
                    Duration::from_secs(60)
                )
                .await
                .expect("lease")
        );
        let skipped = maintenance::run_once(a.refresher(), a.providers(), &settings, Utc::now())
            .await
            .expect("pass");
        assert!(skipped.skipped, "{}: {skipped:?}", db.kind);
        assert_eq!((skipped.rows_read, skipped.kept_alive), (0, 0));
        assert_eq!(h.fake.fake.counters().token_refresh, 0);
        h.store
            .release_task_lease(maintenance::LEASE_NAME, b.refresher().owner())
            .await
            .expect("release");

        // Both replicas start a pass at once while token calls are slow: one runs, one skips.
        h.fake
            .fake
            .fail_next_token_calls(2, Failure::Delay(Duration::from_millis(400)));
        let (ra, rb) = tokio::join!(
            maintenance::run_once(a.refresher(), a.providers(), &settings, Utc::now()),
            maintenance::run_once(b.refresher(), b.providers(), &settings, Utc::now()),
        );
        let (ra, rb) = (ra.expect("pass a"), rb.expect("pass b"));
        assert!(
            ra.skipped != rb.skipped,
            "{}: exactly one ran: {ra:?} {rb:?}",
            db.kind
        );
        let ran = if ra.skipped { rb } else { ra };
        assert_eq!(
            (
                ran.rows_read,
                ran.kept_alive,
                ran.expired,
                ran.failures,
                ran.lease_lost
            ),
            (3, 2, 1, 0, false),
            "{}: only the due rows were read: {ran:?}",
            db.kind
        );
        assert_eq!(
            h.fake.fake.counters().token_refresh,
            2,
            "{}: one token call per connection due for keep-alive, none for the others",
            db.kind
        );
        for user in users {
            let row = h
                .store
                .connection(user, "atlassian")
                .await
                .expect("db")
                .expect("row");
            let (version, status) = match user {
                "u1" | "u3" => (1, ConnectionStatus::Active),
                "u4" => (0, ConnectionStatus::NeedsReauth),
                _ => (0, ConnectionStatus::Active),
            };
            assert_eq!(
                (row.version, row.status),
                (version, status),
                "{}: {user}",
                db.kind
            );
        }

        // Nothing is due any more: the next pass reads no row and calls no token endpoint.
        let again = maintenance::run_once(b.refresher(), b.providers(), &settings, Utc::now())
            .await
            .expect("pass again");
        assert_eq!(
            (
                again.skipped,
                again.rows_read,
                again.kept_alive,
                again.expired
            ),
            (false, 0, 0, 0)
        );
        assert_eq!(h.fake.fake.counters().token_refresh, 2);
        drop(h);
        db.cleanup().await;
    }
}

/// Scrapes `/metrics` until `line` shows, for at most ten seconds.
async fn metrics_with(h: &Harness, base: &str, line: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = h
            .http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("body");
        if text.contains(line) || tokio::time::Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_maintenance_task_feeds_metrics_and_counts_are_cached() {
    for db in TestDatabase::all().await {
        let h = Harness::start(&db, fake_config(), true).await;
        h.connect("alice").await;
        h.connect("bob").await;
        set_time(
            &h,
            "refresh_expires_at",
            Utc::now() - chrono::Duration::seconds(1),
            &["bob"],
        )
        .await;
        let (_, _) = h.authorize("carol").await;
        sqlx::query("UPDATE oauth_states SET expires_at = $1")
            .bind((Utc::now() - chrono::Duration::seconds(1)).timestamp_millis())
            .execute(h.store.pool())
            .await
            .expect("expire states");

        // The first scrape counts the table; later scrapes reuse the count for its time to live.
        let first = metrics_with(&h, &h.base, "grantry_connections{").await;
        assert!(
            first.contains("grantry_connections{provider=\"atlassian\",status=\"active\"} 2\n"),
            "{}: {first}",
            db.kind
        );
        assert!(
            first.contains("grantry_maintenance_passes_total{result=\"completed\"} 0\n"),
            "{first}"
        );

        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(grantry_server::maintain(
            h.state.clone(),
            Duration::from_secs(3600),
            stop_rx,
        ));
        let text = metrics_with(
            &h,
            &h.base,
            "grantry_maintenance_passes_total{result=\"completed\"} 1\n",
        )
        .await;
        let _ = stop_tx.send(true);
        task.await.expect("maintenance task");
        for line in [
            "grantry_maintenance_passes_total{result=\"completed\"} 1\n",
            "grantry_maintenance_passes_total{result=\"skipped\"} 0\n",
            "grantry_maintenance_expired_total 1\n",
            "grantry_maintenance_states_purged_total 3\n",
            "grantry_maintenance_keep_alive_failures_total 0\n",
            "grantry_database_up 1\n",
            // Cached from the first scrape although bob now needs re-consent.
            "grantry_connections{provider=\"atlassian\",status=\"active\"} 2\n",
        ] {
            assert!(text.contains(line), "{}: {line} in {text}", db.kind);
        }
        assert!(
            !text.contains("grantry_maintenance_last_pass_timestamp_seconds 0\n"),
            "{text}"
        );

        // Without caching, a scrape shows the change at once.
        let (uncached, server) =
            spawn_server(h.state.clone().with_counts_ttl(Duration::ZERO)).await;
        let fresh = metrics_with(&h, &uncached, "status=\"needs_reauth\"} 1").await;
        for line in [
            "grantry_connections{provider=\"atlassian\",status=\"active\"} 1\n",
            "grantry_connections{provider=\"atlassian\",status=\"needs_reauth\"} 1\n",
        ] {
            assert!(fresh.contains(line), "{}: {line} in {fresh}", db.kind);
        }
        server.abort();
        drop(h);
        db.cleanup().await;
    }
}

/// Two `grantry serve` processes on one database: 100 concurrent requests, one refresh.
#[tokio::test]
async fn two_processes_on_one_database_share_one_refresh() {
    let mut dbs = vec![TestDatabase::sqlite()];
    dbs.extend(TestDatabase::postgres().await);
    for db in dbs {
        let fake = FakeAtlassian::start(short_fake()).await.expect("fake");
        let jwt = "two-process-jwt";
        let key = KeyRing::generate_key_base64();
        let env = |scratch: Scratch| {
            atlassian_env(scratch, &fake, &key, jwt)
                .with("DATABASE_URL", &db.url)
                .with("GRANTRY_REFRESH_MARGIN", "1")
                .with("GRANTRY_REFRESH_LEASE", "2")
                .with("ATLASSIAN_HTTP_TIMEOUT", "60")
        };
        let mut scratch_a = env(Scratch::new());
        let server_a = scratch_a.serve().await;
        let mut scratch_b = env(Scratch::new());
        let server_b = scratch_b.serve().await;
        let (user, admin) = alice_and_admin(jwt);
        let http = reqwest::Client::new();
        connect_alice(&http, &server_a, &server_a, &fake, &user).await;
        fake.fake.set_access_ttl(Duration::from_secs(3600));
        let store = db.store().await;
        wait_until_due(&store).await;

        let mut calls = JoinSet::new();
        for i in 0..100 {
            let server = if i % 2 == 0 { &server_a } else { &server_b };
            let (http, url, admin) = (http.clone(), server.url(TOKEN_ROUTE), admin.clone());
            calls.spawn(async move { get_token(&http, url, &admin).await });
        }
        let tokens = distinct_tokens(calls, db.kind).await;
        assert_eq!(
            fake.fake.counters().token_refresh,
            1,
            "{}: exactly one refresh across two processes",
            db.kind
        );
        assert_eq!(tokens.len(), 1);
        let row = store
            .connection("alice", "atlassian")
            .await
            .expect("db")
            .expect("row");
        assert_eq!(row.version, 1);
        store.close().await;
        server_a.stop();
        server_b.stop();
        db.cleanup().await;
    }
}

#[tokio::test]
async fn a_killed_winner_process_is_taken_over() {
    let mut dbs = vec![TestDatabase::sqlite()];
    dbs.extend(TestDatabase::postgres().await);
    for db in dbs {
        let fake = FakeAtlassian::start(short_fake()).await.expect("fake");
        fake.fake.set_reuse_leeway(Duration::from_secs(600));
        let jwt = "kill-jwt";
        let key = KeyRing::generate_key_base64();
        let env = |scratch: Scratch| {
            scratch
                .with("GRANTRY_ENCRYPTION_KEY", &key)
                .with("GRANTRY_JWT_SECRET", jwt)
                .with("DATABASE_URL", &db.url)
                .with("GRANTRY_REFRESH_MARGIN", "1")
                .with("GRANTRY_REFRESH_LEASE", "2")
                .with("ENABLE_ATLASSIAN_INTEGRATION", "true")
                .with("ATLASSIAN_CLIENT_ID", &fake.fake.config().client_id)
                .with("ATLASSIAN_CLIENT_SECRET", &fake.fake.config().client_secret)
                .with("ATLASSIAN_REDIRECT_URI", REDIRECT)
                .with("ATLASSIAN_AUTH_URL", &fake.base_url)
                .with("ATLASSIAN_API_URL", &fake.base_url)
                .with("ATLASSIAN_HTTP_TIMEOUT", "60")
        };
        let mut scratch_a = env(Scratch::new());
        let server_a = scratch_a.serve().await;
        let mut scratch_b = env(Scratch::new());
        let server_b = scratch_b.serve().await;
        let secret = SecretString::from(jwt.to_owned());
        let user = JwtAuthenticator::issue(&secret, "alice", "user", Duration::from_secs(600))
            .expect("sign");
        let admin = JwtAuthenticator::issue(&secret, "root", "admin", Duration::from_secs(600))
            .expect("sign");
        let http = reqwest::Client::new();
        let auth: Value = http
            .post(server_a.url("/api/v1/atlassian/connection/authorize"))
            .bearer_auth(&user)
            .send()
            .await
            .expect("authorize")
            .json()
            .await
            .expect("json");
        let code = fake.fake.issue_code(grantry::atlassian::DEFAULT_SCOPES);
        let resp = http
            .post(server_a.url("/api/v1/atlassian/connection/callback"))
            .bearer_auth(&user)
            .json(&json!({"code": code, "state": auth["state"]}))
            .send()
            .await
            .expect("callback");
        assert_eq!(resp.status(), 200);
        fake.fake.set_access_ttl(Duration::from_secs(3600));
        let store = db.store().await;
        wait_until_due(&store).await;

        fake.fake
            .fail_next_token_calls(1, Failure::Delay(Duration::from_secs(30)));
        let hung = {
            let (http, url, admin) = (http.clone(), server_a.url(TOKEN_ROUTE), admin.clone());
            tokio::spawn(async move { get_token(&http, url, &admin).await })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while store
            .connection("alice", "atlassian")
            .await
            .expect("db")
            .expect("row")
            .lease_owner
            .is_none()
            || fake.fake.counters().token_failures == 0
        {
            assert!(
                std::time::Instant::now() < deadline,
                "process A never took the lease"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server_a.stop();
        hung.abort();

        let (status, body) = get_token(&http, server_b.url(TOKEN_ROUTE), &admin).await;
        assert_eq!(status, 200, "{}: {body}", db.kind);
        let row = store
            .connection("alice", "atlassian")
            .await
            .expect("db")
            .expect("row");
        assert_eq!(
            (row.status, row.version),
            (ConnectionStatus::Active, 1),
            "{}",
            db.kind
        );
        store.close().await;
        server_b.stop();
        db.cleanup().await;
    }
}

#[tokio::test]
async fn transient_failures_are_retried_then_reported_without_losing_the_connection() {
    let db = TestDatabase::sqlite();
    let settings = RefreshSettings {
        base_backoff: Duration::from_millis(20),
        ..short_settings()
    };
    let h = Harness::start_with(&db, short_fake(), true, settings).await;
    h.connect("alice").await;
    let admin = h.token("admin-1", "admin");

    // Two 503s, then success: the third attempt stores the new pair.
    wait_until_due(&h.store).await;
    h.fake.fake.fail_next_token_calls(2, Failure::Status(503));
    let (status, body) = get_token(&h.http, h.url(TOKEN_ROUTE), &admin).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h.fake.fake.counters().token_failures, 2);
    assert_eq!(
        h.store
            .connection("alice", "atlassian")
            .await
            .expect("db")
            .expect("row")
            .version,
        1
    );

    // A 429 with Retry-After, then success.
    wait_until_due(&h.store).await;
    h.fake.fake.fail_next_token_calls(1, Failure::Status(429));
    let (status, _) = get_token(&h.http, h.url(TOKEN_ROUTE), &admin).await;
    assert_eq!(status, 200);
    assert_eq!(h.fake.fake.counters().token_failures, 3);

    // Three failures exhaust the attempts: 502, the connection stays active with the failure noted.
    wait_until_due(&h.store).await;
    h.fake.fake.fail_next_token_calls(3, Failure::Malformed);
    let (status, body) = get_token(&h.http, h.url(TOKEN_ROUTE), &admin).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (502, Some("upstream_unavailable")),
        "{body}"
    );
    let row = h
        .store
        .connection("alice", "atlassian")
        .await
        .expect("db")
        .expect("row");
    assert_eq!(row.status, ConnectionStatus::Active);
    assert!(row.last_failure.is_some());
    assert_eq!(
        row.lease_owner, None,
        "the lease is released after a failure"
    );
    let (status, _) = get_token(&h.http, h.url(TOKEN_ROUTE), &admin).await;
    assert_eq!(status, 200, "the next call refreshes normally");
    let metrics = h
        .http
        .get(h.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("grantry_refreshes_failed_total{reason=\"transient\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_database_failure_after_a_rotating_refresh_loses_no_token() {
    use grantry::core::vault::Vault;
    use grantry_server::testing::{FaultyStore, RefreshWriteFault};
    use std::sync::Arc;

    for db in TestDatabase::all().await {
        let h = Harness::start_with(&db, short_fake(), true, short_settings()).await;
        h.connect("alice").await;
        // A rotated refresh token is dead at once: a lost one would end the grant.
        h.fake.fake.set_reuse_leeway(Duration::ZERO);
        let faulty = Arc::new(FaultyStore::new(Arc::new(h.store.clone())));
        let vault = Vault::new(faulty.clone(), h.vault.keys().clone());
        let state = grantry_server::AppState::new(
            vault,
            h.state.providers().to_vec(),
            Arc::new(JwtAuthenticator::new(&SecretString::from(
                "e2e-jwt-secret".to_owned(),
            ))),
            short_settings(),
        );
        let (base, server) = spawn_server(state).await;
        let admin = h.token("admin-1", "admin");
        let url = format!("{base}{TOKEN_ROUTE}");

        for (round, fault, times) in [
            (1, RefreshWriteFault::Fail, 2),
            (2, RefreshWriteFault::LoseAnswer, 1),
        ] {
            wait_until_due(&h.store).await;
            let before = h
                .store
                .connection("alice", "atlassian")
                .await
                .expect("db")
                .expect("row");
            faulty.break_refresh_writes(fault, times);
            let (status, body) = get_token(&h.http, url.clone(), &admin).await;
            assert_eq!(status, 200, "{} {fault:?}: {body}", db.kind);
            assert_eq!(faulty.pending_faults(), 0, "every planned fault was hit");
            assert_eq!(h.fake.fake.counters().token_refresh, round);
            let after = h
                .store
                .connection("alice", "atlassian")
                .await
                .expect("db")
                .expect("row");
            assert_eq!(after.version, before.version + 1, "{} {fault:?}", db.kind);
            assert_eq!(after.lease_owner, None, "lease released");
            let stored = h.vault.open_tokens(&after).expect("open");
            assert_eq!(
                body["access_token"].as_str(),
                Some(stored.access_token.secret()),
                "{} {fault:?}: the token handed out is the one stored",
                db.kind
            );
        }

        // The stored refresh token is the newest one: the grant refreshes again.
        wait_until_due(&h.store).await;
        let (status, body) = get_token(&h.http, url, &admin).await;
        assert_eq!(status, 200, "{}: {body}", db.kind);
        assert_eq!(h.fake.fake.counters().token_refresh, 3);
        server.abort();
        drop(h);
        db.cleanup().await;
    }
}

#[tokio::test]
async fn a_waiter_on_another_replica_is_woken_by_the_database_not_by_its_poll() {
    use std::sync::Arc;
    // PostgreSQL only: its LISTEN/NOTIFY carries the wake-up; SQLite waiters poll.
    let Some(db) = TestDatabase::postgres().await else {
        eprintln!("note: GRANTRY_TEST_POSTGRES_URL is unset; the PostgreSQL wake-up is not tested");
        return;
    };
    let h = Harness::start_with(&db, short_fake(), true, short_settings()).await;
    h.connect("alice").await;
    h.fake.fake.set_access_ttl(Duration::from_secs(3600));

    // Replica B polls once a minute: only a notification can wake it within the test's bound.
    let b = h.replica_state(RefreshSettings {
        poll_interval: Duration::from_secs(60),
        lease: Duration::from_secs(30),
        ..RefreshSettings::default()
    });
    let listener = tokio::spawn(grantry_server::changes::listen(
        db.url.clone(),
        Arc::downgrade(b.refresher()),
    ));
    let store = db.store().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let listening: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND query LIKE 'LISTEN%'",
        )
        .fetch_one(store.pool())
        .await
        .expect("pg_stat_activity");
        if listening > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the listener never subscribed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (b_base, b_server) = spawn_server(b).await;
    wait_until_due(&h.store).await;

    // Replica A (the harness) wins the lease and holds the token call for a second.
    h.fake
        .fake
        .fail_next_token_calls(1, Failure::Delay(Duration::from_secs(1)));
    let admin = h.token("admin-1", "admin");
    let winner = {
        let (http, url, admin) = (h.http.clone(), h.url(TOKEN_ROUTE), admin.clone());
        tokio::spawn(async move { get_token(&http, url, &admin).await })
    };
    while h.fake.fake.counters().token_failures == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "A never called the token endpoint"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // B finds the lease taken and waits; A's stored refresh wakes it long before its poll.
    let waiter = get_token(&h.http, format!("{b_base}{TOKEN_ROUTE}"), &admin);
    let (status, body) = tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .expect("the waiter on replica B was not woken by the notification");
    assert_eq!(status, 200, "{body}");
    let (status, won) = winner.await.expect("join");
    assert_eq!(status, 200, "{won}");
    assert_eq!(
        body["access_token"], won["access_token"],
        "B uses A's token"
    );
    assert_eq!(h.fake.fake.counters().token_refresh, 1);
    listener.abort();
    b_server.abort();
    store.close().await;
    drop(h);
    db.cleanup().await;
}
