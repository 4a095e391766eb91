//! The HTTP side: token, userinfo, revocation and discovery calls, with capped bodies and every
//! failure classified. No error message carries a token or a secret.

use std::time::Duration;

use chrono::Utc;
use grantry_core::{
    AccessToken, Account, ProviderError, RefreshToken, ScopeSet, TokenErrorKind, TokenSet,
};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use url::Url;

use crate::config::AccountFields;

/// Largest upstream body read.
pub(crate) const MAX_BODY: usize = 1024 * 1024;

/// A token-endpoint answer, success or RFC 6749 section 5.2 error (GitHub answers errors with 200).
#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    token_type: Option<String>,
    expires_in: Option<Value>,
    refresh_token: Option<String>,
    scope: Option<Value>,
    error: Option<String>,
    error_description: Option<String>,
}

#[derive(Deserialize)]
struct OAuthError {
    error: Option<String>,
    error_description: Option<String>,
}

/// The HTTP client of an instance: timeouts, no redirects, a user agent (GitHub requires one).
pub(crate) fn http_client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("grantry/", env!("CARGO_PKG_VERSION")))
        .build()
}

fn transient(reason: impl Into<String>, retry_after: Option<u64>) -> ProviderError {
    ProviderError::Transient {
        reason: reason.into(),
        retry_after,
    }
}

fn send_error(what: &str, e: &reqwest::Error) -> ProviderError {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    transient(format!("{what}: {kind}"), None)
}

fn retry_after(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// At most 200 characters of an upstream text, for messages.
pub(crate) fn short(text: &str) -> String {
    let mut out: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        out.push('…');
    }
    out
}

/// Reads at most [`MAX_BODY`] bytes of a response.
async fn read_capped(mut response: Response, what: &str) -> Result<Vec<u8>, ProviderError> {
    let too_large = || {
        transient(
            format!("{what}: response larger than {MAX_BODY} bytes"),
            None,
        )
    };
    if response
        .content_length()
        .is_some_and(|n| n > MAX_BODY as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| send_error(what, &e))? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Sends `request` and reads the answer: status, `Retry-After`, content type and capped body.
async fn send(
    request: RequestBuilder,
    what: &str,
) -> Result<(StatusCode, Option<u64>, String, Vec<u8>), ProviderError> {
    let response = request
        .header(ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| send_error(what, &e))?;
    let status = response.status();
    let wait = retry_after(response.headers());
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let body = read_capped(response, what).await?;
    Ok((status, wait, content_type, body))
}

fn is_transient(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// Calls the token endpoint (the request carries the form and client authentication) and turns
/// the answer into tokens or an error classified by `classify`.
pub(crate) async fn token(
    request: RequestBuilder,
    classify: impl Fn(u16, Option<&str>) -> TokenErrorKind,
) -> Result<TokenSet, ProviderError> {
    let (status, wait, _, bytes) = send(request, "token endpoint").await?;
    let parsed: Option<TokenResponse> = serde_json::from_slice(&bytes).ok();
    let failed_with = parsed
        .as_ref()
        .filter(|p| p.access_token.is_none())
        .and_then(|p| p.error.clone());
    if !status.is_success() || failed_with.is_some() {
        // An error answered with 200 is still a refusal of the request.
        let code = if status.is_success() {
            400
        } else {
            status.as_u16()
        };
        let error = parsed.as_ref().and_then(|p| p.error.clone());
        let description = parsed
            .and_then(|p| p.error_description)
            .map(|d| short(&d))
            .unwrap_or_else(|| format!("HTTP {}", status.as_u16()));
        return Err(match classify(code, error.as_deref()) {
            TokenErrorKind::Terminal => ProviderError::InvalidGrant { description },
            TokenErrorKind::Transient => transient(
                format!("token endpoint answered {code}: {description}"),
                wait,
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
            .map(RefreshToken::new),
        token_type,
        expires_at: expires_in
            .filter(|s| *s > 0)
            .map(|s| Utc::now() + chrono::Duration::seconds(s.min(10 * 365 * 24 * 3600))),
        scopes: match parsed.scope {
            // GitHub separates granted scopes with commas.
            Some(Value::String(s)) => Some(ScopeSet::parse(&s.replace(',', " "))),
            Some(Value::Array(list)) => Some(list.iter().filter_map(Value::as_str).collect()),
            _ => None,
        },
    })
}

/// Reads the account behind `token` from the userinfo endpoint.
pub(crate) async fn userinfo(
    http: &reqwest::Client,
    url: &Url,
    token: &AccessToken,
    fields: &AccountFields,
) -> Result<Account, ProviderError> {
    let request = http.get(url.clone()).bearer_auth(token.secret());
    let (status, wait, content_type, bytes) = send(request, "userinfo").await?;
    let refused = |code: &str, description: String| ProviderError::Rejected {
        status: status.as_u16(),
        code: code.into(),
        description,
    };
    if is_transient(status) {
        return Err(transient(
            format!("userinfo answered {}", status.as_u16()),
            wait,
        ));
    }
    if !status.is_success() {
        let answer = format!("userinfo answered {}", status.as_u16());
        return Err(refused("userinfo_refused", answer));
    }
    if content_type.starts_with("application/jwt") {
        let reason = "signed or encrypted userinfo responses are not supported".into();
        return Err(refused("unsupported_userinfo", reason));
    }
    let document: serde_json::Map<String, Value> = serde_json::from_slice(&bytes)
        .map_err(|_| transient("userinfo answered a malformed body", None))?;
    let pick = |names: &[String]| {
        names.iter().find_map(|name| match document.get(name) {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        })
    };
    let id = pick(&fields.id).ok_or_else(|| {
        let missing = format!("userinfo has no {}", fields.id.join(" or "));
        refused("userinfo_incomplete", missing)
    })?;
    Ok(Account {
        id,
        name: pick(&fields.name),
        email: pick(&fields.email),
    })
}

/// Sends one RFC 7009 revocation request (the request carries the form and client authentication).
pub(crate) async fn revoke(request: RequestBuilder) -> Result<(), ProviderError> {
    let (status, wait, _, bytes) = send(request, "revocation endpoint").await?;
    if status.is_success() {
        return Ok(());
    }
    if is_transient(status) {
        let reason = format!("revocation endpoint answered {}", status.as_u16());
        return Err(transient(reason, wait));
    }
    let parsed: Option<OAuthError> = serde_json::from_slice(&bytes).ok();
    Err(ProviderError::Rejected {
        status: status.as_u16(),
        code: parsed
            .as_ref()
            .and_then(|p| p.error.clone())
            .unwrap_or_else(|| "revocation_refused".into()),
        description: parsed
            .and_then(|p| p.error_description)
            .map(|d| short(&d))
            .unwrap_or_else(|| format!("HTTP {}", status.as_u16())),
    })
}

/// GETs a public JSON document (the discovery metadata).
pub(crate) async fn get_document(
    http: &reqwest::Client,
    url: Url,
    what: &str,
) -> Result<Vec<u8>, ProviderError> {
    let (status, wait, _, bytes) = send(http.get(url), what).await?;
    if status.is_success() {
        Ok(bytes)
    } else {
        Err(transient(
            format!("{what} answered {}", status.as_u16()),
            wait,
        ))
    }
}
