//! Jira Data Center's REST v2 as the fake serves it: `myself`, `serverInfo`, the project list,
//! JQL search (GET and POST), issues and their comments, with wiki markup texts.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::data::{self, Issue, Person};
use super::{DC_PAGE_CAP, FakeDataCenter, dc_message};

/// The Jira routes (relative to the context path).
pub(super) fn routes() -> Router<FakeDataCenter> {
    Router::new()
        .route("/rest/api/2/myself", get(myself))
        .route("/rest/api/2/serverInfo", get(server_info))
        .route("/rest/api/2/project", get(projects))
        .route("/rest/api/2/search", get(search_get).post(search_post))
        .route("/rest/api/2/issue/{key}", get(issue))
        .route("/rest/api/2/issue/{key}/comment", get(comments))
}

/// Jira's error shape: `{"errorMessages": [message], "errors": {}}`.
pub(super) fn errors(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"errorMessages": [message], "errors": {}})),
    )
        .into_response()
}

fn bad_query(rejection: &QueryRejection) -> Response {
    errors(
        StatusCode::BAD_REQUEST,
        &format!("The query string is invalid: {rejection}"),
    )
}

fn person(base: &str, p: Person) -> Value {
    json!({
        "self": format!("{base}/rest/api/2/user?username={}", p.name),
        "key": p.key,
        "name": p.name,
        "displayName": p.display_name,
        "active": true,
    })
}

/// Which fields the caller asked for (`None`: all of them).
fn wanted_fields(fields: Option<Vec<String>>) -> Option<Vec<String>> {
    let fields: Vec<String> = fields?
        .into_iter()
        .map(|f| f.trim().to_owned())
        .filter(|f| !f.is_empty() && !f.starts_with('-'))
        .collect();
    let everything = fields.is_empty()
        || fields
            .iter()
            .any(|f| f == "*all" || f == "*navigable" || f == "*");
    (!everything).then_some(fields)
}

fn issue_json(base: &str, issue: &Issue, wanted: Option<&[String]>) -> Value {
    let project = data::PROJECTS.iter().find(|p| p.key == issue.project);
    let all = json!({
        "summary": issue.summary,
        "status": {
            "name": issue.status,
            "statusCategory": {"key": issue.status_category},
        },
        "updated": issue.updated,
        "created": issue.created,
        "description": data::crlf(issue.description),
        "issuetype": {"name": issue.issue_type},
        "priority": {"name": issue.priority},
        "labels": issue.labels,
        "assignee": issue.assignee.map(|p| person(base, p)),
        "reporter": person(base, issue.reporter),
        "project": project.map(|p| json!({"id": p.id, "key": p.key, "name": p.name})),
    });
    let fields = match (wanted, all) {
        (Some(wanted), Value::Object(map)) => Value::Object(
            map.into_iter()
                .filter(|(name, _)| wanted.iter().any(|w| w == name))
                .collect::<Map<String, Value>>(),
        ),
        (_, all) => all,
    };
    json!({
        "id": issue.id,
        "key": issue.key,
        "self": format!("{base}/rest/api/2/issue/{}", issue.id),
        "fields": fields,
    })
}

async fn myself(State(fake): State<FakeDataCenter>, headers: HeaderMap) -> Response {
    let Some(user) = fake.token_user(&headers) else {
        return dc_message(
            StatusCode::UNAUTHORIZED,
            "Client must be authenticated to access this resource.",
        );
    };
    let base = fake.base_url();
    axum::Json(json!({
        "self": format!("{base}/rest/api/2/user?username={}", user.name),
        "key": user.key,
        "name": user.name,
        "emailAddress": user.email,
        "displayName": user.display_name,
        "active": true,
        "timeZone": "Europe/London",
        "locale": "en_GB",
    }))
    .into_response()
}

async fn server_info(State(fake): State<FakeDataCenter>) -> Response {
    axum::Json(json!({
        "baseUrl": fake.base_url(),
        "version": "9.12.0",
        "versionNumbers": [9, 12, 0],
        "deploymentType": "Server",
        "buildNumber": 912_000,
        "serverTitle": fake.config().title,
    }))
    .into_response()
}

async fn projects(State(fake): State<FakeDataCenter>) -> Response {
    let base = fake.base_url();
    let list: Vec<Value> = data::PROJECTS
        .iter()
        .map(|p| {
            json!({
                "self": format!("{base}/rest/api/2/project/{}", p.id),
                "id": p.id,
                "key": p.key,
                "name": p.name,
                "projectTypeKey": p.kind,
            })
        })
        .collect();
    axum::Json(list).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SearchQuery {
    jql: Option<String>,
    start_at: Option<usize>,
    max_results: Option<usize>,
    fields: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SearchBody {
    jql: Option<String>,
    start_at: Option<usize>,
    max_results: Option<usize>,
    fields: Option<Vec<String>>,
}

async fn search_get(
    State(fake): State<FakeDataCenter>,
    query: Result<Query<SearchQuery>, QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(query) => query,
        Err(rejection) => return bad_query(&rejection),
    };
    let fields = query
        .fields
        .map(|f| f.split(',').map(str::to_owned).collect());
    search(
        &fake,
        query.jql.as_deref().unwrap_or(""),
        query.start_at,
        query.max_results,
        fields,
    )
}

async fn search_post(State(fake): State<FakeDataCenter>, body: Bytes) -> Response {
    let body: SearchBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(error) => {
            return errors(
                StatusCode::BAD_REQUEST,
                &format!("The request body is not valid: {error}"),
            );
        }
    };
    search(
        &fake,
        body.jql.as_deref().unwrap_or(""),
        body.start_at,
        body.max_results,
        body.fields,
    )
}

fn search(
    fake: &FakeDataCenter,
    jql: &str,
    start_at: Option<usize>,
    max_results: Option<usize>,
    fields: Option<Vec<String>>,
) -> Response {
    let query = match parse_jql(jql) {
        Ok(query) => query,
        Err(problem) => {
            return errors(
                StatusCode::BAD_REQUEST,
                &format!("Error in the JQL Query: {problem}"),
            );
        }
    };
    let mut hits: Vec<&Issue> = data::ISSUES
        .iter()
        .filter(|issue| query.project.as_deref().is_none_or(|p| issue.project == p))
        .filter(|issue| {
            query.terms.as_ref().is_none_or(|terms| {
                crate::content::matches(terms, &format!("{} {}", issue.summary, issue.description))
            })
        })
        .collect();
    hits.sort_by(|a, b| {
        let (a, b) = match query.order_field {
            OrderField::Updated => (a.updated, b.updated),
            OrderField::Created => (a.created, b.created),
        };
        if query.descending { b.cmp(a) } else { a.cmp(b) }
    });
    let start_at = start_at.unwrap_or(0);
    let max_results = max_results.unwrap_or(50).min(DC_PAGE_CAP);
    let wanted = wanted_fields(fields);
    let base = fake.base_url();
    let issues: Vec<Value> = hits
        .iter()
        .skip(start_at)
        .take(max_results)
        .map(|issue| issue_json(&base, issue, wanted.as_deref()))
        .collect();
    axum::Json(json!({
        "expand": "names,schema",
        "startAt": start_at,
        "maxResults": max_results,
        "total": hits.len(),
        "issues": issues,
    }))
    .into_response()
}

enum OrderField {
    Updated,
    Created,
}

/// What the fake understands of a JQL query.
struct Jql {
    terms: Option<Vec<String>>,
    project: Option<String>,
    order_field: OrderField,
    descending: bool,
}

/// Splits `text` at every case-insensitive `separator` outside double quotes.
pub(super) fn split_outside_quotes<'a>(text: &'a str, separator: &str) -> Vec<&'a str> {
    let lower = text.to_ascii_lowercase();
    let mut parts = Vec::new();
    let (mut start, mut in_quotes, mut escaped) = (0, false, false);
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            in_quotes = !in_quotes;
        } else if !in_quotes && i >= start && lower[i..].starts_with(separator) {
            parts.push(&text[start..i]);
            start = i + separator.len();
        }
    }
    parts.push(&text[start..]);
    parts
}

/// Reads `text ~ "…"`, `project = KEY` joined by `AND`, then an optional `ORDER BY updated|created
/// [ASC|DESC]`; anything else is an error message.
fn parse_jql(jql: &str) -> Result<Jql, String> {
    let mut query = Jql {
        terms: None,
        project: None,
        order_field: OrderField::Updated,
        descending: true,
    };
    let padded = format!(" {jql} ");
    let mut halves = split_outside_quotes(&padded, " order by ");
    if halves.len() > 2 {
        return Err("ORDER BY is given twice.".to_owned());
    }
    if halves.len() == 2 {
        let order = halves.pop().unwrap_or_default();
        let words: Vec<String> = order
            .split_whitespace()
            .map(str::to_ascii_lowercase)
            .collect();
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let (field, direction) = match words.as_slice() {
            [field] => (*field, "asc"),
            [field, direction] => (*field, *direction),
            _ => {
                return Err(format!(
                    "The ORDER BY clause '{}' is not valid.",
                    order.trim()
                ));
            }
        };
        query.order_field = match field {
            "updated" => OrderField::Updated,
            "created" => OrderField::Created,
            other => return Err(format!("Field '{other}' cannot be used to order issues.")),
        };
        query.descending = match direction {
            "asc" => false,
            "desc" => true,
            other => return Err(format!("Expecting ASC or DESC but got '{other}'.")),
        };
    }
    let condition = halves.first().copied().unwrap_or("").trim();
    if condition.is_empty() {
        return Ok(query);
    }
    for clause in split_outside_quotes(&format!(" {condition} "), " and ") {
        let clause = clause.trim();
        if split_outside_quotes(&format!(" {clause} "), " or ").len() > 1 {
            return Err("The fake does not support OR.".to_owned());
        }
        if let Some((field, _)) = clause.split_once('~') {
            if !field.trim().eq_ignore_ascii_case("text") {
                return Err(format!(
                    "The operator '~' is not supported by the field '{}'.",
                    field.trim()
                ));
            }
            let terms = crate::content::text_terms(clause)
                .ok_or_else(|| format!("The text query '{clause}' is not valid."))?;
            query.terms = Some(terms);
        } else if let Some((field, value)) = clause.split_once('=') {
            if !field.trim().eq_ignore_ascii_case("project") {
                return Err(format!("Field '{}' does not exist.", field.trim()));
            }
            let value = value.trim().trim_matches('"').to_owned();
            if !data::PROJECTS.iter().any(|p| p.key == value) {
                return Err(format!(
                    "The value '{value}' does not exist for the field 'project'."
                ));
            }
            query.project = Some(value);
        } else {
            return Err(format!("The clause '{clause}' is not valid."));
        }
    }
    Ok(query)
}

fn find_issue(key: &str) -> Option<&'static Issue> {
    data::ISSUES.iter().find(|i| i.key == key || i.id == key)
}

fn no_issue() -> Response {
    errors(
        StatusCode::NOT_FOUND,
        "Issue does not exist or you do not have permission to see it.",
    )
}

#[derive(Deserialize)]
struct IssueQuery {
    fields: Option<String>,
}

async fn issue(
    State(fake): State<FakeDataCenter>,
    Path(key): Path<String>,
    query: Result<Query<IssueQuery>, QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(query) => query,
        Err(rejection) => return bad_query(&rejection),
    };
    let Some(issue) = find_issue(&key) else {
        return no_issue();
    };
    let wanted = wanted_fields(
        query
            .fields
            .map(|f| f.split(',').map(str::to_owned).collect()),
    );
    axum::Json(issue_json(&fake.base_url(), issue, wanted.as_deref())).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PageQuery {
    start_at: Option<usize>,
    max_results: Option<usize>,
}

async fn comments(
    State(fake): State<FakeDataCenter>,
    Path(key): Path<String>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(query) => query,
        Err(rejection) => return bad_query(&rejection),
    };
    let Some(issue) = find_issue(&key) else {
        return no_issue();
    };
    let base = fake.base_url();
    let start_at = query.start_at.unwrap_or(0);
    let max_results = query.max_results.unwrap_or(50).min(DC_PAGE_CAP);
    let comments: Vec<Value> = issue
        .comments
        .iter()
        .skip(start_at)
        .take(max_results)
        .map(|c| {
            json!({
                "self": format!("{base}/rest/api/2/issue/{}/comment/{}", issue.id, c.id),
                "id": c.id,
                "author": person(&base, c.author),
                "updateAuthor": person(&base, c.author),
                "body": data::crlf(c.body),
                "created": c.created,
                "updated": c.updated,
            })
        })
        .collect();
    axum::Json(json!({
        "startAt": start_at,
        "maxResults": max_results,
        "total": issue.comments.len(),
        "comments": comments,
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jql_reads_text_project_and_order() {
        let query = parse_jql(r#"project = ENG AND text ~ "a and b" ORDER BY updated DESC"#)
            .expect("parses");
        assert_eq!(query.project.as_deref(), Some("ENG"));
        assert_eq!(query.terms, Some(vec!["a".to_owned(), "b".to_owned()]));
        assert!(query.descending);
        assert!(parse_jql("").is_ok());
        assert!(parse_jql("assignee = alice").is_err());
        assert!(parse_jql(r#"text ~ "x" OR text ~ "y""#).is_err());
        assert!(parse_jql("ORDER BY rank").is_err());
        assert!(parse_jql(r#"text ~ "unterminated"#).is_err());
        assert!(parse_jql("project = NOPE").is_err());
    }
}
