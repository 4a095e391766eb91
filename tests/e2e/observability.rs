//! What an operator sees: `/metrics` histograms after a connect, a refresh storm and an upstream
//! failure (parsed as Prometheus text), request ids in error bodies, and OpenTelemetry traces
//! exported over OTLP/HTTP to a receiver in this test, with the trace context carried upstream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use grantry::core::keyring::KeyRing;
use grantry::core::refresh::RefreshSettings;
use grantry_atlassian_fake::{ACME_SITE_ID, Failure, FakeAtlassian};
use grantry_server::outbox::Outbox;
use grantry_server::testing::{TestDatabase, make_access_token_due};
use grantry_server::webhooks::{WebhookSecret, WebhookSettings, Webhooks};
use openmetrics_parser::{MetricsExposition, PrometheusType, PrometheusValue};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::task::JoinSet;

use crate::harness::{Harness, fake_config, spawn_server};
use crate::helpers::Scratch;
use crate::lifecycle::get_token;
use crate::process::{alice_and_admin, atlassian_env, connect_alice};

const TOKEN_ROUTE: &str = "/api/v1/atlassian/admin/connections/alice/access-token";
const TOKEN_TEMPLATE: &str = "/api/v1/atlassian/admin/connections/{user_id}/access-token";

type Exposition = MetricsExposition<PrometheusType, PrometheusValue>;

async fn scrape(h: &Harness) -> Exposition {
    scrape_at(&h.http, &h.base).await
}

async fn scrape_at(http: &reqwest::Client, base: &str) -> Exposition {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    openmetrics_parser::prometheus::parse_prometheus(&text).expect("Prometheus text")
}

/// The samples of family `name` whose labels include all of `labels`.
fn series<'a>(
    metrics: &'a Exposition,
    name: &str,
    labels: &'a [(&str, &str)],
) -> impl Iterator<Item = &'a PrometheusValue> + 'a {
    metrics
        .families
        .get(name)
        .into_iter()
        .flat_map(|family| family.iter_samples())
        .filter(move |sample| {
            let set = sample.get_labelset().expect("labels");
            labels
                .iter()
                .all(|(k, v)| set.get_label_value(k) == Some(*v))
        })
        .map(|sample| &sample.value)
}

/// The observation count of histogram `name` summed over the series with all of `labels`.
fn histogram_count(metrics: &Exposition, name: &str, labels: &[(&str, &str)]) -> u64 {
    series(metrics, name, labels)
        .map(|value| match value {
            PrometheusValue::Histogram(h) => h.count.expect("a _count sample"),
            other => panic!("{name} is not a histogram: {other:?}"),
        })
        .sum()
}

/// The value of the unlabelled counter or gauge `name`.
fn number(metrics: &Exposition, name: &str) -> f64 {
    match series(metrics, name, &[]).next() {
        Some(PrometheusValue::Counter(c)) => c.value.as_f64(),
        Some(PrometheusValue::Gauge(n) | PrometheusValue::Unknown(n)) => n.as_f64(),
        other => panic!("{name}: {other:?}"),
    }
}

#[tokio::test]
async fn metrics_histograms_count_a_connect_a_storm_and_a_failure() {
    for db in TestDatabase::all().await {
        let kind = db.kind;
        let h = Harness::start_with(&db, fake_config(), true, RefreshSettings::default()).await;
        h.connect("alice").await;
        let admin = h.token("admin-1", "admin");

        // A storm: 20 concurrent callers of a due token, one refresh.
        make_access_token_due(&h.store, "alice", "atlassian").await;
        let mut calls = JoinSet::new();
        for _ in 0..20 {
            let (http, url, admin) = (h.http.clone(), h.url(TOKEN_ROUTE), admin.clone());
            calls.spawn(async move { get_token(&http, url, &admin).await });
        }
        while let Some(done) = calls.join_next().await {
            let (status, body) = done.expect("join");
            assert_eq!(status, 200, "{kind}: {body}");
        }
        // An upstream failure: the token endpoint answers garbage three times, the call is a 502.
        make_access_token_due(&h.store, "alice", "atlassian").await;
        h.fake.fake.fail_next_token_calls(3, Failure::Malformed);
        let (status, body) = get_token(&h.http, h.url(TOKEN_ROUTE), &admin).await;
        assert_eq!(status, 502, "{kind}: {body}");

        let metrics = scrape(&h).await;
        let http = "grantry_http_request_duration_seconds";
        assert_eq!(
            histogram_count(
                &metrics,
                http,
                &[
                    ("route", TOKEN_TEMPLATE),
                    ("method", "GET"),
                    ("status", "2xx")
                ]
            ),
            20,
            "{kind}"
        );
        assert_eq!(
            histogram_count(
                &metrics,
                http,
                &[("route", TOKEN_TEMPLATE), ("status", "5xx")]
            ),
            1,
            "{kind}"
        );
        assert!(
            histogram_count(
                &metrics,
                http,
                &[
                    ("route", "/api/v1/atlassian/connection/callback"),
                    ("status", "2xx")
                ]
            ) >= 1,
            "{kind}"
        );
        let family = metrics.families.get(http).expect("http histogram");
        assert!(
            family.iter_samples().all(|sample| !sample
                .get_labelset()
                .expect("labels")
                .get_label_value("route")
                .is_some_and(|r| r.contains("alice"))),
            "{kind}: routes are templates, never raw paths"
        );

        let upstream = "grantry_upstream_request_duration_seconds";
        for (operation, outcome, n) in [
            ("exchange_code", "ok", 1),
            ("account", "ok", 1),
            ("refresh", "ok", 1),
            ("refresh", "transient", 3),
        ] {
            assert_eq!(
                histogram_count(
                    &metrics,
                    upstream,
                    &[
                        ("provider", "atlassian"),
                        ("operation", operation),
                        ("outcome", outcome)
                    ]
                ),
                n,
                "{kind}: {operation} {outcome}"
            );
        }
        let refresh = "grantry_refresh_duration_seconds";
        assert_eq!(
            histogram_count(&metrics, refresh, &[("outcome", "ok")]),
            1,
            "{kind}"
        );
        assert_eq!(
            histogram_count(&metrics, refresh, &[("outcome", "transient")]),
            1,
            "{kind}"
        );
        let wait = "grantry_refresh_wait_seconds";
        assert_eq!(
            histogram_count(&metrics, wait, &[("role", "winner")]),
            1,
            "{kind}: the storm had one winner"
        );
        // The others either waited and were served by the winner's refresh, or came after it
        // and found the token fresh (no wait).
        let served = histogram_count(&metrics, wait, &[("role", "waiter")])
            + histogram_count(&metrics, wait, &[("role", "cross_replica")]);
        assert!(served <= 19, "{kind}: {served}");
        assert_eq!(
            histogram_count(&metrics, wait, &[("role", "failed")]),
            1,
            "{kind}: the failing call"
        );
        // The counters are still there under their names, and agree with the histograms.
        assert_eq!(number(&metrics, "grantry_refreshes_succeeded_total"), 1.0);
        assert_eq!(
            number(&metrics, "grantry_refresh_waiters_served_total"),
            served as f64,
            "{kind}"
        );
        assert_eq!(number(&metrics, "grantry_database_up"), 1.0);
        let active = [("provider", "atlassian"), ("status", "active")];
        assert_eq!(
            series(&metrics, "grantry_connections", &active).count(),
            1,
            "{kind}"
        );
        drop(h);
        db.cleanup().await;
    }
}

#[tokio::test]
async fn every_metric_the_alert_rules_and_the_dashboard_use_is_served() {
    let db = TestDatabase::sqlite();
    let h = Harness::start(&db, fake_config(), true).await;
    h.connect("alice").await;
    // A refresh, so that the refresh histograms have series.
    make_access_token_due(&h.store, "alice", "atlassian").await;
    let admin = h.token("admin-1", "admin");
    let (status, body) = get_token(&h.http, h.url(TOKEN_ROUTE), &admin).await;
    assert_eq!(status, 200, "{body}");
    let settings = WebhookSettings::new(
        vec![url::Url::parse("http://127.0.0.1:9/hook").expect("url")],
        vec![WebhookSecret::parse(&crate::receiver::secret()).expect("secret")],
    );
    let hooks = Arc::new(Webhooks::new(Outbox::new(h.store.clone()), settings).expect("hooks"));
    let state = h.state.clone().with_webhooks(hooks);
    let (base, server) = spawn_server(state.clone()).await;
    // One maintenance pass, so that the pass histogram has a series.
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let maintenance = tokio::spawn(grantry_server::maintain(
        state,
        Duration::from_secs(3600),
        stop_rx,
    ));
    let mut metrics = scrape_at(&h.http, &base).await;
    for _ in 0..100 {
        if metrics
            .families
            .contains_key("grantry_maintenance_pass_duration_seconds")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        metrics = scrape_at(&h.http, &base).await;
    }
    let _ = stop.send(true);
    maintenance.await.expect("maintenance task");
    let docs = [
        include_str!("../../docs/alerts.yml"),
        include_str!("../../docs/grafana-dashboard.json"),
    ]
    .concat();
    let mut used: Vec<&str> = docs
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("grantry_"))
        .collect();
    used.sort_unstable();
    used.dedup();
    assert!(used.len() >= 10, "{used:?}");
    for name in used {
        let family = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .filter(|base| metrics.families.contains_key(*base))
            .unwrap_or(name);
        assert!(
            metrics.families.contains_key(family),
            "the alert rules or the dashboard use {name}, which /metrics does not serve"
        );
    }
    server.abort();
    drop(h);
    db.cleanup().await;
}

#[tokio::test]
async fn every_answer_carries_a_request_id_and_errors_name_it() {
    let db = TestDatabase::sqlite();
    let h = Harness::start(&db, fake_config(), true).await;
    // A fresh id when the client sends none, in the header and the error body.
    let resp = h
        .http
        .get(h.url("/api/v1/atlassian/connection/status"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 401);
    let id = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("x-request-id")
        .to_owned();
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["request_id"], id.as_str(), "{body}");
    assert_eq!(body["error"], "unauthorized");
    // A well-formed id from the client is kept; a hostile one is replaced.
    for (sent, kept) in [
        ("trace-abc_123.4:5", true),
        ("has space", false),
        ("<script>", false),
        (&*"x".repeat(65), false),
    ] {
        let resp = h
            .http
            .get(h.url("/api/v1/no-such-route"))
            .header("x-request-id", sent)
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 404);
        let answered = resp
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .expect("x-request-id")
            .to_owned();
        let body: serde_json::Value = resp.json().await.expect("json");
        assert_eq!(answered == sent, kept, "{sent:?} → {answered:?}");
        assert_eq!(body["request_id"], answered.as_str());
    }
    // A success carries the id in its header only.
    let resp = h.http.get(h.url("/healthz")).send().await.expect("send");
    assert!(resp.headers().contains_key("x-request-id"));
    drop(h);
    db.cleanup().await;
}

/// The spans an OTLP/HTTP receiver got, decoded with the OpenTelemetry protobuf types.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
}

async fn receive(State(receiver): State<Receiver>, body: Bytes) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (axum::http::StatusCode::BAD_REQUEST, "not OTLP protobuf").into_response();
    };
    let mut spans = receiver.spans.lock().expect("lock");
    for resource in request.resource_spans {
        for scope in resource.scope_spans {
            spans.extend(scope.spans);
        }
    }
    (
        [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
        .into_response()
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref()?.value.as_ref())
        .map(|v| match v {
            AnyValue::StringValue(s) => s.clone(),
            AnyValue::IntValue(i) => i.to_string(),
            other => format!("{other:?}"),
        })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn a_proxied_call_is_one_trace_from_the_caller_to_atlassian() {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let otlp = format!("http://{}", listener.local_addr().expect("addr"));
    let app = axum::Router::new()
        .route("/v1/traces", post(receive))
        .with_state(receiver.clone());
    let collector = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let fake = FakeAtlassian::start(fake_config()).await.expect("fake");
    let db = TestDatabase::sqlite();
    let jwt = "otel-jwt";
    let key = KeyRing::generate_key_base64();
    let mut scratch = atlassian_env(Scratch::new(), &fake, &key, jwt)
        .with("DATABASE_URL", &db.url)
        .with("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp)
        .with("OTEL_SERVICE_NAME", "grantry-e2e")
        .with("OTEL_BSP_SCHEDULE_DELAY", "100")
        .with("GRANTRY_CACHE_TTL", "0");
    let server = scratch.serve().await;
    let (user, admin) = alice_and_admin(jwt);
    let http = reqwest::Client::new();
    connect_alice(&http, &server, &server, &fake, &user).await;
    let store = db.store().await;
    make_access_token_due(&store, "alice", "atlassian").await;

    // The caller's own trace: grantry's request span joins it.
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let resp = http
        .get(server.url(&format!(
            "/api/v1/atlassian/proxy/jira/{ACME_SITE_ID}/rest/api/3/myself"
        )))
        .bearer_auth(&user)
        .header("traceparent", format!("00-{caller_trace}-{caller_span}-01"))
        .header("x-request-id", "trace-e2e-1")
        .send()
        .await
        .expect("proxy");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-request-id"], "trace-e2e-1");

    let mut spans = Vec::new();
    for _ in 0..100 {
        spans = receiver.spans.lock().expect("lock").clone();
        if spans
            .iter()
            .any(|s| attribute(s, "operation").as_deref() == Some("proxy"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let request = spans
        .iter()
        .find(|s| attribute(s, "route").is_some_and(|r| r.contains("/proxy/")))
        .expect("the request span");
    assert_eq!(
        hex(&request.trace_id),
        caller_trace,
        "joins the caller's trace"
    );
    assert_eq!(hex(&request.parent_span_id), caller_span);
    assert_eq!(
        request.name,
        "GET /api/v1/atlassian/proxy/{product}/{site_id}/{*path}"
    );
    assert_eq!(attribute(request, "status").as_deref(), Some("200"));

    // Everything below happened in the caller's trace, under the request span.
    let trace: Vec<&Span> = spans
        .iter()
        .filter(|s| s.trace_id == request.trace_id)
        .collect();
    let by_id: HashMap<&[u8], &Span> = trace.iter().map(|s| (&s.span_id[..], *s)).collect();
    let find = |name: &str, key: &str, value: &str| -> &Span {
        trace
            .iter()
            .copied()
            .find(|s| s.name == name && attribute(s, key).as_deref() == Some(value))
            .unwrap_or_else(|| {
                let names: Vec<_> = trace.iter().map(|s| &s.name).collect();
                panic!("no {name} span with {key}={value} in {names:?}")
            })
    };
    let parent_of = |span: &Span| {
        by_id
            .get(&span.parent_span_id[..])
            .map(|p| p.span_id.clone())
    };
    let db_read = find("db", "db.operation", "read_connection");
    assert_eq!(parent_of(db_read), Some(request.span_id.clone()));
    let lease = find("lease", "provider", "atlassian");
    assert_eq!(parent_of(lease), Some(request.span_id.clone()));
    let acquire = find("db", "db.operation", "acquire_lease");
    assert_eq!(parent_of(acquire), Some(lease.span_id.clone()));
    let refresh = find("upstream", "operation", "refresh");
    assert_eq!(parent_of(refresh), Some(lease.span_id.clone()));
    assert_eq!(attribute(refresh, "outcome").as_deref(), Some("ok"));
    let stored = find("db", "db.operation", "complete_refresh");
    assert_eq!(parent_of(stored), Some(lease.span_id.clone()));
    let proxied = find("upstream", "operation", "proxy");
    assert_eq!(parent_of(proxied), Some(request.span_id.clone()));
    assert_eq!(attribute(proxied, "outcome").as_deref(), Some("ok"));

    // Atlassian saw the trace context of the upstream spans.
    let received = fake.fake.trace_parents();
    let sent = |span: &Span| format!("00-{}-{}-01", hex(&span.trace_id), hex(&span.span_id));
    assert!(
        received
            .iter()
            .any(|(path, tp)| path.ends_with("/rest/api/3/myself") && *tp == sent(proxied)),
        "{received:?}"
    );
    assert!(
        received
            .iter()
            .any(|(path, tp)| path == "/oauth/token" && *tp == sent(refresh)),
        "{received:?}"
    );

    // No token, code or secret in any attribute of any span.
    let (_, body) = get_token(
        &http,
        server.url("/api/v1/atlassian/admin/connections/alice/access-token"),
        &admin,
    )
    .await;
    let access = body["access_token"].as_str().expect("token").to_owned();
    let secret = fake.fake.config().client_secret.clone();
    // Log events inside spans are exported as span events: they are checked too.
    assert!(spans.iter().any(|s| !s.events.is_empty()), "no span events");
    for span in &spans {
        let events = span.events.iter().flat_map(|e| &e.attributes);
        for a in span.attributes.iter().chain(events) {
            let shown = format!("{:?}", a.value);
            for leaked in [access.as_str(), secret.as_str(), jwt, "Bearer", "code="] {
                assert!(!shown.contains(leaked), "{} {}: {shown}", span.name, a.key);
            }
        }
    }
    // The log lines the request caused carry its id, the refresh it started included.
    let log = std::fs::read_to_string(scratch.log_path()).expect("log");
    for line in [
        "refreshed access token",
        "grantry::http: request status=200",
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains("request_id=\"trace-e2e-1\"") && l.contains(line)),
            "no {line:?} line with the request id in {log}"
        );
    }
    assert!(log.contains("exporting traces over OTLP/HTTP"), "{log}");
    store.close().await;
    server.stop();
    collector.abort();
    db.cleanup().await;
}
