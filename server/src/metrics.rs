//! `GET /metrics`: refresh and maintenance counters and connections by status in the Prometheus
//! text format.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::response::{IntoResponse, Response};
use grantry_core::ApiError;
use grantry_core::error::StoreError;
use grantry_core::maintenance::MaintenanceMetrics;
use grantry_core::refresh::{RefreshMetrics, Refresher};
use grantry_core::store::{ConnectionStatus, TokenStore};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::webhooks::Webhooks;

/// What `/metrics` reads, taken from the application state.
#[derive(Clone)]
pub(crate) struct MetricsSource {
    /// The token store (pinged, and counted).
    pub(crate) store: Arc<dyn TokenStore>,
    /// The refresh manager, for its counters.
    pub(crate) refresher: Arc<Refresher>,
    /// The counters of the maintenance passes.
    pub(crate) maintenance: Arc<MaintenanceMetrics>,
    /// The cached connection counts.
    pub(crate) counts: Arc<CountsCache>,
    /// The bearer token scrapers must send, when set.
    pub(crate) token: Option<MetricsToken>,
    /// The webhook delivery worker, when endpoints are configured.
    pub(crate) webhooks: Option<Arc<Webhooks>>,
}

/// The bearer token `/metrics` requires (`GRANTRY_METRICS_TOKEN`); only its SHA-256 is kept.
#[derive(Clone)]
pub struct MetricsToken([u8; 32]);

impl std::fmt::Debug for MetricsToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsToken([redacted])")
    }
}

impl MetricsToken {
    /// The token scrapers must send as `Authorization: Bearer`.
    pub fn new(token: &SecretString) -> Self {
        Self(Sha256::digest(token.expose_secret().as_bytes()).into())
    }

    /// Whether `presented` is the token, compared in constant time (digests, so the length is
    /// not revealed either).
    pub fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        bool::from(self.0.ct_eq(&digest))
    }

    /// Whether the request's `Authorization: Bearer` carries the token.
    fn admits(&self, headers: &HeaderMap) -> bool {
        headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            .is_some_and(|(scheme, token)| {
                scheme.eq_ignore_ascii_case("bearer") && self.matches(token.trim())
            })
    }
}

fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

type Counts = Vec<(String, ConnectionStatus, u64)>;

/// The connection counts of the last count, reused for a while so that a scrape does not count
/// the table each time.
pub(crate) struct CountsCache {
    ttl: Duration,
    last: tokio::sync::Mutex<Option<(Instant, Counts)>>,
}

impl CountsCache {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// The counts, counted again only when the last count is older than the time to live;
    /// concurrent scrapes share one count.
    async fn get(&self, store: &dyn TokenStore) -> Result<Counts, StoreError> {
        let mut last = self.last.lock().await;
        if let Some((at, counts)) = last.as_ref()
            && !self.ttl.is_zero()
            && at.elapsed() < self.ttl
        {
            return Ok(counts.clone());
        }
        let counts = store.connection_counts().await?;
        *last = Some((Instant::now(), counts.clone()));
        Ok(counts)
    }
}

fn maintenance(out: &mut String, m: &MaintenanceMetrics) {
    family(
        out,
        "grantry_maintenance_passes_total",
        "counter",
        "Maintenance passes of this process, by result (skipped: another replica held the pass lease).",
    );
    for (result, counter) in [
        ("completed", &m.completed),
        ("skipped", &m.skipped),
        ("failed", &m.failed),
    ] {
        let _ = writeln!(
            out,
            "grantry_maintenance_passes_total{{result=\"{result}\"}} {}",
            counter.load(Ordering::Relaxed)
        );
    }
    for (name, help, counter) in [
        (
            "grantry_maintenance_expired_total",
            "Grants marked needs_reauth by maintenance for passing their absolute expiry.",
            &m.expired,
        ),
        (
            "grantry_maintenance_keep_alive_failures_total",
            "Keep-alive refreshes of maintenance passes that failed.",
            &m.keep_alive_failures,
        ),
        (
            "grantry_maintenance_states_purged_total",
            "Expired OAuth states deleted by maintenance.",
            &m.states_purged,
        ),
    ] {
        family(out, name, "counter", help);
        let _ = writeln!(out, "{name} {}", counter.load(Ordering::Relaxed));
    }
    family(
        out,
        "grantry_maintenance_last_pass_duration_seconds",
        "gauge",
        "Duration of this process's last completed maintenance pass.",
    );
    let _ = writeln!(
        out,
        "grantry_maintenance_last_pass_duration_seconds {}",
        m.last_duration_micros.load(Ordering::Relaxed) as f64 / 1e6
    );
    family(
        out,
        "grantry_maintenance_last_pass_timestamp_seconds",
        "gauge",
        "When this process's last completed maintenance pass ended, Unix time (0: none yet).",
    );
    let _ = writeln!(
        out,
        "grantry_maintenance_last_pass_timestamp_seconds {}",
        m.last_completed_at.load(Ordering::Relaxed)
    );
}

async fn webhooks(out: &mut String, hooks: &Webhooks, up: bool) {
    let m = hooks.metrics();
    family(
        out,
        "grantry_webhook_attempts_total",
        "counter",
        "Webhook delivery attempts of this process, by result.",
    );
    for (result, counter) in [("delivered", &m.delivered), ("failed", &m.failed_attempts)] {
        let _ = writeln!(
            out,
            "grantry_webhook_attempts_total{{result=\"{result}\"}} {}",
            counter.load(Ordering::Relaxed)
        );
    }
    family(
        out,
        "grantry_webhook_deliveries_failed_total",
        "counter",
        "Webhook deliveries this process gave up after the retry window.",
    );
    let _ = writeln!(
        out,
        "grantry_webhook_deliveries_failed_total {}",
        m.given_up.load(Ordering::Relaxed)
    );
    if !up {
        return;
    }
    match hooks.outbox().pending().await {
        Ok(stats) => {
            family(
                out,
                "grantry_webhook_deliveries_pending",
                "gauge",
                "Webhook deliveries waiting for an attempt (all replicas).",
            );
            let _ = writeln!(out, "grantry_webhook_deliveries_pending {}", stats.pending);
            family(
                out,
                "grantry_webhook_oldest_pending_age_seconds",
                "gauge",
                "Age of the oldest pending webhook delivery (0: none).",
            );
            let age = stats.oldest.map_or(0.0, |at| {
                (chrono::Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0
            });
            let _ = writeln!(out, "grantry_webhook_oldest_pending_age_seconds {age}");
        }
        Err(e) => tracing::warn!(error = %e, "metrics: pending webhook deliveries unavailable"),
    }
}

/// Renders the metrics of this process and the connection counts of the database; with
/// `GRANTRY_METRICS_TOKEN` set, only for `Authorization: Bearer <that token>`.
#[utoipa::path(get, path = "/metrics", tag = "probes", security((), ("metrics_token" = [])),
    responses(
        (status = 200, content_type = "text/plain", body = String),
        (status = 401, body = grantry_core::ErrorBody, description = "`unauthorized`: `GRANTRY_METRICS_TOKEN` is set and the request does not carry it"),
    ))]
pub(crate) async fn render(State(source): State<MetricsSource>, headers: HeaderMap) -> Response {
    if let Some(token) = &source.token
        && !token.admits(&headers)
    {
        let mut response =
            ApiError::unauthorized("send Authorization: Bearer with the metrics token")
                .into_response();
        response.headers_mut().insert(
            WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer"),
        );
        return response;
    }
    let m = source.refresher.metrics();
    let mut out = String::with_capacity(2048);
    let counters = [
        (
            "grantry_refreshes_started_total",
            "Refreshes this process started at a token endpoint.",
            &m.started,
        ),
        (
            "grantry_refreshes_succeeded_total",
            "Refreshes that stored a new token pair.",
            &m.succeeded,
        ),
        (
            "grantry_refresh_waiters_served_total",
            "Callers that needed a refresh and were served by another caller's refresh.",
            &m.waiters_served,
        ),
        (
            "grantry_keep_alive_refreshes_total",
            "Idle grants refreshed before their inactivity expiry.",
            &m.keep_alive,
        ),
    ];
    for (name, help, counter) in counters {
        family(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {}", RefreshMetrics::get(counter));
    }
    family(
        &mut out,
        "grantry_refreshes_failed_total",
        "counter",
        "Refreshes that failed, by reason.",
    );
    for (reason, counter) in [
        ("invalid_grant", &m.failed_invalid_grant),
        ("transient", &m.failed_transient),
        ("rejected", &m.failed_rejected),
        ("store", &m.failed_store),
    ] {
        let _ = writeln!(
            out,
            "grantry_refreshes_failed_total{{reason=\"{reason}\"}} {}",
            RefreshMetrics::get(counter)
        );
    }
    maintenance(&mut out, &source.maintenance);
    let up = source.store.ping().await.is_ok();
    family(
        &mut out,
        "grantry_database_up",
        "gauge",
        "Whether the database answered this scrape.",
    );
    let _ = writeln!(out, "grantry_database_up {}", u8::from(up));
    let counts = if up {
        source.counts.get(source.store.as_ref()).await
    } else {
        Err(StoreError::Database("the database does not answer".into()))
    };
    family(
        &mut out,
        "grantry_connections",
        "gauge",
        "Connections by provider and status (counted at most once per GRANTRY_METRICS_COUNTS_TTL).",
    );
    match counts {
        Ok(rows) => {
            for (provider, status, n) in rows {
                let _ = writeln!(
                    out,
                    "grantry_connections{{provider=\"{}\",status=\"{}\"}} {n}",
                    label(&provider),
                    status.as_str()
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "metrics: connection counts unavailable"),
    }
    if let Some(hooks) = &source.webhooks {
        webhooks(&mut out, hooks, up).await;
    }
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        out,
    )
        .into_response()
}
