//! Atlassian's personal data reporting API for OAuth 2.0 apps (`POST /app/report-accounts/`),
//! and the accounts that consent on the fake.
//!
//! What the fake holds callers to, as Atlassian does:
//! - The bearer must be a live access token of any grant (401 otherwise).
//! - The body is `{"accounts":[{"accountId":"…","updatedAt":"…"}]}` with 1 to
//!   [`MAX_REPORTED_ACCOUNTS`] entries and RFC 3339 `updatedAt` dates; anything else answers 400.
//! - The answer is `200` with `{"accounts":[{"accountId":"…","status":"closed"|"updated"}]}` for
//!   the reported accounts that have something to say, `204` when none has, both with a
//!   `Cycle-Period` header (seconds, [`DEFAULT_CYCLE_PERIOD`] unless a test sets another).
//!   `closed` is answered for an account a test closed; `updated` for an account whose profile
//!   changed after the `updatedAt` it was reported with.
//! - A test can make it answer `429` with a `Retry-After` ([`FakeAtlassian::rate_limit_reports`]).
//!
//! Every report received (answered or refused) is recorded ([`FakeAtlassian::account_reports`]).
//!
//! Accounts: each grant belongs to the account that consented; that is the configured user
//! unless a test set another ([`FakeAtlassian::set_consenting_user`]). `/me` answers the
//! account's current profile, which a test can change ([`FakeAtlassian::update_account`]).

use std::collections::HashMap;
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{FakeAtlassian, FakeUser, bearer, unauthorized};

/// The most accounts one report may carry.
pub const MAX_REPORTED_ACCOUNTS: usize = 90;
/// The `Cycle-Period` answered unless a test sets another: 7 days, in seconds.
pub const DEFAULT_CYCLE_PERIOD: u64 = 7 * 24 * 60 * 60;

/// A hostile answer to reports, for tests ([`FakeAtlassian::break_reports`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFailure {
    /// `500` with a text body.
    ServerError,
    /// `200` with a body that is not JSON.
    NotJson,
    /// `200` with a JSON body of several MiB.
    Huge,
}

/// One report the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountReport {
    /// The status the fake answered (200, 204, 400, 401 or 429).
    pub status: u16,
    /// The accounts reported (empty when the body was unreadable).
    pub accounts: Vec<ReportedAccount>,
}

/// One entry of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportedAccount {
    /// The account id.
    pub account_id: String,
    /// The `updatedAt` as sent.
    pub updated_at: String,
}

/// What the fake knows of accounts and their reports.
#[derive(Debug)]
pub(crate) struct PersonalDataState {
    /// Who consents from now on; the configured user when `None`.
    consenting: Option<FakeUser>,
    /// The current profile of every account that consented or was updated, by account id.
    profiles: HashMap<String, FakeUser>,
    /// When each account's profile last changed (an account reported as read before is `updated`).
    changed_at: HashMap<String, SystemTime>,
    /// The accounts a test closed.
    closed: Vec<String>,
    /// The `Cycle-Period` answered, in seconds.
    cycle_period: u64,
    /// When set, reports are answered 429 with this `Retry-After` (seconds).
    rate_limited: Option<u64>,
    /// When set, reports are answered this hostile way.
    failure: Option<ReportFailure>,
    /// Every report received, oldest first.
    reports: Vec<AccountReport>,
}

impl Default for PersonalDataState {
    fn default() -> Self {
        Self {
            consenting: None,
            profiles: HashMap::new(),
            changed_at: HashMap::new(),
            closed: Vec::new(),
            cycle_period: DEFAULT_CYCLE_PERIOD,
            rate_limited: None,
            failure: None,
            reports: Vec::new(),
        }
    }
}

impl PersonalDataState {
    /// The account id of a new grant (the consenting account), its profile remembered.
    pub(crate) fn consent(&mut self, configured: &FakeUser) -> String {
        let user = self
            .consenting
            .clone()
            .unwrap_or_else(|| configured.clone());
        let id = user.account_id.clone();
        self.profiles.entry(id.clone()).or_insert(user);
        id
    }

    /// The current profile of `account_id`, the configured user's when it is that account.
    pub(crate) fn profile(&self, account_id: &str, configured: &FakeUser) -> FakeUser {
        self.profiles
            .get(account_id)
            .cloned()
            .unwrap_or_else(|| configured.clone())
    }
}

impl FakeAtlassian {
    /// Grants consented from now on belong to `user` (its id, name and email answer `/me`).
    pub fn set_consenting_user(&self, user: FakeUser) {
        let mut inner = self.lock();
        let data = &mut inner.personal_data;
        data.profiles.insert(user.account_id.clone(), user.clone());
        data.consenting = Some(user);
    }

    /// Changes the profile of `user.account_id`: `/me` answers it from now on, and a report
    /// with an `updatedAt` before now (real time, the time grantry stamps its reads with) gets
    /// `updated` for it.
    pub fn update_account(&self, user: FakeUser) {
        let now = SystemTime::now();
        let mut inner = self.lock();
        let data = &mut inner.personal_data;
        data.changed_at.insert(user.account_id.clone(), now);
        data.profiles.insert(user.account_id.clone(), user);
    }

    /// Sets what reports are answered for `account_id`: `closed` closes the account (every
    /// later report gets `closed` for it); `updated` marks its profile changed now; anything
    /// else (`active`) reopens it and forgets the change.
    pub fn set_account_status(&self, account_id: &str, status: &str) {
        let now = SystemTime::now();
        let mut inner = self.lock();
        let data = &mut inner.personal_data;
        data.closed.retain(|id| id != account_id);
        data.changed_at.remove(account_id);
        match status {
            "closed" => data.closed.push(account_id.to_owned()),
            "updated" => {
                data.changed_at.insert(account_id.to_owned(), now);
            }
            _ => {}
        }
    }

    /// Sets the `Cycle-Period` (seconds) the answers carry.
    pub fn set_report_cycle_period(&self, seconds: u64) {
        self.lock().personal_data.cycle_period = seconds;
    }

    /// Answers reports 429 with `Retry-After: seconds` while `Some`; normally again with `None`.
    pub fn rate_limit_reports(&self, retry_after: Option<u64>) {
        self.lock().personal_data.rate_limited = retry_after;
    }

    /// Answers reports with `failure` while `Some` (after checking the token); normally again
    /// with `None`.
    pub fn break_reports(&self, failure: Option<ReportFailure>) {
        self.lock().personal_data.failure = failure;
    }

    /// Every report received, oldest first.
    pub fn account_reports(&self) -> Vec<AccountReport> {
        self.lock().personal_data.reports.clone()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ReportBody {
    accounts: Vec<ReportEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ReportEntry {
    account_id: String,
    updated_at: String,
}

fn bad_request(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({ "code": 400, "message": message })),
    )
        .into_response()
}

/// `POST /app/report-accounts/`: the statuses of the reported accounts (see the module).
pub(crate) async fn report_accounts(
    State(fake): State<FakeAtlassian>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed: Option<ReportBody> = serde_json::from_slice(&body).ok();
    let accounts: Vec<ReportedAccount> = parsed
        .as_ref()
        .map(|b| {
            b.accounts
                .iter()
                .map(|a| ReportedAccount {
                    account_id: a.account_id.clone(),
                    updated_at: a.updated_at.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    let mut inner = fake.lock();
    let authorised = bearer(&headers).is_some_and(|token| inner.access_token_is_valid(token));
    let data = &inner.personal_data;
    let (status, response) = if !authorised {
        (StatusCode::UNAUTHORIZED, unauthorized())
    } else if let Some(seconds) = data.rate_limited {
        let response = (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, HeaderValue::from(seconds))],
            axum::Json(json!({ "code": 429, "message": "Too many requests" })),
        )
            .into_response();
        (StatusCode::TOO_MANY_REQUESTS, response)
    } else if let Some(failure) = data.failure {
        let response = match failure {
            ReportFailure::ServerError => {
                (StatusCode::INTERNAL_SERVER_ERROR, "upstream exploded").into_response()
            }
            ReportFailure::NotJson => (StatusCode::OK, "<html>oops</html>").into_response(),
            ReportFailure::Huge => {
                let entry = json!({ "accountId": "x".repeat(64), "status": "closed" });
                let accounts = vec![entry; 60_000];
                (StatusCode::OK, axum::Json(json!({ "accounts": accounts }))).into_response()
            }
        };
        (response.status(), response)
    } else if parsed.is_none() {
        (
            StatusCode::BAD_REQUEST,
            bad_request("the body is not a list of accounts"),
        )
    } else if accounts.is_empty() || accounts.len() > MAX_REPORTED_ACCOUNTS {
        (
            StatusCode::BAD_REQUEST,
            bad_request("a report holds 1 to 90 accounts"),
        )
    } else {
        let mut answered = Vec::new();
        let mut unreadable = false;
        for account in &accounts {
            let Ok(updated_at) = chrono::DateTime::parse_from_rfc3339(&account.updated_at) else {
                unreadable = true;
                break;
            };
            let read_at = SystemTime::from(updated_at);
            let status = if data.closed.contains(&account.account_id) {
                Some("closed")
            } else if data
                .changed_at
                .get(&account.account_id)
                .is_some_and(|changed| *changed > read_at)
            {
                Some("updated")
            } else {
                None
            };
            if let Some(status) = status {
                answered.push(json!({ "accountId": account.account_id, "status": status }));
            }
        }
        let period = [("cycle-period", HeaderValue::from(data.cycle_period))];
        if unreadable {
            (
                StatusCode::BAD_REQUEST,
                bad_request("updatedAt must be an RFC 3339 date"),
            )
        } else if answered.is_empty() {
            (
                StatusCode::NO_CONTENT,
                (StatusCode::NO_CONTENT, period).into_response(),
            )
        } else {
            let response = (
                StatusCode::OK,
                period,
                axum::Json(json!({ "accounts": answered })),
            )
                .into_response();
            (StatusCode::OK, response)
        }
    };
    inner.personal_data.reports.push(AccountReport {
        status: status.as_u16(),
        accounts,
    });
    response
}
