//! The connection lifecycle (begin, complete, status, disconnect) without HTTP, on SQLite and
//! (when configured) PostgreSQL, with a provider that answers what each test asks of it.

use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use axum::http::StatusCode;
use chrono::{Duration, Utc};
use grantry_core::callback::{Callback, Outcome};
use grantry_core::events::DeleteReason;
use grantry_core::keyring::KeyRing;
use grantry_core::lifecycle::{ConnectionSettings, Connections, LifecycleError, Revocation};
use grantry_core::store::TokenStore;
use grantry_core::vault::Vault;
use grantry_core::{
    AccessToken, Account, AccountDetails, ApiError, AuthorizationCode, AuthorizeRequest,
    CallbackContext, PkceVerifier, Provider, ProviderError, RefreshToken, Resource, RevokeOutcome,
    ScopeInfo, ScopeSet, StateToken, TokenSet,
};
use grantry_server::SqlStore;
use grantry_server::testing::TestDatabase;
use secrecy::SecretString;
use url::Url;

const ID: &str = "fake";

/// A provider whose answers follow the code it is given: `exchange-transient`,
/// `exchange-refused`, `account-transient`, `account-refused`; the access token it issues is the
/// code, and `revoke` answers by it (`revoke-unsupported`, `revoke-fails`, else revoked).
struct Fake {
    id: &'static str,
    pkce: bool,
    scopes: ScopeSet,
    /// The PKCE verifier the last code exchange received.
    verifier: Mutex<Option<String>>,
    /// The access tokens `revoke` was called with.
    revoked: Mutex<Vec<String>>,
}

impl Fake {
    fn new(pkce: bool) -> Arc<Self> {
        Self::with_id(ID, pkce)
    }

    fn with_id(id: &'static str, pkce: bool) -> Arc<Self> {
        Arc::new(Self {
            id,
            pkce,
            scopes: ScopeSet::parse("read offline_access"),
            verifier: Mutex::new(None),
            revoked: Mutex::new(Vec::new()),
        })
    }

    fn verifier(&self) -> Option<String> {
        self.verifier
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn revoked(&self) -> Vec<String> {
        self.revoked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

fn transient(what: &str) -> ProviderError {
    ProviderError::Transient {
        reason: format!("{what}: HTTP 503"),
        retry_after: None,
    }
}

fn refused(what: &str) -> ProviderError {
    ProviderError::Rejected {
        status: 400,
        code: "invalid_request".into(),
        description: format!("{what} refused"),
    }
}

#[async_trait]
impl Provider for Fake {
    fn id(&self) -> &str {
        self.id
    }

    fn display_name(&self) -> &str {
        "Fake"
    }

    fn scope_catalogue(&self) -> &[ScopeInfo] {
        &[]
    }

    fn requested_scopes(&self) -> &ScopeSet {
        &self.scopes
    }

    fn authorize_url(&self, request: &AuthorizeRequest<'_>) -> Result<Url, ProviderError> {
        let mut url = Url::parse("https://fake.example/authorize").map_err(|_| refused("url"))?;
        url.query_pairs_mut()
            .append_pair("state", request.state.secret())
            .append_pair("scope", &request.scopes.to_string());
        if let Some(pkce) = request.pkce {
            url.query_pairs_mut()
                .append_pair("code_challenge", &pkce.challenge_s256())
                .append_pair("code_challenge_method", "S256");
        }
        Ok(url)
    }

    fn uses_pkce(&self) -> bool {
        self.pkce
    }

    async fn exchange_code(
        &self,
        code: &AuthorizationCode,
        callback: &CallbackContext<'_>,
    ) -> Result<TokenSet, ProviderError> {
        *self.verifier.lock().unwrap_or_else(PoisonError::into_inner) =
            callback.pkce.map(|v| v.secret().to_owned());
        match code.secret() {
            "exchange-transient" => return Err(transient("token endpoint")),
            "exchange-refused" => return Err(refused("the code")),
            _ => {}
        }
        Ok(TokenSet {
            access_token: AccessToken::new(code.secret()),
            refresh_token: Some(RefreshToken::new(format!("refresh-{}", code.secret()))),
            token_type: "Bearer".into(),
            expires_at: Some(Utc::now() + Duration::hours(1)),
            scopes: Some(self.scopes.clone()),
        })
    }

    async fn refresh(&self, _refresh_token: &RefreshToken) -> Result<TokenSet, ProviderError> {
        Err(ProviderError::Unsupported("refresh"))
    }

    async fn account(&self, access_token: &AccessToken) -> Result<AccountDetails, ProviderError> {
        match access_token.secret() {
            "account-transient" => Err(transient("account")),
            "account-refused" => Err(refused("the account lookup")),
            _ => Ok(AccountDetails {
                account: Account {
                    id: "acc-1".into(),
                    name: Some("Ada".into()),
                    email: Some("ada@example.com".into()),
                },
                resources: vec![Resource {
                    id: "site-1".into(),
                    name: "Site".into(),
                    url: Some("https://site.example".into()),
                    scopes: vec!["read".into()],
                    avatar_url: None,
                }],
            }),
        }
    }

    async fn revoke(&self, tokens: &TokenSet) -> Result<RevokeOutcome, ProviderError> {
        let token = tokens.access_token.secret().to_owned();
        self.revoked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(token.clone());
        match token.as_str() {
            "revoke-unsupported" => Ok(RevokeOutcome::Unsupported),
            "revoke-fails" => Err(transient("revocation")),
            _ => Ok(RevokeOutcome::Revoked),
        }
    }
}

fn key() -> Arc<KeyRing> {
    Arc::new(
        KeyRing::from_base64(&SecretString::from(KeyRing::generate_key_base64()), None)
            .expect("key"),
    )
}

fn connections(store: &SqlStore, keys: Arc<KeyRing>) -> Connections {
    Connections::new(
        Vault::new(Arc::new(store.clone()), keys),
        ConnectionSettings::default(),
    )
}

fn code(state: &StateToken, code: &str) -> Callback {
    Callback {
        state: StateToken::new(state.secret()),
        outcome: Outcome::Code(AuthorizationCode::new(code)),
        issuer: None,
    }
}

fn declined(state: &StateToken, error: &str, description: &str) -> Callback {
    Callback {
        state: StateToken::new(state.secret()),
        outcome: Outcome::Error {
            error: error.into(),
            description: description.into(),
        },
        issuer: None,
    }
}

fn query(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The HTTP answer of a lifecycle error: status, code and message.
fn answer(e: LifecycleError) -> (StatusCode, &'static str, String) {
    let api = ApiError::from(e);
    (api.status, api.code, api.message)
}

#[tokio::test]
async fn begin_then_complete_connects_and_status_reports_it() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let lifecycle = connections(&store, key());
        let fake = Fake::new(false);
        assert!(
            lifecycle
                .status("u-1", fake.as_ref())
                .await
                .expect("status")
                .is_none(),
            "{}",
            db.kind
        );
        let before = Utc::now();
        let begun = lifecycle.begin("u-1", fake.as_ref()).await.expect("begin");
        assert_eq!(begun.expires_in, Duration::seconds(600));
        assert!(begun.expires_at > before + Duration::seconds(599));
        assert!(begun.expires_at <= Utc::now() + Duration::seconds(600));
        assert_eq!(
            query(&begun.url, "state").as_deref(),
            Some(begun.state.secret())
        );
        assert_eq!(
            query(&begun.url, "scope").as_deref(),
            Some("offline_access read")
        );
        assert_eq!(query(&begun.url, "code_challenge"), None);

        let record = lifecycle
            .complete("u-1", fake.as_ref(), code(&begun.state, "tok-1"))
            .await
            .expect("complete");
        assert_eq!(fake.verifier(), None, "{}: no PKCE, no verifier", db.kind);
        assert_eq!(
            (
                record.user_id.as_str(),
                record.provider.as_str(),
                record.account.id.as_str()
            ),
            ("u-1", ID, "acc-1")
        );
        assert_eq!(record.resources.len(), 1);
        let status = lifecycle
            .status("u-1", fake.as_ref())
            .await
            .expect("status")
            .expect("connected");
        assert_eq!(status.id, record.id);
        assert!(
            lifecycle
                .status("u-2", fake.as_ref())
                .await
                .expect("status")
                .is_none(),
            "{}: another user is not connected",
            db.kind
        );
        db.cleanup().await;
    }
}

#[tokio::test]
async fn states_are_single_use_and_bound_to_their_user_and_provider() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let lifecycle = connections(&store, key());
        let fake = Fake::new(false);

        let unknown = lifecycle
            .complete("u-1", fake.as_ref(), code(&StateToken::generate(), "tok"))
            .await
            .expect_err("unknown state");
        assert!(matches!(unknown, LifecycleError::InvalidState));
        assert_eq!(
            answer(unknown),
            (
                StatusCode::BAD_REQUEST,
                "invalid_state",
                "unknown, expired or already used state; start the connection again".into()
            )
        );

        let begun = lifecycle.begin("u-1", fake.as_ref()).await.expect("begin");
        let other_user = lifecycle
            .complete("u-2", fake.as_ref(), code(&begun.state, "tok"))
            .await
            .expect_err("another user's state");
        assert!(
            matches!(other_user, LifecycleError::InvalidState),
            "{}",
            db.kind
        );
        assert!(
            lifecycle
                .status("u-2", fake.as_ref())
                .await
                .expect("status")
                .is_none()
        );

        // Another user's attempt left the state to its owner, who uses it once.
        lifecycle
            .complete("u-1", fake.as_ref(), code(&begun.state, "tok"))
            .await
            .expect("the owner completes");
        let reused = lifecycle
            .complete("u-1", fake.as_ref(), code(&begun.state, "tok"))
            .await
            .expect_err("reused state");
        assert!(matches!(reused, LifecycleError::InvalidState));

        // A state of another provider does not complete this one, and stays to its own.
        let other = Fake::with_id("other", false);
        let begun = lifecycle.begin("u-1", fake.as_ref()).await.expect("begin");
        let e = lifecycle
            .complete("u-1", other.as_ref(), code(&begun.state, "tok"))
            .await
            .expect_err("another provider's state");
        assert!(matches!(e, LifecycleError::InvalidState), "{}", db.kind);
        lifecycle
            .complete("u-1", fake.as_ref(), code(&begun.state, "tok"))
            .await
            .expect("its own provider completes");
        db.cleanup().await;
    }
}

#[tokio::test]
async fn expired_states_are_refused() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let fake = Fake::new(false);
        let lifecycle = Connections::new(
            Vault::new(Arc::new(store.clone()), key()),
            ConnectionSettings {
                state_ttl: Duration::milliseconds(-1),
                ..ConnectionSettings::default()
            },
        );
        let begun = lifecycle.begin("u-1", fake.as_ref()).await.expect("begin");
        let e = lifecycle
            .complete("u-1", fake.as_ref(), code(&begun.state, "tok"))
            .await
            .expect_err("expired");
        assert!(matches!(e, LifecycleError::InvalidState), "{}", db.kind);
        db.cleanup().await;
    }
}

#[tokio::test]
async fn declined_and_failed_authorizations_use_up_the_state() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let lifecycle = connections(&store, key());
        let fake = Fake::new(true);

        let begun = lifecycle.begin("u-1", fake.as_ref()).await.expect("begin");
        let e = lifecycle
            .complete(
                "u-1",
                fake.as_ref(),
                declined(&begun.state, "access_denied", "no"),
            )
            .await
            .expect_err("declined");
        assert!(matches!(e, LifecycleError::AccessDenied), "{}", db.kind);
        assert_eq!(
            answer(e),
            (
                StatusCode::BAD_REQUEST,
                "access_denied",
                "the user declined the authorization".into()
            )
        );
        let again = lifecycle
            .complete("u-1", fake.as_ref(), code(&begun.state, "tok"))
            .await
            .expect_err("the state is used");
        assert!(matches!(again, LifecycleError::InvalidState));

        let begun = lifecycle.begin("u-1", fake.as_ref()).await.expect("begin");
        let e = lifecycle
            .complete(
                "u-1",
                fake.as_ref(),
                declined(&begun.state, "server_error", "try later"),
            )
            .await
            .expect_err("failed");
        assert_eq!(
            answer(e),
            (
                StatusCode::BAD_REQUEST,
                "authorization_failed",
                "the provider answered server_error try later".into()
            )
        );
        let begun = lifecycle.begin("u-1", fake.as_ref()).await.expect("begin");
        let e = lifecycle
            .complete(
                "u-1",
                fake.as_ref(),
                declined(&begun.state, "invalid_scope", ""),
            )
            .await
            .expect_err("failed");
        assert_eq!(
            answer(e).2,
            "the provider answered invalid_scope",
            "an empty description leaves no trailing space"
        );
        assert_eq!(fake.verifier(), None, "no code was exchanged");
        assert!(
            lifecycle
                .status("u-1", fake.as_ref())
                .await
                .expect("status")
                .is_none()
        );
        db.cleanup().await;
    }
}

#[tokio::test]
async fn the_pkce_verifier_is_sealed_with_the_state_and_handed_to_the_exchange() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let keys = key();
        let lifecycle = connections(&store, keys.clone());
        let fake = Fake::new(true);
        let begun = lifecycle.begin("u-1", fake.as_ref()).await.expect("begin");
        let challenge = query(&begun.url, "code_challenge").expect("a challenge");
        assert_eq!(
            query(&begun.url, "code_challenge_method").as_deref(),
            Some("S256")
        );
        lifecycle
            .complete("u-1", fake.as_ref(), code(&begun.state, "tok"))
            .await
            .expect("complete");
        let verifier = fake.verifier().expect("the exchange got the verifier");
        assert_eq!(PkceVerifier::new(verifier).challenge_s256(), challenge);

        // Two authorizations in flight keep their own verifiers.
        let first = lifecycle.begin("u-1", fake.as_ref()).await.expect("begin");
        let second = lifecycle.begin("u-1", fake.as_ref()).await.expect("begin");
        for begun in [&second, &first] {
            lifecycle
                .complete("u-1", fake.as_ref(), code(&begun.state, "tok"))
                .await
                .expect("complete");
            assert_eq!(
                fake.verifier()
                    .map(|v| PkceVerifier::new(v).challenge_s256()),
                query(&begun.url, "code_challenge"),
                "{}",
                db.kind
            );
        }

        // A verifier sealed under a key this server does not hold is an internal fault.
        let begun = lifecycle.begin("u-1", fake.as_ref()).await.expect("begin");
        let e = connections(&store, key())
            .complete("u-1", fake.as_ref(), code(&begun.state, "tok"))
            .await
            .expect_err("the verifier does not open");
        assert!(matches!(e, LifecycleError::Internal(_)), "{e:?}");
        assert_eq!(answer(e).0, StatusCode::INTERNAL_SERVER_ERROR);
        db.cleanup().await;
    }
}

#[tokio::test]
async fn upstream_failures_are_transient_or_refusals() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let lifecycle = connections(&store, key());
        let fake = Fake::new(false);
        for (code_value, status, error, message) in [
            (
                "exchange-transient",
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                "fake is unavailable: the provider is unavailable: token endpoint: HTTP 503",
            ),
            (
                "account-transient",
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                "fake is unavailable: the provider is unavailable: account: HTTP 503",
            ),
            (
                "exchange-refused",
                StatusCode::BAD_REQUEST,
                "authorization_failed",
                "fake refused the authorization: the provider refused the request: \
                 invalid_request: the code refused",
            ),
            (
                "account-refused",
                StatusCode::BAD_REQUEST,
                "authorization_failed",
                "fake refused the authorization: the provider refused the request: \
                 invalid_request: the account lookup refused",
            ),
        ] {
            let begun = lifecycle.begin("u-1", fake.as_ref()).await.expect("begin");
            let e = lifecycle
                .complete("u-1", fake.as_ref(), code(&begun.state, code_value))
                .await
                .expect_err(code_value);
            let transient = status == StatusCode::BAD_GATEWAY;
            assert_eq!(
                matches!(e, LifecycleError::Unavailable { .. }),
                transient,
                "{}: {code_value}",
                db.kind
            );
            assert_eq!(
                matches!(e, LifecycleError::Refused { .. }),
                !transient,
                "{code_value}"
            );
            assert_eq!(answer(e), (status, error, message.to_owned()));
            assert!(
                lifecycle
                    .status("u-1", fake.as_ref())
                    .await
                    .expect("status")
                    .is_none(),
                "{code_value}: nothing saved"
            );
        }
        db.cleanup().await;
    }
}

#[tokio::test]
async fn disconnect_revokes_best_effort_and_deletes() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let keys = key();
        let lifecycle = connections(&store, keys.clone());
        let fake = Fake::new(false);
        let connect = |user: &'static str, token: &'static str| {
            let (lifecycle, fake) = (lifecycle.clone(), fake.clone());
            async move {
                let begun = lifecycle.begin(user, fake.as_ref()).await.expect("begin");
                lifecycle
                    .complete(user, fake.as_ref(), code(&begun.state, token))
                    .await
                    .expect("complete");
            }
        };

        let e = lifecycle
            .disconnect("u-1", fake.as_ref(), DeleteReason::User)
            .await
            .expect_err("not connected");
        assert!(
            matches!(e, LifecycleError::NotConnected { .. }),
            "{}",
            db.kind
        );
        assert_eq!(
            answer(e),
            (
                StatusCode::NOT_FOUND,
                "not_connected",
                "no fake connection for this user".into()
            )
        );
        assert!(fake.revoked().is_empty(), "nothing to revoke");

        for (user, token, outcome) in [
            ("u-1", "tok-1", Revocation::Revoked),
            ("u-2", "revoke-unsupported", Revocation::Unsupported),
            ("u-3", "revoke-fails", Revocation::Failed),
        ] {
            connect(user, token).await;
            assert_eq!(
                lifecycle
                    .disconnect(user, fake.as_ref(), DeleteReason::User)
                    .await
                    .expect("disconnect"),
                outcome,
                "{}: {token}",
                db.kind
            );
            assert_eq!(fake.revoked().last().map(String::as_str), Some(token));
            assert!(
                lifecycle
                    .status(user, fake.as_ref())
                    .await
                    .expect("status")
                    .is_none(),
                "{token}: deleted whatever the revocation said"
            );
        }
        assert_eq!(
            [
                Revocation::Revoked,
                Revocation::Unsupported,
                Revocation::Failed
            ]
            .map(Revocation::as_str),
            ["revoked", "unsupported", "failed"]
        );

        // Tokens that do not open (another key) are deleted without asking the provider.
        connect("u-4", "tok-4").await;
        let revocations = fake.revoked().len();
        assert_eq!(
            connections(&store, key())
                .disconnect("u-4", fake.as_ref(), DeleteReason::User)
                .await
                .expect("disconnect"),
            Revocation::Failed
        );
        assert_eq!(fake.revoked().len(), revocations, "no revocation attempted");
        assert!(store.connection("u-4", ID).await.expect("get").is_none());
        let e = lifecycle
            .disconnect("u-4", fake.as_ref(), DeleteReason::User)
            .await
            .expect_err("already gone");
        assert!(matches!(e, LifecycleError::NotConnected { .. }));
        db.cleanup().await;
    }
}

#[tokio::test]
async fn a_failing_database_is_database_unavailable() {
    let db = TestDatabase::sqlite();
    let store = db.store().await;
    let lifecycle = connections(&store, key());
    let fake = Fake::new(false);
    let begun = lifecycle.begin("u-1", fake.as_ref()).await.expect("begin");
    store.close().await;
    let e = lifecycle
        .complete("u-1", fake.as_ref(), code(&begun.state, "tok"))
        .await
        .expect_err("closed database");
    assert!(matches!(e, LifecycleError::Database(_)), "{e:?}");
    assert_eq!(
        answer(e),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the database is unavailable".into()
        )
    );
    for e in [
        lifecycle
            .begin("u-1", fake.as_ref())
            .await
            .map(|_| ())
            .expect_err("begin"),
        lifecycle
            .status("u-1", fake.as_ref())
            .await
            .map(|_| ())
            .expect_err("status"),
        lifecycle
            .disconnect("u-1", fake.as_ref(), DeleteReason::User)
            .await
            .map(|_| ())
            .expect_err("disconnect"),
    ] {
        assert!(matches!(e, LifecycleError::Database(_)), "{e:?}");
    }
}
