//! OpenID Connect discovery: `{issuer}/.well-known/openid-configuration`, read once at start-up.
//!
//! A factory's `build` is a plain function that may run inside or outside a tokio runtime, so the
//! document is fetched on a short-lived thread with its own current-thread runtime; the HTTP
//! client's timeout bounds the wait.

use std::time::Duration;

use serde::Deserialize;
use url::Url;

use grantry_protocol::http;

/// The members of the metadata document grantry uses.
#[derive(Deserialize)]
struct Metadata {
    issuer: String,
    authorization_endpoint: Option<String>,
    token_endpoint: Option<String>,
    revocation_endpoint: Option<String>,
    userinfo_endpoint: Option<String>,
    /// RFC 9207: the server sends `iss` with every authorization response.
    #[serde(default)]
    authorization_response_iss_parameter_supported: bool,
}

/// The setting discovery adds when the metadata advertises
/// `authorization_response_iss_parameter_supported`: callbacks must then carry `iss`.
pub(crate) const ISS_ADVERTISED: &str = "authorization_response_iss_parameter_supported";

/// The metadata URL of `issuer` (OpenID Connect Discovery 1.0 section 4).
fn metadata_url(issuer: &Url) -> Result<Url, String> {
    if issuer.query().is_some() || issuer.fragment().is_some() {
        return Err("an issuer has no query or fragment".into());
    }
    let mut url = issuer.clone();
    let path = format!(
        "{}/.well-known/openid-configuration",
        issuer.path().trim_end_matches('/')
    );
    url.set_path(&path);
    Ok(url)
}

/// Fetches the issuer's metadata and returns it as settings: the endpoint URLs and the issuer as
/// the document spells it.
pub(crate) fn discover(
    issuer: &Url,
    timeout: Duration,
) -> Result<Vec<(&'static str, String)>, String> {
    let url = metadata_url(issuer)?;
    let shown = url.to_string();
    let worker = std::thread::Builder::new()
        .name("grantry-oidc-discovery".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start a runtime for discovery: {e}"))?;
            runtime.block_on(async move {
                let http = http::client(timeout)
                    .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
                http::get_document(&http, url, "discovery")
                    .await
                    .map_err(|e| e.to_string())
            })
        })
        .map_err(|e| format!("cannot start the discovery thread: {e}"))?;
    let body = worker
        .join()
        .map_err(|_| "the discovery thread failed".to_owned())?
        .map_err(|e| format!("OpenID discovery at {shown} failed: {e}"))?;
    let meta: Metadata = serde_json::from_slice(&body)
        .map_err(|e| format!("{shown} is not an OpenID provider metadata document ({e})"))?;
    if meta.issuer.trim_end_matches('/') != issuer.as_str().trim_end_matches('/') {
        return Err(format!(
            "{shown} names the issuer `{}`, not this one",
            http::short(&meta.issuer)
        ));
    }
    tracing::debug!(issuer = %meta.issuer, "OpenID discovery done");
    let mut settings = vec![("issuer", meta.issuer)];
    if meta.authorization_response_iss_parameter_supported {
        settings.push((ISS_ADVERTISED, "true".to_owned()));
    }
    for (key, value) in [
        ("authorization_url", meta.authorization_endpoint),
        ("token_url", meta.token_endpoint),
        ("revocation_url", meta.revocation_endpoint),
        ("userinfo_url", meta.userinfo_endpoint),
    ] {
        if let Some(value) = value {
            settings.push((key, value));
        }
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_url_appends_the_well_known_path() {
        let at =
            |issuer: &str| metadata_url(&Url::parse(issuer).expect("url")).map(|u| u.to_string());
        assert_eq!(
            at("https://sso.example"),
            Ok("https://sso.example/.well-known/openid-configuration".into())
        );
        assert_eq!(
            at("https://login.example/tenant/v2.0/"),
            Ok("https://login.example/tenant/v2.0/.well-known/openid-configuration".into())
        );
        assert!(at("https://sso.example/?x=1").is_err());
    }

    #[test]
    fn an_unreachable_issuer_fails_within_the_timeout() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port");
        let issuer = Url::parse(&format!("http://{closed}")).expect("url");
        let err = discover(&issuer, Duration::from_secs(2)).expect_err("nothing listens");
        assert!(err.contains("discovery"), "{err}");
    }
}
