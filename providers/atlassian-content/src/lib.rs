//! grantry-atlassian-content: Jira and Confluence content for the user: search across sites,
//! projects, issues, spaces, pages (as Markdown), and an authenticated proxy. Every route takes a
//! fresh token.
//!
//! Linking this crate mounts the routes on the `atlassian` provider under `/api/v1/atlassian` (a
//! [`grantry_atlassian::RouteExtension`]) and, with the same shapes, on every Data Center
//! instance under `/api/v1/{id}` (a [`grantry_atlassian_dc::DcRouteExtension`], the instance as
//! the only site). A deployment that leaves it out keeps `/sites` only.

mod confluence;
mod gateway;
mod jira;
mod proxy;
mod search;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRef, Path, Query, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use grantry_core::{ApiError, ErrorBody, FreshToken, ProviderContext, Resource};
use serde::Deserialize;

use gateway::{ContentError, Flavor, Gateway, Product};
use grantry_atlassian::{Atlassian, RouteExtension, Routes};
use grantry_atlassian_dc::{AtlassianDc, DcRouteExtension, DcRoutes};

/// Names this crate for the linker: a binary that mentions it keeps the routes' registration.
pub const ID: &str = "atlassian-content";

inventory::submit! {
    RouteExtension {
        routes: cloud_router,
        openapi: <ContentApi as utoipa::OpenApi>::openapi,
    }
}

inventory::submit! {
    DcRouteExtension {
        routes: dc_router,
        openapi: <ContentApi as utoipa::OpenApi>::openapi,
    }
}

/// Where the content routes run: Atlassian Cloud, or one Data Center instance.
#[derive(Clone)]
enum Deployment {
    /// Atlassian Cloud: the sites of the grant, each with the products its scopes name.
    Cloud(Arc<Atlassian>),
    /// A Data Center instance: itself the only site, with its one product.
    DataCenter(Arc<AtlassianDc>),
}

impl Deployment {
    /// Whether the grant reaches `product` on `site`.
    fn reaches(&self, product: Product, site: &Resource) -> bool {
        match self {
            Self::Cloud(_) => product.on(site),
            Self::DataCenter(dc) => product.id() == dc.config().product.id(),
        }
    }

    /// The products to search on `site`.
    fn products(&self, site: &Resource) -> Vec<Product> {
        [Product::Jira, Product::Confluence]
            .into_iter()
            .filter(|p| self.reaches(*p, site))
            .collect()
    }
}

/// The state of the content routes: where they run and the server's context.
#[derive(Clone)]
struct ContentState {
    deployment: Deployment,
    context: ProviderContext,
}

impl FromRef<ContentState> for Deployment {
    fn from_ref(state: &ContentState) -> Self {
        state.deployment.clone()
    }
}

impl FromRef<ContentState> for ProviderContext {
    fn from_ref(state: &ContentState) -> Self {
        state.context.clone()
    }
}

/// The content routes of the Atlassian Cloud provider.
fn cloud_router(state: Routes) -> Router {
    router(ContentState {
        deployment: Deployment::Cloud(Arc::<Atlassian>::from_ref(&state)),
        context: ProviderContext::from_ref(&state),
    })
}

/// The content routes of one Data Center instance.
fn dc_router(state: DcRoutes) -> Router {
    router(ContentState {
        deployment: Deployment::DataCenter(Arc::<AtlassianDc>::from_ref(&state)),
        context: ProviderContext::from_ref(&state),
    })
}

/// Largest `limit` of a page listing.
const MAX_PAGE_LIMIT: usize = 100;
/// Page listing size when `limit` is not given.
const DEFAULT_PAGE_LIMIT: usize = 25;

/// The OpenAPI description of the content routes, paths relative to `/api/v1/atlassian`.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        search,
        jira_projects,
        jira_issue,
        confluence_spaces,
        confluence_pages,
        confluence_page,
        proxy
    ),
    components(schemas(
        ErrorBody,
        search::SearchResults,
        search::Hit,
        search::PartialFailure,
        jira::Projects,
        jira::ProjectView,
        jira::IssueView,
        jira::Person,
        jira::CommentView,
        confluence::Spaces,
        confluence::SpaceView,
        confluence::PageList,
        confluence::PageSummary,
        confluence::PageView,
        confluence::SpaceSummary
    ))
)]
struct ContentApi;

/// The content routes, merged into the provider's router.
fn router(state: ContentState) -> Router {
    Router::new()
        .route("/search", get(search))
        .route("/jira/{site_id}/projects", get(jira_projects))
        .route("/jira/{site_id}/issues/{key}", get(jira_issue))
        .route("/confluence/{site_id}/spaces", get(confluence_spaces))
        .route(
            "/confluence/{site_id}/spaces/{key}/pages",
            get(confluence_pages),
        )
        .route("/confluence/{site_id}/pages/{id}", get(confluence_page))
        .route("/proxy/{product}/{site_id}/{*path}", any(proxy))
        .with_state(state)
}

fn gateway<'a>(
    deployment: &'a Deployment,
    context: &'a ProviderContext,
    token: &'a FreshToken,
) -> Gateway<'a> {
    let (http, api, flavor) = match deployment {
        Deployment::Cloud(cloud) => (cloud.http(), &cloud.config().api_url, Flavor::Cloud),
        Deployment::DataCenter(dc) => (dc.http(), &dc.config().base_url, Flavor::DataCenter),
    };
    Gateway {
        http,
        api,
        flavor,
        token: &token.access.access_token,
        provider: context.provider_id(),
        telemetry: context.telemetry(),
    }
}

/// The site of the user's grant with this id, which must have `product`.
fn site<'a>(
    deployment: &Deployment,
    token: &'a FreshToken,
    site_id: &str,
    product: Option<Product>,
) -> Result<&'a Resource, ContentError> {
    let site = token
        .access
        .resources
        .iter()
        .find(|r| r.id == site_id)
        .ok_or_else(|| {
            ContentError::UnknownSite(format!(
                "site {site_id} is not part of your Atlassian grant"
            ))
        })?;
    match product {
        Some(product) if !deployment.reaches(product, site) => {
            Err(ContentError::ForbiddenSite(format!(
                "your Atlassian grant does not reach {} on site {site_id}",
                product.name()
            )))
        }
        _ => Ok(site),
    }
}

fn path_error(rejection: &PathRejection) -> ContentError {
    ContentError::BadRequest(format!("invalid path: {}", rejection.body_text()))
}

fn query_error(rejection: &QueryRejection) -> ContentError {
    ContentError::BadRequest(format!("invalid query string: {}", rejection.body_text()))
}

/// An issue key (`ACME-12`) or id (`10001`).
fn check_issue_key(key: &str) -> Result<(), ContentError> {
    let ok = !key.is_empty()
        && key.len() <= 100
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    ok.then_some(()).ok_or_else(|| {
        ContentError::BadRequest("an issue key is letters, digits, `-` and `_`".into())
    })
}

/// A space key (`ENG`, or `~accountid` for a personal space).
fn check_space_key(key: &str) -> Result<(), ContentError> {
    let ok = !key.is_empty()
        && key.len() <= 255
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '~' | '_' | '-' | ':' | '.'));
    ok.then_some(()).ok_or_else(|| {
        ContentError::BadRequest("a space key is letters, digits and `~_-:.`".into())
    })
}

/// A page id (digits).
fn check_page_id(id: &str) -> Result<(), ContentError> {
    let ok = !id.is_empty() && id.len() <= 20 && id.chars().all(|c| c.is_ascii_digit());
    ok.then_some(())
        .ok_or_else(|| ContentError::BadRequest("a page id is digits".into()))
}

#[derive(Deserialize)]
struct SearchQuery {
    q: Option<String>,
    site: Option<String>,
    limit: Option<usize>,
}

/// One query across the user's sites, Jira issues and Confluence pages merged newest first;
/// a site that fails is listed in `partial_failures`.
#[utoipa::path(get, path = "/search", tag = "atlassian content",
    params(
        ("q" = String, Query, description = "1 to 200 characters, searched for literally"),
        ("site" = Option<String>, Query, description = "one site id; every site of the grant when absent"),
        ("limit" = Option<u32>, Query, description = "1 to 50, default 20"),
    ),
    responses(
        (status = 200, body = search::SearchResults),
        (status = 400, body = ErrorBody, description = "`invalid_request`"),
        (status = 401, body = ErrorBody, description = "`unauthorized`"),
        (status = 403, body = ErrorBody, description = "`forbidden_site`: the site lacks the product; `insufficient_scope`: the grant lacks a scope"),
        (status = 404, body = ErrorBody, description = "`not_connected`, `unknown_site`, `not_found`"),
        (status = 409, body = ErrorBody, description = "`needs_reauth`"),
        (status = 429, body = ErrorBody, description = "`rate_limited`; header `Retry-After`"),
        (status = 500, body = ErrorBody, description = "`internal`"),
        (status = 502, body = ErrorBody, description = "`upstream_unavailable`"),
        (status = 503, body = ErrorBody, description = "`database_unavailable`"),
    ))]
async fn search(
    State(deployment): State<Deployment>,
    State(context): State<ProviderContext>,
    token: FreshToken,
    query: Result<Query<SearchQuery>, QueryRejection>,
) -> Result<Json<search::SearchResults>, ContentError> {
    let Query(query) = query.map_err(|e| query_error(&e))?;
    let q = query.q.as_deref().map(str::trim).unwrap_or("");
    if q.is_empty() {
        return Err(ContentError::BadRequest("`q` is required".into()));
    }
    if q.chars().count() > search::MAX_QUERY_CHARS {
        return Err(ContentError::BadRequest(format!(
            "`q` is longer than {} characters",
            search::MAX_QUERY_CHARS
        )));
    }
    let limit = query.limit.unwrap_or(search::DEFAULT_LIMIT);
    if !(1..=search::MAX_LIMIT).contains(&limit) {
        return Err(ContentError::BadRequest(format!(
            "`limit` is between 1 and {}",
            search::MAX_LIMIT
        )));
    }
    let sites: Vec<&Resource> = match query.site.as_deref() {
        Some(id) => vec![site(&deployment, &token, id, None)?],
        None => token.access.resources.iter().collect(),
    };
    let targets: Vec<(&Resource, Vec<Product>)> = sites
        .into_iter()
        .map(|s| (s, deployment.products(s)))
        .collect();
    let g = gateway(&deployment, &context, &token);
    search::search(&g, &targets, q, limit).await.map(Json)
}

/// Every Jira project of the site (pagination followed, at most 1000).
#[utoipa::path(get, path = "/jira/{site_id}/projects", tag = "atlassian content",
    params(("site_id" = String, Path, description = "the site's cloud id")),
    responses(
        (status = 200, body = jira::Projects),
        (status = 400, body = ErrorBody, description = "`invalid_request`"),
        (status = 401, body = ErrorBody, description = "`unauthorized`"),
        (status = 403, body = ErrorBody, description = "`forbidden_site`: the site lacks the product; `insufficient_scope`: the grant lacks a scope"),
        (status = 404, body = ErrorBody, description = "`not_connected`, `unknown_site`, `not_found`"),
        (status = 409, body = ErrorBody, description = "`needs_reauth`"),
        (status = 429, body = ErrorBody, description = "`rate_limited`; header `Retry-After`"),
        (status = 500, body = ErrorBody, description = "`internal`"),
        (status = 502, body = ErrorBody, description = "`upstream_unavailable`"),
        (status = 503, body = ErrorBody, description = "`database_unavailable`"),
    ))]
async fn jira_projects(
    State(deployment): State<Deployment>,
    State(context): State<ProviderContext>,
    token: FreshToken,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<jira::Projects>, ContentError> {
    let Path(site_id) = path.map_err(|e| path_error(&e))?;
    let site = site(&deployment, &token, &site_id, Some(Product::Jira))?;
    jira::projects(&gateway(&deployment, &context, &token), site)
        .await
        .map(Json)
}

/// One Jira issue, its description and comments as Markdown.
#[utoipa::path(get, path = "/jira/{site_id}/issues/{key}", tag = "atlassian content",
    params(
        ("site_id" = String, Path, description = "the site's cloud id"),
        ("key" = String, Path, description = "an issue key (`ACME-1`) or id"),
    ),
    responses(
        (status = 200, body = jira::IssueView),
        (status = 400, body = ErrorBody, description = "`invalid_request`"),
        (status = 401, body = ErrorBody, description = "`unauthorized`"),
        (status = 403, body = ErrorBody, description = "`forbidden_site`: the site lacks the product; `insufficient_scope`: the grant lacks a scope"),
        (status = 404, body = ErrorBody, description = "`not_connected`, `unknown_site`, `not_found`"),
        (status = 409, body = ErrorBody, description = "`needs_reauth`"),
        (status = 429, body = ErrorBody, description = "`rate_limited`; header `Retry-After`"),
        (status = 500, body = ErrorBody, description = "`internal`"),
        (status = 502, body = ErrorBody, description = "`upstream_unavailable`"),
        (status = 503, body = ErrorBody, description = "`database_unavailable`"),
    ))]
async fn jira_issue(
    State(deployment): State<Deployment>,
    State(context): State<ProviderContext>,
    token: FreshToken,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<jira::IssueView>, ContentError> {
    let Path((site_id, key)) = path.map_err(|e| path_error(&e))?;
    let site = site(&deployment, &token, &site_id, Some(Product::Jira))?;
    check_issue_key(&key)?;
    jira::issue(&gateway(&deployment, &context, &token), site, &key)
        .await
        .map(Json)
}

/// Every Confluence space of the site (pagination followed, at most 1000).
#[utoipa::path(get, path = "/confluence/{site_id}/spaces", tag = "atlassian content",
    params(("site_id" = String, Path, description = "the site's cloud id")),
    responses(
        (status = 200, body = confluence::Spaces),
        (status = 400, body = ErrorBody, description = "`invalid_request`"),
        (status = 401, body = ErrorBody, description = "`unauthorized`"),
        (status = 403, body = ErrorBody, description = "`forbidden_site`: the site lacks the product; `insufficient_scope`: the grant lacks a scope"),
        (status = 404, body = ErrorBody, description = "`not_connected`, `unknown_site`, `not_found`"),
        (status = 409, body = ErrorBody, description = "`needs_reauth`"),
        (status = 429, body = ErrorBody, description = "`rate_limited`; header `Retry-After`"),
        (status = 500, body = ErrorBody, description = "`internal`"),
        (status = 502, body = ErrorBody, description = "`upstream_unavailable`"),
        (status = 503, body = ErrorBody, description = "`database_unavailable`"),
    ))]
async fn confluence_spaces(
    State(deployment): State<Deployment>,
    State(context): State<ProviderContext>,
    token: FreshToken,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<confluence::Spaces>, ContentError> {
    let Path(site_id) = path.map_err(|e| path_error(&e))?;
    let site = site(&deployment, &token, &site_id, Some(Product::Confluence))?;
    confluence::spaces(&gateway(&deployment, &context, &token), site)
        .await
        .map(Json)
}

#[derive(Deserialize)]
struct PageQuery {
    cursor: Option<String>,
    limit: Option<usize>,
    start: Option<usize>,
}

/// One page of the pages of a Confluence space; ask again with `cursor=next_cursor`.
#[utoipa::path(get, path = "/confluence/{site_id}/spaces/{key}/pages", tag = "atlassian content",
    params(
        ("site_id" = String, Path, description = "the site's cloud id"),
        ("key" = String, Path, description = "the space key"),
        ("cursor" = Option<String>, Query, description = "the `next_cursor` of the previous page; the first page without it"),
        ("limit" = Option<u32>, Query, description = "1 to 100, default 25"),
    ),
    responses(
        (status = 200, body = confluence::PageList),
        (status = 400, body = ErrorBody, description = "`invalid_request`: a bad `limit` or `cursor`"),
        (status = 401, body = ErrorBody, description = "`unauthorized`"),
        (status = 403, body = ErrorBody, description = "`forbidden_site`: the site lacks the product; `insufficient_scope`: the grant lacks a scope"),
        (status = 404, body = ErrorBody, description = "`not_connected`, `unknown_site`, `not_found`"),
        (status = 409, body = ErrorBody, description = "`needs_reauth`"),
        (status = 429, body = ErrorBody, description = "`rate_limited`; header `Retry-After`"),
        (status = 500, body = ErrorBody, description = "`internal`"),
        (status = 502, body = ErrorBody, description = "`upstream_unavailable`"),
        (status = 503, body = ErrorBody, description = "`database_unavailable`"),
    ))]
async fn confluence_pages(
    State(deployment): State<Deployment>,
    State(context): State<ProviderContext>,
    token: FreshToken,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<confluence::PageList>, ContentError> {
    let Path((site_id, key)) = path.map_err(|e| path_error(&e))?;
    let Query(query) = query.map_err(|e| query_error(&e))?;
    let site = site(&deployment, &token, &site_id, Some(Product::Confluence))?;
    check_space_key(&key)?;
    if query.start.is_some_and(|start| start > 0) {
        return Err(ContentError::BadRequest(
            "page listings are cursor-paged: pass the `next_cursor` of the previous page as \
             `cursor`"
                .into(),
        ));
    }
    let limit = query.limit.unwrap_or(DEFAULT_PAGE_LIMIT);
    if !(1..=MAX_PAGE_LIMIT).contains(&limit) {
        return Err(ContentError::BadRequest(format!(
            "`limit` is between 1 and {MAX_PAGE_LIMIT}"
        )));
    }
    let cursor = query
        .cursor
        .as_deref()
        .map(|c| confluence::PageCursor::decode(c, &key))
        .transpose()?;
    confluence::pages(
        &gateway(&deployment, &context, &token),
        site,
        &key,
        cursor,
        limit,
    )
    .await
    .map(Json)
}

/// One Confluence page, its body as Markdown.
#[utoipa::path(get, path = "/confluence/{site_id}/pages/{id}", tag = "atlassian content",
    params(
        ("site_id" = String, Path, description = "the site's cloud id"),
        ("id" = String, Path, description = "the page id (digits)"),
    ),
    responses(
        (status = 200, body = confluence::PageView),
        (status = 400, body = ErrorBody, description = "`invalid_request`"),
        (status = 401, body = ErrorBody, description = "`unauthorized`"),
        (status = 403, body = ErrorBody, description = "`forbidden_site`: the site lacks the product; `insufficient_scope`: the grant lacks a scope"),
        (status = 404, body = ErrorBody, description = "`not_connected`, `unknown_site`, `not_found`"),
        (status = 409, body = ErrorBody, description = "`needs_reauth`"),
        (status = 429, body = ErrorBody, description = "`rate_limited`; header `Retry-After`"),
        (status = 500, body = ErrorBody, description = "`internal`"),
        (status = 502, body = ErrorBody, description = "`upstream_unavailable`"),
        (status = 503, body = ErrorBody, description = "`database_unavailable`"),
    ))]
async fn confluence_page(
    State(deployment): State<Deployment>,
    State(context): State<ProviderContext>,
    token: FreshToken,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<confluence::PageView>, ContentError> {
    let Path((site_id, id)) = path.map_err(|e| path_error(&e))?;
    let site = site(&deployment, &token, &site_id, Some(Product::Confluence))?;
    check_page_id(&id)?;
    confluence::page(&gateway(&deployment, &context, &token), site, &id)
        .await
        .map(Json)
}

/// Forwards to `{ATLASSIAN_API_URL}/ex/{product}/{cloudid}/{path}` with the user's token
/// (`path` may hold slashes; `.`, `..`, encoded slashes and dots are refused).
#[utoipa::path(method(get, post, put, delete, patch), path = "/proxy/{product}/{site_id}/{path}",
    tag = "atlassian content",
    params(
        ("product" = String, Path, description = "`jira` or `confluence`"),
        ("site_id" = String, Path, description = "a site of the user's grant that has the product"),
        ("path" = String, Path, description = "the path under the product, e.g. `rest/api/3/myself`"),
    ),
    responses(
        (status = 200, description = "Atlassian's answer, passed through (any status Atlassian gives)"),
        (status = 400, body = ErrorBody, description = "`invalid_request`: the path tries to escape"),
        (status = 401, body = ErrorBody, description = "`unauthorized`"),
        (status = 403, body = ErrorBody, description = "`forbidden_site`: not a site of the grant, or it lacks the product"),
        (status = 404, body = ErrorBody, description = "`not_connected`; an unknown product; or Atlassian's own 404"),
        (status = 409, body = ErrorBody, description = "`needs_reauth`"),
        (status = 413, description = "request body too large"),
        (status = 429, description = "rate limited; header `Retry-After`"),
        (status = 502, body = ErrorBody, description = "`upstream_unavailable`, or an answer over 8 MiB"),
        (status = 503, body = ErrorBody, description = "`database_unavailable`"),
    ))]
async fn proxy(
    State(deployment): State<Deployment>,
    State(context): State<ProviderContext>,
    token: FreshToken,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(e) => {
            return ApiError::new(e.status(), "invalid_request", e.body_text()).into_response();
        }
    };
    let forwarded = async {
        let target = proxy::target(uri.path())?;
        let site = proxy::allowed_site(&token.access.resources, &target, |product, site| {
            deployment.reaches(product, site)
        })?;
        proxy::forward(
            &gateway(&deployment, &context, &token),
            site,
            &target,
            method,
            uri.query(),
            &headers,
            body,
        )
        .await
    };
    match forwarded.await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use axum::body::Body;
    use axum::http::request::Parts;
    use axum::http::{Request, StatusCode};
    use grantry_core::access::{AccessError, FreshAccess};
    use grantry_core::http::{Authentication, Authenticator, TokenSource};
    use grantry_core::provider::build_providers;
    use grantry_core::{Principal, Provider, ProviderContext, ProviderSettings, ProvidersConfig};
    use tower::ServiceExt;

    use super::*;

    /// A context whose callers are all unauthenticated: enough to see which routes exist.
    async fn context() -> ProviderContext {
        struct NoTokens;
        #[async_trait::async_trait]
        impl TokenSource for NoTokens {
            fn provider_id(&self) -> &str {
                "atlassian"
            }
            async fn fresh_token(&self, _user_id: &str) -> Result<FreshAccess, AccessError> {
                Err(AccessError::NotConnected)
            }
        }
        struct Nobody;
        #[async_trait::async_trait]
        impl Authenticator for Nobody {
            async fn authenticate(&self, _parts: &Parts) -> Result<Principal, ApiError> {
                Err(ApiError::unauthorized("nobody signs in here"))
            }
        }
        let store = grantry_server::SqlStore::connect("sqlite::memory:")
            .await
            .expect("in-memory store");
        ProviderContext::new(
            Arc::new(NoTokens),
            Authentication::new(Arc::new(Nobody)),
            Arc::new(store),
        )
    }

    /// The Atlassian provider as a deployment that links this crate builds it.
    fn provider() -> Arc<dyn Provider> {
        let values: BTreeMap<String, String> = [
            ("enabled", "true"),
            ("client_id", "cid"),
            ("client_secret", "csecret"),
            ("redirect_uri", "http://localhost:3000/settings/connections"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let config = ProvidersConfig::new([ProviderSettings::new(grantry_atlassian::ID, values)]);
        build_providers(&config).expect("providers").remove(0)
    }

    #[test]
    fn the_document_lists_every_route() {
        let doc = serde_json::to_value(provider().openapi().expect("openapi")).expect("json");
        let paths = doc["paths"].as_object().expect("paths");
        for (path, methods) in [
            ("/sites", &["get"][..]),
            ("/search", &["get"]),
            ("/jira/{site_id}/projects", &["get"]),
            ("/jira/{site_id}/issues/{key}", &["get"]),
            ("/confluence/{site_id}/spaces", &["get"]),
            ("/confluence/{site_id}/spaces/{key}/pages", &["get"]),
            ("/confluence/{site_id}/pages/{id}", &["get"]),
            (
                "/proxy/{product}/{site_id}/{path}",
                &["get", "post", "put", "delete", "patch"],
            ),
        ] {
            for method in methods {
                assert!(
                    paths.get(path).and_then(|p| p.get(*method)).is_some(),
                    "{method} {path}"
                );
            }
        }
        assert_eq!(paths.len(), 8);
        let hit = &doc["components"]["schemas"]["Hit"]["properties"];
        for field in [
            "kind",
            "site_id",
            "id",
            "title",
            "url",
            "excerpt",
            "updated_at",
        ] {
            assert!(hit.get(field).is_some(), "Hit.{field}: {hit}");
        }
        let page = &doc["components"]["schemas"]["PageView"]["properties"];
        assert!(page.get("type").is_some() && page.get("kind").is_none());
    }

    #[tokio::test]
    async fn linking_the_crate_mounts_the_routes_on_the_provider() {
        let router = provider().routes(&context().await).expect("routes");
        for path in [
            "/sites",
            "/search?q=x",
            "/jira/c1/projects",
            "/jira/c1/issues/ACME-1",
            "/confluence/c1/spaces",
            "/confluence/c1/spaces/ENG/pages",
            "/confluence/c1/pages/1",
            "/proxy/jira/c1/rest/api/3/myself",
        ] {
            let request = Request::get(path).body(Body::empty()).expect("request");
            let response = router.clone().oneshot(request).await.expect("response");
            assert_ne!(response.status(), StatusCode::NOT_FOUND, "{path}");
        }
        let request = Request::get("/nowhere")
            .body(Body::empty())
            .expect("request");
        let response = router.oneshot(request).await.expect("response");
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn keys_and_ids_are_checked() {
        assert!(check_issue_key("ACME-12").is_ok());
        assert!(check_issue_key("10001").is_ok());
        for bad in ["", "A/B", "A..B", "A B", "ÄCME-1"] {
            assert!(check_issue_key(bad).is_err(), "{bad}");
        }
        assert!(check_space_key("ENG").is_ok());
        assert!(check_space_key("~557058:f3a1").is_ok());
        assert!(check_space_key("E/NG").is_err());
        assert!(check_page_id("123456").is_ok());
        assert!(check_page_id("12a").is_err());
        assert!(check_page_id(&"1".repeat(21)).is_err());
    }
}
