//! `GET /openapi.json`: the document of every mounted route, built from the handlers' annotations.

use axum::Json;
use axum::extract::State;
use grantry_core::{ErrorBody, Provider};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::app::AppState;
use crate::routes::GenericApi;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "metrics_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new("token"))),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "grantry", description = "OAuth 2.0 connections: connect accounts, keep their tokens encrypted and fresh."),
    paths(crate::top::healthz, crate::top::readyz, crate::metrics::render, serve, crate::top::providers),
    components(schemas(ErrorBody, crate::top::ProviderInfo, crate::top::StatusBody)),
    modifiers(&Security),
    security(("bearer" = []), ("cookie" = []))
)]
struct TopApi;

/// The whole document for the mounted providers, with the webhook routes when `webhooks`.
pub fn document(
    providers: &[std::sync::Arc<dyn Provider>],
    webhooks: bool,
) -> utoipa::openapi::OpenApi {
    let mut doc = TopApi::openapi();
    if webhooks {
        doc.merge(crate::webhooks::WebhooksApi::openapi());
    }
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    for provider in providers {
        let prefix = format!("/api/v1/{}", provider.id());
        let mut generic = GenericApi::openapi();
        if let Some(extra) = provider.openapi() {
            generic.merge(extra);
        }
        doc = doc.nest(prefix, generic);
    }
    doc
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "probes", security(()),
    responses((status = 200, content_type = "application/json", body = Object)))]
pub(crate) async fn serve(State(state): State<AppState>) -> Json<utoipa::openapi::OpenApi> {
    Json(document(state.providers(), state.webhooks().is_some()))
}
