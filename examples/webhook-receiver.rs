//! A receiver of grantry's events: verifies each delivery's Standard Webhooks signature and
//! prints the event.
//!
//! ```sh
//! export GRANTRY_WEBHOOK_SECRET=whsec_$(head -c 32 /dev/urandom | base64)
//! cargo run --example webhook-receiver            # listens on 127.0.0.1:4000
//! # in another shell, the same secret:
//! GRANTRY_WEBHOOK_URL=http://127.0.0.1:4000/hooks cargo run -- serve
//! ```
//!
//! Verification uses the `standardwebhooks` crate of the Standard Webhooks project (the same
//! check exists for Python, Node.js, Go, …): the HMAC-SHA256 of `{webhook-id}.{webhook-timestamp}.{body}`
//! under the secret must match one of the `v1,` signatures, and the timestamp must be within five
//! minutes. A delivery that fails the check gets 401, so grantry retries it; deduplicate by
//! `webhook-id`, since delivery is at least once. `WEBHOOK_RECEIVER_BIND` moves the listener.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use standardwebhooks::Webhook;

async fn receive(
    State(verifier): State<Arc<Webhook>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    if let Err(e) = verifier.verify(&body, &headers) {
        eprintln!("refused a delivery: {e}");
        return StatusCode::UNAUTHORIZED;
    }
    let event: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(event) => event,
        Err(_) => return StatusCode::BAD_REQUEST,
    };
    println!(
        "{} {} {}",
        event["timestamp"].as_str().unwrap_or("?"),
        event["type"].as_str().unwrap_or("?"),
        event["data"]
    );
    StatusCode::NO_CONTENT
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secret = std::env::var("GRANTRY_WEBHOOK_SECRET")
        .map_err(|_| "set GRANTRY_WEBHOOK_SECRET to the secret grantry signs with (whsec_…)")?;
    // grantry may sign with several secrets during a rotation; any one of them verifies.
    let first = secret.split_whitespace().next().unwrap_or_default();
    let verifier = Arc::new(Webhook::new(first).map_err(|e| format!("bad secret: {e}"))?);
    let bind = std::env::var("WEBHOOK_RECEIVER_BIND").unwrap_or_else(|_| "127.0.0.1:4000".into());
    let listener = tokio::net::TcpListener::bind(&bind).await?;
    println!(
        "receiving grantry events at http://{}/hooks",
        listener.local_addr()?
    );
    let app = Router::new()
        .route("/hooks", post(receive))
        .with_state(verifier);
    axum::serve(listener, app).await?;
    Ok(())
}
