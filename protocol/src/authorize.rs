//! The authorization URL (RFC 6749 section 4.1.1), with PKCE S256 (RFC 7636) and extra parameters.

use grantry_core::AuthorizeRequest;
use url::Url;

use crate::OAuthSpec;

/// Parameters the protocol sets itself; a spec's extra parameters never override them.
pub const RESERVED_PARAMS: &[&str] = &[
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
];

/// The consent URL for `request`: `response_type=code`, the client, the redirect URI, the
/// scopes, the state, the PKCE challenge when the spec uses PKCE, then the spec's extra
/// parameters (those with a [reserved](RESERVED_PARAMS) name are left out).
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
            if !RESERVED_PARAMS.contains(&name.as_str()) {
                query.append_pair(name, value);
            }
        }
    }
    url
}

#[cfg(test)]
mod tests {
    use grantry_core::{PkceVerifier, ScopeSet, StateToken};

    use super::*;
    use crate::{Client, Endpoints};

    fn url(text: &str) -> Url {
        Url::parse(text).expect("url")
    }

    #[test]
    fn extra_parameters_never_override_the_protocols_own() {
        let client = Client {
            id: "cid".into(),
            secret: None,
            redirect_uri: url("https://app.example/cb"),
        };
        let endpoints = Endpoints {
            authorization: url("https://idp.example/authorize?tenant=t1"),
            token: url("https://idp.example/token"),
            revocation: None,
            account: url("https://idp.example/me"),
        };
        let mut spec = OAuthSpec::new("idp", "IdP", client, endpoints);
        spec.pkce = true;
        spec.authorize_params = vec![
            ("prompt".into(), "consent".into()),
            ("state".into(), "attacker".into()),
            ("redirect_uri".into(), "https://evil.example/".into()),
        ];
        let state = StateToken::new("st4te");
        let scopes = ScopeSet::parse("openid email");
        let verifier = PkceVerifier::generate();
        let built = authorize_url(
            &spec,
            &AuthorizeRequest {
                state: &state,
                scopes: &scopes,
                pkce: Some(&verifier),
            },
        );
        let pairs: Vec<(String, String)> = built.query_pairs().into_owned().collect();
        let values = |name: &str| {
            pairs
                .iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(values("state"), ["st4te"]);
        assert_eq!(values("redirect_uri"), ["https://app.example/cb"]);
        assert_eq!(values("prompt"), ["consent"]);
        assert_eq!(values("tenant"), ["t1"]);
        assert_eq!(values("code_challenge_method"), ["S256"]);
        assert_eq!(
            values("code_challenge"),
            [verifier.challenge_s256().as_str()]
        );
    }
}
