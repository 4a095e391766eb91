//! `GET /metrics`: the application's latency histograms, refresh, maintenance and webhook
//! counters, and connections by provider and status, in the Prometheus text format
//! (`prometheus-client`, one registry per application).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::response::{IntoResponse, Response};
use grantry_core::ApiError;
use grantry_core::error::StoreError;
use grantry_core::maintenance::MaintenanceMetrics;
use grantry_core::refresh::Refresher;
use grantry_core::store::{ConnectionStatus, TokenStore};
use grantry_core::telemetry::Telemetry;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
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
    /// The latency histograms.
    pub(crate) telemetry: Telemetry,
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

/// A counter, gauge or labelled family of either, as read at one scrape.
#[derive(Debug)]
struct Figure {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    /// The label's name, when the samples carry one.
    label: Option<&'static str>,
    /// The samples: a label value (empty without a label) and the value.
    samples: Vec<(&'static str, f64)>,
}

impl Figure {
    fn counter(name: &'static str, help: &'static str, value: &AtomicU64) -> Self {
        Self::labelled_counter(name, help, None, [("", value)])
    }

    fn labelled_counter<'a>(
        name: &'static str,
        help: &'static str,
        label: Option<&'static str>,
        samples: impl IntoIterator<Item = (&'static str, &'a AtomicU64)>,
    ) -> Self {
        Self {
            name,
            help,
            kind: MetricType::Counter,
            label,
            samples: samples
                .into_iter()
                .map(|(l, v)| (l, v.load(Ordering::Relaxed) as f64))
                .collect(),
        }
    }

    fn gauge(name: &'static str, help: &'static str, value: f64) -> Self {
        Self {
            name,
            help,
            kind: MetricType::Gauge,
            label: None,
            samples: vec![("", value)],
        }
    }

    fn encode_sample(
        &self,
        encoder: prometheus_client::encoding::MetricEncoder<'_>,
        value: f64,
    ) -> Result<(), std::fmt::Error> {
        match self.kind {
            // Counters count whole events.
            MetricType::Counter => ConstCounter::new(value as u64).encode(encoder),
            // Whole numbers (flags, counts, timestamps) print without a fraction.
            _ if value.fract() == 0.0 && value.abs() < 9e15 => {
                ConstGauge::new(value as i64).encode(encoder)
            }
            _ => ConstGauge::new(value).encode(encoder),
        }
    }
}

/// What one scrape read: the counters and the figures of the database.
#[derive(Debug)]
struct Scrape(Vec<Figure>);

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        for figure in &self.0 {
            let mut metric =
                encoder.encode_descriptor(figure.name, figure.help, None, figure.kind)?;
            match figure.label {
                Some(label) => {
                    for (value_label, value) in &figure.samples {
                        let set = [(label, *value_label)];
                        figure.encode_sample(metric.encode_family(&set)?, *value)?;
                    }
                }
                None => {
                    if let Some((_, value)) = figure.samples.first() {
                        figure.encode_sample(metric, *value)?;
                    }
                }
            }
        }
        Ok(())
    }
}

fn refresh_figures(refresher: &Refresher, out: &mut Vec<Figure>) {
    let m = refresher.metrics();
    out.extend([
        Figure::counter(
            "grantry_refreshes_started",
            "Refreshes this process started at a token endpoint",
            &m.started,
        ),
        Figure::counter(
            "grantry_refreshes_succeeded",
            "Refreshes that stored a new token pair",
            &m.succeeded,
        ),
        Figure::counter(
            "grantry_refresh_waiters_served",
            "Callers that needed a refresh and were served by another caller's refresh",
            &m.waiters_served,
        ),
        Figure::counter(
            "grantry_keep_alive_refreshes",
            "Idle grants refreshed before their inactivity expiry",
            &m.keep_alive,
        ),
        Figure::labelled_counter(
            "grantry_refreshes_failed",
            "Refreshes that failed, by reason",
            Some("reason"),
            [
                ("invalid_grant", &m.failed_invalid_grant),
                ("transient", &m.failed_transient),
                ("rejected", &m.failed_rejected),
                ("store", &m.failed_store),
            ],
        ),
    ]);
}

fn maintenance_figures(m: &MaintenanceMetrics, out: &mut Vec<Figure>) {
    out.extend([
        Figure::labelled_counter(
            "grantry_maintenance_passes",
            "Maintenance passes of this process, by result (skipped: another replica held the pass lease)",
            Some("result"),
            [
                ("completed", &m.completed),
                ("skipped", &m.skipped),
                ("failed", &m.failed),
            ],
        ),
        Figure::counter(
            "grantry_maintenance_expired",
            "Grants marked needs_reauth by maintenance for passing their absolute expiry",
            &m.expired,
        ),
        Figure::counter(
            "grantry_maintenance_keep_alive_failures",
            "Keep-alive refreshes of maintenance passes that failed",
            &m.keep_alive_failures,
        ),
        Figure::counter(
            "grantry_maintenance_states_purged",
            "Expired OAuth states deleted by maintenance",
            &m.states_purged,
        ),
        Figure::gauge(
            "grantry_maintenance_last_pass_duration_seconds",
            "Duration of this process's last completed maintenance pass",
            m.last_duration_micros.load(Ordering::Relaxed) as f64 / 1e6,
        ),
        Figure::gauge(
            "grantry_maintenance_last_pass_timestamp_seconds",
            "When this process's last completed maintenance pass ended, Unix time (0: none yet)",
            m.last_completed_at.load(Ordering::Relaxed) as f64,
        ),
    ]);
}

async fn webhook_figures(hooks: &Webhooks, up: bool, out: &mut Vec<Figure>) {
    let m = hooks.metrics();
    out.extend([
        Figure::labelled_counter(
            "grantry_webhook_attempts",
            "Webhook delivery attempts of this process, by result",
            Some("result"),
            [("delivered", &m.delivered), ("failed", &m.failed_attempts)],
        ),
        Figure::counter(
            "grantry_webhook_deliveries_failed",
            "Webhook deliveries this process gave up after the retry window",
            &m.given_up,
        ),
    ]);
    if !up {
        return;
    }
    match hooks.outbox().pending().await {
        Ok(stats) => {
            let age = stats.oldest.map_or(0.0, |at| {
                (chrono::Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0
            });
            out.extend([
                Figure::gauge(
                    "grantry_webhook_deliveries_pending",
                    "Webhook deliveries waiting for an attempt (all replicas)",
                    stats.pending as f64,
                ),
                Figure::gauge(
                    "grantry_webhook_oldest_pending_age_seconds",
                    "Age of the oldest pending webhook delivery (0: none)",
                    age,
                ),
            ]);
        }
        Err(e) => tracing::warn!(error = %e, "metrics: pending webhook deliveries unavailable"),
    }
}

/// The connections gauge: one sample per provider and status.
#[derive(Debug)]
struct Connections(Counts);

impl Collector for Connections {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut metric = encoder.encode_descriptor(
            "grantry_connections",
            "Connections by provider and status (counted at most once per GRANTRY_METRICS_COUNTS_TTL)",
            None,
            MetricType::Gauge,
        )?;
        for (provider, status, n) in &self.0 {
            let set = [("provider", provider.as_str()), ("status", status.as_str())];
            ConstGauge::new(i64::try_from(*n).unwrap_or(i64::MAX))
                .encode(metric.encode_family(&set)?)?;
        }
        Ok(())
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
    let mut figures = Vec::with_capacity(24);
    refresh_figures(&source.refresher, &mut figures);
    maintenance_figures(&source.maintenance, &mut figures);
    let up = source.store.ping().await.is_ok();
    figures.push(Figure::gauge(
        "grantry_database_up",
        "Whether the database answered this scrape",
        f64::from(u8::from(up)),
    ));
    if let Some(hooks) = &source.webhooks {
        webhook_figures(hooks, up, &mut figures).await;
    }
    let counts = if up {
        source.counts.get(source.store.as_ref()).await
    } else {
        Err(StoreError::Database("the database does not answer".into()))
    };
    let counts = counts.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "metrics: connection counts unavailable");
        Vec::new()
    });
    let mut registry = Registry::default();
    source.telemetry.register(&mut registry);
    registry.register_collector(Box::new(Scrape(figures)));
    registry.register_collector(Box::new(Connections(counts)));
    let mut out = String::with_capacity(8192);
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry) {
        return ApiError::internal(&e).into_response();
    }
    (
        [(
            CONTENT_TYPE,
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )],
        out,
    )
        .into_response()
}
