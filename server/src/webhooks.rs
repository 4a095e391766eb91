//! Outgoing webhooks: Standard Webhooks signatures, the delivery worker that drains the outbox
//! at least once with retries, and the admin view of deliveries.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::StatusCode;
use axum::http::header::LINK;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use grantry_core::{ApiError, Principal};
use hmac::{Hmac, Mac};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::task::JoinSet;
use zeroize::Zeroizing;

use crate::app::AppState;
use crate::outbox::{Attempt, ClaimedDelivery, DeliveryStatus, DeliveryView, Outbox};
use crate::paging::{self, invalid};

/// Default time one delivery attempt may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The delay before the first retry; each further retry waits twice as long.
pub const FIRST_RETRY: Duration = Duration::from_secs(5);
/// The longest wait between two attempts.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);
/// How long a delivery is retried before it fails for good.
pub const RETRY_WINDOW: Duration = Duration::from_secs(86_400);
/// How long delivered and failed events are kept for the admin view.
pub const RETENTION: Duration = Duration::from_secs(7 * 86_400);
/// Deliveries one worker claims, and attempts, at once.
const CONCURRENCY: u32 = 16;
/// How long a claim outlives the attempt's timeout.
const CLAIM_MARGIN: Duration = Duration::from_secs(2);
/// How often an idle worker looks for due deliveries.
const POLL: Duration = Duration::from_millis(500);
/// Longest error text kept per attempt.
const MAX_ERROR_LEN: usize = 300;

/// A webhook signing secret (`whsec_<base64>`); never printed.
#[derive(Clone)]
pub struct WebhookSecret(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

impl WebhookSecret {
    /// Parses `whsec_<base64>` (the key is the decoded bytes, 24 to 64 of them).
    pub fn parse(text: &str) -> Result<Self, String> {
        let Some(encoded) = text.trim().strip_prefix("whsec_") else {
            return Err("a secret must look like whsec_<base64>".into());
        };
        let bytes = Zeroizing::new(
            STANDARD
                .decode(encoded)
                .map_err(|_| "the part after whsec_ is not base64".to_owned())?,
        );
        if !(24..=64).contains(&bytes.len()) {
            return Err(format!(
                "a secret must decode to 24 to 64 bytes, this one has {}",
                bytes.len()
            ));
        }
        Ok(Self(bytes))
    }

    /// The `v1,<base64>` signature of `{id}.{timestamp}.{body}` under this secret.
    pub fn sign(&self, id: &str, timestamp: i64, body: &str) -> String {
        let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(&self.0) {
            Ok(mac) => mac,
            // HMAC takes keys of any length.
            Err(_) => return String::new(),
        };
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body.as_bytes());
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The `webhook-signature` header: one `v1,<base64>` per secret, space-separated (rotation).
pub fn signature_header(secrets: &[WebhookSecret], id: &str, timestamp: i64, body: &str) -> String {
    secrets
        .iter()
        .map(|s| s.sign(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Where events go and how they are signed.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// The endpoint URLs; every event goes to each.
    pub endpoints: Vec<url::Url>,
    /// The signing secrets; each attempt carries one signature per secret.
    pub secrets: Vec<WebhookSecret>,
    /// Time one attempt may take.
    pub timeout: Duration,
    /// The wait before the first retry; each further one waits twice as long, up to an hour.
    pub first_retry: Duration,
    /// How long a delivery is retried before it fails for good.
    pub retry_window: Duration,
}

impl WebhookSettings {
    /// Settings for `endpoints` signed with `secrets`, with the default timeout and retries.
    pub fn new(endpoints: Vec<url::Url>, secrets: Vec<WebhookSecret>) -> Self {
        Self {
            endpoints,
            secrets,
            timeout: DEFAULT_TIMEOUT,
            first_retry: FIRST_RETRY,
            retry_window: RETRY_WINDOW,
        }
    }
}

/// The delay before the attempt after `attempts` failed ones: `first`, doubling, at most an
/// hour, less up to a fifth of jitter (so the first retry comes within `first`).
pub fn retry_delay(first: Duration, attempts: i64) -> Duration {
    let exponent = u32::try_from(attempts.saturating_sub(1).max(0)).unwrap_or(u32::MAX);
    let delay = first
        .checked_mul(2u32.saturating_pow(exponent.min(20)))
        .unwrap_or(MAX_RETRY_DELAY)
        .min(MAX_RETRY_DELAY);
    let jitter = rand::thread_rng().gen_range(0.0..0.2);
    delay.mul_f64(1.0 - jitter)
}

/// Counters of this process's deliveries, for `/metrics`.
#[derive(Debug, Default)]
pub struct WebhookMetrics {
    /// Attempts an endpoint answered 2xx.
    pub delivered: AtomicU64,
    /// Attempts that failed (answer not 2xx, timeout, network).
    pub failed_attempts: AtomicU64,
    /// Deliveries given up after the retry window.
    pub given_up: AtomicU64,
}

/// The delivery worker of one process.
#[derive(Debug)]
pub struct Webhooks {
    outbox: Outbox,
    settings: WebhookSettings,
    client: reqwest::Client,
    owner: String,
    metrics: WebhookMetrics,
    wake: tokio::sync::Notify,
}

impl Webhooks {
    /// A worker delivering the events of `outbox` as `settings` say.
    pub fn new(outbox: Outbox, settings: WebhookSettings) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("grantry/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the webhook client: {e}"))?;
        Ok(Self {
            outbox,
            settings,
            client,
            owner: format!("hooks-{}", uuid::Uuid::new_v4().simple()),
            metrics: WebhookMetrics::default(),
            wake: tokio::sync::Notify::new(),
        })
    }

    /// The outbox.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// This process's delivery counters.
    pub fn metrics(&self) -> &WebhookMetrics {
        &self.metrics
    }

    /// Asks the worker to look for due deliveries now instead of at its next poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Delivers until `stop` turns true: claims due deliveries in batches, attempts them a few
    /// at a time, records each outcome, and purges old events now and then.
    pub async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut last_purge: Option<tokio::time::Instant> = None;
        loop {
            if *stop.borrow() {
                return;
            }
            let worked = match self.drain_once().await {
                Ok(n) => n > 0,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook delivery pass failed");
                    false
                }
            };
            if last_purge.is_none_or(|at| at.elapsed() > Duration::from_secs(600)) {
                last_purge = Some(tokio::time::Instant::now());
                self.purge().await;
            }
            if worked {
                continue;
            }
            let recorded = Arc::clone(self.outbox.store().events_signal());
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                () = self.wake.notified() => {}
                () = recorded.notified() => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Claims one batch of due deliveries and attempts them; how many were attempted.
    pub async fn drain_once(self: &Arc<Self>) -> Result<usize, grantry_core::error::StoreError> {
        let claim = format!("{}-{}", self.owner, uuid::Uuid::new_v4().simple());
        // The claim outlives the attempts (all run at once, each bounded by the timeout), and
        // no longer: a worker killed mid-attempt holds its deliveries back only this long.
        let claim_for = self.settings.timeout + CLAIM_MARGIN;
        let due = self.outbox.claim(&claim, claim_for, CONCURRENCY).await?;
        let count = due.len();
        if count == 0 {
            return Ok(0);
        }
        let mut running = JoinSet::new();
        for delivery in due {
            let this = self.clone();
            running.spawn(async move { this.attempt(delivery).await });
        }
        let mut outcomes = Vec::with_capacity(count);
        while let Some(done) = running.join_next().await {
            if let Ok(outcome) = done {
                outcomes.push(outcome);
            }
        }
        match self.outbox.settle_all(&claim, &outcomes).await {
            Ok(settled) if settled < outcomes.len() => {
                self.count(&outcomes);
                tracing::debug!(
                    lapsed = outcomes.len() - settled,
                    "claims ran out before their outcomes were recorded"
                );
            }
            Ok(_) => self.count(&outcomes),
            Err(e) => {
                tracing::warn!(error = %e, "cannot record webhook outcomes; they will be attempted again")
            }
        }
        Ok(count)
    }

    /// Attempts one delivery; its outcome, to be settled with the rest of the batch.
    async fn attempt(&self, delivery: ClaimedDelivery) -> (i64, DateTime<Utc>, Attempt) {
        let now = Utc::now();
        // An endpoint removed from the configuration gets nothing more, pending events included.
        if !self
            .settings
            .endpoints
            .iter()
            .any(|e| e.as_str() == delivery.endpoint)
        {
            let outcome = Attempt::Failed {
                status: None,
                error: "the endpoint is no longer configured".into(),
                next_at: now,
                give_up: true,
            };
            return (delivery.id, now, outcome);
        }
        let timestamp = now.timestamp();
        let signature = signature_header(
            &self.settings.secrets,
            &delivery.event_id,
            timestamp,
            &delivery.body,
        );
        let answer = self
            .client
            .post(&delivery.endpoint)
            .header("content-type", "application/json")
            .header("webhook-id", &delivery.event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(delivery.body.clone())
            .send()
            .await;
        let outcome = match answer {
            Ok(response) if response.status().is_success() => Attempt::Delivered {
                status: response.status().as_u16(),
            },
            failed => {
                // Errors never name the URL: an endpoint's query may hold the receiver's token.
                let (status, error) = match failed {
                    Ok(response) => (
                        Some(response.status().as_u16()),
                        format!("the endpoint answered {}", response.status()),
                    ),
                    Err(e) if e.is_timeout() => {
                        (None, "the endpoint did not answer in time".into())
                    }
                    Err(e) if e.is_connect() => (None, "cannot connect to the endpoint".into()),
                    Err(e) => (
                        None,
                        shorten(&format!("request failed: {}", e.without_url())),
                    ),
                };
                let give_up = now
                    .signed_duration_since(delivery.window_start)
                    .to_std()
                    .is_ok_and(|age| age >= self.settings.retry_window);
                let host = endpoint_host(&delivery.endpoint);
                if give_up {
                    tracing::warn!(event = %delivery.event_id, endpoint = %host, attempts = delivery.attempts + 1, error, "webhook delivery failed for good");
                } else {
                    tracing::debug!(event = %delivery.event_id, endpoint = %host, error, "webhook delivery failed; will retry");
                }
                let delay = chrono::Duration::from_std(retry_delay(
                    self.settings.first_retry,
                    delivery.attempts + 1,
                ))
                .unwrap_or_else(|_| chrono::Duration::seconds(5));
                Attempt::Failed {
                    status,
                    error,
                    next_at: Utc::now() + delay,
                    give_up,
                }
            }
        };
        (delivery.id, Utc::now(), outcome)
    }

    /// Counts the outcomes a batch recorded.
    fn count(&self, outcomes: &[(i64, DateTime<Utc>, Attempt)]) {
        for (_, _, attempt) in outcomes {
            match attempt {
                Attempt::Delivered { .. } => {
                    self.metrics.delivered.fetch_add(1, Ordering::Relaxed);
                }
                Attempt::Failed { give_up, .. } => {
                    self.metrics.failed_attempts.fetch_add(1, Ordering::Relaxed);
                    if *give_up {
                        self.metrics.given_up.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    async fn purge(&self) {
        let cutoff = Utc::now() - chrono::Duration::from_std(RETENTION).unwrap_or_default();
        loop {
            match self.outbox.purge(cutoff, 500).await {
                Ok(500) => continue,
                Ok(_) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot purge old events");
                    return;
                }
            }
        }
    }
}

/// The scheme, host and port of an endpoint, for logs (its path and query may hold secrets).
fn endpoint_host(endpoint: &str) -> String {
    url::Url::parse(endpoint)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_else(|_| "<endpoint>".into())
}

fn shorten(text: &str) -> String {
    if text.len() <= MAX_ERROR_LEN {
        return text.to_owned();
    }
    let mut end = MAX_ERROR_LEN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The admin routes of deliveries, mounted at `/api/v1/webhooks`.
pub(crate) fn router(state: AppState) -> axum::Router {
    axum::Router::new()
        .route("/deliveries", get(list))
        .route("/deliveries/{id}/retry", post(retry))
        .with_state(state)
}

/// The query of the deliveries list.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeliveriesQuery {
    /// Most deliveries in the page: 1 to 1000, default 100.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// Only deliveries in this state: `pending`, `delivered` or `failed`.
    status: Option<String>,
    /// Where the page starts: copied from the previous page's `Link: rel="next"` URL.
    cursor: Option<String>,
}

/// One delivery of an event to an endpoint.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct DeliveryJson {
    id: i64,
    event_id: String,
    event_type: String,
    endpoint: String,
    /// `pending`, `delivered` or `failed`.
    status: &'static str,
    attempts: i64,
    next_attempt_at: Option<DateTime<Utc>>,
    last_attempt_at: Option<DateTime<Utc>>,
    /// The HTTP status of the last answer.
    last_status: Option<i64>,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    delivered_at: Option<DateTime<Utc>>,
}

impl From<DeliveryView> for DeliveryJson {
    fn from(v: DeliveryView) -> Self {
        Self {
            id: v.id,
            event_id: v.event_id,
            event_type: v.event_type,
            endpoint: v.endpoint,
            status: v.status.as_str(),
            attempts: v.attempts,
            next_attempt_at: v.next_attempt_at,
            last_attempt_at: v.last_attempt_at,
            last_status: v.last_status,
            last_error: v.last_error,
            created_at: v.created_at,
            delivered_at: v.delivered_at,
        }
    }
}

fn not_configured() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no webhook endpoint is configured (GRANTRY_WEBHOOK_URL)",
    )
}

/// Lists event deliveries, newest first (admin).
#[utoipa::path(get, path = "/api/v1/webhooks/deliveries", tag = "webhooks",
    params(DeliveriesQuery),
    responses(
        (status = 200, body = [DeliveryJson], description = "a page of deliveries; the next in `Link: <…>; rel=\"next\"`"),
        (status = 400, body = grantry_core::ErrorBody, description = "`invalid_request`"),
        (status = 401, body = grantry_core::ErrorBody, description = "`unauthorized`"),
        (status = 403, body = grantry_core::ErrorBody, description = "`forbidden`"),
    ))]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    OriginalUri(uri): OriginalUri,
    query: Result<Query<DeliveriesQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    let Query(query) = query.map_err(|r| invalid(r.body_text()))?;
    let hooks = state.webhooks().ok_or_else(not_configured)?;
    let limit = paging::parse_limit(query.limit.as_deref())?;
    let status = match query.status.as_deref() {
        None | Some("") => None,
        Some(text) => Some(
            DeliveryStatus::parse(text)
                .ok_or_else(|| invalid("status must be pending, delivered or failed"))?,
        ),
    };
    let before = paging::parse_id_cursor(query.cursor.as_deref())?;
    let mut rows = hooks
        .outbox()
        .deliveries(status, before, limit + 1)
        .await
        .map_err(|e| ApiError::database(&e))?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let last = rows.last().map(|r| r.id);
    let body: Vec<DeliveryJson> = rows.into_iter().map(DeliveryJson::from).collect();
    let mut response = Json(&body).into_response();
    if more && let Some(last) = last {
        let (limit, cursor) = (limit.to_string(), last.to_string());
        let mut pairs = vec![("limit", limit.as_str()), ("cursor", cursor.as_str())];
        if let Some(status) = status {
            pairs.push(("status", status.as_str()));
        }
        let link = paging::next_link(uri.path(), &pairs)?;
        response.headers_mut().insert(LINK, link);
    }
    Ok(response)
}

/// Attempts a delivery again now, whatever its state (admin).
#[utoipa::path(post, path = "/api/v1/webhooks/deliveries/{id}/retry", tag = "webhooks",
    params(("id" = i64, Path, description = "the delivery id")),
    responses(
        (status = 202, description = "queued for an attempt now"),
        (status = 401, body = grantry_core::ErrorBody, description = "`unauthorized`"),
        (status = 403, body = grantry_core::ErrorBody, description = "`forbidden` or `cross_site_request`"),
        (status = 404, body = grantry_core::ErrorBody, description = "`not_found`"),
    ))]
async fn retry(
    State(state): State<AppState>,
    principal: Principal,
    id: Result<Path<i64>, axum::extract::rejection::PathRejection>,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    let hooks = state.webhooks().ok_or_else(not_configured)?;
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such delivery");
    let Ok(Path(id)) = id else {
        return Err(not_found());
    };
    if !hooks
        .outbox()
        .retry(id, Utc::now())
        .await
        .map_err(|e| ApiError::database(&e))?
    {
        return Err(not_found());
    }
    hooks.wake();
    Ok(StatusCode::ACCEPTED.into_response())
}

/// The OpenAPI document of the webhook routes.
#[derive(utoipa::OpenApi)]
#[openapi(paths(list, retry), components(schemas(DeliveryJson)))]
pub(crate) struct WebhooksApi;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_matches_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification.
        let secret =
            WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
        let sig = secret.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn secrets_are_checked_and_never_printed() {
        assert!(WebhookSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(WebhookSecret::parse("whsec_!!!").is_err());
        assert!(WebhookSecret::parse("whsec_c2hvcnQ=").is_err());
        let secret =
            WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
        assert_eq!(format!("{secret:?}"), "WebhookSecret(<redacted>)");
    }

    #[test]
    fn several_secrets_sign_once_each() {
        let a = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("a");
        let b = WebhookSecret::parse(&format!("whsec_{}", STANDARD.encode([7u8; 32]))).expect("b");
        let header = signature_header(&[a, b], "msg_1", 1, "{}");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.starts_with("v1,")));
        assert_ne!(parts[0], parts[1]);
    }

    #[test]
    fn retries_start_within_five_seconds_and_double_up_to_an_hour() {
        let first = retry_delay(FIRST_RETRY, 1);
        assert!(first <= FIRST_RETRY && first >= FIRST_RETRY.mul_f64(0.8));
        let second = retry_delay(FIRST_RETRY, 2);
        assert!(second <= FIRST_RETRY * 2 && second >= (FIRST_RETRY * 2).mul_f64(0.8));
        assert!(retry_delay(FIRST_RETRY, 40) <= MAX_RETRY_DELAY);
        assert!(retry_delay(FIRST_RETRY, 40) >= MAX_RETRY_DELAY.mul_f64(0.8));
    }
}
