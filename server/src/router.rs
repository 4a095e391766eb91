//! The axum router: health probes, `/metrics`, `/openapi.json`, `/api/v1/providers`, every
//! enabled provider's routes and the settings page.

use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use grantry_core::ApiError;

use crate::app::AppState;
use crate::routes::provider_router;

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
    app.merge(crate::ui::router())
        .fallback(not_found)
        .layer(middleware::from_fn(log_request))
}

async fn log_request(request: Request, next: Next) -> Response {
    if !tracing::enabled!(target: "grantry::http", tracing::Level::INFO) {
        return next.run(request).await;
    }
    let method = request.method().clone();
    let path = logged_path(&request);
    let started = Instant::now();
    let response = next.run(request).await;
    tracing::info!(
        target: "grantry::http",
        %method,
        path,
        status = response.status().as_u16(),
        ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
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
