//! The upstream HTTP side: the client, one call with a capped body, and the errors calls give.
//! No error message carries a token, a secret or a whole body.

use std::time::Duration;

use grantry_core::{AccessToken, ProviderError};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;

/// Largest upstream body read by default (token, account and resource calls).
pub const MAX_BODY: usize = 1024 * 1024;

/// The upstream HTTP client: a timeout per call, a shorter connect timeout, no redirects and a
/// user agent (GitHub requires one).
pub fn client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("grantry/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// A failure that may pass: retry later (after `retry_after` seconds when known).
pub fn transient(reason: impl Into<String>, retry_after: Option<u64>) -> ProviderError {
    ProviderError::Transient {
        reason: reason.into(),
        retry_after,
    }
}

/// A request that got no answer: what failed, never the request's content.
pub fn send_error(what: &str, e: &reqwest::Error) -> ProviderError {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    transient(format!("{what}: {kind}"), None)
}

/// At most 200 characters of an upstream text, for messages.
pub fn short(text: &str) -> String {
    let mut out: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        out.push('…');
    }
    out
}

/// Whether an upstream status means "try again later": 429 or any 5xx.
pub fn is_transient(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// The seconds a `Retry-After` header asks for: delay-seconds, or an HTTP date (0 once past).
pub fn retry_after(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(secs);
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let secs = (when.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_seconds();
    Some(u64::try_from(secs).unwrap_or(0))
}

/// Reads at most [`MAX_BODY`] bytes of a response.
pub async fn read_capped(response: Response, what: &str) -> Result<Vec<u8>, ProviderError> {
    read_capped_to(response, what, MAX_BODY).await
}

/// Reads at most `max` bytes of a response; a longer one is a transient failure.
pub async fn read_capped_to(
    mut response: Response,
    what: &str,
    max: usize,
) -> Result<Vec<u8>, ProviderError> {
    let too_large = || transient(format!("{what}: response larger than {max} bytes"), None);
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| send_error(what, &e))? {
        if body.len() + chunk.len() > max {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// One upstream answer: status, `Retry-After`, content type (lower case) and capped body.
#[derive(Clone, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status.
    pub status: StatusCode,
    /// `Retry-After` in seconds, when sent as a number.
    pub retry_after: Option<u64>,
    /// The `Content-Type`, lower case, empty when absent.
    pub content_type: String,
    /// The body, at most [`MAX_BODY`] bytes.
    pub body: Vec<u8>,
}

/// The body may hold tokens: `Debug` shows its length only.
impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer")
            .field("status", &self.status)
            .field("retry_after", &self.retry_after)
            .field("content_type", &self.content_type)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// Sends `request` asking for JSON and reads the answer; `what` names the call in errors.
pub async fn send(request: RequestBuilder, what: &str) -> Result<Answer, ProviderError> {
    let response = request
        .header(ACCEPT, "application/json")
        .headers(grantry_core::telemetry::trace_headers())
        .send()
        .await
        .map_err(|e| send_error(what, &e))?;
    let status = response.status();
    let retry_after = retry_after(response.headers());
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let body = read_capped(response, what).await?;
    Ok(Answer {
        status,
        retry_after,
        content_type,
        body,
    })
}

/// GETs a JSON document with the user's token: 429/5xx are transient, another failure status is
/// refused with `upstream_refused`, a body that is not `T` is transient.
pub async fn get_json<T: DeserializeOwned>(
    http: &reqwest::Client,
    url: url::Url,
    token: &AccessToken,
    what: &str,
) -> Result<T, ProviderError> {
    let answer = send(http.get(url).bearer_auth(token.secret()), what).await?;
    let status = answer.status.as_u16();
    if is_transient(answer.status) {
        return Err(transient(
            format!("{what} answered {status}"),
            answer.retry_after,
        ));
    }
    if !answer.status.is_success() {
        return Err(ProviderError::Rejected {
            status,
            code: "upstream_refused".into(),
            description: format!("{what} answered {status}"),
        });
    }
    serde_json::from_slice(&answer.body)
        .map_err(|_| transient(format!("{what} answered a malformed body"), None))
}

/// GETs a public JSON document (such as discovery metadata): any failure status is transient.
pub async fn get_document(
    http: &reqwest::Client,
    url: url::Url,
    what: &str,
) -> Result<Vec<u8>, ProviderError> {
    let answer = send(http.get(url), what).await?;
    if answer.status.is_success() {
        Ok(answer.body)
    } else {
        Err(transient(
            format!("{what} answered {}", answer.status.as_u16()),
            answer.retry_after,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_never_prints_its_body() {
        let answer = Answer {
            status: StatusCode::OK,
            retry_after: None,
            content_type: "application/json".into(),
            body: br#"{"access_token":"at-secret-1"}"#.to_vec(),
        };
        let shown = format!("{answer:?}");
        assert!(!shown.contains("at-secret-1"), "{shown}");
        assert!(shown.contains("body_len"), "{shown}");
    }

    #[test]
    fn short_cuts_at_200_characters() {
        assert_eq!(short("abc"), "abc");
        let long = "é".repeat(250);
        let cut = short(&long);
        assert_eq!(cut.chars().count(), 201);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, " 7 ".parse().expect("header"));
        assert_eq!(retry_after(&headers), Some(7));
        headers.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().expect("header"),
        );
        assert_eq!(retry_after(&headers), Some(0));
        let later = (chrono::Utc::now() + chrono::Duration::seconds(120)).to_rfc2822();
        headers.insert(RETRY_AFTER, later.parse().expect("header"));
        assert!(retry_after(&headers).is_some_and(|s| (100..=120).contains(&s)));
        headers.insert(RETRY_AFTER, "soon".parse().expect("header"));
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn only_429_and_5xx_are_transient() {
        assert!(is_transient(StatusCode::TOO_MANY_REQUESTS));
        assert!(is_transient(StatusCode::BAD_GATEWAY));
        assert!(!is_transient(StatusCode::UNAUTHORIZED));
        assert!(!is_transient(StatusCode::OK));
    }
}
