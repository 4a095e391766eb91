//! Confluence through the gateway: CQL search, the space list, the pages of a space
//! (cursor-paged) and one page with its body as Markdown. Cloud: the search on REST v1, where
//! Atlassian still documents it, the rest on REST v2. Data Center: REST v1 throughout.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use grantry_core::Resource;
use serde::{Deserialize, Serialize};
use url::Url;

use super::gateway::{
    CONFLUENCE_PAGE, CONFLUENCE_PAGES, CONFLUENCE_SEARCH, CONFLUENCE_SPACE, CONFLUENCE_SPACES,
    ContentError, Flavor, Gateway, Product, id_string, off_thread, site_root, timestamp, web_url,
};
use super::jira::site_label;
use super::search::{Hit, text_query};
use grantry_atlassian_markdown::storage_to_markdown;

/// Spaces fetched per upstream page while following pagination (v2 allows 250).
const SPACE_PAGE: usize = 250;
/// Most spaces listed; a longer list is cut and marked `truncated`.
pub(crate) const MAX_SPACES: usize = 1000;
/// Most upstream pages fetched for one list, whatever the upstream says.
const MAX_PAGES: usize = 40;
/// Longest excerpt of a search hit, in characters.
const EXCERPT_CHARS: usize = 300;
/// Spaces fetched per upstream page on Data Center.
const DC_SPACE_PAGE: usize = 50;
/// Largest offset a Data Center page cursor may carry.
const MAX_DC_START: usize = 1_000_000;
/// Longest cursor accepted from a client.
pub(crate) const MAX_CURSOR: usize = 2048;

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
    content: Option<SearchContent>,
    title: Option<String>,
    excerpt: Option<String>,
    url: Option<String>,
    #[serde(rename = "lastModified")]
    last_modified: Option<String>,
}

/// The content of a CQL search hit (v1).
#[derive(Deserialize)]
struct SearchContent {
    #[serde(deserialize_with = "id_string", default)]
    id: String,
    title: Option<String>,
    #[serde(rename = "_links", default)]
    links: Links,
}

/// A version of a v2 page.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Version {
    number: Option<u64>,
    #[serde(rename = "createdAt")]
    created_at: Option<String>,
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

/// A v2 page (`PageBulk`, `PageSingle`).
#[derive(Deserialize)]
struct Page {
    #[serde(deserialize_with = "id_string", default)]
    id: String,
    title: Option<String>,
    #[serde(rename = "spaceId", deserialize_with = "id_string", default)]
    space_id: String,
    version: Option<Version>,
    body: Option<Body>,
    #[serde(rename = "_links", default)]
    links: Links,
}

/// A v1 version (Data Center).
#[derive(Deserialize, Default)]
#[serde(default)]
struct V1Version {
    number: Option<u64>,
    when: Option<String>,
}

/// The space of a v1 content.
#[derive(Deserialize, Default)]
#[serde(default)]
struct SpaceRef {
    key: Option<String>,
    name: Option<String>,
}

/// A v1 content (Data Center's REST API).
#[derive(Deserialize)]
struct V1Content {
    #[serde(deserialize_with = "id_string", default)]
    id: String,
    title: Option<String>,
    space: Option<SpaceRef>,
    version: Option<V1Version>,
    body: Option<Body>,
    #[serde(rename = "_links", default)]
    links: Links,
}

/// A space (v2 `SpaceBulk`, `SpaceSingle`; v1 on Data Center).
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
    /// `global`, `personal`, `collaboration`, `knowledge_base`.
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
    /// The space key.
    space_key: String,
    /// The space id (`null` on Data Center, which lists pages by key).
    space_id: Option<String>,
    /// This page of the listing.
    pages: Vec<PageSummary>,
    /// The most items asked for.
    limit: usize,
    /// The opaque cursor of the next page (pass it as `cursor`), `null` at the end.
    next_cursor: Option<String>,
}

/// The space of a page.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct SpaceSummary {
    /// The space id.
    id: Option<String>,
    /// The space key; `null` when the space cannot be read.
    key: Option<String>,
    /// The space name; `null` when the space cannot be read.
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
    /// Always `page`.
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

/// Where a page listing goes on: the space key it was asked for and Atlassian's own cursor
/// (Cloud) or offset (Data Center), in one opaque string for the client. The space is resolved
/// from the key on every page, so a cursor cannot point the listing at another space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PageCursor {
    /// The space key the listing was asked for.
    #[serde(rename = "k")]
    key: String,
    /// Atlassian's cursor, or the Data Center offset.
    #[serde(rename = "c")]
    upstream: String,
}

impl PageCursor {
    /// The string handed to the client.
    fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    /// A client's cursor for the space `key`, or the 400 it deserves.
    pub(crate) fn decode(text: &str, key: &str) -> Result<Self, ContentError> {
        let bad = || ContentError::BadRequest("`cursor` is not one this route handed out".into());
        if text.len() > MAX_CURSOR {
            return Err(bad());
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?;
        let cursor: Self = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        if cursor.key != key {
            return Err(ContentError::BadRequest(
                "`cursor` belongs to another space".into(),
            ));
        }
        Ok(cursor)
    }
}

/// A page's link on the site: `/wiki{webui}` on Cloud, `{webui}` under the instance's context
/// path on Data Center.
fn page_url(g: &Gateway<'_>, site: &Resource, webui: Option<&str>) -> Option<String> {
    match g.flavor {
        Flavor::Cloud => wiki_url(site, webui),
        Flavor::DataCenter => web_url(site, webui?),
    }
}

/// The query parameter `name` of `_links.next` (a relative URL), never its host or path.
fn link_param(links: &Links, name: &str) -> Option<String> {
    let next = links.next.as_deref()?;
    let url = Url::parse("https://site.invalid/").ok()?.join(next).ok()?;
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty())
}

/// The `start` of a v1 `_links.next` (Data Center), when it moves forward and stays within
/// [`MAX_DC_START`]; `None` ends the listing.
fn next_start(links: &Links, start: usize) -> Option<usize> {
    link_param(links, "start")
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|next| *next > start && *next <= MAX_DC_START)
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
    match g.flavor {
        Flavor::Cloud => cloud_search(g, site, query, limit).await,
        Flavor::DataCenter => dc_search(g, site, query, limit).await,
    }
}

/// The CQL of a text search, newest first.
fn search_cql(query: &str) -> String {
    format!(
        "type = page AND text ~ {} ORDER BY lastmodified DESC",
        text_query(query)
    )
}

/// Data Center's CQL search (`/rest/api/content/search`): contents, without excerpts.
async fn dc_search(
    g: &Gateway<'_>,
    site: &Resource,
    query: &str,
    limit: usize,
) -> Result<Vec<Hit>, ContentError> {
    let url = g.url(
        Product::Confluence,
        site,
        &["rest", "api", "content", "search"],
    )?;
    let cql = search_cql(query);
    let what = format!("Confluence search on {}", site_label(site));
    let listing: Listing<V1Content> = g
        .json(CONFLUENCE_SEARCH, &what, || {
            g.http.get(url.clone()).query(&[
                ("cql", cql.as_str()),
                ("limit", &limit.to_string()),
                ("expand", "version"),
            ])
        })
        .await?;
    Ok(listing
        .results
        .into_iter()
        .filter(|c| !c.id.is_empty())
        .map(|c| Hit {
            kind: "confluence_page",
            site_id: site.id.clone(),
            url: page_url(g, site, c.links.webui.as_deref()),
            title: c.title.unwrap_or_default(),
            excerpt: String::new(),
            updated_at: timestamp(c.version.and_then(|v| v.when).as_deref()),
            id: c.id,
        })
        .collect())
}

/// Cloud's CQL search (`/wiki/rest/api/search`, v1), with excerpts.
async fn cloud_search(
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
    let cql = search_cql(query);
    let what = format!("Confluence search on {}", site_label(site));
    let listing: Listing<SearchResult> = g
        .json(CONFLUENCE_SEARCH, &what, || {
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

/// Every space of the site (pagination followed, at most [`MAX_SPACES`]): Cloud's
/// `/wiki/api/v2/spaces` by the `cursor` of `_links.next`, Data Center's `/rest/api/space` by its
/// `start`.
pub(crate) async fn spaces(g: &Gateway<'_>, site: &Resource) -> Result<Spaces, ContentError> {
    let (path, page_size, follow): (&[&str], usize, &str) = match g.flavor {
        Flavor::Cloud => (&["wiki", "api", "v2", "spaces"], SPACE_PAGE, "cursor"),
        Flavor::DataCenter => (&["rest", "api", "space"], DC_SPACE_PAGE, "start"),
    };
    let url = g.url(Product::Confluence, site, path)?;
    let what = format!("Confluence spaces of {}", site_label(site));
    let mut spaces = Vec::new();
    let mut next: Option<String> = None;
    let mut truncated = true;
    for _ in 0..MAX_PAGES {
        let page: Listing<Space> = g
            .json(CONFLUENCE_SPACES, &what, || {
                let request = g
                    .http
                    .get(url.clone())
                    .query(&[("limit", page_size.to_string())]);
                match &next {
                    Some(value) => request.query(&[(follow, value)]),
                    None => request,
                }
            })
            .await?;
        let count = page.results.len();
        spaces.extend(page.results.into_iter().map(|s| {
            let fallback = match g.flavor {
                Flavor::Cloud => format!("/wiki/spaces/{}", s.key),
                Flavor::DataCenter => format!("/display/{}", s.key),
            };
            SpaceView {
                url: page_url(g, site, s.links.webui.as_deref())
                    .or_else(|| web_url(site, &fallback)),
                id: s.id,
                key: s.key,
                name: s.name,
                kind: s.kind,
            }
        }));
        next = link_param(&page.links, follow);
        if count == 0 || next.is_none() {
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

/// The id of the space `key` (`GET /wiki/api/v2/spaces?keys=…`).
async fn space_id(g: &Gateway<'_>, site: &Resource, key: &str) -> Result<String, ContentError> {
    let url = g.url(Product::Confluence, site, &["wiki", "api", "v2", "spaces"])?;
    let what = format!("Confluence space {key}");
    let listing: Listing<Space> = g
        .json(CONFLUENCE_SPACES, &what, || {
            g.http.get(url.clone()).query(&[("keys", key)])
        })
        .await?;
    listing
        .results
        .into_iter()
        .find(|s| s.key == key && !s.id.is_empty())
        .map(|s| s.id)
        .ok_or_else(|| {
            ContentError::NotFound(format!("{what}: not found (or this grant cannot see it)"))
        })
}

/// One page of the pages of a space, from the start or from a client's `cursor`.
pub(crate) async fn pages(
    g: &Gateway<'_>,
    site: &Resource,
    space_key: &str,
    cursor: Option<PageCursor>,
    limit: usize,
) -> Result<PageList, ContentError> {
    if g.flavor == Flavor::DataCenter {
        return dc_pages(g, site, space_key, cursor, limit).await;
    }
    let space_id = space_id(g, site, space_key).await?;
    let upstream = cursor.map(|c| c.upstream);
    let url = g.url(
        Product::Confluence,
        site,
        &["wiki", "api", "v2", "spaces", &space_id, "pages"],
    )?;
    let what = format!("pages of Confluence space {space_key}");
    let listing: Listing<Page> = g
        .json(CONFLUENCE_PAGES, &what, || {
            let request = g
                .http
                .get(url.clone())
                .query(&[("limit", limit.to_string())]);
            match &upstream {
                Some(c) => request.query(&[("cursor", c)]),
                None => request,
            }
        })
        .await?;
    let next = if listing.results.is_empty() {
        None
    } else {
        link_param(&listing.links, "cursor")
    };
    Ok(PageList {
        site_id: site.id.clone(),
        space_key: space_key.to_owned(),
        next_cursor: next.map(|upstream| {
            PageCursor {
                key: space_key.to_owned(),
                upstream,
            }
            .encode()
        }),
        space_id: Some(space_id),
        pages: listing
            .results
            .into_iter()
            .map(|p| {
                let version = p.version.unwrap_or_default();
                PageSummary {
                    url: wiki_url(site, p.links.webui.as_deref()),
                    id: p.id,
                    title: p.title.unwrap_or_default(),
                    version: version.number,
                    updated_at: timestamp(version.created_at.as_deref()),
                }
            })
            .collect(),
        limit,
    })
}

/// One page of the pages of a space on Data Center (`/rest/api/content?spaceKey=…`); the
/// client's cursor carries the offset.
async fn dc_pages(
    g: &Gateway<'_>,
    site: &Resource,
    space_key: &str,
    cursor: Option<PageCursor>,
    limit: usize,
) -> Result<PageList, ContentError> {
    let start = match cursor {
        None => 0,
        Some(c) => c
            .upstream
            .parse::<usize>()
            .ok()
            .filter(|start| *start <= MAX_DC_START)
            .ok_or_else(|| {
                ContentError::BadRequest("`cursor` is not one this route handed out".into())
            })?,
    };
    let url = g.url(Product::Confluence, site, &["rest", "api", "content"])?;
    let what = format!("pages of Confluence space {space_key}");
    let listing: Listing<V1Content> = g
        .json(CONFLUENCE_PAGES, &what, || {
            g.http.get(url.clone()).query(&[
                ("spaceKey", space_key.to_owned()),
                ("type", "page".to_owned()),
                ("start", start.to_string()),
                ("limit", limit.to_string()),
                ("expand", "version".to_owned()),
            ])
        })
        .await?;
    let next_cursor = next_start(&listing.links, start)
        .filter(|_| !listing.results.is_empty())
        .map(|next| {
            PageCursor {
                key: space_key.to_owned(),
                upstream: next.to_string(),
            }
            .encode()
        });
    Ok(PageList {
        site_id: site.id.clone(),
        space_key: space_key.to_owned(),
        space_id: None,
        pages: listing
            .results
            .into_iter()
            .map(|c| {
                let version = c.version.unwrap_or_default();
                PageSummary {
                    url: page_url(g, site, c.links.webui.as_deref()),
                    id: c.id,
                    title: c.title.unwrap_or_default(),
                    version: version.number,
                    updated_at: timestamp(version.when.as_deref()),
                }
            })
            .collect(),
        limit,
        next_cursor,
    })
}

/// The key and name of the space `id`; `None` when the grant cannot read it.
async fn space_names(
    g: &Gateway<'_>,
    site: &Resource,
    id: &str,
) -> Result<Option<(String, String)>, ContentError> {
    let url = g.url(
        Product::Confluence,
        site,
        &["wiki", "api", "v2", "spaces", id],
    )?;
    let what = format!("Confluence space {id}");
    match g
        .json::<Space>(CONFLUENCE_SPACE, &what, || g.http.get(url.clone()))
        .await
    {
        Ok(space) => Ok(Some((space.key, space.name))),
        Err(ContentError::NotFound(_) | ContentError::InsufficientScope { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// One page with its body converted from storage format to Markdown.
pub(crate) async fn page(
    g: &Gateway<'_>,
    site: &Resource,
    id: &str,
) -> Result<PageView, ContentError> {
    if g.flavor == Flavor::DataCenter {
        return dc_page(g, site, id).await;
    }
    let url = g.url(
        Product::Confluence,
        site,
        &["wiki", "api", "v2", "pages", id],
    )?;
    let what = format!("Confluence page {id}");
    let content: Page = g
        .json(CONFLUENCE_PAGE, &what, || {
            g.http.get(url.clone()).query(&[("body-format", "storage")])
        })
        .await?;
    let names = if content.space_id.is_empty() {
        None
    } else {
        space_names(g, site, &content.space_id).await?
    };
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
    let version = content.version.unwrap_or_default();
    let (key, name) = names.unzip();
    Ok(PageView {
        site_id: site.id.clone(),
        id: if content.id.is_empty() {
            id.to_owned()
        } else {
            content.id
        },
        title: content.title.unwrap_or_default(),
        kind: Some("page".to_owned()),
        space: SpaceSummary {
            id: (!content.space_id.is_empty()).then_some(content.space_id),
            key,
            name,
        },
        version: version.number,
        updated_at: timestamp(version.created_at.as_deref()),
        url: wiki_url(site, content.links.webui.as_deref()),
        body,
    })
}

/// One page on Data Center (`/rest/api/content/{id}` with its storage body, version, space).
async fn dc_page(g: &Gateway<'_>, site: &Resource, id: &str) -> Result<PageView, ContentError> {
    let url = g.url(Product::Confluence, site, &["rest", "api", "content", id])?;
    let what = format!("Confluence page {id}");
    let content: V1Content = g
        .json(CONFLUENCE_PAGE, &what, || {
            g.http
                .get(url.clone())
                .query(&[("expand", "body.storage,version,space")])
        })
        .await?;
    let base = site_root(site);
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
        kind: Some("page".to_owned()),
        space: SpaceSummary {
            id: None,
            key: space.key,
            name: space.name,
        },
        version: version.number,
        updated_at: timestamp(version.when.as_deref()),
        url: page_url(g, site, content.links.webui.as_deref()),
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

    #[test]
    fn cursors_come_back_only_for_their_space() {
        let cursor = PageCursor {
            key: "ENG".into(),
            upstream: "abc=/+".into(),
        };
        let text = cursor.encode();
        assert_eq!(PageCursor::decode(&text, "ENG"), Ok(cursor));
        assert!(PageCursor::decode(&text, "OPS").is_err());
        assert!(PageCursor::decode("not base64!", "ENG").is_err());
        assert!(PageCursor::decode(&URL_SAFE_NO_PAD.encode("[1]"), "ENG").is_err());
        assert!(PageCursor::decode(&"A".repeat(MAX_CURSOR + 1), "ENG").is_err());
    }

    #[test]
    fn data_center_offsets_come_from_the_next_link_and_move_forward() {
        let links = |next: &str| Links {
            webui: None,
            next: Some(next.to_owned()),
        };
        assert_eq!(
            next_start(&links("/rest/api/content?spaceKey=ENG&start=4&limit=2"), 2),
            Some(4)
        );
        assert_eq!(next_start(&links("/rest/api/content?start=2"), 2), None);
        assert_eq!(next_start(&links("/rest/api/content?start=1"), 2), None);
        assert_eq!(
            next_start(&links(&format!("/x?start={}", MAX_DC_START + 1)), 0),
            None
        );
        assert_eq!(next_start(&links("/rest/api/content?limit=2"), 0), None);
        assert_eq!(next_start(&Links::default(), 0), None);
    }

    #[test]
    fn the_next_cursor_is_read_from_the_relative_link() {
        let links = |next: &str| Links {
            webui: None,
            next: Some(next.to_owned()),
        };
        assert_eq!(
            link_param(&links("/wiki/api/v2/spaces?cursor=a%2Bb&limit=2"), "cursor").as_deref(),
            Some("a+b")
        );
        assert_eq!(
            link_param(&links("https://evil.example/x?cursor=z"), "cursor").as_deref(),
            Some("z")
        );
        assert_eq!(
            link_param(&links("/wiki/api/v2/spaces?limit=2"), "cursor"),
            None
        );
        assert_eq!(link_param(&Links::default(), "cursor"), None);
    }
}
