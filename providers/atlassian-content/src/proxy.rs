//! `ANY /proxy/{jira|confluence}/{site_id}/{*path}`: the user's own calls to Atlassian.
//!
//! Only sites of the user's grant and products the site has; the path is checked segment by
//! segment on the raw request (no `.`/`..`, no encoded slash, backslash or dot, no control
//! characters), re-encoded, and must land under `/ex/{product}/{cloudid}/` on Cloud, or on Data
//! Center under the instance's base URL in its REST API or attachment downloads
//! ([`DATA_CENTER_PREFIXES`]). A short list of
//! request headers passes (never the caller's `Authorization` or `Cookie`, never hop-by-hop
//! headers); the upstream answer comes back with a short list of headers and a capped body,
//! streamed chunk by chunk (never held whole in memory).

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, header};
use axum::response::IntoResponse;
use grantry_core::Resource;
use percent_encoding::percent_decode_str;

use grantry_protocol::http::retry_after;

use super::gateway::{ContentError, Flavor, Gateway, Product};

/// The paths (under the base URL) the proxy reaches on a Data Center instance: the REST API
/// and attachment downloads, never the web UI, the administration pages or the OAuth endpoints.
pub(crate) const DATA_CENTER_PREFIXES: &[&[&str]] = &[
    &["rest", "api"],
    &["rest", "agile"],
    &["download", "attachments"],
    &["secure", "attachment"],
];

/// Largest upstream body passed back.
pub(crate) const MAX_PROXY_BODY: usize = 8 * 1024 * 1024;
/// Longest path accepted after `{site_id}/`.
const MAX_PATH: usize = 2048;

/// Request headers forwarded to Atlassian (everything else stays behind).
const FORWARD_REQUEST: &[HeaderName] = &[
    header::ACCEPT,
    header::ACCEPT_LANGUAGE,
    header::CONTENT_TYPE,
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
];

/// Extra request headers Atlassian's APIs read.
const FORWARD_REQUEST_EXTRA: &[&str] = &[
    "x-atlassian-token",
    "x-experimentalapi",
    "x-force-accept-language",
];

/// Response headers passed back to the caller.
const FORWARD_RESPONSE: &[HeaderName] = &[
    header::CONTENT_TYPE,
    header::CONTENT_LANGUAGE,
    header::CONTENT_DISPOSITION,
    header::ETAG,
    header::LAST_MODIFIED,
    header::RETRY_AFTER,
];

/// Extra response headers passed back.
const FORWARD_RESPONSE_EXTRA: &[&str] = &[
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "x-ratelimit-nearlimit",
];

/// Where a proxied request goes, once checked.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Target {
    /// The product named in the path.
    pub(crate) product: Product,
    /// The site id named in the path (decoded).
    pub(crate) site_id: String,
    /// The decoded segments after the site id.
    pub(crate) segments: Vec<String>,
}

/// Reads `…/proxy/{product}/{site_id}/{path}` from a raw request path, refusing any path
/// that could leave `/ex/{product}/{cloudid}/` once decoded or normalised.
pub(crate) fn target(raw_path: &str) -> Result<Target, ContentError> {
    let bad = |why: &str| ContentError::BadRequest(format!("the proxy path is refused: {why}"));
    let mut parts = raw_path.split('/');
    // The first `proxy` segment is ours: the provider's prefix never contains one.
    if !parts.any(|segment| segment == "proxy") {
        return Err(bad("not a proxy path"));
    }
    let product = parts
        .next()
        .and_then(Product::parse)
        .ok_or_else(|| ContentError::NotFound("the proxy serves jira and confluence".into()))?;
    let site_id = decode(parts.next().unwrap_or(""))
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad("the site id is missing or malformed"))?;
    let rest: Vec<&str> = parts.collect();
    let length: usize = rest.iter().map(|s| s.len() + 1).sum();
    if rest.is_empty() || length > MAX_PATH {
        return Err(bad("the path is empty or too long"));
    }
    let mut segments = Vec::with_capacity(rest.len());
    let last = rest.len() - 1;
    for (i, raw) in rest.iter().enumerate() {
        let lower = raw.to_ascii_lowercase();
        if ["%2f", "%5c", "%2e", "%00"]
            .iter()
            .any(|encoded| lower.contains(encoded))
            || raw.contains('\\')
        {
            return Err(bad("encoded slashes, backslashes and dots are not allowed"));
        }
        let segment = decode(raw).ok_or_else(|| bad("a segment is not valid UTF-8"))?;
        if segment == "." || segment == ".." {
            return Err(bad("`.` and `..` segments are not allowed"));
        }
        if segment.chars().any(char::is_control) {
            return Err(bad("control characters are not allowed"));
        }
        if segment.is_empty() && i != last {
            return Err(bad("empty segments are not allowed"));
        }
        if segment.is_empty() && i == 0 {
            return Err(bad("the path is empty"));
        }
        segments.push(segment);
    }
    Ok(Target {
        product,
        site_id,
        segments,
    })
}

fn decode(raw: &str) -> Option<String> {
    percent_decode_str(raw)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// The site of the grant the target names, if the grant reaches its product there.
pub(crate) fn allowed_site<'a>(
    resources: &'a [Resource],
    target: &Target,
    reaches: impl Fn(Product, &Resource) -> bool,
) -> Result<&'a Resource, ContentError> {
    let site = resources
        .iter()
        .find(|r| r.id == target.site_id)
        .ok_or_else(|| {
            ContentError::ForbiddenSite(format!(
                "site {} is not part of your Atlassian grant",
                target.site_id
            ))
        })?;
    if !reaches(target.product, site) {
        return Err(ContentError::ForbiddenSite(format!(
            "your Atlassian grant does not reach {} on site {}",
            target.product.name(),
            target.site_id
        )));
    }
    Ok(site)
}

fn forwarded(name: &HeaderName, listed: &[HeaderName], extra: &[&str]) -> bool {
    listed.contains(name) || extra.contains(&name.as_str())
}

/// Forwards one request and passes the answer back.
pub(crate) async fn forward(
    g: &Gateway<'_>,
    site: &Resource,
    target: &Target,
    method: Method,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response<Body>, ContentError> {
    if matches!(method, Method::CONNECT | Method::TRACE) {
        return Err(ContentError::BadRequest(format!(
            "the proxy does not forward {method}"
        )));
    }
    let segments: Vec<&str> = target.segments.iter().map(String::as_str).collect();
    if g.flavor == Flavor::DataCenter
        && !DATA_CENTER_PREFIXES
            .iter()
            .any(|prefix| segments.len() > prefix.len() && segments.starts_with(prefix))
    {
        return Err(ContentError::BadRequest(
            "the proxy path is refused: on Data Center it reaches rest/api/…, rest/agile/…, \
             download/attachments/… and secure/attachment/… only"
                .into(),
        ));
    }
    let mut url = g.url(target.product, site, &segments)?;
    let prefix = g.url(target.product, site, &[""])?;
    if !url.path().starts_with(prefix.path()) {
        return Err(ContentError::BadRequest(
            "the proxy path is refused: it leaves the site".into(),
        ));
    }
    url.set_query(query.filter(|q| !q.is_empty()));
    let mut outgoing = HeaderMap::new();
    for (name, value) in headers {
        if forwarded(name, FORWARD_REQUEST, FORWARD_REQUEST_EXTRA) {
            outgoing.append(name.clone(), value.clone());
        }
    }
    let what = format!("{} proxy", target.product.name());
    let response = g
        .send("proxy", &what, || {
            let request = g
                .http
                .request(method.clone(), url.clone())
                .headers(outgoing.clone());
            if body.is_empty() {
                request
            } else {
                request.body(body.clone())
            }
        })
        .await?;
    let status = response.status();
    let mut back = HeaderMap::new();
    for (name, value) in response.headers() {
        if forwarded(name, FORWARD_RESPONSE, FORWARD_RESPONSE_EXTRA) {
            back.append(name.clone(), value.clone());
        }
    }
    if status == StatusCode::TOO_MANY_REQUESTS && retry_after(&back).is_none() {
        back.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    back.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Upstream content (attachments, HTML) is served under grantry's origin: never let a browser
    // render or run it there.
    back.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    back.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    let is_json = back
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("json"));
    if !is_json {
        back.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment"),
        );
    }
    if response
        .content_length()
        .is_some_and(|n| n > MAX_PROXY_BODY as u64)
    {
        return Err(ContentError::Upstream(format!(
            "{what}: response larger than {MAX_PROXY_BODY} bytes"
        )));
    }
    let mut answer = (status, capped_stream(response, what, MAX_PROXY_BODY)).into_response();
    answer.headers_mut().extend(back);
    Ok(answer)
}

/// The upstream body as a stream that fails once more than `max` bytes came through: the
/// transfer to the caller is then aborted (never a silently shortened body).
fn capped_stream(response: reqwest::Response, what: String, max: usize) -> Body {
    let chunks =
        futures_util::stream::try_unfold((response, 0usize), move |(mut response, seen)| {
            let what = what.clone();
            async move {
                let Some(chunk) = response.chunk().await.map_err(|e| {
                    tracing::warn!(error = %e, "{what}: the upstream body failed");
                    std::io::Error::other(format!("{what}: the upstream body failed"))
                })?
                else {
                    return Ok(None);
                };
                let seen = seen + chunk.len();
                if seen > max {
                    tracing::warn!("{what}: response larger than {max} bytes; transfer aborted");
                    return Err(std::io::Error::other(format!(
                        "{what}: response larger than {max} bytes"
                    )));
                }
                Ok(Some((chunk, (response, seen))))
            }
        });
    Body::from_stream(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(path: &str) -> Target {
        target(path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn refused(path: &str) {
        match target(path) {
            Err(ContentError::BadRequest(_)) => {}
            other => panic!("{path} should be refused, got {other:?}"),
        }
    }

    #[test]
    fn ordinary_paths_pass() {
        let t = ok("/proxy/jira/abc/rest/api/3/issue/ACME-1");
        assert_eq!(t.product, Product::Jira);
        assert_eq!(t.site_id, "abc");
        assert_eq!(t.segments, ["rest", "api", "3", "issue", "ACME-1"]);
        let t = ok("/api/v1/atlassian/proxy/confluence/abc/wiki/rest/api/space/");
        assert_eq!(t.segments, ["wiki", "rest", "api", "space", ""]);
        assert_eq!(ok("/proxy/jira/abc/a%20b").segments, ["a b"]);
    }

    #[test]
    fn escapes_are_refused() {
        for path in [
            "/proxy/jira/abc/..",
            "/proxy/jira/abc/rest/../../../me",
            "/proxy/jira/abc/rest/./x",
            "/proxy/jira/abc/%2e%2e/x",
            "/proxy/jira/abc/%2E%2E/x",
            "/proxy/jira/abc/.%2e/x",
            "/proxy/jira/abc/rest%2f..%2f..%2fme",
            "/proxy/jira/abc/rest%2F..",
            "/proxy/jira/abc/rest%5c..",
            "/proxy/jira/abc/rest\\..\\me",
            "/proxy/jira/abc/rest//x",
            "/proxy/jira/abc/x%00",
            "/proxy/jira/abc/x%0a",
            "/proxy/jira/abc/%ff",
            "/proxy/jira/abc/",
            "/proxy/jira/abc",
        ] {
            refused(path);
        }
        assert!(matches!(
            target("/proxy/bitbucket/abc/x"),
            Err(ContentError::NotFound(_))
        ));
    }

    #[test]
    fn sites_and_products_are_checked() {
        let site = Resource {
            id: "abc".into(),
            scopes: vec!["read:jira-work".into()],
            ..Resource::default()
        };
        let sites = [site];
        assert!(allowed_site(&sites, &ok("/proxy/jira/abc/x"), Product::on).is_ok());
        assert!(matches!(
            allowed_site(&sites, &ok("/proxy/confluence/abc/x"), Product::on),
            Err(ContentError::ForbiddenSite(_))
        ));
        assert!(matches!(
            allowed_site(&sites, &ok("/proxy/jira/other/x"), Product::on),
            Err(ContentError::ForbiddenSite(_))
        ));
    }
}
