//! Calls to Atlassian's API gateway with the user's token: URL building, bounded waits on
//! rate limits, capped bodies, and the errors content routes answer with.

use std::fmt;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use grantry_core::provider::env_prefix;
use grantry_core::telemetry::{Telemetry, trace_headers};
use grantry_core::{AccessToken, ApiError, Resource};
use reqwest::RequestBuilder;
use serde::de::DeserializeOwned;
use url::Url;

use grantry_protocol::http::{read_capped_to, retry_after};

/// Retries after a 429 before giving up and answering 429 ourselves.
pub(crate) const MAX_RETRIES: u32 = 2;
/// Longest `Retry-After` waited out; a longer one is answered at once.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(5);
/// The wait when a 429 carries no usable `Retry-After`.
const DEFAULT_WAIT: Duration = Duration::from_secs(1);
/// Largest JSON body read from a content call.
pub(crate) const MAX_JSON_BODY: usize = 8 * 1024 * 1024;

/// The two Atlassian products behind the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Product {
    /// Jira (`/ex/jira/{cloudid}/…`).
    Jira,
    /// Confluence (`/ex/confluence/{cloudid}/…`).
    Confluence,
}

impl Product {
    /// The path segment and scope word: `jira`, `confluence`.
    pub(crate) fn id(self) -> &'static str {
        match self {
            Self::Jira => "jira",
            Self::Confluence => "confluence",
        }
    }

    /// The display name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Jira => "Jira",
            Self::Confluence => "Confluence",
        }
    }

    /// The product a path segment names.
    pub(crate) fn parse(segment: &str) -> Option<Self> {
        match segment {
            "jira" => Some(Self::Jira),
            "confluence" => Some(Self::Confluence),
            _ => None,
        }
    }

    /// Whether the grant reaches this product on `site`: one of its scopes names the product
    /// (`read:jira-work`, `read:confluence-content.all`, `read:page:confluence`, …).
    pub(crate) fn on(self, site: &Resource) -> bool {
        site.scopes.iter().any(|scope| {
            scope
                .split([':', '-', '.', '_'])
                .any(|word| word.eq_ignore_ascii_case(self.id()))
        })
    }
}

/// One Atlassian operation a content route calls: its name in metrics and traces, and the
/// scope it needs (the classic one when Atlassian offers a classic scope).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Operation {
    /// The `operation` label of the upstream histogram.
    pub(crate) name: &'static str,
    /// The scope the grant must hold.
    pub(crate) scope: &'static str,
}

/// Jira's JQL search (`/rest/api/3/search/jql`).
pub(crate) const JIRA_SEARCH: Operation = Operation {
    name: "jira_search",
    scope: "read:jira-work",
};
/// Jira's project list (`/rest/api/3/project/search`).
pub(crate) const JIRA_PROJECTS: Operation = Operation {
    name: "jira_projects",
    scope: "read:jira-work",
};
/// One Jira issue (`/rest/api/3/issue/{key}`).
pub(crate) const JIRA_ISSUE: Operation = Operation {
    name: "jira_issue",
    scope: "read:jira-work",
};
/// An issue's comments (`/rest/api/3/issue/{key}/comment`).
pub(crate) const JIRA_COMMENTS: Operation = Operation {
    name: "jira_comments",
    scope: "read:jira-work",
};
/// Confluence's CQL search (`/wiki/rest/api/search`, v1).
pub(crate) const CONFLUENCE_SEARCH: Operation = Operation {
    name: "confluence_search",
    scope: "search:confluence",
};
/// Confluence's spaces (`/wiki/api/v2/spaces`), listed or looked up by key.
pub(crate) const CONFLUENCE_SPACES: Operation = Operation {
    name: "confluence_spaces",
    scope: "read:space:confluence",
};
/// One Confluence space (`/wiki/api/v2/spaces/{id}`).
pub(crate) const CONFLUENCE_SPACE: Operation = Operation {
    name: "confluence_space",
    scope: "read:space:confluence",
};
/// A space's pages (`/wiki/api/v2/spaces/{id}/pages`).
pub(crate) const CONFLUENCE_PAGES: Operation = Operation {
    name: "confluence_pages",
    scope: "read:page:confluence",
};
/// One Confluence page (`/wiki/api/v2/pages/{id}`).
pub(crate) const CONFLUENCE_PAGE: Operation = Operation {
    name: "confluence_page",
    scope: "read:page:confluence",
};

/// Why a content call failed; answered as a JSON error (no token is ever part of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ContentError {
    /// 400 `invalid_request`.
    BadRequest(String),
    /// 404 `unknown_site`: the site is not in the user's grant.
    UnknownSite(String),
    /// 403 `forbidden_site`: not a site of the grant, or not a product the site has.
    ForbiddenSite(String),
    /// 404 `not_found`: Atlassian has no such issue or page (or the grant cannot see it).
    NotFound(String),
    /// 400 `invalid_request`: Atlassian refused what the client passed through (a cursor it
    /// did not hand out, say).
    Refused(String),
    /// 403 `insufficient_scope`: Atlassian refused the operation because the grant lacks the
    /// scope it needs.
    InsufficientScope {
        /// What was being done.
        what: String,
        /// The scope the operation needs.
        scope: &'static str,
        /// The variable that sets the provider's scopes (`ATLASSIAN_OAUTH_SCOPE`).
        variable: String,
    },
    /// 429 `rate_limited` with `Retry-After`.
    RateLimited {
        /// What was being done.
        what: String,
        /// Seconds to wait.
        retry_after: u64,
    },
    /// 502 `upstream_unavailable`.
    Upstream(String),
    /// 500 `internal`: a fault of grantry itself.
    Internal(String),
}

impl fmt::Display for ContentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadRequest(m)
            | Self::Refused(m)
            | Self::UnknownSite(m)
            | Self::ForbiddenSite(m)
            | Self::NotFound(m)
            | Self::Upstream(m)
            | Self::Internal(m) => f.write_str(m),
            Self::RateLimited { what, retry_after } => write!(
                f,
                "{what}: Atlassian is rate limiting this grant; retry after {retry_after} s"
            ),
            Self::InsufficientScope {
                what,
                scope,
                variable,
            } => write!(
                f,
                "{what} needs the scope `{scope}`, which this grant lacks; add it to {variable} \
                 (and to the app in Atlassian's developer console), then connect again"
            ),
        }
    }
}

impl ContentError {
    /// The HTTP status answered.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::Refused(_) => StatusCode::BAD_REQUEST,
            Self::UnknownSite(_) | Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::ForbiddenSite(_) | Self::InsufficientScope { .. } => StatusCode::FORBIDDEN,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Upstream(_) => StatusCode::BAD_GATEWAY,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable error code answered.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) | Self::Refused(_) => "invalid_request",
            Self::UnknownSite(_) => "unknown_site",
            Self::ForbiddenSite(_) => "forbidden_site",
            Self::NotFound(_) => "not_found",
            Self::InsufficientScope { .. } => "insufficient_scope",
            Self::RateLimited { .. } => "rate_limited",
            Self::Upstream(_) => "upstream_unavailable",
            Self::Internal(_) => "internal",
        }
    }
}

impl IntoResponse for ContentError {
    fn into_response(self) -> Response {
        match &self {
            Self::Upstream(_) => tracing::warn!(error = %self, "atlassian content call failed"),
            Self::Internal(_) => tracing::error!(error = %self, "atlassian content route failed"),
            _ => {}
        }
        let retry_after = match &self {
            Self::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        };
        let mut response =
            ApiError::new(self.status(), self.code(), self.to_string()).into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// Runs CPU-bound work (a Markdown conversion of a large body) off the async workers.
pub(crate) async fn off_thread<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ContentError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| ContentError::Internal("the conversion to Markdown failed".into()))
}

/// Which Atlassian a gateway talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// Atlassian Cloud, through `{api}/ex/{product}/{cloudid}/…`.
    Cloud,
    /// A Data Center instance, at `{base_url}/…` (its context path kept).
    DataCenter,
}

/// The user's view of Atlassian: the HTTP client, the gateway URL (Cloud) or the instance's
/// base URL (Data Center), the user's token and where calls are recorded.
pub(crate) struct Gateway<'a> {
    pub(crate) http: &'a reqwest::Client,
    pub(crate) api: &'a Url,
    pub(crate) flavor: Flavor,
    pub(crate) token: &'a AccessToken,
    /// The provider's id, for the upstream histogram.
    pub(crate) provider: &'a str,
    pub(crate) telemetry: &'a Telemetry,
}

impl Gateway<'_> {
    /// `{api}/ex/{product}/{cloudid}/{segments…}` on Cloud, `{base_url}/{segments…}` on Data
    /// Center, each segment percent-encoded.
    pub(crate) fn url(
        &self,
        product: Product,
        site: &Resource,
        segments: &[&str],
    ) -> Result<Url, ContentError> {
        let mut url = self.api.clone();
        {
            let mut path = url.path_segments_mut().map_err(|()| {
                ContentError::Upstream("the Atlassian base URL cannot take a path".into())
            })?;
            path.pop_if_empty();
            if self.flavor == Flavor::Cloud {
                path.extend(["ex", product.id(), site.id.as_str()]);
            }
            path.extend(segments);
        }
        url.set_query(None);
        url.set_fragment(None);
        Ok(url)
    }

    /// Sends the request `build` makes (once per attempt) with the user's token; a 429 is
    /// waited out at most [`MAX_RETRIES`] times and never longer than [`MAX_WAIT`] at once.
    /// The last response comes back whatever its status (a 429 included). The call is one
    /// `upstream` span and one sample of the upstream histogram, labelled `operation`.
    pub(crate) async fn send(
        &self,
        operation: &'static str,
        what: &str,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<reqwest::Response, ContentError> {
        let outcome = |result: &Result<reqwest::Response, ContentError>| match result {
            Ok(response) if response.status() == StatusCode::TOO_MANY_REQUESTS => "rate_limited",
            Ok(response) if response.status().is_server_error() => "transient",
            Ok(response) if response.status().is_client_error() => "rejected",
            Ok(_) => "ok",
            Err(_) => "transient",
        };
        self.telemetry
            .upstream_with(
                self.provider,
                operation,
                self.send_retrying(what, build),
                outcome,
            )
            .await
    }

    async fn send_retrying(
        &self,
        what: &str,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<reqwest::Response, ContentError> {
        let mut retries = 0;
        loop {
            let response = build()
                .headers(trace_headers())
                .bearer_auth(self.token.secret())
                .send()
                .await
                .map_err(|e| ContentError::Upstream(format!("{what}: {}", send_failure(&e))))?;
            if response.status() != StatusCode::TOO_MANY_REQUESTS {
                return Ok(response);
            }
            let wait = retry_after(response.headers())
                .map(Duration::from_secs)
                .unwrap_or(DEFAULT_WAIT);
            if retries >= MAX_RETRIES || wait > MAX_WAIT {
                return Ok(response);
            }
            retries += 1;
            tracing::debug!(what, retries, ?wait, "atlassian rate limited; waiting");
            tokio::time::sleep(wait).await;
        }
    }

    /// Sends the request and reads a JSON answer; Atlassian's scope refusal (401 "scope does
    /// not match") becomes [`ContentError::InsufficientScope`] naming `operation`'s scope.
    pub(crate) async fn json<T: DeserializeOwned>(
        &self,
        operation: Operation,
        what: &str,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<T, ContentError> {
        let response = self.send(operation.name, what, build).await?;
        let status = response.status();
        let wait = retry_after(response.headers());
        let body = read_capped_to(response, what, MAX_JSON_BODY)
            .await
            .map_err(|e| ContentError::Upstream(e.to_string()))?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|_| {
                ContentError::Upstream(format!("{what}: Atlassian answered a malformed body"))
            });
        }
        Err(match status {
            StatusCode::TOO_MANY_REQUESTS => ContentError::RateLimited {
                what: what.to_owned(),
                retry_after: wait.unwrap_or(DEFAULT_WAIT.as_secs()).max(1),
            },
            StatusCode::BAD_REQUEST => ContentError::Refused(format!(
                "{what}: Atlassian refused the request as invalid (HTTP 400)"
            )),
            StatusCode::NOT_FOUND => {
                ContentError::NotFound(format!("{what}: not found (or this grant cannot see it)"))
            }
            StatusCode::UNAUTHORIZED if self.flavor == Flavor::Cloud && scope_refused(&body) => {
                ContentError::InsufficientScope {
                    what: what.to_owned(),
                    scope: operation.scope,
                    variable: format!("{}_OAUTH_SCOPE", env_prefix(self.provider)),
                }
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ContentError::Upstream(format!(
                "{what}: Atlassian refused the request (HTTP {}); the grant may lack a scope",
                status.as_u16()
            )),
            _ => ContentError::Upstream(format!(
                "{what}: Atlassian answered HTTP {}",
                status.as_u16()
            )),
        })
    }
}

/// Whether an error body is Atlassian Cloud's scope refusal (`{"code":401,"message":
/// "Unauthorized; scope does not match"}`).
fn scope_refused(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Refusal {
        message: String,
    }
    serde_json::from_slice::<Refusal>(body).is_ok_and(|r| {
        r.message
            .to_ascii_lowercase()
            .contains("scope does not match")
    })
}

fn send_failure(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "Atlassian did not answer in time"
    } else if e.is_connect() {
        "could not connect to Atlassian"
    } else {
        "the request to Atlassian failed"
    }
}

/// The site's http(s) URL with its path (a Data Center context path, say) ending in `/`, so
/// that relative links resolve under it.
pub(crate) fn site_root(site: &Resource) -> Option<Url> {
    let mut base = Url::parse(site.url.as_deref()?).ok()?;
    if !matches!(base.scheme(), "http" | "https") {
        return None;
    }
    if !base.path().ends_with('/') {
        let with_slash = format!("{}/", base.path());
        base.set_path(&with_slash);
    }
    Some(base)
}

/// A web link on the site: `site.url` (with its context path, a Data Center `/jira` say)
/// followed by an absolute `path`; never another host, never above the context path.
pub(crate) fn web_url(site: &Resource, path: &str) -> Option<String> {
    if !path.starts_with('/') || path.starts_with("//") || path.contains('\\') {
        return None;
    }
    let base = site_root(site)?;
    let url = base.join(path.trim_start_matches('/')).ok()?;
    (url.host_str() == base.host_str() && url.path().starts_with(base.path()))
        .then(|| url.to_string())
}

/// Atlassian's timestamps (`2024-06-20T10:15:30.000+0000`, RFC 3339) as RFC 3339 UTC.
pub(crate) fn timestamp(text: Option<&str>) -> Option<String> {
    let text = text?.trim();
    let parsed = chrono::DateTime::parse_from_rfc3339(text)
        .or_else(|_| chrono::DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .ok()?;
    Some(
        parsed
            .with_timezone(&chrono::Utc)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

/// Deserialises an id Atlassian sends as a string or a number.
pub(crate) fn id_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    use serde::Deserialize;
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => s,
        serde_json::Value::Number(n) => n.to_string(),
        _ => String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(scopes: &[&str]) -> Resource {
        Resource {
            id: "c1".into(),
            name: "Acme".into(),
            url: Some("https://acme.atlassian.net".into()),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            avatar_url: None,
        }
    }

    #[test]
    fn products_follow_the_scopes() {
        let jira = site(&["read:jira-work", "read:jira-user"]);
        assert!(Product::Jira.on(&jira));
        assert!(!Product::Confluence.on(&jira));
        let wiki = site(&["read:page:confluence"]);
        assert!(Product::Confluence.on(&wiki));
        assert!(!Product::Jira.on(&site(&["read:me", "offline_access"])));
        assert!(!Product::Jira.on(&site(&["read:jirafication"])));
    }

    #[test]
    fn web_urls_stay_on_the_site() {
        let s = site(&[]);
        assert_eq!(
            web_url(&s, "/browse/ACME-1").as_deref(),
            Some("https://acme.atlassian.net/browse/ACME-1")
        );
        assert_eq!(web_url(&s, "//evil.example/x"), None);
        assert_eq!(web_url(&s, "https://evil.example/x"), None);
        assert_eq!(web_url(&s, "/\\evil.example"), None);
        let dc = Resource {
            url: Some("https://jira.example.com/jira".into()),
            ..site(&[])
        };
        assert_eq!(
            web_url(&dc, "/browse/ACME-1").as_deref(),
            Some("https://jira.example.com/jira/browse/ACME-1")
        );
        assert_eq!(web_url(&dc, "/../other/x"), None);
    }

    #[test]
    fn timestamps_become_rfc3339_utc() {
        assert_eq!(
            timestamp(Some("2024-06-20T12:15:30.000+0200")).as_deref(),
            Some("2024-06-20T10:15:30Z")
        );
        assert_eq!(
            timestamp(Some("2024-06-20T10:15:30.123Z")).as_deref(),
            Some("2024-06-20T10:15:30Z")
        );
        assert_eq!(timestamp(Some("yesterday")), None);
    }

    mod upstream {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};

        use axum::Router;
        use axum::http::HeaderMap as AxumHeaders;
        use axum::response::IntoResponse;
        use axum::routing::get;

        use super::*;

        const TOKEN: &str = "secret-token-123";

        async fn serve(app: Router) -> Url {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let url = Url::parse(&format!("http://{}", listener.local_addr().expect("addr")))
                .expect("url");
            tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
            url
        }

        fn limited(n: usize, retry_after: Option<&'static str>) -> (Router, Arc<AtomicUsize>) {
            let calls = Arc::new(AtomicUsize::new(0));
            let seen = calls.clone();
            let app = Router::new().route(
                "/ex/jira/c1/x",
                get(move |headers: AxumHeaders| {
                    let calls = seen.clone();
                    async move {
                        assert_eq!(headers["authorization"], format!("Bearer {TOKEN}"));
                        if calls.fetch_add(1, Ordering::SeqCst) < n {
                            let mut r = StatusCode::TOO_MANY_REQUESTS.into_response();
                            if let Some(v) = retry_after {
                                r.headers_mut()
                                    .insert(header::RETRY_AFTER, HeaderValue::from_static(v));
                            }
                            r
                        } else {
                            axum::Json(serde_json::json!({"ok": true})).into_response()
                        }
                    }
                }),
            );
            (app, calls)
        }

        async fn fetch(api: &Url) -> Result<serde_json::Value, ContentError> {
            let token = AccessToken::new(TOKEN);
            let http = grantry_protocol::http::client(Duration::from_secs(5)).expect("client");
            let g = Gateway {
                http: &http,
                api,
                flavor: Flavor::Cloud,
                token: &token,
                provider: "atlassian",
                telemetry: &grantry_core::telemetry::Telemetry::default(),
            };
            let url = g.url(Product::Jira, &site(&[]), &["x"])?;
            let result = g
                .json(JIRA_ISSUE, "test call", || g.http.get(url.clone()))
                .await;
            if let Err(e) = &result {
                assert!(!e.to_string().contains(TOKEN), "{e}");
            }
            result
        }

        #[tokio::test]
        async fn two_rate_limits_are_waited_out() {
            let (app, calls) = limited(2, Some("1"));
            let value = fetch(&serve(app).await).await.expect("third call works");
            assert_eq!(value["ok"], true);
            assert_eq!(calls.load(Ordering::SeqCst), 3);
        }

        #[tokio::test]
        async fn a_third_rate_limit_is_answered() {
            let (app, calls) = limited(3, Some("1"));
            let e = fetch(&serve(app).await).await.expect_err("429");
            assert_eq!(
                e,
                ContentError::RateLimited {
                    what: "test call".into(),
                    retry_after: 1
                }
            );
            assert_eq!(calls.load(Ordering::SeqCst), 3);
            let response = e.into_response();
            assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        }

        #[tokio::test]
        async fn a_long_retry_after_is_not_waited() {
            let (app, calls) = limited(1, Some("30"));
            let e = fetch(&serve(app).await).await.expect_err("429");
            assert!(matches!(
                e,
                ContentError::RateLimited {
                    retry_after: 30,
                    ..
                }
            ));
            assert_eq!(calls.load(Ordering::SeqCst), 1);
        }

        #[tokio::test]
        async fn a_rate_limit_without_retry_after_waits_a_second() {
            let (app, calls) = limited(1, None);
            assert!(fetch(&serve(app).await).await.is_ok());
            assert_eq!(calls.load(Ordering::SeqCst), 2);
        }

        #[tokio::test]
        async fn hostile_answers_become_clean_errors() {
            let huge = vec![b'a'; MAX_JSON_BODY + 1];
            let cases: Vec<(Router, &str, u16)> = vec![
                (
                    Router::new().route("/ex/jira/c1/x", get(move || async move { huge.clone() })),
                    "larger than",
                    502,
                ),
                (
                    Router::new().route("/ex/jira/c1/x", get(|| async { "<html>no</html>" })),
                    "malformed body",
                    502,
                ),
                (
                    Router::new().route(
                        "/ex/jira/c1/x",
                        get(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
                    ),
                    "HTTP 500",
                    502,
                ),
                (
                    Router::new().route("/ex/jira/c1/x", get(|| async { StatusCode::FORBIDDEN })),
                    "may lack a scope",
                    502,
                ),
                (
                    Router::new().route("/ex/jira/c1/x", get(|| async { StatusCode::NOT_FOUND })),
                    "not found",
                    404,
                ),
            ];
            for (app, needle, status) in cases {
                let e = fetch(&serve(app).await).await.expect_err("fails");
                assert!(e.to_string().contains(needle), "{e}");
                assert_eq!(e.status().as_u16(), status, "{e}");
            }
            // Nothing listens here.
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let api = Url::parse(&format!("http://{}", listener.local_addr().expect("addr")))
                .expect("url");
            drop(listener);
            let e = fetch(&api).await.expect_err("refused");
            assert!(matches!(e, ContentError::Upstream(_)), "{e}");
        }
    }

    #[test]
    fn scope_refusals_are_told_from_other_refusals() {
        assert!(scope_refused(
            br#"{"code":401,"message":"Unauthorized; scope does not match"}"#
        ));
        assert!(!scope_refused(br#"{"code":401,"message":"Unauthorized"}"#));
        assert!(!scope_refused(b"<html>"));
    }

    #[test]
    fn data_center_urls_keep_the_context_path() {
        let api = Url::parse("https://jira.example.com/jira").expect("url");
        let token = AccessToken::new("t");
        let http = reqwest::Client::new();
        let g = Gateway {
            http: &http,
            api: &api,
            flavor: Flavor::DataCenter,
            token: &token,
            provider: "jira-dc",
            telemetry: &grantry_core::telemetry::Telemetry::default(),
        };
        let url = g
            .url(
                Product::Jira,
                &site(&[]),
                &["rest", "api", "2", "issue", "A/B"],
            )
            .expect("url");
        assert_eq!(
            url.as_str(),
            "https://jira.example.com/jira/rest/api/2/issue/A%2FB"
        );
    }

    #[test]
    fn the_gateway_url_encodes_segments() {
        let api = Url::parse("http://127.0.0.1:9/base/").expect("url");
        let token = AccessToken::new("t");
        let http = reqwest::Client::new();
        let g = Gateway {
            http: &http,
            api: &api,
            flavor: Flavor::Cloud,
            token: &token,
            provider: "atlassian",
            telemetry: &grantry_core::telemetry::Telemetry::default(),
        };
        let url = g
            .url(
                Product::Jira,
                &site(&[]),
                &["rest", "api", "3", "issue", "A/B?c"],
            )
            .expect("url");
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9/base/ex/jira/c1/rest/api/3/issue/A%2FB%3Fc"
        );
    }
}
