//! The fake Atlassian held to Atlassian's published contract: the answer of every operation
//! grantry calls validates against that operation's response schema, copied from Atlassian's
//! OpenAPI documents into `tests/contract/schemas.json` (document, title and version noted
//! per operation; `tests/contract/extract.py` made it).

use grantry_atlassian_fake::{ACME_SITE_ID, FakeAtlassian, FakeConfig, RunningFake};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Every scope the operations below need.
const SCOPES: &str = "read:me read:jira-user read:jira-work manage:jira-webhook \
                      search:confluence read:space:confluence read:page:confluence offline_access";

/// The copied schemas.
fn schemas() -> Vec<Value> {
    let text = include_str!("contract/schemas.json");
    let all: Value = serde_json::from_str(text).expect("schemas.json is JSON");
    all["operations"].as_array().expect("operations").clone()
}

/// The schema of `method path` (a path of Atlassian's document).
fn schema_of<'a>(all: &'a [Value], method: &str, path: &str) -> &'a Value {
    let operation = all
        .iter()
        .find(|o| o["method"] == method && o["path"] == path)
        .unwrap_or_else(|| panic!("no schema copied for {method} {path}"));
    assert!(
        operation["version"].is_string() && operation["document"].is_string(),
        "{method} {path}: the source is noted"
    );
    &operation["schema"]
}

/// A validator for an OpenAPI 3.0 schema (JSON Schema draft 4 semantics). Formats are not
/// asserted: real Jira writes `date-time` fields as `2024-06-10T08:00:00.000+0000` (no colon in
/// the offset), which its own documents call `date-time`; the fake answers as Jira does.
fn validator(schema: &Value) -> Result<jsonschema::Validator, String> {
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .should_validate_formats(false)
        .build(schema)
        .map_err(|e| e.to_string())
}

async fn token(running: &RunningFake) -> String {
    let config = running.fake.config().clone();
    let code = running.fake.issue_code(SCOPES);
    let body: Value = reqwest::Client::new()
        .post(running.url("/oauth/token"))
        .json(&json!({
            "grant_type": "authorization_code",
            "client_id": config.client_id,
            "client_secret": config.client_secret,
            "code": code,
            "redirect_uri": config.redirect_uri,
        }))
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    body["access_token"]
        .as_str()
        .expect("access token")
        .to_owned()
}

/// One call the client makes: the fake's URL, Atlassian's operation, a body.
struct Call {
    method: Method,
    url: String,
    spec_path: &'static str,
    body: Option<Value>,
}

fn call(method: Method, url: String, spec_path: &'static str) -> Call {
    Call {
        method,
        url,
        spec_path,
        body: None,
    }
}

#[tokio::test]
async fn every_operation_the_client_calls_answers_by_the_published_schema() {
    let running = FakeAtlassian::start(FakeConfig::default())
        .await
        .expect("fake starts");
    let token = token(&running).await;
    let http = reqwest::Client::new();
    let all = schemas();
    let jira = format!("/ex/jira/{ACME_SITE_ID}/rest/api/3");
    let wiki = format!("/ex/confluence/{ACME_SITE_ID}/wiki");
    let mut calls = vec![
        call(
            Method::GET,
            format!("{jira}/search/jql?jql=text%20~%20%22rollout%22&fields=summary,updated"),
            "/rest/api/3/search/jql",
        ),
        Call {
            body: Some(
                json!({"jql": "text ~ \"rollout\"", "maxResults": 5, "fields": ["summary"]}),
            ),
            ..call(
                Method::POST,
                format!("{jira}/search/jql"),
                "/rest/api/3/search/jql",
            )
        },
        call(
            Method::GET,
            format!("{jira}/project/search"),
            "/rest/api/3/project/search",
        ),
        call(
            Method::GET,
            format!("{jira}/issue/ACME-1"),
            "/rest/api/3/issue/{issueIdOrKey}",
        ),
        call(
            Method::GET,
            format!("{jira}/issue/ACME-1/comment"),
            "/rest/api/3/issue/{issueIdOrKey}/comment",
        ),
        call(Method::GET, format!("{jira}/myself"), "/rest/api/3/myself"),
        Call {
            body: Some(json!({
                "url": "https://grantry.example/webhooks/jira/secret",
                "webhooks": [{"events": ["jira:issue_updated"], "jqlFilter": "project = ACME"}],
            })),
            ..call(
                Method::POST,
                format!("{jira}/webhook"),
                "/rest/api/3/webhook",
            )
        },
        call(
            Method::GET,
            format!("{jira}/webhook"),
            "/rest/api/3/webhook",
        ),
        call(
            Method::GET,
            format!(
                "{wiki}/rest/api/search?cql=type%20%3D%20page%20AND%20text%20~%20%22runbook%22"
            ),
            "/wiki/rest/api/search",
        ),
        call(
            Method::GET,
            format!("{wiki}/api/v2/spaces?limit=250"),
            "/spaces",
        ),
        call(
            Method::GET,
            format!("{wiki}/api/v2/spaces?keys=ENG"),
            "/spaces",
        ),
        call(
            Method::GET,
            format!("{wiki}/api/v2/spaces/98305"),
            "/spaces/{id}",
        ),
        call(
            Method::GET,
            format!("{wiki}/api/v2/spaces/98305/pages?limit=25"),
            "/spaces/{id}/pages",
        ),
        call(
            Method::GET,
            format!("{wiki}/api/v2/pages/123456?body-format=storage"),
            "/pages/{id}",
        ),
    ];
    let mut checked = 0;
    for c in calls.drain(..) {
        let mut request = http
            .request(c.method.clone(), running.url(&c.url))
            .bearer_auth(&token);
        if let Some(body) = &c.body {
            request = request.json(body);
        }
        let response = request.send().await.expect("request");
        assert_eq!(response.status(), StatusCode::OK, "{} {}", c.method, c.url);
        let answer: Value = response.json().await.expect("a JSON answer");
        let schema = schema_of(&all, c.method.as_str(), c.spec_path);
        let validator = validator(schema)
            .unwrap_or_else(|e| panic!("{} {}: the schema compiles: {e}", c.method, c.spec_path));
        let errors: Vec<String> = validator
            .iter_errors(&answer)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{} {} breaks {}:\n{}",
            c.method,
            c.url,
            c.spec_path,
            errors.join("\n")
        );
        checked += 1;
    }
    // The webhook refresh, with the id the registration gave.
    let listed: Value = http
        .get(running.url(&format!("{jira}/webhook")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let id = listed["values"][0]["id"].clone();
    let response = http
        .put(running.url(&format!("{jira}/webhook/refresh")))
        .bearer_auth(&token)
        .json(&json!({"webhookIds": [id]}))
        .send()
        .await
        .expect("refresh");
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value = response.json().await.expect("json");
    let schema = schema_of(&all, "PUT", "/rest/api/3/webhook/refresh");
    let validator = validator(schema).expect("schema compiles");
    assert!(validator.is_valid(&answer), "{answer}");
    checked += 1;
    assert_eq!(checked, all.len() + 1, "every copied schema is exercised");
}

#[tokio::test]
async fn the_schemas_catch_a_wrong_answer() {
    // A guard on the test itself: a space whose id is a number (as v1 sent it) breaks v2's schema.
    let all = schemas();
    let validator = validator(schema_of(&all, "GET", "/spaces")).expect("schema compiles");
    assert!(validator.is_valid(&json!({"results": [{"id": "1", "key": "ENG"}], "_links": {}})));
    assert!(!validator.is_valid(&json!({"results": [{"id": 1, "key": "ENG"}], "_links": {}})));
    assert!(!validator.is_valid(&json!({"results": {"id": "1"}})));
}
