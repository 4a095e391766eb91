//! The settings page: plain HTML, CSS and JS shipped in the binary.

use axum::Router;

/// The routes of the settings page.
pub(crate) fn router() -> Router {
    Router::new()
}
