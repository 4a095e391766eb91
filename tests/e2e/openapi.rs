//! `/openapi.json` documents every mounted route, and every documented route is mounted.

use serde_json::Value;

use crate::harness::{Harness, fake_config};
use grantry_server::testing::TestDatabase;

/// The routes of the design contract and of the Atlassian issues, as the server must mount them.
const CONTRACT: &[(&str, &str)] = &[
    ("post", "/api/v1/atlassian/connection/authorize"),
    ("post", "/api/v1/atlassian/connection/callback"),
    ("get", "/api/v1/atlassian/connection/status"),
    ("delete", "/api/v1/atlassian/connection"),
    ("get", "/api/v1/atlassian/admin/connections"),
    ("delete", "/api/v1/atlassian/admin/connections/{user_id}"),
    (
        "get",
        "/api/v1/atlassian/admin/connections/{user_id}/access-token",
    ),
    ("get", "/api/v1/atlassian/sites"),
    ("get", "/api/v1/atlassian/search"),
    ("get", "/api/v1/atlassian/jira/{site_id}/projects"),
    ("get", "/api/v1/atlassian/jira/{site_id}/issues/{key}"),
    ("get", "/api/v1/atlassian/confluence/{site_id}/spaces"),
    (
        "get",
        "/api/v1/atlassian/confluence/{site_id}/spaces/{key}/pages",
    ),
    ("get", "/api/v1/atlassian/confluence/{site_id}/pages/{id}"),
    ("get", "/api/v1/atlassian/proxy/{product}/{site_id}/{path}"),
    ("get", "/api/v1/providers"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
];

fn is_unmounted(status: u16, body: &str) -> bool {
    status == 405 || (status == 404 && body.contains("\"no such route\""))
}

#[tokio::test]
async fn the_document_and_the_router_agree() {
    let db = TestDatabase::sqlite();
    let h = Harness::start(&db, fake_config(), true).await;
    h.connect("alice").await;
    let doc: Value = h
        .http
        .get(h.url("/openapi.json"))
        .send()
        .await
        .expect("openapi")
        .json()
        .await
        .expect("json");
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{doc}"
    );
    let paths = doc["paths"].as_object().expect("paths");

    for (method, path) in CONTRACT {
        let item = paths
            .get(*path)
            .unwrap_or_else(|| panic!("{path} is not documented"));
        assert!(
            item.get(*method).is_some(),
            "{method} {path} is not documented"
        );
    }

    // The paged admin list documents its parameters and the Link header of the next page.
    let list = &paths["/api/v1/atlassian/admin/connections"]["get"];
    let params = list["parameters"].as_array().expect("parameters");
    let param = |name: &str| {
        params
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("parameter {name} is not documented: {list}"))
    };
    for name in ["limit", "status", "cursor"] {
        assert_eq!(param(name)["in"], "query");
        assert_ne!(param(name)["required"], true);
    }
    let limit = param("limit")["schema"].to_string();
    assert!(
        limit.contains("\"minimum\":1") && limit.contains("\"maximum\":1000"),
        "{limit}"
    );
    let status = param("status")["schema"].to_string();
    assert!(
        status.contains("\"active\"") && status.contains("\"needs_reauth\""),
        "{status}"
    );
    assert!(
        list["responses"]["200"]["headers"]["Link"].is_object(),
        "{list}"
    );
    assert!(list["responses"]["400"].is_object(), "{list}");

    let admin = h.token("admin-1", "admin");
    let mut operations = 0;
    for (path, item) in paths {
        for (method, operation) in item.as_object().expect("path item") {
            if !["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                continue;
            }
            operations += 1;
            let responses = operation["responses"].as_object().expect("responses");
            assert!(
                !responses.is_empty(),
                "{method} {path} documents no response"
            );
            let concrete = path
                .replace("{user_id}", "alice")
                .split('/')
                .map(|seg| if seg.starts_with('{') { "x" } else { seg })
                .collect::<Vec<_>>()
                .join("/");
            let req = h
                .http
                .request(
                    reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method"),
                    h.url(&concrete),
                )
                .bearer_auth(&admin)
                .header("content-type", "application/json")
                .body("{}");
            let resp = req.send().await.expect("request");
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            assert!(
                !is_unmounted(status, &body),
                "documented {method} {path} is not mounted ({status})"
            );
            assert!(
                responses.contains_key(&status.to_string())
                    || status == 200 && responses.contains_key("204"),
                "{method} {path} answered {status}, which is not documented: {:?}",
                responses.keys().collect::<Vec<_>>()
            );
        }
    }
    assert!(operations >= CONTRACT.len());
}
