//! Errors of grantry-server.

use grantry_core::ConfigError;
use grantry_core::error::StoreError;
use thiserror::Error;

pub use grantry_core::ApiError;

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
    Core(#[from] grantry_core::error::Error),
    /// The listener could not be opened or failed.
    #[error("cannot serve on {addr}: {source}")]
    Io {
        /// The listen address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
}
