//! Atlassian's personal data reporting cycle for OAuth 2.0 (3LO) apps.
//!
//! grantry stores each connection's Atlassian account id, name and email, so Atlassian requires
//! it to report those accounts regularly. Each maintenance pass (`maintain`), when a cycle is
//! due:
//!
//! - the stored connections are read in keyset pages of [`MAX_BATCH`] (account id, connection,
//!   and when the name and email were last read: never the tokens, the name or the email), and
//!   each page is reported to `POST {ATLASSIAN_API_URL}/app/report-accounts/` as
//!   `{"accounts":[{"accountId":…,"updatedAt":…}]}`, with the access token of one of the stored
//!   connections (Atlassian takes the token of any user connected to the app);
//! - `closed` in the answer: every connection of that account is deleted with its personal
//!   fields (a `connection.deleted` event with reason `account_closed`), logged by connection id
//!   and counted in `grantry_accounts_closed_total{provider="atlassian"}`;
//! - `updated`: the name and email of that account's connections are read again from `/me` now
//!   (an active connection's fresh token); should that fail, the stored read time stays old and
//!   the next cycle reports it again, so Atlassian answers `updated` again;
//! - the `Cycle-Period` of the answers (seconds; [`DEFAULT_CYCLE_PERIOD`] when absent) sets
//!   when the next cycle is due; a `429` stops the cycle until its `Retry-After` has passed;
//!   another failure (5xx, timeout, malformed answer) is logged and the cycle goes on at the
//!   next pass from the page that failed.
//!
//! When the next cycle is due, and where a cycle stopped, is kept in the database (the
//! provider's state), so every replica and a restart see it.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, SecondsFormat, Utc};
use grantry_core::events::DeleteReason;
use grantry_core::store::{ConnectionStatus, StoredAccount};
use grantry_core::{AccessToken, ProviderContext};
use grantry_protocol::http::{read_capped, retry_after, send_error};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, HeaderMap};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{Atlassian, ID};

/// The most accounts one report carries (Atlassian's limit).
pub const MAX_BATCH: u32 = 90;
/// The wait before the next cycle when Atlassian's answer has no `Cycle-Period`.
pub const DEFAULT_CYCLE_PERIOD: chrono::Duration = chrono::Duration::days(7);
/// The wait after a `429` without a usable `Retry-After`.
pub const DEFAULT_RETRY_AFTER: chrono::Duration = chrono::Duration::minutes(10);
/// The longest wait taken from a `Cycle-Period` or `Retry-After` (a larger value is capped).
const MAX_WAIT: chrono::Duration = chrono::Duration::days(30);
/// The name of the provider state that holds the cycle.
const STATE: &str = "personal_data_report";
/// Connections of a page whose fresh token is tried for a report.
const MAX_TOKEN_ATTEMPTS: usize = 3;
/// Reports sent by one maintenance pass at most (1,800 accounts); the cycle goes on at the next
/// pass, so a pass stays short whatever the number of connections.
const MAX_REPORTS_PER_PASS: usize = 20;
/// What the report call is called in errors.
const WHAT: &str = "personal data report";

/// The reporting cycle, as stored.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Cycle {
    /// No report before this time (the next cycle, or the end of a `Retry-After`).
    #[serde(default)]
    not_before: Option<DateTime<Utc>>,
    /// The cycle in progress goes on after this user id; a new cycle starts when `None`.
    #[serde(default)]
    after: Option<String>,
    /// The `Cycle-Period` Atlassian gave in this cycle, in seconds (kept across passes).
    #[serde(default)]
    period_secs: Option<i64>,
}

/// Atlassian's answer to one report.
enum Reply {
    /// `200`/`204`: the statuses of the reported accounts, and the `Cycle-Period`.
    Statuses {
        statuses: Vec<ReplyEntry>,
        period: Option<chrono::Duration>,
    },
    /// `401`: the token was refused.
    Unauthorized,
    /// `429`: wait this long.
    RateLimited(chrono::Duration),
}

#[derive(Deserialize)]
struct ReplyBody {
    #[serde(default)]
    accounts: Vec<ReplyEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReplyEntry {
    account_id: String,
    status: String,
}

/// What one pass did, for its log line.
#[derive(Debug, Default)]
struct Counts {
    reported: u64,
    closed: u64,
    updated: u64,
    failed: u64,
}

/// The time format of `updatedAt`: `2024-06-20T10:15:30.000Z`.
fn stamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A wait of `seconds` from a header, capped at [`MAX_WAIT`].
fn wait_of(seconds: u64) -> chrono::Duration {
    i64::try_from(seconds)
        .ok()
        .and_then(chrono::Duration::try_seconds)
        .map_or(MAX_WAIT, |wait| wait.min(MAX_WAIT))
}

/// The `Cycle-Period` of an answer, when it carries a usable one.
fn cycle_period(headers: &HeaderMap) -> Option<chrono::Duration> {
    let value = headers.get("cycle-period")?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(wait_of)
}

/// The accounts of one page, each once, with the connections that hold it; an account held by
/// several connections is reported with its oldest read.
fn batch_of(page: &[StoredAccount]) -> BTreeMap<&str, Vec<&StoredAccount>> {
    let mut batch: BTreeMap<&str, Vec<&StoredAccount>> = BTreeMap::new();
    for account in page {
        batch.entry(&account.account_id).or_default().push(account);
    }
    batch
}

/// The body of a report of `batch`.
fn report_body(batch: &BTreeMap<&str, Vec<&StoredAccount>>) -> serde_json::Value {
    let accounts: Vec<serde_json::Value> = batch
        .iter()
        .filter_map(|(id, held)| {
            let read_at = held.iter().map(|a| a.read_at).min()?;
            Some(json!({ "accountId": id, "updatedAt": stamp(read_at) }))
        })
        .collect();
    json!({ "accounts": accounts })
}

/// Sends one report; `Err` for a failure to retry at the next pass (never holding the token).
async fn post_report(
    atlassian: &Atlassian,
    token: &AccessToken,
    body: &serde_json::Value,
) -> Result<Reply, String> {
    let mut url = atlassian.config().api_url.clone();
    url.set_path("/app/report-accounts/");
    let response = atlassian
        .http()
        .post(url)
        .bearer_auth(token.secret())
        .header(ACCEPT, "application/json")
        .headers(grantry_core::telemetry::trace_headers())
        .json(body)
        .send()
        .await
        .map_err(|e| send_error(WHAT, &e).to_string())?;
    let status = response.status();
    let period = cycle_period(response.headers());
    let wait = retry_after(response.headers());
    let body = read_capped(response, WHAT)
        .await
        .map_err(|e| e.to_string())?;
    match status {
        StatusCode::NO_CONTENT => Ok(Reply::Statuses {
            statuses: Vec::new(),
            period,
        }),
        StatusCode::OK => {
            let reply: ReplyBody = serde_json::from_slice(&body)
                .map_err(|_| format!("{WHAT} answered a malformed body"))?;
            Ok(Reply::Statuses {
                statuses: reply.accounts,
                period,
            })
        }
        StatusCode::UNAUTHORIZED => Ok(Reply::Unauthorized),
        StatusCode::TOO_MANY_REQUESTS => Ok(Reply::RateLimited(
            wait.map_or(DEFAULT_RETRY_AFTER, wait_of),
        )),
        other => Err(format!("{WHAT} answered {}", other.as_u16())),
    }
}

/// The token reports are sent with: a fresh access token of one of the stored connections, kept
/// from batch to batch, replaced when Atlassian refuses it.
#[derive(Default)]
struct ReportToken {
    /// The connection the token belongs to, and the token.
    current: Option<(String, AccessToken)>,
    /// Connections whose token was refused, or gave none, during this pass.
    tried: HashSet<String>,
}

impl ReportToken {
    /// The token to send: the current one, else a fresh token of an active connection of
    /// `page` or of the first page (at most [`MAX_TOKEN_ATTEMPTS`] new connections tried).
    async fn get(
        &mut self,
        context: &ProviderContext,
        page: &[StoredAccount],
    ) -> Option<&AccessToken> {
        if self.current.is_none() {
            self.current = self.find(context, page).await;
            if self.current.is_none()
                && let Ok(first) = context.store().accounts_page(ID, None, MAX_BATCH).await
            {
                self.current = self.find(context, &first).await;
            }
        }
        self.current.as_ref().map(|(_, token)| token)
    }

    async fn find(
        &mut self,
        context: &ProviderContext,
        page: &[StoredAccount],
    ) -> Option<(String, AccessToken)> {
        let candidates: Vec<&StoredAccount> = page
            .iter()
            .filter(|a| {
                a.status == ConnectionStatus::Active && !self.tried.contains(&a.connection_id)
            })
            .take(MAX_TOKEN_ATTEMPTS)
            .collect();
        for account in candidates {
            self.tried.insert(account.connection_id.clone());
            match context.fresh_token(&account.user_id).await {
                Ok(access) if access.connection_id == account.connection_id => {
                    return Some((account.connection_id.clone(), access.access_token));
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(connection_id = %account.connection_id, error = %e, "no usable token for the personal data report");
                }
            }
        }
        None
    }

    /// Atlassian refused the current token: the next report takes another connection's.
    fn refused(&mut self) {
        self.current = None;
    }

    /// The connection `connection_id` was deleted: its token is not used again.
    fn forget(&mut self, connection_id: &str) {
        if self
            .current
            .as_ref()
            .is_some_and(|(id, _)| id == connection_id)
        {
            self.current = None;
        }
    }
}

/// Reads the name and email of `account`'s connection again from `/me` and stores them.
async fn reread(
    atlassian: &Atlassian,
    context: &ProviderContext,
    account: &StoredAccount,
) -> Result<(), String> {
    let access = context
        .fresh_token(&account.user_id)
        .await
        .map_err(|e| e.to_string())?;
    if access.connection_id != account.connection_id {
        return Err("the connection was replaced meanwhile".into());
    }
    let (url, fields) = (atlassian.me_url(), crate::account_fields());
    let read = grantry_protocol::account::read_account(
        atlassian.http(),
        &url,
        &access.access_token,
        &fields,
    );
    let (fresh, _) = context
        .telemetry()
        .upstream(ID, "account", read)
        .await
        .map_err(|e| e.to_string())?;
    if fresh.id != account.account_id {
        return Err("the token answers for another account".into());
    }
    let written = context
        .store()
        .update_account(&account.connection_id, &fresh, Utc::now())
        .await
        .map_err(|e| e.to_string())?;
    if written {
        Ok(())
    } else {
        Err("the connection is gone or holds another account".into())
    }
}

/// Acts on Atlassian's statuses of the accounts of `batch` (an account it was not sent is
/// ignored): closed accounts' connections deleted, updated ones' name and email read again.
async fn apply(
    atlassian: &Atlassian,
    context: &ProviderContext,
    batch: &BTreeMap<&str, Vec<&StoredAccount>>,
    statuses: &[ReplyEntry],
    token: &mut ReportToken,
    counts: &mut Counts,
) {
    let store = context.store();
    let mut closed = 0u64;
    for entry in statuses {
        let Some(held) = batch.get(entry.account_id.as_str()) else {
            continue;
        };
        match entry.status.as_str() {
            "closed" => {
                for account in held {
                    match store
                        .delete_account_connection(
                            &account.connection_id,
                            &account.account_id,
                            DeleteReason::AccountClosed,
                        )
                        .await
                    {
                        Ok(true) => {
                            closed += 1;
                            token.forget(&account.connection_id);
                            tracing::info!(connection_id = %account.connection_id, "connection deleted: Atlassian reported its account closed");
                        }
                        Ok(false) => {}
                        Err(e) => {
                            counts.failed += 1;
                            tracing::warn!(connection_id = %account.connection_id, error = %e, "cannot delete the connection of a closed Atlassian account; it is reported again next cycle");
                        }
                    }
                }
            }
            "updated" => {
                for account in held {
                    if account.status != ConnectionStatus::Active {
                        continue;
                    }
                    match reread(atlassian, context, account).await {
                        Ok(()) => counts.updated += 1,
                        Err(e) => {
                            counts.failed += 1;
                            tracing::debug!(connection_id = %account.connection_id, error = %e, "cannot read the updated Atlassian account again; it is reported again next cycle");
                        }
                    }
                }
            }
            _ => {}
        }
    }
    if closed > 0 {
        context.telemetry().count_accounts_closed(ID, closed);
    }
    counts.closed += closed;
}

/// Stores the cycle; whether it could.
async fn save(context: &ProviderContext, cycle: &Cycle) -> bool {
    let value = match serde_json::to_string(cycle) {
        Ok(value) => value,
        Err(e) => {
            tracing::warn!(error = %e, "cannot encode the personal data report cycle");
            return false;
        }
    };
    match context
        .store()
        .put_provider_state(ID, STATE, &value, Utc::now())
        .await
    {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "cannot store the personal data report cycle");
            false
        }
    }
}

/// Each maintenance pass: the personal data report cycle, when due at `now` (see the module).
pub(crate) async fn maintain(atlassian: &Atlassian, context: &ProviderContext, now: DateTime<Utc>) {
    let store = context.store();
    let mut cycle = match store.provider_state(ID, STATE).await {
        Ok(None) => Cycle::default(),
        Ok(Some(text)) => serde_json::from_str(&text).unwrap_or_else(|_| {
            tracing::warn!(
                "the stored personal data report cycle is unreadable; a new cycle starts"
            );
            Cycle::default()
        }),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read when personal data is next reported; not reported this pass");
            return;
        }
    };
    if cycle.not_before.is_some_and(|at| at > now) {
        tracing::debug!("the next personal data report cycle is not due yet");
        return;
    }
    let mut counts = Counts::default();
    let mut token = ReportToken::default();
    let mut period: Option<chrono::Duration> = cycle.period_secs.map(chrono::Duration::seconds);
    let mut sent_reports = 0;
    loop {
        if sent_reports == MAX_REPORTS_PER_PASS {
            tracing::debug!("personal data report cycle goes on at the next pass");
            break;
        }
        let page = match store
            .accounts_page(ID, cycle.after.as_deref(), MAX_BATCH)
            .await
        {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the accounts to report; the cycle goes on at the next pass");
                break;
            }
        };
        if page.is_empty() && cycle.after.is_none() {
            // Nothing stored, nothing to report: looked at again next pass.
            return;
        }
        if !page.is_empty() {
            let batch = batch_of(&page);
            let body = report_body(&batch);
            let mut answer = None;
            // A refused token (its account closed, the app revoked) is replaced, a few times.
            for _ in 0..MAX_TOKEN_ATTEMPTS {
                let Some(current) = token.get(context, &page).await else {
                    break;
                };
                let sent = context
                    .telemetry()
                    .upstream_with(
                        ID,
                        "report_accounts",
                        post_report(atlassian, current, &body),
                        |r| match r {
                            Ok(Reply::Statuses { .. }) => "ok",
                            Ok(Reply::Unauthorized) => "rejected",
                            Ok(Reply::RateLimited(_)) | Err(_) => "transient",
                        },
                    )
                    .await;
                match sent {
                    Ok(Reply::Unauthorized) => token.refused(),
                    other => {
                        answer = Some(other);
                        break;
                    }
                }
            }
            match answer {
                None => {
                    tracing::warn!(
                        "no stored Atlassian connection gives a token Atlassian accepts; personal data not reported this pass"
                    );
                    break;
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "personal data report failed; the cycle goes on at the next pass");
                    break;
                }
                Some(Ok(Reply::RateLimited(wait))) => {
                    cycle.not_before = Some(now + wait);
                    save(context, &cycle).await;
                    tracing::info!(
                        retry_after_secs = wait.num_seconds(),
                        "personal data report rate limited; the cycle goes on after Retry-After"
                    );
                    break;
                }
                Some(Ok(Reply::Unauthorized)) => break,
                Some(Ok(Reply::Statuses {
                    statuses,
                    period: answered,
                })) => {
                    counts.reported += batch.len() as u64;
                    sent_reports += 1;
                    period = answered.or(period);
                    cycle.period_secs = period.map(|p| p.num_seconds());
                    apply(
                        atlassian,
                        context,
                        &batch,
                        &statuses,
                        &mut token,
                        &mut counts,
                    )
                    .await;
                }
            }
        }
        if page.len() < MAX_BATCH as usize {
            let wait = period.unwrap_or(DEFAULT_CYCLE_PERIOD);
            cycle = Cycle {
                not_before: Some(now + wait),
                after: None,
                period_secs: None,
            };
            save(context, &cycle).await;
            tracing::info!(
                next_cycle_in_secs = wait.num_seconds(),
                "personal data report cycle complete"
            );
            break;
        }
        cycle.after = page.last().map(|a| a.user_id.clone());
        // The cycle's progress is kept: a restart goes on from here, never from the start.
        if !save(context, &cycle).await {
            break;
        }
    }
    if counts.reported > 0 || counts.failed > 0 {
        tracing::info!(
            reported = counts.reported,
            closed = counts.closed,
            updated = counts.updated,
            failed = counts.failed,
            "Atlassian personal data report"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(user: &str, account: &str, read_at: &str) -> StoredAccount {
        StoredAccount {
            connection_id: format!("c-{user}"),
            user_id: user.into(),
            account_id: account.into(),
            status: ConnectionStatus::Active,
            read_at: DateTime::parse_from_rfc3339(read_at)
                .expect("date")
                .with_timezone(&Utc),
        }
    }

    #[test]
    fn an_account_is_reported_once_with_its_oldest_read_in_milliseconds() {
        let page = [
            account("u1", "a", "2024-06-20T10:15:30.123456Z"),
            account("u2", "b", "2024-06-21T00:00:00Z"),
            account("u3", "a", "2024-06-19T00:00:00Z"),
        ];
        let batch = batch_of(&page);
        assert_eq!(batch.len(), 2);
        assert_eq!(batch["a"].len(), 2);
        assert_eq!(
            report_body(&batch),
            json!({"accounts": [
                {"accountId": "a", "updatedAt": "2024-06-19T00:00:00.000Z"},
                {"accountId": "b", "updatedAt": "2024-06-21T00:00:00.000Z"},
            ]})
        );
        assert_eq!(
            stamp(page[0].read_at),
            "2024-06-20T10:15:30.123Z".to_owned()
        );
    }

    #[test]
    fn cycle_periods_are_read_and_capped() {
        let mut headers = HeaderMap::new();
        assert_eq!(cycle_period(&headers), None);
        headers.insert("cycle-period", " 604800 ".parse().expect("header"));
        assert_eq!(cycle_period(&headers), Some(chrono::Duration::days(7)));
        headers.insert("cycle-period", "u64::MAX".parse().expect("header"));
        assert_eq!(cycle_period(&headers), None);
        headers.insert(
            "cycle-period",
            u64::MAX.to_string().parse().expect("header"),
        );
        assert_eq!(cycle_period(&headers), Some(MAX_WAIT));
        headers.insert("cycle-period", "-5".parse().expect("header"));
        assert_eq!(cycle_period(&headers), None);
    }

    #[test]
    fn the_stored_cycle_reads_back_and_tolerates_missing_fields() {
        let cycle = Cycle {
            not_before: Some(Utc::now()),
            after: Some("user-9".into()),
            period_secs: Some(3600),
        };
        let text = serde_json::to_string(&cycle).expect("json");
        assert_eq!(serde_json::from_str::<Cycle>(&text).expect("cycle"), cycle);
        assert_eq!(
            serde_json::from_str::<Cycle>("{}").expect("cycle"),
            Cycle::default()
        );
    }
}
