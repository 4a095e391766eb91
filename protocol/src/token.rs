//! Token-endpoint answers (RFC 6749 sections 5.1 and 5.2) with every quirk providers show:
//! `expires_in` as a number or a string, `scope` space- or comma-separated or an array, errors
//! answered with 200, a lower-case `bearer`, refresh answers without a refresh token.

use chrono::Utc;
use grantry_core::{AccessToken, ProviderError, RefreshToken, ScopeSet, TokenErrorKind, TokenSet};
use serde::Deserialize;
use serde_json::Value;

use crate::http::{short, transient};

/// Longest lifetime believed from `expires_in`: ten years.
const MAX_EXPIRES_IN: i64 = 10 * 365 * 24 * 3600;

/// A token-endpoint answer, success or RFC 6749 section 5.2 error.
#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    token_type: Option<String>,
    expires_in: Option<Value>,
    refresh_token: Option<String>,
    scope: Option<Value>,
    error: Option<String>,
}

/// The code and description of an RFC 6749 section 5.2 (or RFC 7009) error body.
pub(crate) fn error_body(body: &[u8]) -> (Option<String>, Option<String>) {
    #[derive(Deserialize)]
    struct OAuthError {
        error: Option<String>,
        error_description: Option<String>,
    }
    match serde_json::from_slice::<OAuthError>(body) {
        Ok(e) => (e.error, e.error_description.map(|d| short(&d))),
        Err(_) => (None, None),
    }
}

/// Turns a token-endpoint answer (status, body, `Retry-After`) into tokens or an error sorted by
/// `classify` (RFC 6749 section 5.2). An `error` in a 200 answer is a refusal (as status 400);
/// `previous_refresh` is kept when a refresh answer carries no refresh token. Errors carry the
/// upstream's error code and a short description, never a token or the body.
pub fn parse_token_response(
    status: u16,
    body: &[u8],
    retry_after: Option<u64>,
    previous_refresh: Option<&RefreshToken>,
    classify: impl Fn(u16, Option<&str>) -> TokenErrorKind,
) -> Result<TokenSet, ProviderError> {
    let success = (200..300).contains(&status);
    let parsed: Option<TokenResponse> = serde_json::from_slice(body).ok();
    let failed_with = parsed
        .as_ref()
        .filter(|p| p.access_token.is_none())
        .and_then(|p| p.error.as_ref());
    if !success || failed_with.is_some() {
        let code = if success { 400 } else { status };
        let (error, description) = error_body(body);
        let description = description.unwrap_or_else(|| format!("HTTP {status}"));
        return Err(match classify(code, error.as_deref()) {
            TokenErrorKind::Terminal => ProviderError::InvalidGrant { description },
            TokenErrorKind::Transient => transient(
                format!("token endpoint answered {code}: {description}"),
                retry_after,
            ),
            TokenErrorKind::Rejected => ProviderError::Rejected {
                status: code,
                code: error.unwrap_or_else(|| "rejected".into()),
                description,
            },
        });
    }
    let Some(parsed) = parsed else {
        return Err(transient(
            "token endpoint answered a body that is not a token response",
            None,
        ));
    };
    let access_token = parsed
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| transient("token endpoint answered no access token", None))?;
    let expires_in = match parsed.expires_in {
        Some(Value::Number(n)) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    let token_type = match parsed.token_type {
        Some(t) if !t.eq_ignore_ascii_case("bearer") => t,
        _ => "Bearer".into(),
    };
    Ok(TokenSet {
        access_token: AccessToken::new(access_token),
        refresh_token: parsed
            .refresh_token
            .filter(|t| !t.is_empty())
            .map(RefreshToken::new)
            .or_else(|| previous_refresh.cloned()),
        token_type,
        expires_at: expires_in
            .filter(|s| *s > 0)
            .map(|s| Utc::now() + chrono::Duration::seconds(s.min(MAX_EXPIRES_IN))),
        scopes: match parsed.scope {
            // GitHub separates granted scopes with commas.
            Some(Value::String(s)) => Some(ScopeSet::parse(&s.replace(',', " "))),
            Some(Value::Array(list)) => Some(list.iter().filter_map(Value::as_str).collect()),
            _ => None,
        },
    })
}

#[cfg(test)]
mod tests {
    use grantry_core::provider::classify_token_error;

    use super::*;

    fn parse(status: u16, body: &str) -> Result<TokenSet, ProviderError> {
        parse_token_response(status, body.as_bytes(), Some(9), None, classify_token_error)
    }

    #[test]
    fn expires_in_is_a_number_or_a_string_and_capped_at_ten_years() {
        let in_seconds = |body: &str| {
            let t = parse(200, body).expect("tokens");
            t.expires_at.map(|at| (at - Utc::now()).num_seconds())
        };
        let near =
            |got: Option<i64>, want: i64| got.is_some_and(|s| (want - 5..=want).contains(&s));
        assert!(near(
            in_seconds(r#"{"access_token":"a","expires_in":3600}"#),
            3600
        ));
        assert!(near(
            in_seconds(r#"{"access_token":"a","expires_in":"3600"}"#),
            3600
        ));
        assert!(near(
            in_seconds(r#"{"access_token":"a","expires_in":60.7}"#),
            60
        ));
        assert!(near(
            in_seconds(r#"{"access_token":"a","expires_in":99999999999}"#),
            MAX_EXPIRES_IN
        ));
        assert_eq!(in_seconds(r#"{"access_token":"a","expires_in":0}"#), None);
        assert_eq!(
            in_seconds(r#"{"access_token":"a","expires_in":"soon"}"#),
            None
        );
    }

    #[test]
    fn scope_is_spaced_comma_separated_or_an_array() {
        let scopes = |body: &str| parse(200, body).expect("tokens").scopes;
        let want = Some(ScopeSet::parse("read:user user:email"));
        assert_eq!(
            scopes(r#"{"access_token":"a","scope":"read:user user:email"}"#),
            want
        );
        assert_eq!(
            scopes(r#"{"access_token":"a","scope":"read:user,user:email"}"#),
            want
        );
        assert_eq!(
            scopes(r#"{"access_token":"a","scope":["read:user","user:email"]}"#),
            want
        );
        assert_eq!(scopes(r#"{"access_token":"a"}"#), None);
    }

    #[test]
    fn token_type_is_normalised_and_other_types_kept() {
        let kind = |body: &str| parse(200, body).expect("tokens").token_type;
        assert_eq!(
            kind(r#"{"access_token":"a","token_type":"bearer"}"#),
            "Bearer"
        );
        assert_eq!(kind(r#"{"access_token":"a"}"#), "Bearer");
        assert_eq!(kind(r#"{"access_token":"a","token_type":"DPoP"}"#), "DPoP");
    }

    #[test]
    fn a_refresh_answer_without_refresh_token_keeps_the_previous_one() {
        let previous = RefreshToken::new("old");
        let body = br#"{"access_token":"a","refresh_token":""}"#;
        let kept = parse_token_response(200, body, None, Some(&previous), classify_token_error)
            .expect("tokens");
        assert_eq!(kept.refresh_token, Some(previous.clone()));
        let body = br#"{"access_token":"a","refresh_token":"new"}"#;
        let rotated = parse_token_response(200, body, None, Some(&previous), classify_token_error)
            .expect("tokens");
        assert_eq!(rotated.refresh_token, Some(RefreshToken::new("new")));
    }

    #[test]
    fn an_error_answered_with_200_is_a_refusal() {
        match parse(
            200,
            r#"{"error":"bad_verification_code","error_description":"expired"}"#,
        ) {
            Err(ProviderError::Rejected {
                status,
                code,
                description,
            }) => {
                assert_eq!((status, code.as_str()), (400, "bad_verification_code"));
                assert_eq!(description, "expired");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        let github = |code: u16, error: Option<&str>| match error {
            Some("bad_refresh_token") => TokenErrorKind::Terminal,
            _ => classify_token_error(code, error),
        };
        let dead =
            parse_token_response(200, br#"{"error":"bad_refresh_token"}"#, None, None, github);
        assert!(matches!(dead, Err(ProviderError::InvalidGrant { .. })));
    }

    #[test]
    fn failures_are_classified_by_rfc_6749_section_5_2() {
        assert!(matches!(
            parse(400, r#"{"error":"invalid_grant"}"#),
            Err(ProviderError::InvalidGrant { .. })
        ));
        for status in [408, 425, 429, 500, 503] {
            match parse(status, "<html>busy</html>") {
                Err(ProviderError::Transient { retry_after, .. }) => {
                    assert_eq!(retry_after, Some(9), "{status}");
                }
                other => panic!("{status}: expected transient, got {other:?}"),
            }
        }
        match parse(401, r#"{"error":"invalid_client"}"#) {
            Err(ProviderError::Rejected { status, code, .. }) => {
                assert_eq!((status, code.as_str()), (401, "invalid_client"));
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_missing_or_empty_access_token_or_a_foreign_body_is_transient() {
        for body in [
            r#"{"access_token":""}"#,
            r#"{"token_type":"bearer"}"#,
            "not json",
        ] {
            assert!(
                matches!(parse(200, body), Err(ProviderError::Transient { .. })),
                "{body}"
            );
        }
    }

    #[test]
    fn no_token_or_body_reaches_an_error_message() {
        let secret = "s3cr3t-token-value";
        let long = "x".repeat(500);
        for (status, body) in [
            (500, format!(r#"{{"access_token":"{secret}"}}"#)),
            (
                400,
                format!(r#"{{"error":"invalid_request","refresh_token":"{secret}"}}"#),
            ),
            (
                400,
                format!(r#"{{"error":"invalid_grant","error_description":"{long}"}}"#),
            ),
            (200, format!(r#"{{"refresh_token":"{secret}"}}"#)),
        ] {
            let shown = format!("{:?}", parse(status, &body).expect_err("failure"));
            assert!(!shown.contains(secret), "{shown}");
            assert!(shown.len() < 400, "{shown}");
        }
    }
}
