//! grantry-atlassian-fake: an in-process fake of Atlassian Cloud, the auth host and the API gateway
//! behind one base URL, for end-to-end tests and the `grantry demo` command.
//!
//! It follows the 3LO facts the provider must honour: JSON-only token endpoint, single-use
//! authorization codes that live 10 minutes, rotating refresh tokens with a configurable reuse
//! leeway (reuse outside it is a breach that kills the whole grant), `offline_access` gating the
//! refresh token, an accessible-resources list with duplicate site ids, and `/me`. Tests can bend
//! it: revoke everything, drop the refresh token from responses, inject token-endpoint failures,
//! and move its clock forward.
//!
//! Behind the gateway paths `/ex/jira/{cloudid}/…` and `/ex/confluence/{cloudid}/…` it serves
//! content for the two default sites (Jira REST v3: JQL search, projects, issues with ADF
//! descriptions and comments, `myself`; Confluence REST v1: CQL search, spaces, pages in storage
//! format, attachment downloads), checks the bearer token, answers 404 for a site or product
//! the configuration does not list, and hands out at most two projects, spaces or comments a
//! page so clients must follow pagination. Tests can rate limit the next content calls
//! ([`FakeAtlassian::rate_limit_next_content_calls`]), fail a site
//! ([`FakeAtlassian::fail_content`]) and read what reached it
//! ([`FakeAtlassian::content_requests`]).
//!
//! It also serves Jira's dynamic webhooks for OAuth 2.0 apps (`/ex/jira/{cloudid}/rest/api/3/webhook`
//! and `…/webhook/refresh`): registration validated like Jira, webhooks owned by app, user and
//! site, a 30-day expiry on the fake's clock, and deliveries signed the way Jira signs them for
//! OAuth 2.0 apps (see [`FakeAtlassian::deliver_jira_event`]).
//!
//! Each grant belongs to the account that consented ([`FakeAtlassian::set_consenting_user`]),
//! and `POST /app/report-accounts/` answers the personal data reports of OAuth 2.0 apps (see
//! [`FakeAtlassian::set_account_status`] and [`FakeAtlassian::account_reports`]).
//!
//! Beside the Cloud fake, [`FakeDataCenter`] plays Jira or Confluence Data Center with the
//! stricter OAuth 2.0 of incoming application links (PKCE required, form-encoded token calls,
//! one-minute codes, `redirect_uri` on refresh, rotation without reuse leeway) under a context
//! path such as `/jira`.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use grantry_atlassian_fake::{FakeAtlassian, FakeConfig};
//! let running = FakeAtlassian::start(FakeConfig::default()).await?;
//! // point ATLASSIAN_AUTH_URL and ATLASSIAN_API_URL at running.base_url
//! let code = running.fake.issue_code("read:me offline_access");
//! # let _ = code;
//! # Ok(())
//! # }
//! ```

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use url::Url;

mod confluence_v2;
mod content;
mod data;
mod dc;
mod personal_data;
mod scopes;
mod webhooks;

pub use content::{HUGE_STREAMED_ATTACHMENT, LARGE_STREAMED_ATTACHMENT, RecordedRequest};
pub use dc::{
    DcConfig, DcCounters, DcProduct, DcRecordedRequest, DcUser, FakeDataCenter, RunningDc,
};
pub use personal_data::{
    AccountReport, DEFAULT_CYCLE_PERIOD, MAX_REPORTED_ACCOUNTS, ReportFailure, ReportedAccount,
};
pub use webhooks::{Delivery, FakeWebhook, Signing, WEBHOOK_LIFETIME, WebhookOwner};

/// How long an authorization code stays valid.
const CODE_TTL: Duration = Duration::from_secs(10 * 60);
/// A refresh token dies after this long without being used.
const REFRESH_IDLE_EXPIRY: Duration = Duration::from_secs(90 * 24 * 60 * 60);
/// Every refresh token of a grant dies this long after the consent.
const GRANT_ABSOLUTE_EXPIRY: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// The only audience Atlassian Cloud accepts at `/authorize`.
const AUDIENCE: &str = "api.atlassian.com";
/// The consent page template (`{{name}}` placeholders, filled in one pass).
const CONSENT_TEMPLATE: &str = include_str!("consent.html");

/// The site id shared by the Jira and Confluence entries of the default configuration.
pub const ACME_SITE_ID: &str = "11111111-1111-4111-8111-111111111111";
/// The site id of the second site of the default configuration.
pub const BETA_SITE_ID: &str = "22222222-2222-4222-8222-222222222222";

/// One entry of the accessible-resources list (serialised with Atlassian's camelCase `avatarUrl`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FakeSite {
    /// The cloud id; not unique in the list (one entry per product of a site).
    pub id: String,
    /// The site's display name.
    pub name: String,
    /// The site's URL, e.g. `https://acme.atlassian.net`.
    pub url: String,
    /// The scopes granted on this entry.
    pub scopes: Vec<String>,
    /// The site's avatar.
    #[serde(rename = "avatarUrl")]
    pub avatar_url: String,
}

/// The Atlassian account that consents on the fake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeUser {
    /// The account id returned by `/me`.
    pub account_id: String,
    /// The display name.
    pub name: String,
    /// The e-mail address.
    pub email: String,
}

/// What the fake knows about the registered app, the user and the sites.
#[derive(Clone)]
pub struct FakeConfig {
    /// The registered app's client id.
    pub client_id: String,
    /// The registered app's client secret.
    pub client_secret: String,
    /// The callback URL registered for the app; `redirect_uri` must equal it exactly.
    pub redirect_uri: String,
    /// `expires_in` of issued access tokens (default 3600 s).
    pub access_ttl: Duration,
    /// How long a rotated-out refresh token is still accepted (default 0).
    pub reuse_leeway: Duration,
    /// The account that consents.
    pub user: FakeUser,
    /// The accessible-resources list, returned as is.
    pub sites: Vec<FakeSite>,
}

impl fmt::Debug for FakeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeConfig")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("redirect_uri", &self.redirect_uri)
            .field("access_ttl", &self.access_ttl)
            .field("reuse_leeway", &self.reuse_leeway)
            .field("user", &self.user)
            .field("sites", &self.sites)
            .finish()
    }
}

impl Default for FakeConfig {
    fn default() -> Self {
        let strings = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        Self {
            client_id: "fake-client-id".to_owned(),
            client_secret: "fake-client-secret".to_owned(),
            redirect_uri: "http://localhost:3000/settings/connections".to_owned(),
            access_ttl: Duration::from_secs(3600),
            reuse_leeway: Duration::ZERO,
            user: FakeUser {
                account_id: "fake-account-1".to_owned(),
                name: "Ada Lovelace".to_owned(),
                email: "ada@example.com".to_owned(),
            },
            sites: vec![
                FakeSite {
                    id: ACME_SITE_ID.to_owned(),
                    name: "Acme".to_owned(),
                    url: "https://acme.atlassian.net".to_owned(),
                    scopes: strings(&["read:jira-work", "read:jira-user"]),
                    avatar_url:
                        "https://site-admin-avatar-cdn.prod.public.atl-paas.net/avatars/240/rocket.png"
                            .to_owned(),
                },
                FakeSite {
                    id: ACME_SITE_ID.to_owned(),
                    name: "Acme".to_owned(),
                    url: "https://acme.atlassian.net".to_owned(),
                    scopes: strings(&["read:confluence-content.all"]),
                    avatar_url:
                        "https://site-admin-avatar-cdn.prod.public.atl-paas.net/avatars/240/rocket.png"
                            .to_owned(),
                },
                FakeSite {
                    id: BETA_SITE_ID.to_owned(),
                    name: "Beta Labs".to_owned(),
                    url: "https://beta-labs.atlassian.net".to_owned(),
                    scopes: strings(&["read:jira-work"]),
                    avatar_url:
                        "https://site-admin-avatar-cdn.prod.public.atl-paas.net/avatars/240/flask.png"
                            .to_owned(),
                },
            ],
        }
    }
}

/// How the token endpoint misbehaves for injected failures.
#[derive(Debug, Clone)]
pub enum Failure {
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// Answer with this status and a JSON error body (`Retry-After: 1` as well for 429).
    Status(u16),
    /// Answer 200 with a body that is not JSON.
    Malformed,
}

/// A snapshot of how often each endpoint was called.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Every `GET /authorize`, valid or not.
    pub authorize: u64,
    /// `POST /oauth/token` calls with `grant_type=authorization_code` (once the JSON parsed).
    pub token_exchange: u64,
    /// `POST /oauth/token` calls with `grant_type=refresh_token` (once the JSON parsed).
    pub token_refresh: u64,
    /// Token calls hit by an injected [`Failure`] (delays included).
    pub token_failures: u64,
    /// Every `GET /me`.
    pub me: u64,
    /// Every `GET /oauth/token/accessible-resources`.
    pub accessible_resources: u64,
    /// Every call under `/ex/` (Jira and Confluence content, Jira webhooks), answered or refused.
    pub content: u64,
    /// Content calls answered 429.
    pub content_rate_limited: u64,
    /// Content calls that came back before the `Retry-After` of their site and product passed.
    pub content_early: u64,
    /// Content calls refused because the token lacked the operation's scopes.
    pub content_scope_refused: u64,
    /// Webhooks created by `POST /rest/api/3/webhook` (one per accepted entry).
    pub webhooks_registered: u64,
    /// Webhooks whose expiry `PUT /rest/api/3/webhook/refresh` moved.
    pub webhooks_refreshed: u64,
    /// Webhooks removed by `DELETE /rest/api/3/webhook`.
    pub webhooks_deleted: u64,
    /// Webhook POSTs sent to receivers, replays included, whatever their outcome.
    pub webhook_deliveries: u64,
}

/// The fake Atlassian: cheap to clone, every clone shares the same state.
#[derive(Clone)]
pub struct FakeAtlassian {
    shared: Arc<Shared>,
}

impl fmt::Debug for FakeAtlassian {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeAtlassian")
            .field("counters", &self.counters())
            .finish_non_exhaustive()
    }
}

/// A fake serving on a local port; dropping it (or its shutdown handle) stops the server.
#[derive(Debug)]
pub struct RunningFake {
    /// The fake behind the server, to steer it and read its counters.
    pub fake: FakeAtlassian,
    /// `http://127.0.0.1:PORT`, without a trailing slash: both the auth and the API base URL.
    pub base_url: String,
    /// The bound address.
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl RunningFake {
    /// `base_url` followed by `path` (which should start with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// Stops the server and waits until it has stopped accepting connections.
    pub async fn shutdown(self) {
        let RunningFake { shutdown, task, .. } = self;
        if let Some(tx) = shutdown {
            let _ = tx.send(());
        }
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

struct Shared {
    config: FakeConfig,
    inner: Mutex<Inner>,
}

struct Inner {
    access_ttl: Duration,
    reuse_leeway: Duration,
    clock_offset: Duration,
    codes: HashMap<String, CodeEntry>,
    grants: Vec<Grant>,
    access_tokens: HashMap<String, AccessEntry>,
    refresh_tokens: HashMap<String, RefreshEntry>,
    omit_refresh_token: usize,
    failures_left: usize,
    failure: Option<Failure>,
    counters: Counters,
    content: content::ContentState,
    webhooks: webhooks::WebhookState,
    personal_data: personal_data::PersonalDataState,
    /// The `traceparent` headers received, with their paths, the latest [`MAX_TRACE_PARENTS`].
    trace_parents: VecDeque<(String, String)>,
}

/// How many received `traceparent` headers the fake keeps.
const MAX_TRACE_PARENTS: usize = 1000;

struct CodeEntry {
    client_id: String,
    redirect_uri: String,
    scope: String,
    expires_at: Option<Instant>,
    used: bool,
}

/// The chain of tokens from one consent.
struct Grant {
    scope: String,
    /// The account that consented.
    account_id: String,
    consented_at: Instant,
    revoked: bool,
}

struct AccessEntry {
    grant: usize,
    expires_at: Option<Instant>,
}

struct RefreshEntry {
    grant: usize,
    last_used: Instant,
    rotated_at: Option<Instant>,
}

#[derive(Serialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
    scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    token_type: &'static str,
}

#[derive(Deserialize)]
struct AuthorizeQuery {
    audience: Option<String>,
    client_id: Option<String>,
    scope: Option<String>,
    redirect_uri: Option<String>,
    state: Option<String>,
    response_type: Option<String>,
}

#[derive(Deserialize)]
struct DecisionForm {
    client_id: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    decision: Option<String>,
}

#[derive(Deserialize)]
struct TokenRequest {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    refresh_token: Option<String>,
}

impl FakeAtlassian {
    /// A fake with this configuration and no grants yet.
    pub fn new(config: FakeConfig) -> Self {
        let inner = Inner {
            access_ttl: config.access_ttl,
            reuse_leeway: config.reuse_leeway,
            clock_offset: Duration::ZERO,
            codes: HashMap::new(),
            grants: Vec::new(),
            access_tokens: HashMap::new(),
            refresh_tokens: HashMap::new(),
            omit_refresh_token: 0,
            failures_left: 0,
            failure: None,
            counters: Counters::default(),
            content: content::ContentState::default(),
            webhooks: webhooks::WebhookState::default(),
            personal_data: personal_data::PersonalDataState::default(),
            trace_parents: VecDeque::new(),
        };
        Self {
            shared: Arc::new(Shared {
                config,
                inner: Mutex::new(inner),
            }),
        }
    }

    /// The axum app (auth host and API gateway in one), for mounting anywhere.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/authorize", get(authorize))
            .route("/authorize/decision", post(decision))
            .route("/oauth/token", post(token))
            .route(
                "/oauth/token/accessible-resources",
                get(accessible_resources),
            )
            .route("/me", get(me))
            .route(
                "/app/report-accounts/",
                post(personal_data::report_accounts),
            )
            .merge(content::router(self))
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                note_trace_parent,
            ))
            .with_state(self.clone())
    }

    /// The `traceparent` headers received (W3C trace context), with the path each came on,
    /// oldest first.
    pub fn trace_parents(&self) -> Vec<(String, String)> {
        self.lock().trace_parents.iter().cloned().collect()
    }

    /// Binds `127.0.0.1:0` and serves a new fake on the current tokio runtime.
    pub async fn start(config: FakeConfig) -> std::io::Result<RunningFake> {
        let fake = Self::new(config);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let app = fake.router();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    // A send or a dropped sender both mean "stop".
                    let _ = rx.await;
                })
                .await;
            if let Err(error) = served {
                tracing::warn!(%error, "the fake Atlassian server stopped with an error");
            }
        });
        Ok(RunningFake {
            fake,
            base_url: format!("http://{addr}"),
            addr,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// The configuration the fake was built with (the setters below do not change it).
    pub fn config(&self) -> &FakeConfig {
        &self.shared.config
    }

    /// A snapshot of the call counters.
    pub fn counters(&self) -> Counters {
        self.lock().counters
    }

    /// Sets how long a rotated-out refresh token is still accepted.
    pub fn set_reuse_leeway(&self, d: Duration) {
        self.lock().reuse_leeway = d;
    }

    /// Sets `expires_in` (and the real lifetime) of access tokens issued from now on.
    pub fn set_access_ttl(&self, d: Duration) {
        self.lock().access_ttl = d;
    }

    /// Kills every refresh and access token issued so far (as if the user revoked the app).
    pub fn revoke_all(&self) {
        for grant in &mut self.lock().grants {
            grant.revoked = true;
        }
    }

    /// The next `n` successful refresh responses lack `refresh_token`; the presented one stays valid.
    pub fn omit_refresh_token_next(&self, n: usize) {
        self.lock().omit_refresh_token = n;
    }

    /// The next `n` calls to `/oauth/token` fail this way (replaces any pending injection).
    pub fn fail_next_token_calls(&self, n: usize, failure: Failure) {
        let mut inner = self.lock();
        inner.failures_left = n;
        inner.failure = Some(failure);
    }

    /// Mints a valid authorization code for `scope`, bound to the configured client and redirect URI.
    pub fn issue_code(&self, scope: &str) -> String {
        let config = &self.shared.config;
        let mut inner = self.lock();
        inner.new_code(&config.client_id, &config.redirect_uri, scope)
    }

    /// Moves the fake's clock forward (expires codes, access tokens, leeways, refresh tokens
    /// and webhooks: one clock for all of them).
    pub fn advance_clock(&self, d: Duration) {
        let mut inner = self.lock();
        inner.clock_offset = inner.clock_offset.saturating_add(d);
    }

    /// The fake's current time: the real time moved forward by every [`Self::advance_clock`].
    pub fn now(&self) -> SystemTime {
        self.lock().wall_now()
    }

    fn note_trace_parent(&self, path: &str, value: &str) {
        let mut inner = self.lock();
        if inner.trace_parents.len() >= MAX_TRACE_PARENTS {
            inner.trace_parents.pop_front();
        }
        inner
            .trace_parents
            .push_back((path.to_owned(), value.to_owned()));
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.shared
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes one pending injected failure, counting it.
    fn take_failure(&self) -> Option<Failure> {
        let mut inner = self.lock();
        if inner.failures_left == 0 {
            return None;
        }
        inner.failures_left -= 1;
        inner.counters.token_failures += 1;
        let failure = inner.failure.clone();
        if inner.failures_left == 0 {
            inner.failure = None;
        }
        failure
    }
}

impl Inner {
    fn now(&self) -> Instant {
        let real = Instant::now();
        real.checked_add(self.clock_offset).unwrap_or(real)
    }

    /// The same clock as [`Self::now`], as a wall-clock time (for epoch dates such as expiries).
    fn wall_now(&self) -> SystemTime {
        let real = SystemTime::now();
        real.checked_add(self.clock_offset).unwrap_or(real)
    }

    fn new_code(&mut self, client_id: &str, redirect_uri: &str, scope: &str) -> String {
        let code = random_hex();
        let expires_at = self.now().checked_add(CODE_TTL);
        self.codes.insert(
            code.clone(),
            CodeEntry {
                client_id: client_id.to_owned(),
                redirect_uri: redirect_uri.to_owned(),
                scope: scope.to_owned(),
                expires_at,
                used: false,
            },
        );
        code
    }

    fn new_access_token(&mut self, grant: usize, now: Instant) -> (String, u64) {
        let token = format!("fake-at-{}", random_hex());
        let ttl = self.access_ttl;
        self.access_tokens.insert(
            token.clone(),
            AccessEntry {
                grant,
                expires_at: now.checked_add(ttl),
            },
        );
        (token, ttl.as_secs())
    }

    fn new_refresh_token(&mut self, grant: usize, now: Instant) -> String {
        let token = format!("fake-rt-{}", random_hex());
        self.refresh_tokens.insert(
            token.clone(),
            RefreshEntry {
                grant,
                last_used: now,
                rotated_at: None,
            },
        );
        token
    }

    fn grant_is_live(&self, grant: usize) -> bool {
        self.grants.get(grant).is_some_and(|g| !g.revoked)
    }

    fn access_token_is_valid(&self, token: &str) -> bool {
        self.token_scope(token).is_some()
    }

    /// The scope granted to a live access token, `None` for an unknown, expired or revoked one.
    fn token_scope(&self, token: &str) -> Option<&str> {
        let now = self.now();
        let entry = self.access_tokens.get(token)?;
        if !self.grant_is_live(entry.grant) || entry.expires_at.is_some_and(|at| now >= at) {
            return None;
        }
        self.grants
            .get(entry.grant)
            .map(|grant| grant.scope.as_str())
    }

    fn exchange(&mut self, request: &TokenRequest, user: &FakeUser) -> Response {
        let now = self.now();
        let valid = request.code.as_deref().and_then(|code| {
            let entry = self.codes.get_mut(code)?;
            let usable = !entry.used
                && entry.expires_at.is_some_and(|at| now < at)
                && request.redirect_uri.as_deref() == Some(entry.redirect_uri.as_str())
                && request.client_id.as_deref() == Some(entry.client_id.as_str());
            if !usable {
                return None;
            }
            entry.used = true;
            Some(entry.scope.clone())
        });
        let Some(scope) = valid else {
            return json_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "authorization_code is invalid",
            );
        };
        let grant = self.grants.len();
        let account_id = self.personal_data.consent(user);
        self.grants.push(Grant {
            scope: scope.clone(),
            account_id,
            consented_at: now,
            revoked: false,
        });
        let (access_token, expires_in) = self.new_access_token(grant, now);
        let refresh_token =
            has_scope(&scope, "offline_access").then(|| self.new_refresh_token(grant, now));
        token_response(TokenResponse {
            access_token,
            expires_in,
            scope,
            refresh_token,
            token_type: "Bearer",
        })
    }

    fn refresh(&mut self, request: &TokenRequest) -> Response {
        let now = self.now();
        let leeway = self.reuse_leeway;
        let Some(presented) = request.refresh_token.as_deref() else {
            return json_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "refresh_token is missing",
            );
        };
        let Some(entry) = self.refresh_tokens.get(presented) else {
            return invalid_refresh_token();
        };
        let grant_id = entry.grant;
        let (rotated_at, last_used) = (entry.rotated_at, entry.last_used);
        let Some(grant) = self.grants.get_mut(grant_id) else {
            return invalid_refresh_token();
        };
        if grant.revoked
            || now.saturating_duration_since(last_used) >= REFRESH_IDLE_EXPIRY
            || now.saturating_duration_since(grant.consented_at) >= GRANT_ABSOLUTE_EXPIRY
        {
            return invalid_refresh_token();
        }
        if let Some(rotated_at) = rotated_at
            && now.saturating_duration_since(rotated_at) >= leeway
        {
            // Reuse outside the leeway: a breach; the whole grant dies.
            grant.revoked = true;
            return invalid_refresh_token();
        }
        let scope = grant.scope.clone();
        let omit = self.omit_refresh_token > 0;
        if omit {
            self.omit_refresh_token -= 1;
        }
        if let Some(entry) = self.refresh_tokens.get_mut(presented) {
            if omit {
                // No new token handed out: the presented one stays the current one.
                entry.last_used = now;
            } else if entry.rotated_at.is_none() {
                entry.rotated_at = Some(now);
            }
        }
        let (access_token, expires_in) = self.new_access_token(grant_id, now);
        let refresh_token = (!omit).then(|| self.new_refresh_token(grant_id, now));
        token_response(TokenResponse {
            access_token,
            expires_in,
            scope,
            refresh_token,
            token_type: "Bearer",
        })
    }
}

async fn authorize(
    State(fake): State<FakeAtlassian>,
    query: Result<Query<AuthorizeQuery>, QueryRejection>,
) -> Response {
    fake.lock().counters.authorize += 1;
    let Query(query) = match query {
        Ok(query) => query,
        Err(rejection) => return bad_page(&format!("the query string is invalid: {rejection}")),
    };
    let config = fake.config();
    let checks: [(bool, &str); 8] = [
        (query.client_id.is_some(), "client_id is missing"),
        (
            query.client_id.as_deref() == Some(config.client_id.as_str()),
            "client_id is unknown: no app is registered with this client id",
        ),
        (query.redirect_uri.is_some(), "redirect_uri is missing"),
        (
            query.redirect_uri.as_deref() == Some(config.redirect_uri.as_str()),
            "redirect_uri does not match the callback URL registered for this app",
        ),
        (
            query.response_type.as_deref() == Some("code"),
            "response_type must be code",
        ),
        (query.audience.is_some(), "audience is missing"),
        (
            query.audience.as_deref() == Some(AUDIENCE),
            "audience must be api.atlassian.com",
        ),
        (
            query.state.as_deref().is_some_and(|s| !s.is_empty()),
            "state is missing",
        ),
    ];
    if let Some((_, problem)) = checks.iter().find(|(ok, _)| !ok) {
        return bad_page(problem);
    }
    let scope = query.scope.unwrap_or_default();
    if scope.split_whitespace().next().is_none() {
        return bad_page("scope is missing");
    }
    let state = query.state.unwrap_or_default();
    Html(consent_page(config, &scope, &state)).into_response()
}

async fn decision(
    State(fake): State<FakeAtlassian>,
    form: Result<Form<DecisionForm>, FormRejection>,
) -> Response {
    let Form(form) = match form {
        Ok(form) => form,
        Err(rejection) => return bad_page(&format!("the form is invalid: {rejection}")),
    };
    let config = fake.config();
    if form.client_id.as_deref() != Some(config.client_id.as_str()) {
        return bad_page("client_id is unknown: no app is registered with this client id");
    }
    if form.redirect_uri.as_deref() != Some(config.redirect_uri.as_str()) {
        return bad_page("redirect_uri does not match the callback URL registered for this app");
    }
    let Some(state) = form.state.filter(|s| !s.is_empty()) else {
        return bad_page("state is missing");
    };
    let Ok(mut location) = Url::parse(&config.redirect_uri) else {
        return bad_page("the registered redirect_uri is not a valid URL");
    };
    match form.decision.as_deref() {
        Some("accept") => {
            let scope = form.scope.unwrap_or_default();
            if scope.split_whitespace().next().is_none() {
                return bad_page("scope is missing");
            }
            let code = fake
                .lock()
                .new_code(&config.client_id, &config.redirect_uri, &scope);
            location
                .query_pairs_mut()
                .append_pair("code", &code)
                .append_pair("state", &state);
        }
        Some("decline") => {
            location
                .query_pairs_mut()
                .append_pair("error", "access_denied")
                .append_pair("state", &state);
        }
        _ => return bad_page("decision must be accept or decline"),
    }
    match HeaderValue::from_str(location.as_str()) {
        Ok(value) => (StatusCode::FOUND, [(header::LOCATION, value)]).into_response(),
        Err(_) => bad_page("the redirect URL cannot be sent as a header"),
    }
}

async fn token(State(fake): State<FakeAtlassian>, headers: HeaderMap, body: Bytes) -> Response {
    match fake.take_failure() {
        Some(Failure::Delay(delay)) => tokio::time::sleep(delay).await,
        Some(Failure::Status(status)) => return injected_status(status),
        Some(Failure::Malformed) => {
            return (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                "<html><body>upstream hiccup: this is not JSON</body></html>",
            )
                .into_response();
        }
        None => {}
    }
    if !is_json(&headers) {
        return json_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Content-Type must be application/json",
        );
    }
    let request: TokenRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("the request body is not a valid JSON object: {error}"),
            );
        }
    };
    let config = fake.config();
    let mut inner = fake.lock();
    match request.grant_type.as_deref() {
        Some("authorization_code") => inner.counters.token_exchange += 1,
        Some("refresh_token") => inner.counters.token_refresh += 1,
        _ => {}
    }
    if request.client_id.as_deref() != Some(config.client_id.as_str())
        || request.client_secret.as_deref() != Some(config.client_secret.as_str())
    {
        return json_error(StatusCode::UNAUTHORIZED, "access_denied", "Unauthorized");
    }
    match request.grant_type.as_deref() {
        Some("authorization_code") => inner.exchange(&request, &config.user),
        Some("refresh_token") => inner.refresh(&request),
        None => json_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "grant_type is missing",
        ),
        Some(_) => json_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type must be authorization_code or refresh_token",
        ),
    }
}

async fn accessible_resources(State(fake): State<FakeAtlassian>, headers: HeaderMap) -> Response {
    let authorised = {
        let mut inner = fake.lock();
        inner.counters.accessible_resources += 1;
        bearer(&headers).is_some_and(|token| inner.access_token_is_valid(token))
    };
    if !authorised {
        return unauthorized();
    }
    axum::Json(&fake.config().sites).into_response()
}

async fn me(State(fake): State<FakeAtlassian>, headers: HeaderMap) -> Response {
    let user = {
        let mut inner = fake.lock();
        inner.counters.me += 1;
        bearer(&headers)
            .filter(|token| inner.access_token_is_valid(token))
            .and_then(|token| inner.access_tokens.get(token))
            .and_then(|entry| inner.grants.get(entry.grant))
            .map(|grant| {
                inner
                    .personal_data
                    .profile(&grant.account_id, &fake.config().user)
            })
    };
    let Some(user) = user else {
        return unauthorized();
    };
    let user = &user;
    let nickname = user.name.split_whitespace().next().unwrap_or(&user.name);
    axum::Json(json!({
        "account_type": "atlassian",
        "account_id": user.account_id,
        "email": user.email,
        "name": user.name,
        "picture": format!("https://avatar-management--avatars.us-west-2.prod.public.atl-paas.net/{}/128", user.account_id),
        "account_status": "active",
        "nickname": nickname,
        "zoneinfo": "Europe/London",
        "locale": "en-GB",
        "extended_profile": {
            "job_title": "Engineer",
            "organization": "Acme",
            "department": "R&D",
            "location": "London",
        },
    }))
    .into_response()
}

/// 64 hex characters from 32 random bytes.
fn random_hex() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn has_scope(scopes: &str, wanted: &str) -> bool {
    scopes.split_whitespace().any(|s| s == wanted)
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn token_response(body: TokenResponse) -> Response {
    (
        StatusCode::OK,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(body),
    )
        .into_response()
}

fn json_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        axum::Json(json!({ "error": error, "error_description": description })),
    )
        .into_response()
}

fn invalid_refresh_token() -> Response {
    json_error(
        StatusCode::FORBIDDEN,
        "invalid_grant",
        "Unknown or invalid refresh token.",
    )
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({ "code": 401, "message": "Unauthorized" })),
    )
        .into_response()
}

fn injected_status(status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let error = match status.as_u16() {
        503 => "temporarily_unavailable",
        429 => "rate_limited",
        _ => "server_error",
    };
    let description = format!("injected failure: HTTP {}", status.as_u16());
    let mut response = json_error(status, error, &description);
    if status == StatusCode::TOO_MANY_REQUESTS {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

fn bad_page(problem: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("Something went wrong: {problem}\n"),
    )
        .into_response()
}

fn consent_page(config: &FakeConfig, scope: &str, state: &str) -> String {
    let scopes: String = scope
        .split_whitespace()
        .map(|name| {
            let description = grantry_atlassian::SCOPES
                .iter()
                .find(|info| info.name == name)
                .map(|info| format!(": {}", escape(info.description)))
                .unwrap_or_default();
            format!("<li><code>{}</code>{description}</li>\n", escape(name))
        })
        .collect();
    render(CONSENT_TEMPLATE, |key| match key {
        "client_id" => Some(escape(&config.client_id)),
        "redirect_uri" => Some(escape(&config.redirect_uri)),
        "user_name" => Some(escape(&config.user.name)),
        "user_email" => Some(escape(&config.user.email)),
        "scope" => Some(escape(scope)),
        "state" => Some(escape(state)),
        "scopes" => Some(scopes.clone()),
        _ => None,
    })
}

/// Fills `{{key}}` placeholders in one pass, so substituted text is never expanded again.
fn render(template: &str, value: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let (before, after) = rest.split_at(start);
        out.push_str(before);
        let after = &after[2..];
        match after.find("}}") {
            Some(end) => {
                let key = &after[..end];
                match value(key) {
                    Some(text) => out.push_str(&text),
                    None => {
                        out.push_str("{{");
                        out.push_str(key);
                        out.push_str("}}");
                    }
                }
                rest = &after[end + 2..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Notes the `traceparent` a request carries, so tests can see the trace context arrive.
async fn note_trace_parent(
    State(fake): State<FakeAtlassian>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if let Some(value) = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
    {
        fake.note_trace_parent(request.uri().path(), value);
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_fills_placeholders_once() {
        let out = render("a {{x}} b {{y}} {{unknown}} {{open", |key| match key {
            "x" => Some("{{y}}".to_owned()),
            "y" => Some("Y".to_owned()),
            _ => None,
        });
        assert_eq!(out, "a {{y}} b Y {{unknown}} {{open");
    }

    #[test]
    fn escape_neutralises_markup() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn bearer_parsing() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  abc "),
        );
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&headers), None);
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer"));
        assert_eq!(bearer(&headers), None);
    }

    #[test]
    fn json_content_type_detection() {
        let mut headers = HeaderMap::new();
        assert!(!is_json(&headers));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Application/JSON; charset=utf-8"),
        );
        assert!(is_json(&headers));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        assert!(!is_json(&headers));
    }

    #[test]
    fn default_config_has_duplicate_site_ids() {
        let config = FakeConfig::default();
        assert_eq!(config.sites.len(), 3);
        assert_eq!(config.sites[0].id, config.sites[1].id);
        assert_ne!(config.sites[0].id, config.sites[2].id);
        assert!(!format!("{config:?}").contains("fake-client-secret"));
    }
}
