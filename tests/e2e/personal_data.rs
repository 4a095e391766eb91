//! Atlassian's personal data reporting end to end, over HTTP against the fake Atlassian: the
//! stored accounts reported in batches of at most 90 with a live access token, a closed
//! account's connection deleted with its personal fields (`connection.deleted`, reason
//! `account_closed`, counted in `/metrics`), an updated account's name read again, no report
//! before the cycle period, and a 429's `Retry-After` honoured.

use chrono::{DateTime, Duration, Utc};
use grantry::core::refresh::RefreshSettings;
use grantry::core::store::TokenStore;
use grantry_atlassian_fake::{AccountReport, FakeUser, ReportFailure};
use grantry_server::testing::TestDatabase;
use serde_json::Value;

use crate::harness::{Harness, fake_config};

const STATUS: &str = "/api/v1/atlassian/connection/status";

fn user(account_id: &str, name: &str, email: &str) -> FakeUser {
    FakeUser {
        account_id: account_id.into(),
        name: name.into(),
        email: email.into(),
    }
}

/// A harness whose store records events (left in the outbox: nothing delivers them).
async fn start(db: &TestDatabase) -> Harness {
    Harness::start_recording(
        db,
        fake_config(),
        true,
        RefreshSettings::default(),
        vec!["http://127.0.0.1:9/events".into()],
    )
    .await
}

/// Runs the Atlassian provider's maintenance as a pass at `now` would.
async fn maintain(h: &Harness, now: DateTime<Utc>) {
    let provider = h
        .state
        .providers()
        .iter()
        .find(|p| p.id() == "atlassian")
        .expect("atlassian");
    provider
        .maintain(&h.state.provider_context(provider), now)
        .await;
}

fn reports(h: &Harness) -> Vec<AccountReport> {
    h.fake.fake.account_reports()
}

/// The connections (any user) that still hold any of these personal fields.
async fn rows_holding(h: &Harness, account_id: &str, name: &str, email: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM connections WHERE account_id = $1 OR account_name = $2 OR account_email = $3",
    )
    .bind(account_id.to_owned())
    .bind(name.to_owned())
    .bind(email.to_owned())
    .fetch_one(h.store.pool())
    .await
    .expect("count")
}

/// The bodies of the recorded events of `kind`.
async fn events(h: &Harness, kind: &str) -> Vec<Value> {
    sqlx::query_scalar::<_, String>("SELECT body FROM events WHERE type = $1")
        .bind(kind.to_owned())
        .fetch_all(h.store.pool())
        .await
        .expect("events")
        .iter()
        .map(|body| serde_json::from_str(body).expect("json"))
        .collect()
}

async fn metrics(h: &Harness) -> String {
    h.http
        .get(h.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

#[tokio::test]
async fn a_closed_account_is_deleted_and_an_updated_one_read_again() {
    for db in TestDatabase::all().await {
        let h = start(&db).await;
        let fake = &h.fake.fake;
        fake.set_consenting_user(user("acc-alice", "Alice Liddell", "alice@example.com"));
        let alice = h.connect("alice").await;
        assert_eq!(alice["account"]["name"], "Alice Liddell");
        fake.set_consenting_user(user("acc-bob", "Bob Cratchit", "bob@example.com"));
        let bob = h.connect("bob").await;
        assert_eq!(bob["account"]["id"], "acc-bob");
        assert_eq!(bob["account"]["name"], "Bob Cratchit");
        let alice_connection = alice["connection_id"].as_str().expect("id").to_owned();

        fake.set_account_status("acc-alice", "closed");
        fake.update_account(user("acc-bob", "Robert Cratchit", "robert@example.com"));
        let started = Utc::now();
        maintain(&h, started).await;

        let got = reports(&h);
        assert_eq!(got.len(), 1, "{db:?}: {got:?}");
        assert_eq!(got[0].status, 200);
        let mut ids: Vec<&str> = got[0]
            .accounts
            .iter()
            .map(|a| a.account_id.as_str())
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, ["acc-alice", "acc-bob"]);
        for account in &got[0].accounts {
            let at = DateTime::parse_from_rfc3339(&account.updated_at).expect("updatedAt");
            assert!(at <= started, "{account:?}");
            assert!(
                account.updated_at.ends_with('Z') && account.updated_at.len() == 24,
                "{account:?}"
            );
        }

        // alice: gone, with every personal field, and the deletion says why.
        let (status, body) = h.call("GET", STATUS, Some("alice"), None).await;
        assert_eq!(status, 200);
        assert_eq!(body["connected"], false, "{body}");
        assert!(
            h.store
                .connection("alice", "atlassian")
                .await
                .expect("db")
                .is_none()
        );
        assert_eq!(
            rows_holding(&h, "acc-alice", "Alice Liddell", "alice@example.com").await,
            0
        );
        let deleted = events(&h, "connection.deleted").await;
        assert_eq!(deleted.len(), 1, "{deleted:?}");
        assert_eq!(deleted[0]["data"]["reason"], "account_closed");
        assert_eq!(deleted[0]["data"]["user_id"], "alice");
        assert_eq!(
            deleted[0]["data"]["connection_id"],
            alice_connection.as_str()
        );
        let text = metrics(&h).await;
        assert!(
            text.contains("grantry_accounts_closed_total{provider=\"atlassian\"} 1"),
            "{text}"
        );

        // bob: still connected, under the name and email Atlassian has now.
        let (status, body) = h.call("GET", STATUS, Some("bob"), None).await;
        assert_eq!(status, 200);
        assert_eq!(body["connected"], true, "{body}");
        assert_eq!(body["account"]["name"], "Robert Cratchit", "{body}");
        assert_eq!(body["account"]["email"], "robert@example.com", "{body}");
        assert_eq!(
            rows_holding(&h, "none", "Bob Cratchit", "bob@example.com").await,
            0
        );

        // No second report within the cycle period (the fake's default, 7 days).
        maintain(&h, started + Duration::hours(1)).await;
        maintain(&h, started + Duration::days(6)).await;
        assert_eq!(reports(&h).len(), 1);

        // The next cycle reports bob with his new read: nothing more to do.
        maintain(&h, started + Duration::days(7) + Duration::minutes(1)).await;
        let got = reports(&h);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[1].status, 204);
        assert_eq!(got[1].accounts.len(), 1);
        assert_eq!(got[1].accounts[0].account_id, "acc-bob");
        let reread = DateTime::parse_from_rfc3339(&got[1].accounts[0].updated_at).expect("date");
        assert!(reread >= started - Duration::seconds(1), "{got:?}");
        let (_, body) = h.call("GET", STATUS, Some("bob"), None).await;
        assert_eq!(body["connected"], true, "{body}");
        db.cleanup().await;
    }
}

#[tokio::test]
async fn reports_hold_at_most_ninety_accounts() {
    for db in TestDatabase::all().await {
        let h = start(&db).await;
        h.connect("alice").await;
        let (users, _) = crate::admin_pages::seed(&h, 100).await;
        assert_eq!(users.len(), 100);
        let now = Utc::now();
        maintain(&h, now).await;
        let got = reports(&h);
        assert_eq!(
            got.len(),
            2,
            "{db:?}: {:?}",
            got.iter()
                .map(|r| (r.status, r.accounts.len()))
                .collect::<Vec<_>>()
        );
        assert!(got.iter().all(|r| r.status == 204), "{got:?}");
        assert_eq!(got[0].accounts.len(), 90);
        assert_eq!(got[1].accounts.len(), 11);
        let mut ids: Vec<&str> = got
            .iter()
            .flat_map(|r| r.accounts.iter().map(|a| a.account_id.as_str()))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 101);
        assert!(ids.contains(&"fake-account-1"));
        assert!(ids.contains(&"acc-99"));

        // The cycle is done: not again before the period.
        maintain(&h, now + Duration::hours(1)).await;
        assert_eq!(reports(&h).len(), 2);
        db.cleanup().await;
    }
}

#[tokio::test]
async fn a_rate_limited_report_waits_for_retry_after_and_the_cycle_period_is_honoured() {
    for db in TestDatabase::all().await {
        let h = start(&db).await;
        let fake = &h.fake.fake;
        h.connect("alice").await;
        fake.rate_limit_reports(Some(120));
        let now = Utc::now();
        maintain(&h, now).await;
        let got = reports(&h);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].status, 429);

        // Not before Retry-After, even once Atlassian would answer.
        fake.rate_limit_reports(None);
        maintain(&h, now + Duration::seconds(60)).await;
        assert_eq!(reports(&h).len(), 1);
        fake.set_report_cycle_period(3600);
        maintain(&h, now + Duration::seconds(121)).await;
        let got = reports(&h);
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].status, 204);
        assert_eq!(got[1].accounts[0].account_id, "fake-account-1");

        // The answer's Cycle-Period (one hour here) sets the next cycle.
        maintain(&h, now + Duration::seconds(121 + 1800)).await;
        assert_eq!(reports(&h).len(), 2);
        maintain(&h, now + Duration::seconds(121 + 3601)).await;
        assert_eq!(reports(&h).len(), 3);

        // The schedule is in the database: another replica's pass sees it too.
        let replica = h.replica_state(RefreshSettings::default());
        let provider = replica
            .providers()
            .iter()
            .find(|p| p.id() == "atlassian")
            .expect("atlassian");
        provider
            .maintain(
                &replica.provider_context(provider),
                now + Duration::seconds(121 + 3602),
            )
            .await;
        assert_eq!(reports(&h).len(), 3);
        db.cleanup().await;
    }
}

#[tokio::test]
async fn hostile_answers_change_nothing_and_the_batch_is_reported_again() {
    for db in TestDatabase::all().await {
        let h = start(&db).await;
        let fake = &h.fake.fake;
        h.connect("alice").await;
        fake.set_account_status("fake-account-1", "closed");
        let now = Utc::now();
        let failures = [
            ReportFailure::ServerError,
            ReportFailure::NotJson,
            ReportFailure::Huge,
        ];
        for (i, failure) in failures.into_iter().enumerate() {
            fake.break_reports(Some(failure));
            maintain(&h, now + Duration::minutes(i as i64)).await;
            assert_eq!(reports(&h).len(), i + 1, "{failure:?}");
            let (_, body) = h.call("GET", STATUS, Some("alice"), None).await;
            assert_eq!(body["connected"], true, "{failure:?}: {body}");
        }
        // The failed batch goes out again at the next pass; this time the answer counts.
        fake.break_reports(None);
        maintain(&h, now + Duration::minutes(10)).await;
        let got = reports(&h);
        assert_eq!(got.len(), 4);
        assert_eq!(got[3].status, 200);
        let (_, body) = h.call("GET", STATUS, Some("alice"), None).await;
        assert_eq!(body["connected"], false, "{body}");
        db.cleanup().await;
    }
}
