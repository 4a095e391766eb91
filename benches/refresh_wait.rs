//! How long a caller waits behind another caller's refresh (same process, and another replica).
//!
//! `cargo bench --bench refresh_wait` — SQLite in a temporary folder, and PostgreSQL when
//! `GRANTRY_TEST_POSTGRES_URL` names a server (a fresh database, dropped after); the fake
//! Atlassian over loopback HTTP with an injected token-endpoint latency, 50 concurrent callers
//! per round split over two replicas (two refreshers sharing the database). On PostgreSQL each
//! replica listens for change notifications, as `grantry serve` does; on SQLite waiters poll.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use grantry::core::keyring::KeyRing;
use grantry::core::provider::build_providers;
use grantry::core::refresh::{RefreshSettings, Refresher};
use grantry::core::vault::Vault;
use grantry::core::{AccessToken, Provider, ProviderSettings, ProvidersConfig};
use grantry_atlassian_fake::{Failure, FakeAtlassian, FakeConfig};
use grantry_server::testing::TestDatabase;
use secrecy::SecretString;

const ROUNDS: usize = 30;
const CALLERS: usize = 50;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn report(label: &str, mut samples: Vec<f64>) {
    samples.sort_by(f64::total_cmp);
    println!(
        "{label:<44} n={:<5} median={:>8.2} ms  p99={:>8.2} ms  max={:>8.2} ms",
        samples.len(),
        percentile(&samples, 50.0),
        percentile(&samples, 99.0),
        samples.last().copied().unwrap_or(f64::NAN)
    );
}

async fn run(db: &TestDatabase, upstream_latency: Duration) {
    let fake = FakeAtlassian::start(FakeConfig::default())
        .await
        .expect("fake");
    let values = [
        ("enabled", "true".to_owned()),
        ("client_id", fake.fake.config().client_id.clone()),
        ("client_secret", fake.fake.config().client_secret.clone()),
        ("redirect_uri", fake.fake.config().redirect_uri.clone()),
        ("auth_url", fake.base_url.clone()),
        ("api_url", fake.base_url.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let providers = build_providers(&ProvidersConfig::new([ProviderSettings::new(
        "atlassian",
        values,
    )]))
    .expect("providers");
    let provider: Arc<dyn Provider> = providers[0].clone();
    let store = db.store().await;
    sqlx::query("DELETE FROM connections")
        .execute(store.pool())
        .await
        .expect("empty");
    let keys = Arc::new(
        KeyRing::from_base64(&SecretString::from(KeyRing::generate_key_base64()), None)
            .expect("key"),
    );
    let vault = Vault::new(Arc::new(store.clone()), keys);
    let settings = RefreshSettings::default();
    let replicas = [
        Arc::new(Refresher::new(vault.clone(), "replica-a", settings.clone())),
        Arc::new(Refresher::new(vault.clone(), "replica-b", settings)),
    ];
    let listeners: Vec<_> = if db.kind == "postgres" {
        let tasks = replicas
            .iter()
            .map(|r| {
                tokio::spawn(grantry_server::changes::listen(
                    db.url.clone(),
                    Arc::downgrade(r),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(500)).await;
        tasks
    } else {
        Vec::new()
    };

    let code = fake.fake.issue_code(grantry::atlassian::DEFAULT_SCOPES);
    let tokens = provider
        .exchange_code(
            &grantry::core::AuthorizationCode::new(code),
            &grantry::core::CallbackContext::default(),
        )
        .await
        .expect("exchange");
    let details = provider
        .account(&AccessToken::new(tokens.access_token.secret()))
        .await
        .expect("account");
    vault
        .save_grant(
            "bench-user",
            "atlassian",
            &tokens,
            &details,
            &provider.refresh_policy(),
            Utc::now(),
        )
        .await
        .expect("save");

    let (mut same, mut other, mut winners) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let past = (Utc::now() - chrono::Duration::minutes(1)).timestamp_millis();
        sqlx::query("UPDATE connections SET access_expires_at = $1")
            .bind(past)
            .execute(store.pool())
            .await
            .expect("expire");
        fake.fake
            .fail_next_token_calls(1, Failure::Delay(upstream_latency));
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..CALLERS {
            let refresher = replicas[i % 2].clone();
            let provider = provider.clone();
            calls.spawn(async move {
                let started = Instant::now();
                let access = refresher
                    .fresh_token("bench-user", &provider)
                    .await
                    .expect("token");
                (
                    i % 2,
                    access.refreshed,
                    started.elapsed().as_secs_f64() * 1000.0,
                )
            });
        }
        let mut results = Vec::new();
        while let Some(done) = calls.join_next().await {
            results.push(done.expect("join"));
        }
        let winner_replica = results
            .iter()
            .find(|r| r.1)
            .map(|r| r.0)
            .expect("one refreshed");
        for (replica, refreshed, ms) in results {
            if refreshed {
                winners.push(ms);
            } else if replica == winner_replica {
                same.push(ms);
            } else {
                other.push(ms);
            }
        }
    }
    let refreshes = fake.fake.counters().token_refresh;
    println!(
        "\n{}: upstream latency {} ms, {ROUNDS} rounds x {CALLERS} callers, {refreshes} refreshes at the token endpoint",
        db.kind,
        upstream_latency.as_millis()
    );
    report("winner (the one refresh)", winners);
    report("waiter in the winner's process", same);
    report("waiter in the other replica", other);
    for listener in listeners {
        listener.abort();
    }
    store.close().await;
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut dbs = vec![TestDatabase::sqlite()];
        dbs.extend(TestDatabase::postgres().await);
        for db in dbs {
            for latency in [Duration::from_millis(0), Duration::from_millis(100)] {
                run(&db, latency).await;
            }
            db.cleanup().await;
        }
    });
}
