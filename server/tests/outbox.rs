//! The event outbox, connection subscriptions and receipts of the SQL store, on SQLite and (when
//! configured) PostgreSQL: events written in the transaction of their change, claims that keep
//! workers apart, retries, purges.

use std::time::Duration;

use chrono::{DurationRound, Utc};
use grantry_core::error::StoreError;
use grantry_core::events::{DeleteReason, Event, ReauthReason, StatusChange};
use grantry_core::keyring::SealedValue;
use grantry_core::store::{ConnectionRecord, ConnectionStatus, Subscription, TokenStore};
use grantry_core::{Account, ScopeSet};
use grantry_server::SqlStore;
use grantry_server::outbox::{Attempt, DeliveryStatus, Outbox};
use grantry_server::testing::TestDatabase;
use serde_json::{Value, json};
use sqlx::Row;

fn now() -> chrono::DateTime<Utc> {
    Utc::now()
        .duration_trunc(chrono::Duration::milliseconds(1))
        .expect("truncate")
}

fn record(id: &str, user: &str) -> ConnectionRecord {
    let t = now();
    ConnectionRecord {
        id: id.into(),
        user_id: user.into(),
        provider: "p".into(),
        account: Account {
            id: "acc".into(),
            name: None,
            email: None,
        },
        scopes: ScopeSet::parse("a"),
        status: ConnectionStatus::Active,
        access_token: SealedValue::from_bytes(vec![1, 2, 3]),
        refresh_token: None,
        key_id: "00112233aabbccdd".into(),
        access_expires_at: Some(t + chrono::Duration::hours(1)),
        refresh_idle_expires_at: None,
        refresh_expires_at: None,
        version: 0,
        lease_until: None,
        lease_owner: None,
        last_failure: None,
        connected_at: t,
        updated_at: t,
        last_refreshed_at: None,
        access_issued_at: Some(t),
        resources: Vec::new(),
    }
}

/// Every recorded event body, oldest first.
async fn events(store: &SqlStore) -> Vec<Value> {
    let rows = sqlx::query("SELECT body FROM events ORDER BY created_at, id")
        .fetch_all(store.pool())
        .await
        .expect("events");
    rows.iter()
        .map(|r| serde_json::from_str(&r.get::<String, _>("body")).expect("json"))
        .collect()
}

async fn delivery_count(store: &SqlStore) -> i64 {
    sqlx::query("SELECT COUNT(*) AS n FROM event_deliveries")
        .fetch_one(store.pool())
        .await
        .expect("count")
        .get("n")
}

#[tokio::test]
async fn a_store_without_endpoints_records_no_event() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        store
            .put_connection(&record("c-1", "u-1"))
            .await
            .expect("put");
        store
            .record_event(&Event::new("x", json!({})))
            .await
            .expect("record");
        assert!(events(&store).await.is_empty(), "{}", db.kind);
        db.cleanup().await;
    }
}

#[tokio::test]
async fn each_change_records_its_event_in_the_same_transaction() {
    for db in TestDatabase::all().await {
        let store = db
            .store()
            .await
            .with_event_endpoints(vec!["http://a.test/h".into(), "http://b.test/h".into()]);
        let stored = store
            .put_connection(&record("c-1", "u-1"))
            .await
            .expect("put");
        store
            .put_connection(&record("c-1", "u-1"))
            .await
            .expect("again");
        // Another id for the same user and provider is refused, and writes no event.
        assert!(matches!(
            store.put_connection(&record("c-other", "u-1")).await,
            Err(StoreError::Conflict(_))
        ));
        let current = store
            .connection_by_id("c-1")
            .await
            .expect("read")
            .expect("row");
        assert_eq!(current.version, stored.version + 1);
        let change = StatusChange::NeedsReauth {
            reason: ReauthReason::AbsoluteExpiry,
            failure: "expired",
        };
        assert!(
            !store
                .set_status_at("c-1", current.version - 1, change)
                .await
                .expect("stale"),
            "a stale version writes nothing"
        );
        assert!(
            store
                .set_status_at("c-1", current.version, change)
                .await
                .expect("mark")
        );
        store
            .set_status("c-1", StatusChange::RefreshFailed { failure: "503" })
            .await
            .expect("failed");
        store
            .set_status("gone", StatusChange::RefreshFailed { failure: "503" })
            .await
            .expect("no row");
        assert!(
            store
                .delete_connection("u-1", "p", DeleteReason::Admin)
                .await
                .expect("delete")
        );
        assert!(
            !store
                .delete_connection("u-1", "p", DeleteReason::Admin)
                .await
                .expect("delete again")
        );

        let got = events(&store).await;
        let types: Vec<&str> = got
            .iter()
            .map(|e| e["type"].as_str().expect("type"))
            .collect();
        assert_eq!(
            types,
            [
                "connection.created",
                "connection.reconnected",
                "connection.needs_reauth",
                "connection.refresh_failed",
                "connection.deleted",
            ],
            "{}",
            db.kind
        );
        assert_eq!(got[2]["data"]["reason"], "absolute_expiry");
        assert_eq!(got[2]["data"]["status"], "needs_reauth");
        assert_eq!(got[3]["data"]["status"], "active");
        assert_eq!(got[4]["data"]["reason"], "admin");
        assert_eq!(got[4]["data"]["status"], "deleted");
        assert!(got.iter().all(|e| e["data"]["connection_id"] == "c-1"));
        assert!(got.iter().all(|e| e["data"]["user_id"] == "u-1"));
        assert_eq!(
            delivery_count(&store).await,
            10,
            "one delivery per endpoint"
        );
        db.cleanup().await;
    }
}

#[tokio::test]
async fn claims_keep_workers_apart_and_a_lapsed_claim_is_taken_over() {
    for db in TestDatabase::all().await {
        let store = db
            .store()
            .await
            .with_event_endpoints(vec!["http://a.test/h".into()]);
        for i in 0..40 {
            store
                .record_event(&Event::new("t", json!({ "i": i })))
                .await
                .expect("record");
        }
        let (a, b) = (Outbox::new(store.clone()), Outbox::new(store.clone()));
        let long = Duration::from_secs(60);
        let (first, second) = tokio::join!(a.claim("a", long, 25), b.claim("b", long, 25));
        let (first, second) = (first.expect("a"), second.expect("b"));
        assert!(
            first.len() <= 25 && second.len() <= 25,
            "a claim takes at most its batch"
        );
        assert_eq!(first.len() + second.len(), 40, "{}", db.kind);
        assert!(
            first.iter().all(|d| second.iter().all(|e| e.id != d.id)),
            "no delivery is claimed twice"
        );
        assert!(
            a.claim("c", long, 25).await.expect("c").is_empty(),
            "all are held"
        );

        let one = &first[0];
        assert!(
            a.settle(one.id, "a", Utc::now(), &Attempt::Delivered { status: 204 })
                .await
                .expect("settle")
        );
        assert!(
            !b.settle(one.id, "b", Utc::now(), &Attempt::Delivered { status: 204 })
                .await
                .expect("not b's"),
            "only the claimer settles"
        );

        // A claim that runs out is free again; its old holder can no longer settle it.
        let short_store = db
            .store()
            .await
            .with_event_endpoints(vec!["http://a.test/h".into()]);
        short_store
            .record_event(&Event::new("late", json!({})))
            .await
            .expect("record");
        let short = Outbox::new(short_store);
        let held = short
            .claim("short", Duration::from_millis(1), 1)
            .await
            .expect("claim");
        assert_eq!(held.len(), 1);
        tokio::time::sleep(Duration::from_millis(30)).await;
        let taken = short.claim("next", long, 1).await.expect("take over");
        assert_eq!(taken.len(), 1, "{}", db.kind);
        assert_eq!(taken[0].id, held[0].id);
        assert!(
            !short
                .settle(
                    held[0].id,
                    "short",
                    Utc::now(),
                    &Attempt::Delivered { status: 200 }
                )
                .await
                .expect("stale")
        );

        // A failure schedules the next attempt; giving up makes it failed; retry makes it due.
        let d = &taken[0];
        let next = Utc::now() + chrono::Duration::hours(1);
        assert!(
            short
                .settle(
                    d.id,
                    "next",
                    Utc::now(),
                    &Attempt::Failed {
                        status: Some(500),
                        error: "the endpoint answered 500".into(),
                        next_at: next,
                        give_up: true,
                    },
                )
                .await
                .expect("fail")
        );
        let failed = short
            .deliveries(Some(DeliveryStatus::Failed), None, 10)
            .await
            .expect("list");
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].attempts, 1);
        assert_eq!(failed[0].last_status, Some(500));
        assert!(short.retry(d.id, Utc::now()).await.expect("retry"));
        assert!(!short.retry(9_999_999, Utc::now()).await.expect("none"));
        let again = short.claim("again", long, 10).await.expect("due again");
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].attempts, 0, "a retry counts its attempts anew");
        assert!(
            again[0].window_start > d.window_start,
            "and opens a new retry window"
        );
        db.cleanup().await;
    }
}

#[tokio::test]
async fn pages_stats_and_purge() {
    for db in TestDatabase::all().await {
        let store = db
            .store()
            .await
            .with_event_endpoints(vec!["http://a.test/h".into()]);
        for i in 0..5 {
            store
                .record_event(&Event::new("t", json!({ "i": i })))
                .await
                .expect("record");
        }
        let outbox = Outbox::new(store.clone());
        let stats = outbox.pending().await.expect("stats");
        assert_eq!(stats.pending, 5, "{}", db.kind);
        assert!(stats.oldest.is_some());
        let page = outbox.deliveries(None, None, 2).await.expect("page");
        assert_eq!(page.len(), 2);
        assert!(page[0].id > page[1].id, "newest first");
        let next = outbox
            .deliveries(None, Some(page[1].id), 10)
            .await
            .expect("next");
        assert_eq!(next.len(), 3);
        assert!(next.iter().all(|d| d.id < page[1].id));

        let claimed = outbox
            .claim("w", Duration::from_secs(60), 3)
            .await
            .expect("claim");
        for d in &claimed {
            outbox
                .settle(d.id, "w", Utc::now(), &Attempt::Delivered { status: 200 })
                .await
                .expect("settle");
        }
        // Pending events stay whatever their age; delivered ones go once old enough.
        let purged = outbox
            .purge(Utc::now() + chrono::Duration::seconds(1), 100)
            .await
            .expect("purge");
        assert_eq!(purged, 3, "{}", db.kind);
        assert_eq!(outbox.pending().await.expect("stats").pending, 2);
        assert_eq!(
            delivery_count(&store).await,
            2,
            "deliveries go with their event"
        );
        db.cleanup().await;
    }
}

#[tokio::test]
async fn subscriptions_and_receipts() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        store
            .put_connection(&record("c-1", "u-1"))
            .await
            .expect("put");
        store
            .put_connection(&record("c-2", "u-2"))
            .await
            .expect("put");
        let t = now();
        let sub = |connection: &str, resource: &str, secret: &str, days: i64| Subscription {
            connection_id: connection.into(),
            provider: "p".into(),
            resource_id: resource.into(),
            secret_hash: secret.into(),
            remote_ids: vec!["10000".into(), "10001".into()],
            expires_at: Some(t + chrono::Duration::days(days)),
            created_at: t,
            renewed_at: t,
        };
        store
            .put_subscription(&sub("c-1", "site-a", "h1", 30))
            .await
            .expect("a");
        store
            .put_subscription(&sub("c-1", "site-b", "h2", 5))
            .await
            .expect("b");
        store
            .put_subscription(&sub("c-2", "site-a", "h3", 3))
            .await
            .expect("c");
        assert!(matches!(
            store
                .put_subscription(&sub("no-such", "site-a", "h4", 3))
                .await,
            Err(StoreError::Conflict(_))
        ));
        let renewed = Subscription {
            remote_ids: vec!["10002".into()],
            ..sub("c-1", "site-b", "h2", 35)
        };
        store.put_subscription(&renewed).await.expect("renew");
        assert_eq!(
            store.subscription_by_secret("h2").await.expect("find"),
            Some(renewed.clone()),
            "{}",
            db.kind
        );
        assert_eq!(
            store.subscription_by_secret("nope").await.expect("none"),
            None
        );
        assert_eq!(store.subscriptions("c-1").await.expect("list").len(), 2);
        let later = t + chrono::Duration::days(40);
        assert!(
            !store
                .renew_subscription("c-1", "site-b", "h-old", later, t)
                .await
                .expect("stale"),
            "a renewal of a replaced subscription writes nothing"
        );
        assert!(
            store
                .renew_subscription("c-1", "site-b", "h2", renewed.expires_at.expect("at"), t)
                .await
                .expect("renew")
        );

        let soon = t + chrono::Duration::days(10);
        let first = store
            .subscriptions_expiring("p", soon, None, 1)
            .await
            .expect("expiring");
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].secret_hash, "h3");
        let rest = store
            .subscriptions_expiring("p", soon, first.last(), 10)
            .await
            .expect("next");
        assert!(
            rest.is_empty(),
            "site-b was renewed past the window ({})",
            db.kind
        );

        assert!(
            store
                .delete_connection("u-2", "p", DeleteReason::User)
                .await
                .expect("delete")
        );
        assert!(
            store.subscriptions("c-2").await.expect("list").is_empty(),
            "cascade"
        );
        assert_eq!(store.delete_subscriptions("c-1").await.expect("delete"), 2);

        let ping = || Event::new("p.ping", json!({}));
        assert!(
            store
                .record_event_once("p", "d-1", t, &ping())
                .await
                .expect("first")
        );
        assert!(
            !store
                .record_event_once("p", "d-1", t, &ping())
                .await
                .expect("repeat")
        );
        assert!(
            store
                .record_event_once("q", "d-1", t, &ping())
                .await
                .expect("other provider")
        );
        assert_eq!(
            store
                .purge_receipts(t + chrono::Duration::seconds(1), 10)
                .await
                .expect("purge"),
            2
        );
        assert!(
            store
                .record_event_once("p", "d-1", t, &ping())
                .await
                .expect("after purge")
        );

        // With an endpoint, the first receipt records its event and a repeat records none.
        let with_events = db
            .store()
            .await
            .with_event_endpoints(vec!["http://a.test/h".into()]);
        assert!(
            with_events
                .record_event_once("p", "d-9", t, &ping())
                .await
                .expect("first")
        );
        assert!(
            !with_events
                .record_event_once("p", "d-9", t, &ping())
                .await
                .expect("repeat")
        );
        assert_eq!(events(&with_events).await.len(), 1, "{}", db.kind);
        db.cleanup().await;
    }
}
