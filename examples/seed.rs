//! Seeds a database with many Atlassian connections for the scale benchmark (`bench/scale.sh`).
//!
//! Every row goes through the real store API ([`Vault::save_grant`]): tokens sealed with the key
//! ring of `GRANTRY_ENCRYPTION_KEY`, two sites per connection, writes spread over the pool by
//! `--concurrency` workers. A slice of the rows is due for keep-alive (idle expiry within the
//! maintenance window), a slice is past its absolute expiry and a slice is `needs_reauth`; the
//! rest are idle, healthy connections.
//!
//! ```sh
//! export DATABASE_URL=postgres://postgres@127.0.0.1:5432/grantry_scale
//! export GRANTRY_ENCRYPTION_KEY=$(grantry keygen) GRANTRY_JWT_SECRET=$(grantry keygen)
//! cargo run --release --example seed -- --count 1000000 --out target/scale --serve-fake
//! ```
//!
//! With `--serve-fake` the refresh tokens of the rows due for keep-alive come from an in-process
//! fake Atlassian, which keeps serving after the seeding (until Ctrl-C or SIGTERM) so that a
//! server pointed at it (`ATLASSIAN_*` in `OUT/fake.env`) refreshes them for real. Without it
//! those rows get tokens no provider knows, and their keep-alive ends in `needs_reauth`.
//! `--out` also receives bearer tokens (`GRANTRY_JWT_SECRET`): `user-tokens.txt`, one per line
//! for `--token-users` healthy users spread over the table, and `admin-token.txt`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use clap::Parser;
use grantry::atlassian::{Atlassian, AtlassianConfig, AtlassianProvider, DEFAULT_SCOPES};
use grantry::core::events::{ReauthReason, StatusChange};
use grantry::core::keyring::KeyRing;
use grantry::core::vault::Vault;
use grantry::core::{
    AccessToken, Account, AccountDetails, AuthorizationCode, CallbackContext, ClientSecret,
    Provider, RefreshPolicy, RefreshToken, ScopeSet, TokenSet,
};
use grantry::server::{JwtAuthenticator, SqlStore};
use grantry_atlassian_fake::{FakeAtlassian, FakeConfig, RunningFake};
use rand::Rng;
use rand::distributions::Alphanumeric;
use secrecy::SecretString;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The provider every seeded connection belongs to.
const PROVIDER: &str = grantry::atlassian::ID;
/// How far in the past a healthy row's last consent lies, at most (its idle expiry stays beyond
/// the maintenance window of 7 days).
const HEALTHY_AGE_DAYS: i64 = 80;

#[derive(Parser)]
#[command(about = "Seed sealed connections for the scale benchmark")]
struct Args {
    /// How many connections to write.
    #[arg(long, default_value_t = 100_000)]
    count: usize,
    /// Percent of rows due for keep-alive (refresh token idle expiry within the 7-day window).
    #[arg(long, default_value_t = 0.9)]
    keep_alive_due: f64,
    /// Percent of rows past their absolute expiry (due to be marked needs_reauth).
    #[arg(long, default_value_t = 0.1)]
    expired: f64,
    /// Percent of rows already `needs_reauth` (not due).
    #[arg(long, default_value_t = 1.0)]
    needs_reauth: f64,
    /// Concurrent writers over the connection pool.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// The first row to write (to resume an interrupted seeding: rows are numbered from 0).
    #[arg(long, default_value_t = 0)]
    start: usize,
    /// Length of each access token (characters); Atlassian's are JWTs of about this size.
    #[arg(long, default_value_t = 1200)]
    access_token_len: usize,
    /// Length of each refresh token (characters).
    #[arg(long, default_value_t = 400)]
    refresh_token_len: usize,
    /// How many healthy users get a bearer token in `OUT/user-tokens.txt`.
    #[arg(long, default_value_t = 10_000)]
    token_users: usize,
    /// Folder for `user-tokens.txt`, `admin-token.txt` and `fake.env`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Run a fake Atlassian, take the due rows' tokens from it and keep it serving afterwards.
    #[arg(long)]
    serve_fake: bool,
}

/// What a seeded row is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Healthy,
    KeepAliveDue,
    Expired,
    NeedsReauth,
}

/// The kind of row `i`: per mille buckets, so every kind is spread evenly over the table.
struct Mix {
    keep_alive: usize,
    expired: usize,
    reauth: usize,
}

impl Mix {
    fn new(args: &Args) -> Result<Self> {
        let permille = |pct: f64, name: &str| -> Result<usize> {
            if !(0.0..=100.0).contains(&pct) {
                bail!("--{name} must be a percentage between 0 and 100");
            }
            // A checked percentage of 0..=100 maps onto 0..=1000 per mille.
            Ok((pct * 10.0).round() as usize)
        };
        let mix = Self {
            keep_alive: permille(args.keep_alive_due, "keep-alive-due")?,
            expired: permille(args.expired, "expired")?,
            reauth: permille(args.needs_reauth, "needs-reauth")?,
        };
        if mix.keep_alive + mix.expired + mix.reauth > 1000 {
            bail!("the percentages add up to more than 100");
        }
        Ok(mix)
    }

    fn kind(&self, i: usize) -> Kind {
        let bucket = (i.wrapping_mul(617)) % 1000;
        if bucket < self.keep_alive {
            Kind::KeepAliveDue
        } else if bucket < self.keep_alive + self.expired {
            Kind::Expired
        } else if bucket < self.keep_alive + self.expired + self.reauth {
            Kind::NeedsReauth
        } else {
            Kind::Healthy
        }
    }
}

fn user_id(i: usize) -> String {
    format!("user-{i:08}")
}

fn random_token(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

struct Seeder {
    vault: Vault,
    policy: RefreshPolicy,
    sites: AccountDetails,
    mix: Mix,
    args: Args,
    fake: Option<(RunningFake, AtlassianProvider)>,
    now: DateTime<Utc>,
}

impl Seeder {
    /// The tokens of row `i`: real ones from the fake for keep-alive rows when it runs.
    async fn tokens(&self, kind: Kind, consented: DateTime<Utc>) -> Result<TokenSet> {
        if let (Kind::KeepAliveDue, Some((running, provider))) = (kind, &self.fake) {
            let code = AuthorizationCode::new(running.fake.issue_code(DEFAULT_SCOPES));
            let context = CallbackContext {
                pkce: None,
                issuer: None,
            };
            return provider
                .exchange_code(&code, &context)
                .await
                .context("code exchange at the fake Atlassian");
        }
        Ok(TokenSet {
            access_token: AccessToken::new(random_token(self.args.access_token_len)),
            refresh_token: Some(RefreshToken::new(random_token(self.args.refresh_token_len))),
            token_type: "Bearer".into(),
            expires_at: Some(consented + chrono::Duration::hours(1)),
            scopes: Some(ScopeSet::parse(DEFAULT_SCOPES)),
        })
    }

    async fn seed_one(&self, i: usize) -> Result<()> {
        let kind = self.mix.kind(i);
        let day = chrono::Duration::days(1);
        let jitter = |days: i64| -> chrono::Duration {
            chrono::Duration::seconds(rand::thread_rng().gen_range(0..days * 86_400))
        };
        // `save_grant` dates the consent, the idle and the absolute expiry from this moment.
        let consented = match kind {
            Kind::Healthy | Kind::NeedsReauth => self.now - jitter(HEALTHY_AGE_DAYS),
            // Idle expiry (90 days after) falls 1–6 days from now: inside the 7-day window.
            Kind::KeepAliveDue => self.now - day * 89 + jitter(5),
            // Absolute expiry (365 days after) has passed.
            Kind::Expired => self.now - day * 366 - jitter(30),
        };
        let tokens = self.tokens(kind, consented).await?;
        let details = AccountDetails {
            account: Account {
                id: format!("acct-{i:08}"),
                name: Some(format!("Seeded User {i}")),
                email: Some(format!("user{i}@example.com")),
            },
            resources: self.sites.resources.clone(),
        };
        let record = self
            .vault
            .save_grant(
                &user_id(i),
                PROVIDER,
                &tokens,
                &details,
                &self.policy,
                consented,
            )
            .await
            .with_context(|| format!("saving connection {i}"))?;
        if kind == Kind::NeedsReauth {
            self.vault
                .store()
                .set_status(
                    &record.id,
                    StatusChange::NeedsReauth {
                        reason: ReauthReason::InvalidGrant,
                        failure: "the provider rejected the refresh token (invalid_grant)",
                    },
                )
                .await?;
        }
        Ok(())
    }
}

/// The database URL for seeding: PostgreSQL connections commit without waiting for the disk
/// (`synchronous_commit=off`, these connections only); seeded rows need no crash safety.
fn seeding_url(url: &str) -> String {
    if !url.starts_with("postgres") || url.contains("synchronous_commit") {
        return url.to_owned();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options[synchronous_commit]=off")
}

fn env(name: &str) -> Result<String> {
    std::env::var(name).with_context(|| format!("{name} must be set"))
}

async fn provider_for(running: &RunningFake) -> Result<AtlassianProvider> {
    let config = running.fake.config();
    let base = url::Url::parse(&running.base_url)?;
    Ok(Atlassian::new(AtlassianConfig {
        client_id: config.client_id.clone(),
        client_secret: ClientSecret::new(config.client_secret.clone()),
        scopes: ScopeSet::parse(DEFAULT_SCOPES),
        redirect_uri: url::Url::parse(&config.redirect_uri)?,
        auth_url: base.clone(),
        api_url: base,
        http_timeout: Duration::from_secs(15),
    })?
    .provider())
}

/// Writes the bearer tokens (and the fake's settings) for the benchmark into `out`.
fn write_out(out: &PathBuf, seeder: &Seeder) -> Result<()> {
    std::fs::create_dir_all(out)?;
    let secret = SecretString::from(env("GRANTRY_JWT_SECRET")?);
    let day = Duration::from_secs(24 * 3600);
    let count = seeder.args.count;
    let wanted = seeder.args.token_users.min(count).max(1);
    let stride = (count / wanted).max(1);
    let mut lines = String::new();
    let mut i = 0;
    let mut written = 0;
    while i < count && written < wanted {
        let mut j = i;
        while j < count && seeder.mix.kind(j) != Kind::Healthy {
            j += 1;
        }
        if j == count {
            break;
        }
        lines.push_str(&JwtAuthenticator::issue(&secret, &user_id(j), "user", day)?);
        lines.push('\n');
        written += 1;
        i += stride;
    }
    std::fs::write(out.join("user-tokens.txt"), lines)?;
    std::fs::write(
        out.join("admin-token.txt"),
        JwtAuthenticator::issue(&secret, "bench-admin", "admin", day)?,
    )?;
    if let Some((running, _)) = &seeder.fake {
        let c = running.fake.config();
        std::fs::write(
            out.join("fake.env"),
            format!(
                "ATLASSIAN_CLIENT_ID={}\nATLASSIAN_CLIENT_SECRET={}\nATLASSIAN_REDIRECT_URI={}\n\
                 ATLASSIAN_AUTH_URL={}\nATLASSIAN_API_URL={}\n",
                c.client_id, c.client_secret, c.redirect_uri, running.base_url, running.base_url
            ),
        )?;
    }
    Ok(())
}

async fn stop_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = term => {},
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let mix = Mix::new(&args)?;
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let keys = KeyRing::from_base64(&SecretString::from(env("GRANTRY_ENCRYPTION_KEY")?), None)
        .context("GRANTRY_ENCRYPTION_KEY")?;
    let store = SqlStore::connect(&seeding_url(&env("DATABASE_URL")?)).await?;
    store.migrate().await?;
    let vault = Vault::new(Arc::new(store.clone()), Arc::new(keys));

    // The fake gives every row the account and sites shape it hands out (Acme and Beta Labs)
    // and, with --serve-fake, the due rows' real tokens. It takes a rotated-out refresh token
    // again for a day, so a copy of the seeded database (a template) can be measured more than
    // once: each run's keep-alive presents the seeded tokens again.
    let running = FakeAtlassian::start(FakeConfig {
        reuse_leeway: Duration::from_secs(24 * 3600),
        ..FakeConfig::default()
    })
    .await?;
    let provider = provider_for(&running).await?;
    let policy = provider.refresh_policy();
    let code = AuthorizationCode::new(running.fake.issue_code(DEFAULT_SCOPES));
    let context = CallbackContext {
        pkce: None,
        issuer: None,
    };
    let tokens = provider.exchange_code(&code, &context).await?;
    let sites = provider.account(&tokens.access_token).await?;
    let fake = if args.serve_fake {
        Some((running, provider))
    } else {
        running.shutdown().await;
        None
    };
    let seeder = Arc::new(Seeder {
        vault,
        policy,
        sites,
        mix,
        fake,
        now: Utc::now(),
        args,
    });

    let count = seeder.args.count;
    let next = Arc::new(AtomicUsize::new(seeder.args.start));
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let reporter = {
        let done = done.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let n = done.load(Ordering::Relaxed);
                eprintln!(
                    "seeded {n}/{count} ({:.0} rows/s)",
                    n as f64 / started.elapsed().as_secs_f64()
                );
            }
        })
    };
    let mut workers = Vec::new();
    for _ in 0..seeder.args.concurrency {
        let (seeder, next, done) = (seeder.clone(), next.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok::<(), anyhow::Error>(());
                }
                // A busy machine can time out a pool acquisition; a row is written again
                // (same user) before giving up.
                let mut attempt = 0;
                while let Err(e) = seeder.seed_one(i).await {
                    attempt += 1;
                    if attempt == 5 {
                        return Err(e);
                    }
                    eprintln!("row {i}: {e:#}; again");
                    tokio::time::sleep(Duration::from_secs(attempt)).await;
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for worker in workers {
        worker.await??;
    }
    reporter.abort();
    let took = started.elapsed();
    let written = count.saturating_sub(seeder.args.start);
    println!(
        "seeded {written} connections in {:.1} s ({:.0} rows/s), {} workers",
        took.as_secs_f64(),
        written as f64 / took.as_secs_f64(),
        seeder.args.concurrency
    );
    if let Some(out) = &seeder.args.out {
        write_out(out, &seeder)?;
        println!("bearer tokens in {}", out.display());
    }
    store.close().await;
    if let Some((running, _)) = &seeder.fake {
        println!(
            "fake Atlassian serving at {} until Ctrl-C or SIGTERM",
            running.base_url
        );
        stop_signal().await;
    }
    Ok(())
}
