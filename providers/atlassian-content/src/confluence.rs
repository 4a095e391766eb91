//! Confluence Cloud REST v1 through the gateway (the API the classic scopes reach): CQL
//! search, the space list, the pages of a space, one page with its body as Markdown.

use grantry_core::Resource;
use serde::{Deserialize, Serialize};
use url::Url;

use super::gateway::{ContentError, Gateway, Product, id_string, off_thread, timestamp, web_url};
use super::jira::site_label;
use super::search::{Hit, text_query};
use grantry_atlassian_markdown::storage_to_markdown;

/// Spaces fetched per page while following pagination.
const SPACE_PAGE: usize = 50;
/// Most spaces listed; a longer list is cut and marked `truncated`.
pub(crate) const MAX_SPACES: usize = 1000;
/// Most pages fetched for one list, whatever the upstream says.
const MAX_PAGES: usize = 40;
/// Longest excerpt of a search hit, in characters.
const EXCERPT_CHARS: usize = 300;

#[derive(Deserialize, Default)]
#[serde(default)]
struct Links {
    webui: Option<String>,
    next: Option<String>,
}

#[derive(Deserialize)]
struct Listing<T> {
    #[serde(default = "Vec::new")]
    results: Vec<T>,
    #[serde(rename = "_links", default)]
    links: Links,
}

#[derive(Deserialize)]
struct SearchResult {
    content: Option<Content>,
    title: Option<String>,
    excerpt: Option<String>,
    url: Option<String>,
    #[serde(rename = "lastModified")]
    last_modified: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Version {
    number: Option<u64>,
    when: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SpaceRef {
    key: Option<String>,
    name: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Storage {
    value: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Body {
    storage: Option<Storage>,
}

#[derive(Deserialize)]
struct Content {
    #[serde(deserialize_with = "id_string", default)]
    id: String,
    #[serde(rename = "type")]
    kind: Option<String>,
    title: Option<String>,
    space: Option<SpaceRef>,
    version: Option<Version>,
    body: Option<Body>,
    #[serde(rename = "_links", default)]
    links: Links,
}

#[derive(Deserialize)]
struct Space {
    #[serde(deserialize_with = "id_string", default)]
    id: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    name: String,
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(rename = "_links", default)]
    links: Links,
}

/// One space of `GET /confluence/{site}/spaces`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct SpaceView {
    /// The space id.
    id: String,
    /// The space key (`ENG`, `~accountid`).
    key: String,
    /// The space name.
    name: String,
    /// `global` or `personal`.
    #[serde(rename = "type")]
    kind: Option<String>,
    /// The space on the site.
    url: Option<String>,
}

/// The answer of `GET /confluence/{site}/spaces`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Spaces {
    /// The site.
    site_id: String,
    /// The spaces.
    spaces: Vec<SpaceView>,
    /// Whether the cap (1000 spaces, 40 upstream pages) cut the list.
    truncated: bool,
}

/// One page of a space listing.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct PageSummary {
    /// The page id.
    id: String,
    /// The title.
    title: String,
    /// The version number.
    version: Option<u64>,
    /// When the version was made, RFC 3339 UTC.
    updated_at: Option<String>,
    /// The page on the site.
    url: Option<String>,
}

/// The answer of `GET /confluence/{site}/spaces/{key}/pages`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct PageList {
    /// The site.
    site_id: String,
    /// The space.
    space_key: String,
    /// This page of the listing.
    pages: Vec<PageSummary>,
    /// The offset asked for.
    start: usize,
    /// The most items asked for.
    limit: usize,
    /// The `start` of the next page, `null` at the end.
    next_start: Option<usize>,
}

/// The space of a page.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct SpaceSummary {
    /// The space key.
    key: Option<String>,
    /// The space name.
    name: Option<String>,
}

/// The answer of `GET /confluence/{site}/pages/{id}`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct PageView {
    /// The site.
    site_id: String,
    /// The page id.
    id: String,
    /// The title.
    title: String,
    /// `page` or `blogpost`.
    #[serde(rename = "type")]
    kind: Option<String>,
    /// The space.
    space: SpaceSummary,
    /// The version number.
    version: Option<u64>,
    /// When the version was made, RFC 3339 UTC.
    updated_at: Option<String>,
    /// The page on the site.
    url: Option<String>,
    /// The body as Markdown.
    body: String,
}

/// A `webui` link (relative to `/wiki`) on the site.
fn wiki_url(site: &Resource, webui: Option<&str>) -> Option<String> {
    let webui = webui?;
    if !webui.starts_with('/') {
        return None;
    }
    web_url(site, &format!("/wiki{webui}"))
}

/// Drops Confluence's highlight markers and folds white space.
fn clean_excerpt(text: &str) -> String {
    let text = text.replace("@@@hl@@@", "").replace("@@@endhl@@@", "");
    let words: Vec<&str> = text.split_whitespace().collect();
    let joined = words.join(" ");
    if joined.chars().count() <= EXCERPT_CHARS {
        return joined;
    }
    let mut cut: String = joined.chars().take(EXCERPT_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// Pages matching `query` (CQL `text ~`), newest first.
pub(crate) async fn search(
    g: &Gateway<'_>,
    site: &Resource,
    query: &str,
    limit: usize,
) -> Result<Vec<Hit>, ContentError> {
    let url = g.url(
        Product::Confluence,
        site,
        &["wiki", "rest", "api", "search"],
    )?;
    let cql = format!(
        "type = page AND text ~ {} ORDER BY lastmodified DESC",
        text_query(query)
    );
    let what = format!("Confluence search on {}", site_label(site));
    let listing: Listing<SearchResult> = g
        .json("confluence_search", &what, || {
            g.http
                .get(url.clone())
                .query(&[("cql", cql.as_str()), ("limit", &limit.to_string())])
        })
        .await?;
    Ok(listing
        .results
        .into_iter()
        .filter_map(|result| {
            let content = result.content?;
            if content.id.is_empty() {
                return None;
            }
            let title = content
                .title
                .or(result.title.map(|t| clean_excerpt(&t)))
                .unwrap_or_default();
            let webui = result.url.or(content.links.webui);
            Some(Hit {
                kind: "confluence_page",
                site_id: site.id.clone(),
                id: content.id,
                title,
                url: wiki_url(site, webui.as_deref()),
                excerpt: clean_excerpt(result.excerpt.as_deref().unwrap_or("")),
                updated_at: timestamp(result.last_modified.as_deref()),
            })
        })
        .collect())
}

/// Every space of the site (pagination followed, at most [`MAX_SPACES`]).
pub(crate) async fn spaces(g: &Gateway<'_>, site: &Resource) -> Result<Spaces, ContentError> {
    let url = g.url(Product::Confluence, site, &["wiki", "rest", "api", "space"])?;
    let what = format!("Confluence spaces of {}", site_label(site));
    let mut spaces = Vec::new();
    let mut truncated = true;
    for _ in 0..MAX_PAGES {
        let start = spaces.len();
        let page: Listing<Space> = g
            .json("confluence_spaces", &what, || {
                g.http.get(url.clone()).query(&[
                    ("start", start.to_string()),
                    ("limit", SPACE_PAGE.to_string()),
                ])
            })
            .await?;
        let count = page.results.len();
        spaces.extend(page.results.into_iter().map(|s| {
            SpaceView {
                url: wiki_url(site, s.links.webui.as_deref())
                    .or_else(|| web_url(site, &format!("/wiki/spaces/{}", s.key))),
                id: s.id,
                key: s.key,
                name: s.name,
                kind: s.kind,
            }
        }));
        if count == 0 || page.links.next.is_none() {
            truncated = false;
            break;
        }
        if spaces.len() >= MAX_SPACES {
            break;
        }
    }
    truncated = truncated || spaces.len() > MAX_SPACES;
    spaces.truncate(MAX_SPACES);
    Ok(Spaces {
        site_id: site.id.clone(),
        spaces,
        truncated,
    })
}

/// One page of the pages of a space.
pub(crate) async fn pages(
    g: &Gateway<'_>,
    site: &Resource,
    space_key: &str,
    start: usize,
    limit: usize,
) -> Result<PageList, ContentError> {
    let url = g.url(
        Product::Confluence,
        site,
        &["wiki", "rest", "api", "content"],
    )?;
    let what = format!("pages of Confluence space {space_key}");
    let listing: Listing<Content> = g
        .json("confluence_pages", &what, || {
            g.http.get(url.clone()).query(&[
                ("spaceKey", space_key.to_owned()),
                ("type", "page".to_owned()),
                ("start", start.to_string()),
                ("limit", limit.to_string()),
                ("expand", "version".to_owned()),
            ])
        })
        .await?;
    let count = listing.results.len();
    let next_start = (count > 0 && listing.links.next.is_some()).then_some(start + count);
    Ok(PageList {
        site_id: site.id.clone(),
        space_key: space_key.to_owned(),
        pages: listing
            .results
            .into_iter()
            .map(|c| {
                let version = c.version.unwrap_or_default();
                PageSummary {
                    url: wiki_url(site, c.links.webui.as_deref()),
                    id: c.id,
                    title: c.title.unwrap_or_default(),
                    version: version.number,
                    updated_at: timestamp(version.when.as_deref()),
                }
            })
            .collect(),
        start,
        limit,
        next_start,
    })
}

/// One page with its body converted from storage format to Markdown.
pub(crate) async fn page(
    g: &Gateway<'_>,
    site: &Resource,
    id: &str,
) -> Result<PageView, ContentError> {
    let url = g.url(
        Product::Confluence,
        site,
        &["wiki", "rest", "api", "content", id],
    )?;
    let what = format!("Confluence page {id}");
    let content: Content = g
        .json("confluence_page", &what, || {
            g.http
                .get(url.clone())
                .query(&[("expand", "body.storage,version,space")])
        })
        .await?;
    let base = site
        .url
        .as_deref()
        .and_then(|u| Url::parse(u).ok())
        .and_then(|u| u.join("/wiki/").ok());
    let storage = content
        .body
        .and_then(|b| b.storage)
        .and_then(|s| s.value)
        .unwrap_or_default();
    let body = off_thread(move || storage_to_markdown(&storage, base.as_ref())).await?;
    let space = content.space.unwrap_or_default();
    let version = content.version.unwrap_or_default();
    Ok(PageView {
        site_id: site.id.clone(),
        id: if content.id.is_empty() {
            id.to_owned()
        } else {
            content.id
        },
        title: content.title.unwrap_or_default(),
        kind: content.kind,
        space: SpaceSummary {
            key: space.key,
            name: space.name,
        },
        version: version.number,
        updated_at: timestamp(version.when.as_deref()),
        url: wiki_url(site, content.links.webui.as_deref()),
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_lose_highlight_markers() {
        assert_eq!(
            clean_excerpt("the @@@hl@@@rollout@@@endhl@@@\n  plan"),
            "the rollout plan"
        );
        assert_eq!(
            clean_excerpt(&"x".repeat(400)).chars().count(),
            EXCERPT_CHARS
        );
    }
}
