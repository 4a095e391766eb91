//! One query across the user's sites and products, merged; failing sites are reported, not fatal.

use std::cmp::Reverse;

use futures_util::future::join_all;
use grantry_core::Resource;
use serde::Serialize;

use super::gateway::{ContentError, Gateway, Product};
use super::{confluence, jira};

/// Longest accepted query, in characters.
pub(crate) const MAX_QUERY_CHARS: usize = 200;
/// Results when `limit` is not given.
pub(crate) const DEFAULT_LIMIT: usize = 20;
/// Largest accepted `limit`.
pub(crate) const MAX_LIMIT: usize = 50;

/// One search result.
#[derive(Serialize, Debug, Clone, PartialEq, Eq, utoipa::ToSchema)]
pub(crate) struct Hit {
    /// `jira_issue` or `confluence_page`.
    pub(crate) kind: &'static str,
    /// The cloud id of the site.
    pub(crate) site_id: String,
    /// The issue key or the page id.
    pub(crate) id: String,
    /// The issue summary or the page title.
    pub(crate) title: String,
    /// The web link.
    pub(crate) url: Option<String>,
    /// Some text around the match (plain text).
    pub(crate) excerpt: String,
    /// Last change, RFC 3339 UTC.
    pub(crate) updated_at: Option<String>,
}

/// A site and product whose search failed.
#[derive(Serialize, Debug, Clone, PartialEq, Eq, utoipa::ToSchema)]
pub(crate) struct PartialFailure {
    /// The site.
    site_id: String,
    /// `jira` or `confluence`.
    product: &'static str,
    /// What went wrong (never a token).
    error: String,
    /// The error code the site's failure alone would have been answered with
    /// (`insufficient_scope`, `rate_limited`, `upstream_unavailable`, …).
    code: &'static str,
}

/// The answer of `GET /search`.
#[derive(Serialize, Debug, utoipa::ToSchema)]
pub(crate) struct SearchResults {
    /// The hits, newest first.
    results: Vec<Hit>,
    /// The sites and products whose search failed.
    partial_failures: Vec<PartialFailure>,
}

/// The user's words as a quoted JQL/CQL string for `text ~`.
///
/// Two layers of escaping: first the Lucene syntax the text search reads (`+ - & | ! ( ) { } [
/// ] ^ ~ * ? \ : " /` become literal, and the operators `AND`, `OR`, `NOT` plain words), then
/// the string literal itself (`\` and `"`). Control characters become spaces.
pub(crate) fn text_query(query: &str) -> String {
    let mut lucene = String::with_capacity(query.len() + 8);
    for (i, word) in query.split_whitespace().enumerate() {
        if i > 0 {
            lucene.push(' ');
        }
        if matches!(word, "AND" | "OR" | "NOT") {
            lucene.push_str(&word.to_ascii_lowercase());
            continue;
        }
        for c in word.chars() {
            if c.is_control() {
                lucene.push(' ');
                continue;
            }
            if "+-&|!(){}[]^~*?\\:\"/".contains(c) {
                lucene.push('\\');
            }
            lucene.push(c);
        }
    }
    let mut literal = String::with_capacity(lucene.len() + 8);
    literal.push('"');
    for c in lucene.chars() {
        match c {
            '\\' => literal.push_str("\\\\"),
            '"' => literal.push_str("\\\""),
            c => literal.push(c),
        }
    }
    literal.push('"');
    literal
}

/// Searches `sites` (each for the products listed with it) and merges the answers, newest first.
///
/// Every site and product that fails is listed in `partial_failures`; only when every call
/// failed for a rate limit is the whole search answered 429; only when every call was refused for
/// a missing scope, 403 `insufficient_scope`.
pub(crate) async fn search(
    g: &Gateway<'_>,
    sites: &[(&Resource, Vec<Product>)],
    query: &str,
    limit: usize,
) -> Result<SearchResults, ContentError> {
    let mut calls = Vec::new();
    for (site, products) in sites {
        let site: &Resource = site;
        for &product in products {
            calls.push(async move {
                let outcome = match product {
                    Product::Jira => jira::search(g, site, query, limit).await,
                    Product::Confluence => confluence::search(g, site, query, limit).await,
                };
                (site, product, outcome)
            });
        }
    }
    let call_count = calls.len();
    let mut results = Vec::new();
    let mut partial_failures = Vec::new();
    let mut rate_limits = Vec::new();
    let mut scope_refusals = Vec::new();
    for (site, product, outcome) in join_all(calls).await {
        match outcome {
            Ok(hits) => results.extend(hits),
            Err(e) => {
                tracing::warn!(site = %site.id, product = product.id(), error = %e, "search failed on a site");
                if let ContentError::RateLimited { retry_after, .. } = &e {
                    rate_limits.push(*retry_after);
                }
                partial_failures.push(PartialFailure {
                    site_id: site.id.clone(),
                    product: product.id(),
                    error: e.to_string(),
                    code: e.code(),
                });
                if matches!(e, ContentError::InsufficientScope { .. }) {
                    scope_refusals.push(e);
                }
            }
        }
    }
    if results.is_empty()
        && !partial_failures.is_empty()
        && rate_limits.len() == partial_failures.len()
    {
        return Err(ContentError::RateLimited {
            what: "search".into(),
            retry_after: rate_limits.into_iter().max().unwrap_or(1),
        });
    }
    if scope_refusals.len() == call_count
        && let Some(refusal) = scope_refusals.into_iter().next()
    {
        return Err(refusal);
    }
    // Newest first (RFC 3339 UTC strings sort as times); undated last; ties in a stable order.
    results.sort_by(|a, b| {
        (Reverse(&a.updated_at), a.kind, &a.site_id, &a.id).cmp(&(
            Reverse(&b.updated_at),
            b.kind,
            &b.site_id,
            &b.id,
        ))
    });
    results.truncate(limit);
    Ok(SearchResults {
        results,
        partial_failures,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_escaped_twice() {
        assert_eq!(text_query("rollout"), r#""rollout""#);
        assert_eq!(text_query("  two   words "), r#""two words""#);
        assert_eq!(text_query(r#"say "hi""#), r#""say \\\"hi\\\"""#);
        assert_eq!(text_query(r"a\b"), r#""a\\\\b""#);
        assert_eq!(text_query("C++ (x)"), r#""C\\+\\+ \\(x\\)""#);
        assert_eq!(text_query("cats AND dogs"), r#""cats and dogs""#);
        assert_eq!(text_query("tab\u{0}x"), r#""tab x""#);
    }

    #[test]
    fn undated_results_sort_last() {
        let hit = |id: &str, at: Option<&str>| Hit {
            kind: "jira_issue",
            site_id: "s".into(),
            id: id.into(),
            title: String::new(),
            url: None,
            excerpt: String::new(),
            updated_at: at.map(str::to_owned),
        };
        let mut v = [
            hit("a", None),
            hit("b", Some("2024-01-01T00:00:00Z")),
            hit("c", Some("2024-06-01T00:00:00Z")),
        ];
        v.sort_by(|a, b| Reverse(&a.updated_at).cmp(&Reverse(&b.updated_at)));
        let ids: Vec<&str> = v.iter().map(|h| h.id.as_str()).collect();
        assert_eq!(ids, ["c", "b", "a"]);
    }
}
