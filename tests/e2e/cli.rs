//! The CLI and start-up contract: required variables, database creation, probes, key rotation.

use std::sync::Arc;

use chrono::Utc;
use grantry::core::keyring::KeyRing;
use grantry::core::store::TokenStore;
use grantry::core::vault::Vault;
use grantry::core::{
    AccessToken, Account, AccountDetails, RefreshPolicy, RefreshToken, ScopeSet, TokenSet,
};
use grantry_server::SqlStore;
use grantry_server::testing::TestDatabase;
use secrecy::SecretString;

use crate::helpers::{Scratch, db_file, stderr, stdout};

fn keys() -> (String, String) {
    (
        KeyRing::generate_key_base64(),
        KeyRing::generate_key_base64(),
    )
}

#[test]
fn serve_without_the_key_exits_naming_it() {
    let scratch = Scratch::new().with("GRANTRY_JWT_SECRET", "jwt");
    let out = scratch.run(&["serve"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("GRANTRY_ENCRYPTION_KEY"), "{err}");
    assert!(
        !db_file(scratch.path()).exists(),
        "nothing is created before the configuration is valid"
    );
}

#[test]
fn bad_key_and_missing_jwt_secret_are_named() {
    let out = Scratch::new()
        .with("GRANTRY_ENCRYPTION_KEY", "dG9vLXNob3J0")
        .with("GRANTRY_JWT_SECRET", "jwt")
        .run(&["serve"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("GRANTRY_ENCRYPTION_KEY is invalid"), "{err}");
    assert!(
        !err.contains("dG9vLXNob3J0"),
        "the key never appears: {err}"
    );

    let out = Scratch::new()
        .with("GRANTRY_ENCRYPTION_KEY", &KeyRing::generate_key_base64())
        .run(&["serve"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("GRANTRY_JWT_SECRET"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn enabled_atlassian_without_client_id_exits_naming_it() {
    let out = Scratch::new()
        .with("GRANTRY_ENCRYPTION_KEY", &KeyRing::generate_key_base64())
        .with("GRANTRY_JWT_SECRET", "jwt")
        .with("ENABLE_ATLASSIAN_INTEGRATION", "true")
        .with("ATLASSIAN_CLIENT_SECRET", "shh-client-secret")
        .run(&["serve"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("ATLASSIAN_CLIENT_ID"), "{err}");
    assert!(!err.contains("shh-client-secret"));
}

#[test]
fn an_enabled_section_that_no_linked_provider_serves_stops_start_up() {
    let scratch = || {
        Scratch::new()
            .with("GRANTRY_ENCRYPTION_KEY", &KeyRing::generate_key_base64())
            .with("GRANTRY_JWT_SECRET", "jwt")
            .with("ENABLE_DOCS_MCP_INTEGRATION", "true")
            .with("DOCS_MCP_KIND", "mcp")
            .with("DOCS_MCP_CLIENT_SECRET", "shh-mcp-secret")
    };
    let scratch_serve = scratch();
    let out = scratch_serve.run(&["serve"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("ENABLE_DOCS_MCP_INTEGRATION=true"), "{err}");
    assert!(err.contains("`docs-mcp` (kind `mcp`)"), "{err}");
    assert!(
        err.contains("this binary knows the kinds: atlassian, atlassian-dc"),
        "{err}"
    );
    assert!(err.contains("oauth2"), "{err}");
    assert!(!err.contains("shh-mcp-secret"), "{err}");
    assert!(
        !db_file(scratch_serve.path()).exists(),
        "nothing is created before the configuration is valid"
    );

    let out = scratch().run(&["providers"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("`docs-mcp`"), "{}", stderr(&out));
    assert!(
        stdout(&out).lines().any(|l| l.starts_with("atlassian")),
        "the linked providers are still listed: {}",
        stdout(&out)
    );

    let out = scratch()
        .with("ENABLE_DOCS_MCP_INTEGRATION", "false")
        .run(&["providers"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_data_center_instance_from_the_environment_alone_is_checked_at_start_up() {
    let scratch = || {
        Scratch::new()
            .with("GRANTRY_ENCRYPTION_KEY", &KeyRing::generate_key_base64())
            .with("GRANTRY_JWT_SECRET", "jwt")
            .with("JIRA_DC_KIND", "atlassian-dc")
            .with("JIRA_DC_PRODUCT", "jira")
            .with("JIRA_DC_CLIENT_ID", "dc-client")
            .with("JIRA_DC_CLIENT_SECRET", "shh-dc-secret")
            .with("JIRA_DC_REDIRECT_URI", "https://chat.example.com/cb")
    };
    for (base_url, wanted) in [
        (None, "JIRA_DC_BASE_URL"),
        (Some("http://jira.example.com"), "JIRA_DC_BASE_URL"),
    ] {
        let mut s = scratch();
        if let Some(url) = base_url {
            s = s.with("JIRA_DC_BASE_URL", url);
        }
        let out = s.run(&["serve"]);
        assert!(!out.status.success());
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains(wanted), "{err}");
        assert!(!err.contains("shh-dc-secret"), "{err}");
    }
    let out = scratch()
        .with("JIRA_DC_BASE_URL", "https://jira.example.com/jira")
        .run(&["providers"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("jira-dc"), "{}", stdout(&out));
}

#[test]
fn providers_lists_atlassian_and_whether_it_is_enabled() {
    let out = Scratch::new().run(&["providers"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|l| l.starts_with("atlassian"))
        .expect("atlassian listed");
    assert!(line.contains("disabled"), "{line}");

    let out = Scratch::new()
        .with("ENABLE_ATLASSIAN_INTEGRATION", "TRUE")
        .with("ATLASSIAN_CLIENT_ID", "cid")
        .with("ATLASSIAN_CLIENT_SECRET", "secret")
        .with(
            "ATLASSIAN_REDIRECT_URI",
            "http://localhost:3000/settings/connections",
        )
        .run(&["providers"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out)
            .lines()
            .any(|l| l.starts_with("atlassian") && l.contains("enabled"))
    );
}

#[test]
fn keygen_prints_a_usable_key() {
    let out = Scratch::new().run(&["keygen"]);
    assert!(out.status.success());
    let key = stdout(&out).trim().to_owned();
    assert!(KeyRing::from_base64(&SecretString::from(key), None).is_ok());
}

#[tokio::test]
async fn serve_creates_the_database_and_answers_probes() {
    let mut scratch = Scratch::new()
        .with("GRANTRY_ENCRYPTION_KEY", &KeyRing::generate_key_base64())
        .with("GRANTRY_JWT_SECRET", "jwt")
        .with("LOG_LEVEL", "DEBUG");
    let server = scratch.serve().await;
    let client = reqwest::Client::new();
    let health = client
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    let ready = client
        .get(server.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.expect("json");
    assert_eq!(body["status"], "ready");
    assert!(
        db_file(scratch.path()).exists(),
        "grantry.db created in the working folder"
    );
    let store = SqlStore::connect(&format!("sqlite://{}", db_file(scratch.path()).display()))
        .await
        .expect("open created db");
    assert!(
        store
            .list_connections(None)
            .await
            .expect("migrated schema")
            .is_empty()
    );
    assert_eq!(
        client
            .get(server.url("/api/v1/atlassian/connection/status"))
            .send()
            .await
            .expect("req")
            .status(),
        404,
        "a disabled provider mounts nothing"
    );
}

#[tokio::test]
async fn serve_runs_on_postgres_when_configured() {
    let Some(db) = TestDatabase::postgres().await else {
        eprintln!("note: GRANTRY_TEST_POSTGRES_URL unset; PostgreSQL serve test not run");
        return;
    };
    let mut scratch = Scratch::new()
        .with("GRANTRY_ENCRYPTION_KEY", &KeyRing::generate_key_base64())
        .with("GRANTRY_JWT_SECRET", "jwt")
        .with("DATABASE_URL", &db.url);
    {
        let server = scratch.serve().await;
        let ready = reqwest::get(server.url("/readyz")).await.expect("readyz");
        assert_eq!(ready.status(), 200);
    }
    let out = scratch.run(&["migrate"]);
    assert!(out.status.success(), "{}", stderr(&out));
    db.cleanup().await;
}

async fn seed(url: &str, key: &str) -> String {
    let store = SqlStore::connect(url).await.expect("connect");
    store.migrate().await.expect("migrate");
    let ring = KeyRing::from_base64(&SecretString::from(key.to_owned()), None).expect("key");
    let vault = Vault::new(Arc::new(store.clone()), Arc::new(ring));
    let tokens = TokenSet {
        access_token: AccessToken::new("seeded-access-token"),
        refresh_token: Some(RefreshToken::new("seeded-refresh-token")),
        token_type: "Bearer".into(),
        expires_at: Some(Utc::now()),
        scopes: Some(ScopeSet::parse("read:me offline_access")),
    };
    let details = AccountDetails {
        account: Account {
            id: "acc".into(),
            name: None,
            email: None,
        },
        resources: vec![],
    };
    let saved = vault
        .save_grant(
            "user-1",
            "atlassian",
            &tokens,
            &details,
            &RefreshPolicy::default(),
            Utc::now(),
        )
        .await
        .expect("save");
    store.close().await;
    saved.id
}

#[tokio::test]
async fn key_rotation_end_to_end() {
    for db in TestDatabase::all().await {
        let (old_key, new_key) = keys();
        let id = seed(&db.url, &old_key).await;
        let old_id = KeyRing::from_base64(&SecretString::from(old_key.clone()), None)
            .expect("key")
            .current_key_id()
            .to_string();

        // The old key gone: start-up fails naming its id, and nothing is deleted.
        let mut scratch = Scratch::new()
            .with("GRANTRY_ENCRYPTION_KEY", &new_key)
            .with("GRANTRY_JWT_SECRET", "jwt")
            .with("DATABASE_URL", &db.url);
        let out = scratch.run(&["serve"]);
        assert!(!out.status.success(), "{}: serve must refuse", db.kind);
        let err = stderr(&out);
        assert!(
            err.contains(&old_id),
            "{}: names key {old_id}: {err}",
            db.kind
        );
        assert!(err.contains("GRANTRY_ENCRYPTION_OLD_KEYS"), "{err}");
        let store = SqlStore::connect(&db.url).await.expect("connect");
        assert_eq!(
            store.list_connections(None).await.expect("list").len(),
            1,
            "nothing deleted"
        );

        // With the old key configured, reencrypt moves the row to the new key.
        scratch.set("GRANTRY_ENCRYPTION_OLD_KEYS", &old_key);
        let out = scratch.run(&["reencrypt"]);
        assert!(out.status.success(), "{}: {}", db.kind, stderr(&out));
        assert!(
            stdout(&out).contains("re-encrypted 1 connection(s)"),
            "{}",
            stdout(&out)
        );

        // Now the new key alone is enough, and the tokens are intact.
        scratch.set("GRANTRY_ENCRYPTION_OLD_KEYS", "");
        {
            let server = scratch.serve().await;
            assert_eq!(
                reqwest::get(server.url("/readyz"))
                    .await
                    .expect("readyz")
                    .status(),
                200
            );
        }
        let ring = KeyRing::from_base64(&SecretString::from(new_key.clone()), None).expect("key");
        let vault = Vault::new(Arc::new(store.clone()), Arc::new(ring));
        let row = store
            .connection_by_id(&id)
            .await
            .expect("get")
            .expect("row");
        let tokens = vault
            .open_tokens(&row)
            .expect("opens with the new key alone");
        assert_eq!(tokens.access_token.secret(), "seeded-access-token");
        assert_eq!(
            tokens.refresh_token.expect("refresh").secret(),
            "seeded-refresh-token"
        );
        store.close().await;
        db.cleanup().await;
    }
}

#[tokio::test]
async fn serve_refuses_a_pending_state_sealed_by_an_unknown_key() {
    use grantry::core::keyring::{SealContext, TokenField};
    use grantry::core::store::StateRecord;
    for db in TestDatabase::all().await {
        let (old_key, new_key) = keys();
        let old = KeyRing::from_base64(&SecretString::from(old_key.clone()), None).expect("key");
        let store = SqlStore::connect(&db.url).await.expect("connect");
        store.migrate().await.expect("migrate");
        let verifier = old
            .seal(
                "pkce-verifier-secret",
                SealContext {
                    connection_id: "state",
                    user_id: "user-1",
                    provider: "atlassian",
                    field: TokenField::Access,
                },
            )
            .expect("seal");
        store
            .put_state(
                &StateRecord {
                    state_hash: "pending-state".into(),
                    user_id: "user-1".into(),
                    provider: "atlassian".into(),
                    expires_at: Utc::now() + chrono::Duration::minutes(10),
                    created_at: Utc::now(),
                    code_verifier: Some(verifier),
                },
                10,
            )
            .await
            .expect("state");
        store.close().await;

        let scratch = Scratch::new()
            .with("GRANTRY_ENCRYPTION_KEY", &new_key)
            .with("GRANTRY_JWT_SECRET", "jwt")
            .with("DATABASE_URL", &db.url);
        let out = scratch.run(&["serve"]);
        assert!(!out.status.success(), "{}: serve must refuse", db.kind);
        let err = stderr(&out);
        let old_id = old.current_key_id().to_string();
        assert!(
            err.contains(&old_id),
            "{}: names key {old_id}: {err}",
            db.kind
        );
        assert!(!err.contains("pkce-verifier-secret"), "{err}");

        // With the old key configured as an old key, it starts.
        let mut scratch = scratch.with("GRANTRY_ENCRYPTION_OLD_KEYS", &old_key);
        {
            let server = scratch.serve().await;
            let ready = reqwest::get(server.url("/readyz")).await.expect("readyz");
            assert_eq!(ready.status(), 200, "{}", db.kind);
        }
        db.cleanup().await;
    }
}
