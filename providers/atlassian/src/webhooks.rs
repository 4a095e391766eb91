//! Jira dynamic webhooks of Atlassian Cloud connections (on with `ATLASSIAN_WEBHOOK_EVENTS`).
//!
//! - [`connected`]: for every Jira site of the grant, a webhook registered with a callback URL
//!   holding a fresh random path secret; the subscription stores the secret's SHA-256 only. A
//!   reconnect deletes the webhooks of the previous grant first.
//! - [`disconnecting`]: the webhooks deleted upstream, then the subscriptions.
//! - [`maintain`]: subscriptions expiring within [`RENEW_WITHIN`] refreshed (Jira drops a
//!   dynamic webhook 30 days after its registration or last refresh); one that lapsed or that
//!   Jira no longer lists is registered again.
//! - [`deliver`]: `POST /webhooks/jira/{secret}`, a delivery verified (the path secret and the
//!   `Authorization: Bearer` JWT signed with the app's client secret), deduplicated by
//!   `X-Atlassian-Webhook-Identifier` and recorded as an `atlassian.jira.<event>` event.
//!
//! Failures upstream are logged without tokens or path secrets and never break a connection.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine;
use chrono::{DateTime, Utc};
use grantry_core::events::Event;
use grantry_core::store::{ConnectionRecord, ConnectionStatus, Subscription};
use grantry_core::{AccessToken, ApiError, ProviderContext, Resource};
use grantry_protocol::ConnectionCall;
use grantry_protocol::http::{Answer, send, short};
use rand::RngCore;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::config::{JiraWebhookConfig, WEBHOOK_SCOPES};
use crate::{Atlassian, ID};

/// How long Jira keeps a dynamic webhook after its registration or last refresh.
pub const LIFETIME: chrono::Duration = chrono::Duration::days(30);
/// Maintenance renews the subscriptions that expire within this window.
pub const RENEW_WITHIN: chrono::Duration = chrono::Duration::days(10);
/// The largest delivery body accepted (1 MiB).
pub const MAX_DELIVERY_BODY: usize = 1024 * 1024;
/// The prefix of the event types deliveries are recorded as.
pub const EVENT_PREFIX: &str = "atlassian.jira.";
/// Subscriptions read per page by maintenance.
const BATCH: u32 = 100;
/// Pages of Jira's webhook list read at most when checking that a webhook is still there.
const MAX_LIST_PAGES: usize = 50;
/// The longest `X-Atlassian-Webhook-Identifier` accepted.
const MAX_IDENTIFIER: usize = 256;
/// The longest `webhookEvent` accepted.
const MAX_EVENT_NAME: usize = 64;

/// A webhook's path secret: 32 random bytes from the OS, base64url; `Debug` never shows it.
struct PathSecret(String);

impl PathSecret {
    fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for PathSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PathSecret([redacted])")
    }
}

/// The SHA-256 (hex) a path secret is stored and looked up under.
fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Whether the grant's scopes on a site reach Jira (`read:jira-work`, `read:issue:jira`, …).
fn reaches_jira(site: &Resource) -> bool {
    site.scopes.iter().any(|scope| scope.contains("jira"))
}

/// The Jira webhook endpoint of a site behind the gateway, `suffix` appended (`""`, `"refresh"`).
fn endpoint(atlassian: &Atlassian, cloud_id: &str, suffix: &str) -> Result<url::Url, String> {
    let mut url = atlassian.config().api_url.clone();
    {
        let mut path = url
            .path_segments_mut()
            .map_err(|()| "the API URL cannot take a path".to_owned())?;
        path.clear()
            .extend(["ex", "jira", cloud_id, "rest", "api", "3", "webhook"]);
        if !suffix.is_empty() {
            path.push(suffix);
        }
    }
    Ok(url)
}

/// What an upstream refusal says, at most 200 characters, with `secret` (when given) blanked out.
fn refusal(what: &str, answer: &Answer, secret: Option<&PathSecret>) -> String {
    let text = String::from_utf8_lossy(&answer.body);
    let text = match secret {
        Some(secret) => text.replace(secret.expose(), "[secret]"),
        None => text.into_owned(),
    };
    let text = text.trim();
    if text.is_empty() {
        format!("{what} answered {}", answer.status.as_u16())
    } else {
        format!(
            "{what} answered {}: {}",
            answer.status.as_u16(),
            short(text)
        )
    }
}

/// The numeric ids Jira takes of stored remote ids (ignoring any that are not numbers).
fn numeric_ids(ids: &[String]) -> Vec<i64> {
    ids.iter().filter_map(|id| id.parse().ok()).collect()
}

/// `DELETE …/webhook` of `ids` on `cloud_id`; Jira ignores ids that are gone or not the app's.
async fn delete_remote(
    atlassian: &Atlassian,
    token: &AccessToken,
    cloud_id: &str,
    ids: &[String],
) -> Result<(), String> {
    let ids = numeric_ids(ids);
    if ids.is_empty() {
        return Ok(());
    }
    let what = "jira webhook deletion";
    let request = atlassian
        .http()
        .delete(endpoint(atlassian, cloud_id, "")?)
        .bearer_auth(token.secret())
        .json(&json!({ "webhookIds": ids }));
    let answer = send(request, what).await.map_err(|e| e.to_string())?;
    if answer.status.is_success() {
        Ok(())
    } else {
        Err(refusal(what, &answer, None))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Registration {
    #[serde(default)]
    webhook_registration_result: Vec<Registered>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Registered {
    created_webhook_id: Option<i64>,
    #[serde(default)]
    errors: Vec<String>,
}

/// Registers the webhook of `site` with a new path secret and stores its subscription
/// (replacing the connection's previous one for the site).
async fn register(
    atlassian: &Atlassian,
    config: &JiraWebhookConfig,
    context: &ProviderContext,
    connection_id: &str,
    token: &AccessToken,
    site_id: &str,
    now: DateTime<Utc>,
) -> Result<(), String> {
    let secret = PathSecret::generate();
    let callback = config.callback_url(secret.expose());
    let what = "jira webhook registration";
    let request = atlassian
        .http()
        .post(endpoint(atlassian, site_id, "")?)
        .bearer_auth(token.secret())
        .json(&json!({
            "url": callback.as_str(),
            "webhooks": [{ "events": config.events, "jqlFilter": config.jql }],
        }));
    let answer = send(request, what).await.map_err(|e| e.to_string())?;
    if !answer.status.is_success() {
        return Err(refusal(what, &answer, Some(&secret)));
    }
    let registration: Registration = serde_json::from_slice(&answer.body)
        .map_err(|_| format!("{what} answered a malformed body"))?;
    let mut remote_ids = Vec::new();
    let mut errors = Vec::new();
    for result in registration.webhook_registration_result {
        match result.created_webhook_id {
            Some(id) => remote_ids.push(id.to_string()),
            None => errors.extend(result.errors),
        }
    }
    if remote_ids.is_empty() {
        let errors = errors.join(" ").replace(secret.expose(), "[secret]");
        return Err(format!("Jira created no webhook: {}", short(&errors)));
    }
    let subscription = Subscription {
        connection_id: connection_id.to_owned(),
        provider: ID.to_owned(),
        resource_id: site_id.to_owned(),
        secret_hash: secret_hash(secret.expose()),
        remote_ids,
        expires_at: Some(now + LIFETIME),
        created_at: now,
        renewed_at: now,
    };
    if let Err(e) = context.store().put_subscription(&subscription).await {
        // Without its row nothing would ever renew or delete the webhook: take it back.
        let _ = delete_remote(atlassian, token, site_id, &subscription.remote_ids).await;
        return Err(format!("cannot store the subscription: {e}"));
    }
    Ok(())
}

/// After a grant was stored: one webhook per Jira site, the previous grant's deleted first.
pub(crate) async fn connected(atlassian: &Atlassian, call: ConnectionCall<'_>) {
    let Some(config) = atlassian.webhooks() else {
        return;
    };
    let connection = call.connection;
    let store = call.context.store();
    let old = match store.subscriptions(&connection.id).await {
        Ok(old) => old,
        Err(e) => {
            tracing::warn!(connection_id = %connection.id, error = %e, "cannot read the Jira webhook subscriptions; none registered");
            return;
        }
    };
    let sites: Vec<&Resource> = connection
        .resources
        .iter()
        .filter(|site| reaches_jira(site))
        .collect();
    if sites.is_empty() && old.is_empty() {
        tracing::debug!(connection_id = %connection.id, "no Jira site in the grant: no webhook");
        return;
    }
    let missing: Vec<&str> = WEBHOOK_SCOPES
        .into_iter()
        .filter(|scope| !connection.scopes.contains(scope))
        .collect();
    let lacking = || {
        tracing::warn!(connection_id = %connection.id, missing = %missing.join(" "), "the grant lacks the scopes of Jira webhooks: none registered");
    };
    if !missing.is_empty() && old.is_empty() {
        lacking();
        return;
    }
    let Some(token) = connection_token(call.context, connection).await else {
        return;
    };
    for subscription in &old {
        if let Err(e) = delete_remote(
            atlassian,
            &token,
            &subscription.resource_id,
            &subscription.remote_ids,
        )
        .await
        {
            tracing::warn!(connection_id = %connection.id, site = %subscription.resource_id, error = %e, "cannot delete the previous grant's Jira webhook; it lapses within 30 days");
        }
    }
    if !old.is_empty()
        && let Err(e) = store.delete_subscriptions(&connection.id).await
    {
        tracing::warn!(connection_id = %connection.id, error = %e, "cannot delete the previous Jira webhook subscriptions");
    }
    if !missing.is_empty() {
        lacking();
        return;
    }
    let now = Utc::now();
    let mut registered = 0usize;
    for site in &sites {
        match register(
            atlassian,
            config,
            call.context,
            &connection.id,
            &token,
            &site.id,
            now,
        )
        .await
        {
            Ok(()) => registered += 1,
            Err(e) => {
                tracing::warn!(connection_id = %connection.id, site = %site.id, error = %e, "cannot register the Jira webhook");
            }
        }
    }
    tracing::info!(connection_id = %connection.id, sites = sites.len(), registered, "Jira webhooks registered");
}

/// Before a connection is deleted: its webhooks deleted upstream, then its subscriptions.
pub(crate) async fn disconnecting(atlassian: &Atlassian, call: ConnectionCall<'_>) {
    let connection = call.connection;
    let store = call.context.store();
    let subscriptions = match store.subscriptions(&connection.id).await {
        Ok(list) if list.is_empty() => return,
        Ok(list) => list,
        Err(e) => {
            tracing::warn!(connection_id = %connection.id, error = %e, "cannot read the Jira webhook subscriptions; their webhooks lapse within 30 days");
            return;
        }
    };
    if let Some(token) = connection_token(call.context, connection).await {
        for subscription in &subscriptions {
            if let Err(e) = delete_remote(
                atlassian,
                &token,
                &subscription.resource_id,
                &subscription.remote_ids,
            )
            .await
            {
                tracing::warn!(connection_id = %connection.id, site = %subscription.resource_id, error = %e, "cannot delete the Jira webhook; it lapses within 30 days");
            }
        }
    }
    if let Err(e) = store.delete_subscriptions(&connection.id).await {
        tracing::warn!(connection_id = %connection.id, error = %e, "cannot delete the Jira webhook subscriptions (they go with the connection)");
    }
}

/// A fresh access token of `connection`, or `None` (logged) when there is none or the user's
/// connection is another one by now.
async fn connection_token(
    context: &ProviderContext,
    connection: &ConnectionRecord,
) -> Option<AccessToken> {
    match context.fresh_token(&connection.user_id).await {
        Ok(access) if access.connection_id == connection.id => Some(access.access_token),
        Ok(_) => {
            tracing::debug!(connection_id = %connection.id, "the connection was replaced meanwhile");
            None
        }
        Err(e) => {
            tracing::warn!(connection_id = %connection.id, error = %e, "no usable token for the Jira webhooks");
            None
        }
    }
}

/// What maintenance did with one subscription.
enum Renewal {
    Renewed,
    Registered,
    Skipped,
}

/// Each maintenance pass: the subscriptions expiring within [`RENEW_WITHIN`] of `now` renewed,
/// in keyset pages; one info line with the counts.
pub(crate) async fn maintain(atlassian: &Atlassian, context: &ProviderContext, now: DateTime<Utc>) {
    let Some(config) = atlassian.webhooks() else {
        return;
    };
    let store = context.store();
    let before = now + RENEW_WITHIN;
    let (mut renewed, mut registered, mut skipped, mut failed) = (0u64, 0u64, 0u64, 0u64);
    let mut after: Option<Subscription> = None;
    loop {
        let page = match store
            .subscriptions_expiring(ID, before, after.as_ref(), BATCH)
            .await
        {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the Jira webhook subscriptions due for renewal");
                break;
            }
        };
        for subscription in &page {
            match renew(atlassian, config, context, subscription, now).await {
                Ok(Renewal::Renewed) => renewed += 1,
                Ok(Renewal::Registered) => registered += 1,
                Ok(Renewal::Skipped) => skipped += 1,
                Err(e) => {
                    failed += 1;
                    tracing::debug!(connection_id = %subscription.connection_id, site = %subscription.resource_id, error = %e, "cannot renew the Jira webhook");
                }
            }
        }
        if page.len() < BATCH as usize {
            break;
        }
        after = page.last().cloned();
    }
    tracing::info!(
        renewed,
        registered_again = registered,
        skipped_needs_reauth = skipped,
        failed,
        "Jira webhook maintenance"
    );
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Refreshed {
    expiration_date: Option<Value>,
}

/// Renews one subscription: refreshed upstream, or registered again when it lapsed or Jira no
/// longer lists it.
async fn renew(
    atlassian: &Atlassian,
    config: &JiraWebhookConfig,
    context: &ProviderContext,
    subscription: &Subscription,
    now: DateTime<Utc>,
) -> Result<Renewal, String> {
    let store = context.store();
    let Some(connection) = store
        .connection_by_id(&subscription.connection_id)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(Renewal::Skipped);
    };
    if connection.status == ConnectionStatus::NeedsReauth {
        return Ok(Renewal::Skipped);
    }
    let access = context
        .fresh_token(&connection.user_id)
        .await
        .map_err(|e| e.to_string())?;
    if access.connection_id != connection.id {
        return Ok(Renewal::Skipped);
    }
    let token = &access.access_token;
    let site = &subscription.resource_id;
    let lapsed = subscription.expires_at.is_none_or(|at| at <= now);
    if !lapsed {
        let expires_at = refresh_remote(atlassian, token, site, &subscription.remote_ids).await?;
        // Jira ignores ids it no longer has: a webhook it dropped shows as missing from its list.
        let listed = match listed_ids(atlassian, token, site).await {
            Ok(listed) => Some(listed),
            Err(e) => {
                tracing::debug!(connection_id = %connection.id, site = %site, error = %e, "cannot list the Jira webhooks; the refresh is trusted");
                None
            }
        };
        let present = listed.is_none_or(|listed| {
            numeric_ids(&subscription.remote_ids)
                .iter()
                .all(|id| listed.contains(id))
        });
        if present {
            // A reconnect meanwhile set up a new subscription: this renewal leaves it alone.
            store
                .renew_subscription(
                    &subscription.connection_id,
                    &subscription.resource_id,
                    &subscription.secret_hash,
                    expires_at.unwrap_or(now + LIFETIME),
                    now,
                )
                .await
                .map_err(|e| e.to_string())?;
            return Ok(Renewal::Renewed);
        }
    }
    // Jira dropped (some of) the webhooks: the rest go, and the site gets a new one.
    delete_remote(atlassian, token, site, &subscription.remote_ids).await?;
    register(atlassian, config, context, &connection.id, token, site, now).await?;
    Ok(Renewal::Registered)
}

/// `PUT …/webhook/refresh` of `ids`; the new expiry when Jira's answer carries a readable one.
async fn refresh_remote(
    atlassian: &Atlassian,
    token: &AccessToken,
    cloud_id: &str,
    ids: &[String],
) -> Result<Option<DateTime<Utc>>, String> {
    let what = "jira webhook refresh";
    let request = atlassian
        .http()
        .put(endpoint(atlassian, cloud_id, "refresh")?)
        .bearer_auth(token.secret())
        .json(&json!({ "webhookIds": numeric_ids(ids) }));
    let answer = send(request, what).await.map_err(|e| e.to_string())?;
    if !answer.status.is_success() {
        return Err(refusal(what, &answer, None));
    }
    let refreshed: Refreshed = serde_json::from_slice(&answer.body)
        .map_err(|_| format!("{what} answered a malformed body"))?;
    Ok(refreshed.expiration_date.as_ref().and_then(expiration))
}

/// Jira's `expirationDate`: epoch milliseconds (the schema), epoch seconds, or a date such as
/// `2019-06-01T12:42:30.000+0000` (the documented example).
fn expiration(value: &Value) -> Option<DateTime<Utc>> {
    match value {
        Value::Number(n) => {
            let n = n.as_i64()?;
            if n.abs() < 100_000_000_000 {
                DateTime::from_timestamp(n, 0)
            } else {
                DateTime::from_timestamp_millis(n)
            }
        }
        Value::String(text) => DateTime::parse_from_rfc3339(text)
            .or_else(|_| DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z"))
            .ok()
            .map(|at| at.with_timezone(&Utc)),
        _ => None,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WebhookPage {
    #[serde(default)]
    values: Vec<ListedWebhook>,
    is_last: Option<bool>,
}

#[derive(Deserialize)]
struct ListedWebhook {
    id: i64,
}

/// The ids of the app's live webhooks on `cloud_id` for this user (every page of the list).
async fn listed_ids(
    atlassian: &Atlassian,
    token: &AccessToken,
    cloud_id: &str,
) -> Result<Vec<i64>, String> {
    let what = "jira webhook list";
    let mut ids = Vec::new();
    for _ in 0..MAX_LIST_PAGES {
        let mut url = endpoint(atlassian, cloud_id, "")?;
        url.query_pairs_mut()
            .append_pair("startAt", &ids.len().to_string())
            .append_pair("maxResults", "100");
        let answer = send(atlassian.http().get(url).bearer_auth(token.secret()), what)
            .await
            .map_err(|e| e.to_string())?;
        if !answer.status.is_success() {
            return Err(refusal(what, &answer, None));
        }
        let page: WebhookPage = serde_json::from_slice(&answer.body)
            .map_err(|_| format!("{what} answered a malformed body"))?;
        let empty = page.values.is_empty();
        ids.extend(page.values.into_iter().map(|w| w.id));
        if empty || page.is_last.unwrap_or(true) {
            return Ok(ids);
        }
    }
    Ok(ids)
}

/// The claims grantry reads of a delivery's JWT: only `exp` is required.
#[derive(Deserialize)]
struct DeliveryClaims {
    #[serde(rename = "exp")]
    _exp: u64,
}

/// Whether `headers` carry `Authorization: Bearer <JWT>` signed (HS256) with the app's client
/// secret and not expired.
fn signed_by_atlassian(atlassian: &Atlassian, headers: &HeaderMap) -> bool {
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split_once(' ')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        })
        .map(|(_, token)| token.trim())
    else {
        return false;
    };
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.validate_aud = false;
    let key = jsonwebtoken::DecodingKey::from_secret(
        atlassian.config().client_secret.secret().as_bytes(),
    );
    jsonwebtoken::decode::<DeliveryClaims>(token, &key, &validation).is_ok()
}

/// The event type of a `webhookEvent`: `jira:issue_updated` → `atlassian.jira.issue_updated`.
fn event_type(webhook_event: &str) -> Option<String> {
    let name = webhook_event.strip_prefix("jira:").unwrap_or(webhook_event);
    let usable = !name.is_empty()
        && name.len() <= MAX_EVENT_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    usable.then(|| format!("{EVENT_PREFIX}{name}"))
}

fn unauthorized() -> ApiError {
    ApiError::unauthorized("the delivery is not signed by Atlassian for a known webhook")
}

fn invalid(message: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
}

/// A Jira webhook delivery: verified, deduplicated and recorded as an `atlassian.jira.<event>`
/// event with the site, the issue's id and key, and the connection's user.
///
/// Public: Atlassian authenticates with `Authorization: Bearer <JWT>` (HS256, signed with the
/// app's client secret), not with a grantry user token.
#[utoipa::path(post, path = "/webhooks/jira/{secret}", tag = "atlassian", security(()),
    params(
        ("secret" = String, Path, description = "the path secret of the webhook's callback URL"),
        ("X-Atlassian-Webhook-Identifier" = Option<String>, Header, description = "the delivery's id; a repeat is ignored"),
    ),
    request_body(content = Object, content_type = "application/json", description = "Jira's webhook body"),
    responses(
        (status = 200, description = "recorded, or a repeat ignored"),
        (status = 400, body = grantry_core::ErrorBody, description = "`invalid_request`: not JSON, or no usable `webhookEvent`"),
        (status = 401, body = grantry_core::ErrorBody, description = "`unauthorized`: unknown path, or no valid JWT"),
        (status = 413, body = grantry_core::ErrorBody, description = "`payload_too_large`: more than 1 MiB"),
        (status = 503, body = grantry_core::ErrorBody, description = "`database_unavailable`"),
    ))]
pub(crate) async fn deliver(
    State(atlassian): State<Arc<Atlassian>>,
    State(context): State<ProviderContext>,
    Path(secret): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    if !signed_by_atlassian(&atlassian, &headers) {
        tracing::debug!("jira webhook delivery refused: no valid JWT");
        return Err(unauthorized());
    }
    let store = context.store();
    let subscription = store
        .subscription_by_secret(&secret_hash(&secret))
        .await
        .map_err(|e| ApiError::database(&e))?
        .filter(|s| s.provider == ID);
    let Some(subscription) = subscription else {
        tracing::debug!("jira webhook delivery refused: unknown path");
        return Err(unauthorized());
    };
    let Some(connection) = store
        .connection_by_id(&subscription.connection_id)
        .await
        .map_err(|e| ApiError::database(&e))?
    else {
        return Err(unauthorized());
    };
    let bytes = axum::body::to_bytes(body, MAX_DELIVERY_BODY)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "a delivery body is at most 1 MiB",
            )
        })?;
    let document: Value =
        serde_json::from_slice(&bytes).map_err(|_| invalid("the body is not JSON"))?;
    let webhook_event = document
        .get("webhookEvent")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("the body has no webhookEvent"))?;
    let kind =
        event_type(webhook_event).ok_or_else(|| invalid("the webhookEvent is not usable"))?;
    let delivery_id = match headers.get("x-atlassian-webhook-identifier") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .map(str::trim)
                .filter(|id| !id.is_empty() && id.len() <= MAX_IDENTIFIER)
                .ok_or_else(|| invalid("the X-Atlassian-Webhook-Identifier is not usable"))?,
        ),
    };
    let site_url = connection
        .resources
        .iter()
        .find(|r| r.id == subscription.resource_id)
        .and_then(|r| r.url.clone());
    // Only short scalar ids pass into the event, whatever the body holds.
    let scalar = |v: Option<&Value>| match v {
        Some(Value::String(s)) if s.len() <= MAX_IDENTIFIER => Value::String(s.clone()),
        Some(Value::Number(n)) => Value::Number(n.clone()),
        _ => Value::Null,
    };
    let issue = document.get("issue").filter(|i| i.is_object()).map(|i| {
        json!({
            "id": scalar(i.get("id")),
            "key": scalar(i.get("key")),
        })
    });
    let event = Event::new(
        kind,
        json!({
            "provider": ID,
            "user_id": connection.user_id,
            "connection_id": connection.id,
            "site": { "id": subscription.resource_id, "url": site_url },
            "issue": issue,
            "webhook_event": webhook_event,
            "delivery_id": delivery_id,
        }),
    );
    // The receipt and the event are written together: a redelivery after a failure here is
    // recorded then, never dropped as a duplicate of an event that was not written.
    let first = match delivery_id {
        // Per connection: one Jira delivery id never hides another user's webhook delivery.
        Some(id) => {
            let receipt = format!("{}:{id}", connection.id);
            store
                .record_event_once(ID, &receipt, Utc::now(), &event)
                .await
        }
        None => store.record_event(&event).await.map(|()| true),
    }
    .map_err(|e| ApiError::database(&e))?;
    if !first {
        tracing::debug!(connection_id = %connection.id, "jira webhook redelivery ignored");
    }
    Ok(StatusCode::OK)
}

/// The OpenAPI description of the delivery route.
#[derive(utoipa::OpenApi)]
#[openapi(paths(deliver), components(schemas(grantry_core::ErrorBody)))]
pub(crate) struct JiraWebhooksApi;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_drop_the_jira_prefix() {
        assert_eq!(
            event_type("jira:issue_updated").as_deref(),
            Some("atlassian.jira.issue_updated")
        );
        assert_eq!(
            event_type("comment_created").as_deref(),
            Some("atlassian.jira.comment_created")
        );
        assert_eq!(event_type("jira:"), None);
        assert_eq!(event_type("Issue Updated"), None);
        assert_eq!(event_type(&"a".repeat(65)), None);
    }

    #[test]
    fn expiration_dates_are_read_in_every_documented_form() {
        let at = DateTime::parse_from_rfc3339("2019-06-01T12:42:30Z")
            .expect("date")
            .with_timezone(&Utc);
        assert_eq!(expiration(&json!(at.timestamp_millis())), Some(at));
        assert_eq!(expiration(&json!(at.timestamp())), Some(at));
        assert_eq!(expiration(&json!("2019-06-01T12:42:30.000+0000")), Some(at));
        assert_eq!(expiration(&json!("2019-06-01T12:42:30Z")), Some(at));
        assert_eq!(expiration(&json!("soon")), None);
        assert_eq!(expiration(&Value::Null), None);
    }

    #[test]
    fn path_secrets_are_random_base64url_and_never_print() {
        let a = PathSecret::generate();
        let b = PathSecret::generate();
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.expose().len(), 43);
        assert!(
            a.expose()
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert!(!format!("{a:?}").contains(a.expose()));
        assert_eq!(secret_hash("abc").len(), 64);
        assert_eq!(
            secret_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn only_sites_with_a_jira_scope_get_a_webhook() {
        let site = |scopes: &[&str]| Resource {
            id: "s".into(),
            name: "S".into(),
            url: None,
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            avatar_url: None,
        };
        assert!(reaches_jira(&site(&["read:jira-work"])));
        assert!(reaches_jira(&site(&["read:issue:jira"])));
        assert!(!reaches_jira(&site(&["read:confluence-content.all"])));
        assert!(!reaches_jira(&site(&[])));
    }
}
