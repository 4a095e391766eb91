//! The ceiling of the load benchmark: a bare axum "hello" server, built with the same settings.
//!
//! `cargo run --release --example hello -- 127.0.0.1:8090`

use axum::Router;
use axum::routing::get;

/// The same allocator as the `grantry` binary, so the comparison is fair.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".to_owned());
    let app = Router::new().route("/hello", get(|| async { "hello" }));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    axum::serve(listener, app).await
}
