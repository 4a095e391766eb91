//! Jira's dynamic webhooks for OAuth 2.0 apps behind the gateway
//! (`/ex/jira/{cloudid}/rest/api/3/webhook` and `…/webhook/refresh`), and their delivery.
//!
//! What the fake holds callers to, as Jira does:
//! - Every operation needs `read:jira-work` and `manage:jira-webhook` in the grant's scope (see
//!   [`FakeAtlassian::webhook_caller`] for the answer without them). The content guard has
//!   already refused unknown or expired tokens (401) and sites the configuration lacks (404).
//! - Registration: `url` is https, or http on a loopback host; each webhook has a non-empty
//!   `events` list drawn from Jira's enum and a non-empty `jqlFilter` using only the clauses Jira
//!   evaluates for webhooks (`issueKey`, `project`, `issuetype`, `status`, `assignee`,
//!   `reporter`, `issue.property[…]`, `cf[…]` with `=`, `!=`, `IN`, `NOT IN`). An entry that
//!   fails gets `errors` and the others are still created, in request order. A body that is not
//!   JSON, has unknown fields or lacks `url` or `webhooks` answers 400 `{"errorMessages":[…]}`.
//! - Ownership: webhooks belong to (client app, account, site). Listing, refreshing and
//!   deleting see only the caller's; other ids are ignored.
//! - Expiry: a webhook lives [`WEBHOOK_LIFETIME`] after its registration or last refresh, on the
//!   fake's clock ([`FakeAtlassian::advance_clock`] moves it). An expired webhook is gone, the way
//!   Jira drops lapsed dynamic webhooks: it is never delivered, no longer listed, refreshing or
//!   deleting its id is ignored, and [`FakeAtlassian::webhooks`] no longer shows it. A client
//!   that let one lapse has to register it again.
//! - The list hands out at most [`PAGE_CAP`] webhooks a page, like the fake's other lists.
//!
//! Not modelled: evaluating the JQL filter at delivery time (every live webhook subscribed to
//! the event gets it), limits on the number of webhooks or URLs per app, failed-webhook
//! listings and automatic retries.

// The scopes every webhook operation needs, and the events a dynamic webhook may subscribe
// to (Jira's `WebhookDetails.events` enum): Jira's API data, shared with the client.
use grantry_atlassian::{JIRA_WEBHOOK_EVENTS as EVENTS, WEBHOOK_SCOPES};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use url::{Host, Url};

use super::content::{
    PAGE_CAP, adf_words, atlassian_error, gateway_self, issue_json, jira_errors, person,
};
use super::data;
use super::{FakeAtlassian, FakeConfig, bearer, has_scope, random_hex};

/// How long a dynamic webhook lives after its registration or its last refresh (30 days).
pub const WEBHOOK_LIFETIME: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// How long the JWT of a delivery is valid, in real time.
const JWT_LIFETIME: Duration = Duration::from_secs(5 * 60);
/// How long the fake waits for a receiver to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the fake waits for a receiver's answer.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(20);
/// The first webhook id the fake hands out.
const FIRST_WEBHOOK_ID: i64 = 10000;

/// Who a dynamic webhook belongs to: Jira keys them by app, user and site.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WebhookOwner {
    /// The OAuth 2.0 app's client id.
    pub client_id: String,
    /// The account id of the user whose token registered the webhook.
    pub account_id: String,
    /// The site (cloud id) the webhook watches.
    pub cloud_id: String,
}

/// A dynamic webhook registered on the fake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeWebhook {
    /// The id Jira handed out (unique and increasing across the fake).
    pub id: i64,
    /// The app, user and site it belongs to.
    pub owner: WebhookOwner,
    /// Where deliveries are POSTed.
    pub url: String,
    /// The events it subscribes to.
    pub events: Vec<String>,
    /// The JQL filter it was registered with.
    pub jql_filter: String,
    /// `fieldIdsFilter`, if it was given.
    pub field_ids_filter: Option<Vec<String>>,
    /// `issuePropertyKeysFilter`, if it was given.
    pub issue_property_keys_filter: Option<Vec<String>>,
    /// When it expires, on the fake's clock (compare with [`FakeAtlassian::now`]).
    pub expires_at: SystemTime,
}

/// How [`FakeAtlassian::deliver_jira_event`] authenticates its POSTs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signing {
    /// `Authorization: Bearer <JWT>`, HS256 with the app's client secret, as Jira signs them.
    Valid,
    /// The same JWT signed with a secret that is not the client secret.
    Forged,
    /// No `Authorization` header at all.
    None,
}

/// One webhook POST the fake sent and what came of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The webhook delivered.
    pub webhook_id: i64,
    /// The URL it was POSTed to.
    pub url: String,
    /// The `X-Atlassian-Webhook-Identifier` sent (a replay sends the same one again).
    pub identifier: String,
    /// The `X-Atlassian-Webhook-Retry` sent: 0 first, one more for each replay.
    pub retry: u32,
    /// The receiver's HTTP status, or why no answer came back.
    pub outcome: Result<u16, String>,
}

impl Delivery {
    /// The receiver's HTTP status, `None` after a transport error.
    pub fn status(&self) -> Option<u16> {
        self.outcome.as_ref().ok().copied()
    }
}

/// The fake's webhook state.
#[derive(Default)]
pub(crate) struct WebhookState {
    /// The id handed out last (0 before the first).
    last_id: i64,
    /// Every webhook still alive as of the last sweep, in id order.
    webhooks: Vec<FakeWebhook>,
    /// The POSTs of the latest [`FakeAtlassian::deliver_jira_event`], for replays.
    last_batch: Vec<Outgoing>,
}

impl WebhookState {
    /// Forgets every webhook expired at `now`.
    fn sweep(&mut self, now: SystemTime) {
        self.webhooks.retain(|w| w.expires_at > now);
    }

    /// Stores `webhook` under a new id, which it returns.
    fn insert(&mut self, mut webhook: FakeWebhook) -> i64 {
        self.last_id = self.last_id.max(FIRST_WEBHOOK_ID - 1).saturating_add(1);
        webhook.id = self.last_id;
        self.webhooks.push(webhook);
        self.last_id
    }
}

/// A delivery ready to be sent (or sent again).
#[derive(Clone)]
struct Outgoing {
    webhook_id: i64,
    url: String,
    account_id: String,
    identifier: String,
    retry: u32,
    signing: Signing,
    body: Vec<u8>,
}

/// The claims of a delivery's JWT.
#[derive(Serialize)]
struct WebhookClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    iat: u64,
    exp: u64,
}

impl FakeAtlassian {
    /// The live (unexpired) webhooks registered on `cloud_id`, every owner's, in id order.
    pub fn webhooks(&self, cloud_id: &str) -> Vec<FakeWebhook> {
        let mut inner = self.lock();
        let now = inner.wall_now();
        inner.webhooks.sweep(now);
        inner
            .webhooks
            .webhooks
            .iter()
            .filter(|w| w.owner.cloud_id == cloud_id)
            .cloned()
            .collect()
    }

    /// Registers a webhook for `owner` without HTTP or validation, as another app or user would
    /// have (to test that callers never see, refresh or delete it); returns its id.
    pub fn register_webhook_as(
        &self,
        owner: WebhookOwner,
        url: &str,
        events: &[&str],
        jql_filter: &str,
    ) -> i64 {
        let mut inner = self.lock();
        let expires_at = expiry_from(inner.wall_now());
        inner.webhooks.insert(FakeWebhook {
            id: 0,
            owner,
            url: url.to_owned(),
            events: events.iter().map(|e| (*e).to_owned()).collect(),
            jql_filter: jql_filter.to_owned(),
            field_ids_filter: None,
            issue_property_keys_filter: None,
            expires_at,
        })
    }

    /// POSTs a Jira-like `event` about `issue_key` to every live webhook of the configured app
    /// on `cloud_id` that subscribes to it, one POST per webhook in id order, and reports each.
    ///
    /// The body carries `timestamp` (real time, ms), `webhookEvent`, `issue_event_type_name`
    /// (issue events), `matchedWebhookIds`, `issue` (the fake's Jira data when the key exists,
    /// else a minimal issue), `user`, plus `changelog` for updates and `comment` for comment
    /// events. Headers: `Content-Type: application/json`, a fresh
    /// `X-Atlassian-Webhook-Identifier`, `X-Atlassian-Webhook-Retry: 0` and, per `signing`,
    /// `Authorization: Bearer <JWT>` (HS256; `iss` the client id, `sub` the webhook owner's
    /// account id, `iat`, `exp` five minutes later, both in real time). Webhooks of other apps
    /// are skipped: the fake knows no secret to sign for them.
    pub async fn deliver_jira_event(
        &self,
        cloud_id: &str,
        event: &str,
        issue_key: &str,
        signing: Signing,
    ) -> Vec<Delivery> {
        let config = self.config();
        let targets: Vec<(i64, String, String)> = {
            let mut inner = self.lock();
            let now = inner.wall_now();
            inner.webhooks.sweep(now);
            inner
                .webhooks
                .webhooks
                .iter()
                .filter(|w| {
                    w.owner.cloud_id == cloud_id
                        && w.owner.client_id == config.client_id
                        && w.events.iter().any(|e| e == event)
                })
                .map(|w| (w.id, w.url.clone(), w.owner.account_id.clone()))
                .collect()
        };
        let payload = event_payload(config, cloud_id, event, issue_key);
        let batch: Vec<Outgoing> = targets
            .into_iter()
            .map(|(webhook_id, url, account_id)| {
                let mut body = payload.clone();
                set(&mut body, "matchedWebhookIds", json!([webhook_id]));
                Outgoing {
                    webhook_id,
                    url,
                    account_id,
                    identifier: format!("{:032x}", rand::random::<u128>()),
                    retry: 0,
                    signing,
                    body: serde_json::to_vec(&body).unwrap_or_default(),
                }
            })
            .collect();
        self.lock().webhooks.last_batch = batch.clone();
        self.send_all(&batch).await
    }

    /// Sends the POSTs of the latest [`Self::deliver_jira_event`] again, byte for byte the same
    /// body and the SAME `X-Atlassian-Webhook-Identifier` (as Jira's retries do), with
    /// `X-Atlassian-Webhook-Retry` one higher and a freshly signed JWT of the same [`Signing`].
    pub async fn replay_last_deliveries(&self) -> Vec<Delivery> {
        let batch = {
            let mut inner = self.lock();
            for outgoing in &mut inner.webhooks.last_batch {
                outgoing.retry = outgoing.retry.saturating_add(1);
            }
            inner.webhooks.last_batch.clone()
        };
        self.send_all(&batch).await
    }

    /// The owner a webhook call acts as, or the refusal for a grant without the webhook scopes.
    ///
    /// Without `read:jira-work` and `manage:jira-webhook` the fake answers what Atlassian's API
    /// gateway sends for a scope mismatch, before Jira sees the call: 401
    /// `{"code":401,"message":"Unauthorized; scope does not match"}` (not Jira's own 403, which
    /// is for callers that are not apps). All four webhook operations apply this check.
    fn webhook_caller(&self, headers: &HeaderMap, cloud_id: &str) -> Result<WebhookOwner, Refusal> {
        let inner = self.lock();
        let Some(scope) = bearer(headers).and_then(|token| inner.token_scope(token)) else {
            return Err(Refusal::Unauthorized);
        };
        if !WEBHOOK_SCOPES.iter().all(|wanted| has_scope(scope, wanted)) {
            return Err(Refusal::ScopeMismatch);
        }
        let config = self.config();
        Ok(WebhookOwner {
            client_id: config.client_id.clone(),
            account_id: config.user.account_id.clone(),
            cloud_id: cloud_id.to_owned(),
        })
    }

    async fn send_all(&self, batch: &[Outgoing]) -> Vec<Delivery> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(RESPONSE_TIMEOUT)
            .build()
            .map_err(|error| format!("no HTTP client: {error}"));
        let mut deliveries = Vec::with_capacity(batch.len());
        for outgoing in batch {
            self.lock().counters.webhook_deliveries += 1;
            let outcome = match &client {
                Ok(client) => self.post(client, outgoing).await,
                Err(error) => Err(error.clone()),
            };
            deliveries.push(Delivery {
                webhook_id: outgoing.webhook_id,
                url: outgoing.url.clone(),
                identifier: outgoing.identifier.clone(),
                retry: outgoing.retry,
                outcome,
            });
        }
        deliveries
    }

    async fn post(&self, client: &reqwest::Client, outgoing: &Outgoing) -> Result<u16, String> {
        let mut request = client
            .post(&outgoing.url)
            .header(header::CONTENT_TYPE, "application/json")
            .header("X-Atlassian-Webhook-Identifier", &outgoing.identifier)
            .header("X-Atlassian-Webhook-Retry", outgoing.retry.to_string())
            .body(outgoing.body.clone());
        if let Some(jwt) = self.sign(outgoing.signing, &outgoing.account_id)? {
            request = request.bearer_auth(jwt);
        }
        let response = request.send().await.map_err(|error| error.to_string())?;
        Ok(response.status().as_u16())
    }

    /// The JWT for a delivery to `account_id`'s webhook, `None` for [`Signing::None`].
    fn sign(&self, signing: Signing, account_id: &str) -> Result<Option<String>, String> {
        let config = self.config();
        let secret = match signing {
            Signing::None => return Ok(None),
            Signing::Valid => config.client_secret.clone(),
            Signing::Forged => format!("not-the-client-secret-{}", random_hex()),
        };
        let iat = jsonwebtoken::get_current_timestamp();
        let claims = WebhookClaims {
            iss: &config.client_id,
            sub: account_id,
            iat,
            exp: iat.saturating_add(JWT_LIFETIME.as_secs()),
        };
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .map(Some)
        .map_err(|error| format!("the webhook JWT could not be signed: {error}"))
    }
}

/// The webhook routes (mounted behind the content guard).
pub(crate) fn routes() -> Router<FakeAtlassian> {
    Router::new()
        .route(
            "/ex/jira/{cloud}/rest/api/3/webhook",
            get(list).post(register).delete(delete),
        )
        .route("/ex/jira/{cloud}/rest/api/3/webhook/refresh", put(refresh))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RegistrationRequest {
    url: Option<String>,
    webhooks: Option<Vec<WebhookDetails>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WebhookDetails {
    events: Option<Vec<String>>,
    jql_filter: Option<String>,
    field_ids_filter: Option<Vec<String>>,
    issue_property_keys_filter: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WebhookIds {
    webhook_ids: Option<Vec<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Paging {
    start_at: Option<u64>,
    max_results: Option<i64>,
}

async fn register(
    State(fake): State<FakeAtlassian>,
    Path(cloud): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refusal> {
    let owner = fake.webhook_caller(&headers, &cloud)?;
    let request: RegistrationRequest = parse_body(&body)?;
    let (Some(url), Some(webhooks)) = (request.url, request.webhooks) else {
        return Err(Refusal::bad_request(
            "The request must include url and webhooks.",
        ));
    };
    check_url(&url).map_err(Refusal::bad_request)?;
    let mut inner = fake.lock();
    let expires_at = expiry_from(inner.wall_now());
    let mut results = Vec::with_capacity(webhooks.len());
    for details in webhooks {
        let errors = check_webhook(&details);
        if !errors.is_empty() {
            results.push(json!({ "errors": errors }));
            continue;
        }
        let id = inner.webhooks.insert(FakeWebhook {
            id: 0,
            owner: owner.clone(),
            url: url.clone(),
            events: details.events.unwrap_or_default(),
            jql_filter: details.jql_filter.unwrap_or_default(),
            field_ids_filter: details.field_ids_filter,
            issue_property_keys_filter: details.issue_property_keys_filter,
            expires_at,
        });
        inner.counters.webhooks_registered += 1;
        results.push(json!({ "createdWebhookId": id }));
    }
    Ok(axum::Json(json!({ "webhookRegistrationResult": results })).into_response())
}

async fn list(
    State(fake): State<FakeAtlassian>,
    Path(cloud): Path<String>,
    headers: HeaderMap,
    query: Result<Query<Paging>, QueryRejection>,
) -> Result<Response, Refusal> {
    let owner = fake.webhook_caller(&headers, &cloud)?;
    let Ok(Query(paging)) = query else {
        return Err(Refusal::bad_request("The query string is invalid."));
    };
    let start = usize::try_from(paging.start_at.unwrap_or(0)).unwrap_or(usize::MAX);
    let asked = paging.max_results.unwrap_or(100).clamp(1, 100);
    let max = usize::try_from(asked).unwrap_or(PAGE_CAP).min(PAGE_CAP);
    let mut inner = fake.lock();
    let now = inner.wall_now();
    inner.webhooks.sweep(now);
    let mine: Vec<&FakeWebhook> = inner
        .webhooks
        .webhooks
        .iter()
        .filter(|w| w.owner == owner)
        .collect();
    let total = mine.len();
    let values: Vec<Value> = mine
        .iter()
        .skip(start)
        .take(max)
        .copied()
        .map(webhook_json)
        .collect();
    let next = start.saturating_add(values.len());
    let page_url = |at: usize| {
        gateway_self(
            "jira",
            &cloud,
            &format!("/rest/api/3/webhook?startAt={at}&maxResults={max}"),
        )
    };
    let mut page = json!({
        "self": page_url(start),
        "maxResults": max,
        "startAt": start,
        "total": total,
        "isLast": next >= total,
        "values": values,
    });
    if next < total {
        set(&mut page, "nextPage", json!(page_url(next)));
    }
    Ok(axum::Json(page).into_response())
}

async fn delete(
    State(fake): State<FakeAtlassian>,
    Path(cloud): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refusal> {
    let owner = fake.webhook_caller(&headers, &cloud)?;
    let ids = webhook_ids(&body)?;
    let mut inner = fake.lock();
    let now = inner.wall_now();
    inner.webhooks.sweep(now);
    let before = inner.webhooks.webhooks.len();
    inner
        .webhooks
        .webhooks
        .retain(|w| !(w.owner == owner && ids.contains(&w.id)));
    let removed = before - inner.webhooks.webhooks.len();
    inner.counters.webhooks_deleted += removed as u64;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn refresh(
    State(fake): State<FakeAtlassian>,
    Path(cloud): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refusal> {
    let owner = fake.webhook_caller(&headers, &cloud)?;
    let ids = webhook_ids(&body)?;
    let mut inner = fake.lock();
    let now = inner.wall_now();
    inner.webhooks.sweep(now);
    let expires_at = expiry_from(now);
    let mut refreshed = 0;
    for webhook in &mut inner.webhooks.webhooks {
        if webhook.owner == owner && ids.contains(&webhook.id) {
            webhook.expires_at = expires_at;
            refreshed += 1;
        }
    }
    inner.counters.webhooks_refreshed += refreshed;
    Ok(axum::Json(json!({ "expirationDate": epoch_ms(expires_at) })).into_response())
}

/// Why a webhook call is refused before it changes anything.
#[derive(Debug)]
enum Refusal {
    /// The bearer token is not a live access token (any more).
    Unauthorized,
    /// The grant lacks a scope the operation needs (see [`FakeAtlassian::webhook_caller`]).
    ScopeMismatch,
    /// 400 with Jira's error collection.
    BadRequest(String),
}

impl Refusal {
    fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest(message.into())
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Self::Unauthorized => atlassian_error(StatusCode::UNAUTHORIZED, "Unauthorized"),
            Self::ScopeMismatch => atlassian_error(
                StatusCode::UNAUTHORIZED,
                "Unauthorized; scope does not match",
            ),
            Self::BadRequest(message) => jira_errors(StatusCode::BAD_REQUEST, &message),
        }
    }
}

/// The JSON body, or 400 with Jira's error collection.
fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Refusal::bad_request("The request body is missing."));
    }
    serde_json::from_slice(body)
        .map_err(|error| Refusal::bad_request(format!("The request body is not valid: {error}")))
}

/// The `webhookIds` of a delete or refresh body, or 400 when they are missing.
fn webhook_ids(body: &[u8]) -> Result<Vec<i64>, Refusal> {
    let request: WebhookIds = parse_body(body)?;
    request
        .webhook_ids
        .ok_or_else(|| Refusal::bad_request("The list of webhook IDs is missing."))
}

/// Accepts https URLs, and http ones on a loopback host (for local receivers).
fn check_url(raw: &str) -> Result<(), &'static str> {
    let url = Url::parse(raw).map_err(|_| "The webhook URL is not a valid URL.")?;
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(&url) => Ok(()),
        _ => Err("The webhook URL must use HTTPS."),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => Ipv4Addr::is_loopback(&ip),
        Some(Host::Ipv6(ip)) => Ipv6Addr::is_loopback(&ip),
        None => false,
    }
}

/// Why one webhook of a registration cannot be created (empty when it can).
fn check_webhook(details: &WebhookDetails) -> Vec<String> {
    let mut errors = Vec::new();
    match details.events.as_deref() {
        None | Some([]) => errors.push("At least one event must be provided.".to_owned()),
        Some(events) => errors.extend(
            events
                .iter()
                .filter(|e| !EVENTS.contains(&e.as_str()))
                .map(|e| format!("The event {e} is not supported.")),
        ),
    }
    match details.jql_filter.as_deref().map(str::trim) {
        None | Some("") => errors.push("The JQL filter must be provided.".to_owned()),
        Some(jql) => {
            if let Err(problem) = check_jql(jql) {
                errors.push(problem);
            }
        }
    }
    errors
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    Word(&'a str),
    Quoted,
    Operator(&'a str),
    Open,
    Close,
    Comma,
}

/// Characters that end a bare JQL word.
fn ends_word(c: char) -> bool {
    c.is_whitespace() || "()=,!~<>\"'".contains(c)
}

/// Splits JQL into tokens; `None` for an unterminated string.
fn tokenize(jql: &str) -> Option<Vec<Token<'_>>> {
    let mut tokens = Vec::new();
    let mut chars = jql.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '(' => tokens.push(Token::Open),
            ')' => tokens.push(Token::Close),
            ',' => tokens.push(Token::Comma),
            '"' | '\'' => {
                let mut closed = false;
                while let Some((_, next)) = chars.next() {
                    if next == '\\' {
                        chars.next();
                    } else if next == c {
                        closed = true;
                        break;
                    }
                }
                if !closed {
                    return None;
                }
                tokens.push(Token::Quoted);
            }
            '=' | '!' | '~' | '<' | '>' => {
                let mut end = at + c.len_utf8();
                while let Some((i, next)) = chars.peek().copied()
                    && "=!~<>".contains(next)
                {
                    end = i + next.len_utf8();
                    chars.next();
                }
                tokens.push(Token::Operator(jql.get(at..end)?));
            }
            _ => {
                let mut end = at + c.len_utf8();
                while let Some((i, next)) = chars.peek().copied()
                    && !ends_word(next)
                {
                    end = i + next.len_utf8();
                    chars.next();
                }
                tokens.push(Token::Word(jql.get(at..end)?));
            }
        }
    }
    Some(tokens)
}

/// Whether Jira evaluates `field` in a webhook's JQL filter.
fn supported_field(field: &str) -> bool {
    let field = field.to_ascii_lowercase();
    matches!(
        field.as_str(),
        "issuekey" | "key" | "project" | "issuetype" | "type" | "status" | "assignee" | "reporter"
    ) || (field.starts_with("cf[") && field.ends_with(']'))
        || field.starts_with("issue.property[")
}

/// Checks a webhook's JQL filter against the subset Jira supports for webhooks.
fn check_jql(jql: &str) -> Result<(), String> {
    let invalid = || format!("The JQL query is invalid: {jql}");
    let tokens = tokenize(jql).ok_or_else(invalid)?;
    let is = |token: Option<&Token<'_>>, word: &str| matches!(token, Some(Token::Word(w)) if w.eq_ignore_ascii_case(word));
    let mut i = 0;
    let mut depth = 0usize;
    let mut clauses = 0usize;
    let mut expect_clause = true;
    while let Some(token) = tokens.get(i).copied() {
        if !expect_clause {
            match token {
                Token::Close if depth > 0 => depth -= 1,
                Token::Word(w) if w.eq_ignore_ascii_case("and") || w.eq_ignore_ascii_case("or") => {
                    expect_clause = true;
                }
                Token::Word(w) if w.eq_ignore_ascii_case("order") => {
                    return Err("The clause ORDER BY is unsupported.".to_owned());
                }
                _ => return Err(invalid()),
            }
            i += 1;
            continue;
        }
        match token {
            Token::Open => {
                depth += 1;
                i += 1;
            }
            Token::Word(w) if w.eq_ignore_ascii_case("not") => i += 1,
            Token::Word(field) => {
                if !supported_field(field) {
                    return Err(format!("The clause {field} is unsupported."));
                }
                i += 1;
                let list = match tokens.get(i) {
                    Some(Token::Operator("=" | "!=")) => false,
                    Some(Token::Operator(op)) => {
                        return Err(format!("The operator '{op}' is unsupported."));
                    }
                    Some(Token::Word(w)) if w.eq_ignore_ascii_case("in") => true,
                    Some(Token::Word(w))
                        if w.eq_ignore_ascii_case("not") && is(tokens.get(i + 1), "in") =>
                    {
                        i += 1;
                        true
                    }
                    Some(Token::Word(w)) => {
                        return Err(format!("The operator '{w}' is unsupported."));
                    }
                    _ => return Err(invalid()),
                };
                i += 1;
                i = if list {
                    value_list(&tokens, i).ok_or_else(invalid)?
                } else {
                    value(&tokens, i).ok_or_else(invalid)?
                };
                clauses += 1;
                expect_clause = false;
            }
            _ => return Err(invalid()),
        }
    }
    if expect_clause || depth != 0 || clauses == 0 {
        return Err(invalid());
    }
    Ok(())
}

/// Reads one value (a word, a string, or a function call such as `currentUser()`) at `i`;
/// returns the index after it.
fn value(tokens: &[Token<'_>], i: usize) -> Option<usize> {
    match tokens.get(i)? {
        Token::Quoted => Some(i + 1),
        Token::Word(_) => match (tokens.get(i + 1), tokens.get(i + 2)) {
            (Some(Token::Open), Some(Token::Close)) => Some(i + 3),
            _ => Some(i + 1),
        },
        _ => None,
    }
}

/// Reads `(value, value, …)` at `i`; returns the index after the closing parenthesis.
fn value_list(tokens: &[Token<'_>], i: usize) -> Option<usize> {
    if tokens.get(i) != Some(&Token::Open) {
        return None;
    }
    let mut i = value(tokens, i + 1)?;
    loop {
        match tokens.get(i)? {
            Token::Comma => i = value(tokens, i + 1)?,
            Token::Close => return Some(i + 1),
            _ => return None,
        }
    }
}

fn webhook_json(webhook: &FakeWebhook) -> Value {
    let mut value = json!({
        "id": webhook.id,
        "url": webhook.url,
        "jqlFilter": webhook.jql_filter,
        "events": webhook.events,
        "expirationDate": epoch_ms(webhook.expires_at),
    });
    if let Some(fields) = &webhook.field_ids_filter {
        set(&mut value, "fieldIdsFilter", json!(fields));
    }
    if let Some(keys) = &webhook.issue_property_keys_filter {
        set(&mut value, "issuePropertyKeysFilter", json!(keys));
    }
    value
}

/// The body of a delivery, without `matchedWebhookIds`.
fn event_payload(config: &FakeConfig, cloud: &str, event: &str, issue_key: &str) -> Value {
    let site = data::site(cloud);
    let base = config
        .sites
        .iter()
        .find(|s| s.id == cloud)
        .map_or("https://unknown.atlassian.net", |s| s.url.as_str());
    let known = site.issues.iter().find(|i| i.key == issue_key);
    let mut issue = match known {
        Some(found) => issue_json(cloud, found),
        None => minimal_issue(issue_key),
    };
    let id = issue.get("id").and_then(Value::as_str).unwrap_or_default();
    let issue_self = format!("{base}/rest/api/2/issue/{id}");
    set(&mut issue, "self", json!(issue_self));
    let project_key = issue_key.split('-').next().unwrap_or(issue_key);
    let project = site.projects.iter().find(|p| p.key == project_key);
    let project = json!({
        "self": format!("{base}/rest/api/2/project/{}", project.map_or("0", |p| p.id)),
        "id": project.map_or("0", |p| p.id),
        "key": project_key,
        "name": project.map_or(project_key, |p| p.name),
    });
    if let Some(fields) = issue.get_mut("fields") {
        set(fields, "project", project);
    }
    let summary = issue
        .pointer("/fields/summary")
        .cloned()
        .unwrap_or(Value::Null);
    let actor = json!({
        "accountId": config.user.account_id,
        "displayName": config.user.name,
        "active": true,
        "accountType": "atlassian",
        "timeZone": "Europe/London",
    });
    let mut body = json!({
        "timestamp": epoch_ms(SystemTime::now()),
        "webhookEvent": event,
        "user": actor,
        "issue": issue,
    });
    let event_type = match event {
        "jira:issue_created" => Some("issue_created"),
        "jira:issue_updated" => Some("issue_generic"),
        "jira:issue_deleted" => Some("issue_deleted"),
        _ => None,
    };
    if let Some(name) = event_type {
        set(&mut body, "issue_event_type_name", json!(name));
    }
    if event == "jira:issue_updated" {
        let item = json!({
            "field": "summary",
            "fieldtype": "jira",
            "fieldId": "summary",
            "from": null,
            "fromString": summary,
            "to": null,
            "toString": summary,
        });
        set(
            &mut body,
            "changelog",
            json!({ "id": "10100", "items": [item] }),
        );
    }
    if event.starts_with("comment_") {
        let comment = known.and_then(|i| i.comments.last());
        let author = comment.map_or_else(|| body["user"].clone(), |c| person(c.author));
        let comment = json!({
            "self": format!("{issue_self}/comment/{}", comment.map_or("90001", |c| c.id)),
            "id": comment.map_or("90001", |c| c.id),
            "author": author,
            "updateAuthor": author,
            "body": comment.map_or_else(
                || "A comment from the fake.".to_owned(),
                |c| adf_words(&c.body).trim().to_owned(),
            ),
            "created": comment.map_or("2024-01-01T00:00:00.000+0000", |c| c.created),
            "updated": comment.map_or("2024-01-01T00:00:00.000+0000", |c| c.created),
        });
        set(&mut body, "comment", comment);
    }
    body
}

/// An issue the fake has no data for, with the fields a webhook body always carries.
fn minimal_issue(key: &str) -> Value {
    let number = key
        .rsplit('-')
        .next()
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    json!({
        "id": (90000 + number % 10000).to_string(),
        "key": key,
        "fields": {
            "summary": format!("Issue {key}"),
            "status": {"name": "To Do", "statusCategory": {"key": "new"}},
            "issuetype": {"name": "Task"},
            "labels": [],
        },
    })
}

/// Sets `key` on a JSON object (a no-op on anything else, so it never panics).
fn set(value: &mut Value, key: &str, item: Value) {
    if let Some(object) = value.as_object_mut() {
        object.insert(key.to_owned(), item);
    }
}

fn expiry_from(now: SystemTime) -> SystemTime {
    now.checked_add(WEBHOOK_LIFETIME).unwrap_or(now)
}

/// Milliseconds since the Unix epoch (0 before it).
fn epoch_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_https_or_loopback_http() {
        assert!(check_url("https://hooks.example.com/jira").is_ok());
        assert!(check_url("http://127.0.0.1:8080/hook").is_ok());
        assert!(check_url("http://127.8.9.10/hook").is_ok());
        assert!(check_url("http://localhost:3000/hook").is_ok());
        assert!(check_url("http://[::1]:3000/hook").is_ok());
        assert!(check_url("http://hooks.example.com/jira").is_err());
        assert!(check_url("http://10.0.0.1/jira").is_err());
        assert!(check_url("ftp://127.0.0.1/jira").is_err());
        assert!(check_url("not a url").is_err());
    }

    #[test]
    fn supported_jql_passes() {
        for jql in [
            "project = ACME",
            "project in (ACME, \"DATA\") AND issuetype != Bug",
            "status NOT IN ('Done', Closed) or assignee = currentUser()",
            "(project = ACME OR project = OPS) AND NOT reporter = x",
            "issueKey = ACME-1",
            "cf[10014] = EPIC-1",
            "issue.property[flags].done = true",
        ] {
            assert_eq!(check_jql(jql), Ok(()), "{jql}");
        }
    }

    #[test]
    fn unsupported_jql_is_refused() {
        assert_eq!(
            check_jql("watchCount = 2"),
            Err("The clause watchCount is unsupported.".to_owned())
        );
        assert_eq!(
            check_jql("project ~ ACME"),
            Err("The operator '~' is unsupported.".to_owned())
        );
        assert_eq!(
            check_jql("project is EMPTY"),
            Err("The operator 'is' is unsupported.".to_owned())
        );
        assert_eq!(
            check_jql("project = ACME ORDER BY created"),
            Err("The clause ORDER BY is unsupported.".to_owned())
        );
        for jql in [
            "project =",
            "project = ACME AND",
            "(project = ACME",
            "project = ACME)",
            "project in ()",
            "project = \"open",
            "= ACME",
        ] {
            assert!(check_jql(jql).is_err(), "{jql}");
        }
    }

    #[test]
    fn ids_start_at_ten_thousand_and_increase() {
        let mut state = WebhookState::default();
        let webhook = FakeWebhook {
            id: 0,
            owner: WebhookOwner {
                client_id: "c".into(),
                account_id: "a".into(),
                cloud_id: "s".into(),
            },
            url: "https://x".into(),
            events: vec![],
            jql_filter: String::new(),
            field_ids_filter: None,
            issue_property_keys_filter: None,
            expires_at: UNIX_EPOCH,
        };
        assert_eq!(state.insert(webhook.clone()), 10000);
        assert_eq!(state.insert(webhook), 10001);
        state.sweep(SystemTime::now());
        assert!(state.webhooks.is_empty());
    }
}
