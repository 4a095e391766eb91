//! Hostile edits of the database and floods: a row moved to another user opens no token, old rows
//! are upgraded with nothing lost, pending states stay capped.

use grantry::core::keyring::TokenField;
use grantry::core::store::{ConnectionStatus, TokenStore};
use grantry_server::testing::{TestDatabase, seal_legacy};
use serde_json::Value;

use crate::harness::{Harness, fake_config};
use crate::helpers::{Scratch, stderr, stdout};

const ACCESS_TOKEN: &str = "/api/v1/atlassian/admin/connections/{user}/access-token";

async fn access_token(h: &Harness, user: &str) -> (u16, Value) {
    let (status, body) = h
        .call(
            "GET",
            &ACCESS_TOKEN.replace("{user}", user),
            Some("admin-1"),
            None,
        )
        .await;
    (status.as_u16(), body)
}

/// Swaps the owners of two connections with raw SQL, as someone with write access could.
async fn swap_users(h: &Harness, a: &str, b: &str) {
    for (from, to) in [(a, "swap-tmp"), (b, a), ("swap-tmp", b)] {
        sqlx::query("UPDATE connections SET user_id = $1 WHERE user_id = $2")
            .bind(to)
            .bind(from)
            .execute(h.store.pool())
            .await
            .expect("swap");
    }
}

#[tokio::test]
async fn a_row_moved_to_another_user_opens_no_token() {
    for db in TestDatabase::all().await {
        let h = Harness::start(&db, fake_config(), true).await;
        h.connect("alice").await;
        h.connect("bob").await;
        let (status, alice) = access_token(&h, "alice").await;
        assert_eq!(status, 200, "{alice}");
        let (status, bob) = access_token(&h, "bob").await;
        assert_eq!(status, 200, "{bob}");
        let tokens = [
            alice["access_token"].as_str().expect("token").to_owned(),
            bob["access_token"].as_str().expect("token").to_owned(),
        ];

        swap_users(&h, "alice", "bob").await;

        for user in ["alice", "bob"] {
            let (status, body) = access_token(&h, user).await;
            assert_eq!(status, 409, "{}: {user}: {body}", db.kind);
            assert_eq!(body["error"], "needs_reauth", "{body}");
            assert!(
                body["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("do not open for its user")),
                "{body}"
            );
            for token in &tokens {
                assert!(!body.to_string().contains(token.as_str()), "token leaked");
            }
            let (status, body) = h
                .call("GET", "/api/v1/atlassian/sites", Some(user), None)
                .await;
            assert_eq!(status, 409, "{}: {user}: {body}", db.kind);
            assert_eq!(body["error"], "needs_reauth", "{body}");
            let row = h
                .store
                .connection(user, "atlassian")
                .await
                .expect("db")
                .expect("row kept");
            assert_eq!(row.status, ConnectionStatus::NeedsReauth, "{}", db.kind);
            assert_eq!(
                row.last_failure.as_deref(),
                Some(grantry::core::vault::BINDING_FAILURE)
            );
            let (status, view) = h
                .call(
                    "GET",
                    "/api/v1/atlassian/connection/status",
                    Some(user),
                    None,
                )
                .await;
            assert_eq!(status, 200);
            assert_eq!(view["status"], "needs_reauth", "{view}");
        }

        // Connecting again gives the user a grant of their own on the row they now hold.
        h.connect("alice").await;
        let (status, again) = access_token(&h, "alice").await;
        assert_eq!(status, 200, "{}: {again}", db.kind);
        let fresh = again["access_token"].as_str().expect("token");
        assert!(!tokens.iter().any(|t| t == fresh), "a new grant, not bob's");
        drop(h);
        db.cleanup().await;
    }
}

/// Rewrites both tokens of `user`'s row in the format grantry wrote before the user id joined
/// the associated data; returns the plaintext (access, refresh).
async fn make_legacy(h: &Harness, user: &str) -> (String, String) {
    let row = h
        .store
        .connection(user, "atlassian")
        .await
        .expect("db")
        .expect("row");
    let tokens = h.vault.open_tokens(&row).expect("open");
    let access = tokens.access_token.secret().to_owned();
    let refresh = tokens.refresh_token.expect("refresh").secret().to_owned();
    let legacy_access = seal_legacy(&h.key, &access, &row.id, "atlassian", TokenField::Access);
    let legacy_refresh = seal_legacy(&h.key, &refresh, &row.id, "atlassian", TokenField::Refresh);
    assert!(
        h.store
            .rewrap_tokens(
                &row.id,
                row.version,
                &legacy_access,
                Some(&legacy_refresh),
                &row.key_id
            )
            .await
            .expect("write legacy")
    );
    (access, refresh)
}

fn is_legacy(row: &grantry::core::store::ConnectionRecord) -> bool {
    row.access_token.is_legacy() || row.refresh_token.as_ref().is_some_and(|r| r.is_legacy())
}

#[tokio::test]
async fn old_format_rows_are_upgraded_on_read_and_by_reencrypt() {
    for db in TestDatabase::all().await {
        let h = Harness::start(&db, fake_config(), true).await;
        h.connect("alice").await;
        h.connect("bob").await;
        let alice = make_legacy(&h, "alice").await;
        let bob = make_legacy(&h, "bob").await;

        // Read: the old value opens under the old binding and is re-sealed under the new one.
        let (status, body) = access_token(&h, "alice").await;
        assert_eq!(status, 200, "{}: {body}", db.kind);
        assert_eq!(body["access_token"], alice.0.as_str(), "nothing lost");
        let row = h
            .store
            .connection("alice", "atlassian")
            .await
            .expect("db")
            .expect("row");
        assert!(!is_legacy(&row), "{}: upgraded on read", db.kind);
        let opened = h.vault.open_tokens(&row).expect("open");
        assert_eq!(opened.access_token.secret(), alice.0);
        assert_eq!(opened.refresh_token.expect("refresh").secret(), alice.1);

        // `grantry reencrypt` upgrades the rest.
        let out = Scratch::new()
            .with("GRANTRY_ENCRYPTION_KEY", &h.key)
            .with("GRANTRY_JWT_SECRET", "jwt")
            .with("DATABASE_URL", &db.url)
            .run(&["reencrypt"]);
        assert!(out.status.success(), "{}: {}", db.kind, stderr(&out));
        assert!(
            stdout(&out).contains("re-encrypted 1 connection(s)")
                && stdout(&out).contains("1 already current"),
            "{}",
            stdout(&out)
        );
        let row = h
            .store
            .connection("bob", "atlassian")
            .await
            .expect("db")
            .expect("row");
        assert!(!is_legacy(&row), "{}: upgraded by reencrypt", db.kind);
        let opened = h.vault.open_tokens(&row).expect("open");
        assert_eq!(opened.access_token.secret(), bob.0);
        assert_eq!(opened.refresh_token.expect("refresh").secret(), bob.1);

        // Upgraded rows are bound to their user: moving them now opens nothing.
        swap_users(&h, "alice", "bob").await;
        for user in ["alice", "bob"] {
            let (status, body) = access_token(&h, user).await;
            assert_eq!(status, 409, "{}: {user}: {body}", db.kind);
        }
        drop(h);
        db.cleanup().await;
    }
}

async fn pending_states(h: &Harness, user: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM oauth_states WHERE user_id = $1 AND provider = 'atlassian'",
    )
    .bind(user.to_owned())
    .fetch_one(h.store.pool())
    .await
    .expect("count")
}

#[tokio::test]
async fn an_authorize_flood_leaves_at_most_the_cap_of_pending_states() {
    const CALLS: usize = 5000;
    const WORKERS: usize = 8;
    for db in TestDatabase::all().await {
        let h = std::sync::Arc::new(Harness::start(&db, fake_config(), true).await);
        // Bob's pending authorization is not touched by another user's flood.
        let (bob_url, bob_state) = h.authorize("bob").await;

        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..WORKERS {
            let h = std::sync::Arc::clone(&h);
            workers.spawn(async move {
                for _ in 0..CALLS / WORKERS {
                    let (status, body) = h
                        .call(
                            "POST",
                            "/api/v1/atlassian/connection/authorize",
                            Some("mallory"),
                            None,
                        )
                        .await;
                    assert_eq!(status, 200, "{body}");
                }
            });
        }
        while let Some(done) = workers.join_next().await {
            done.expect("worker");
        }
        let left = pending_states(&h, "mallory").await;
        eprintln!(
            "{}: {CALLS} authorize calls left {left} pending states",
            db.kind
        );
        assert!(
            (1..=10).contains(&left),
            "{}: {left} pending states",
            db.kind
        );
        assert_eq!(pending_states(&h, "bob").await, 1, "{}", db.kind);

        // The newest authorization of the flooding user still completes, and so does bob's.
        h.connect("mallory").await;
        let back = h.consent(&bob_url, true).await;
        let (status, body) = h
            .call(
                "POST",
                "/api/v1/atlassian/connection/callback",
                Some("bob"),
                Some(serde_json::json!({"code": back["code"], "state": bob_state})),
            )
            .await;
        assert_eq!(status, 200, "{}: {body}", db.kind);
        drop(h);
        db.cleanup().await;
    }
}

#[tokio::test]
async fn user_tokens_need_the_configured_issuer_and_audience_and_respect_nbf() {
    let secret = "jwt-claims-secret";
    let mut scratch = Scratch::new()
        .with(
            "GRANTRY_ENCRYPTION_KEY",
            &grantry::core::keyring::KeyRing::generate_key_base64(),
        )
        .with("GRANTRY_JWT_SECRET", secret)
        .with("GRANTRY_JWT_ISSUER", "https://chat.example")
        .with("GRANTRY_JWT_AUDIENCE", "grantry");
    let server = scratch.serve().await;
    let now = chrono::Utc::now().timestamp();
    let sign = |claims: serde_json::Value| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("sign")
    };
    let base = serde_json::json!({
        "sub": "alice", "exp": now + 600, "iss": "https://chat.example", "aud": "grantry",
    });
    let with = |key: &str, value: Value| {
        let mut claims = base.clone();
        match value {
            Value::Null => claims.as_object_mut().expect("object").remove(key),
            value => claims
                .as_object_mut()
                .expect("object")
                .insert(key.into(), value),
        };
        sign(claims)
    };
    let http = reqwest::Client::new();
    for (what, token, expected) in [
        ("issuer and audience", sign(base.clone()), 200),
        ("nbf in the past", with("nbf", (now - 60).into()), 200),
        ("nbf in the future", with("nbf", (now + 300).into()), 401),
        ("no iss", with("iss", Value::Null), 401),
        (
            "another iss",
            with("iss", "https://evil.example".into()),
            401,
        ),
        ("no aud", with("aud", Value::Null), 401),
        ("another aud", with("aud", "someone-else".into()), 401),
    ] {
        let resp = http
            .get(server.url("/api/v1/providers"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.expect("JSON body");
        assert_eq!(status, expected, "{what}: {body}");
        if expected == 401 {
            assert_eq!(body["error"], "unauthorized", "{what}: {body}");
            assert!(body["message"].is_string(), "{what}: {body}");
        }
    }
    server.stop();
}

#[cfg(unix)]
#[tokio::test]
async fn the_sqlite_database_files_are_private_to_their_owner() {
    use std::os::unix::fs::PermissionsExt;
    let mut scratch = Scratch::new()
        .with(
            "GRANTRY_ENCRYPTION_KEY",
            &grantry::core::keyring::KeyRing::generate_key_base64(),
        )
        .with("GRANTRY_JWT_SECRET", "jwt");
    let server = scratch.serve().await;
    let db = crate::helpers::db_file(scratch.path());
    for suffix in ["", "-wal", "-shm"] {
        let path = std::path::PathBuf::from(format!("{}{suffix}", db.display()));
        let mode = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "{}: {:o}",
            path.display(),
            mode & 0o777
        );
    }
    server.stop();
}

const ATTACHMENTS: &str =
    "/api/v1/atlassian/proxy/confluence/{site}/wiki/download/attachments/123456";

fn attachment_url(base: &str, file: &str) -> String {
    format!(
        "{base}{}/{file}",
        ATTACHMENTS.replace("{site}", grantry_atlassian_fake::ACME_SITE_ID)
    )
}

/// Reads a streamed answer chunk by chunk: how many bytes came, and whether it ended cleanly.
async fn drain(mut resp: reqwest::Response) -> (usize, bool) {
    let mut received = 0;
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => received += chunk.len(),
            Ok(None) => return (received, true),
            Err(_) => return (received, false),
        }
    }
}

#[tokio::test]
async fn the_proxy_streams_bodies_and_still_caps_them() {
    use grantry_atlassian_fake::{HUGE_STREAMED_ATTACHMENT, LARGE_STREAMED_ATTACHMENT};
    const CAP: usize = 8 * 1024 * 1024;
    let db = TestDatabase::sqlite();
    let h = Harness::start(&db, fake_config(), true).await;
    h.connect("alice").await;
    let user = h.token("alice", "user");
    let get = |file: &str| {
        h.http
            .get(attachment_url(&h.base, file))
            .bearer_auth(&user)
            .send()
    };

    // Under the cap, without a length announced: passed through whole.
    let resp = get("large.bin").await.expect("large");
    assert_eq!(resp.status(), 200);
    assert_eq!(drain(resp).await, (LARGE_STREAMED_ATTACHMENT, true));

    // Over the cap with a length announced: refused before anything is sent.
    let resp = get("big.bin").await.expect("big");
    assert_eq!(resp.status(), 502);
    let body: Value = resp.json().await.expect("error JSON");
    assert_eq!(body["error"], "upstream_unavailable", "{body}");

    // Over the cap without a length: the transfer is aborted at the cap, never completed.
    let resp = get("huge.bin").await.expect("huge");
    assert_eq!(resp.status(), 200);
    let (received, clean) = drain(resp).await;
    assert!(!clean, "an oversize body must not end like a complete one");
    assert!(
        received <= CAP,
        "{received} of {HUGE_STREAMED_ATTACHMENT} bytes passed"
    );
    drop(h);
    db.cleanup().await;
}

/// The peak resident memory of a process, in bytes (Linux).
fn peak_rss(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .expect("VmHWM")
        * 1024
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn concurrent_proxied_downloads_do_not_hold_whole_bodies_in_memory() {
    use grantry_atlassian_fake::{FakeAtlassian, LARGE_STREAMED_ATTACHMENT};
    const DOWNLOADS: usize = 16;
    let db = TestDatabase::sqlite();
    let fake = FakeAtlassian::start(fake_config()).await.expect("fake");
    let jwt = "proxy-memory-jwt";
    let mut scratch = crate::process::atlassian_env(
        Scratch::new(),
        &fake,
        &grantry::core::keyring::KeyRing::generate_key_base64(),
        jwt,
    )
    .with("DATABASE_URL", &db.url)
    .with("ATLASSIAN_OAUTH_SCOPE", grantry::atlassian::CONTENT_SCOPES);
    let server = scratch.serve().await;
    let (user, _) = crate::process::alice_and_admin(jwt);
    let http = reqwest::Client::new();
    crate::process::connect_alice(&http, &server, &server, &fake, &user).await;
    let pid = server.pid();
    // Warm up: one download sets up every buffer a download needs.
    let resp = http
        .get(attachment_url(&server.base, "large.bin"))
        .bearer_auth(&user)
        .send()
        .await
        .expect("download");
    assert_eq!(drain(resp).await, (LARGE_STREAMED_ATTACHMENT, true));
    let before = peak_rss(pid);

    let mut downloads = tokio::task::JoinSet::new();
    for _ in 0..DOWNLOADS {
        let (http, url, user) = (
            http.clone(),
            attachment_url(&server.base, "large.bin"),
            user.clone(),
        );
        downloads.spawn(async move {
            let resp = http
                .get(url)
                .bearer_auth(user)
                .send()
                .await
                .expect("download");
            assert_eq!(resp.status(), 200);
            drain(resp).await
        });
    }
    while let Some(done) = downloads.join_next().await {
        assert_eq!(done.expect("join"), (LARGE_STREAMED_ATTACHMENT, true));
    }
    let grown = peak_rss(pid).saturating_sub(before);
    let whole = DOWNLOADS * LARGE_STREAMED_ATTACHMENT;
    eprintln!(
        "{DOWNLOADS} concurrent downloads of {} MiB: peak memory grew by {:.1} MiB (bodies total {} MiB)",
        LARGE_STREAMED_ATTACHMENT >> 20,
        grown as f64 / 1048576.0,
        whole >> 20
    );
    assert!(
        grown < whole / 2,
        "peak memory grew by {grown} bytes for {whole} bytes of bodies"
    );
    server.stop();
    db.cleanup().await;
}
