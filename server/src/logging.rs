//! Logging with tracing, its level taken from `LOG_LEVEL`; OpenTelemetry traces exported over
//! OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set.

use std::sync::OnceLock;

use axum::http::HeaderMap;
use grantry_core::ConfigError;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The receiver's scheme, host and port: never its credentials, path or query.
fn shown_endpoint(endpoint: &str) -> String {
    url::Url::parse(endpoint.trim()).map_or_else(
        |_| "(unparsable)".to_owned(),
        |url| {
            let host = url.host_str().unwrap_or_default();
            match url.port() {
                Some(port) => format!("{}://{host}:{port}", url.scheme()),
                None => format!("{}://{host}", url.scheme()),
            }
        },
    )
}

/// The tracer provider, when traces are exported; kept to flush it at shutdown.
static TRACER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// The filter for `LOG_LEVEL`: a level in any case (`DEBUG` works) or a tracing filter.
pub fn filter(level: &str) -> Result<EnvFilter, ConfigError> {
    let trimmed = level.trim();
    let lower = trimmed.to_ascii_lowercase();
    let directive = match lower.as_str() {
        "" => "info".to_owned(),
        "error" | "warn" | "warning" | "info" | "debug" | "trace" | "off" => {
            let lvl = if lower == "warning" {
                "warn"
            } else {
                lower.as_str()
            };
            format!("{lvl},sqlx=warn,hyper=info,h2=info")
        }
        _ => trimmed.to_owned(),
    };
    EnvFilter::builder()
        .parse(&directive)
        .map_err(|e| ConfigError::Invalid {
            variable: "LOG_LEVEL".into(),
            reason: format!("expected error, warn, info, debug, trace or a tracing filter ({e})"),
        })
}

/// The OTLP endpoint traces go to, from the standard variables; `None` when tracing is off
/// (neither is set, or `OTEL_SDK_DISABLED=true`).
fn otlp_endpoint(env: impl Fn(&str) -> Option<String>) -> Result<Option<String>, ConfigError> {
    if env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    for variable in [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ] {
        let Some(value) = env(variable).filter(|v| !v.trim().is_empty()) else {
            continue;
        };
        let url = url::Url::parse(value.trim()).map_err(|e| ConfigError::Invalid {
            variable: variable.into(),
            reason: format!("expected an http(s) URL of an OTLP/HTTP receiver ({e})"),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ConfigError::Invalid {
                variable: variable.into(),
                reason: "expected an http(s) URL of an OTLP/HTTP receiver".into(),
            });
        }
        return Ok(Some(value));
    }
    Ok(None)
}

/// The exporter and tracer provider of OTLP/HTTP traces (the endpoint and headers come from the
/// standard `OTEL_EXPORTER_OTLP_*` variables, the service name from `OTEL_SERVICE_NAME`,
/// `grantry` by default).
fn tracer_provider() -> Result<SdkTracerProvider, ConfigError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| ConfigError::Invalid {
            variable: "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
            reason: format!("the OTLP exporter could not be built ({e})"),
        })?;
    let service = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "grantry".into());
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service)
                .build(),
        )
        .build())
}

/// Writes the current span's trace context into `headers` (W3C `traceparent`).
fn inject_current(headers: &mut HeaderMap) {
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut HeaderInjector(headers));
    });
}

/// Makes `span` a child of the trace an incoming request's `traceparent` names, when traces are
/// exported.
pub fn adopt_remote_parent(span: &tracing::Span, headers: &HeaderMap) {
    if TRACER.get().is_none() || !headers.contains_key("traceparent") {
        return;
    }
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(headers))
    });
    let _ = span.set_parent(parent);
}

/// The log written to standard error (coloured on a terminal).
fn log_layer<S>() -> impl Layer<S> + Send + Sync
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
}

/// Installs the global subscriber writing to standard error, plus the OpenTelemetry exporter
/// when an OTLP endpoint is configured; a second call is a no-op.
pub fn init(level: &str) -> Result<(), ConfigError> {
    let filter = filter(level)?;
    let Some(endpoint) = otlp_endpoint(|name| std::env::var(name).ok())? else {
        // Without traces, `LOG_LEVEL` filters globally: a disabled span or event costs nothing.
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(log_layer())
            .try_init();
        return Ok(());
    };
    if TRACER.get().is_some() {
        return Ok(());
    }
    let provider = tracer_provider()?;
    let tracer = provider.tracer("grantry");
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let _ = TRACER.set(provider);
    grantry_core::telemetry::set_trace_injector(inject_current);
    // Each output its own filter: the log by `LOG_LEVEL`, the traces grantry's own spans only
    // (requests, database work, leases and upstream calls).
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(Targets::new().with_target("grantry", tracing::Level::INFO));
    if tracing_subscriber::registry()
        .with(log_layer().with_filter(filter))
        .with(otel)
        .try_init()
        .is_ok()
    {
        tracing::info!(receiver = %shown_endpoint(&endpoint), "exporting traces over OTLP/HTTP");
    }
    Ok(())
}

/// Exports the spans still buffered (call once, at shutdown).
pub fn flush() {
    if let Some(provider) = TRACER.get()
        && let Err(e) = provider.force_flush()
    {
        tracing::warn!(error = %e, "exporting the last traces failed");
    }
}

#[cfg(test)]
mod tests {
    use super::{filter, otlp_endpoint, shown_endpoint};

    #[test]
    fn the_logged_receiver_hides_credentials() {
        assert_eq!(
            shown_endpoint("https://user:pw@otel.example.com:4318/v1/traces?key=k"),
            "https://otel.example.com:4318"
        );
        assert_eq!(shown_endpoint("http://otel"), "http://otel");
    }

    #[test]
    fn levels_in_any_case_and_filters() {
        for level in ["DEBUG", "info", "Trace", "warning", "grantry=debug,info"] {
            assert!(filter(level).is_ok(), "{level}");
        }
        let e = filter("loud[").expect_err("bad filter");
        assert!(e.to_string().starts_with("LOG_LEVEL is invalid"));
    }

    #[test]
    fn traces_are_off_unless_an_endpoint_is_set() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert_eq!(otlp_endpoint(vars(&[])).expect("off"), None);
        assert_eq!(
            otlp_endpoint(vars(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4318")]))
                .expect("on")
                .as_deref(),
            Some("http://otel:4318")
        );
        assert_eq!(
            otlp_endpoint(vars(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4318"),
                ("OTEL_SDK_DISABLED", "TRUE")
            ]))
            .expect("disabled"),
            None
        );
        let e = otlp_endpoint(vars(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "otel:4318 x")]))
            .expect_err("not a URL");
        assert!(e.to_string().contains("OTEL_EXPORTER_OTLP_ENDPOINT"), "{e}");
        otlp_endpoint(vars(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "ftp://x")]))
            .expect_err("not http");
    }
}
