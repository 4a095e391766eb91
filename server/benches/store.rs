//! The store's hot read: one user's connection (with its sites) by user and provider, on SQLite.

use std::sync::Arc;

use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use grantry_core::keyring::KeyRing;
use grantry_core::store::TokenStore;
use grantry_core::vault::Vault;
use grantry_core::{
    AccessToken, Account, AccountDetails, RefreshPolicy, RefreshToken, Resource, ScopeSet, TokenSet,
};
use grantry_server::testing::TestDatabase;
use secrecy::SecretString;

fn store(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("runtime: {e}"));
    let db = TestDatabase::sqlite();
    let (store, vault) = runtime.block_on(async {
        let store = db.store().await;
        let ring = KeyRing::from_base64(&SecretString::from(KeyRing::generate_key_base64()), None)
            .unwrap_or_else(|e| panic!("key: {e}"));
        let vault = Vault::new(Arc::new(store.clone()), Arc::new(ring));
        let details = AccountDetails {
            account: Account {
                id: "acc".into(),
                name: Some("Ada".into()),
                email: Some("ada@example.com".into()),
            },
            resources: (0..2)
                .map(|i| Resource {
                    id: format!("cloud-{i}"),
                    name: format!("Site {i}"),
                    url: Some(format!("https://site{i}.atlassian.net")),
                    scopes: vec!["read:jira-work".into()],
                    avatar_url: None,
                })
                .collect(),
        };
        for user in 0..1000 {
            let tokens = TokenSet {
                access_token: AccessToken::new("a".repeat(1500)),
                refresh_token: Some(RefreshToken::new("r".repeat(200))),
                token_type: "Bearer".into(),
                expires_at: Some(Utc::now() + chrono::Duration::hours(1)),
                scopes: Some(ScopeSet::parse("read:me offline_access")),
            };
            vault
                .save_grant(
                    &format!("user-{user}"),
                    "atlassian",
                    &tokens,
                    &details,
                    &RefreshPolicy::default(),
                    Utc::now(),
                )
                .await
                .unwrap_or_else(|e| panic!("seed: {e}"));
        }
        (store, vault)
    });
    c.bench_function("sqlite: connection(user, provider) of 1000", |b| {
        b.to_async(&runtime).iter(|| async {
            store
                .connection("user-500", "atlassian")
                .await
                .unwrap_or_else(|e| panic!("read: {e}"))
        })
    });
    c.bench_function("sqlite: connection + open both tokens", |b| {
        b.to_async(&runtime).iter(|| async {
            let row = store
                .connection("user-500", "atlassian")
                .await
                .unwrap_or_else(|e| panic!("read: {e}"))
                .unwrap_or_else(|| panic!("row"));
            vault
                .open_tokens(&row)
                .unwrap_or_else(|e| panic!("open: {e}"))
        })
    });
}

criterion_group!(benches, store);
criterion_main!(benches);
