//! Faults and hostile input: graceful shutdown mid-refresh, bad requests of every kind.

use std::time::Duration;

use grantry::core::keyring::KeyRing;
use grantry::core::store::TokenStore;
use grantry_atlassian_fake::{Failure, FakeAtlassian};
use grantry_server::testing::TestDatabase;
use serde_json::json;

use crate::harness::{Harness, fake_config};
use crate::helpers::Scratch;
use crate::process::{alice_and_admin, atlassian_env, connect_alice};

#[tokio::test]
async fn sigterm_lets_a_refresh_in_flight_finish_and_releases_the_lease() {
    let db = TestDatabase::sqlite();
    let mut config = fake_config();
    config.access_ttl = Duration::from_secs(2);
    let fake = FakeAtlassian::start(config).await.expect("fake");
    let jwt = "shutdown-jwt";
    let mut scratch = atlassian_env(Scratch::new(), &fake, &KeyRing::generate_key_base64(), jwt)
        .with("DATABASE_URL", &db.url)
        .with("GRANTRY_REFRESH_MARGIN", "1");
    let server = scratch.serve().await;
    let (user, admin) = alice_and_admin(jwt);
    let http = reqwest::Client::new();
    connect_alice(&http, &server, &server, &fake, &user).await;
    fake.fake.set_access_ttl(Duration::from_secs(3600));
    let store = db.store().await;
    let row = store
        .connection("alice", "atlassian")
        .await
        .expect("db")
        .expect("row");
    let due = row.access_expires_at.expect("expiry") - chrono::Duration::seconds(1);
    tokio::time::sleep(
        (due - chrono::Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(100),
    )
    .await;

    fake.fake
        .fail_next_token_calls(1, Failure::Delay(Duration::from_secs(2)));
    let in_flight = {
        let url = server.url("/api/v1/atlassian/admin/connections/alice/access-token");
        let (http, admin) = (http.clone(), admin.clone());
        tokio::spawn(async move {
            http.get(url)
                .bearer_auth(admin)
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while store
        .connection("alice", "atlassian")
        .await
        .expect("db")
        .expect("row")
        .lease_owner
        .is_none()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the refresh never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = tokio::task::spawn_blocking(move || server.terminate(Duration::from_secs(20)))
        .await
        .expect("join")
        .expect("the server exits after SIGTERM");
    assert!(status.success(), "clean exit: {status}");
    assert_eq!(
        in_flight.await.expect("join").expect("answered"),
        200,
        "the request in flight completed"
    );
    let row = store
        .connection("alice", "atlassian")
        .await
        .expect("db")
        .expect("row");
    assert_eq!(row.version, 1, "the refreshed pair was persisted");
    assert_eq!(row.lease_owner, None, "the lease was released");
    assert_eq!(fake.fake.counters().token_refresh, 1);
    store.close().await;
}

/// A small deterministic generator, so failures can be replayed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next() & 0xff) as u8).collect()
    }
}

#[tokio::test]
async fn hostile_requests_never_get_a_server_error() {
    let db = TestDatabase::sqlite();
    let h = Harness::start(&db, fake_config(), true).await;
    h.connect("alice").await;
    let user = h.token("alice", "user");
    let admin = h.token("admin-1", "admin");
    let callback = h.url("/api/v1/atlassian/connection/callback");
    let mut statuses = Vec::new();

    // Bodies: wrong content types, malformed and oversized JSON, wrong field types, odd values.
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("text/plain", b"code=x&state=y".to_vec()),
        ("application/json", b"{".to_vec()),
        ("application/json", b"null".to_vec()),
        ("application/json", b"[]".to_vec()),
        ("application/json", br#"{"code": 1, "state": []}"#.to_vec()),
        (
            "application/json",
            json!({"code": "x", "state": "s".repeat(100_000)})
                .to_string()
                .into_bytes(),
        ),
        (
            "application/json",
            json!({"code": "\u{0}\u{ffff}", "state": "\u{202e}\u{0}"})
                .to_string()
                .into_bytes(),
        ),
        (
            "application/json",
            json!({"error": "x".repeat(10_000), "state": "y"})
                .to_string()
                .into_bytes(),
        ),
        ("application/json", vec![b'{'; 3 * 1024 * 1024]),
        (
            "application/x-www-form-urlencoded",
            b"code=x&state=y".to_vec(),
        ),
    ];
    for (content_type, body) in bodies {
        let resp = h
            .http
            .post(&callback)
            .bearer_auth(&user)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("send");
        statuses.push(("callback body", resp.status().as_u16()));
    }

    // Random bytes in every path segment and as bearer tokens.
    let mut rng = Lcg(0x0067_7261_6e74_7279);
    let templates = [
        "/api/v1/atlassian/admin/connections/{}/access-token",
        "/api/v1/atlassian/admin/connections/{}",
        "/api/v1/{}/connection/status",
        "/api/v1/atlassian/{}",
        "/{}",
    ];
    for i in 0..300 {
        let len = 1 + (rng.next() % 40) as usize;
        let raw = rng.bytes(len);
        let segment: String = url::form_urlencoded::byte_serialize(&raw)
            .collect::<String>()
            .replace('+', "%20");
        let path = templates[i % templates.len()].replace("{}", &segment);
        let method = ["GET", "POST", "DELETE", "PUT"][i % 4];
        let token = if i % 7 == 0 {
            String::from_utf8_lossy(&rng.bytes(30)).replace(['\r', '\n'], "")
        } else {
            admin.clone()
        };
        let req = h
            .http
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
                h.url(&path),
            )
            .header("authorization", format!("Bearer {token}"));
        match req.send().await {
            Ok(resp) => statuses.push(("random path", resp.status().as_u16())),
            Err(e) => assert!(e.is_builder(), "the server must answer: {e}"),
        }
    }
    for (what, status) in &statuses {
        assert!(*status < 500, "{what}: got {status}");
    }
    assert!(
        statuses.iter().any(|(_, s)| *s == 413),
        "an oversized body is refused with 413"
    );
    assert!(
        statuses.iter().any(|(_, s)| *s == 415),
        "a wrong content type is refused with 415"
    );

    // The server is alive and alice's connection is intact.
    let (status, body) = h
        .call(
            "GET",
            "/api/v1/atlassian/connection/status",
            Some("alice"),
            None,
        )
        .await;
    assert_eq!((status.as_u16(), &body["status"]), (200, &json!("active")));
    assert_eq!(
        h.http
            .get(h.url("/healthz"))
            .send()
            .await
            .expect("healthz")
            .status(),
        200
    );
    assert_eq!(h.store.list_connections(None).await.expect("list").len(), 1);
}

async fn admin_sql(sql: String) {
    use sqlx::Connection;
    let admin = std::env::var(grantry_server::testing::POSTGRES_URL_VAR).expect("postgres url");
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("admin connection");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .expect("admin sql");
}

#[tokio::test]
async fn a_database_outage_answers_503_and_recovers_without_loss() {
    let Some(db) = TestDatabase::postgres().await else {
        eprintln!(
            "note: GRANTRY_TEST_POSTGRES_URL unset; the database outage test needs PostgreSQL"
        );
        return;
    };
    let name = url::Url::parse(&db.url)
        .expect("url")
        .path()
        .trim_start_matches('/')
        .to_owned();
    let h = Harness::start(&db, fake_config(), true).await;
    h.connect("alice").await;

    admin_sql(format!(
        "ALTER DATABASE {name} ALLOW_CONNECTIONS false; \
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    ))
    .await;
    let ready = h.http.get(h.url("/readyz")).send().await.expect("readyz");
    assert_eq!(ready.status(), 503);
    let (status, body) = h
        .call(
            "GET",
            "/api/v1/atlassian/connection/status",
            Some("alice"),
            None,
        )
        .await;
    assert_eq!(
        (status.as_u16(), body["error"].as_str()),
        (503, Some("database_unavailable")),
        "{body}"
    );
    let (status, _) = h
        .call(
            "POST",
            "/api/v1/atlassian/connection/authorize",
            Some("alice"),
            None,
        )
        .await;
    assert_eq!(status, 503);
    assert_eq!(
        h.http
            .get(h.url("/healthz"))
            .send()
            .await
            .expect("healthz")
            .status(),
        200,
        "alive"
    );

    admin_sql(format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true")).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while h
        .http
        .get(h.url("/readyz"))
        .send()
        .await
        .expect("readyz")
        .status()
        != 200
    {
        assert!(std::time::Instant::now() < deadline, "no recovery");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = h
        .call(
            "GET",
            "/api/v1/atlassian/connection/status",
            Some("alice"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "active", "nothing lost: {body}");
    assert_eq!(body["sites"].as_array().map(Vec::len), Some(2));
    drop(h);
    db.cleanup().await;
}

#[tokio::test]
async fn a_hanging_upstream_times_out_and_the_server_stays_responsive() {
    let fake = FakeAtlassian::start(fake_config()).await.expect("fake");
    let jwt = "hang-jwt";
    let mut scratch = atlassian_env(Scratch::new(), &fake, &KeyRing::generate_key_base64(), jwt)
        .with("ATLASSIAN_HTTP_TIMEOUT", "1");
    let server = scratch.serve().await;
    let (user, _) = alice_and_admin(jwt);
    let http = reqwest::Client::new();
    let auth: serde_json::Value = http
        .post(server.url("/api/v1/atlassian/connection/authorize"))
        .bearer_auth(&user)
        .send()
        .await
        .expect("authorize")
        .json()
        .await
        .expect("json");
    fake.fake
        .fail_next_token_calls(1, Failure::Delay(Duration::from_secs(20)));
    let code = fake.fake.issue_code(grantry::atlassian::DEFAULT_SCOPES);
    let hanging = {
        let (http, url, user) = (
            http.clone(),
            server.url("/api/v1/atlassian/connection/callback"),
            user.clone(),
        );
        tokio::spawn(async move {
            let resp = http
                .post(url)
                .bearer_auth(user)
                .json(&json!({"code": code, "state": auth["state"]}))
                .send()
                .await
                .expect("callback");
            (
                resp.status().as_u16(),
                resp.text().await.unwrap_or_default(),
            )
        })
    };
    for _ in 0..5 {
        let health = http
            .get(server.url("/healthz"))
            .send()
            .await
            .expect("healthz");
        assert_eq!(
            health.status(),
            200,
            "the server answers while an upstream call hangs"
        );
    }
    let (status, body) = hanging.await.expect("join");
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains("upstream_unavailable") && body.contains("timed out"),
        "{body}"
    );
    let status = http
        .get(server.url("/api/v1/atlassian/connection/status"))
        .bearer_auth(&user)
        .send()
        .await
        .expect("status")
        .status();
    assert_eq!(
        status, 200,
        "nothing was written and the server still serves"
    );
}
