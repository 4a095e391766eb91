//! The default authenticator: HS256 JWTs from `Authorization: Bearer` or the `token` cookie; and
//! the guard that refuses cookie-authenticated writes from other sites.

use std::sync::Arc;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use axum::http::header::{AUTHORIZATION, HOST, ORIGIN};
use axum::http::request::Parts;
use axum::http::uri::Authority;
use axum::http::{HeaderMap, StatusCode};
use axum_extra::extract::CookieJar;
use grantry_core::http::{Authenticator, Credential, Role};
use grantry_core::{ApiError, Principal};
use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode, get_current_timestamp,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// The claims grantry reads from a user's token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// `admin` or anything else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// Seconds of clock skew accepted on `exp`.
const LEEWAY_SECS: u64 = 5;

/// Most verified tokens remembered before the memo starts over.
const VERIFIED_MAX: usize = 10_000;

/// What a verified token says: its user, role and expiry.
#[derive(Clone)]
struct Verified {
    user_id: String,
    role: Role,
    exp: u64,
}

/// Verifies HS256 tokens signed with `GRANTRY_JWT_SECRET`.
///
/// A token that verified once is remembered (up to 10 000 tokens, by its exact text), so the
/// next request with the same token checks its expiry without decoding it again: the signature of
/// the same bytes under the same secret cannot verify differently.
pub struct JwtAuthenticator {
    key: DecodingKey,
    validation: Validation,
    verified: Mutex<HashMap<Box<str>, Verified>>,
}

impl std::fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtAuthenticator([redacted])")
    }
}

impl JwtAuthenticator {
    /// An authenticator for tokens signed with `secret`; `nbf`, when present, is honoured.
    pub fn new(secret: &SecretString) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        Self {
            key: DecodingKey::from_secret(secret.expose_secret().as_bytes()),
            validation,
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// Also requires the `iss` claim to equal `issuer` and the `aud` claim to name `audience`,
    /// each when given (`GRANTRY_JWT_ISSUER`, `GRANTRY_JWT_AUDIENCE`).
    pub fn expecting(mut self, issuer: Option<&str>, audience: Option<&str>) -> Self {
        let mut required = vec!["exp", "sub"];
        if let Some(issuer) = issuer {
            self.validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        if let Some(audience) = audience {
            self.validation.set_audience(&[audience]);
            required.push("aud");
        }
        self.validation.set_required_spec_claims(&required);
        self
    }

    /// Signs a token for `user_id` with `role`, valid for `ttl` (used by the demo and by tests).
    pub fn issue(
        secret: &SecretString,
        user_id: &str,
        role: &str,
        ttl: std::time::Duration,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let exp = chrono::Utc::now().timestamp().max(0).unsigned_abs() + ttl.as_secs();
        let claims = Claims {
            sub: user_id.to_owned(),
            exp,
            role: Some(role.to_owned()),
        };
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.expose_secret().as_bytes()),
        )
    }

    fn token(parts: &Parts) -> Option<(Cow<'_, str>, Credential)> {
        if let Some(value) = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        {
            let mut split = value.trim().splitn(2, ' ');
            if let (Some(scheme), Some(token)) = (split.next(), split.next())
                && scheme.eq_ignore_ascii_case("bearer")
                && !token.trim().is_empty()
            {
                return Some((Cow::Borrowed(token.trim()), Credential::Bearer));
            }
            return None;
        }
        CookieJar::from_headers(&parts.headers)
            .get("token")
            .map(|c| Cow::<str>::Owned(c.value().to_owned()))
            .filter(|v| !v.is_empty())
            .map(|v| (v, Credential::Cookie))
    }

    fn memo(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Verified>> {
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The claims of a valid token: remembered when it verified before and has not expired since
    /// (the same `exp` rule as the decoder's), decoded and verified otherwise.
    fn verify(&self, token: &str) -> Result<Verified, ApiError> {
        let now = get_current_timestamp();
        let expired = |exp: u64| exp < now.saturating_sub(LEEWAY_SECS);
        {
            let mut memo = self.memo();
            match memo.get(token) {
                Some(v) if !expired(v.exp) => return Ok(v.clone()),
                Some(_) => {
                    memo.remove(token);
                }
                None => {}
            }
        }
        let data = decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|_| ApiError::unauthorized("the bearer token is invalid or expired"))?;
        if data.claims.sub.trim().is_empty() {
            return Err(ApiError::unauthorized("the bearer token names no user"));
        }
        let verified = Verified {
            user_id: data.claims.sub,
            role: match data.claims.role.as_deref() {
                Some("admin") => Role::Admin,
                _ => Role::User,
            },
            exp: data.claims.exp,
        };
        let mut memo = self.memo();
        if memo.len() >= VERIFIED_MAX {
            memo.clear();
        }
        memo.insert(token.into(), verified.clone());
        Ok(verified)
    }
}

#[async_trait]
impl Authenticator for JwtAuthenticator {
    async fn authenticate(&self, parts: &Parts) -> Result<Principal, ApiError> {
        let (token, credential) = Self::token(parts)
            .ok_or_else(|| ApiError::unauthorized("sign in: send Authorization: Bearer <token>"))?;
        let verified = self.verify(&token)?;
        Ok(Principal {
            user_id: verified.user_id,
            role: verified.role,
            credential,
        })
    }
}

/// Which origins, besides the server's own, may send writes signed in by a cookie
/// (`GRANTRY_CSRF_ALLOWED_ORIGINS`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CrossSitePolicy {
    allowed: Vec<url::Origin>,
}

impl CrossSitePolicy {
    /// A policy that also trusts `allowed` (origins such as `https://chat.example.com`).
    pub fn new(allowed: Vec<url::Origin>) -> Self {
        Self { allowed }
    }

    /// The origins trusted besides the server's own.
    pub fn allowed(&self) -> &[url::Origin] {
        &self.allowed
    }

    /// Whether a cookie-authenticated request with these headers may change state: its
    /// `Sec-Fetch-Site` says `same-origin`, or its `Origin` is listed, or (from a browser that sends
    /// no `Sec-Fetch-Site`) its `Origin` names this server's `Host`. Neither header: refused.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        let origin = headers
            .get(ORIGIN)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| url::Url::parse(v).ok())
            .map(|u| u.origin())
            .filter(url::Origin::is_tuple);
        if origin.as_ref().is_some_and(|o| self.allowed.contains(o)) {
            return true;
        }
        match headers.get("sec-fetch-site") {
            Some(site) => site.as_bytes().eq_ignore_ascii_case(b"same-origin"),
            None => origin.is_some_and(|o| names_host(&o, headers)),
        }
    }
}

/// Whether `origin` is the host and port the request was sent to (its `Host` header).
fn names_host(origin: &url::Origin, headers: &HeaderMap) -> bool {
    let url::Origin::Tuple(scheme, host, port) = origin else {
        return false;
    };
    let Some(authority) = headers
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<Authority>().ok())
    else {
        return false;
    };
    let default = if scheme == "https" { 443 } else { 80 };
    authority.host().eq_ignore_ascii_case(&host.to_string())
        && authority.port_u16().unwrap_or(default) == *port
}

/// Wraps an authenticator: a write (any method but GET, HEAD, OPTIONS, TRACE) signed in by a
/// cookie is refused with 403 `cross_site_request` unless [`CrossSitePolicy::allows`] it.
pub(crate) struct CrossSiteGuard {
    pub(crate) inner: Arc<dyn Authenticator>,
    pub(crate) policy: CrossSitePolicy,
}

#[async_trait]
impl Authenticator for CrossSiteGuard {
    async fn authenticate(&self, parts: &Parts) -> Result<Principal, ApiError> {
        let principal = self.inner.authenticate(parts).await?;
        if principal.by_cookie() && !parts.method.is_safe() && !self.policy.allows(&parts.headers) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "cross_site_request",
                "a write signed in by the cookie must come from this site (Origin or \
                 Sec-Fetch-Site); another site's page cannot send it. API clients send \
                 Authorization: Bearer",
            ));
        }
        Ok(principal)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::http::Request;

    use super::*;

    fn parts(header: Option<(&str, &str)>) -> Parts {
        let mut builder = Request::builder().uri("/");
        if let Some((k, v)) = header {
            builder = builder.header(k, v);
        }
        builder.body(()).expect("request").into_parts().0
    }

    #[tokio::test]
    async fn bearer_and_cookie_tokens_are_verified() {
        let secret = SecretString::from("s3cret".to_owned());
        let auth = JwtAuthenticator::new(&secret);
        let admin = JwtAuthenticator::issue(&secret, "u-1", "admin", Duration::from_secs(60))
            .expect("sign");
        let user =
            JwtAuthenticator::issue(&secret, "u-2", "user", Duration::from_secs(60)).expect("sign");
        let p = auth
            .authenticate(&parts(Some(("authorization", &format!("Bearer {admin}")))))
            .await
            .expect("ok");
        assert_eq!((p.user_id.as_str(), p.is_admin()), ("u-1", true));
        assert_eq!(p.credential, Credential::Bearer);
        let p = auth
            .authenticate(&parts(Some(("cookie", &format!("a=b; token={user}")))))
            .await
            .expect("ok");
        assert_eq!((p.user_id.as_str(), p.is_admin()), ("u-2", false));
        assert_eq!(p.credential, Credential::Cookie);

        // `nbf` in the future: not yet valid.
        let now = chrono::Utc::now().timestamp();
        let sign = |claims: serde_json::Value| {
            encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(b"s3cret"),
            )
            .expect("sign")
        };
        let early = sign(serde_json::json!({"sub": "u", "exp": now + 600, "nbf": now + 300}));
        let err = auth
            .authenticate(&parts(Some(("authorization", &format!("Bearer {early}")))))
            .await
            .expect_err("not yet valid");
        assert_eq!(err.status, 401);

        let other = JwtAuthenticator::issue(
            &SecretString::from("other".to_owned()),
            "u",
            "admin",
            Duration::from_secs(60),
        )
        .expect("sign");
        for header in [
            None,
            Some(("authorization", "Bearer")),
            Some(("authorization", "Basic abc")),
            Some(("authorization", "Bearer not-a-jwt")),
            Some(("authorization", &*format!("Bearer {other}"))),
        ] {
            let err = auth
                .authenticate(&parts(header))
                .await
                .expect_err("refused");
            assert_eq!(err.status, 401);
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        map
    }

    #[test]
    fn cross_site_policy_trusts_only_the_same_origin_and_listed_ones() {
        let listed = url::Url::parse("https://chat.example.com")
            .expect("url")
            .origin();
        let policy = CrossSitePolicy::new(vec![listed]);
        let host = ("host", "api.example.com");
        for (pairs, allowed) in [
            (vec![("sec-fetch-site", "same-origin")], true),
            (vec![("sec-fetch-site", "same-site")], false),
            (vec![("sec-fetch-site", "cross-site")], false),
            (vec![("sec-fetch-site", "none")], false),
            (vec![host, ("origin", "https://api.example.com")], true),
            (vec![host, ("origin", "http://api.example.com")], true),
            (vec![host, ("origin", "https://API.example.com:443")], true),
            (
                vec![host, ("origin", "https://api.example.com:8443")],
                false,
            ),
            (vec![host, ("origin", "https://evil.example")], false),
            (vec![host, ("origin", "null")], false),
            (vec![("origin", "https://api.example.com")], false),
            (vec![host], false),
            (vec![], false),
            (
                vec![
                    host,
                    ("origin", "https://api.example.com"),
                    ("sec-fetch-site", "cross-site"),
                ],
                false,
            ),
            (
                vec![
                    ("origin", "https://chat.example.com"),
                    ("sec-fetch-site", "cross-site"),
                ],
                true,
            ),
            (vec![("origin", "https://chat.example.com:444")], false),
        ] {
            assert_eq!(policy.allows(&headers(&pairs)), allowed, "{pairs:?}");
        }
    }

    fn signed(secret: &SecretString, sub: &str, exp: u64) -> String {
        let claims = Claims {
            sub: sub.to_owned(),
            exp,
            role: None,
        };
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.expose_secret().as_bytes()),
        )
        .expect("sign")
    }

    #[tokio::test]
    async fn a_remembered_token_still_verifies_per_request() {
        let secret = SecretString::from("s3cret".to_owned());
        let auth = JwtAuthenticator::new(&secret);
        let bearer = |t: &str| parts(Some(("authorization", &*format!("Bearer {t}"))));
        let admin = JwtAuthenticator::issue(&secret, "u-1", "admin", Duration::from_secs(60))
            .expect("sign");
        for _ in 0..2 {
            let p = auth.authenticate(&bearer(&admin)).await.expect("ok");
            assert_eq!((p.user_id.as_str(), p.is_admin()), ("u-1", true));
        }
        assert_eq!(auth.memo().len(), 1);

        // One character off the remembered token is decoded, and refused.
        let mut tampered = admin.clone();
        let last = tampered.pop().expect("non-empty");
        tampered.push(if last == 'A' { 'B' } else { 'A' });
        let err = auth
            .authenticate(&bearer(&tampered))
            .await
            .expect_err("refused");
        assert_eq!(err.status, 401);

        // A remembered token whose expiry has passed (beyond the leeway) is refused and forgotten.
        let now = get_current_timestamp();
        let expired = signed(&secret, "u-3", now - LEEWAY_SECS - 60);
        auth.memo().insert(
            expired.as_str().into(),
            Verified {
                user_id: "u-3".into(),
                role: Role::User,
                exp: now - LEEWAY_SECS - 60,
            },
        );
        let err = auth
            .authenticate(&bearer(&expired))
            .await
            .expect_err("expired");
        assert_eq!(err.status, 401);
        assert!(!auth.memo().contains_key(expired.as_str()));

        // Within the leeway a token is still accepted, remembered or not.
        let recent = signed(&secret, "u-4", now - 1);
        for _ in 0..2 {
            let p = auth.authenticate(&bearer(&recent)).await.expect("leeway");
            assert_eq!((p.user_id.as_str(), p.is_admin()), ("u-4", false));
        }
    }
}
