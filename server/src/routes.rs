//! The generic connection routes every provider gets under `/api/v1/{provider}`.

use grantry_core::events::DeleteReason;
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRef, OriginalUri, Path, Query, State};
use axum::http::header::{self, CACHE_CONTROL, LINK};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use grantry_core::http::Authentication;
use grantry_core::store::{ConnectionKey, ConnectionPageQuery, ConnectionSummary};
use grantry_core::{ApiError, ErrorBody, Principal, Provider, Resource};
use serde::{Deserialize, Serialize};
use tracing::Instrument;
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::app::AppState;
use crate::paging::{self, Page, PageParams};
use grantry_core::callback::{Callback, CallbackBody};

/// The header of a disconnect's answer that tells whether the provider revoked the grant:
/// `revoked`, `unsupported` (the provider has no revocation) or `failed` (best effort failed).
pub(crate) const REVOCATION_HEADER: &str = "grantry-revocation";

#[derive(Clone)]
struct RouteState {
    app: AppState,
    provider: Arc<dyn Provider>,
}

impl FromRef<RouteState> for Authentication {
    fn from_ref(state: &RouteState) -> Self {
        state.app.authentication().clone()
    }
}

/// The router of one provider: generic routes plus the provider's own.
pub(crate) fn provider_router(app: AppState, provider: Arc<dyn Provider>) -> Router {
    let generic = Router::new()
        .route("/connection/authorize", post(authorize))
        .route("/connection/callback", post(callback))
        .route("/connection/status", get(status))
        .route("/connection", delete(disconnect))
        .route("/admin/connections", get(admin_list))
        .route("/admin/connections/{user_id}", delete(admin_delete))
        .route("/admin/token-handouts", get(admin_token_handouts));
    let generic = if app.settings().access_token_route {
        generic.route(
            "/admin/connections/{user_id}/access-token",
            get(admin_access_token),
        )
    } else {
        generic
    };
    let context = app.provider_context(&provider);
    let generic = generic.with_state(RouteState {
        app,
        provider: provider.clone(),
    });
    match provider.routes(&context) {
        Some(extra) => generic.merge(extra),
        None => generic,
    }
}

#[derive(Serialize, ToSchema)]
struct AccountView<'a> {
    id: &'a str,
    name: Option<&'a str>,
    email: Option<&'a str>,
}

/// The status object of a connection (and, with `user_id`, its admin summary).
#[derive(Serialize, ToSchema)]
struct StatusView<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
    connection_id: &'a str,
    provider: &'a str,
    connected: bool,
    status: &'a str,
    account: AccountView<'a>,
    scopes: Vec<&'a str>,
    #[schema(value_type = Vec<Resource>)]
    sites: &'a [Resource],
    connected_at: DateTime<Utc>,
    access_token_expires_at: Option<DateTime<Utc>>,
    refresh_token_expires_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_failure: Option<&'a str>,
}

fn view(record: &ConnectionSummary, with_user: bool) -> StatusView<'_> {
    StatusView {
        user_id: with_user.then_some(record.user_id.as_str()),
        connection_id: &record.id,
        provider: &record.provider,
        connected: true,
        status: record.status.as_str(),
        account: AccountView {
            id: &record.account.id,
            name: record.account.name.as_deref(),
            email: record.account.email.as_deref(),
        },
        scopes: record.scopes.iter().collect(),
        sites: &record.resources,
        connected_at: record.connected_at,
        access_token_expires_at: record.access_expires_at,
        refresh_token_expires_at: record.refresh_expires_at.or(record.refresh_idle_expires_at),
        last_failure: if with_user {
            record.last_failure.as_deref()
        } else {
            None
        },
    }
}

/// Starts a connection: a consent URL with a single-use state bound to the user (10 minutes).
#[utoipa::path(post, path = "/connection/authorize", tag = "connection",
    responses(
        (status = 200, body = AuthorizeResponse),
        (status = 401, body = ErrorBody, description = "`unauthorized`"),
        (status = 503, body = ErrorBody, description = "`database_unavailable`"),
    ))]
async fn authorize(
    State(s): State<RouteState>,
    principal: Principal,
) -> Result<Json<AuthorizeResponse>, ApiError> {
    let begun = s
        .app
        .connections()
        .begin(&principal.user_id, s.provider.as_ref())
        .await?;
    Ok(Json(AuthorizeResponse {
        authorization_url: begun.url.to_string(),
        state: begun.state.secret().to_owned(),
        expires_in: begun.expires_in.num_seconds(),
    }))
}

fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

fn invalid_json(rejection: &JsonRejection) -> ApiError {
    ApiError::new(rejection.status(), "invalid_request", rejection.body_text())
}

/// Completes a connection with the code (or error) and state the provider sent back.
#[utoipa::path(post, path = "/connection/callback", tag = "connection", request_body = CallbackBody,
    responses(
        (status = 200, body = StatusView),
        (status = 400, body = ErrorBody, description = "`invalid_state`, `access_denied`, `authorization_failed`, `invalid_request`"),
        (status = 401, body = ErrorBody, description = "`unauthorized`"),
        (status = 413, description = "body too large"),
        (status = 415, body = ErrorBody, description = "`invalid_request`: not JSON"),
        (status = 422, body = ErrorBody, description = "`invalid_request`: wrong field types"),
        (status = 502, body = ErrorBody, description = "`upstream_unavailable`"),
        (status = 503, body = ErrorBody, description = "`database_unavailable`"),
    ))]
async fn callback(
    State(s): State<RouteState>,
    principal: Principal,
    body: Result<Json<CallbackBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(|r| invalid_json(&r))?;
    let callback = Callback::try_from(body)?;
    let record = s
        .app
        .connections()
        .complete(&principal.user_id, s.provider.as_ref(), callback)
        .await?;
    // What the provider sets up upstream for the connection runs off the request's path.
    let (provider, context, connection) = (
        s.provider.clone(),
        s.app.provider_context(&s.provider),
        record.clone(),
    );
    // Its own span (the request's ends with the answer), linked to the request's.
    let span = tracing::info_span!(
        parent: None,
        "connected_hook",
        provider = provider.id(),
        request_id = grantry_core::telemetry::request_id().as_deref(),
    );
    span.follows_from(tracing::Span::current());
    tokio::spawn(async move { provider.connected(&context, &connection).await }.instrument(span));
    Ok(Json(view(&ConnectionSummary::of(&record), false)).into_response())
}

/// The user's connection to this provider, or `{"provider","connected":false}`.
#[utoipa::path(get, path = "/connection/status", tag = "connection",
    responses(
        (status = 200, body = StatusView, description = "the status object, or `{\"provider\",\"connected\":false}`"),
        (status = 401, body = ErrorBody, description = "`unauthorized`"),
        (status = 503, body = ErrorBody, description = "`database_unavailable`"),
    ))]
async fn status(State(s): State<RouteState>, principal: Principal) -> Result<Response, ApiError> {
    let record = s
        .app
        .connections()
        .status(&principal.user_id, s.provider.as_ref())
        .await?;
    Ok(match record {
        Some(r) => Json(view(&r, false)).into_response(),
        None => Json(NotConnected {
            provider: s.provider.id(),
            connected: false,
        })
        .into_response(),
    })
}

/// The status of a user without a connection.
#[derive(Serialize)]
struct NotConnected<'a> {
    provider: &'a str,
    connected: bool,
}

/// How long a provider may undo its upstream set-up before a connection is deleted anyway.
const DISCONNECT_HOOK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn remove(s: &RouteState, user_id: &str, reason: DeleteReason) -> Result<Response, ApiError> {
    if let Ok(Some(connection)) = s.app.store().connection(user_id, s.provider.id()).await {
        // Best effort, and bounded: a slow upstream never keeps the connection from going.
        let context = s.app.provider_context(&s.provider);
        if tokio::time::timeout(
            DISCONNECT_HOOK_TIMEOUT,
            s.provider.disconnecting(&context, &connection),
        )
        .await
        .is_err()
        {
            tracing::warn!(
                provider = s.provider.id(),
                "the provider's disconnect upkeep took too long; deleting the connection anyway"
            );
        }
    }
    let revocation = s
        .app
        .connections()
        .disconnect(user_id, s.provider.as_ref(), reason)
        .await?;
    Ok((
        StatusCode::NO_CONTENT,
        [(REVOCATION_HEADER, revocation.as_str())],
    )
        .into_response())
}

/// Deletes the user's connection (revoking it upstream when the provider can).
#[utoipa::path(delete, path = "/connection", tag = "connection",
    responses(
        (status = 204, description = "deleted; header `grantry-revocation`: revoked, unsupported or failed"),
        (status = 401, body = ErrorBody, description = "`unauthorized`"),
        (status = 404, body = ErrorBody, description = "`not_connected`"),
        (status = 503, body = ErrorBody, description = "`database_unavailable`"),
    ))]
async fn disconnect(
    State(s): State<RouteState>,
    principal: Principal,
) -> Result<Response, ApiError> {
    remove(&s, &principal.user_id, DeleteReason::User).await
}

/// Admin: one page of this provider's connections in user-id order, never a token.
#[utoipa::path(get, path = "/admin/connections", tag = "admin", params(PageParams),
    responses(
        (status = 200, body = Vec<StatusView>,
            description = "at most `limit` connection summaries ordered by `user_id`",
            headers(("Link" = String,
                description = "RFC 8288 `</api/v1/{p}/admin/connections?limit=…&cursor=…>; rel=\"next\"`, \
                    present only when more connections follow"))),
        (status = 400, body = ErrorBody, description = "`invalid_request`: bad `limit`, `status` or `cursor`"),
        (status = 401, body = ErrorBody, description = "`unauthorized`"),
        (status = 403, body = ErrorBody, description = "`forbidden`"),
        (status = 503, body = ErrorBody, description = "`database_unavailable`"),
    ))]
async fn admin_list(
    State(s): State<RouteState>,
    principal: Principal,
    OriginalUri(uri): OriginalUri,
    query: Result<Query<PageParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    let page = Page::parse(query)?;
    let after = page.after.as_ref().map(|user_id| ConnectionKey {
        provider: s.provider.id().to_owned(),
        user_id: user_id.clone(),
    });
    // One more than asked tells whether a next page exists.
    let mut list = s
        .app
        .store()
        .connection_summaries_page(&ConnectionPageQuery {
            provider: Some(s.provider.id()),
            status: page.status,
            after: after.as_ref(),
            limit: page.limit + 1,
        })
        .await
        .map_err(|e| ApiError::database(&e))?;
    let more = list.len() > page.limit as usize;
    list.truncate(page.limit as usize);
    let mut response = Json(list.iter().map(|r| view(r, true)).collect::<Vec<_>>()).into_response();
    if more && let Some(last) = list.last() {
        response
            .headers_mut()
            .insert(header::LINK, page.next_link(uri.path(), &last.user_id)?);
    }
    Ok(response)
}

/// Admin: deletes a user's connection.
#[utoipa::path(delete, path = "/admin/connections/{user_id}", tag = "admin",
    params(("user_id" = String, Path, description = "the user's id")),
    responses(
        (status = 204, description = "deleted; header `grantry-revocation`"),
        (status = 401, body = ErrorBody, description = "`unauthorized`"),
        (status = 403, body = ErrorBody, description = "`forbidden`"),
        (status = 404, body = ErrorBody, description = "`not_connected`"),
        (status = 503, body = ErrorBody, description = "`database_unavailable`"),
    ))]
async fn admin_delete(
    State(s): State<RouteState>,
    principal: Principal,
    Path(user_id): Path<String>,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    remove(&s, &user_id, DeleteReason::Admin).await
}

/// Admin, bearer only: a fresh access token of a user's connection, refreshed when due, never
/// cached (`Cache-Control: no-store`) and audited (see `/admin/token-handouts`). Not mounted when
/// `GRANTRY_ACCESS_TOKEN_ROUTE=false`.
#[utoipa::path(get, path = "/admin/connections/{user_id}/access-token", tag = "admin",
    params(("user_id" = String, Path, description = "the user's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = AccessTokenResponse, headers(("cache-control" = String, description = "`no-store`"))),
        (status = 401, body = ErrorBody, description = "`unauthorized`"),
        (status = 403, body = ErrorBody, description = "`forbidden` (not an admin), `bearer_required` (signed in by the cookie)"),
        (status = 404, body = ErrorBody, description = "`not_connected`; `not_found` when the route is turned off"),
        (status = 409, body = ErrorBody, description = "`needs_reauth`"),
        (status = 502, body = ErrorBody, description = "`upstream_unavailable`"),
        (status = 503, body = ErrorBody, description = "`database_unavailable`"),
    ))]
async fn admin_access_token(
    State(s): State<RouteState>,
    principal: Principal,
    Path(user_id): Path<String>,
) -> Result<Response, ApiError> {
    let principal = principal.require_admin()?;
    if principal.by_cookie() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "bearer_required",
            "this route hands out a live token: send Authorization: Bearer, not the cookie",
        ));
    }
    let access = s
        .app
        .refresher()
        .fresh_token(&user_id, &s.provider)
        .await
        .map_err(|e| e.into_api_error(s.provider.id()))?;
    // No audit row, no token.
    let handout = s
        .app
        .store()
        .record_token_handout(s.provider.id(), &principal.user_id, &user_id, Utc::now())
        .await
        .map_err(|e| ApiError::database(&e))?;
    tracing::info!(provider = s.provider.id(), user = %user_id, admin = %principal.user_id, handout = handout.id, "access token handed out");
    Ok((
        [(CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(AccessTokenResponse {
            access_token: access.access_token.secret().to_owned(),
            token_type: access.token_type,
            expires_at: access.expires_at,
        }),
    )
        .into_response())
}

/// The query of the hand-out audit's pages.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct PageQuery {
    /// At most this many rows (1 to 1000, default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// Where the previous page ended: the `cursor` of its `Link: rel="next"`.
    cursor: Option<String>,
}

/// Admin: who took which user's access token and when, newest first, keyset-paged; the next
/// page in an RFC 8288 `Link: <…>; rel="next"` header.
#[utoipa::path(get, path = "/admin/token-handouts", tag = "admin",
    params(PageQuery),
    responses(
        (status = 200, body = Vec<HandoutView>, headers(("link" = String, description = "`<…>; rel=\"next\"` when there is a next page"))),
        (status = 400, body = ErrorBody, description = "`invalid_request`: a bad limit or cursor"),
        (status = 401, body = ErrorBody, description = "`unauthorized`"),
        (status = 403, body = ErrorBody, description = "`forbidden`"),
        (status = 503, body = ErrorBody, description = "`database_unavailable`"),
    ))]
async fn admin_token_handouts(
    State(s): State<RouteState>,
    principal: Principal,
    OriginalUri(uri): OriginalUri,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    let Query(query) = query.map_err(|r| bad_request("invalid_request", r.body_text()))?;
    let limit = paging::parse_limit(query.limit.as_deref())?;
    let before = paging::parse_id_cursor(query.cursor.as_deref())?;
    let mut rows = s
        .app
        .store()
        .token_handouts(s.provider.id(), before, limit + 1)
        .await
        .map_err(|e| ApiError::database(&e))?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let views: Vec<HandoutView<'_>> = rows
        .iter()
        .map(|h| HandoutView {
            id: h.id,
            provider: &h.provider,
            admin_id: &h.admin_id,
            user_id: &h.user_id,
            handed_out_at: h.handed_out_at,
        })
        .collect();
    let mut response = Json(&views).into_response();
    if more && let Some(last) = rows.last() {
        let (limit, cursor) = (limit.to_string(), last.id.to_string());
        let link = paging::next_link(uri.path(), &[("limit", &limit), ("cursor", &cursor)])?;
        response.headers_mut().insert(LINK, link);
    }
    Ok(response)
}

/// One audited hand-out of an access token.
#[derive(Serialize, ToSchema)]
struct HandoutView<'a> {
    /// Increasing id.
    id: i64,
    /// The provider id.
    provider: &'a str,
    /// The admin who took the token.
    admin_id: &'a str,
    /// The user whose token it was.
    user_id: &'a str,
    /// When (RFC 3339).
    handed_out_at: DateTime<Utc>,
}

/// The answer of `connection/authorize`.
#[derive(Serialize, ToSchema)]
pub(crate) struct AuthorizeResponse {
    /// Where to send the user for consent.
    authorization_url: String,
    /// The single-use state (also inside the URL).
    state: String,
    /// Seconds the state stays valid.
    expires_in: i64,
}

/// The answer of the admin access-token route.
#[derive(Serialize, ToSchema)]
pub(crate) struct AccessTokenResponse {
    /// The access token.
    access_token: String,
    /// `Bearer`.
    token_type: String,
    /// When it expires (RFC 3339).
    expires_at: Option<DateTime<Utc>>,
}

/// The generic routes of one provider, paths relative to `/api/v1/{provider}`.
#[derive(OpenApi)]
#[openapi(
    paths(
        authorize,
        callback,
        status,
        disconnect,
        admin_list,
        admin_delete,
        admin_access_token,
        admin_token_handouts
    ),
    components(schemas(
        ErrorBody,
        AuthorizeResponse,
        AccessTokenResponse,
        StatusView,
        AccountView,
        CallbackBody,
        Resource,
        HandoutView
    ))
)]
pub(crate) struct GenericApi;
