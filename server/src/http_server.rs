//! Serving a router over TCP with limits, so that slow or silent clients cannot hold the server:
//! a time to send the first request's headers, a time per request, a time a kept-alive
//! connection may wait for its next request, and a cap on connections served at once.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use grantry_core::ApiError;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::Service;

/// Default time a new connection has to send its first request's headers, seconds.
pub const DEFAULT_HEADER_READ_TIMEOUT_SECS: u64 = 10;
/// Default time one request may take, seconds.
pub const DEFAULT_REQUEST_TIMEOUT_SECS: u64 = 60;
/// Default time a kept-alive connection may wait for its next request, seconds.
pub const DEFAULT_KEEP_ALIVE_TIMEOUT_SECS: u64 = 75;
/// Default cap on connections served at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// The timeouts and limits of the HTTP listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// How long a new connection may take to deliver its first request's headers
    /// (`GRANTRY_HEADER_READ_TIMEOUT`); then it is closed.
    pub header_read_timeout: Duration,
    /// How long one request may take, reading its body included (`GRANTRY_REQUEST_TIMEOUT`);
    /// then it is answered 408 `request_timeout`.
    pub request_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request's headers
    /// (`GRANTRY_KEEP_ALIVE_TIMEOUT`); zero closes every connection after one response.
    pub keep_alive_timeout: Duration,
    /// How many connections are served at once (`GRANTRY_MAX_CONNECTIONS`); more wait in the
    /// listen backlog until one closes.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(DEFAULT_HEADER_READ_TIMEOUT_SECS),
            request_timeout: Duration::from_secs(DEFAULT_REQUEST_TIMEOUT_SECS),
            keep_alive_timeout: Duration::from_secs(DEFAULT_KEEP_ALIVE_TIMEOUT_SECS),
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Whether an accept error concerns only the one connection (the listener is fine).
fn connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// Serves `app` (HTTP/1.1) on `listener` within `limits` until `shutdown` completes; then stops
/// accepting, lets requests in flight finish and closes idle connections.
pub async fn serve_router(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new());
    // hyper's header timer runs whenever a connection waits for a request head: on a kept-alive
    // connection that is the idle wait plus the head. The first request is bounded below.
    if limits.keep_alive_timeout.is_zero() {
        builder
            .keep_alive(false)
            .header_read_timeout(limits.header_read_timeout);
    } else {
        builder.header_read_timeout(limits.keep_alive_timeout);
    }
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) if connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let started = Arc::new(AtomicBool::new(false));
        let service = {
            let started = started.clone();
            let app = app.clone();
            let request_timeout = limits.request_timeout;
            hyper::service::service_fn(move |mut request: Request<Incoming>| {
                started.store(true, Ordering::Relaxed);
                // The id is fixed here, so that a request cut short still answers with it.
                let id = crate::router::ensure_request_id(request.headers_mut());
                let response = app.clone().call(request);
                async move {
                    Ok::<_, std::convert::Infallible>(
                        match tokio::time::timeout(request_timeout, response).await {
                            Ok(Ok(response)) => response,
                            Ok(Err(never)) => match never {},
                            Err(_) => timed_out(request_timeout, id),
                        },
                    )
                }
            })
        };
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        let header_read_timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            tokio::pin!(connection);
            tokio::select! {
                done = connection.as_mut() => {
                    if let Err(e) = done {
                        tracing::debug!(error = %e, "connection ended");
                    }
                    return;
                }
                () = tokio::time::sleep(header_read_timeout) => {}
            }
            if !started.load(Ordering::Relaxed) {
                tracing::debug!("closing a connection that sent no request in time");
                return;
            }
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// The 408 answer of a request that took longer than `limit`, carrying its request `id`.
fn timed_out(limit: Duration, id: HeaderValue) -> Response {
    let error = ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
        format!("the request took longer than {} s", limit.as_secs()),
    );
    let mut response =
        grantry_core::telemetry::with_request_id_sync(id.clone(), || error.into_response());
    response.headers_mut().insert(crate::router::REQUEST_ID, id);
    response
}
