//! A fake Atlassian Data Center (Jira DC or Confluence DC, one product per instance) with the
//! OAuth 2.0 provider of incoming application links (Jira 8.22+, Confluence 7.17+), as strict
//! as the real one: PKCE (S256) required, a form-encoded token endpoint with the client in the
//! body, codes valid one minute and single use, `redirect_uri` required on refresh, refresh
//! tokens rotating without any reuse leeway (reuse kills the grant), the `READ` < `WRITE` <
//! `ADMIN` < `SYSTEM_ADMIN` scopes, and no revocation endpoint.
//!
//! Everything is served under the configured context path (e.g. `/jira`): Jira REST v2 with
//! wiki markup (CRLF line ends) or Confluence REST v1 with storage format, at most two items a
//! page, plus the anonymous application links manifest. Tests can revoke everything, expire
//! access tokens, move the clock, rename the user, fail or rate limit content calls, fail the
//! token endpoint and mint codes without a browser.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use grantry_atlassian_fake::{DcConfig, FakeDataCenter};
//! let running = FakeDataCenter::start(DcConfig::default()).await?;
//! let code = running.fake.issue_code("READ", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
//! # let _ = code;
//! # Ok(())
//! # }
//! ```

mod confluence;
mod data;
mod jira;
mod oauth;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{OriginalUri, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Most items the fake puts in one page of any list.
const DC_PAGE_CAP: usize = 2;
/// Requests kept for [`FakeDataCenter::content_requests`].
const DC_KEPT_REQUESTS: usize = 200;

/// Which Data Center product the fake plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DcProduct {
    /// Jira Data Center (REST v2).
    Jira,
    /// Confluence Data Center (REST v1).
    Confluence,
}

/// What the fake Data Center knows about itself and the registered incoming application link.
#[derive(Clone)]
pub struct DcConfig {
    /// The product served.
    pub product: DcProduct,
    /// `""` or a path such as `/jira`, without a trailing slash; every route lives under it.
    pub context_path: String,
    /// The application link's client id.
    pub client_id: String,
    /// The application link's client secret.
    pub client_secret: String,
    /// The redirect URL registered for the link; `redirect_uri` must equal it exactly.
    pub redirect_uri: String,
    /// The instance's title, e.g. `Acme Jira`.
    pub title: String,
    /// `expires_in` (and the real lifetime) of issued access tokens.
    pub access_ttl: Duration,
}

impl fmt::Debug for DcConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DcConfig")
            .field("product", &self.product)
            .field("context_path", &self.context_path)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("redirect_uri", &self.redirect_uri)
            .field("title", &self.title)
            .field("access_ttl", &self.access_ttl)
            .finish()
    }
}

impl Default for DcConfig {
    fn default() -> Self {
        Self {
            product: DcProduct::Jira,
            context_path: "/jira".to_owned(),
            client_id: "dc-fake-client-id".to_owned(),
            client_secret: "dc-fake-client-secret".to_owned(),
            redirect_uri: "http://localhost:3000/settings/connections".to_owned(),
            title: "Acme Jira".to_owned(),
            access_ttl: Duration::from_secs(2 * 60 * 60),
        }
    }
}

impl DcConfig {
    /// The defaults for Confluence: context path `/confluence`, title `Acme Confluence`.
    pub fn confluence() -> Self {
        Self {
            product: DcProduct::Confluence,
            context_path: "/confluence".to_owned(),
            title: "Acme Confluence".to_owned(),
            ..Self::default()
        }
    }
}

/// A Data Center account: the stable `key` is its id, the `name` (username) can change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DcUser {
    /// The user key (Jira `JIRAUSER…`, Confluence `userKey`), stable across renames.
    pub key: String,
    /// The username.
    pub name: String,
    /// The display name.
    pub display_name: String,
    /// The e-mail address.
    pub email: String,
}

impl DcUser {
    /// The account that consents by default on a fake of `product` (alice).
    pub fn default_for(product: DcProduct) -> Self {
        let key = match product {
            DcProduct::Jira => "JIRAUSER10000",
            DcProduct::Confluence => "8a7f808a8e0f0c2a018e0f0c7a2a0000",
        };
        Self {
            key: key.to_owned(),
            name: "alice".to_owned(),
            display_name: "Alice Example".to_owned(),
            email: "alice@example.com".to_owned(),
        }
    }
}

/// A snapshot of how often each thing happened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DcCounters {
    /// Every `GET …/rest/oauth2/latest/authorize`, valid or not.
    pub authorize: u64,
    /// Form token calls with `grant_type=authorization_code`.
    pub token_exchange: u64,
    /// Form token calls with `grant_type=refresh_token`.
    pub token_refresh: u64,
    /// Refresh calls refused because they lacked `redirect_uri`.
    pub refresh_without_redirect_uri: u64,
    /// Refresh calls that presented a rotated-out refresh token (the grant was killed).
    pub refresh_reuse: u64,
    /// Token calls refused because their body was JSON.
    pub json_token_requests: u64,
    /// Code exchanges refused because the `code_verifier` was missing or did not match.
    pub pkce_failures: u64,
    /// Every content call (Jira or Confluence REST), answered or refused.
    pub content: u64,
    /// Content calls refused because the token's scope was too low.
    pub content_scope_refused: u64,
    /// Content calls answered 429.
    pub rate_limited: u64,
}

/// A content request as the fake received it (header names only, never their values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DcRecordedRequest {
    /// The HTTP method.
    pub method: String,
    /// The full path, context path included, still percent-encoded.
    pub path: String,
    /// The query string, if any.
    pub query: Option<String>,
    /// The names of the request headers, lower case.
    pub header_names: Vec<String>,
    /// Whether the bearer token was a live access token of the fake.
    pub authorised: bool,
}

/// The fake Data Center: cheap to clone, every clone shares the same state.
#[derive(Clone)]
pub struct FakeDataCenter {
    shared: Arc<DcShared>,
}

impl fmt::Debug for FakeDataCenter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeDataCenter")
            .field("product", &self.config().product)
            .field("counters", &self.counters())
            .finish_non_exhaustive()
    }
}

/// A fake Data Center serving on a local port; dropping it stops the server.
#[derive(Debug)]
pub struct RunningDc {
    /// The fake behind the server, to steer it and read its counters.
    pub fake: FakeDataCenter,
    /// `http://127.0.0.1:PORT{context_path}`, without a trailing slash.
    pub base_url: String,
    /// The bound address.
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl RunningDc {
    /// `base_url` followed by `path` (which should start with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// Stops the server and waits until it has stopped accepting connections.
    pub async fn shutdown(self) {
        let RunningDc { shutdown, task, .. } = self;
        if let Some(tx) = shutdown {
            let _ = tx.send(());
        }
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

struct DcShared {
    config: DcConfig,
    /// A stable, uuid-like id of the instance (the manifest's `id`).
    server_id: String,
    inner: Mutex<DcInner>,
}

/// The mutable state of the fake.
struct DcInner {
    /// The bound base URL, once the server runs (empty for an unstarted fake).
    base_url: String,
    clock_offset: Duration,
    /// Every account the fake knows, by key.
    users: HashMap<String, DcUser>,
    /// The key of the account that consents.
    current_user: String,
    codes: HashMap<String, oauth::CodeEntry>,
    grants: Vec<oauth::Grant>,
    access_tokens: HashMap<String, oauth::AccessEntry>,
    refresh_tokens: HashMap<String, oauth::RefreshEntry>,
    token_failure: Option<u16>,
    content_failure: Option<u16>,
    rate_limit_left: usize,
    requests: Vec<DcRecordedRequest>,
    counters: DcCounters,
}

impl DcInner {
    fn now(&self) -> Instant {
        let real = Instant::now();
        real.checked_add(self.clock_offset).unwrap_or(real)
    }
}

impl FakeDataCenter {
    /// A fake with this configuration and no grants yet.
    pub fn new(config: DcConfig) -> Self {
        let user = DcUser::default_for(config.product);
        let server_id = server_id(&config);
        let inner = DcInner {
            base_url: String::new(),
            clock_offset: Duration::ZERO,
            current_user: user.key.clone(),
            users: HashMap::from([(user.key.clone(), user)]),
            codes: HashMap::new(),
            grants: Vec::new(),
            access_tokens: HashMap::new(),
            refresh_tokens: HashMap::new(),
            token_failure: None,
            content_failure: None,
            rate_limit_left: 0,
            requests: Vec::new(),
            counters: DcCounters::default(),
        };
        Self {
            shared: Arc::new(DcShared {
                config,
                server_id,
                inner: Mutex::new(inner),
            }),
        }
    }

    /// Binds `127.0.0.1:0` and serves a new fake on the current tokio runtime; an invalid
    /// context path (not empty and not `/…` without a trailing slash) is an `InvalidInput` error.
    pub async fn start(config: DcConfig) -> std::io::Result<RunningDc> {
        let context = config.context_path.as_str();
        let valid_context = context.is_empty()
            || (context.starts_with('/')
                && !context.ends_with('/')
                && !context.contains(['?', '#', '{', '}', '*']));
        if !valid_context {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "context_path must be empty or start with / and not end with /",
            ));
        }
        let fake = Self::new(config);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let base_url = format!("http://{addr}{}", fake.config().context_path);
        fake.lock().base_url = base_url.clone();
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
                tracing::warn!(%error, "the fake Data Center server stopped with an error");
            }
        });
        Ok(RunningDc {
            fake,
            base_url,
            addr,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// The axum router of the fake, every route under the context path.
    pub fn router(&self) -> Router {
        let content = match self.config().product {
            DcProduct::Jira => jira::routes(),
            DcProduct::Confluence => confluence::routes(),
        }
        .route_layer(middleware::from_fn_with_state(self.clone(), guard));
        let routes = Router::new()
            .merge(oauth::routes())
            .route("/rest/applinks/1.0/manifest", get(manifest))
            .merge(content);
        let context = self.config().context_path.as_str();
        let app = if context.is_empty() {
            routes
        } else {
            Router::new().nest(context, routes)
        };
        app.with_state(self.clone())
    }

    /// The configuration the fake was built with.
    pub fn config(&self) -> &DcConfig {
        &self.shared.config
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> DcCounters {
        self.lock().counters
    }

    /// Kills every access and refresh token issued so far (as if the user revoked the link).
    pub fn revoke_all(&self) {
        for grant in &mut self.lock().grants {
            grant.revoked = true;
        }
    }

    /// Makes `user` the account that consents from now on (grants already made keep theirs).
    pub fn set_user(&self, user: DcUser) {
        let mut inner = self.lock();
        inner.current_user = user.key.clone();
        inner.users.insert(user.key.clone(), user);
    }

    /// Renames the consenting account; its key stays, so grants keep pointing at it.
    pub fn rename_user(&self, new_name: &str, new_display: &str) {
        let mut inner = self.lock();
        let key = inner.current_user.clone();
        if let Some(user) = inner.users.get_mut(&key) {
            new_name.clone_into(&mut user.name);
            new_display.clone_into(&mut user.display_name);
        }
    }

    /// The account that consents now.
    pub fn user(&self) -> DcUser {
        let inner = self.lock();
        inner
            .users
            .get(&inner.current_user)
            .cloned()
            .unwrap_or_else(|| DcUser::default_for(self.config().product))
    }

    /// Every content call answers `status` (after the token and scope checks) until
    /// [`Self::clear_content_failures`].
    pub fn fail_content(&self, status: u16) {
        self.lock().content_failure = Some(status);
    }

    /// Ends the failure injected with [`Self::fail_content`].
    pub fn clear_content_failures(&self) {
        self.lock().content_failure = None;
    }

    /// The next `n` authorised content calls answer 429 with `Retry-After: 1`.
    pub fn rate_limit_next_content_calls(&self, n: usize) {
        self.lock().rate_limit_left = n;
    }

    /// Every token call answers `status` with a JSON error until [`Self::clear_token_failures`].
    pub fn fail_token(&self, status: u16) {
        self.lock().token_failure = Some(status);
    }

    /// Ends the failure injected with [`Self::fail_token`].
    pub fn clear_token_failures(&self) {
        self.lock().token_failure = None;
    }

    /// Every access token issued so far expires now (refresh tokens stay valid).
    pub fn expire_access_tokens(&self) {
        let mut inner = self.lock();
        let now = inner.now();
        for entry in inner.access_tokens.values_mut() {
            entry.expires_at = entry.expires_at.min(now);
        }
    }

    /// Moves the fake's clock forward (expires codes and access tokens).
    pub fn advance_clock(&self, d: Duration) {
        let mut inner = self.lock();
        inner.clock_offset = inner.clock_offset.saturating_add(d);
    }

    /// The latest content requests (up to 200), oldest first.
    pub fn content_requests(&self) -> Vec<DcRecordedRequest> {
        self.lock().requests.clone()
    }

    /// Forgets the recorded content requests.
    pub fn clear_content_requests(&self) {
        self.lock().requests.clear();
    }

    /// Mints a valid authorization code for `scope` and an S256 `code_challenge`, bound to the
    /// configured client and redirect URI (no check of the scope or challenge).
    pub fn issue_code(&self, scope: &str, code_challenge: &str) -> String {
        let config = &self.shared.config;
        let mut inner = self.lock();
        oauth::new_code(
            &mut inner,
            &config.client_id,
            &config.redirect_uri,
            scope,
            code_challenge,
        )
    }

    fn lock(&self) -> MutexGuard<'_, DcInner> {
        self.shared
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The base URL the links of answers use.
    fn base_url(&self) -> String {
        self.lock().base_url.clone()
    }

    /// The user behind a live access token.
    fn token_user(&self, headers: &HeaderMap) -> Option<DcUser> {
        let inner = self.lock();
        let token = crate::bearer(headers)?;
        let grant = oauth::live_grant(&inner, token)?;
        inner.users.get(&grant.user_key).cloned()
    }
}

/// A uuid-like id derived from the product and title, stable across runs.
fn server_id(config: &DcConfig) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{:?}/{}", config.product, config.title).as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// What a content request asks of the token's scope.
fn required_level(method: &Method, path: &str) -> u8 {
    let search = path.ends_with("/rest/api/2/search") || path.ends_with("/rest/api/content/search");
    if *method == Method::GET || *method == Method::HEAD || (*method == Method::POST && search) {
        oauth::READ
    } else {
        oauth::WRITE
    }
}

/// Counts, records, checks the bearer token and its scope, rate limits and injects failures.
async fn guard(State(fake): State<FakeDataCenter>, request: Request, next: Next) -> Response {
    let product = fake.config().product;
    let full_path = request
        .extensions()
        .get::<OriginalUri>()
        .map_or_else(|| request.uri().path().to_owned(), |u| u.path().to_owned());
    let refusal = {
        let mut inner = fake.lock();
        inner.counters.content += 1;
        let level = crate::bearer(request.headers())
            .and_then(|token| oauth::live_grant(&inner, token))
            .map(|grant| oauth::scope_level(&grant.scope));
        inner.requests.push(DcRecordedRequest {
            method: request.method().to_string(),
            path: full_path.clone(),
            query: request.uri().query().map(str::to_owned),
            header_names: request
                .headers()
                .keys()
                .map(|k| k.as_str().to_owned())
                .collect(),
            authorised: level.is_some(),
        });
        if inner.requests.len() > DC_KEPT_REQUESTS {
            inner.requests.remove(0);
        }
        match level {
            None => Some(dc_message(
                StatusCode::UNAUTHORIZED,
                "Client must be authenticated to access this resource.",
            )),
            Some(level) if level < required_level(request.method(), &full_path) => {
                inner.counters.content_scope_refused += 1;
                Some(dc_message(
                    StatusCode::FORBIDDEN,
                    "The access token does not have the required scope",
                ))
            }
            Some(_) if inner.rate_limit_left > 0 => {
                inner.rate_limit_left -= 1;
                inner.counters.rate_limited += 1;
                let mut response = product_error(
                    product,
                    StatusCode::TOO_MANY_REQUESTS,
                    "Rate limit exceeded.",
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                Some(response)
            }
            Some(_) => inner.content_failure.map(|status| {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
                product_error(product, status, "injected failure")
            }),
        }
    };
    match refusal {
        Some(refusal) => refusal,
        None => next.run(request).await,
    }
}

/// `{"message": …}`, the shape of DC's authentication and scope refusals.
fn dc_message(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "message": message }))).into_response()
}

/// An error in the product's own shape: Jira's `errorMessages`, Confluence's `statusCode`.
fn product_error(product: DcProduct, status: StatusCode, message: &str) -> Response {
    match product {
        DcProduct::Jira => jira::errors(status, message),
        DcProduct::Confluence => confluence::error(status, message),
    }
}

/// `GET /rest/applinks/1.0/manifest`: anonymous, JSON when asked for, else XML.
async fn manifest(State(fake): State<FakeDataCenter>, headers: HeaderMap) -> Response {
    let config = fake.config();
    let type_id = match config.product {
        DcProduct::Jira => "jira",
        DcProduct::Confluence => "confluence",
    };
    let id = &fake.shared.server_id;
    let base_url = fake.base_url();
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/json"));
    if wants_json {
        return axum::Json(json!({
            "id": id,
            "name": config.title,
            "typeId": type_id,
            "version": "9.12.0",
            "url": base_url,
        }))
        .into_response();
    }
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\
         <manifest><id>{}</id><name>{}</name><typeId>{type_id}</typeId>\
         <version>9.12.0</version><url>{}</url></manifest>",
        crate::escape(id),
        crate::escape(&config.title),
        crate::escape(&base_url),
    );
    (
        [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
        xml,
    )
        .into_response()
}
