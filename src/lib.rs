//! grantry: an OAuth 2.0 connection framework. This facade re-exports the core, the server and
//! the provider crates enabled by features, so that linking `grantry` links (and registers) them.

pub use grantry_core as core;
pub use grantry_server as server;

/// The Atlassian provider (feature `atlassian`).
#[cfg(feature = "atlassian")]
pub use grantry_atlassian as atlassian;

/// Makes sure every provider crate enabled by a feature is linked, so its registration runs.
pub fn link_providers() {
    #[cfg(feature = "atlassian")]
    let _ = grantry_atlassian::ID;
}
