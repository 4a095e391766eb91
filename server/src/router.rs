//! The axum router: health probes, `/metrics`, `/openapi.json`, `/api/v1/providers`, every
//! enabled provider's routes and the settings page, behind the request layers (request id,
//! sensitive headers, a span and a log line per request, the latency histogram).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header::{AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use grantry_core::ApiError;
use grantry_core::telemetry::{Telemetry, method_label, with_request_id};
use tower::ServiceBuilder;
use tower::util::MapRequestLayer;
use tower_http::request_id::PropagateRequestIdLayer;
use tower_http::sensitive_headers::{
    SetSensitiveRequestHeadersLayer, SetSensitiveResponseHeadersLayer,
};
use tower_http::trace::TraceLayer;

use crate::app::AppState;
use crate::routes::provider_router;

/// The header that carries a request's id, taken from the client when well formed.
pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The complete router: health probes, `/api/v1/providers` and every enabled provider's routes.
pub fn router(state: AppState) -> Router {
    let mut app = Router::new()
        .route("/healthz", get(crate::top::healthz))
        .route("/readyz", get(crate::top::readyz))
        .route("/metrics", get(crate::metrics::render))
        .route("/openapi.json", get(crate::openapi::serve))
        .route("/api/v1/providers", get(crate::top::providers))
        .with_state(state.clone());
    if state.webhooks().is_some() {
        app = app.nest("/api/v1/webhooks", crate::webhooks::router(state.clone()));
    }
    for provider in state.providers() {
        app = app.nest(
            &format!("/api/v1/{}", provider.id()),
            provider_router(state.clone(), provider.clone()),
        );
    }
    let sensitive: Arc<[HeaderName]> = Arc::new([AUTHORIZATION, PROXY_AUTHORIZATION, COOKIE]);
    app.merge(crate::ui::router()).fallback(not_found).layer(
        ServiceBuilder::new()
            .layer(SetSensitiveRequestHeadersLayer::from_shared(sensitive))
            .layer(SetSensitiveResponseHeadersLayer::new([SET_COOKIE]))
            .layer(MapRequestLayer::new(with_request_id_header))
            .layer(PropagateRequestIdLayer::new(REQUEST_ID))
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(request_span)
                    .on_request(())
                    .on_response(log_response)
                    .on_failure(()),
            )
            .layer(middleware::from_fn_with_state(
                state.telemetry().clone(),
                observe,
            )),
    )
}

/// Whether a client's `x-request-id` is kept: 1 to 64 characters of letters, digits, `-`, `_`,
/// `.` and `:`.
fn usable_request_id(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    (1..=64).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// The request's id: the client's when usable, else a new UUID written into `headers`.
pub(crate) fn ensure_request_id(headers: &mut HeaderMap) -> HeaderValue {
    if let Some(value) = headers.get(&REQUEST_ID).filter(|v| usable_request_id(v)) {
        return value.clone();
    }
    let fresh = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
    headers.insert(REQUEST_ID, fresh.clone());
    fresh
}

/// The request with its id in `x-request-id` (see [`ensure_request_id`]).
fn with_request_id_header(mut request: Request) -> Request {
    ensure_request_id(request.headers_mut());
    request
}

/// The span of one request: method, route template, logged path and request id.
fn request_span(request: &Request) -> tracing::Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    let request_id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let span = tracing::info_span!(
        "request",
        otel.name = format!("{} {route}", method_label(request.method())),
        otel.kind = "server",
        method = %request.method(),
        route,
        path = logged_path(request),
        request_id,
        status = tracing::field::Empty,
    );
    crate::logging::adopt_remote_parent(&span, request.headers());
    span
}

/// The request's log line (target `grantry::http`; its span adds method, path and request id).
fn log_response(response: &Response, latency: Duration, _span: &tracing::Span) {
    tracing::info!(
        target: "grantry::http",
        status = response.status().as_u16(),
        ms = latency.as_secs_f64() * 1000.0,
        "request"
    );
}

/// A request being answered; dropped unanswered (the request timeout, a client gone), it is
/// recorded as `cancelled`.
struct Answering {
    telemetry: Telemetry,
    route: Option<MatchedPath>,
    method: axum::http::Method,
    started: Instant,
    answered: bool,
}

impl Answering {
    fn route(&self) -> &str {
        self.route.as_ref().map_or("unmatched", MatchedPath::as_str)
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        if !self.answered {
            self.telemetry.observe_http_cancelled(
                self.route(),
                &self.method,
                self.started.elapsed(),
            );
        }
    }
}

/// Answers the request as its request id (error bodies carry it) and records its latency.
async fn observe(State(telemetry): State<Telemetry>, request: Request, next: Next) -> Response {
    let mut answering = Answering {
        telemetry,
        route: request.extensions().get::<MatchedPath>().cloned(),
        method: request.method().clone(),
        started: Instant::now(),
        answered: false,
    };
    let id = request.headers().get(&REQUEST_ID).cloned();
    let response = match id {
        Some(id) => with_request_id(id, next.run(request)).await,
        None => next.run(request).await,
    };
    let status = response.status().as_u16();
    tracing::Span::current().record("status", status);
    answering.answered = true;
    answering.telemetry.observe_http(
        answering.route(),
        &answering.method,
        status,
        answering.started.elapsed(),
    );
    response
}

/// The path a request is logged under: the route's template when it has a `{secret}` segment
/// (the path secret of a webhook callback never reaches the logs), the request's path otherwise.
fn logged_path(request: &Request) -> String {
    match request.extensions().get::<MatchedPath>() {
        Some(matched) if matched.as_str().contains("{secret}") => matched.as_str().to_owned(),
        _ => request.uri().path().to_owned(),
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}
