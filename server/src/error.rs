//! Errors of grantry-server: start-up failures and HTTP error responses.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use grantry_core::{ConfigError, StoreError};
use serde::Serialize;
use thiserror::Error;

/// Why the server could not start or a command failed.
#[derive(Debug, Error)]
pub enum ServerError {
    /// Bad or missing configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A core failure (keys, sealing).
    #[error(transparent)]
    Core(#[from] grantry_core::Error),
    /// The listener could not be opened or failed.
    #[error("cannot serve on {addr}: {source}")]
    Io {
        /// The listen address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// The JSON body of every error response: `{"error": code, "message": text}`.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    /// A stable machine-readable code.
    pub error: &'static str,
    /// A human explanation.
    pub message: String,
}

/// An HTTP error: status, code and message.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code.
    pub code: &'static str,
    /// Human message (never a secret).
    pub message: String,
}

impl ApiError {
    /// An error with the given status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "database failure");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the database is unavailable",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: self.code,
                message: self.message,
            }),
        )
            .into_response()
    }
}
