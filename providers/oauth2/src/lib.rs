//! grantry-oauth2: any standards-following OAuth 2.0 / OpenID Connect provider, from configuration.
//!
//! One factory yields one provider per configured instance: a section `[providers.ID]` (or the
//! variables `ENABLE_ID_INTEGRATION`, `ID_*`) with `kind = "oauth2"`, or whose id names a shipped
//! [preset](presets) (`github`, `gitlab`, `google`, `microsoft`). Each instance speaks RFC 6749
//! with form-encoded token requests, PKCE S256 (RFC 7636), the `iss` check of RFC 9207, RFC 7009
//! revocation on disconnect, and reads the account from the userinfo endpoint. With `issuer`
//! set, OpenID discovery fills in the endpoints at start-up. Each instance is a
//! [`grantry_protocol::OAuthSpec`] without hooks: this crate reads configuration, presets and
//! discovery; the protocol is grantry-protocol's. See `docs/oauth2-provider.md`.

pub mod config;
mod discovery;
pub mod presets;

use std::sync::Arc;

use grantry_core::{ConfigError, Provider, ProviderFactory, ProvidersConfig, ScopeInfo};
use grantry_protocol::{OAuthProvider, refresh_scope, scope};

pub use config::{DEFAULT_HTTP_TIMEOUT_SECS, DEFAULT_SCOPES, KIND};
pub use grantry_protocol::{AccountFields, OAuthSpec, TokenAuthMethod};

/// The factory id; instances take the ids of their configuration sections.
pub const FACTORY_ID: &str = "oauth2";

/// The OpenID Connect scopes every instance knows about.
pub const SCOPES: &[ScopeInfo] = &[
    scope("openid", "sign in with OpenID Connect"),
    scope("profile", "name and profile"),
    scope("email", "email address"),
    refresh_scope(
        "offline_access",
        "a refresh token, to act while the user is away",
    ),
];

/// One configured OAuth 2.0 / OpenID Connect provider: its spec, no hooks.
pub type OAuth2Provider = OAuthProvider;

fn build(config: &ProvidersConfig) -> Result<Vec<Arc<dyn Provider>>, ConfigError> {
    let mut built: Vec<Arc<dyn Provider>> = Vec::new();
    for section in config.sections() {
        if config::selects(section)? {
            built.push(Arc::new(OAuth2Provider::new(config::from_settings(
                section,
            )?)?));
        }
    }
    Ok(built)
}

grantry_core::register_provider!(ProviderFactory {
    id: FACTORY_ID,
    name: "OAuth 2.0 / OpenID Connect",
    build,
});

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use grantry_core::{
        AccessToken, AuthorizationCode, AuthorizeRequest, CallbackContext, PkceVerifier,
        ProviderError, ProviderSettings, RevokeOutcome, ScopeSet, StateToken, TokenErrorKind,
        TokenSet,
    };
    use url::Url;

    use super::*;

    fn section(id: &str, pairs: &[(&str, &str)]) -> ProviderSettings {
        let values: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ProviderSettings::new(id, values)
    }

    fn built(sections: Vec<ProviderSettings>) -> Result<Vec<Arc<dyn Provider>>, ConfigError> {
        build(&ProvidersConfig::new(sections))
    }

    const CREDENTIALS: &[(&str, &str)] = &[
        ("client_id", "cid"),
        ("client_secret", "very-secret"),
        ("redirect_uri", "https://app.example/connections"),
    ];

    fn with<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        CREDENTIALS.iter().chain(extra).copied().collect()
    }

    fn query(url: &Url) -> BTreeMap<String, String> {
        url.query_pairs().into_owned().collect()
    }

    #[test]
    fn a_preset_needs_only_credentials() {
        let list = built(vec![section("github", &with(&[("enabled", "true")]))]).expect("built");
        assert_eq!(list.len(), 1);
        let github = &list[0];
        assert_eq!((github.id(), github.display_name()), ("github", "GitHub"));
        let state = StateToken::new("st4te");
        let verifier = PkceVerifier::generate();
        let url = github
            .authorize_url(&AuthorizeRequest {
                state: &state,
                scopes: github.requested_scopes(),
                pkce: Some(&verifier),
            })
            .expect("url");
        assert!(
            url.as_str()
                .starts_with("https://github.com/login/oauth/authorize?")
        );
        let q = query(&url);
        assert_eq!(q["client_id"], "cid");
        assert_eq!(q["state"], "st4te");
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["scope"], "read:user user:email");
        assert_eq!(q["code_challenge"], verifier.challenge_s256());
        assert_eq!(q["code_challenge_method"], "S256");
        assert!(!url.as_str().contains("very-secret"));
    }

    #[test]
    fn sections_that_are_not_instances_build_nothing() {
        let list = built(vec![
            section("github", &with(&[])),
            section("gitlab", &with(&[("enabled", "false")])),
            section("atlassian", &with(&[("enabled", "true")])),
            section("corp", &with(&[("kind", "saml"), ("enabled", "true")])),
            section(
                "corp-sso",
                &with(&[("kind", "oauth2"), ("enabled", "false")]),
            ),
        ])
        .expect("built");
        assert!(list.is_empty());
    }

    #[test]
    fn kind_oauth2_is_enabled_unless_disabled_and_presets_can_be_named() {
        let list = built(vec![
            section(
                "corp-sso",
                &with(&[
                    ("kind", "OAuth2"),
                    ("authorization_url", "https://sso.example/authorize"),
                    ("token_url", "https://sso.example/token"),
                    ("userinfo_url", "https://sso.example/userinfo"),
                ]),
            ),
            section(
                "work-gh",
                &with(&[("preset", "github"), ("enabled", "yes")]),
            ),
        ])
        .expect("built");
        let ids: Vec<&str> = list.iter().map(|p| p.id()).collect();
        assert_eq!(ids, ["corp-sso", "work-gh"]);
        assert_eq!(list[0].display_name(), "corp-sso");
        assert_eq!(list[1].display_name(), "GitHub");
        assert_eq!(list[0].requested_scopes(), &ScopeSet::parse(DEFAULT_SCOPES));
    }

    #[test]
    fn bad_or_missing_values_name_their_variable() {
        let err = |id: &str, pairs: &[(&str, &str)]| {
            built(vec![section(id, pairs)])
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert_eq!(
            err("github", &[("enabled", "true")]),
            "GITHUB_CLIENT_ID is required when ENABLE_GITHUB_INTEGRATION=true"
        );
        assert_eq!(
            err("corp-sso", &with(&[("kind", "oauth2")])),
            "CORP_SSO_ISSUER is required (or CORP_SSO_AUTHORIZATION_URL and CORP_SSO_TOKEN_URL) when ENABLE_CORP_SSO_INTEGRATION=true"
        );
        let e = err(
            "gitlab",
            &with(&[("enabled", "1"), ("token_auth_method", "jwt")]),
        );
        assert!(e.starts_with("GITLAB_TOKEN_AUTH_METHOD is invalid"), "{e}");
        let e = err(
            "gitlab",
            &with(&[("enabled", "1"), ("authorize_params_state", "x")]),
        );
        assert!(
            e.starts_with("GITLAB_AUTHORIZE_PARAMS_STATE is invalid"),
            "{e}"
        );
        let e = err("gitlab", &with(&[("enabled", "1"), ("pkce", "maybe")]));
        assert!(e.starts_with("GITLAB_PKCE is invalid"), "{e}");
        let e = err("x", &with(&[("preset", "okta"), ("enabled", "1")]));
        assert!(
            e.starts_with("X_PRESET is invalid: unknown preset `okta`"),
            "{e}"
        );
        let e = err(
            "google",
            &with(&[
                ("enabled", "1"),
                ("authorization_url", "https://a.example/authorize"),
                ("token_url", "ftp://x"),
            ]),
        );
        assert!(e.starts_with("GOOGLE_TOKEN_URL is invalid"), "{e}");
        let e = err("microsoft", &with(&[("enabled", "1"), ("tenant", "a/b")]));
        assert!(e.starts_with("MICROSOFT_TENANT is invalid"), "{e}");
        let e = err("Bad Id", &with(&[("kind", "oauth2")]));
        assert!(e.starts_with("[providers.Bad Id] is invalid"), "{e}");
        assert!(
            err("github", &[("enabled", "true"), ("client_id", "c")])
                .starts_with("GITHUB_CLIENT_SECRET is required")
        );
        // A public client needs no secret.
        assert!(
            built(vec![section(
                "github",
                &[
                    ("enabled", "true"),
                    ("client_id", "c"),
                    ("token_auth_method", "none"),
                    ("redirect_uri", "https://app.example/cb")
                ]
            )])
            .is_ok()
        );
    }

    #[test]
    fn presets_are_overridden_key_by_key() {
        let list = built(vec![
            section(
                "microsoft",
                &with(&[("enabled", "true"), ("tenant", "contoso.onmicrosoft.com")]),
            ),
            section(
                "google",
                &with(&[
                    ("enabled", "true"),
                    ("authorize_params.prompt", ""),
                    ("authorize_params_login_hint", "ada@example.com"),
                    ("oauth_scope", "openid email"),
                    ("pkce", "false"),
                ]),
            ),
        ])
        .expect("built");
        let state = StateToken::new("s");
        let verifier = PkceVerifier::generate();
        let url = |p: &Arc<dyn Provider>| {
            p.authorize_url(&AuthorizeRequest {
                state: &state,
                scopes: p.requested_scopes(),
                pkce: Some(&verifier),
            })
            .expect("url")
        };
        let google = url(&list[0]);
        let q = query(&google);
        assert_eq!(q["access_type"], "offline");
        assert_eq!(q["login_hint"], "ada@example.com");
        assert!(
            !q.contains_key("prompt"),
            "an empty value clears a preset default"
        );
        assert!(!q.contains_key("code_challenge"), "pkce = false");
        assert!(!list[0].uses_pkce());
        assert_eq!(q["scope"], "email openid");
        let microsoft = url(&list[1]);
        assert!(microsoft.as_str().starts_with(
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/authorize?"
        ));
        let policy = list[1].refresh_policy();
        assert_eq!(
            policy.idle_expiry,
            Some(std::time::Duration::from_secs(90 * 86_400))
        );
    }

    #[tokio::test]
    async fn a_foreign_or_missing_iss_is_refused_before_the_code_leaves() {
        // Nothing listens on the token endpoint: a refusal that is not "connection failed"
        // proves no request was made.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port");
        let token_url = format!("http://{closed}/token");
        let config = config::from_settings(&section(
            "gitlab",
            &with(&[
                ("enabled", "true"),
                ("issuer", "https://gitlab.example.com"),
                ("discovery", "false"),
                (
                    "authorization_url",
                    "https://gitlab.example.com/oauth/authorize",
                ),
                ("token_url", &token_url),
                ("userinfo_url", "https://gitlab.example.com/oauth/userinfo"),
                ("require_iss", "true"),
            ]),
        ))
        .expect("config");
        let gitlab = OAuth2Provider::new(config).expect("provider");
        let code = AuthorizationCode::new("code-1");
        let exchange = |issuer| {
            let gitlab = gitlab.clone();
            let code = code.clone();
            async move {
                gitlab
                    .exchange_code(&code, &CallbackContext { pkce: None, issuer })
                    .await
            }
        };
        match exchange(Some("https://evil.example")).await {
            Err(ProviderError::Rejected { code, .. }) => assert_eq!(code, "invalid_issuer"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        match exchange(None).await {
            Err(ProviderError::Rejected { code, .. }) => assert_eq!(code, "missing_issuer"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(matches!(
            exchange(Some("https://gitlab.example.com")).await,
            Err(ProviderError::Transient { .. })
        ));
    }

    #[tokio::test]
    async fn debug_hides_the_secret_and_no_revocation_is_unsupported() {
        let list = built(vec![section("github", &with(&[("enabled", "true")]))]).expect("built");
        let shown = format!(
            "{:?}",
            config::from_settings(&section("github", &with(&[])))
        );
        assert!(!shown.contains("very-secret"), "{shown}");
        let tokens = TokenSet {
            access_token: AccessToken::new("a"),
            refresh_token: None,
            token_type: "Bearer".into(),
            expires_at: None,
            scopes: None,
        };
        assert_eq!(
            list[0].revoke(&tokens).await,
            Ok(RevokeOutcome::Unsupported)
        );
        assert_eq!(
            list[0].classify_token_error(400, Some("bad_refresh_token")),
            TokenErrorKind::Terminal
        );
        assert_eq!(
            list[0].classify_token_error(400, Some("invalid_client")),
            TokenErrorKind::Rejected
        );
    }
}
