//! The callback's parameters: what the provider sent back to the redirect URI, validated.

use crate::http::ApiError;
use crate::secret::{AuthorizationCode, StateToken};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;

/// The JSON body of a callback: `{code, state}` or `{error, state}`, plus `iss` when sent.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct CallbackBody {
    /// The authorization code.
    pub code: Option<String>,
    /// The state the authorization began with.
    pub state: Option<String>,
    /// The provider's error, e.g. `access_denied`.
    pub error: Option<String>,
    /// The provider's explanation of the error.
    pub error_description: Option<String>,
    /// The `iss` parameter of the redirect (RFC 9207), checked by providers that know their issuer.
    pub iss: Option<String>,
}

/// What the provider answered.
#[derive(Debug)]
pub enum Outcome {
    /// The user consented: a code to exchange.
    Code(AuthorizationCode),
    /// The user declined or the provider failed.
    Error {
        /// The OAuth error code.
        error: String,
        /// Its explanation, possibly empty.
        description: String,
    },
}

/// A validated callback.
#[derive(Debug)]
pub struct Callback {
    /// The state it claims.
    pub state: StateToken,
    /// The code or the error.
    pub outcome: Outcome,
    /// `iss`, when present and not empty.
    pub issuer: Option<String>,
}

fn invalid(message: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

impl TryFrom<CallbackBody> for Callback {
    type Error = ApiError;

    fn try_from(body: CallbackBody) -> Result<Self, ApiError> {
        let state = non_empty(body.state).ok_or_else(|| invalid("the callback needs `state`"))?;
        let outcome = match (non_empty(body.code), non_empty(body.error)) {
            (_, Some(error)) => Outcome::Error {
                error,
                description: body.error_description.unwrap_or_default(),
            },
            (Some(code), None) => Outcome::Code(AuthorizationCode::new(code)),
            (None, None) => return Err(invalid("the callback needs `code` or `error`")),
        };
        Ok(Self {
            state: StateToken::new(state),
            outcome,
            issuer: non_empty(body.iss),
        })
    }
}

/// Parses and validates a callback body given as JSON bytes.
pub fn parse(json: &[u8]) -> Result<Callback, ApiError> {
    let body: CallbackBody = serde_json::from_slice(json).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("the body is not a callback: {e}"),
        )
    })?;
    Callback::try_from(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_errors_and_missing_fields() {
        let c = parse(br#"{"code":"c","state":"s","iss":"https://i"}"#).expect("valid");
        assert!(matches!(c.outcome, Outcome::Code(ref code) if code.secret() == "c"));
        assert_eq!(c.state.secret(), "s");
        assert_eq!(c.issuer.as_deref(), Some("https://i"));
        let c = parse(br#"{"error":"access_denied","state":"s","code":"ignored"}"#).expect("valid");
        assert!(matches!(c.outcome, Outcome::Error { ref error, .. } if error == "access_denied"));
        for bad in [
            &br#"{"code":"c"}"#[..],
            br#"{"state":"s"}"#,
            br#"{"state":"","code":"c"}"#,
            b"[]",
            b"{",
            b"",
        ] {
            assert_eq!(
                parse(bad).expect_err("invalid").status,
                StatusCode::BAD_REQUEST
            );
        }
        assert!(
            !format!("{:?}", parse(br#"{"code":"secret-code","state":"s"}"#))
                .contains("secret-code")
        );
    }
}
