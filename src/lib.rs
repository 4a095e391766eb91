//! grantry: an OAuth 2.0 connection framework. This facade re-exports the core, the server and
//! the provider crates enabled by features, so that linking `grantry` links (and registers) them.

pub mod cli;
#[cfg(feature = "demo")]
mod demo;

pub use grantry_core as core;
pub use grantry_server as server;

/// The Atlassian provider (feature `atlassian`).
#[cfg(feature = "atlassian")]
pub use grantry_atlassian as atlassian;

/// The Jira and Confluence content routes of the Atlassian provider (feature `atlassian-content`).
#[cfg(feature = "atlassian-content")]
pub use grantry_atlassian_content as atlassian_content;

/// Jira and Confluence Data Center, provider kind `atlassian-dc` (feature `atlassian-dc`).
#[cfg(feature = "atlassian-dc")]
pub use grantry_atlassian_dc as atlassian_dc;

/// The generic OAuth 2.0 / OpenID Connect provider (feature `oauth2`).
#[cfg(feature = "oauth2")]
pub use grantry_oauth2 as oauth2;

/// Makes sure every provider crate enabled by a feature is linked, so its registration runs.
pub fn link_providers() {
    #[cfg(feature = "atlassian")]
    let _ = grantry_atlassian::ID;
    #[cfg(feature = "atlassian-content")]
    let _ = grantry_atlassian_content::ID;
    #[cfg(feature = "atlassian-dc")]
    let _ = grantry_atlassian_dc::FACTORY_ID;
    #[cfg(feature = "oauth2")]
    let _ = grantry_oauth2::FACTORY_ID;
}
