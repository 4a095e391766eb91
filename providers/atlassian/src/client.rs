//! The HTTP side of the Atlassian provider: token endpoint, `/me` and accessible-resources.

use std::time::Duration;

use chrono::Utc;
use grantry_core::{
    AccessToken, Account, ProviderError, RefreshToken, Resource, ScopeSet, TokenErrorKind,
    TokenSet, classify_token_error,
};
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, RETRY_AFTER};
use reqwest::{Response, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use url::Url;

/// Largest upstream body read for token, identity and site calls.
pub(crate) const MAX_BODY: usize = 1024 * 1024;

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: Option<i64>,
    scope: Option<String>,
    refresh_token: Option<String>,
    token_type: Option<String>,
}

#[derive(Deserialize)]
struct OAuthError {
    error: Option<String>,
    error_description: Option<String>,
}

#[derive(Deserialize)]
struct Me {
    account_id: String,
    name: Option<String>,
    email: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Site {
    id: String,
    name: Option<String>,
    url: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
    avatar_url: Option<String>,
}

/// Builds the HTTP client: timeouts, no redirects, a user agent.
pub(crate) fn http_client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("grantry/", env!("CARGO_PKG_VERSION")))
        .build()
}

fn transient(reason: impl Into<String>) -> ProviderError {
    ProviderError::Transient {
        reason: reason.into(),
        retry_after: None,
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
    transient(format!("{what}: {kind}"))
}

fn retry_after(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Reads at most `MAX_BODY` bytes of a response.
pub(crate) async fn read_capped(response: Response, what: &str) -> Result<Vec<u8>, ProviderError> {
    read_capped_to(response, what, MAX_BODY).await
}

/// Reads at most `max` bytes of a response.
pub async fn read_capped_to(
    mut response: Response,
    what: &str,
    max: usize,
) -> Result<Vec<u8>, ProviderError> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(transient(format!(
            "{what}: response larger than {max} bytes"
        )));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| send_error(what, &e))? {
        if body.len() + chunk.len() > max {
            return Err(transient(format!(
                "{what}: response larger than {max} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn short(text: &str) -> String {
    let mut out: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        out.push('…');
    }
    out
}

/// Calls the token endpoint with a JSON body and turns the answer into tokens or a classified error.
pub(crate) async fn post_token(
    client: &reqwest::Client,
    auth_url: &Url,
    body: &serde_json::Value,
    previous_refresh: Option<&RefreshToken>,
) -> Result<TokenSet, ProviderError> {
    let mut url = auth_url.clone();
    url.set_path("/oauth/token");
    let response = client
        .post(url)
        .header(ACCEPT, "application/json")
        .json(body)
        .send()
        .await
        .map_err(|e| send_error("token endpoint", &e))?;
    let status = response.status().as_u16();
    let wait = retry_after(response.headers());
    let bytes = read_capped(response, "token endpoint").await?;
    parse_token_response(status, &bytes, wait, previous_refresh)
}

/// Turns a token-endpoint answer (status, body, `Retry-After`) into tokens or a classified error;
/// keeps `previous_refresh` when the answer carries no refresh token.
pub fn parse_token_response(
    status: u16,
    bytes: &[u8],
    wait: Option<u64>,
    previous_refresh: Option<&RefreshToken>,
) -> Result<TokenSet, ProviderError> {
    if !(200..300).contains(&status) {
        let parsed: Option<OAuthError> = serde_json::from_slice(bytes).ok();
        let code = parsed.as_ref().and_then(|p| p.error.clone());
        let description = parsed
            .and_then(|p| p.error_description)
            .map(|d| short(&d))
            .unwrap_or_else(|| format!("HTTP {status}"));
        return Err(match classify_token_error(status, code.as_deref()) {
            TokenErrorKind::Terminal => ProviderError::InvalidGrant { description },
            TokenErrorKind::Transient => ProviderError::Transient {
                reason: format!("token endpoint answered {status}: {description}"),
                retry_after: wait,
            },
            TokenErrorKind::Rejected => ProviderError::Rejected {
                status,
                code: code.unwrap_or_else(|| "rejected".into()),
                description,
            },
        });
    }
    let parsed: TokenResponse = serde_json::from_slice(bytes)
        .map_err(|_| transient("token endpoint answered a body that is not a token response"))?;
    if parsed.access_token.is_empty() {
        return Err(transient("token endpoint answered an empty access token"));
    }
    let expires_at = parsed
        .expires_in
        .filter(|s| *s > 0)
        .map(|s| Utc::now() + chrono::Duration::seconds(s.min(10 * 365 * 24 * 3600)));
    Ok(TokenSet {
        access_token: AccessToken::new(parsed.access_token),
        refresh_token: parsed
            .refresh_token
            .filter(|t| !t.is_empty())
            .map(RefreshToken::new)
            .or_else(|| previous_refresh.cloned()),
        token_type: parsed.token_type.unwrap_or_else(|| "Bearer".into()),
        expires_at,
        scopes: parsed.scope.map(|s| ScopeSet::parse(&s)),
    })
}

/// GETs a JSON document from the API gateway with the user's token.
pub(crate) async fn get_json<T: DeserializeOwned>(
    client: &reqwest::Client,
    url: Url,
    token: &AccessToken,
    what: &str,
) -> Result<T, ProviderError> {
    let response = client
        .get(url)
        .header(AUTHORIZATION, format!("Bearer {}", token.secret()))
        .header(ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| send_error(what, &e))?;
    let status = response.status();
    let wait = retry_after(response.headers());
    let bytes = read_capped(response, what).await?;
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        return Err(ProviderError::Transient {
            reason: format!("{what} answered {}", status.as_u16()),
            retry_after: wait,
        });
    }
    if !status.is_success() {
        return Err(ProviderError::Rejected {
            status: status.as_u16(),
            code: "upstream_refused".into(),
            description: format!("{what} answered {}", status.as_u16()),
        });
    }
    serde_json::from_slice(&bytes)
        .map_err(|_| transient(format!("{what} answered a malformed body")))
}

/// The user behind a token (`GET /me`).
pub(crate) async fn me(
    client: &reqwest::Client,
    api_url: &Url,
    token: &AccessToken,
) -> Result<Account, ProviderError> {
    let mut url = api_url.clone();
    url.set_path("/me");
    let me: Me = get_json(client, url, token, "/me").await?;
    Ok(Account {
        id: me.account_id,
        name: me.name,
        email: me.email,
    })
}

/// The sites a token reaches, duplicate cloud ids merged (`GET /oauth/token/accessible-resources`).
pub(crate) async fn sites(
    client: &reqwest::Client,
    api_url: &Url,
    token: &AccessToken,
) -> Result<Vec<Resource>, ProviderError> {
    let mut url = api_url.clone();
    url.set_path("/oauth/token/accessible-resources");
    let list: Vec<Site> = get_json(client, url, token, "accessible-resources").await?;
    Ok(merge_sites(list))
}

/// Merges entries that share a cloud id (Jira and Confluence of one site), keeping every site.
fn merge_sites(list: Vec<Site>) -> Vec<Resource> {
    let mut merged: Vec<Resource> = Vec::new();
    for site in list {
        if let Some(existing) = merged.iter_mut().find(|r| r.id == site.id) {
            for scope in site.scopes {
                if !existing.scopes.contains(&scope) {
                    existing.scopes.push(scope);
                }
            }
            if existing.url.is_none() {
                existing.url = site.url;
            }
            if existing.avatar_url.is_none() {
                existing.avatar_url = site.avatar_url;
            }
            if existing.name.is_empty() {
                existing.name = site.name.unwrap_or_default();
            }
        } else {
            merged.push(Resource {
                name: site.name.unwrap_or_default(),
                id: site.id,
                url: site.url,
                scopes: site.scopes,
                avatar_url: site.avatar_url,
            });
        }
    }
    merged.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_cloud_ids_merge_and_every_site_is_kept() {
        let list: Vec<Site> = serde_json::from_str(
            r#"[{"id":"a","name":"Acme","url":"https://acme.atlassian.net","scopes":["read:jira-work"],"avatarUrl":"https://x/1.png"},
                {"id":"b","name":"Beta","url":"https://beta.atlassian.net","scopes":["read:jira-work"]},
                {"id":"a","name":"Acme","url":"https://acme.atlassian.net","scopes":["read:confluence-content.all","read:jira-work"]}]"#,
        )
        .expect("json");
        let merged = merge_sites(list);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].id, "a");
        assert_eq!(
            merged[0].scopes,
            ["read:jira-work", "read:confluence-content.all"]
        );
        assert_eq!(merged[0].avatar_url.as_deref(), Some("https://x/1.png"));
        assert_eq!(merged[1].id, "b");
    }
}
