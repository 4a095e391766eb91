//! HTTP building blocks shared by the server and provider routes: JSON errors, the
//! authenticated principal, and the extractor of a fresh access token.

use std::sync::Arc;

use async_trait::async_trait;
use axum::Json;
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::provider::Provider;
use crate::refresh::{FreshAccess, Refresher};

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

/// The authenticator a server installs as a request extension.
#[derive(Clone)]
pub struct AuthenticatorHandle(pub Arc<dyn Authenticator>);

/// The provider whose routes serve the request, installed as a request extension.
#[derive(Clone)]
pub struct ProviderHandle(pub Arc<dyn Provider>);

/// The refresh manager, installed as a request extension.
#[derive(Clone)]
pub struct RefresherHandle(pub Arc<Refresher>);

fn extension<T: Clone + Send + Sync + 'static>(parts: &Parts, what: &str) -> Result<T, ApiError> {
    parts
        .extensions
        .get::<T>()
        .cloned()
        .ok_or_else(|| ApiError::internal(&format!("{what} is not installed on this router")))
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(p) = parts.extensions.get::<Principal>() {
            return Ok(p.clone());
        }
        let auth: AuthenticatorHandle = extension(parts, "the authenticator")?;
        let principal = auth.0.authenticate(parts).await?;
        parts.extensions.insert(principal.clone());
        Ok(principal)
    }
}

/// A fresh access token of the requesting user for the route's provider, refreshed on the way in.
#[derive(Debug, Clone)]
pub struct FreshToken {
    /// The user.
    pub principal: Principal,
    /// The token and its connection.
    pub access: FreshAccess,
}

impl<S: Send + Sync> FromRequestParts<S> for FreshToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let principal = Principal::from_request_parts(parts, state).await?;
        let provider: ProviderHandle = extension(parts, "the provider")?;
        let refresher: RefresherHandle = extension(parts, "the refresher")?;
        let access = refresher
            .0
            .fresh_token(&principal.user_id, &provider.0)
            .await
            .map_err(|e| e.into_api_error(provider.0.id()))?;
        Ok(Self { principal, access })
    }
}
