//! Instances from `grantry.toml` and the environment, as `grantry serve` and `grantry providers`
//! read them.

use std::collections::BTreeMap;

use grantry_core::provider::{build_providers, factories};
use grantry_core::{AccessToken, AuthorizeRequest, Provider, RevokeOutcome, StateToken, TokenSet};
use grantry_server::Config;

fn load(toml: Option<&str>, env: &[(&str, &str)]) -> (Config, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("grantry.toml");
    let mut vars: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    match toml {
        Some(text) => {
            std::fs::write(&path, text).expect("write");
            vars.push(("GRANTRY_CONFIG".into(), path.display().to_string()));
        }
        None => vars.push(("GRANTRY_CONFIG".into(), String::new())),
    }
    let config = Config::load_from(vars, &[grantry_oauth2::FACTORY_ID]).expect("config");
    (config, dir)
}

fn query(provider: &dyn Provider) -> (url::Url, BTreeMap<String, String>) {
    let state = StateToken::new("s");
    let url = provider
        .authorize_url(&AuthorizeRequest {
            state: &state,
            scopes: provider.requested_scopes(),
            pkce: None,
        })
        .expect("url");
    let q = url.query_pairs().into_owned().collect();
    (url, q)
}

#[tokio::test]
async fn toml_sections_and_variables_make_instances() {
    let (config, _dir) = load(
        Some(
            r#"
[providers.gitlab]
kind = "oauth2"
client_id = "from-file"
redirect_uri = "https://app.example/connections"
authorization_url = "https://gitlab.example.com/oauth/authorize"
token_url = "https://gitlab.example.com/oauth/token"
userinfo_url = "https://gitlab.example.com/oauth/userinfo"
oauth_scope = ["openid", "read_user"]
authorize_params = { prompt = "consent" }

[providers.github]
enabled = false
client_id = "gh"
"#,
        ),
        &[
            ("GITLAB_CLIENT_ID", "from-env"),
            ("GITLAB_CLIENT_SECRET", "gl-secret"),
            ("ENABLE_GITHUB_INTEGRATION", "true"),
            ("GITHUB_CLIENT_SECRET", "gh-secret"),
            ("GITHUB_REDIRECT_URI", "https://app.example/connections"),
        ],
    );
    let providers = build_providers(&config.providers).expect("providers");
    let ids: Vec<&str> = providers.iter().map(|p| p.id()).collect();
    assert_eq!(ids, ["github", "gitlab"]);

    let (url, q) = query(providers[1].as_ref());
    assert_eq!(url.host_str(), Some("gitlab.example.com"));
    assert_eq!(
        q["client_id"], "from-env",
        "the environment wins over the file"
    );
    assert_eq!(q["prompt"], "consent");
    assert_eq!(q["scope"], "openid read_user");
    assert_eq!(providers[1].display_name(), "GitLab");
    // Own endpoints replace the preset's as a set: no revocation at gitlab.com.
    let tokens = TokenSet {
        access_token: AccessToken::new("a"),
        refresh_token: None,
        token_type: "Bearer".into(),
        expires_at: None,
        scopes: None,
    };
    assert_eq!(
        providers[1].revoke(&tokens).await,
        Ok(RevokeOutcome::Unsupported)
    );

    let (url, q) = query(providers[0].as_ref());
    assert_eq!(url.host_str(), Some("github.com"));
    assert_eq!(q["client_id"], "gh");

    // What `grantry providers` prints: the oauth2 factory and the instances it builds.
    let oauth2 = factories()
        .expect("factories")
        .into_iter()
        .find(|f| f.id == grantry_oauth2::FACTORY_ID)
        .expect("the oauth2 factory is registered");
    let built = (oauth2.build)(&config.providers).expect("built");
    let ids: Vec<&str> = built.iter().map(|p| p.id()).collect();
    assert_eq!(ids, ["github", "gitlab"]);
}

#[test]
fn the_github_preset_needs_only_credentials_from_the_environment() {
    let (config, _dir) = load(
        None,
        &[
            ("ENABLE_GITHUB_INTEGRATION", "true"),
            ("GITHUB_CLIENT_ID", "gh"),
            ("GITHUB_CLIENT_SECRET", "gh-secret"),
            ("GITHUB_REDIRECT_URI", "https://app.example/connections"),
        ],
    );
    let providers = build_providers(&config.providers).expect("providers");
    assert_eq!(providers.len(), 1);
    assert_eq!(providers[0].id(), "github");
    assert!(providers[0].uses_pkce());

    let (config, _dir) = load(None, &[("ENABLE_GITHUB_INTEGRATION", "true")]);
    let err = build_providers(&config.providers)
        .err()
        .expect("no credentials");
    assert_eq!(
        err.to_string(),
        "GITHUB_CLIENT_ID is required when ENABLE_GITHUB_INTEGRATION=true"
    );
}

#[test]
fn a_failed_discovery_stops_start_up_naming_the_issuer_variable() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port");
    let issuer = format!("http://{closed}");
    let (config, _dir) = load(
        None,
        &[
            ("ENABLE_CORP_SSO_INTEGRATION", "true"),
            ("CORP_SSO_KIND", "oauth2"),
            ("CORP_SSO_ISSUER", &issuer),
            ("CORP_SSO_CLIENT_ID", "c"),
            ("CORP_SSO_CLIENT_SECRET", "corp-secret"),
            ("CORP_SSO_REDIRECT_URI", "https://app.example/connections"),
            ("CORP_SSO_HTTP_TIMEOUT", "2"),
        ],
    );
    let err = build_providers(&config.providers)
        .err()
        .expect("nothing answers")
        .to_string();
    assert!(
        err.starts_with("CORP_SSO_ISSUER is invalid: OpenID discovery at"),
        "{err}"
    );
    assert!(!err.contains("corp-secret"));
}
