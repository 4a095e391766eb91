//! Keyset paging of admin lists: the `limit`, `status` and `cursor` query parameters, the opaque
//! cursor, and the RFC 8288 `Link: <…>; rel="next"` header of the next page.

use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use axum::http::{HeaderValue, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use grantry_core::ApiError;
use grantry_core::store::ConnectionStatus;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Connections per page when `limit` is absent.
pub(crate) const DEFAULT_LIMIT: u32 = 100;
/// The largest `limit` accepted.
pub(crate) const MAX_LIMIT: u32 = 1000;

/// The status filter of an admin list.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum StatusFilter {
    /// Usable connections.
    Active,
    /// Connections whose grant died upstream.
    NeedsReauth,
}

/// The query parameters of an admin list, as sent (validated by [`Page::parse`]).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageParams {
    /// Most connections in the page: 1 to 1000, default 100.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// Only connections with this status.
    #[param(inline)]
    status: Option<StatusFilter>,
    /// Where the page starts: copied from the previous page's `Link: rel="next"` URL (opaque).
    cursor: Option<String>,
}

/// The content of a cursor: the last user id of the previous page.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cursor {
    /// Connections after this user id.
    after: String,
}

/// A validated page request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Page {
    /// Most connections in the page.
    pub(crate) limit: u32,
    /// The status filter.
    pub(crate) status: Option<ConnectionStatus>,
    /// The user id the page starts after.
    pub(crate) after: Option<String>,
}

/// 400 `invalid_request` with `message`.
pub(crate) fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
}

impl Page {
    /// Validates the query parameters (400 `invalid_request` naming what is wrong).
    pub(crate) fn parse(
        query: Result<Query<PageParams>, QueryRejection>,
    ) -> Result<Self, ApiError> {
        let Query(params) = query.map_err(|r| invalid(r.body_text()))?;
        let limit = parse_limit(params.limit.as_deref())?;
        let status = params.status.map(|s| match s {
            StatusFilter::Active => ConnectionStatus::Active,
            StatusFilter::NeedsReauth => ConnectionStatus::NeedsReauth,
        });
        let after = params.cursor.as_deref().map(decode_cursor).transpose()?;
        Ok(Self {
            limit,
            status,
            after,
        })
    }

    /// The `Link` header of the page after the one that ended with `last_user_id`, on `path`
    /// (the absolute path the request came in on), keeping `limit` and `status`.
    pub(crate) fn next_link(
        &self,
        path: &str,
        last_user_id: &str,
    ) -> Result<HeaderValue, ApiError> {
        let limit = self.limit.to_string();
        let cursor = encode_cursor(last_user_id);
        let mut pairs = vec![("limit", limit.as_str())];
        if let Some(status) = self.status {
            pairs.push(("status", status.as_str()));
        }
        pairs.push(("cursor", &cursor));
        next_link(path, &pairs)
    }
}

/// The page size asked for by a `limit` parameter: [`DEFAULT_LIMIT`] when absent, 400
/// `invalid_request` unless a whole number from 1 to [`MAX_LIMIT`].
pub(crate) fn parse_limit(limit: Option<&str>) -> Result<u32, ApiError> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                invalid(format!(
                    "limit must be a whole number from 1 to {MAX_LIMIT}"
                ))
            }),
    }
}

/// The id a newest-first page starts below, from a `cursor` parameter (the last id of the page
/// before): `None` when absent or empty, 400 `invalid_request` unless a positive whole number.
pub(crate) fn parse_id_cursor(cursor: Option<&str>) -> Result<Option<i64>, ApiError> {
    match cursor {
        None | Some("") => Ok(None),
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|id| *id > 0)
            .map(Some)
            .ok_or_else(|| invalid("cursor is not one this server gave")),
    }
}

/// The RFC 8288 `Link: <…>; rel="next"` header of the next page: `path` (the absolute path the
/// request came in on) with the query `pairs`.
pub(crate) fn next_link(path: &str, pairs: &[(&str, &str)]) -> Result<HeaderValue, ApiError> {
    let mut url = url::Url::parse("http://localhost/").map_err(|e| ApiError::internal(&e))?;
    url.set_path(path);
    url.query_pairs_mut().extend_pairs(pairs);
    let target = &url[url::Position::BeforePath..];
    HeaderValue::from_str(&format!("<{target}>; rel=\"next\"")).map_err(|e| ApiError::internal(&e))
}

/// The opaque cursor of a page that starts after `user_id`: base64url of a small JSON object.
pub(crate) fn encode_cursor(user_id: &str) -> String {
    let json = serde_json::to_vec(&Cursor {
        after: user_id.to_owned(),
    })
    .unwrap_or_default();
    URL_SAFE_NO_PAD.encode(json)
}

/// The user id a cursor starts after; 400 `invalid_request` for anything this server did not write.
fn decode_cursor(text: &str) -> Result<String, ApiError> {
    let bad = || invalid("cursor is not a cursor of this list; start again without one");
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?;
    let cursor: Cursor = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    // No user id holds a NUL (PostgreSQL text cannot), so no position after one is meaningful.
    if cursor.after.contains('\0') {
        return Err(bad());
    }
    Ok(cursor.after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        for user in ["alice", "ülrike", "a b&c=d/e?f#g", "<>\"'", ""] {
            assert_eq!(
                decode_cursor(&encode_cursor(user)).ok().as_deref(),
                Some(user)
            );
        }
        let good = encode_cursor("alice");
        for bad in [
            "",
            "!!!",
            "YWxpY2U",
            &format!("{good}="),
            &good[..good.len() - 2],
            &URL_SAFE_NO_PAD.encode(br#"{"after":"a","x":1}"#),
            &URL_SAFE_NO_PAD.encode(br#"{"after":1}"#),
            &URL_SAFE_NO_PAD.encode(b"{\"after\":\"a\\u0000\"}"),
        ] {
            let err = decode_cursor(bad).expect_err(bad);
            assert_eq!(
                (err.status, err.code),
                (StatusCode::BAD_REQUEST, "invalid_request")
            );
        }
    }

    #[test]
    fn the_next_link_keeps_limit_and_status_on_the_request_path() {
        let page = Page {
            limit: 2,
            status: Some(ConnectionStatus::NeedsReauth),
            after: None,
        };
        let link = page
            .next_link("/integrations/api/v1/p/admin/connections", "a b&c")
            .expect("link");
        assert_eq!(
            link.to_str().expect("ascii"),
            format!(
                "</integrations/api/v1/p/admin/connections?limit=2&status=needs_reauth&cursor={}>; rel=\"next\"",
                encode_cursor("a b&c")
            )
        );
    }
}
