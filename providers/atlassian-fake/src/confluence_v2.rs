//! The fake's Confluence REST v2 routes under `/ex/confluence/{cloudid}/wiki/api/v2/…`: the
//! space list (filtered by `keys`), one space, a space's pages and one page, in Atlassian's v2
//! shapes, cursor-paged through `_links.next` with at most two items a page.

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::FakeAtlassian;
use super::content::{PAGE_CAP, page_links, site_base};
use super::data::{self, Page, Space};

/// The prefix of every v2 route.
const V2: &str = "/ex/confluence/{cloud}/wiki/api/v2";

/// The v2 routes (mounted behind the content guard).
pub(crate) fn routes() -> Router<FakeAtlassian> {
    Router::new()
        .route(&format!("{V2}/spaces"), get(spaces))
        .route(&format!("{V2}/spaces/{{id}}"), get(space))
        .route(&format!("{V2}/spaces/{{id}}/pages"), get(space_pages))
        .route(&format!("{V2}/pages/{{id}}"), get(page))
}

/// A v2 error body: `{"errors":[{"status","code","title","detail"}]}`.
fn v2_error(status: StatusCode, code: &str, title: &str) -> Response {
    (
        status,
        axum::Json(json!({"errors": [{
            "status": status.as_u16(),
            "code": code,
            "title": title,
            "detail": null,
        }]})),
    )
        .into_response()
}

/// The query's values for `name`, repeated or comma-separated.
fn values(query: Option<&str>, name: &str) -> Vec<String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .filter(|(k, _)| k == name)
        .flat_map(|(_, v)| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn first(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Where a listing starts and how many it hands out, or why Atlassian would answer 400.
fn window(query: Option<&str>) -> Result<(usize, usize), &'static str> {
    let limit = match first(query, "limit") {
        None => 25,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=250).contains(&n) => n,
            _ => return Err("limit must be between 1 and 250"),
        },
    };
    let start = match first(query, "cursor") {
        None => 0,
        Some(cursor) => cursor
            .strip_prefix("fake-cursor-")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or("Invalid cursor")?,
    };
    Ok((start, limit.min(PAGE_CAP)))
}

/// The `_links` of a listing: the site's base and, when more remain, the next page's
/// relative URL with its cursor.
fn listing_links(
    fake: &FakeAtlassian,
    cloud: &str,
    path: &str,
    limit: usize,
    next: Option<usize>,
) -> Value {
    let mut links = json!({"base": site_base(fake, cloud)});
    if let Some(next) = next {
        links["next"] = json!(format!(
            "/wiki/api/v2{path}?cursor=fake-cursor-{next}&limit={limit}"
        ));
    }
    links
}

fn space_json(space: &Space) -> Value {
    json!({
        "id": space.id,
        "key": space.key,
        "name": space.name,
        "type": space.kind,
        "status": "current",
        "authorId": "5b10ac8d82e05b22cc7d4ef5",
        "createdAt": "2023-01-10T09:00:00.000Z",
        "_links": {"webui": format!("/spaces/{}", space.key)},
    })
}

fn page_json(page: &Page, space_id: &str) -> Value {
    json!({
        "id": page.id,
        "status": "current",
        "title": page.title,
        "spaceId": space_id,
        "parentType": "page",
        "authorId": page.author.account_id,
        "createdAt": page.updated,
        "version": {
            "number": page.version,
            "createdAt": page.updated,
            "message": "",
            "minorEdit": false,
            "authorId": page.author.account_id,
        },
        "body": {},
        "_links": page_links(page),
    })
}

async fn spaces(
    State(fake): State<FakeAtlassian>,
    Path(cloud): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let (start, limit) = match window(query.as_deref()) {
        Ok(w) => w,
        Err(why) => {
            return v2_error(StatusCode::BAD_REQUEST, "INVALID_REQUEST_PARAMETER", why);
        }
    };
    let keys = values(query.as_deref(), "keys");
    let site = data::site(&cloud);
    let matching: Vec<&Space> = site
        .spaces
        .iter()
        .filter(|s| keys.is_empty() || keys.iter().any(|k| k == s.key))
        .collect();
    let results: Vec<Value> = matching
        .iter()
        .skip(start)
        .take(limit)
        .map(|s| space_json(s))
        .collect();
    let end = start + results.len();
    let next = (end < matching.len()).then_some(end);
    axum::Json(json!({
        "results": results,
        "_links": listing_links(&fake, &cloud, "/spaces", limit, next),
    }))
    .into_response()
}

async fn space(
    State(fake): State<FakeAtlassian>,
    Path((cloud, id)): Path<(String, String)>,
) -> Response {
    let site = data::site(&cloud);
    let Some(space) = site.spaces.iter().find(|s| s.id == id) else {
        return v2_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Not Found");
    };
    let mut body = space_json(space);
    body["_links"]["base"] = json!(site_base(&fake, &cloud));
    axum::Json(body).into_response()
}

async fn space_pages(
    State(fake): State<FakeAtlassian>,
    Path((cloud, id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let (start, limit) = match window(query.as_deref()) {
        Ok(w) => w,
        Err(why) => {
            return v2_error(StatusCode::BAD_REQUEST, "INVALID_REQUEST_PARAMETER", why);
        }
    };
    let site = data::site(&cloud);
    let Some(space) = site.spaces.iter().find(|s| s.id == id) else {
        return v2_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Not Found");
    };
    let in_space: Vec<&Page> = site
        .pages
        .iter()
        .filter(|p| p.space_key == space.key)
        .collect();
    let results: Vec<Value> = in_space
        .iter()
        .skip(start)
        .take(limit)
        .map(|p| page_json(p, space.id))
        .collect();
    let end = start + results.len();
    let next = (end < in_space.len()).then_some(end);
    let path = format!("/spaces/{}/pages", space.id);
    axum::Json(json!({
        "results": results,
        "_links": listing_links(&fake, &cloud, &path, limit, next),
    }))
    .into_response()
}

async fn page(
    State(fake): State<FakeAtlassian>,
    Path((cloud, id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let site = data::site(&cloud);
    let Some(page) = site.pages.iter().find(|p| p.id == id) else {
        return v2_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Not Found");
    };
    let space_id = site
        .spaces
        .iter()
        .find(|s| s.key == page.space_key)
        .map(|s| s.id)
        .unwrap_or_default();
    let mut body = page_json(page, space_id);
    if first(query.as_deref(), "body-format").as_deref() == Some("storage") {
        body["body"] = json!({"storage": {"representation": "storage", "value": page.storage}});
    }
    body["_links"]["base"] = json!(site_base(&fake, &cloud));
    axum::Json(body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_may_repeat_or_be_comma_separated() {
        assert_eq!(
            values(Some("keys=ENG,OPS&keys=DOC&limit=2"), "keys"),
            ["ENG", "OPS", "DOC"]
        );
        assert!(values(None, "keys").is_empty());
    }

    #[test]
    fn cursors_are_checked() {
        assert_eq!(window(None).ok(), Some((0, PAGE_CAP)));
        assert_eq!(
            window(Some("cursor=fake-cursor-4")).ok(),
            Some((4, PAGE_CAP))
        );
        assert!(window(Some("cursor=4")).is_err());
        assert!(window(Some("limit=0")).is_err());
        assert!(window(Some("limit=251")).is_err());
    }
}
