//! Load run against the release binary with wrk: the status route, the admin access-token route
//! (fresh token, no refresh), and a bare axum hello server as the ceiling; SQLite, and PostgreSQL
//! when `GRANTRY_TEST_POSTGRES_URL` is set. Every figure is the median of `RUNS` wrk runs, the
//! ceiling's runs interleaved with the routes' so that both see the same machine. Run it through
//! `bench/load.sh`.
//!
//! Variants, each against the same ceiling: this build as configured by default (`LOG_LEVEL=warn`);
//! with `LOAD_TRACING=1`, this build logging every request (`LOG_LEVEL=info`) and this build
//! exporting OTLP traces (every trace, and 10 % of them) to a receiver in this process; with
//! `LOAD_BASELINE_BIN=<path of another grantry binary>`, that binary too (an A/B run).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use grantry::core::keyring::KeyRing;
use grantry_atlassian_fake::FakeAtlassian;
use grantry_server::JwtAuthenticator;
use grantry_server::testing::TestDatabase;
use secrecy::SecretString;
use serde_json::{Value, json};

const CONNECTIONS: &str = "64";
const DURATION: &str = "10s";
const THREADS: &str = "1";
/// wrk runs per figure; the median is reported.
const RUNS: usize = 3;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn peak_rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.0.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .unwrap_or(0)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

async fn wait_up(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(url)
        .await
        .map(|r| !r.status().is_success())
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "{url} did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Figures {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn parse_ms(text: &str) -> f64 {
    let text = text.trim();
    let (number, factor) = if let Some(v) = text.strip_suffix("us") {
        (v, 0.001)
    } else if let Some(v) = text.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = text.strip_suffix('s') {
        (v, 1000.0)
    } else {
        (text, 1.0)
    };
    number.parse::<f64>().unwrap_or(f64::NAN) * factor
}

fn wrk(url: &str, token: Option<&str>) -> Figures {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t",
        THREADS,
        "-c",
        CONNECTIONS,
        "-d",
        DURATION,
        "--latency",
    ]);
    if let Some(token) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    let out = cmd
        .arg(url)
        .output()
        .expect("wrk (install it: apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("Non-2xx"),
        "errors during the run of {url}:\n{text}"
    );
    let find = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(str::to_owned))
            .unwrap_or_else(|| panic!("no `{prefix}` in wrk output:\n{text}"))
    };
    Figures {
        rps: find("Requests/sec:").trim().parse().unwrap_or(f64::NAN),
        p50_ms: parse_ms(&find("50%")),
        p99_ms: parse_ms(&find("99%")),
    }
}

/// A grantry binary to measure and the environment it gets beyond the defaults.
struct Variant {
    label: String,
    bin: String,
    env: Vec<(String, String)>,
}

async fn backend(
    label: &str,
    variant: &Variant,
    url: &str,
    hello_url: &str,
    fake: &grantry_atlassian_fake::RunningFake,
) {
    let label = format!("{label}, {}", variant.label);
    let label = label.as_str();
    let port = free_port();
    let jwt = KeyRing::generate_key_base64();
    let server = Proc(
        Command::new(&variant.bin)
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("GRANTRY_BIND", format!("127.0.0.1:{port}"))
            .env("DATABASE_URL", url)
            .env("GRANTRY_ENCRYPTION_KEY", KeyRing::generate_key_base64())
            .env("GRANTRY_JWT_SECRET", &jwt)
            .env("LOG_LEVEL", "warn")
            .env("ENABLE_ATLASSIAN_INTEGRATION", "true")
            .env("ATLASSIAN_CLIENT_ID", &fake.fake.config().client_id)
            .env("ATLASSIAN_CLIENT_SECRET", &fake.fake.config().client_secret)
            .env("ATLASSIAN_REDIRECT_URI", &fake.fake.config().redirect_uri)
            .env("ATLASSIAN_AUTH_URL", &fake.base_url)
            .env("ATLASSIAN_API_URL", &fake.base_url)
            .envs(variant.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("grantry serve"),
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_up(&format!("{base}/readyz")).await;
    let secret = SecretString::from(jwt);
    let user =
        JwtAuthenticator::issue(&secret, "alice", "user", Duration::from_secs(3600)).expect("sign");
    let admin =
        JwtAuthenticator::issue(&secret, "root", "admin", Duration::from_secs(3600)).expect("sign");
    let http = reqwest::Client::new();
    let auth: Value = http
        .post(format!("{base}/api/v1/atlassian/connection/authorize"))
        .bearer_auth(&user)
        .send()
        .await
        .expect("authorize")
        .json()
        .await
        .expect("json");
    let code = fake.fake.issue_code(grantry::atlassian::DEFAULT_SCOPES);
    let resp = http
        .post(format!("{base}/api/v1/atlassian/connection/callback"))
        .bearer_auth(&user)
        .json(&json!({"code": code, "state": auth["state"]}))
        .send()
        .await
        .expect("callback");
    assert_eq!(resp.status(), 200, "connect");

    let status_url = format!("{base}/api/v1/atlassian/connection/status");
    let token_url = format!("{base}/api/v1/atlassian/admin/connections/alice/access-token");
    let (mut hellos, mut statuses, mut tokens) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        hellos.push(wrk(hello_url, None));
        statuses.push(wrk(&status_url, Some(&user)));
        tokens.push(wrk(&token_url, Some(&admin)));
    }
    let rss = server.peak_rss_kib();
    let hello = median(hellos);
    println!(
        "| {label} | bare axum hello (ceiling) | {:.0} | {:.2} | {:.2} | 100% |",
        hello.rps, hello.p50_ms, hello.p99_ms
    );
    for (route, f) in [
        ("GET connection/status", median(statuses)),
        ("GET admin access-token", median(tokens)),
    ] {
        println!(
            "| {label} | {route} | {:.0} | {:.2} | {:.2} | {:.0}% |",
            f.rps,
            f.p50_ms,
            f.p99_ms,
            100.0 * f.rps / hello.rps
        );
    }
    println!(
        "| {label} | peak RSS of grantry serve | {:.1} MiB | | | |",
        rss as f64 / 1024.0
    );
}

/// The median of each figure over the runs.
fn median(runs: Vec<Figures>) -> Figures {
    let mid = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Figures {
        rps: mid(runs.iter().map(|f| f.rps).collect()),
        p50_ms: mid(runs.iter().map(|f| f.p50_ms).collect()),
        p99_ms: mid(runs.iter().map(|f| f.p99_ms).collect()),
    }
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let hello_bin = std::env::var("HELLO_BIN")
            .expect("HELLO_BIN: path of the release `hello` example (bench/load.sh sets it)");
        let port = free_port();
        let hello_proc = Proc(
            Command::new(hello_bin)
                .arg(format!("127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .spawn()
                .expect("hello"),
        );
        let hello_url = format!("http://127.0.0.1:{port}/hello");
        wait_up(&hello_url).await;
        println!(
            "\nwrk -t{THREADS} -c{CONNECTIONS} -d{DURATION}, median of {RUNS} runs, release builds, loopback\n"
        );
        println!("| database | route | requests/s | p50 ms | p99 ms | of ceiling |");
        println!("| --- | --- | ---: | ---: | ---: | ---: |");

        let fake = FakeAtlassian::start(grantry_atlassian_fake::FakeConfig::default())
            .await
            .expect("fake");
        let mut variants = vec![Variant {
            label: "this build".into(),
            bin: env!("CARGO_BIN_EXE_grantry").into(),
            env: Vec::new(),
        }];
        if std::env::var("LOAD_TRACING").is_ok_and(|v| v == "1") {
            variants.push(Variant {
                label: "this build, LOG_LEVEL=info".into(),
                bin: env!("CARGO_BIN_EXE_grantry").into(),
                env: vec![("LOG_LEVEL".into(), "info".into())],
            });
            let sink = otlp_sink().await;
            variants.push(Variant {
                label: "this build, OTLP traces on".into(),
                bin: env!("CARGO_BIN_EXE_grantry").into(),
                env: vec![("OTEL_EXPORTER_OTLP_ENDPOINT".into(), sink.clone())],
            });
            variants.push(Variant {
                label: "this build, OTLP traces on, 10 % sampled".into(),
                bin: env!("CARGO_BIN_EXE_grantry").into(),
                env: vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), sink),
                    ("OTEL_TRACES_SAMPLER".into(), "parentbased_traceidratio".into()),
                    ("OTEL_TRACES_SAMPLER_ARG".into(), "0.1".into()),
                ],
            });
        }
        if let Ok(bin) = std::env::var("LOAD_BASELINE_BIN") {
            variants.push(Variant {
                label: format!("baseline {bin}"),
                bin,
                env: Vec::new(),
            });
        }
        for variant in &variants {
            let sqlite = TestDatabase::sqlite();
            backend("SQLite", variant, &sqlite.url, &hello_url, &fake).await;
        }
        if let Some(pg) = TestDatabase::postgres().await {
            for variant in &variants {
                backend("PostgreSQL", variant, &pg.url, &hello_url, &fake).await;
            }
            pg.cleanup().await;
        } else {
            println!("(PostgreSQL skipped: GRANTRY_TEST_POSTGRES_URL unset)");
        }
        println!(
            "| — | peak RSS of hello | {:.1} MiB | | | |",
            hello_proc.peak_rss_kib() as f64 / 1024.0
        );
    });
}

/// An OTLP/HTTP receiver in this process that accepts every export and keeps nothing; its
/// base URL.
async fn otlp_sink() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(|_body: axum::body::Bytes| async {
            (
                [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
                Vec::<u8>::new(),
            )
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    base
}
