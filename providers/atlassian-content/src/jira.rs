//! Jira through the gateway: JQL text search, the project list, one issue with its comments as
//! Markdown. Cloud speaks REST v3 (bodies in ADF); Data Center REST v2 (bodies in wiki markup,
//! the project list unpaged, people keyed by `key`).

use grantry_core::Resource;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::gateway::{
    ContentError, Flavor, Gateway, JIRA_COMMENTS, JIRA_ISSUE, JIRA_PROJECTS, JIRA_SEARCH, Product,
    id_string, off_thread, timestamp, web_url,
};
use super::search::{Hit, text_query};
use grantry_atlassian_markdown::{adf_to_markdown, adf_to_plain_text, wiki_to_markdown};
use url::Url;

/// Projects fetched per page while following pagination.
const PROJECT_PAGE: usize = 50;
/// Most projects listed; a longer list is cut and marked `truncated`.
pub(crate) const MAX_PROJECTS: usize = 1000;
/// Comments fetched per page.
const COMMENT_PAGE: usize = 100;
/// Most comments returned with an issue.
pub(crate) const MAX_COMMENTS: usize = 500;
/// Most pages fetched for one list, whatever the upstream says.
const MAX_PAGES: usize = 40;
/// Longest excerpt of a search hit, in characters.
const EXCERPT_CHARS: usize = 300;

#[derive(Deserialize, Default)]
#[serde(default)]
struct Named {
    name: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct User {
    /// Cloud's account id.
    account_id: Option<String>,
    /// Data Center's stable user key.
    key: Option<String>,
    display_name: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Fields {
    summary: Option<String>,
    status: Option<Named>,
    assignee: Option<User>,
    reporter: Option<User>,
    issuetype: Option<Named>,
    priority: Option<Named>,
    labels: Vec<String>,
    created: Option<String>,
    updated: Option<String>,
    description: Value,
}

#[derive(Deserialize)]
struct Issue {
    #[serde(deserialize_with = "id_string", default)]
    id: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    fields: Fields,
}

#[derive(Deserialize)]
struct JqlPage {
    #[serde(default)]
    issues: Vec<Issue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProjectPage {
    #[serde(default)]
    values: Vec<Project>,
    is_last: Option<bool>,
    total: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Project {
    #[serde(deserialize_with = "id_string", default)]
    id: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    name: String,
    project_type_key: Option<String>,
}

#[derive(Deserialize)]
struct CommentPage {
    #[serde(default)]
    comments: Vec<Comment>,
    total: Option<u64>,
}

#[derive(Deserialize)]
struct Comment {
    #[serde(deserialize_with = "id_string", default)]
    id: String,
    #[serde(default)]
    author: Option<User>,
    #[serde(default)]
    body: Value,
    created: Option<String>,
    updated: Option<String>,
}

/// A person as the routes show them.
#[derive(Serialize, Debug, PartialEq, Eq, utoipa::ToSchema)]
pub(crate) struct Person {
    /// The Atlassian account id (on Data Center, the user's stable key).
    account_id: Option<String>,
    /// The name shown.
    display_name: Option<String>,
}

impl From<User> for Person {
    fn from(u: User) -> Self {
        Self {
            account_id: u.account_id.or(u.key),
            display_name: u.display_name,
        }
    }
}

/// One project of `GET /jira/{site}/projects`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ProjectView {
    /// The project id.
    id: String,
    /// The project key (`ACME`).
    key: String,
    /// The project name.
    name: String,
    /// `software`, `service_desk`, `business`, …
    #[serde(rename = "type")]
    kind: Option<String>,
    /// The project on the site.
    url: Option<String>,
}

/// The answer of `GET /jira/{site}/projects`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Projects {
    /// The site.
    site_id: String,
    /// The projects, as Jira orders them.
    projects: Vec<ProjectView>,
    /// Whether the cap (1000 projects, 40 upstream pages) cut the list.
    truncated: bool,
}

/// One comment of an issue.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct CommentView {
    /// The comment id.
    id: String,
    /// Who wrote it.
    author: Option<Person>,
    /// RFC 3339 UTC.
    created_at: Option<String>,
    /// RFC 3339 UTC.
    updated_at: Option<String>,
    /// The body as Markdown.
    body: String,
}

/// The answer of `GET /jira/{site}/issues/{key}`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct IssueView {
    /// The site.
    site_id: String,
    /// The issue id.
    id: String,
    /// The issue key (`ACME-1`).
    key: String,
    /// The summary.
    summary: String,
    /// The status name.
    status: Option<String>,
    /// `Story`, `Bug`, …
    issue_type: Option<String>,
    /// The priority name.
    priority: Option<String>,
    /// The labels.
    labels: Vec<String>,
    /// The assignee, `null` when unassigned.
    assignee: Option<Person>,
    /// The reporter.
    reporter: Option<Person>,
    /// The issue on the site.
    url: Option<String>,
    /// RFC 3339 UTC.
    created_at: Option<String>,
    /// RFC 3339 UTC.
    updated_at: Option<String>,
    /// The description as Markdown (`""` when there is none).
    description: String,
    /// The comments, oldest first (at most 500).
    comments: Vec<CommentView>,
    /// Whether the cap cut the comments.
    comments_truncated: bool,
}

/// Issues matching `query` (JQL `text ~`), newest first.
pub(crate) async fn search(
    g: &Gateway<'_>,
    site: &Resource,
    query: &str,
    limit: usize,
) -> Result<Vec<Hit>, ContentError> {
    let path: &[&str] = match g.flavor {
        Flavor::Cloud => &["rest", "api", "3", "search", "jql"],
        Flavor::DataCenter => &["rest", "api", "2", "search"],
    };
    let url = g.url(Product::Jira, site, path)?;
    let body = json!({
        "jql": format!("text ~ {} ORDER BY updated DESC", text_query(query)),
        "maxResults": limit,
        "fields": ["summary", "status", "updated", "description"],
    });
    let what = format!("Jira search on {}", site_label(site));
    let page: JqlPage = g
        .json(JIRA_SEARCH, &what, || g.http.post(url.clone()).json(&body))
        .await?;
    let flavor = g.flavor;
    let site = site.clone();
    off_thread(move || {
        page.issues
            .into_iter()
            .filter(|issue| !issue.key.is_empty())
            .map(|issue| Hit {
                kind: "jira_issue",
                site_id: site.id.clone(),
                url: web_url(&site, &format!("/browse/{}", issue.key)),
                title: issue.fields.summary.unwrap_or_default(),
                excerpt: match (flavor, &issue.fields.description) {
                    (Flavor::DataCenter, Value::String(wiki)) => {
                        wiki_plain_text(wiki, EXCERPT_CHARS)
                    }
                    (_, description) => adf_to_plain_text(description, EXCERPT_CHARS),
                },
                updated_at: timestamp(issue.fields.updated.as_deref()),
                id: issue.key,
            })
            .collect()
    })
    .await
}

/// Every project of the site (pagination followed, at most [`MAX_PROJECTS`]).
pub(crate) async fn projects(g: &Gateway<'_>, site: &Resource) -> Result<Projects, ContentError> {
    if g.flavor == Flavor::DataCenter {
        return all_projects(g, site).await;
    }
    let base = g.url(
        Product::Jira,
        site,
        &["rest", "api", "3", "project", "search"],
    )?;
    let what = format!("Jira projects of {}", site_label(site));
    let mut projects = Vec::new();
    let mut truncated = true;
    for _ in 0..MAX_PAGES {
        let start = projects.len();
        let page: ProjectPage = g
            .json(JIRA_PROJECTS, &what, || {
                g.http.get(base.clone()).query(&[
                    ("startAt", start.to_string()),
                    ("maxResults", PROJECT_PAGE.to_string()),
                    ("orderBy", "key".to_owned()),
                ])
            })
            .await?;
        let count = page.values.len();
        projects.extend(page.values.into_iter().map(|p| ProjectView {
            url: web_url(site, &format!("/browse/{}", p.key)),
            id: p.id,
            key: p.key,
            name: p.name,
            kind: p.project_type_key,
        }));
        let last = page.is_last.unwrap_or_else(|| {
            page.total
                .is_none_or(|total| projects.len() as u64 >= total)
        });
        if last || count == 0 {
            truncated = false;
            break;
        }
        if projects.len() >= MAX_PROJECTS {
            break;
        }
    }
    truncated = truncated || projects.len() > MAX_PROJECTS;
    projects.truncate(MAX_PROJECTS);
    Ok(Projects {
        site_id: site.id.clone(),
        projects,
        truncated,
    })
}

/// Every project of a Data Center instance: `GET /rest/api/2/project` answers the whole list
/// at once (cut at [`MAX_PROJECTS`]).
async fn all_projects(g: &Gateway<'_>, site: &Resource) -> Result<Projects, ContentError> {
    let url = g.url(Product::Jira, site, &["rest", "api", "2", "project"])?;
    let what = format!("Jira projects of {}", site_label(site));
    let list: Vec<Project> = g
        .json(JIRA_PROJECTS, &what, || g.http.get(url.clone()))
        .await?;
    let truncated = list.len() > MAX_PROJECTS;
    Ok(Projects {
        site_id: site.id.clone(),
        projects: list
            .into_iter()
            .take(MAX_PROJECTS)
            .map(|p| ProjectView {
                url: web_url(site, &format!("/browse/{}", p.key)),
                id: p.id,
                key: p.key,
                name: p.name,
                kind: p.project_type_key,
            })
            .collect(),
        truncated,
    })
}

/// The REST version of the flavor: `3` on Cloud, `2` on Data Center.
fn version(g: &Gateway<'_>) -> &'static str {
    match g.flavor {
        Flavor::Cloud => "3",
        Flavor::DataCenter => "2",
    }
}

/// A description or comment body as Markdown: ADF on Cloud, wiki markup on Data Center.
fn body_markdown(flavor: Flavor, body: &Value, base: Option<&Url>) -> String {
    match (flavor, body) {
        (Flavor::DataCenter, Value::String(wiki)) => wiki_to_markdown(wiki, base),
        (_, adf) => adf_to_markdown(adf),
    }
}

/// Wiki markup as one line of plain text, cut to at most `max_chars` characters.
fn wiki_plain_text(wiki: &str, max_chars: usize) -> String {
    let markdown = wiki_to_markdown(wiki, None);
    let text: String = markdown
        .chars()
        .map(|c| match c {
            '#' | '*' | '_' | '`' | '>' | '|' | '\\' | '~' => ' ',
            c => c,
        })
        .collect();
    adf_to_plain_text(&Value::String(text), max_chars)
}

/// One issue with its description and comments as Markdown.
pub(crate) async fn issue(
    g: &Gateway<'_>,
    site: &Resource,
    key: &str,
) -> Result<IssueView, ContentError> {
    let url = g.url(
        Product::Jira,
        site,
        &["rest", "api", version(g), "issue", key],
    )?;
    let what = format!("Jira issue {key}");
    let issue: Issue = g
        .json(JIRA_ISSUE, &what, || {
            g.http.get(url.clone()).query(&[(
                "fields",
                "summary,status,assignee,reporter,issuetype,priority,labels,created,updated,description",
            )])
        })
        .await?;
    let (raw_comments, comments_truncated) = comments(g, site, key).await?;
    let mut fields = issue.fields;
    let description_body = std::mem::take(&mut fields.description);
    let flavor = g.flavor;
    let base = site.url.as_deref().and_then(|u| Url::parse(u).ok());
    let (description, comments) = off_thread(move || {
        let base = base.as_ref();
        let description = body_markdown(flavor, &description_body, base);
        let comments: Vec<CommentView> = raw_comments
            .into_iter()
            .map(|c| CommentView {
                id: c.id,
                author: c.author.map(Person::from),
                created_at: timestamp(c.created.as_deref()),
                updated_at: timestamp(c.updated.as_deref()),
                body: body_markdown(flavor, &c.body, base),
            })
            .collect();
        (description, comments)
    })
    .await?;
    let key = if issue.key.is_empty() {
        key.to_owned()
    } else {
        issue.key
    };
    Ok(IssueView {
        site_id: site.id.clone(),
        id: issue.id,
        url: web_url(site, &format!("/browse/{key}")),
        key,
        summary: fields.summary.unwrap_or_default(),
        status: fields.status.and_then(|s| s.name),
        issue_type: fields.issuetype.and_then(|s| s.name),
        priority: fields.priority.and_then(|s| s.name),
        labels: fields.labels,
        assignee: fields.assignee.map(Person::from),
        reporter: fields.reporter.map(Person::from),
        created_at: timestamp(fields.created.as_deref()),
        updated_at: timestamp(fields.updated.as_deref()),
        description,
        comments,
        comments_truncated,
    })
}

/// The comments of an issue, oldest first (pagination followed, at most [`MAX_COMMENTS`]).
async fn comments(
    g: &Gateway<'_>,
    site: &Resource,
    key: &str,
) -> Result<(Vec<Comment>, bool), ContentError> {
    let url = g.url(
        Product::Jira,
        site,
        &["rest", "api", version(g), "issue", key, "comment"],
    )?;
    let what = format!("comments of Jira issue {key}");
    let mut out = Vec::new();
    for page_number in 0..MAX_PAGES {
        let start = out.len();
        let page: CommentPage = g
            .json(JIRA_COMMENTS, &what, || {
                g.http.get(url.clone()).query(&[
                    ("startAt", start.to_string()),
                    ("maxResults", COMMENT_PAGE.to_string()),
                    ("orderBy", "created".to_owned()),
                ])
            })
            .await?;
        let count = page.comments.len();
        out.extend(page.comments);
        let total = page.total.unwrap_or(out.len() as u64);
        if count == 0 || out.len() as u64 >= total {
            return Ok((out, false));
        }
        if out.len() >= MAX_COMMENTS || page_number + 1 == MAX_PAGES {
            out.truncate(MAX_COMMENTS);
            return Ok((out, true));
        }
    }
    Ok((out, true))
}

/// A site's name for messages (its id when it has none).
pub(crate) fn site_label(site: &Resource) -> &str {
    if site.name.trim().is_empty() {
        &site.id
    } else {
        &site.name
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use axum::Router;
    use axum::extract::Query;
    use axum::routing::get;
    use grantry_core::AccessToken;
    use url::Url;

    use super::*;

    #[tokio::test]
    async fn endless_pagination_stops_at_the_cap() {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let app = Router::new().route(
            "/ex/jira/c1/rest/api/3/project/search",
            get(
                move |Query(q): Query<std::collections::HashMap<String, String>>| {
                    let seen = seen.clone();
                    async move {
                        seen.fetch_add(1, Ordering::SeqCst);
                        let start: usize =
                            q.get("startAt").and_then(|s| s.parse().ok()).unwrap_or(0);
                        let values: Vec<Value> = (start..start + 50)
                            .map(|i| json!({"id": i, "key": format!("P{i}"), "name": "p"}))
                            .collect();
                        axum::Json(json!({"values": values, "isLast": false, "total": 1_000_000}))
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let api =
            Url::parse(&format!("http://{}", listener.local_addr().expect("addr"))).expect("url");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let http = grantry_protocol::http::client(Duration::from_secs(5)).expect("client");
        let token = AccessToken::new("t");
        let g = Gateway {
            http: &http,
            api: &api,
            flavor: crate::gateway::Flavor::Cloud,
            token: &token,
            provider: "atlassian",
            telemetry: &grantry_core::telemetry::Telemetry::default(),
        };
        let site = Resource {
            id: "c1".into(),
            ..Resource::default()
        };
        let listed = projects(&g, &site).await.expect("projects");
        assert!(listed.truncated);
        assert_eq!(listed.projects.len(), MAX_PROJECTS);
        assert_eq!(listed.projects[0].id, "0");
        assert_eq!(listed.projects[999].key, "P999");
        assert_eq!(calls.load(Ordering::SeqCst), MAX_PROJECTS / PROJECT_PAGE);
    }
}
