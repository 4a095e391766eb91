//! HTTP building blocks shared by the server and provider routes: JSON errors, the
//! authenticated principal, the context of a provider's routes and the extractor of a fresh
//! access token.

use std::sync::Arc;

use async_trait::async_trait;
use axum::Json;
use axum::extract::{FromRef, FromRequestParts};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::access::{AccessError, FreshAccess};
use crate::error::Error;
use crate::store::TokenStore;
use crate::telemetry::Telemetry;

/// An HTTP error answered as `{"error": code, "message": text}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// A stable machine-readable code.
    pub code: &'static str,
    /// A human explanation, never containing a secret.
    pub message: String,
}

/// The JSON body of every error: `{"error": code, "message": text}`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A stable machine-readable code, e.g. `not_connected`.
    pub error: String,
    /// A human explanation.
    pub message: String,
    /// The id of the request that failed (its `x-request-id`), for finding its log lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl ApiError {
    /// An error with the given status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// 401 `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403 `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404 `not_connected`.
    pub fn not_connected(provider: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_connected",
            format!("no {provider} connection for this user"),
        )
    }

    /// 409 `needs_reauth`.
    pub fn needs_reauth(provider: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "needs_reauth",
            format!("the {provider} connection must be authorised again"),
        )
    }

    /// 502 `upstream_unavailable`.
    pub fn upstream(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "upstream_unavailable", message)
    }

    /// 503 `database_unavailable`, logging the cause.
    pub fn database(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "database failure");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the database is unavailable",
        )
    }

    /// 500 `internal`, logging the cause (for faults of the server itself, never of the client).
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal failure");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "an internal error occurred",
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: self.code.to_owned(),
                message: self.message,
                request_id: crate::telemetry::request_id(),
            }),
        )
            .into_response()
    }
}

/// The role of an authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// May use the admin routes.
    Admin,
    /// An ordinary user.
    User,
}

/// How a request proved who makes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// A credential the client sent on purpose (`Authorization: Bearer`); browsers never attach it
    /// to a cross-site request by themselves.
    Bearer,
    /// A cookie, which browsers attach by themselves: unsafe methods must come from an allowed origin.
    Cookie,
}

/// The authenticated user of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user's id (the JWT `sub`).
    pub user_id: String,
    /// The user's role.
    pub role: Role,
    /// Where the credential came from.
    pub credential: Credential,
}

impl Principal {
    /// Whether the user is an admin.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Whether the credential came from a cookie (attached by the browser on its own).
    pub fn by_cookie(&self) -> bool {
        self.credential == Credential::Cookie
    }

    /// The principal if admin, else 403.
    pub fn require_admin(self) -> Result<Self, ApiError> {
        if self.is_admin() {
            Ok(self)
        } else {
            Err(ApiError::forbidden("this route is for admins"))
        }
    }
}

/// Decides who makes a request; embedders replace the JWT default with their own.
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// The principal of the request, or an error (401) when there is none.
    async fn authenticate(&self, parts: &Parts) -> Result<Principal, ApiError>;
}

/// The authenticator of contexts that serve no request.
struct NoCallers;

#[async_trait]
impl Authenticator for NoCallers {
    async fn authenticate(&self, _parts: &Parts) -> Result<Principal, ApiError> {
        Err(ApiError::unauthorized(
            "background upkeep serves no request",
        ))
    }
}

/// The authenticator a router's state provides to the [`Principal`] extractor.
#[derive(Clone)]
pub struct Authentication(Arc<dyn Authenticator>);

impl std::fmt::Debug for Authentication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authentication")
    }
}

impl Authentication {
    /// Requests are authenticated by `authenticator`.
    pub fn new(authenticator: Arc<dyn Authenticator>) -> Self {
        Self(authenticator)
    }

    /// The principal of the request, remembered in its extensions so that it is decided once.
    pub async fn principal(&self, parts: &mut Parts) -> Result<Principal, ApiError> {
        if let Some(p) = parts.extensions.get::<Principal>() {
            return Ok(p.clone());
        }
        let principal = self.0.authenticate(parts).await?;
        parts.extensions.insert(principal.clone());
        Ok(principal)
    }
}

/// The authenticated user, for routers whose state provides an [`Authentication`].
impl<S> FromRequestParts<S> for Principal
where
    S: Send + Sync,
    Authentication: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Authentication::from_ref(state).principal(parts).await
    }
}

/// Fresh access tokens of one provider's connections (the server's refresher, bound to the
/// provider whose routes are served).
#[async_trait]
pub trait TokenSource: Send + Sync + 'static {
    /// The provider's id.
    fn provider_id(&self) -> &str;

    /// A usable access token of `user_id`'s connection, refreshed first when due.
    async fn fresh_token(&self, user_id: &str) -> Result<FreshAccess, AccessError>;
}

/// What the server hands to [`Provider::routes`](crate::Provider::routes): the provider's fresh
/// tokens and the authentication of callers. A router whose state provides it (`FromRef`) may use
/// the [`FreshToken`] extractor, and [`Principal`] when it also provides the context's
/// [`Authentication`]; one whose state does not, does not compile.
#[derive(Clone)]
pub struct ProviderContext {
    tokens: Arc<dyn TokenSource>,
    authentication: Authentication,
    store: Arc<dyn TokenStore>,
    telemetry: Telemetry,
}

impl std::fmt::Debug for ProviderContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderContext")
            .field("provider", &self.tokens.provider_id())
            .finish_non_exhaustive()
    }
}

impl ProviderContext {
    /// A context over a provider's token source, the callers' authentication and the store.
    pub fn new(
        tokens: Arc<dyn TokenSource>,
        authentication: Authentication,
        store: Arc<dyn TokenStore>,
    ) -> Self {
        Self {
            tokens,
            authentication,
            store,
            telemetry: Telemetry::default(),
        }
    }

    /// This context recording its upstream calls into `telemetry`.
    #[must_use]
    pub fn with_telemetry(mut self, telemetry: Telemetry) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// Where the provider's routes record their upstream calls.
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// The context of background upkeep (maintenance passes): the provider's fresh tokens and
    /// the store, serving no request (its authentication refuses every caller).
    pub fn for_upkeep(tokens: Arc<dyn TokenSource>, store: Arc<dyn TokenStore>) -> Self {
        Self::new(tokens, Authentication::new(Arc::new(NoCallers)), store)
    }

    /// The token store: a provider's subscriptions and receipts, and the events it records.
    pub fn store(&self) -> &Arc<dyn TokenStore> {
        &self.store
    }

    /// The id of the provider whose routes this context serves.
    pub fn provider_id(&self) -> &str {
        self.tokens.provider_id()
    }

    /// A route state of this context and the provider's own `data`.
    pub fn with<T>(&self, data: T) -> RouteState<T> {
        RouteState {
            context: self.clone(),
            data,
        }
    }

    /// How callers are authenticated.
    pub fn authentication(&self) -> &Authentication {
        &self.authentication
    }

    /// A usable access token of `user_id`'s connection, refreshed first when due.
    pub async fn fresh_token(&self, user_id: &str) -> Result<FreshAccess, ApiError> {
        self.tokens
            .fresh_token(user_id)
            .await
            .map_err(|e| e.into_api_error(self.provider_id()))
    }
}

/// A provider route's state: the server's [`ProviderContext`] beside the provider's own data, so
/// that handlers take [`FreshToken`], [`Principal`] and `State<RouteState<T>>` without more glue.
#[derive(Debug, Clone)]
pub struct RouteState<T> {
    /// What the server handed to [`Provider::routes`](crate::Provider::routes).
    pub context: ProviderContext,
    /// The provider's own data (an upstream client, URLs…).
    pub data: T,
}

impl<T: Clone> FromRef<RouteState<T>> for ProviderContext {
    fn from_ref(state: &RouteState<T>) -> Self {
        state.context.clone()
    }
}

impl<T: Clone> FromRef<RouteState<T>> for Authentication {
    fn from_ref(state: &RouteState<T>) -> Self {
        state.context.authentication.clone()
    }
}

impl FromRef<ProviderContext> for Authentication {
    fn from_ref(context: &ProviderContext) -> Self {
        context.authentication.clone()
    }
}

/// A fresh access token of the requesting user for the route's provider, refreshed on the way in.
///
/// The router's state must provide the [`ProviderContext`] the server handed to
/// [`Provider::routes`](crate::Provider::routes):
///
/// ```
/// use axum::extract::FromRef;
/// use axum::{Router, routing::get};
/// use grantry_core::{FreshToken, ProviderContext};
///
/// #[derive(Clone)]
/// struct Routes {
///     context: ProviderContext,
/// }
///
/// impl FromRef<Routes> for ProviderContext {
///     fn from_ref(routes: &Routes) -> Self {
///         routes.context.clone()
///     }
/// }
///
/// async fn handler(token: FreshToken) -> String {
///     token.access.connection_id
/// }
///
/// fn routes(context: &ProviderContext) -> Router {
///     Router::new()
///         .route("/x", get(handler))
///         .with_state(Routes { context: context.clone() })
/// }
/// ```
///
/// A router without it is refused when it is built, not answered with a 500 at run time:
///
/// ```compile_fail
/// use axum::{Router, routing::get};
/// use grantry_core::FreshToken;
///
/// async fn handler(token: FreshToken) -> String {
///     token.access.connection_id
/// }
///
/// fn routes() -> Router {
///     Router::new().route("/x", get(handler))
/// }
/// ```
#[derive(Debug, Clone)]
pub struct FreshToken {
    /// The user.
    pub principal: Principal,
    /// The token and its connection.
    pub access: FreshAccess,
}

impl<S> FromRequestParts<S> for FreshToken
where
    S: Send + Sync,
    ProviderContext: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let context = ProviderContext::from_ref(state);
        let principal = context.authentication.principal(parts).await?;
        let access = context.fresh_token(&principal.user_id).await?;
        Ok(Self { principal, access })
    }
}

impl AccessError {
    /// The HTTP error for this failure.
    pub fn into_api_error(self, provider: &str) -> ApiError {
        match self {
            Self::NotConnected => ApiError::not_connected(provider),
            Self::NeedsReauth => ApiError::needs_reauth(provider),
            Self::Core(e @ Error::Binding) => ApiError::new(
                axum::http::StatusCode::CONFLICT,
                "needs_reauth",
                format!("{provider}: {e}"),
            ),
            Self::Upstream(e) => ApiError::upstream(format!("{provider}: {e}")),
            Self::Core(Error::Store(e)) => ApiError::database(&e),
            Self::Core(e) => ApiError::internal(&e),
        }
    }
}
