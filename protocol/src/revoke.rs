//! RFC 7009 token revocation.

use grantry_core::{ProviderError, RevokeOutcome, TokenSet};
use url::Url;

use crate::OAuthSpec;
use crate::client::{BodyEncoding, post};
use crate::http::{is_transient, send, transient};
use crate::token::error_body;

/// Sends one revocation request; 2xx is success, 429/5xx transient, anything else a refusal
/// with the upstream's error code (`revocation_refused` when it gives none).
async fn revoke_one(
    http: &reqwest::Client,
    spec: &OAuthSpec,
    url: &Url,
    token: &str,
    hint: &str,
) -> Result<(), ProviderError> {
    let params = vec![("token", token), ("token_type_hint", hint)];
    // RFC 7009 section 2.1: revocation requests are always form-encoded.
    let request = post(
        http,
        url,
        &spec.client,
        spec.auth_method,
        BodyEncoding::Form,
        params,
    );
    let answer = send(request, "revocation endpoint").await?;
    let status = answer.status.as_u16();
    if answer.status.is_success() {
        return Ok(());
    }
    if is_transient(answer.status) {
        let reason = format!("revocation endpoint answered {status}");
        return Err(transient(reason, answer.retry_after));
    }
    let (code, description) = error_body(&answer.body);
    Err(ProviderError::Rejected {
        status,
        code: code.unwrap_or_else(|| "revocation_refused".into()),
        description: description.unwrap_or_else(|| format!("HTTP {status}")),
    })
}

/// Revokes a grant: the refresh token first (which ends the grant, RFC 7009 section 2.1), then
/// the access token unless [`OAuthSpec::revoke_access_token`] is off and a refresh token was
/// revoked. `unsupported_token_type` for the access token after a revoked refresh token counts
/// as revoked. Without a revocation endpoint: [`RevokeOutcome::Unsupported`].
pub async fn revoke(
    http: &reqwest::Client,
    spec: &OAuthSpec,
    tokens: &TokenSet,
) -> Result<RevokeOutcome, ProviderError> {
    let Some(url) = &spec.endpoints.revocation else {
        return Ok(RevokeOutcome::Unsupported);
    };
    if let Some(refresh) = &tokens.refresh_token {
        revoke_one(http, spec, url, refresh.secret(), "refresh_token").await?;
        if !spec.revoke_access_token {
            return Ok(RevokeOutcome::Revoked);
        }
    }
    let access = tokens.access_token.secret();
    match revoke_one(http, spec, url, access, "access_token").await {
        // A server may revoke only refresh tokens; the grant is gone with the one above.
        Err(ProviderError::Rejected { code, .. })
            if code == "unsupported_token_type" && tokens.refresh_token.is_some() =>
        {
            Ok(RevokeOutcome::Revoked)
        }
        Err(e) => Err(e),
        Ok(()) => Ok(RevokeOutcome::Revoked),
    }
}
