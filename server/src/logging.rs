//! Logging with tracing, its level taken from `LOG_LEVEL`.

use grantry_core::ConfigError;
use tracing_subscriber::EnvFilter;

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

/// Installs the global subscriber writing to standard error; a second call is a no-op.
pub fn init(level: &str) -> Result<(), ConfigError> {
    let filter = filter(level)?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::filter;

    #[test]
    fn levels_in_any_case_and_filters() {
        for level in ["DEBUG", "info", "Trace", "warning", "grantry=debug,info"] {
            assert!(filter(level).is_ok(), "{level}");
        }
        let e = filter("loud[").expect_err("bad filter");
        assert!(e.to_string().starts_with("LOG_LEVEL is invalid"));
    }
}
