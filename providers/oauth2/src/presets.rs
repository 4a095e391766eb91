//! Presets: the defaults of well-known providers, written with the keys of configuration.
//!
//! A preset is data only. Every value can be overridden by configuring the same key, and an
//! empty configured value clears it; the endpoints (`issuer` and the `*_url` keys) go as a set:
//! configuring any of them drops all of the preset's. `{name}` in a URL is replaced by the
//! setting `name` (the Microsoft tenant).

/// The defaults of one well-known provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    /// The preset's name: a section with this id uses it without `kind = "oauth2"`.
    pub id: &'static str,
    /// Default settings, keyed like configuration (`authorization_url`, `oauth_scope`, …).
    pub defaults: &'static [(&'static str, &'static str)],
}

/// GitHub OAuth apps: no refresh tokens unless the app opts into expiring tokens, no RFC 7009
/// revocation, and `/user` has a numeric `id` and a `login` instead of OpenID claims.
pub const GITHUB: Preset = Preset {
    id: "github",
    defaults: &[
        ("name", "GitHub"),
        (
            "authorization_url",
            "https://github.com/login/oauth/authorize",
        ),
        ("token_url", "https://github.com/login/oauth/access_token"),
        ("userinfo_url", "https://api.github.com/user"),
        ("oauth_scope", "read:user user:email"),
        ("account_id_field", "id"),
        ("account_name_field", "name login"),
        ("account_email_field", "email"),
        ("terminal_errors", "bad_refresh_token"),
    ],
};

/// GitLab.com (set `issuer` to a self-managed instance's URL to discover its endpoints).
pub const GITLAB: Preset = Preset {
    id: "gitlab",
    defaults: &[
        ("name", "GitLab"),
        ("issuer", "https://gitlab.com"),
        ("authorization_url", "https://gitlab.com/oauth/authorize"),
        ("token_url", "https://gitlab.com/oauth/token"),
        ("revocation_url", "https://gitlab.com/oauth/revoke"),
        ("userinfo_url", "https://gitlab.com/oauth/userinfo"),
        ("oauth_scope", "openid profile email read_user"),
        ("rotates_refresh_tokens", "true"),
    ],
};

/// Google: `access_type=offline` and `prompt=consent` make it issue a refresh token.
pub const GOOGLE: Preset = Preset {
    id: "google",
    defaults: &[
        ("name", "Google"),
        ("issuer", "https://accounts.google.com"),
        (
            "authorization_url",
            "https://accounts.google.com/o/oauth2/v2/auth",
        ),
        ("token_url", "https://oauth2.googleapis.com/token"),
        ("revocation_url", "https://oauth2.googleapis.com/revoke"),
        (
            "userinfo_url",
            "https://openidconnect.googleapis.com/v1/userinfo",
        ),
        ("oauth_scope", "openid email profile"),
        ("authorize_params.access_type", "offline"),
        ("authorize_params.prompt", "consent"),
    ],
};

/// Microsoft identity platform (v2.0 endpoints); `tenant` is `common` unless configured.
/// Refresh tokens die after 90 days without use; Microsoft offers no RFC 7009 revocation.
pub const MICROSOFT: Preset = Preset {
    id: "microsoft",
    defaults: &[
        ("name", "Microsoft"),
        ("tenant", "common"),
        (
            "authorization_url",
            "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/authorize",
        ),
        (
            "token_url",
            "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token",
        ),
        ("userinfo_url", "https://graph.microsoft.com/oidc/userinfo"),
        (
            "oauth_scope",
            "openid profile email offline_access User.Read",
        ),
        ("refresh_idle_expiry", "7776000"),
    ],
};

/// Every shipped preset.
pub const PRESETS: &[Preset] = &[GITHUB, GITLAB, GOOGLE, MICROSOFT];

/// The preset named `name`.
pub fn find(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.id == name)
}
