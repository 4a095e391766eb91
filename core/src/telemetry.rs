//! What grantry measures about its own work: latency histograms of HTTP requests, upstream
//! calls, refreshes and maintenance passes (one [`Telemetry`] per application, registered in its
//! Prometheus registry), the request id of the request in progress, and the hook that carries the
//! trace context into upstream requests.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::error::ProviderError;

/// Bucket bounds in seconds for requests and upstream calls: 1 ms to 30 s.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Bucket bounds in seconds for maintenance passes: 10 ms to 30 min.
const PASS_BUCKETS: [f64; 12] = [
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

fn pass_histogram() -> Histogram {
    Histogram::new(PASS_BUCKETS)
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Labels of an HTTP request: the route's template (never the raw path), the method and the
/// status class (`2xx` …).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    method: &'static str,
    status: &'static str,
}

/// Labels of an upstream call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    provider: String,
    operation: &'static str,
    outcome: &'static str,
}

/// Labels of a refresh run under the lease.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefreshLabels {
    provider: String,
    outcome: &'static str,
}

/// Labels of a caller's wait for a fresh token.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WaitLabels {
    provider: String,
    role: &'static str,
}

/// Labels of a provider's counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
}

/// Labels of a maintenance pass.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PassLabels {
    result: &'static str,
}

/// How a caller that found its token due got a fresh one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitRole {
    /// It refreshed the token itself.
    Winner,
    /// It was served by another caller's refresh in this process.
    Waiter,
    /// It was served by another replica's refresh (or found it done when it read again).
    CrossReplica,
    /// It got no fresh token (the refresh failed, the grant is dead, the wait timed out).
    Failed,
}

impl WaitRole {
    fn as_str(self) -> &'static str {
        match self {
            Self::Winner => "winner",
            Self::Waiter => "waiter",
            Self::CrossReplica => "cross_replica",
            Self::Failed => "failed",
        }
    }
}

/// The outcome label of an upstream call: `ok`, or why it failed.
pub fn outcome_of<T>(result: &Result<T, ProviderError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(ProviderError::Transient { .. }) => "transient",
        Err(ProviderError::InvalidGrant { .. }) => "invalid_grant",
        Err(_) => "rejected",
    }
}

/// The class of an HTTP status: `1xx` … `5xx`.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// A method label: the standard methods by name, anything else `other`.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The latency histograms of one application.
#[derive(Clone, Debug)]
pub struct Telemetry {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: Histograms<HttpLabels>,
    upstream: Histograms<UpstreamLabels>,
    refresh: Histograms<RefreshLabels>,
    wait: Histograms<WaitLabels>,
    passes: Histograms<PassLabels>,
    accounts_closed: Family<ProviderLabels, Counter>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                http: Family::new_with_constructor(latency_histogram),
                upstream: Family::new_with_constructor(latency_histogram),
                refresh: Family::new_with_constructor(latency_histogram),
                wait: Family::new_with_constructor(latency_histogram),
                passes: Family::new_with_constructor(pass_histogram),
                accounts_closed: Family::default(),
            }),
        }
    }
}

impl Telemetry {
    /// Adds these histograms to `registry` (once per registry).
    pub fn register(&self, registry: &mut Registry) {
        let inner = &self.inner;
        registry.register(
            "grantry_http_request_duration_seconds",
            "HTTP requests, by route template, method and status class (cancelled: dropped unanswered)",
            inner.http.clone(),
        );
        registry.register(
            "grantry_upstream_request_duration_seconds",
            "Calls to providers (token endpoint, account, content, proxy), by provider, operation and outcome",
            inner.upstream.clone(),
        );
        registry.register(
            "grantry_refresh_duration_seconds",
            "Refreshes this process ran under the lease, from winning it to the stored result, by provider and outcome",
            inner.refresh.clone(),
        );
        registry.register(
            "grantry_refresh_wait_seconds",
            "How long a caller that found its token due waited for a fresh one, by provider and role (winner, waiter, cross_replica, failed)",
            inner.wait.clone(),
        );
        registry.register(
            "grantry_maintenance_pass_duration_seconds",
            "Maintenance passes of this process, by result",
            inner.passes.clone(),
        );
        registry.register(
            "grantry_accounts_closed",
            "Connections deleted because their provider reported the upstream account closed (personal data reporting), by provider",
            inner.accounts_closed.clone(),
        );
    }

    /// Records an answered HTTP request.
    pub fn observe_http(
        &self,
        route: &str,
        method: &axum::http::Method,
        status: u16,
        took: Duration,
    ) {
        self.observe_http_as(route, method, status_class(status), took);
    }

    /// Records a request dropped before it was answered (the request timeout, or a client that
    /// went away), under the status label `cancelled`.
    pub fn observe_http_cancelled(&self, route: &str, method: &axum::http::Method, took: Duration) {
        self.observe_http_as(route, method, "cancelled", took);
    }

    fn observe_http_as(
        &self,
        route: &str,
        method: &axum::http::Method,
        status: &'static str,
        took: Duration,
    ) {
        self.inner
            .http
            .get_or_create(&HttpLabels {
                route: route.to_owned(),
                method: method_label(method),
                status,
            })
            .observe(took.as_secs_f64());
    }

    /// Records one call to a provider: `operation` is a stable name such as `refresh` or
    /// `search`, `outcome` `ok` or why it failed.
    pub fn observe_upstream(
        &self,
        provider: &str,
        operation: &'static str,
        outcome: &'static str,
        took: Duration,
    ) {
        self.inner
            .upstream
            .get_or_create(&UpstreamLabels {
                provider: provider.to_owned(),
                operation,
                outcome,
            })
            .observe(took.as_secs_f64());
    }

    /// Records a refresh run under the lease.
    pub fn observe_refresh(&self, provider: &str, outcome: &'static str, took: Duration) {
        self.inner
            .refresh
            .get_or_create(&RefreshLabels {
                provider: provider.to_owned(),
                outcome,
            })
            .observe(took.as_secs_f64());
    }

    /// Records how long a caller that found its token due waited for a fresh one.
    pub fn observe_wait(&self, provider: &str, role: WaitRole, took: Duration) {
        self.inner
            .wait
            .get_or_create(&WaitLabels {
                provider: provider.to_owned(),
                role: role.as_str(),
            })
            .observe(took.as_secs_f64());
    }

    /// Records a maintenance pass: `completed`, `skipped` or `failed`.
    pub fn observe_pass(&self, result: &'static str, took: Duration) {
        self.inner
            .passes
            .get_or_create(&PassLabels { result })
            .observe(took.as_secs_f64());
    }

    /// Counts `n` connections of `provider` deleted because the upstream account was closed.
    pub fn count_accounts_closed(&self, provider: &str, n: u64) {
        self.inner
            .accounts_closed
            .get_or_create(&ProviderLabels {
                provider: provider.to_owned(),
            })
            .inc_by(n);
    }

    /// Runs `call`, a call to `provider`, inside an `upstream` span and records it.
    pub async fn upstream<T>(
        &self,
        provider: &str,
        operation: &'static str,
        call: impl Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        self.upstream_with(provider, operation, call, outcome_of)
            .await
    }

    /// Like [`upstream`](Self::upstream) for a call of any result, `outcome` naming how it went.
    pub async fn upstream_with<T>(
        &self,
        provider: &str,
        operation: &'static str,
        call: impl Future<Output = T>,
        outcome: impl FnOnce(&T) -> &'static str,
    ) -> T {
        use tracing::Instrument;
        let span = upstream_span(provider, operation);
        let started = std::time::Instant::now();
        let result = call.instrument(span.clone()).await;
        let outcome = outcome(&result);
        span.record("outcome", outcome);
        self.observe_upstream(provider, operation, outcome, started.elapsed());
        result
    }
}

/// The span of one call to a provider; its `outcome` field is recorded when the call ends.
pub fn upstream_span(provider: &str, operation: &'static str) -> tracing::Span {
    tracing::info_span!(
        "upstream",
        otel.kind = "client",
        provider,
        operation,
        outcome = tracing::field::Empty
    )
}

/// The span of one piece of database work, `operation` naming it (`read_connection` …).
pub fn db_span(operation: &'static str) -> tracing::Span {
    tracing::info_span!("db", otel.kind = "client", db.operation = operation)
}

tokio::task_local! {
    static REQUEST_ID: HeaderValue;
}

/// Runs `work` as the request `id`: [`request_id`] returns it inside, and error bodies carry it.
pub async fn with_request_id<F: Future>(id: HeaderValue, work: F) -> F::Output {
    REQUEST_ID.scope(id, work).await
}

/// Runs `work` (synchronous) as the request `id`, like [`with_request_id`].
pub fn with_request_id_sync<R>(id: HeaderValue, work: impl FnOnce() -> R) -> R {
    REQUEST_ID.sync_scope(id, work)
}

/// The id of the request in progress on this task, if any.
pub fn request_id() -> Option<String> {
    REQUEST_ID
        .try_with(|id| id.to_str().ok().map(str::to_owned))
        .ok()
        .flatten()
}

/// Writes the trace context of the current span into an upstream request's headers.
pub type TraceInjector = fn(&mut HeaderMap);

static TRACE_INJECTOR: OnceLock<TraceInjector> = OnceLock::new();

/// Sets how the current trace context is written into upstream requests (W3C `traceparent`),
/// once per process; later calls are ignored. Without it, upstream requests carry none.
pub fn set_trace_injector(inject: TraceInjector) {
    let _ = TRACE_INJECTOR.set(inject);
}

/// The headers that carry the current trace context upstream (empty when tracing is off).
pub fn trace_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(inject) = TRACE_INJECTOR.get() {
        inject(&mut headers);
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_encode_with_their_labels() {
        let telemetry = Telemetry::default();
        let mut registry = Registry::default();
        telemetry.register(&mut registry);
        telemetry.observe_upstream("atlassian", "refresh", "ok", Duration::from_millis(20));
        telemetry.observe_http(
            "/api/v1/{p}",
            &axum::http::Method::GET,
            404,
            Duration::from_millis(1),
        );
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(text.contains(
            "grantry_upstream_request_duration_seconds_count{provider=\"atlassian\",operation=\"refresh\",outcome=\"ok\"} 1"
        ), "{text}");
        assert!(text.contains("status=\"4xx\""), "{text}");
        telemetry.count_accounts_closed("atlassian", 2);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(
            text.contains("grantry_accounts_closed_total{provider=\"atlassian\"} 2"),
            "{text}"
        );
    }

    #[test]
    fn classes_and_outcomes() {
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(503), "5xx");
        assert_eq!(status_class(99), "5xx");
        let refused: Result<(), ProviderError> = Err(ProviderError::Transient {
            reason: "x".into(),
            retry_after: None,
        });
        assert_eq!(outcome_of(&refused), "transient");
        assert_eq!(outcome_of(&Ok::<(), ProviderError>(())), "ok");
    }

    #[tokio::test]
    async fn the_request_id_is_seen_inside_its_scope_only() {
        assert!(request_id().is_none());
        let seen = with_request_id(HeaderValue::from_static("req-1"), async { request_id() }).await;
        assert_eq!(seen.as_deref(), Some("req-1"));
    }
}
