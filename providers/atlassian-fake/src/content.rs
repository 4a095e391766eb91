//! The fake's content endpoints behind the gateway: Jira REST v3, Confluence's CQL search (v1)
//! and attachments under `/ex/{product}/{cloudid}/…` (Confluence v2 is in `confluence_v2`),
//! with Atlassian's shapes, pagination that hands out at most two items a page (so clients must
//! follow it), bearer and per-operation scope checks, the removed Confluence v1 routes answered
//! as gone, rate limiting and injected failures.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use super::data::{self, Issue, Page, Person};
use super::scopes::{self, Access};
use super::{FakeAtlassian, bearer, confluence_v2, webhooks};

/// Most items the fake puts in one page of projects, spaces or comments.
pub(crate) const PAGE_CAP: usize = 2;
/// The size of `big.bin`, an attachment larger than the proxy passes back.
pub(crate) const BIG_ATTACHMENT: usize = 9 * 1024 * 1024;
/// The size of `large.bin`, a streamed attachment (no length announced) the proxy passes back.
pub const LARGE_STREAMED_ATTACHMENT: usize = 7 * 1024 * 1024;
/// The size of `huge.bin`, a streamed attachment (no length announced) over the proxy's cap.
pub const HUGE_STREAMED_ATTACHMENT: usize = 9 * 1024 * 1024;
/// The chunk the streamed attachments are made of.
static STREAM_CHUNK: [u8; 64 * 1024] = [b'x'; 64 * 1024];

/// `size` bytes of `x` sent chunk by chunk, without a `Content-Length`.
fn streamed(size: usize) -> Response {
    let chunks = (0..size.div_ceil(STREAM_CHUNK.len())).map(move |i| {
        let end = (size - i * STREAM_CHUNK.len()).min(STREAM_CHUNK.len());
        Ok::<_, std::io::Error>(Bytes::from_static(&STREAM_CHUNK[..end]))
    });
    (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(futures_util::stream::iter(chunks)),
    )
        .into_response()
}
/// Requests kept for [`FakeAtlassian::content_requests`].
const KEPT_REQUESTS: usize = 200;

/// A content request as the fake received it (header names only, never their values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// The HTTP method.
    pub method: String,
    /// The path, still percent-encoded.
    pub path: String,
    /// The query string, if any.
    pub query: Option<String>,
    /// The names of the request headers, lower case.
    pub header_names: Vec<String>,
    /// Whether the bearer token was a live access token of the fake.
    pub authorised: bool,
    /// The request body.
    pub body: Vec<u8>,
}

/// The fake's content state.
#[derive(Default)]
pub(crate) struct ContentState {
    /// Content calls still to answer 429.
    rate_limit_left: usize,
    /// Until when each `{product}/{cloudid}` is rate limited.
    windows: HashMap<String, Instant>,
    /// Injected statuses by (cloud id, product).
    failures: HashMap<(String, String), u16>,
    /// The latest requests, oldest first.
    requests: Vec<RecordedRequest>,
}

impl FakeAtlassian {
    /// The next `n` content calls (anything under `/ex/`) answer 429 with `Retry-After: 1`.
    /// A call to the same site and product that comes back before that second has passed is
    /// answered 429 too, and counted in [`super::Counters::content_early`].
    pub fn rate_limit_next_content_calls(&self, n: usize) {
        self.lock().content.rate_limit_left = n;
    }

    /// Every content call to `product` (`jira` or `confluence`) on `site_id` answers `status`
    /// until [`Self::clear_content_failures`].
    pub fn fail_content(&self, site_id: &str, product: &str, status: u16) {
        self.lock()
            .content
            .failures
            .insert((site_id.to_owned(), product.to_owned()), status);
    }

    /// Ends every failure injected with [`Self::fail_content`].
    pub fn clear_content_failures(&self) {
        self.lock().content.failures.clear();
    }

    /// The latest content requests (up to 200), oldest first.
    pub fn content_requests(&self) -> Vec<RecordedRequest> {
        self.lock().content.requests.clone()
    }

    /// Forgets the recorded content requests.
    pub fn clear_content_requests(&self) {
        self.lock().content.requests.clear();
    }

    fn has_product(&self, cloud_id: &str, product: &str) -> bool {
        self.config().sites.iter().any(|s| {
            s.id == cloud_id
                && s.scopes
                    .iter()
                    .any(|scope| scope.split([':', '-', '.']).any(|w| w == product))
        })
    }
}

/// The content routes and the webhook routes, each behind the [`guard`].
pub(crate) fn router(fake: &FakeAtlassian) -> Router<FakeAtlassian> {
    Router::new()
        .route(
            "/ex/jira/{cloud}/rest/api/3/search/jql",
            get(jql_get).post(jql_post),
        )
        .route("/ex/jira/{cloud}/rest/api/3/project/search", get(projects))
        .route("/ex/jira/{cloud}/rest/api/3/issue/{key}", get(issue))
        .route(
            "/ex/jira/{cloud}/rest/api/3/issue/{key}/comment",
            get(comments),
        )
        .route("/ex/jira/{cloud}/rest/api/3/myself", get(myself))
        .route("/ex/confluence/{cloud}/wiki/rest/api/search", get(cql))
        .route("/ex/confluence/{cloud}/wiki/rest/api/space", get(removed))
        .route("/ex/confluence/{cloud}/wiki/rest/api/content", get(removed))
        .route(
            "/ex/confluence/{cloud}/wiki/rest/api/content/{id}",
            get(removed),
        )
        .route(
            "/ex/confluence/{cloud}/wiki/download/attachments/{page}/{file}",
            get(attachment),
        )
        .merge(webhooks::routes())
        .merge(confluence_v2::routes())
        .route_layer(middleware::from_fn_with_state(fake.clone(), guard))
}

/// Counts, records, checks the bearer token, rate limits and injects failures.
async fn guard(State(fake): State<FakeAtlassian>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 4 * 1024 * 1024).await else {
        return atlassian_error(StatusCode::PAYLOAD_TOO_LARGE, "request too large");
    };
    let path = parts.uri.path().to_owned();
    let mut segments = path.split('/').skip(2);
    let product = segments.next().unwrap_or("").to_owned();
    let cloud = segments.next().unwrap_or("").to_owned();
    let now = Instant::now();
    let key = format!("{product}/{cloud}");
    let refusal = {
        let mut inner = fake.lock();
        inner.counters.content += 1;
        let granted = bearer(&parts.headers)
            .and_then(|token| inner.token_scope(token))
            .map(str::to_owned);
        let authorised = granted.is_some();
        let state = &mut inner.content;
        state.requests.push(RecordedRequest {
            method: parts.method.to_string(),
            path: path.clone(),
            query: parts.uri.query().map(str::to_owned),
            header_names: parts
                .headers
                .keys()
                .map(|k| k.as_str().to_owned())
                .collect(),
            authorised,
            body: bytes.to_vec(),
        });
        if state.requests.len() > KEPT_REQUESTS {
            state.requests.remove(0);
        }
        let template = parts
            .extensions
            .get::<MatchedPath>()
            .map(MatchedPath::as_str);
        let access = template.and_then(|t| scopes::access(&parts.method, t));
        if !authorised {
            Some(atlassian_error(StatusCode::UNAUTHORIZED, "Unauthorized"))
        } else if access.is_none() {
            Some(atlassian_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the fake has no scope entry for this route",
            ))
        } else if let Some(Access::Scopes(sets)) = access
            && !scopes::satisfied(sets, granted.as_deref().unwrap_or(""))
        {
            inner.counters.content_scope_refused += 1;
            Some(atlassian_error(
                StatusCode::UNAUTHORIZED,
                "Unauthorized; scope does not match",
            ))
        } else if let Some(until) = state.windows.get(&key).copied()
            && now < until
        {
            inner.counters.content_early += 1;
            inner.counters.content_rate_limited += 1;
            let secs = until.saturating_duration_since(now).as_secs_f64().ceil();
            Some(rate_limited(secs.max(1.0) as u64))
        } else if state.rate_limit_left > 0 {
            state.rate_limit_left -= 1;
            state.windows.insert(key, now + Duration::from_secs(1));
            inner.counters.content_rate_limited += 1;
            Some(rate_limited(1))
        } else if let Some(status) = state.failures.get(&(cloud.clone(), product.clone())) {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY);
            Some(atlassian_error(status, "injected failure"))
        } else {
            None
        }
    };
    if let Some(refusal) = refusal {
        return refusal;
    }
    if !fake.has_product(&cloud, &product) {
        return atlassian_error(StatusCode::NOT_FOUND, "Not Found");
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

pub(crate) fn atlassian_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"code": status.as_u16(), "message": message})),
    )
        .into_response()
}

fn rate_limited(secs: u64) -> Response {
    let mut response = atlassian_error(StatusCode::TOO_MANY_REQUESTS, "Rate limit exceeded");
    let headers = response.headers_mut();
    headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    headers.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
    response
}

pub(crate) fn jira_errors(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"errorMessages": [message], "errors": {}})),
    )
        .into_response()
}

pub(crate) fn gateway_self(product: &str, cloud: &str, rest: &str) -> String {
    format!("https://api.atlassian.com/ex/{product}/{cloud}{rest}")
}

pub(crate) fn person(p: Person) -> Value {
    json!({
        "accountId": p.account_id,
        "displayName": p.name,
        "active": true,
        "accountType": "atlassian",
        "timeZone": "Europe/London",
    })
}

/// The words a JQL or CQL `text ~ "…"` asks for: the string literal's escapes undone, then
/// the search syntax's backslashes dropped.
pub(crate) fn text_terms(query: &str) -> Option<Vec<String>> {
    let at = query.find('~')?;
    let rest = query.get(at + 1..)?.trim_start();
    let mut chars = rest.strip_prefix('"')?.chars();
    let mut literal = String::new();
    loop {
        match chars.next()? {
            '"' => break,
            '\\' => literal.push(chars.next()?),
            c => literal.push(c),
        }
    }
    let mut plain = String::new();
    let mut chars = literal.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                plain.push(next);
            }
        } else {
            plain.push(c);
        }
    }
    Some(
        plain
            .split_whitespace()
            .map(str::to_lowercase)
            .filter(|w| !matches!(w.as_str(), "and" | "or" | "not"))
            .collect(),
    )
}

pub(crate) fn matches(terms: &[String], haystack: &str) -> bool {
    let haystack = haystack.to_lowercase();
    !terms.is_empty() && terms.iter().all(|t| haystack.contains(t.as_str()))
}

/// Every text of an ADF document, space separated.
pub(crate) fn adf_words(value: &Value) -> String {
    let mut out = String::new();
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(map) => {
                if let Some(Value::String(t)) = map.get("text") {
                    out.push_str(t);
                    out.push(' ');
                }
                if let Some(Value::Array(children)) = map.get("content") {
                    stack.extend(children.iter().rev());
                }
            }
            Value::Array(items) => stack.extend(items.iter().rev()),
            _ => {}
        }
    }
    out
}

pub(crate) fn issue_json(cloud: &str, issue: &Issue) -> Value {
    json!({
        "id": issue.id,
        "key": issue.key,
        "self": gateway_self("jira", cloud, &format!("/rest/api/3/issue/{}", issue.id)),
        "fields": {
            "summary": issue.summary,
            "status": {"name": issue.status, "statusCategory": {"key": status_category(issue.status)}},
            "issuetype": {"name": issue.issue_type},
            "priority": {"name": issue.priority},
            "labels": issue.labels,
            "assignee": issue.assignee.map(person),
            "reporter": person(issue.reporter),
            "created": issue.created,
            "updated": issue.updated,
            "description": issue.description,
        }
    })
}

fn status_category(status: &str) -> &'static str {
    match status {
        "Done" => "done",
        "To Do" => "new",
        _ => "indeterminate",
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct JqlRequest {
    jql: Option<String>,
    max_results: Option<usize>,
}

async fn jql_get(
    Path(cloud): Path<String>,
    query: Result<Query<JqlRequest>, QueryRejection>,
) -> Response {
    match query {
        Ok(Query(request)) => jql(&cloud, request),
        Err(_) => jira_errors(StatusCode::BAD_REQUEST, "The query string is invalid."),
    }
}

async fn jql_post(Path(cloud): Path<String>, body: Bytes) -> Response {
    match serde_json::from_slice::<JqlRequest>(&body) {
        Ok(request) => jql(&cloud, request),
        Err(_) => jira_errors(
            StatusCode::BAD_REQUEST,
            "The request body is not valid JSON.",
        ),
    }
}

fn jql(cloud: &str, request: JqlRequest) -> Response {
    let jql = request.jql.unwrap_or_default();
    let Some(terms) = text_terms(&jql) else {
        return jira_errors(
            StatusCode::BAD_REQUEST,
            "Error in the JQL Query: the fake only understands text ~ \"…\".",
        );
    };
    let max = request.max_results.unwrap_or(50).clamp(1, 100);
    let site = data::site(cloud);
    let mut hits: Vec<&Issue> = site
        .issues
        .iter()
        .filter(|i| {
            matches(
                &terms,
                &format!("{} {}", i.summary, adf_words(&i.description)),
            )
        })
        .collect();
    hits.sort_by(|a, b| b.updated.cmp(a.updated));
    hits.truncate(max);
    axum::Json(json!({
        "issues": hits.iter().map(|i| issue_json(cloud, i)).collect::<Vec<_>>(),
        "isLast": true,
    }))
    .into_response()
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Paging {
    start_at: Option<usize>,
    max_results: Option<usize>,
}

async fn projects(
    Path(cloud): Path<String>,
    query: Result<Query<Paging>, QueryRejection>,
) -> Response {
    let Query(paging) = query.unwrap_or_default();
    let site = data::site(&cloud);
    let start = paging.start_at.unwrap_or(0);
    let max = paging.max_results.unwrap_or(50).clamp(1, 50).min(PAGE_CAP);
    let page: Vec<Value> = site
        .projects
        .iter()
        .skip(start)
        .take(max)
        .map(|p| {
            json!({
                "self": gateway_self("jira", &cloud, &format!("/rest/api/3/project/{}", p.id)),
                "id": p.id,
                "key": p.key,
                "name": p.name,
                "projectTypeKey": p.kind,
                "simplified": false,
                "style": "classic",
                "isPrivate": false,
            })
        })
        .collect();
    let total = site.projects.len();
    axum::Json(json!({
        "self": gateway_self("jira", &cloud, "/rest/api/3/project/search"),
        "maxResults": max,
        "startAt": start,
        "total": total,
        "isLast": start + page.len() >= total,
        "values": page,
    }))
    .into_response()
}

async fn issue(Path((cloud, key)): Path<(String, String)>) -> Response {
    let site = data::site(&cloud);
    match site.issues.iter().find(|i| i.key == key || i.id == key) {
        Some(issue) => axum::Json(issue_json(&cloud, issue)).into_response(),
        None => jira_errors(
            StatusCode::NOT_FOUND,
            "Issue does not exist or you do not have permission to see it.",
        ),
    }
}

async fn comments(
    Path((cloud, key)): Path<(String, String)>,
    query: Result<Query<Paging>, QueryRejection>,
) -> Response {
    let Query(paging) = query.unwrap_or_default();
    let site = data::site(&cloud);
    let Some(issue) = site.issues.iter().find(|i| i.key == key || i.id == key) else {
        return jira_errors(
            StatusCode::NOT_FOUND,
            "Issue does not exist or you do not have permission to see it.",
        );
    };
    let start = paging.start_at.unwrap_or(0);
    let max = paging.max_results.unwrap_or(50).clamp(1, 100).min(PAGE_CAP);
    let page: Vec<Value> = issue
        .comments
        .iter()
        .skip(start)
        .take(max)
        .map(|c| {
            json!({
                "self": gateway_self("jira", &cloud, &format!("/rest/api/3/issue/{}/comment/{}", issue.id, c.id)),
                "id": c.id,
                "author": person(c.author),
                "updateAuthor": person(c.author),
                "body": c.body,
                "created": c.created,
                "updated": c.created,
                "jsdPublic": true,
            })
        })
        .collect();
    axum::Json(json!({
        "startAt": start,
        "maxResults": max,
        "total": issue.comments.len(),
        "comments": page,
    }))
    .into_response()
}

async fn myself(State(fake): State<FakeAtlassian>) -> Response {
    let user = &fake.config().user;
    let mut response = axum::Json(json!({
        "accountId": user.account_id,
        "displayName": user.name,
        "emailAddress": user.email,
        "active": true,
        "accountType": "atlassian",
    }))
    .into_response();
    let headers: &mut HeaderMap = response.headers_mut();
    headers.insert(
        header::SET_COOKIE,
        HeaderValue::from_static("atlassian.xsrf.token=fake; Path=/; Secure"),
    );
    headers.insert("x-arequestid", HeaderValue::from_static("fake-request-id"));
    headers.insert("x-ratelimit-remaining", HeaderValue::from_static("99"));
    response
}

pub(crate) fn page_links(page: &Page) -> Value {
    json!({
        "webui": format!("/spaces/{}/pages/{}/{}", page.space_key, page.id, page.title.replace(' ', "+")),
        "tinyui": format!("/x/{}", page.id),
    })
}

pub(crate) fn site_base(fake: &FakeAtlassian, cloud: &str) -> String {
    let url = fake
        .config()
        .sites
        .iter()
        .find(|s| s.id == cloud)
        .map(|s| s.url.clone())
        .unwrap_or_default();
    format!("{url}/wiki")
}

#[derive(Deserialize, Default)]
struct Cql {
    cql: Option<String>,
    limit: Option<usize>,
    start: Option<usize>,
}

async fn cql(
    State(fake): State<FakeAtlassian>,
    Path(cloud): Path<String>,
    query: Result<Query<Cql>, QueryRejection>,
) -> Response {
    let Query(query) = query.unwrap_or_default();
    let cql = query.cql.unwrap_or_default();
    let Some(terms) = text_terms(&cql) else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"statusCode": 400, "message": "Could not parse cql"})),
        )
            .into_response();
    };
    let limit = query.limit.unwrap_or(25).clamp(1, 100);
    let start = query.start.unwrap_or(0);
    let site = data::site(&cloud);
    let mut hits: Vec<&Page> = site
        .pages
        .iter()
        .filter(|p| matches(&terms, &format!("{} {}", p.title, p.text)))
        .collect();
    hits.sort_by(|a, b| b.updated.cmp(a.updated));
    let total = hits.len();
    let results: Vec<Value> = hits
        .iter()
        .skip(start)
        .take(limit)
        .map(|p| {
            let space = site.spaces.iter().find(|s| s.key == p.space_key);
            let links = page_links(p);
            json!({
                "content": {
                    "id": p.id,
                    "type": "page",
                    "status": "current",
                    "title": p.title,
                    "_links": links,
                },
                "title": highlight(p.title, &terms),
                "excerpt": highlight(&excerpt(p.text, &terms), &terms),
                "url": links["webui"],
                "resultGlobalContainer": {
                    "title": space.map(|s| s.name).unwrap_or_default(),
                    "displayUrl": format!("/spaces/{}", p.space_key),
                },
                "breadcrumbs": [],
                "entityType": "content",
                "iconCssClass": "aui-icon content-type-page",
                "lastModified": p.updated,
                "friendlyLastModified": p.updated.get(..10).unwrap_or_default(),
                "score": 0.0,
            })
        })
        .collect();
    axum::Json(json!({
        "results": results,
        "start": start,
        "limit": limit,
        "size": results.len(),
        "totalSize": total,
        "cqlQuery": cql,
        "searchDuration": 12,
        "_links": {"base": site_base(&fake, &cloud), "context": "/wiki"},
    }))
    .into_response()
}

/// Some words around the first term.
fn excerpt(text: &str, terms: &[String]) -> String {
    let lower = text.to_lowercase();
    let at = terms
        .iter()
        .filter_map(|t| lower.find(t.as_str()))
        .min()
        .unwrap_or(0);
    let begin = text
        .char_indices()
        .map(|(i, _)| i)
        .take_while(|i| *i <= at.saturating_sub(60))
        .last()
        .unwrap_or(0);
    text.get(begin..)
        .unwrap_or(text)
        .chars()
        .take(160)
        .collect()
}

/// Wraps each occurrence of a term in Confluence's highlight markers.
fn highlight(text: &str, terms: &[String]) -> String {
    let mut out = String::new();
    let lower = text.to_lowercase();
    if lower.len() != text.len() {
        return text.to_owned();
    }
    let mut i = 0;
    while i < text.len() {
        let hit = terms.iter().filter(|t| !t.is_empty()).find(|t| {
            lower
                .get(i..)
                .is_some_and(|rest| rest.starts_with(t.as_str()))
        });
        match hit.and_then(|t| text.get(i..i + t.len())) {
            Some(word) => {
                out.push_str("@@@hl@@@");
                out.push_str(word);
                out.push_str("@@@endhl@@@");
                i += word.len();
            }
            None => {
                let Some(c) = text.get(i..).and_then(|rest| rest.chars().next()) else {
                    break;
                };
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    out
}

/// A removed Confluence v1 operation, answered as Atlassian answers it: 410 with the v2
/// replacement named.
async fn removed(method: Method, matched: MatchedPath) -> Response {
    let replacement = match scopes::access(&method, matched.as_str()) {
        Some(Access::Removed(replacement)) => replacement,
        _ => "the v2 API",
    };
    (
        StatusCode::GONE,
        axum::Json(json!({
            "statusCode": 410,
            "message": format!("This API has been removed; use {replacement}"),
            "reason": "Gone",
        })),
    )
        .into_response()
}

async fn attachment(Path((_cloud, _page, file)): Path<(String, String, String)>) -> Response {
    match file.as_str() {
        "notes.txt" => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "Rollout notes: staging first.\n",
        )
            .into_response(),
        "big.bin" => (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            vec![b'x'; BIG_ATTACHMENT],
        )
            .into_response(),
        "large.bin" => streamed(LARGE_STREAMED_ATTACHMENT),
        "huge.bin" => streamed(HUGE_STREAMED_ATTACHMENT),
        _ => atlassian_error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_terms_undo_both_escapes() {
        assert_eq!(
            text_terms(r#"text ~ "C\\+\\+ \\(x\\) say \\\"hi\\\"" ORDER BY updated DESC"#),
            Some(vec![
                "c++".into(),
                "(x)".into(),
                "say".into(),
                "\"hi\"".into()
            ])
        );
        assert_eq!(text_terms("project = X"), None);
        assert_eq!(text_terms(r#"text ~ "unterminated"#), None);
    }

    #[test]
    fn highlights_are_inserted() {
        assert_eq!(
            highlight("The Rollout plan", &["rollout".into()]),
            "The @@@hl@@@Rollout@@@endhl@@@ plan"
        );
    }
}
