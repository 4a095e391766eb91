//! grantry-atlassian-markdown: Atlassian content as Markdown, Jira's Atlassian Document Format
//! (ADF), Jira Data Center's wiki markup and Confluence's storage format, for people and
//! language models. No HTTP: pure functions.
//!
//! All three converters accept any input without panicking: unknown nodes and macros keep their
//! text, malformed markup is read leniently, and very deep nesting is flattened. The output is
//! CommonMark with GitHub tables, task items and strikethrough; text is escaped so it cannot
//! turn into markup, and links keep only `http`, `https` and `mailto` targets.
//!
//! ```
//! use grantry_atlassian_markdown::{adf_to_markdown, storage_to_markdown, wiki_to_markdown};
//! let adf = serde_json::json!({"type": "doc", "version": 1, "content": [
//!     {"type": "heading", "attrs": {"level": 2}, "content": [{"type": "text", "text": "Steps"}]}
//! ]});
//! assert_eq!(adf_to_markdown(&adf), "## Steps\n");
//! assert_eq!(storage_to_markdown("<p>Hello <strong>world</strong></p>", None), "Hello **world**\n");
//! assert_eq!(wiki_to_markdown("h2. Steps\r\n* *Build* it", None), "## Steps\n\n- **Build** it\n");
//! ```

mod adf;
mod model;
mod storage;
mod wiki;
mod writer;

use serde_json::Value;
use url::Url;

/// Converts an ADF document (a Jira description or comment body) to Markdown.
///
/// A plain string (as Jira's v2 API returns) is taken as text; `null` gives an empty string.
pub fn adf_to_markdown(doc: &Value) -> String {
    writer::render(&adf::blocks(doc), None)
}

/// The text of an ADF document on one line, cut to at most `max_chars` characters.
pub fn adf_to_plain_text(doc: &Value, max_chars: usize) -> String {
    adf::plain_text(doc, max_chars)
}

/// Converts a Confluence storage-format body to Markdown; relative links resolve against
/// `base` (the site's URL) when given, and are dropped otherwise.
pub fn storage_to_markdown(storage: &str, base: Option<&Url>) -> String {
    writer::render(&storage::blocks(storage), base)
}

/// Converts Jira wiki markup (a Jira Data Center description or comment) to Markdown; relative
/// links resolve against `base` (the site's URL) when given, and are dropped otherwise.
pub fn wiki_to_markdown(text: &str, base: Option<&Url>) -> String {
    writer::render(&wiki::blocks(text), base)
}
