//! `GET /metrics`: refresh counters and connections by status in the Prometheus text format.

use std::fmt::Write;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use grantry_core::RefreshMetrics;

use crate::app::AppState;

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

/// Renders the metrics of this process and the connection counts of the database.
#[utoipa::path(get, path = "/metrics", tag = "probes", security(()),
    responses((status = 200, content_type = "text/plain", body = String)))]
pub(crate) async fn render(State(state): State<AppState>) -> impl IntoResponse {
    let m = state.refresher().metrics();
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
    let counts = state.store().connection_counts().await;
    family(
        &mut out,
        "grantry_database_up",
        "gauge",
        "Whether the database answered this scrape.",
    );
    let _ = writeln!(out, "grantry_database_up {}", u8::from(counts.is_ok()));
    family(
        &mut out,
        "grantry_connections",
        "gauge",
        "Connections by provider and status.",
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
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        out,
    )
}
