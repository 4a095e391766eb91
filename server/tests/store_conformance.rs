//! One conformance suite for the token store, run on SQLite and (when configured) PostgreSQL.

use std::sync::Arc;

use chrono::{Duration, DurationRound, Utc};
use grantry_core::error::{Error, StoreError};
use grantry_core::events::{DeleteReason, ReauthReason, StatusChange};
use grantry_core::keyring::{KeyRing, SealedValue};
use grantry_core::store::{
    ConnectionKey, ConnectionPageQuery, ConnectionRecord, ConnectionStatus, ConnectionSummary,
    ConnectionWalk, StateRecord, TokenStore,
};
use grantry_core::vault::Vault;
use grantry_core::{
    AccessToken, Account, AccountDetails, RefreshPolicy, RefreshToken, Resource, ScopeSet, TokenSet,
};
use grantry_server::testing::TestDatabase;
use secrecy::SecretString;

fn now() -> chrono::DateTime<Utc> {
    Utc::now()
        .duration_trunc(Duration::milliseconds(1))
        .expect("truncate")
}

fn ring(current: &str, old: &[&str]) -> Arc<KeyRing> {
    Arc::new(
        KeyRing::from_base64(
            &SecretString::from(current.to_owned()),
            Some(&SecretString::from(old.join(","))),
        )
        .expect("keys"),
    )
}

fn tokens(access: &str, refresh: Option<&str>) -> TokenSet {
    TokenSet {
        access_token: AccessToken::new(access),
        refresh_token: refresh.map(RefreshToken::new),
        token_type: "Bearer".into(),
        expires_at: Some(now() + Duration::hours(1)),
        scopes: Some(ScopeSet::parse("read:me offline_access")),
    }
}

fn details() -> AccountDetails {
    AccountDetails {
        account: Account {
            id: "acc-1".into(),
            name: Some("Ada".into()),
            email: Some("ada@example.com".into()),
        },
        resources: vec![
            Resource {
                id: "cloud-1".into(),
                name: "Site one".into(),
                url: Some("https://one.atlassian.net".into()),
                scopes: vec![
                    "read:jira-work".into(),
                    "read:confluence-content.all".into(),
                ],
                avatar_url: Some("https://avatars.example/1.png".into()),
            },
            Resource {
                id: "cloud-2".into(),
                name: "Site two".into(),
                url: None,
                scopes: vec![],
                avatar_url: None,
            },
        ],
    }
}

fn record(id: &str, user: &str, provider: &str) -> ConnectionRecord {
    let t = now();
    ConnectionRecord {
        id: id.into(),
        user_id: user.into(),
        provider: provider.into(),
        account: details().account,
        scopes: ScopeSet::parse("a b"),
        status: ConnectionStatus::Active,
        access_token: SealedValue::from_bytes(vec![1, 2, 3]),
        refresh_token: Some(SealedValue::from_bytes(vec![4, 5, 6])),
        key_id: "00112233aabbccdd".into(),
        access_expires_at: Some(t + Duration::hours(1)),
        refresh_idle_expires_at: Some(t + Duration::days(90)),
        refresh_expires_at: Some(t + Duration::days(365)),
        version: 0,
        lease_until: None,
        lease_owner: None,
        last_failure: None,
        connected_at: t,
        updated_at: t,
        last_refreshed_at: None,
        access_issued_at: Some(t),
        resources: details().resources,
    }
}

#[tokio::test]
async fn connections_round_trip_replace_and_delete() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let r = record("c-1", "u-1", "atlassian");
        let stored = store.put_connection(&r).await.expect("put");
        assert_eq!(stored, r, "{}: stored row differs", db.kind);
        assert_eq!(
            store.connection("u-1", "atlassian").await.expect("get"),
            Some(r.clone())
        );
        assert_eq!(
            store
                .connection_by_id("c-1")
                .await
                .expect("get")
                .map(|c| c.user_id),
            Some("u-1".into())
        );
        assert_eq!(store.connection("u-1", "other").await.expect("get"), None);

        store
            .put_connection(&record("c-2", "u-2", "atlassian"))
            .await
            .expect("put 2");
        store
            .put_connection(&record("c-3", "u-1", "other"))
            .await
            .expect("put 3");
        let listed = store
            .list_connections(Some("atlassian"))
            .await
            .expect("list");
        assert_eq!(
            listed.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
            ["c-1", "c-2"]
        );
        assert!(
            listed.iter().all(|c| c.resources.len() == 2),
            "{}: resources listed",
            db.kind
        );
        assert_eq!(
            store.list_connections(None).await.expect("list all").len(),
            3
        );

        let mut again = record("c-1", "u-1", "atlassian");
        again.resources.truncate(1);
        again.status = ConnectionStatus::Active;
        let replaced = store.put_connection(&again).await.expect("replace");
        assert_eq!(
            replaced.version, 1,
            "{}: replace bumps the version",
            db.kind
        );
        assert_eq!(replaced.resources.len(), 1);

        let err = store
            .put_connection(&record("c-other", "u-1", "atlassian"))
            .await
            .expect_err("same user and provider under another id");
        assert!(matches!(err, StoreError::Conflict(_)), "{}: {err}", db.kind);

        store
            .replace_resources("c-1", &details().resources)
            .await
            .expect("resources");
        assert_eq!(
            store
                .connection_by_id("c-1")
                .await
                .expect("get")
                .expect("row")
                .resources
                .len(),
            2
        );

        assert!(
            store
                .delete_connection("u-1", "atlassian", DeleteReason::User)
                .await
                .expect("delete")
        );
        assert!(
            !store
                .delete_connection("u-1", "atlassian", DeleteReason::User)
                .await
                .expect("delete again")
        );
        assert_eq!(
            store.connection("u-1", "atlassian").await.expect("get"),
            None
        );
        assert_eq!(store.list_connections(None).await.expect("list").len(), 2);
        store.close().await;
        db.cleanup().await;
    }
}

#[tokio::test]
async fn lease_is_exclusive_until_it_expires() {
    const LEASE: std::time::Duration = std::time::Duration::from_secs(30);
    for db in TestDatabase::all().await {
        let store = db.store().await;
        store
            .put_connection(&record("c-1", "u-1", "p"))
            .await
            .expect("put");
        let before = now();
        assert!(store.try_acquire_lease("c-1", "a", LEASE).await.expect("a"));
        let row = store
            .connection_by_id("c-1")
            .await
            .expect("get")
            .expect("row");
        let until = row.lease_until.expect("lease until");
        assert!(
            until >= before + Duration::seconds(29) && until <= now() + Duration::seconds(31),
            "{}: the lease runs 30 s from the database's now: {until}",
            db.kind
        );
        assert!(!store.try_acquire_lease("c-1", "b", LEASE).await.expect("b"));
        store
            .release_lease("c-1", "b")
            .await
            .expect("release by non-owner");
        assert!(!store.try_acquire_lease("c-1", "b", LEASE).await.expect("b"));

        // A short lease runs out by the database's clock and is taken over.
        store.release_lease("c-1", "a").await.expect("release");
        assert!(
            store
                .try_acquire_lease("c-1", "a", std::time::Duration::from_millis(1))
                .await
                .expect("a")
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(
            store.try_acquire_lease("c-1", "b", LEASE).await.expect("b"),
            "{}: an expired lease is taken over",
            db.kind
        );
        let row = store
            .connection_by_id("c-1")
            .await
            .expect("get")
            .expect("row");
        assert_eq!(row.lease_owner.as_deref(), Some("b"));
        store.release_lease("c-1", "b").await.expect("release");
        assert!(store.try_acquire_lease("c-1", "c", LEASE).await.expect("c"));
        assert!(
            !store
                .try_acquire_lease("missing", "c", LEASE)
                .await
                .expect("missing row")
        );
        store.close().await;
        db.cleanup().await;
    }
}

#[tokio::test]
async fn exactly_one_concurrent_lease_taker_wins() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        store
            .put_connection(&record("c-1", "u-1", "p"))
            .await
            .expect("put");
        let mut tasks = Vec::new();
        for i in 0..24 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .try_acquire_lease(
                        "c-1",
                        &format!("owner-{i}"),
                        std::time::Duration::from_secs(30),
                    )
                    .await
                    .expect("lease")
            }));
        }
        let mut winners = 0;
        for task in tasks {
            if task.await.expect("join") {
                winners += 1;
            }
        }
        assert_eq!(winners, 1, "{}: exactly one lease winner", db.kind);
        store.close().await;
        db.cleanup().await;
    }
}

#[tokio::test]
async fn refresh_writes_are_compare_and_swap_on_version() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let keys = ring(&KeyRing::generate_key_base64(), &[]);
        let vault = Vault::new(Arc::new(store.clone()), keys);
        let policy = RefreshPolicy::default();
        let saved = vault
            .save_grant(
                "u-1",
                "p",
                &tokens("at-1", Some("rt-1")),
                &details(),
                &policy,
                now(),
            )
            .await
            .expect("save");
        let t = now();
        assert!(
            store
                .try_acquire_lease(&saved.id, "me", std::time::Duration::from_secs(30))
                .await
                .expect("lease")
        );
        let update = vault
            .seal_refresh(&saved, &tokens("at-2", None), &policy, t)
            .expect("seal");
        assert!(
            !store
                .complete_refresh(&saved.id, saved.version + 7, &update)
                .await
                .expect("stale")
        );
        assert!(
            store
                .complete_refresh(&saved.id, saved.version, &update)
                .await
                .expect("write")
        );
        assert!(
            !store
                .complete_refresh(&saved.id, saved.version, &update)
                .await
                .expect("twice")
        );
        let row = store
            .connection_by_id(&saved.id)
            .await
            .expect("get")
            .expect("row");
        assert_eq!(row.version, saved.version + 1);
        assert_eq!(row.lease_owner, None);
        assert_eq!(row.last_refreshed_at, Some(t));
        assert_eq!(row.access_issued_at, Some(t));
        let opened = vault.open_tokens(&row).expect("open");
        assert_eq!(opened.access_token.secret(), "at-2");
        assert_eq!(
            vault.open_access(&row).expect("open access").secret(),
            "at-2"
        );
        assert_eq!(
            opened.refresh_token.as_ref().map(RefreshToken::secret),
            Some("rt-1"),
            "{}: the old refresh token is kept when none came back",
            db.kind
        );

        store
            .set_status(
                &saved.id,
                StatusChange::NeedsReauth {
                    reason: ReauthReason::InvalidGrant,
                    failure: "invalid_grant",
                },
            )
            .await
            .expect("status");
        let row = store
            .connection_by_id(&saved.id)
            .await
            .expect("get")
            .expect("row kept");
        assert_eq!(row.status, ConnectionStatus::NeedsReauth);
        assert_eq!(row.last_failure.as_deref(), Some("invalid_grant"));
        assert!(
            vault.open_tokens(&row).is_ok(),
            "tokens stay after needs_reauth"
        );

        // A refresher's failure written against an older version changes nothing.
        let current = store
            .connection_by_id(&saved.id)
            .await
            .expect("get")
            .expect("row");
        assert!(
            !store
                .set_status_at(
                    &saved.id,
                    current.version - 1,
                    StatusChange::RefreshFailed { failure: "stale" }
                )
                .await
                .expect("fenced")
        );
        let unchanged = store
            .connection_by_id(&saved.id)
            .await
            .expect("get")
            .expect("row");
        assert_eq!(
            unchanged.last_failure.as_deref(),
            Some("invalid_grant"),
            "{}",
            db.kind
        );
        assert!(
            store
                .set_status_at(
                    &saved.id,
                    current.version,
                    StatusChange::NeedsReauth {
                        reason: ReauthReason::InvalidGrant,
                        failure: "now"
                    }
                )
                .await
                .expect("written")
        );

        let reconnected = vault
            .save_grant(
                "u-1",
                "p",
                &tokens("at-3", Some("rt-3")),
                &details(),
                &policy,
                now(),
            )
            .await
            .expect("reconnect");
        assert_eq!(reconnected.id, saved.id);
        assert_eq!(reconnected.status, ConnectionStatus::Active);
        assert_eq!(reconnected.last_failure, None);
        store.close().await;
        db.cleanup().await;
    }
}

#[tokio::test]
async fn states_are_single_use_bound_to_user_and_expire() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let t = now();
        let state = |hash: &str, expires| StateRecord {
            state_hash: hash.into(),
            user_id: "u-1".into(),
            provider: "p".into(),
            expires_at: expires,
            created_at: t,
            code_verifier: (hash == "h1").then(|| SealedValue::from_bytes(vec![7; 40])),
        };
        store
            .put_state(&state("h1", t + Duration::minutes(10)), 10)
            .await
            .expect("put");
        store
            .put_state(&state("h2", t - Duration::seconds(1)), 10)
            .await
            .expect("put expired");
        assert_eq!(
            store
                .consume_state("h1", "u-2", "p", t)
                .await
                .expect("other user"),
            None
        );
        assert_eq!(
            store
                .consume_state("h1", "u-1", "q", t)
                .await
                .expect("other provider"),
            None
        );
        assert_eq!(
            store
                .consume_state("nope", "u-1", "p", t)
                .await
                .expect("unknown"),
            None
        );
        let got = store
            .consume_state("h1", "u-1", "p", t)
            .await
            .expect("consume");
        assert_eq!(
            got,
            Some(state("h1", t + Duration::minutes(10))),
            "{}",
            db.kind
        );
        assert_eq!(
            store
                .consume_state("h1", "u-1", "p", t)
                .await
                .expect("reuse"),
            None
        );
        assert_eq!(
            store
                .consume_state("h2", "u-1", "p", t)
                .await
                .expect("expired"),
            None
        );
        assert!(
            store.put_state(&state("h1", t), 10).await.is_err(),
            "a state hash is unique"
        );
        assert_eq!(store.purge_expired_states(t, 100).await.expect("purge"), 1);
        assert_eq!(
            store
                .purge_expired_states(t + Duration::minutes(11), 100)
                .await
                .expect("purge"),
            1
        );
        store.close().await;
        db.cleanup().await;
    }
}

#[tokio::test]
async fn pending_states_are_capped_per_user_and_provider() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let t = now();
        let state = |hash: String, user: &str, provider: &str, created, expires| StateRecord {
            state_hash: hash,
            user_id: user.into(),
            provider: provider.into(),
            expires_at: expires,
            created_at: created,
            code_verifier: None,
        };
        let later = t + Duration::minutes(10);
        // Another user's and another provider's states, and an expired one of u-1.
        for (hash, user, provider) in [("o1", "u-2", "p"), ("o2", "u-2", "p"), ("q1", "u-1", "q")] {
            store
                .put_state(&state(hash.into(), user, provider, t, later), 3)
                .await
                .expect("put");
        }
        store
            .put_state(
                &state("old".into(), "u-1", "p", t - Duration::minutes(20), t),
                3,
            )
            .await
            .expect("put");
        for i in 0..25 {
            let created = t + Duration::milliseconds(i);
            store
                .put_state(&state(format!("s{i:02}"), "u-1", "p", created, later), 3)
                .await
                .expect("put");
        }
        let count = |user: &'static str, provider: &'static str| {
            let store = store.clone();
            async move {
                sqlx::query_scalar::<_, i64>(
                    "SELECT COUNT(*) FROM oauth_states WHERE user_id = $1 AND provider = $2",
                )
                .bind(user)
                .bind(provider)
                .fetch_one(store.pool())
                .await
                .expect("count")
            }
        };
        assert_eq!(count("u-1", "p").await, 3, "{}: capped", db.kind);
        assert_eq!(
            count("u-2", "p").await,
            2,
            "{}: other user untouched",
            db.kind
        );
        assert_eq!(
            count("u-1", "q").await,
            1,
            "{}: other provider untouched",
            db.kind
        );
        for (hash, kept) in [("s24", true), ("s22", true), ("s21", false), ("s00", false)] {
            let got = store
                .consume_state(hash, "u-1", "p", t)
                .await
                .expect("consume");
            assert_eq!(got.is_some(), kept, "{}: {hash}", db.kind);
        }
        assert_eq!(
            store.purge_expired_states(t, 1000).await.expect("purge"),
            0,
            "{}: the expired state went on insert",
            db.kind
        );
        store.close().await;
        db.cleanup().await;
    }
}

#[tokio::test]
async fn tokens_are_sealed_bound_to_their_row_and_keys_rotate() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let old_key = KeyRing::generate_key_base64();
        let new_key = KeyRing::generate_key_base64();
        let policy = RefreshPolicy::default();
        let old_vault = Vault::new(Arc::new(store.clone()), ring(&old_key, &[]));
        let a = old_vault
            .save_grant(
                "u-a",
                "p",
                &tokens("access-A-secret", Some("refresh-A-secret")),
                &details(),
                &policy,
                now(),
            )
            .await
            .expect("save a");
        let b = old_vault
            .save_grant(
                "u-b",
                "p",
                &tokens("access-B-secret", None),
                &details(),
                &policy,
                now(),
            )
            .await
            .expect("save b");
        for raw in [a.access_token.as_bytes(), b.access_token.as_bytes()] {
            assert!(
                !raw.windows(6).any(|w| w == b"access"),
                "plaintext in the database"
            );
        }

        // A ciphertext copied to another row does not open there.
        assert!(
            store
                .rewrap_tokens(&b.id, b.version, &a.access_token, None, &a.key_id)
                .await
                .expect("copy")
        );
        let tampered = store
            .connection_by_id(&b.id)
            .await
            .expect("get")
            .expect("row");
        assert!(
            matches!(old_vault.open_tokens(&tampered), Err(Error::Crypto(_))),
            "{}: a value copied to another row must not open",
            db.kind
        );
        assert!(
            matches!(old_vault.open_access(&tampered), Err(Error::Crypto(_))),
            "{}: an access token copied to another row must not open",
            db.kind
        );
        assert!(
            store
                .delete_connection("u-b", "p", DeleteReason::User)
                .await
                .expect("delete")
        );

        // The new key with the old one configured: values open, reencrypt moves them.
        let rotated = Vault::new(Arc::new(store.clone()), ring(&new_key, &[&old_key]));
        rotated.check_keys().await.expect("old key known");
        let row = store
            .connection_by_id(&a.id)
            .await
            .expect("get")
            .expect("row");
        assert_eq!(
            rotated
                .open_tokens(&row)
                .expect("open")
                .access_token
                .secret(),
            "access-A-secret"
        );
        let report = rotated.reencrypt().await.expect("reencrypt");
        assert_eq!((report.moved, report.current), (1, 0));
        let report = rotated.reencrypt().await.expect("reencrypt again");
        assert_eq!((report.moved, report.current), (0, 1));

        // Only the new key now: everything opens; only the old key: start-up check names the new id.
        let only_new = Vault::new(Arc::new(store.clone()), ring(&new_key, &[]));
        only_new.check_keys().await.expect("all on the new key");
        let row = store
            .connection_by_id(&a.id)
            .await
            .expect("get")
            .expect("row");
        let opened = only_new.open_tokens(&row).expect("open");
        assert_eq!(
            opened.refresh_token.as_ref().map(RefreshToken::secret),
            Some("refresh-A-secret")
        );

        let only_old = Vault::new(Arc::new(store.clone()), ring(&old_key, &[]));
        match only_old.check_keys().await {
            Err(Error::MissingKeys(ids)) => {
                assert_eq!(ids, vec![only_new.keys().current_key_id()]);
            }
            other => panic!("{}: expected MissingKeys, got {other:?}", db.kind),
        }
        assert_eq!(
            store.list_connections(None).await.expect("list").len(),
            1,
            "nothing deleted"
        );
        store.close().await;
        db.cleanup().await;
    }
}

#[tokio::test]
async fn the_read_cache_is_invalidated_by_local_writes_and_expires() {
    use grantry_core::cache::CachedStore;
    use std::time::Duration;
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let cached = CachedStore::new(store.clone(), Duration::from_secs(60));
        cached
            .put_connection(&record("c-1", "u-1", "p"))
            .await
            .expect("put");
        let first = cached
            .connection("u-1", "p")
            .await
            .expect("read")
            .expect("row");
        assert_eq!(first.status, ConnectionStatus::Active);

        // Another process writes: this one keeps serving its copy until the entry expires.
        store
            .set_status(
                "c-1",
                StatusChange::NeedsReauth {
                    reason: ReauthReason::InvalidGrant,
                    failure: "elsewhere",
                },
            )
            .await
            .expect("status");
        let stale = cached
            .connection("u-1", "p")
            .await
            .expect("read")
            .expect("row");
        assert_eq!(
            stale.status,
            ConnectionStatus::Active,
            "{}: served from memory",
            db.kind
        );

        // A write through the cache invalidates at once.
        cached
            .set_status(
                "c-1",
                StatusChange::NeedsReauth {
                    reason: ReauthReason::InvalidGrant,
                    failure: "here",
                },
            )
            .await
            .expect("status");
        let summary = cached
            .connection_summary("u-1", "p")
            .await
            .expect("read")
            .expect("row");
        assert_eq!(summary.last_failure.as_deref(), Some("here"));

        // A cached summary serves summaries only: the whole row is read again.
        store
            .set_status(
                "c-1",
                StatusChange::NeedsReauth {
                    reason: ReauthReason::InvalidGrant,
                    failure: "elsewhere again",
                },
            )
            .await
            .expect("status");
        let summary = cached.connection_summary("u-1", "p").await.expect("read");
        assert_eq!(
            summary.and_then(|s| s.last_failure).as_deref(),
            Some("here"),
            "{}: the summary from memory",
            db.kind
        );
        let fresh = cached
            .connection("u-1", "p")
            .await
            .expect("read")
            .expect("row");
        assert_eq!(fresh.last_failure.as_deref(), Some("elsewhere again"));
        // ... and the whole row, once cached, serves summaries too.
        let summary = cached.connection_summary("u-1", "p").await.expect("read");
        assert_eq!(summary, Some(ConnectionSummary::of(&fresh)));
        assert!(
            cached
                .delete_connection("u-1", "p", DeleteReason::User)
                .await
                .expect("delete")
        );
        assert_eq!(cached.connection("u-1", "p").await.expect("read"), None);
        assert_eq!(
            cached.connection_summary("u-1", "p").await.expect("read"),
            None
        );

        // A short time to live shows other processes' writes soon after.
        let short = CachedStore::new(store.clone(), Duration::from_millis(50));
        assert_eq!(short.connection("u-2", "p").await.expect("read"), None);
        store
            .put_connection(&record("c-2", "u-2", "p"))
            .await
            .expect("put elsewhere");
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(
            short.connection("u-2", "p").await.expect("read").is_some(),
            "{}: expired",
            db.kind
        );
        store.close().await;
        db.cleanup().await;
    }
}

/// Reads every page of one filter in pages of `limit`, checking that none is longer.
async fn walk_pages(
    store: &dyn TokenStore,
    provider: Option<&str>,
    status: Option<ConnectionStatus>,
    limit: u32,
) -> Vec<ConnectionRecord> {
    let mut all: Vec<ConnectionRecord> = Vec::new();
    loop {
        let after = all.last().map(ConnectionKey::of);
        let page = store
            .connections_page(&ConnectionPageQuery {
                provider,
                status,
                after: after.as_ref(),
                limit,
            })
            .await
            .expect("page");
        assert!(page.len() <= limit as usize, "a page exceeds its limit");
        // The same page without tokens holds the same connections, summarized.
        let summaries = store
            .connection_summaries_page(&ConnectionPageQuery {
                provider,
                status,
                after: after.as_ref(),
                limit,
            })
            .await
            .expect("summaries");
        assert_eq!(
            summaries,
            page.iter().map(ConnectionSummary::of).collect::<Vec<_>>()
        );
        for record in &page {
            let one = store
                .connection_summary(&record.user_id, &record.provider)
                .await
                .expect("summary");
            assert_eq!(one, Some(ConnectionSummary::of(record)));
        }
        let full = page.len() == limit as usize;
        all.extend(page);
        if !full {
            return all;
        }
    }
}

#[tokio::test]
async fn connections_page_is_keyset_paged_filtered_and_carries_resources() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        // 23 users of one provider (every third needs re-consent, 0, 1 or 2 sites each), user
        // ids whose byte order differs from their insertion order, and three other providers.
        let mut users: Vec<String> = (0..20).map(|i| format!("u-{:02}", (i * 7) % 20)).collect();
        users.extend(["Zed".to_owned(), "ülrike".to_owned(), "a%b_c".to_owned()]);
        for (i, user) in users.iter().enumerate() {
            let mut r = record(&format!("c-{i}"), user, "atlassian");
            r.resources.truncate(i % 3);
            if i.is_multiple_of(3) {
                r.status = ConnectionStatus::NeedsReauth;
            }
            store.put_connection(&r).await.expect("put");
        }
        for (i, (user, provider)) in [
            ("u-05", "other"),
            ("b", "other"),
            ("a", "zeta"),
            ("u-99", "alpha"),
        ]
        .into_iter()
        .enumerate()
        {
            store
                .put_connection(&record(&format!("x-{i}"), user, provider))
                .await
                .expect("put other");
        }
        let mut expected = users.clone();
        expected.sort();

        // One provider, pages of 5: every user once, in order, each record whole.
        let walked = walk_pages(&store, Some("atlassian"), None, 5).await;
        assert_eq!(
            walked.iter().map(|r| r.user_id.clone()).collect::<Vec<_>>(),
            expected,
            "{}: one provider in user-id order",
            db.kind
        );
        for r in &walked {
            let single = store
                .connection(&r.user_id, "atlassian")
                .await
                .expect("get")
                .expect("row");
            assert_eq!(
                r, &single,
                "{}: a page row equals the row read alone",
                db.kind
            );
        }
        assert!(
            walked.iter().any(|r| r.resources.len() == 2)
                && walked.iter().any(|r| r.resources.is_empty()),
            "{}: rows with and without sites",
            db.kind
        );

        // Status filters, in pages of 3: the same rows as filtering the whole list.
        for status in [ConnectionStatus::NeedsReauth, ConnectionStatus::Active] {
            let filtered = walk_pages(&store, Some("atlassian"), Some(status), 3).await;
            let want: Vec<&str> = walked
                .iter()
                .filter(|r| r.status == status)
                .map(|r| r.user_id.as_str())
                .collect();
            assert!(want.len() >= 7, "{}: both statuses seeded", db.kind);
            assert_eq!(
                filtered
                    .iter()
                    .map(|r| r.user_id.as_str())
                    .collect::<Vec<_>>(),
                want,
                "{}: status {}",
                db.kind,
                status.as_str()
            );
        }

        // A key of another provider starts before or after all of this provider's rows.
        let page_after = |key: ConnectionKey, limit: u32| {
            let store = &store;
            async move {
                store
                    .connections_page(&ConnectionPageQuery {
                        provider: Some("atlassian"),
                        status: None,
                        after: Some(&key),
                        limit,
                    })
                    .await
                    .expect("page")
            }
        };
        let first = page_after(
            ConnectionKey {
                provider: "alpha".into(),
                user_id: "zzz".into(),
            },
            2,
        )
        .await;
        assert_eq!(
            first.iter().map(|r| r.user_id.as_str()).collect::<Vec<_>>(),
            [expected[0].as_str(), expected[1].as_str()],
            "{}: an earlier provider's key",
            db.kind
        );
        let none = page_after(
            ConnectionKey {
                provider: "zeta".into(),
                user_id: String::new(),
            },
            2,
        )
        .await;
        assert!(none.is_empty(), "{}: a later provider's key", db.kind);
        let zero = page_after(
            ConnectionKey {
                provider: "atlassian".into(),
                user_id: String::new(),
            },
            0,
        )
        .await;
        assert!(zero.is_empty(), "{}: limit 0", db.kind);

        // Every provider: (provider, user id) order across providers, with and without status.
        let all = walk_pages(&store, None, None, 4).await;
        let keys: Vec<ConnectionKey> = all.iter().map(ConnectionKey::of).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "{}: every provider in key order", db.kind);
        assert_eq!(keys.len(), users.len() + 4);
        assert_eq!(keys[0].provider, "alpha");
        assert_eq!(keys[keys.len() - 1].provider, "zeta");
        let active = walk_pages(&store, None, Some(ConnectionStatus::Active), 4).await;
        assert_eq!(
            active.iter().map(ConnectionKey::of).collect::<Vec<_>>(),
            all.iter()
                .filter(|r| r.status == ConnectionStatus::Active)
                .map(ConnectionKey::of)
                .collect::<Vec<_>>(),
            "{}: every provider, active only",
            db.kind
        );

        // A walk reads the same rows whether its last page is full (9 of 27) or not (10).
        for batch in [9, 10] {
            let mut walk = ConnectionWalk::new(&store, None, None, batch);
            let mut walked = Vec::new();
            while let Some(r) = walk.next().await.expect("walk") {
                walked.push(ConnectionKey::of(&r));
            }
            assert_eq!(walked, keys, "{}: walk in batches of {batch}", db.kind);
        }
        store.close().await;
        db.cleanup().await;
    }
}

#[tokio::test]
async fn reencrypt_moves_every_row_across_several_pages() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let old_key = KeyRing::generate_key_base64();
        let new_key = KeyRing::generate_key_base64();
        let policy = RefreshPolicy::default();
        let old_vault = Vault::new(Arc::new(store.clone()), ring(&old_key, &[]));
        // More rows than one page of `reencrypt` (500), over two providers, saved 8 at a time.
        let n: usize = 523;
        let mut saves = tokio::task::JoinSet::new();
        for i in 0..n {
            if saves.len() >= 8 {
                saves.join_next().await.expect("a save").expect("joined");
            }
            let (vault, policy) = (old_vault.clone(), policy.clone());
            saves.spawn(async move {
                let provider = if i.is_multiple_of(4) { "q" } else { "p" };
                vault
                    .save_grant(
                        &format!("u-{i:04}"),
                        provider,
                        &tokens(&format!("access-{i}"), Some(&format!("refresh-{i}"))),
                        &AccountDetails::default(),
                        &policy,
                        now(),
                    )
                    .await
                    .expect("save");
            });
        }
        while let Some(done) = saves.join_next().await {
            done.expect("joined");
        }
        let rotated = Vault::new(Arc::new(store.clone()), ring(&new_key, &[&old_key]));
        let report = rotated.reencrypt().await.expect("reencrypt");
        assert_eq!((report.moved, report.current), (n, 0), "{}", db.kind);
        // Every row opens with the new key alone.
        let only_new = Vault::new(Arc::new(store.clone()), ring(&new_key, &[]));
        only_new.check_keys().await.expect("all on the new key");
        let mut walk = ConnectionWalk::new(&store, None, None, 250);
        let mut opened = 0;
        while let Some(row) = walk.next().await.expect("walk") {
            let i: usize = row.user_id[2..].parse().expect("index");
            let tokens = only_new.open_tokens(&row).expect("open");
            assert_eq!(tokens.access_token.secret(), format!("access-{i}"));
            opened += 1;
        }
        assert_eq!(opened, n, "{}", db.kind);
        store.close().await;
        db.cleanup().await;
    }
}

#[tokio::test]
async fn token_handouts_are_recorded_and_paged_newest_first_per_provider() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let t = now();
        assert!(
            store
                .token_handouts("p", None, 10)
                .await
                .expect("empty")
                .is_empty()
        );
        let mut recorded = Vec::new();
        for i in 0..5_i64 {
            let row = store
                .record_token_handout("p", &format!("admin-{i}"), "u-1", t + Duration::seconds(i))
                .await
                .expect("record");
            assert_eq!(
                (
                    row.provider.as_str(),
                    row.admin_id.as_str(),
                    row.user_id.as_str()
                ),
                ("p", format!("admin-{i}").as_str(), "u-1")
            );
            assert_eq!(row.handed_out_at, t + Duration::seconds(i), "{}", db.kind);
            recorded.push(row);
        }
        store
            .record_token_handout("q", "admin-x", "u-2", t)
            .await
            .expect("another provider");
        assert!(
            recorded.windows(2).all(|w| w[0].id < w[1].id),
            "{}: ids increase",
            db.kind
        );

        let first = store.token_handouts("p", None, 2).await.expect("page 1");
        let newest: Vec<_> = recorded.iter().rev().cloned().collect();
        assert_eq!(first, newest[..2], "{}", db.kind);
        let second = store
            .token_handouts("p", Some(first[1].id), 2)
            .await
            .expect("page 2");
        assert_eq!(second, newest[2..4]);
        let third = store
            .token_handouts("p", Some(second[1].id), 2)
            .await
            .expect("page 3");
        assert_eq!(third, newest[4..]);
        assert!(
            store
                .token_handouts("p", Some(third[0].id), 2)
                .await
                .expect("past the end")
                .is_empty()
        );
        let other = store.token_handouts("q", None, 10).await.expect("q");
        assert_eq!(
            other.iter().map(|h| h.user_id.as_str()).collect::<Vec<_>>(),
            ["u-2"]
        );
        store.close().await;
        db.cleanup().await;
    }
}

#[tokio::test]
async fn concurrent_token_handouts_each_get_their_own_committed_row() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let t = now();
        // 300 at once: more than one group (at most 256 rows a write), and pairs of callers
        // with equal values (calls i and i + 6 within each block of 12).
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..300_i64 {
            let store = store.clone();
            calls.spawn(async move {
                let admin = format!("admin-{}", i % 2);
                let user = format!("u-{}", i % 3);
                let at = t + Duration::milliseconds(i / 12);
                let row = store
                    .record_token_handout("p", &admin, &user, at)
                    .await
                    .expect("record");
                assert_eq!(
                    (
                        row.admin_id.as_str(),
                        row.user_id.as_str(),
                        row.handed_out_at
                    ),
                    (admin.as_str(), user.as_str(), at)
                );
                row.id
            });
        }
        let mut ids: Vec<i64> = calls.join_all().await;
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(
            ids.len(),
            300,
            "{}: every caller has a row of its own",
            db.kind
        );
        let mut listed = Vec::new();
        let mut before = None;
        loop {
            let page = store.token_handouts("p", before, 1000).await.expect("page");
            let Some(last) = page.last() else { break };
            before = Some(last.id);
            listed.extend(page.iter().map(|h| h.id));
        }
        listed.sort_unstable();
        assert_eq!(listed, ids, "{}: exactly the rows handed back", db.kind);

        // A row the database refuses (PostgreSQL takes no NUL in text) fails its own caller
        // only, whatever group it was written with.
        let mut mixed = tokio::task::JoinSet::new();
        for i in 0..21 {
            let store = store.clone();
            mixed.spawn(async move {
                let admin = if i == 10 { "admin\0" } else { "admin" };
                let outcome = store.record_token_handout("m", admin, "u", t).await;
                (i, outcome.is_ok())
            });
        }
        for (i, ok) in mixed.join_all().await {
            let refused = i == 10 && db.kind == "postgres";
            assert_eq!(ok, !refused, "{}: call {i}", db.kind);
        }

        // A write that fails answers every caller in it with the database's error.
        sqlx::query("DROP TABLE token_handouts")
            .execute(store.pool())
            .await
            .expect("drop");
        let mut failed = tokio::task::JoinSet::new();
        for i in 0..20 {
            let store = store.clone();
            failed.spawn(async move {
                store
                    .record_token_handout("p", "admin", &format!("u-{i}"), t)
                    .await
            });
        }
        for outcome in failed.join_all().await {
            assert!(
                matches!(&outcome, Err(StoreError::Database(m)) if m.contains("token_handouts")),
                "{}: {outcome:?}",
                db.kind
            );
        }
        store.close().await;
        db.cleanup().await;
    }
}

/// A connection of `provider` with the given status, refresh token and expiries (`None`: unset).
fn due_record(
    id: &str,
    provider: &str,
    status: ConnectionStatus,
    refresh: bool,
    idle: Option<chrono::DateTime<Utc>>,
    absolute: Option<chrono::DateTime<Utc>>,
) -> ConnectionRecord {
    ConnectionRecord {
        status,
        refresh_token: refresh.then(|| SealedValue::from_bytes(vec![4, 5, 6])),
        refresh_idle_expires_at: idle,
        refresh_expires_at: absolute,
        resources: vec![],
        ..record(id, &format!("user-{id}"), provider)
    }
}

fn ids(rows: &[grantry_core::store::DueConnection]) -> Vec<&str> {
    rows.iter().map(|r| r.id.as_str()).collect()
}

#[tokio::test]
async fn due_queries_return_only_due_rows_in_keyset_batches() {
    use ConnectionStatus::{Active, NeedsReauth};
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let t = now();
        let day = Duration::days(1);
        let cutoff = t + Duration::days(7);
        let rows = [
            // Due for keep-alive: active, a refresh token, inactivity expiry before the cutoff.
            due_record("k-3", "p", Active, true, Some(t + day * 3), None),
            due_record("k-1", "p", Active, true, Some(t + day), None),
            due_record("k-2b", "p", Active, true, Some(t + day * 2), None),
            due_record("k-2a", "p", Active, true, Some(t + day * 2), None),
            // Not due: no refresh token, needs re-consent, far from expiry, unset, other provider.
            due_record("n-norefresh", "p", Active, false, Some(t + day), None),
            due_record("n-reauth", "p", NeedsReauth, true, Some(t + day), None),
            due_record("n-far", "p", Active, true, Some(t + day * 30), None),
            due_record("n-unset", "p", Active, true, None, None),
            due_record("n-other", "q", Active, true, Some(t + day), None),
            // Past the absolute expiry (at or before now), and not yet.
            due_record("x-1", "p", Active, true, None, Some(t - day)),
            due_record("x-2", "p", Active, false, None, Some(t)),
            due_record(
                "x-future",
                "p",
                Active,
                true,
                None,
                Some(t + Duration::seconds(1)),
            ),
            due_record("x-reauth", "p", NeedsReauth, true, None, Some(t - day)),
            due_record("x-other", "q", Active, true, None, Some(t - day)),
        ];
        for r in &rows {
            store.put_connection(r).await.expect("put");
        }

        // Keep-alive: ordered by (expiry, id), two at a time, each batch after the last row.
        let first = store
            .due_for_keep_alive("p", cutoff, None, 2)
            .await
            .expect("first batch");
        assert_eq!(ids(&first), ["k-1", "k-2a"], "{}", db.kind);
        assert_eq!(first[0].due_at, t + day);
        assert_eq!(first[0].version, 0);
        let second = store
            .due_for_keep_alive("p", cutoff, first.last(), 2)
            .await
            .expect("second batch");
        assert_eq!(ids(&second), ["k-2b", "k-3"], "{}", db.kind);
        let third = store
            .due_for_keep_alive("p", cutoff, second.last(), 2)
            .await
            .expect("third batch");
        assert!(third.is_empty(), "{}: {third:?}", db.kind);
        assert_eq!(
            ids(&store
                .due_for_keep_alive("q", cutoff, None, 10)
                .await
                .expect("other provider")),
            ["n-other"]
        );

        // Absolute expiry: at or before now, active only.
        let expired = store
            .past_absolute_expiry("p", t, None, 1)
            .await
            .expect("expired");
        assert_eq!(ids(&expired), ["x-1"], "{}", db.kind);
        let rest = store
            .past_absolute_expiry("p", t, expired.last(), 10)
            .await
            .expect("expired rest");
        assert_eq!(ids(&rest), ["x-2"], "{}", db.kind);

        // Once handled, a row leaves its query.
        assert!(
            store
                .set_status_at(
                    "x-1",
                    0,
                    StatusChange::NeedsReauth {
                        reason: ReauthReason::InvalidGrant,
                        failure: "expired"
                    }
                )
                .await
                .expect("mark")
        );
        assert_eq!(
            ids(&store
                .past_absolute_expiry("p", t, None, 10)
                .await
                .expect("after marking")),
            ["x-2"]
        );
        store.close().await;
        db.cleanup().await;
    }
}

#[tokio::test]
async fn one_task_lease_holder_at_a_time_across_stores() {
    use std::time::Duration as StdDuration;
    for db in TestDatabase::all().await {
        // Two pools on one database: two replicas.
        let a = db.store().await;
        let b = db.store().await;
        let long = StdDuration::from_secs(60);
        assert!(
            a.try_acquire_task_lease("pass", "a", long)
                .await
                .expect("a takes")
        );
        assert!(
            !b.try_acquire_task_lease("pass", "b", long)
                .await
                .expect("b tries"),
            "{}: held by a",
            db.kind
        );
        assert!(
            a.try_acquire_task_lease("pass", "a", long)
                .await
                .expect("a renews"),
            "{}: the holder renews",
            db.kind
        );
        assert!(
            b.try_acquire_task_lease("other", "b", long)
                .await
                .expect("other task"),
            "{}: leases are per task",
            db.kind
        );
        b.release_task_lease("pass", "b").await.expect("not b's");
        assert!(
            !b.try_acquire_task_lease("pass", "b", long)
                .await
                .expect("still a's")
        );
        a.release_task_lease("pass", "a").await.expect("a releases");
        assert!(
            b.try_acquire_task_lease("pass", "b", long)
                .await
                .expect("b takes")
        );
        assert!(
            !a.try_acquire_task_lease("pass", "a", long)
                .await
                .expect("now b's")
        );

        // A holder that stops renewing loses the lease when it runs out (database clock).
        let short = StdDuration::from_millis(50);
        assert!(
            a.try_acquire_task_lease("crash", "a", short)
                .await
                .expect("a takes")
        );
        tokio::time::sleep(StdDuration::from_millis(150)).await;
        assert!(
            b.try_acquire_task_lease("crash", "b", long)
                .await
                .expect("b takes over"),
            "{}: an expired lease is free",
            db.kind
        );

        // Concurrent takers of a free lease: exactly one wins.
        let stores: Vec<_> = [a.clone(), b.clone(), a.clone(), b.clone()]
            .into_iter()
            .enumerate()
            .collect();
        let wins = futures_wins(stores).await;
        assert_eq!(wins, 1, "{}: one winner", db.kind);
        a.close().await;
        b.close().await;
        db.cleanup().await;
    }
}

async fn futures_wins(stores: Vec<(usize, grantry_server::SqlStore)>) -> usize {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, store) in stores {
        tasks.spawn(async move {
            store
                .try_acquire_task_lease(
                    "race",
                    &format!("owner-{i}"),
                    std::time::Duration::from_secs(60),
                )
                .await
                .expect("race")
        });
    }
    let mut wins = 0;
    while let Some(won) = tasks.join_next().await {
        wins += usize::from(won.expect("task"));
    }
    wins
}

#[tokio::test]
async fn expired_states_are_purged_in_batches() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let t = now();
        for (i, expires) in [-3, -2, -1, -1, 0, 5].into_iter().enumerate() {
            store
                .put_state(
                    &StateRecord {
                        state_hash: format!("h{i}"),
                        // One user each: putting a state purges its own user's expired ones.
                        user_id: format!("u{i}"),
                        provider: "p".into(),
                        expires_at: t + Duration::minutes(expires),
                        created_at: t,
                        code_verifier: None,
                    },
                    10,
                )
                .await
                .expect("put");
        }
        let mut purged = Vec::new();
        loop {
            let n = store.purge_expired_states(t, 2).await.expect("purge");
            purged.push(n);
            if n < 2 {
                break;
            }
        }
        assert_eq!(purged, [2, 2, 1], "{}", db.kind);
        assert!(
            store
                .consume_state("h5", "u5", "p", t)
                .await
                .expect("live")
                .is_some(),
            "{}: the live state stays",
            db.kind
        );
        store.close().await;
        db.cleanup().await;
    }
}

#[tokio::test]
async fn key_ids_cover_tokens_and_pending_state_verifiers() {
    use grantry_core::keyring::{SealContext, TokenField};
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let (token_key, state_key, expired_key, used_key) = (
            KeyRing::generate_key_base64(),
            KeyRing::generate_key_base64(),
            KeyRing::generate_key_base64(),
            KeyRing::generate_key_base64(),
        );
        let vault = Vault::new(Arc::new(store.clone()), ring(&token_key, &[]));
        for user in ["u-1", "u-2"] {
            vault
                .save_grant(
                    user,
                    "p",
                    &tokens("a", Some("r")),
                    &details(),
                    &RefreshPolicy::default(),
                    now(),
                )
                .await
                .expect("save");
        }
        let t = now();
        let ctx = SealContext {
            connection_id: "state",
            user_id: "u",
            provider: "p",
            field: TokenField::Access,
        };
        for (hash, key, expires, used) in [
            ("pending", &state_key, t + Duration::minutes(10), false),
            ("expired", &expired_key, t - Duration::minutes(1), false),
            ("used", &used_key, t + Duration::minutes(10), true),
        ] {
            let verifier = ring(key, &[]).seal("verifier", ctx).expect("seal");
            store
                .put_state(
                    &StateRecord {
                        state_hash: hash.into(),
                        user_id: "u".into(),
                        provider: "p".into(),
                        expires_at: expires,
                        created_at: t,
                        code_verifier: Some(verifier),
                    },
                    10,
                )
                .await
                .expect("put state");
            if used {
                store
                    .consume_state(hash, "u", "p", t)
                    .await
                    .expect("consume");
            }
        }
        let id = |key: &str| ring(key, &[]).current_key_id().to_string();
        let mut expected = vec![id(&token_key), id(&state_key)];
        expected.sort();
        assert_eq!(
            store.key_ids(t).await.expect("key ids"),
            expected,
            "{}",
            db.kind
        );

        // The start-up check names the key of a pending state's verifier when it is missing.
        match vault.check_keys().await {
            Err(Error::MissingKeys(missing)) => {
                assert_eq!(
                    missing,
                    vec![ring(&state_key, &[]).current_key_id()],
                    "{}",
                    db.kind
                );
            }
            other => panic!("{}: expected MissingKeys, got {other:?}", db.kind),
        }
        Vault::new(Arc::new(store.clone()), ring(&token_key, &[&state_key]))
            .check_keys()
            .await
            .expect("both keys configured");
        store.close().await;
        db.cleanup().await;
    }
}

#[tokio::test]
async fn accounts_are_paged_read_again_deleted_by_account_and_provider_state_kept() {
    for db in TestDatabase::all().await {
        let store = db
            .store()
            .await
            .with_event_endpoints(vec!["http://e".into()]);
        let kind = db.kind;
        for i in 0..5 {
            let mut r = record(&format!("c-{i}"), &format!("u-{i}"), "atlassian");
            r.account.id = format!("acc-{i}");
            r.connected_at = now() - Duration::days(10);
            store.put_connection(&r).await.expect("put");
        }
        store
            .put_connection(&record("c-x", "u-x", "other"))
            .await
            .expect("put other");

        // Keyset pages of one provider, in user id order, the read time at the last write.
        let first = store
            .accounts_page("atlassian", None, 3)
            .await
            .expect("page");
        let users: Vec<&str> = first.iter().map(|a| a.user_id.as_str()).collect();
        assert_eq!(users, ["u-0", "u-1", "u-2"], "{kind}");
        assert_eq!(first[0].account_id, "acc-0");
        assert_eq!(first[0].connection_id, "c-0");
        assert_eq!(first[0].status, ConnectionStatus::Active);
        assert!(first[0].read_at > now() - Duration::hours(1), "{kind}");
        let rest = store
            .accounts_page("atlassian", Some("u-2"), 3)
            .await
            .expect("page");
        let users: Vec<&str> = rest.iter().map(|a| a.user_id.as_str()).collect();
        assert_eq!(users, ["u-3", "u-4"], "{kind}");

        // A re-read writes the name, email and read time, only for the account it is about.
        let at = now() + Duration::minutes(5);
        let fresh = Account {
            id: "acc-1".into(),
            name: Some("Ada King".into()),
            email: Some("ada.king@example.com".into()),
        };
        assert!(
            store
                .update_account("c-1", &fresh, at)
                .await
                .expect("update")
        );
        let other = Account {
            id: "acc-9".into(),
            ..fresh.clone()
        };
        assert!(
            !store
                .update_account("c-2", &other, at)
                .await
                .expect("update")
        );
        let row = store
            .connection_by_id("c-1")
            .await
            .expect("get")
            .expect("row");
        assert_eq!(row.account, fresh, "{kind}");
        assert_eq!(row.version, 0, "{kind}: a re-read is no token write");
        let page = store
            .accounts_page("atlassian", Some("u-0"), 1)
            .await
            .expect("page");
        assert_eq!(page[0].read_at, at, "{kind}");

        // A deletion by account needs the account to match, and records why.
        assert!(
            !store
                .delete_account_connection("c-2", "acc-1", DeleteReason::AccountClosed)
                .await
                .expect("delete")
        );
        assert!(
            store
                .delete_account_connection("c-2", "acc-2", DeleteReason::AccountClosed)
                .await
                .expect("delete")
        );
        assert!(
            store
                .connection("u-2", "atlassian")
                .await
                .expect("get")
                .is_none()
        );
        let bodies: Vec<String> =
            sqlx::query_scalar("SELECT body FROM events WHERE type = 'connection.deleted'")
                .fetch_all(store.pool())
                .await
                .expect("events");
        assert_eq!(bodies.len(), 1, "{kind}");
        assert!(
            bodies[0].contains("\"reason\":\"account_closed\""),
            "{kind}: {}",
            bodies[0]
        );
        assert!(
            !store
                .delete_account_connection("c-2", "acc-2", DeleteReason::AccountClosed)
                .await
                .expect("delete again")
        );

        // Provider state: absent, written, replaced, per provider and name.
        assert_eq!(
            store
                .provider_state("atlassian", "cycle")
                .await
                .expect("read"),
            None
        );
        store
            .put_provider_state("atlassian", "cycle", "{\"a\":1}", now())
            .await
            .expect("write");
        store
            .put_provider_state("atlassian", "cycle", "{\"a\":2}", now())
            .await
            .expect("replace");
        assert_eq!(
            store
                .provider_state("atlassian", "cycle")
                .await
                .expect("read")
                .as_deref(),
            Some("{\"a\":2}")
        );
        assert_eq!(
            store.provider_state("other", "cycle").await.expect("read"),
            None
        );
        db.cleanup().await;
    }
}
