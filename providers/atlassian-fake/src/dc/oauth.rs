//! The OAuth 2.0 provider of Data Center's incoming application links: the authorize page with
//! its consent decision, and the form-encoded token endpoint (PKCE, rotation without leeway).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use url::Url;

use super::{DcInner, FakeDataCenter};

/// How long an authorization code stays valid.
const CODE_TTL: Duration = Duration::from_secs(60);
/// The consent page template (`{{name}}` placeholders, filled in one pass).
const CONSENT_TEMPLATE: &str = include_str!("consent.html");
/// The scopes Data Center knows, each including the ones before it.
const SCOPES: [&str; 4] = ["READ", "WRITE", "ADMIN", "SYSTEM_ADMIN"];
/// The level of the `READ` scope.
pub(super) const READ: u8 = 1;
/// The level of the `WRITE` scope.
pub(super) const WRITE: u8 = 2;

/// A code minted by the consent (or by [`FakeDataCenter::issue_code`]).
pub(super) struct CodeEntry {
    client_id: String,
    redirect_uri: String,
    scope: String,
    code_challenge: String,
    expires_at: Instant,
    used: bool,
}

/// The chain of tokens from one consent.
pub(super) struct Grant {
    pub(super) scope: String,
    /// The key of the account that consented.
    pub(super) user_key: String,
    pub(super) revoked: bool,
}

/// A live or dead access token.
pub(super) struct AccessEntry {
    grant: usize,
    pub(super) expires_at: Instant,
}

/// A refresh token; `rotated` once it has been traded for a new one.
pub(super) struct RefreshEntry {
    grant: usize,
    rotated: bool,
}

#[derive(Serialize)]
struct TokenResponse {
    access_token: String,
    refresh_token: String,
    expires_in: u64,
    token_type: &'static str,
    scope: String,
}

#[derive(Deserialize)]
struct AuthorizeParams {
    client_id: Option<String>,
    redirect_uri: Option<String>,
    response_type: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
}

/// The consent page's form: the authorize parameters (without `response_type`) and the choice.
#[derive(Deserialize)]
struct DecisionForm {
    decision: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
}

/// The OAuth routes (relative to the context path).
pub(super) fn routes() -> Router<FakeDataCenter> {
    Router::new()
        .route("/rest/oauth2/latest/authorize", get(authorize))
        .route("/rest/oauth2/latest/authorize/decision", post(decision))
        .route("/rest/oauth2/latest/token", post(token))
}

/// The level of the highest Data Center scope in `scope` (0 when none).
pub(super) fn scope_level(scope: &str) -> u8 {
    scope
        .split_whitespace()
        .filter_map(|s| SCOPES.iter().position(|known| *known == s))
        .map(|i| u8::try_from(i + 1).unwrap_or(u8::MAX))
        .max()
        .unwrap_or(0)
}

/// The grant of a live access token, `None` for an unknown, expired or revoked one.
pub(super) fn live_grant<'a>(inner: &'a DcInner, token: &str) -> Option<&'a Grant> {
    let entry = inner.access_tokens.get(token)?;
    if inner.now() >= entry.expires_at {
        return None;
    }
    inner.grants.get(entry.grant).filter(|g| !g.revoked)
}

/// Stores a new code valid [`CODE_TTL`] on the fake's clock.
pub(super) fn new_code(
    inner: &mut DcInner,
    client_id: &str,
    redirect_uri: &str,
    scope: &str,
    code_challenge: &str,
) -> String {
    let code = crate::random_hex();
    let now = inner.now();
    inner.codes.insert(
        code.clone(),
        CodeEntry {
            client_id: client_id.to_owned(),
            redirect_uri: redirect_uri.to_owned(),
            scope: scope.to_owned(),
            code_challenge: code_challenge.to_owned(),
            expires_at: now.checked_add(CODE_TTL).unwrap_or(now),
            used: false,
        },
    );
    code
}

/// The first problem of an authorize request (or decision), `None` when it is acceptable.
fn authorize_problem(fake: &FakeDataCenter, params: &AuthorizeParams) -> Option<&'static str> {
    let config = fake.config();
    let challenge = params.code_challenge.as_deref().unwrap_or("");
    let checks: [(bool, &'static str); 9] = [
        (params.client_id.is_some(), "client_id is missing"),
        (
            params.client_id.as_deref() == Some(config.client_id.as_str()),
            "client_id is unknown: no incoming application link has this client id",
        ),
        (params.redirect_uri.is_some(), "redirect_uri is missing"),
        (
            params.redirect_uri.as_deref() == Some(config.redirect_uri.as_str()),
            "redirect_uri does not match the redirect URL of the application link",
        ),
        (
            params.response_type.as_deref() == Some("code"),
            "response_type must be code",
        ),
        (!challenge.is_empty(), "code_challenge is missing"),
        (
            challenge.len() == 43
                && challenge
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "code_challenge must be the base64url SHA-256 of the code verifier (43 characters)",
        ),
        (
            params.code_challenge_method.as_deref() == Some("S256"),
            "code_challenge_method must be S256",
        ),
        (
            params.scope.as_deref().is_some_and(|scope| {
                scope.split_whitespace().next().is_some()
                    && scope.split_whitespace().all(|s| SCOPES.contains(&s))
            }),
            "scope must be one or more of READ, WRITE, ADMIN, SYSTEM_ADMIN",
        ),
    ];
    checks
        .iter()
        .find(|(ok, _)| !ok)
        .map(|(_, problem)| *problem)
}

async fn authorize(
    State(fake): State<FakeDataCenter>,
    query: Result<Query<AuthorizeParams>, QueryRejection>,
) -> Response {
    fake.lock().counters.authorize += 1;
    let Query(params) = match query {
        Ok(query) => query,
        Err(rejection) => {
            return error_page(&format!("the query string is invalid: {rejection}"));
        }
    };
    if let Some(problem) = authorize_problem(&fake, &params) {
        return error_page(problem);
    }
    Html(consent_page(&fake, &params)).into_response()
}

async fn decision(
    State(fake): State<FakeDataCenter>,
    form: Result<Form<DecisionForm>, FormRejection>,
) -> Response {
    let Form(form) = match form {
        Ok(form) => form,
        Err(rejection) => return error_page(&format!("the form is invalid: {rejection}")),
    };
    let params = AuthorizeParams {
        client_id: form.client_id,
        redirect_uri: form.redirect_uri,
        response_type: Some("code".to_owned()),
        scope: form.scope,
        state: form.state,
        code_challenge: form.code_challenge,
        code_challenge_method: form.code_challenge_method,
    };
    if let Some(problem) = authorize_problem(&fake, &params) {
        return error_page(problem);
    }
    let config = fake.config();
    let Ok(mut location) = Url::parse(&config.redirect_uri) else {
        return error_page("the registered redirect URL is not a valid URL");
    };
    let state = params.state.unwrap_or_default();
    match form.decision.as_deref() {
        Some("accept") => {
            let code = new_code(
                &mut fake.lock(),
                &config.client_id,
                &config.redirect_uri,
                params.scope.as_deref().unwrap_or(""),
                params.code_challenge.as_deref().unwrap_or(""),
            );
            location.query_pairs_mut().append_pair("code", &code);
        }
        Some("deny") => {
            location
                .query_pairs_mut()
                .append_pair("error", "access_denied");
        }
        _ => return error_page("decision must be accept or deny"),
    }
    if !state.is_empty() {
        location.query_pairs_mut().append_pair("state", &state);
    }
    match HeaderValue::from_str(location.as_str()) {
        Ok(value) => (StatusCode::FOUND, [(header::LOCATION, value)]).into_response(),
        Err(_) => error_page("the redirect URL cannot be sent as a header"),
    }
}

async fn token(State(fake): State<FakeDataCenter>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(status) = fake.lock().token_failure {
        return crate::injected_status(status);
    }
    let mime = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(|mime| mime.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if crate::is_json(&headers) || mime.ends_with("+json") {
        fake.lock().counters.json_token_requests += 1;
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "The token endpoint only accepts application/x-www-form-urlencoded bodies",
        );
    }
    if mime != "application/x-www-form-urlencoded" {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Content-Type must be application/x-www-form-urlencoded",
        );
    }
    let mut form: HashMap<String, String> = HashMap::new();
    for (name, value) in url::form_urlencoded::parse(&body) {
        if form.insert(name.to_string(), value.into_owned()).is_some() {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("the parameter {name} is repeated"),
            );
        }
    }
    let field = |name: &str| form.get(name).map(String::as_str).filter(|v| !v.is_empty());
    let config = fake.config();
    let mut inner = fake.lock();
    match field("grant_type") {
        Some("authorization_code") => inner.counters.token_exchange += 1,
        Some("refresh_token") => inner.counters.token_refresh += 1,
        _ => {}
    }
    if field("client_id") != Some(config.client_id.as_str())
        || field("client_secret") != Some(config.client_secret.as_str())
    {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Client authentication failed",
        );
    }
    match field("grant_type") {
        Some("authorization_code") => exchange(
            &mut inner,
            field("code"),
            field("redirect_uri"),
            field("code_verifier"),
            config,
        ),
        Some("refresh_token") => refresh(
            &mut inner,
            field("refresh_token"),
            field("redirect_uri"),
            config,
        ),
        None => oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "grant_type is missing",
        ),
        Some(_) => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type must be authorization_code or refresh_token",
        ),
    }
}

fn exchange(
    inner: &mut DcInner,
    code: Option<&str>,
    redirect_uri: Option<&str>,
    verifier: Option<&str>,
    config: &super::DcConfig,
) -> Response {
    let now = inner.now();
    let Some(entry) = code.and_then(|code| inner.codes.get_mut(code)) else {
        return invalid_grant("The authorization code is invalid");
    };
    if entry.used || now >= entry.expires_at {
        entry.used = true;
        return invalid_grant("The authorization code is invalid or expired");
    }
    // Whatever follows, the code has been presented once: it cannot be used again.
    entry.used = true;
    if entry.client_id != config.client_id || redirect_uri != Some(entry.redirect_uri.as_str()) {
        return invalid_grant("redirect_uri does not match the one the code was issued for");
    }
    let challenge_ok = verifier.is_some_and(|verifier| {
        (43..=128).contains(&verifier.len())
            && verifier
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
            && URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) == entry.code_challenge
    });
    if !challenge_ok {
        inner.counters.pkce_failures += 1;
        return invalid_grant("The code_verifier does not match the code_challenge");
    }
    let scope = entry.scope.clone();
    let grant = inner.grants.len();
    let user_key = inner.current_user.clone();
    inner.grants.push(Grant {
        scope: scope.clone(),
        user_key,
        revoked: false,
    });
    issue_tokens(inner, grant, scope, config)
}

fn refresh(
    inner: &mut DcInner,
    presented: Option<&str>,
    redirect_uri: Option<&str>,
    config: &super::DcConfig,
) -> Response {
    let Some(presented) = presented else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "refresh_token is missing",
        );
    };
    let Some(redirect_uri) = redirect_uri else {
        inner.counters.refresh_without_redirect_uri += 1;
        return invalid_grant("redirect_uri is required");
    };
    if redirect_uri != config.redirect_uri {
        return invalid_grant("redirect_uri does not match the redirect URL of the link");
    }
    let Some(entry) = inner.refresh_tokens.get(presented) else {
        return invalid_grant("The refresh token is invalid");
    };
    let (grant_id, rotated) = (entry.grant, entry.rotated);
    let Some(grant) = inner.grants.get_mut(grant_id) else {
        return invalid_grant("The refresh token is invalid");
    };
    if grant.revoked {
        return invalid_grant("The refresh token is invalid");
    }
    if rotated {
        // A rotated-out token came back: a breach; the whole grant dies.
        grant.revoked = true;
        inner.counters.refresh_reuse += 1;
        return invalid_grant("The refresh token is invalid");
    }
    let scope = grant.scope.clone();
    if let Some(entry) = inner.refresh_tokens.get_mut(presented) {
        entry.rotated = true;
    }
    issue_tokens(inner, grant_id, scope, config)
}

/// A new access and refresh token for `grant`.
fn issue_tokens(
    inner: &mut DcInner,
    grant: usize,
    scope: String,
    config: &super::DcConfig,
) -> Response {
    let now = inner.now();
    let access_token = format!("dc-at-{}", crate::random_hex());
    let refresh_token = format!("dc-rt-{}", crate::random_hex());
    inner.access_tokens.insert(
        access_token.clone(),
        AccessEntry {
            grant,
            expires_at: now.checked_add(config.access_ttl).unwrap_or(now),
        },
    );
    inner.refresh_tokens.insert(
        refresh_token.clone(),
        RefreshEntry {
            grant,
            rotated: false,
        },
    );
    (
        StatusCode::OK,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(TokenResponse {
            access_token,
            refresh_token,
            expires_in: config.access_ttl.as_secs(),
            token_type: "bearer",
            scope,
        }),
    )
        .into_response()
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        axum::Json(json!({ "error": error, "error_description": description })),
    )
        .into_response()
}

fn invalid_grant(description: &str) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", description)
}

fn error_page(problem: &str) -> Response {
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>OAuth 2.0 error</title></head>\
         <body><h1>Something went wrong</h1><p>{}</p></body></html>\n",
        crate::escape(problem)
    );
    (StatusCode::BAD_REQUEST, Html(body)).into_response()
}

fn consent_page(fake: &FakeDataCenter, params: &AuthorizeParams) -> String {
    let config = fake.config();
    let user = fake.user();
    let scope = params.scope.as_deref().unwrap_or("");
    let scopes: String = scope
        .split_whitespace()
        .map(|name| format!("<li><code>{}</code></li>\n", crate::escape(name)))
        .collect();
    let action = format!(
        "{}/rest/oauth2/latest/authorize/decision",
        config.context_path
    );
    let value = |v: &Option<String>| crate::escape(v.as_deref().unwrap_or(""));
    crate::render(CONSENT_TEMPLATE, |key| match key {
        "title" => Some(crate::escape(&config.title)),
        "action" => Some(crate::escape(&action)),
        "client_id" => Some(crate::escape(&config.client_id)),
        "redirect_uri" => Some(crate::escape(&config.redirect_uri)),
        "user_name" => Some(crate::escape(&user.display_name)),
        "user_login" => Some(crate::escape(&user.name)),
        "scope" => Some(crate::escape(scope)),
        "state" => Some(value(&params.state)),
        "code_challenge" => Some(value(&params.code_challenge)),
        "code_challenge_method" => Some(value(&params.code_challenge_method)),
        "scopes" => Some(scopes.clone()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_levels_include_the_lower_ones() {
        assert_eq!(scope_level(""), 0);
        assert_eq!(scope_level("read:jira-work"), 0);
        assert_eq!(scope_level("READ"), READ);
        assert_eq!(scope_level("READ WRITE"), WRITE);
        assert_eq!(scope_level("SYSTEM_ADMIN"), 4);
    }
}
