//! `grantry demo` as README.md tells a new user to run it: the printed steps reach a connection.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{Scratch, free_port};

struct Demo(std::process::Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_demo_reaches_a_connected_state_with_its_printed_steps() {
    let port = free_port();
    let scratch = Scratch::new()
        .with("GRANTRY_BIND", &format!("127.0.0.1:{port}"))
        .with("ATLASSIAN_CLIENT_SECRET", "a-real-looking-secret")
        .with("ATLASSIAN_AUTH_URL", "https://auth.atlassian.com");
    let mut child = scratch
        .command(&["demo"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn demo");
    let stdout = child.stdout.take().expect("stdout");
    let demo = Demo(child);
    let lines = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let done = line.starts_with("Ctrl-C");
            lines.push(line);
            if done {
                break;
            }
        }
        lines
    })
    .await
    .expect("read stdout");
    let find = |prefix: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no line starting with {prefix}: {lines:#?}"))
    };
    let user = find("USER=");
    let admin = find("ADMIN=");
    let text = lines.join("\n");
    let fake = text
        .split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:") && !w.contains(&port.to_string()))
        .map(|w| w.trim_end_matches([',', '/']).to_owned())
        .expect("fake url printed");
    assert!(
        !fake.contains("atlassian.com"),
        "the demo never points at Atlassian"
    );

    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let deadline = Instant::now() + Duration::from_secs(30);
    while http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "demo server did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let auth: Value = http
        .post(format!("{base}/api/v1/atlassian/connection/authorize"))
        .bearer_auth(&user)
        .send()
        .await
        .expect("authorize")
        .json()
        .await
        .expect("json");
    let authorization_url = auth["authorization_url"].as_str().expect("url");
    assert!(
        authorization_url.starts_with(&fake),
        "{authorization_url} at the fake {fake}"
    );
    let page = http
        .get(authorization_url)
        .send()
        .await
        .expect("consent page");
    assert_eq!(page.status(), 200);
    let q: std::collections::BTreeMap<String, String> = url::Url::parse(authorization_url)
        .expect("url")
        .query_pairs()
        .into_owned()
        .collect();
    let resp = http
        .post(format!("{fake}/authorize/decision"))
        .form(&[
            ("decision", "accept"),
            ("client_id", q["client_id"].as_str()),
            ("redirect_uri", q["redirect_uri"].as_str()),
            ("scope", q["scope"].as_str()),
            ("state", q["state"].as_str()),
        ])
        .send()
        .await
        .expect("accept");
    let location = resp.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let back: std::collections::BTreeMap<String, String> = url::Url::parse(&location)
        .expect("redirect")
        .query_pairs()
        .into_owned()
        .collect();
    let connected: Value = http
        .post(format!("{base}/api/v1/atlassian/connection/callback"))
        .bearer_auth(&user)
        .json(&json!({"code": back["code"], "state": back["state"]}))
        .send()
        .await
        .expect("callback")
        .json()
        .await
        .expect("json");
    assert_eq!(connected["connected"], true, "{connected}");
    assert_eq!(connected["sites"].as_array().map(Vec::len), Some(2));
    let list: Value = http
        .get(format!("{base}/api/v1/atlassian/admin/connections"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("admin list")
        .json()
        .await
        .expect("json");
    assert_eq!(list[0]["user_id"], "demo-user");
    drop(demo);
}
