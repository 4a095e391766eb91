//! The authorization URL (RFC 6749 section 4.1.1), with PKCE S256 (RFC 7636) and extra parameters.

use grantry_core::AuthorizeRequest;
use url::Url;

use crate::OAuthSpec;

/// The consent URL for `request`: `response_type=code`, the client, the redirect URI, the
/// scopes, the state, the PKCE challenge when the spec uses PKCE, then the spec's extra
/// parameters.
pub fn authorize_url(spec: &OAuthSpec, request: &AuthorizeRequest<'_>) -> Url {
    let mut url = spec.endpoints.authorization.clone();
    {
        let mut query = url.query_pairs_mut();
        query
            .append_pair("response_type", "code")
            .append_pair("client_id", &spec.client.id)
            .append_pair("redirect_uri", spec.client.redirect_uri.as_str())
            .append_pair("scope", &request.scopes.to_string())
            .append_pair("state", request.state.secret());
        if let Some(verifier) = request.pkce.filter(|_| spec.pkce) {
            query
                .append_pair("code_challenge", &verifier.challenge_s256())
                .append_pair("code_challenge_method", "S256");
        }
        for (name, value) in &spec.authorize_params {
            query.append_pair(name, value);
        }
    }
    url
}
