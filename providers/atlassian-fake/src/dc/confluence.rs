//! Confluence Data Center's REST v1 as the fake serves it: the current user, spaces, the content
//! list of a space, one page (storage format) and CQL search, at most two results a page.

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use super::data::{self, Page};
use super::jira::split_outside_quotes;
use super::{DC_PAGE_CAP, FakeDataCenter, dc_message};

/// The Confluence routes (relative to the context path).
pub(super) fn routes() -> Router<FakeDataCenter> {
    Router::new()
        .route("/rest/api/user/current", get(current_user))
        .route("/rest/api/space", get(spaces))
        .route("/rest/api/content", get(content_list))
        .route("/rest/api/content/search", get(search))
        .route("/rest/api/content/{id}", get(content))
}

/// Confluence's error shape: `{"statusCode", "data", "message"}`.
pub(super) fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({
            "statusCode": status.as_u16(),
            "data": {"authorized": status != StatusCode::FORBIDDEN, "valid": false, "errors": [], "successful": false},
            "message": message,
        })),
    )
        .into_response()
}

fn bad_query(rejection: &QueryRejection) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        &format!("The query string is invalid: {rejection}"),
    )
}

/// `/display/KEY/Title+With+Pluses`, the web UI path of a page.
fn webui(page: &Page) -> String {
    let title: String = url::form_urlencoded::byte_serialize(page.title.as_bytes()).collect();
    format!("/display/{}/{title}", page.space_key)
}

/// `path?query` with `start` replaced, the `next` link of a list.
fn next_link(path: &str, params: &[(&str, Option<String>)], start: usize) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in params {
        if let Some(value) = value {
            query.append_pair(name, value);
        }
    }
    query.append_pair("start", &start.to_string());
    format!("{path}?{}", query.finish())
}

/// The `_links` of a list: `base`, `context`, `self` and `next` when more results follow.
fn list_links(fake: &FakeDataCenter, path: &str, next: Option<String>) -> Value {
    let base = fake.base_url();
    let mut links = json!({
        "base": base,
        "context": fake.config().context_path,
        "self": format!("{base}{path}"),
    });
    if let (Some(next), Some(map)) = (next, links.as_object_mut()) {
        map.insert("next".to_owned(), Value::String(next));
    }
    links
}

/// The page of `items` from `start`, capped at [`DC_PAGE_CAP`], and the next start if any.
/// One page of a v1 list at `path`: the results with the window's `start`, `limit` and `size`,
/// and `_links` whose `next` repeats `params` with the next `start`.
fn list_page(
    fake: &FakeDataCenter,
    path: &str,
    results: Vec<Value>,
    start: usize,
    limit: usize,
    params: &[(&str, Option<String>)],
    next: Option<usize>,
) -> Value {
    let next = next.map(|at| next_link(path, params, at));
    json!({
        "size": results.len(),
        "results": results,
        "start": start,
        "limit": limit,
        "_links": list_links(fake, path, next),
    })
}

fn window<T>(items: &[T], start: usize, limit: usize) -> (&[T], Option<usize>) {
    let from = start.min(items.len());
    let to = from.saturating_add(limit).min(items.len());
    let next = (to < items.len() && to > from).then_some(to);
    (&items[from..to], next)
}

fn page_summary(fake: &FakeDataCenter, page: &Page) -> Value {
    let base = fake.base_url();
    json!({
        "id": page.id,
        "type": "page",
        "status": "current",
        "title": page.title,
        "version": {"number": page.version, "when": page.when},
        "_links": {
            "webui": webui(page),
            "self": format!("{base}/rest/api/content/{}", page.id),
        },
        "_expandable": {"body": "", "space": format!("/rest/api/space/{}", page.space_key)},
    })
}

async fn current_user(State(fake): State<FakeDataCenter>, headers: HeaderMap) -> Response {
    let Some(user) = fake.token_user(&headers) else {
        return dc_message(
            StatusCode::UNAUTHORIZED,
            "Client must be authenticated to access this resource.",
        );
    };
    let base = fake.base_url();
    axum::Json(json!({
        "type": "known",
        "username": user.name,
        "userKey": user.key,
        "displayName": user.display_name,
        "profilePicture": {
            "path": format!("{}/images/icons/profilepics/default.svg", fake.config().context_path),
            "width": 48,
            "height": 48,
            "isDefault": true,
        },
        "_links": {
            "base": base,
            "context": fake.config().context_path,
            "self": format!("{base}/rest/api/user?key={}", user.key),
        },
        "_expandable": {"status": ""},
    }))
    .into_response()
}

#[derive(Deserialize)]
struct ListQuery {
    start: Option<usize>,
    limit: Option<usize>,
    #[serde(rename = "spaceKey")]
    space_key: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    expand: Option<String>,
    cql: Option<String>,
}

async fn spaces(
    State(fake): State<FakeDataCenter>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(query) => query,
        Err(rejection) => return bad_query(&rejection),
    };
    let start = query.start.unwrap_or(0);
    let limit = query.limit.unwrap_or(25).min(DC_PAGE_CAP);
    let base = fake.base_url();
    let (items, next) = window(data::SPACES, start, limit);
    let results: Vec<Value> = items
        .iter()
        .map(|s| {
            json!({
                "id": s.id,
                "key": s.key,
                "name": s.name,
                "type": "global",
                "_links": {
                    "webui": format!("/display/{}", s.key),
                    "self": format!("{base}/rest/api/space/{}", s.key),
                },
                "_expandable": {"description": "", "homepage": ""},
            })
        })
        .collect();
    let params = [
        ("limit", Some(limit.to_string())),
        ("expand", query.expand.clone()),
    ];
    let page = list_page(
        &fake,
        "/rest/api/space",
        results,
        start,
        limit,
        &params,
        next,
    );
    axum::Json(page).into_response()
}

async fn content_list(
    State(fake): State<FakeDataCenter>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(query) => query,
        Err(rejection) => return bad_query(&rejection),
    };
    let kind = query.kind.as_deref().unwrap_or("page");
    if !matches!(kind, "page" | "blogpost") {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("Unsupported content type: {kind}"),
        );
    }
    let pages: Vec<&Page> = data::PAGES
        .iter()
        .filter(|_| kind == "page")
        .filter(|p| query.space_key.as_deref().is_none_or(|k| p.space_key == k))
        .collect();
    let start = query.start.unwrap_or(0);
    let limit = query.limit.unwrap_or(25).min(DC_PAGE_CAP);
    let (items, next) = window(&pages, start, limit);
    let results: Vec<Value> = items.iter().map(|p| page_summary(&fake, p)).collect();
    let params = [
        ("spaceKey", query.space_key.clone()),
        ("type", query.kind.clone()),
        ("limit", Some(limit.to_string())),
        ("expand", query.expand.clone()),
    ];
    let page = list_page(
        &fake,
        "/rest/api/content",
        results,
        start,
        limit,
        &params,
        next,
    );
    axum::Json(page).into_response()
}

#[derive(Deserialize)]
struct ContentQuery {
    expand: Option<String>,
}

async fn content(
    State(fake): State<FakeDataCenter>,
    Path(id): Path<String>,
    query: Result<Query<ContentQuery>, QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(query) => query,
        Err(rejection) => return bad_query(&rejection),
    };
    let Some(page) = data::PAGES.iter().find(|p| p.id == id) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("No content found with id: ContentId{{id={id}}}"),
        );
    };
    let expand: Vec<&str> = query
        .expand
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .collect();
    let base = fake.base_url();
    let space = data::SPACES.iter().find(|s| s.key == page.space_key);
    let mut value = json!({
        "id": page.id,
        "type": "page",
        "status": "current",
        "title": page.title,
        "space": space.map(|s| json!({"id": s.id, "key": s.key, "name": s.name, "type": "global"})),
        "version": {"number": page.version, "when": page.when},
        "_links": {
            "webui": webui(page),
            "base": base,
            "context": fake.config().context_path,
            "self": format!("{base}/rest/api/content/{}", page.id),
        },
    });
    if let Some(map) = value.as_object_mut() {
        if expand.iter().any(|e| *e == "body.storage" || *e == "body") {
            map.insert(
                "body".to_owned(),
                json!({"storage": {"value": page.storage, "representation": "storage"}}),
            );
        } else {
            map.insert("_expandable".to_owned(), json!({"body": ""}));
        }
    }
    axum::Json(value).into_response()
}

/// What the fake understands of a CQL query: `text ~ "…"`, `type = page`, `space = KEY`
/// joined by `AND`, and an optional `ORDER BY`.
struct Cql {
    terms: Option<Vec<String>>,
    space: Option<String>,
    pages: bool,
}

fn parse_cql(cql: &str) -> Result<Cql, String> {
    let mut query = Cql {
        terms: None,
        space: None,
        pages: true,
    };
    let padded = format!(" {cql} ");
    let halves = split_outside_quotes(&padded, " order by ");
    let condition = halves.first().copied().unwrap_or("").trim();
    if condition.is_empty() {
        return Err("the query is empty".to_owned());
    }
    for clause in split_outside_quotes(&format!(" {condition} "), " and ") {
        let clause = clause.trim();
        if split_outside_quotes(&format!(" {clause} "), " or ").len() > 1 {
            return Err("the fake does not support OR".to_owned());
        }
        if let Some((field, _)) = clause.split_once('~') {
            if !field.trim().eq_ignore_ascii_case("text") {
                return Err(format!("'~' is not supported for {}", field.trim()));
            }
            query.terms = Some(
                crate::content::text_terms(clause)
                    .ok_or_else(|| format!("cannot read '{clause}'"))?,
            );
        } else if let Some((field, value)) = clause.split_once('=') {
            let value = value.trim().trim_matches('"');
            match field.trim().to_ascii_lowercase().as_str() {
                "type" => query.pages = value == "page",
                "space" | "space.key" => query.space = Some(value.to_owned()),
                other => return Err(format!("unknown field {other}")),
            }
        } else {
            return Err(format!("cannot read '{clause}'"));
        }
    }
    Ok(query)
}

async fn search(
    State(fake): State<FakeDataCenter>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(query) => query,
        Err(rejection) => return bad_query(&rejection),
    };
    let Some(cql_text) = query.cql.as_deref().filter(|c| !c.trim().is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "The cql parameter is required");
    };
    let cql = match parse_cql(cql_text) {
        Ok(cql) => cql,
        Err(problem) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("Could not parse cql : {cql_text} ({problem})"),
            );
        }
    };
    let hits: Vec<&Page> = data::PAGES
        .iter()
        .filter(|_| cql.pages)
        .filter(|p| cql.space.as_deref().is_none_or(|k| p.space_key == k))
        .filter(|p| {
            cql.terms.as_ref().is_none_or(|terms| {
                crate::content::matches(terms, &format!("{} {}", p.title, p.text))
            })
        })
        .collect();
    let start = query.start.unwrap_or(0);
    let limit = query.limit.unwrap_or(25).min(DC_PAGE_CAP);
    let (items, next) = window(&hits, start, limit);
    let results: Vec<Value> = items.iter().map(|p| page_summary(&fake, p)).collect();
    let params = [
        ("cql", Some(cql_text.to_owned())),
        ("limit", Some(limit.to_string())),
        ("expand", query.expand.clone()),
    ];
    let mut page = list_page(
        &fake,
        "/rest/api/content/search",
        results,
        start,
        limit,
        &params,
        next,
    );
    page["totalSize"] = json!(hits.len());
    page["cqlQuery"] = json!(cql_text);
    axum::Json(page).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cql_reads_text_type_and_space() {
        let cql = parse_cql(r#"type = page AND space = "ENG" AND text ~ "runbook""#).expect("cql");
        assert_eq!(cql.space.as_deref(), Some("ENG"));
        assert!(cql.pages);
        assert_eq!(cql.terms, Some(vec!["runbook".to_owned()]));
        assert!(parse_cql("").is_err());
        assert!(parse_cql("creator = alice").is_err());
        assert!(parse_cql(r#"text ~ "x" OR text ~ "y""#).is_err());
    }
}
