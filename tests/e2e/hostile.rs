//! Hostile clients at the HTTP layer, each attack reproduced against the real server: slow and
//! silent sockets, more connections than the cap, cross-site writes with the cookie, live tokens
//! taken with the cookie, an unprotected `/metrics`, the demo open to the network.

use std::time::{Duration, Instant};

use grantry::core::keyring::KeyRing;
use grantry::core::store::TokenStore;
use grantry_atlassian_fake::{BETA_SITE_ID, FakeAtlassian};
use grantry_server::testing::TestDatabase;
use grantry_server::{ApiSettings, CrossSitePolicy, MetricsToken};
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{Harness, fake_config, spawn_server};
use crate::helpers::{Scratch, free_port, stderr};
use crate::process::{alice_and_admin, atlassian_env};

const API: &str = "/api/v1/atlassian";
/// How long a test waits for the server to close a connection before calling it held.
const GENEROUS: Duration = Duration::from_secs(30);

fn host_of(base: &str) -> &str {
    base.trim_start_matches("http://")
}

/// Waits until the server closes `stream`, dripping one byte of header every 100 ms meanwhile
/// when `drip`; returns what the server sent. Panics if the connection is still open after
/// [`GENEROUS`].
async fn closed_by_server(mut stream: TcpStream, drip: bool) -> String {
    let deadline = Instant::now() + GENEROUS;
    let mut received = Vec::new();
    let mut buf = [0u8; 2048];
    loop {
        assert!(
            Instant::now() < deadline,
            "the server still holds the connection after {GENEROUS:?}"
        );
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            },
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                if drip && stream.write_all(b"a").await.is_err() {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&received).into_owned()
}

/// Sends one complete request on `stream` and reads its (small) response.
async fn one_request(stream: &mut TcpStream, host: &str, path: &str) -> String {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut buf = vec![0u8; 4096];
    let mut text = String::new();
    // Probe responses are tiny and fixed-size: read until the body has arrived.
    while !text.contains("\r\n\r\n{") || !text.ends_with('}') {
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed before the response: {text}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    text
}

#[tokio::test]
async fn slow_and_silent_clients_are_dropped_while_others_are_served() {
    let fake = FakeAtlassian::start(fake_config()).await.expect("fake");
    let jwt = "slow-jwt";
    let mut scratch = atlassian_env(Scratch::new(), &fake, &KeyRing::generate_key_base64(), jwt)
        .with("GRANTRY_HEADER_READ_TIMEOUT", "1")
        .with("GRANTRY_KEEP_ALIVE_TIMEOUT", "2")
        .with("GRANTRY_REQUEST_TIMEOUT", "2");
    let server = scratch.serve().await;
    let addr = host_of(&server.base).to_owned();
    let (user, _) = alice_and_admin(jwt);

    let mut held = Vec::new();
    // 20 sockets sending their headers a byte at a time, one that never says anything.
    for _ in 0..20 {
        let mut s = TcpStream::connect(&addr).await.expect("connect");
        s.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ").as_bytes())
            .await
            .expect("write");
        held.push(tokio::spawn(closed_by_server(s, true)));
    }
    let silent = TcpStream::connect(&addr).await.expect("connect");
    held.push(tokio::spawn(closed_by_server(silent, false)));
    // One that made a request and then idles on keep-alive, one that starts its second request
    // and then drips it.
    let mut idle = TcpStream::connect(&addr).await.expect("connect");
    assert!(
        one_request(&mut idle, &addr, "/healthz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    held.push(tokio::spawn(closed_by_server(idle, false)));
    let mut second = TcpStream::connect(&addr).await.expect("connect");
    assert!(
        one_request(&mut second, &addr, "/healthz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    second
        .write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ").as_bytes())
        .await
        .expect("write");
    held.push(tokio::spawn(closed_by_server(second, true)));
    // One whose body never finishes: the request times out with a JSON 408.
    let mut slow_body = TcpStream::connect(&addr).await.expect("connect");
    slow_body
        .write_all(
            format!(
                "POST {API}/connection/callback HTTP/1.1\r\nHost: {addr}\r\n\
                 Authorization: Bearer {user}\r\nContent-Type: application/json\r\n\
                 X-Request-Id: slow-body-1\r\nContent-Length: 100\r\n\r\n{{\"co"
            )
            .as_bytes(),
        )
        .await
        .expect("write");
    let slow_body = tokio::spawn(closed_by_server(slow_body, false));

    // Meanwhile another client is served.
    let http = reqwest::Client::new();
    let resp = http
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(resp.status(), 200);
    let resp = http
        .get(server.url(&format!("{API}/connection/status")))
        .bearer_auth(&user)
        .send()
        .await
        .expect("status");
    assert_eq!(resp.status(), 200);

    for task in held {
        task.await.expect("every slow or silent socket is closed");
    }
    let answer = slow_body.await.expect("the slow body is answered");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"error\":\"request_timeout\""), "{answer}");
    // The 408 names the request, in its header and its body.
    assert!(answer.contains("x-request-id: slow-body-1\r\n"), "{answer}");
    assert!(
        answer.contains("\"request_id\":\"slow-body-1\""),
        "{answer}"
    );

    // The server still answers after all of that.
    let resp = http
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let mut scratch = Scratch::new()
        .with("GRANTRY_ENCRYPTION_KEY", &KeyRing::generate_key_base64())
        .with("GRANTRY_JWT_SECRET", "jwt")
        .with("GRANTRY_MAX_CONNECTIONS", "2")
        .with("GRANTRY_KEEP_ALIVE_TIMEOUT", "600");
    let server = scratch.serve().await;
    let addr = host_of(&server.base).to_owned();
    // Two kept-alive connections, each proven accepted by an answered request, fill the cap.
    let mut first = TcpStream::connect(&addr).await.expect("connect");
    assert!(
        one_request(&mut first, &addr, "/healthz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    let mut second = TcpStream::connect(&addr).await.expect("connect");
    assert!(
        one_request(&mut second, &addr, "/healthz")
            .await
            .starts_with("HTTP/1.1 200")
    );

    let third = {
        let url = server.url("/healthz");
        tokio::spawn(async move { reqwest::get(url).await.map(|r| r.status().as_u16()) })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !third.is_finished(),
        "a third connection is not served while two hold the cap"
    );
    drop(first);
    let status = tokio::time::timeout(GENEROUS, third)
        .await
        .expect("served once a connection closed")
        .expect("join")
        .expect("answered");
    assert_eq!(status, 200);
    drop(second);
}

/// A cookie header signing `user` in.
fn cookie(h: &Harness, user: &str, role: &str) -> String {
    format!("token={}", h.token(user, role))
}

#[tokio::test]
async fn cross_site_writes_with_the_cookie_are_refused() {
    let db = TestDatabase::sqlite();
    let h = Harness::start(&db, fake_config(), true).await;
    h.connect("alice").await;
    let alice = cookie(&h, "alice", "user");
    let jql = h.url(&format!(
        "{API}/proxy/jira/{BETA_SITE_ID}/rest/api/3/search/jql"
    ));
    let authorize = h.url(&format!("{API}/connection/authorize"));
    let status = |resp: reqwest::Response| async move {
        let code = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        (code, body)
    };

    // The attack of the issue: a text/plain POST from another site, carried by the cookie.
    h.fake.fake.clear_content_requests();
    let (code, body) = status(
        h.http
            .post(&jql)
            .header("cookie", &alice)
            .header("origin", "https://evil.example")
            .header("content-type", "text/plain")
            .body(r#"{"jql":"order by created"}"#)
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(
        (code, body["error"].as_str()),
        (403, Some("cross_site_request")),
        "{body}"
    );
    assert!(
        h.fake.fake.content_requests().is_empty(),
        "nothing reached Atlassian"
    );
    // Cross-site by Fetch Metadata, by Origin, and with neither header.
    for headers in [
        vec![("origin", "https://evil.example")],
        vec![("sec-fetch-site", "cross-site")],
        vec![
            ("sec-fetch-site", "same-site"),
            ("origin", "https://other.localhost"),
        ],
        vec![("origin", "null")],
        vec![],
    ] {
        for (method, url) in [
            ("POST", authorize.clone()),
            ("DELETE", h.url(&format!("{API}/connection"))),
        ] {
            let mut req = h
                .http
                .request(
                    reqwest::Method::from_bytes(method.as_bytes()).expect("m"),
                    &url,
                )
                .header("cookie", &alice);
            for (k, v) in &headers {
                req = req.header(*k, *v);
            }
            let (code, body) = status(req.send().await.expect("send")).await;
            assert_eq!(
                (code, body["error"].as_str()),
                (403, Some("cross_site_request")),
                "{method} {url} with {headers:?}: {body}"
            );
        }
    }
    let (code, body) = h
        .call(
            "GET",
            &format!("{API}/connection/status"),
            Some("alice"),
            None,
        )
        .await;
    assert_eq!((code.as_u16(), &body["connected"]), (200, &json!(true)));

    // The same origin works, shown either way.
    for (k, v) in [
        ("sec-fetch-site", "same-origin"),
        ("origin", h.base.as_str()),
    ] {
        let (code, body) = status(
            h.http
                .post(&authorize)
                .header("cookie", &alice)
                .header(k, v)
                .send()
                .await
                .expect("send"),
        )
        .await;
        assert_eq!(code, 200, "{k}: {v}: {body}");
    }
    let (code, body) = status(
        h.http
            .post(&jql)
            .header("cookie", &alice)
            .header("sec-fetch-site", "same-origin")
            .header("origin", h.base.as_str())
            .json(&json!({"jql": "text ~ \"spectrometer\""}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    // Reads by cookie from anywhere, and bearer writes from anywhere, are unaffected.
    let (code, _) = status(
        h.http
            .get(h.url(&format!("{API}/connection/status")))
            .header("cookie", &alice)
            .header("origin", "https://evil.example")
            .header("sec-fetch-site", "cross-site")
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(code, 200);
    let (code, body) = status(
        h.http
            .post(&jql)
            .bearer_auth(h.token("alice", "user"))
            .header("origin", "https://evil.example")
            .header("sec-fetch-site", "cross-site")
            .json(&json!({"jql": "text ~ \"spectrometer\""}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(code, 200, "{body}");

    // An origin listed in GRANTRY_CSRF_ALLOWED_ORIGINS may write; another port of it may not.
    let allowed = url::Url::parse("https://chat.example.com")
        .expect("url")
        .origin();
    let (base, server) = spawn_server(h.state.clone().with_settings(ApiSettings {
        cross_site: CrossSitePolicy::new(vec![allowed]),
        ..ApiSettings::default()
    }))
    .await;
    for (origin, expected) in [
        ("https://chat.example.com", 200),
        ("https://chat.example.com:8443", 403),
        ("http://chat.example.com", 403),
    ] {
        let (code, body) = status(
            h.http
                .post(format!("{base}{API}/connection/authorize"))
                .header("cookie", &alice)
                .header("origin", origin)
                .header("sec-fetch-site", "cross-site")
                .send()
                .await
                .expect("send"),
        )
        .await;
        assert_eq!(code, expected, "{origin}: {body}");
    }
    server.abort();
}

#[tokio::test]
async fn live_tokens_are_handed_out_by_bearer_only_uncached_and_audited() {
    for db in TestDatabase::all().await {
        let h = Harness::start(&db, fake_config(), true).await;
        h.connect("alice").await;
        let route = h.url(&format!("{API}/admin/connections/alice/access-token"));

        let resp = h
            .http
            .get(&route)
            .bearer_auth(h.token("admin-1", "admin"))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 200, "{}", db.kind);
        assert_eq!(
            resp.headers()
                .get("cache-control")
                .and_then(|v| v.to_str().ok()),
            Some("no-store")
        );
        let body: Value = resp.json().await.expect("json");
        assert!(body["access_token"].as_str().is_some_and(|t| !t.is_empty()));

        // The admin's cookie, even from the same origin, gets no token and leaves no audit row.
        let resp = h
            .http
            .get(&route)
            .header("cookie", cookie(&h, "admin-2", "admin"))
            .header("sec-fetch-site", "same-origin")
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 403);
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["error"], "bearer_required", "{body}");
        assert!(!body.to_string().contains("access_token\":"), "{body}");

        let (status, list) = h
            .call(
                "GET",
                &format!("{API}/admin/token-handouts"),
                Some("admin-3"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{list}");
        let rows = list.as_array().expect("array");
        assert_eq!(rows.len(), 1, "{list}");
        assert_eq!(
            (
                &rows[0]["admin_id"],
                &rows[0]["user_id"],
                &rows[0]["provider"]
            ),
            (&json!("admin-1"), &json!("alice"), &json!("atlassian"))
        );
        assert!(rows[0]["handed_out_at"].as_str().is_some(), "{list}");

        // More hand-outs, then the audit page by page, newest first.
        for admin in ["admin-4", "admin-5", "admin-6", "admin-7"] {
            let (status, _) = h
                .call(
                    "GET",
                    &format!("{API}/admin/connections/alice/access-token"),
                    Some(admin),
                    None,
                )
                .await;
            assert_eq!(status, 200);
        }
        let mut next = Some(h.url(&format!("{API}/admin/token-handouts?limit=2")));
        let mut admins = Vec::new();
        let mut ids = Vec::new();
        let mut pages = 0;
        while let Some(url) = next.take() {
            pages += 1;
            let resp = h
                .http
                .get(&url)
                .bearer_auth(h.token("admin-3", "admin"))
                .send()
                .await
                .expect("page");
            assert_eq!(resp.status(), 200);
            next = resp
                .headers()
                .get("link")
                .and_then(|v| v.to_str().ok())
                .map(|link| {
                    assert!(link.ends_with(">; rel=\"next\""), "{link}");
                    let target = link.trim_start_matches('<').split('>').next().expect("uri");
                    h.url(target)
                });
            let page: Vec<Value> = resp.json().await.expect("json");
            assert!(page.len() <= 2);
            for row in page {
                ids.push(row["id"].as_i64().expect("id"));
                admins.push(row["admin_id"].as_str().expect("admin").to_owned());
            }
        }
        assert_eq!(pages, 3, "{admins:?}");
        assert_eq!(
            admins,
            ["admin-7", "admin-6", "admin-5", "admin-4", "admin-1"],
            "{}",
            db.kind
        );
        assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
        assert_eq!(
            h.store
                .token_handouts("atlassian", None, 100)
                .await
                .expect("audit")
                .len(),
            5
        );

        for (query, expected) in [
            ("limit=0", 400),
            ("limit=1001", 400),
            ("limit=abc", 400),
            ("cursor=not-a-cursor", 400),
            ("cursor=-4", 400),
        ] {
            let (status, body) = h
                .call(
                    "GET",
                    &format!("{API}/admin/token-handouts?{query}"),
                    Some("admin-3"),
                    None,
                )
                .await;
            assert_eq!(
                (status.as_u16(), body["error"].as_str()),
                (expected, Some("invalid_request")),
                "{query}: {body}"
            );
        }
        let (status, _) = h
            .call(
                "GET",
                &format!("{API}/admin/token-handouts"),
                Some("alice"),
                None,
            )
            .await;
        assert_eq!(status, 403, "the audit is for admins");

        // GRANTRY_ACCESS_TOKEN_ROUTE=false: the route is gone, the audit stays readable.
        let (base, server) = spawn_server(h.state.clone().with_settings(ApiSettings {
            access_token_route: false,
            ..ApiSettings::default()
        }))
        .await;
        let resp = h
            .http
            .get(format!("{base}{API}/admin/connections/alice/access-token"))
            .bearer_auth(h.token("admin-1", "admin"))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 404);
        let body: Value = resp.json().await.expect("json");
        assert!(body.get("access_token").is_none(), "{body}");
        let resp = h
            .http
            .get(format!("{base}{API}/admin/token-handouts"))
            .bearer_auth(h.token("admin-1", "admin"))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 200);
        server.abort();
        drop(h);
        db.cleanup().await;
    }
}

#[tokio::test]
async fn no_audit_row_no_token() {
    for db in TestDatabase::all().await {
        let h = Harness::start(&db, fake_config(), true).await;
        h.connect("alice").await;
        sqlx::query("DROP TABLE token_handouts")
            .execute(h.store.pool())
            .await
            .expect("drop");
        let route = h.url(&format!("{API}/admin/connections/alice/access-token"));
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..16 {
            let request = h
                .http
                .get(&route)
                .bearer_auth(h.token(&format!("admin-{i}"), "admin"));
            calls.spawn(async move {
                let resp = request.send().await.expect("send");
                (resp.status(), resp.text().await.expect("body"))
            });
        }
        for (status, body) in calls.join_all().await {
            assert_eq!(status, 503, "{}: {body}", db.kind);
            assert!(body.contains("database_unavailable"), "{body}");
            assert!(!body.contains("access_token"), "{body}");
        }
        drop(h);
        db.cleanup().await;
    }
}

#[tokio::test]
async fn metrics_with_a_token_setting_need_that_token() {
    let db = TestDatabase::sqlite();
    let h = Harness::start(&db, fake_config(), true).await;
    let secret = "metrics-token-0123456789";
    let (base, server) = spawn_server(h.state.clone().with_settings(ApiSettings {
        metrics_token: Some(MetricsToken::new(&SecretString::from(secret.to_owned()))),
        ..ApiSettings::default()
    }))
    .await;
    let metrics = format!("{base}/metrics");
    for auth in [
        None,
        Some("Bearer wrong-token-0123456789".to_owned()),
        Some(format!("Bearer {secret}x")),
        Some(format!("Basic {secret}")),
        Some(format!("Bearer {}", h.token("admin-1", "admin"))),
    ] {
        let mut req = h.http.get(&metrics);
        if let Some(auth) = &auth {
            req = req.header("authorization", auth);
        }
        let resp = req.send().await.expect("send");
        assert_eq!(resp.status(), 401, "{auth:?}");
        assert_eq!(
            resp.headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some("Bearer")
        );
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["error"], "unauthorized");
        assert!(!body.to_string().contains(secret));
    }
    let resp = h
        .http
        .get(&metrics)
        .bearer_auth(secret)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    assert!(
        resp.text()
            .await
            .expect("text")
            .contains("grantry_database_up 1")
    );
    // Without the setting, /metrics stays open (behind the operator's network policy).
    let resp = h.http.get(h.url("/metrics")).send().await.expect("send");
    assert_eq!(resp.status(), 200);
    server.abort();
}

#[tokio::test]
async fn the_demo_refuses_a_public_bind_unless_asked() {
    let port = free_port();
    let scratch = Scratch::new().with("GRANTRY_BIND", &format!("0.0.0.0:{port}"));
    let out = scratch.run(&["demo"]);
    assert!(!out.status.success(), "the demo must not start on 0.0.0.0");
    let err = stderr(&out);
    assert!(
        err.contains("GRANTRY_BIND") && err.contains("--allow-remote"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
            .await
            .is_err(),
        "nothing listens"
    );

    // Asked for with the flag, it starts (and says what it exposes).
    let mut child = scratch
        .command(&["demo", "--allow-remote"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn demo");
    let deadline = Instant::now() + GENEROUS;
    let mut up = false;
    while Instant::now() < deadline {
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await
            && r.status() == StatusCode::OK
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("demo output");
    assert!(up, "the demo came up with --allow-remote: {}", stderr(&out));
    assert!(stderr(&out).contains("not on loopback"), "{}", stderr(&out));
}
