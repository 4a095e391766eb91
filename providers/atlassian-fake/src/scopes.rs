//! What each content operation of the fake asks of a token, as Atlassian's published OpenAPI
//! documents list it (`x-atlassian-oauth2-scopes`): any one set of scopes, all of it granted.
//! Confluence's removed v1 operations are answered as gone.

use axum::http::Method;

/// What the fake does with a request to one route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Served when the token holds every scope of at least one set.
    Scopes(&'static [&'static [&'static str]]),
    /// Removed by Atlassian: answered 410 with the replacement named.
    Removed(&'static str),
}

const JIRA_WORK: &[&str] = &["read:jira-work"];
const WEBHOOKS: &[&str] = &["read:jira-work", "manage:jira-webhook"];

/// Every content route the fake serves, by method and route template.
static OPERATIONS: &[(Method, &str, Access)] = &[
    (
        Method::GET,
        "/ex/jira/{cloud}/rest/api/3/search/jql",
        Access::Scopes(&[
            JIRA_WORK,
            &[
                "read:issue-details:jira",
                "read:audit-log:jira",
                "read:avatar:jira",
                "read:field-configuration:jira",
                "read:issue-meta:jira",
            ],
        ]),
    ),
    (
        Method::POST,
        "/ex/jira/{cloud}/rest/api/3/search/jql",
        Access::Scopes(&[
            JIRA_WORK,
            &[
                "read:issue-details:jira",
                "read:field.default-value:jira",
                "read:field.option:jira",
                "read:field:jira",
                "read:group:jira",
            ],
        ]),
    ),
    (
        Method::GET,
        "/ex/jira/{cloud}/rest/api/3/project/search",
        Access::Scopes(&[
            JIRA_WORK,
            &[
                "read:issue-type:jira",
                "read:project:jira",
                "read:project.property:jira",
                "read:user:jira",
                "read:application-role:jira",
                "read:avatar:jira",
                "read:group:jira",
                "read:issue-type-hierarchy:jira",
                "read:project-category:jira",
                "read:project-version:jira",
                "read:project.component:jira",
            ],
        ]),
    ),
    (
        Method::GET,
        "/ex/jira/{cloud}/rest/api/3/issue/{key}",
        Access::Scopes(&[
            JIRA_WORK,
            &[
                "read:issue-meta:jira",
                "read:issue-security-level:jira",
                "read:issue.vote:jira",
                "read:issue.changelog:jira",
                "read:avatar:jira",
                "read:issue:jira",
                "read:status:jira",
                "read:user:jira",
                "read:field-configuration:jira",
            ],
        ]),
    ),
    (
        Method::GET,
        "/ex/jira/{cloud}/rest/api/3/issue/{key}/comment",
        Access::Scopes(&[
            JIRA_WORK,
            &[
                "read:comment:jira",
                "read:comment.property:jira",
                "read:group:jira",
                "read:project:jira",
                "read:project-role:jira",
                "read:user:jira",
                "read:avatar:jira",
            ],
        ]),
    ),
    (
        Method::GET,
        "/ex/jira/{cloud}/rest/api/3/myself",
        Access::Scopes(&[
            &["read:jira-user"],
            &[
                "read:application-role:jira",
                "read:group:jira",
                "read:user:jira",
                "read:avatar:jira",
            ],
        ]),
    ),
    (
        Method::GET,
        "/ex/jira/{cloud}/rest/api/3/webhook",
        Access::Scopes(&[WEBHOOKS, &["read:webhook:jira", "read:jql:jira"]]),
    ),
    (
        Method::POST,
        "/ex/jira/{cloud}/rest/api/3/webhook",
        Access::Scopes(&[
            WEBHOOKS,
            &["read:field:jira", "read:project:jira", "write:webhook:jira"],
        ]),
    ),
    (
        Method::DELETE,
        "/ex/jira/{cloud}/rest/api/3/webhook",
        Access::Scopes(&[WEBHOOKS, &["delete:webhook:jira"]]),
    ),
    (
        Method::PUT,
        "/ex/jira/{cloud}/rest/api/3/webhook/refresh",
        Access::Scopes(&[WEBHOOKS, &["write:webhook:jira", "read:webhook:jira"]]),
    ),
    (
        Method::GET,
        "/ex/confluence/{cloud}/wiki/rest/api/search",
        Access::Scopes(&[&["search:confluence"], &["read:content-details:confluence"]]),
    ),
    (
        Method::GET,
        "/ex/confluence/{cloud}/wiki/download/attachments/{page}/{file}",
        Access::Scopes(&[
            &["readonly:content.attachment:confluence"],
            &["read:attachment:confluence"],
        ]),
    ),
    (
        Method::GET,
        "/ex/confluence/{cloud}/wiki/api/v2/spaces",
        Access::Scopes(&[&["read:space:confluence"]]),
    ),
    (
        Method::GET,
        "/ex/confluence/{cloud}/wiki/api/v2/spaces/{id}",
        Access::Scopes(&[&["read:space:confluence"]]),
    ),
    (
        Method::GET,
        "/ex/confluence/{cloud}/wiki/api/v2/spaces/{id}/pages",
        Access::Scopes(&[&["read:page:confluence"]]),
    ),
    (
        Method::GET,
        "/ex/confluence/{cloud}/wiki/api/v2/pages/{id}",
        Access::Scopes(&[&["read:page:confluence"]]),
    ),
    (
        Method::GET,
        "/ex/confluence/{cloud}/wiki/rest/api/space",
        Access::Removed("GET /wiki/api/v2/spaces"),
    ),
    (
        Method::GET,
        "/ex/confluence/{cloud}/wiki/rest/api/content",
        Access::Removed("GET /wiki/api/v2/spaces/{id}/pages"),
    ),
    (
        Method::GET,
        "/ex/confluence/{cloud}/wiki/rest/api/content/{id}",
        Access::Removed("GET /wiki/api/v2/pages/{id}"),
    ),
];

/// What the route `template` asks for `method`; `None` for a route the table misses.
pub(crate) fn access(method: &Method, template: &str) -> Option<Access> {
    OPERATIONS
        .iter()
        .find(|(m, t, _)| m == method && *t == template)
        .map(|(_, _, access)| *access)
}

/// Whether `granted` (space-separated) holds every scope of one of `sets`.
pub(crate) fn satisfied(sets: &[&[&str]], granted: &str) -> bool {
    sets.iter().any(|set| {
        set.iter()
            .all(|wanted| granted.split_whitespace().any(|g| g == *wanted))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_set_must_be_granted_whole() {
        let sets: &[&[&str]] = &[&["a"], &["b", "c"]];
        assert!(satisfied(sets, "x a"));
        assert!(satisfied(sets, "c b"));
        assert!(!satisfied(sets, "b"));
        assert!(!satisfied(sets, ""));
        assert!(!satisfied(sets, "ab"));
    }

    #[test]
    fn lookups_match_method_and_template() {
        assert_eq!(
            access(
                &Method::GET,
                "/ex/confluence/{cloud}/wiki/api/v2/pages/{id}"
            ),
            Some(Access::Scopes(&[&["read:page:confluence"]]))
        );
        assert_eq!(
            access(
                &Method::POST,
                "/ex/confluence/{cloud}/wiki/api/v2/pages/{id}"
            ),
            None
        );
        assert!(matches!(
            access(
                &Method::GET,
                "/ex/confluence/{cloud}/wiki/rest/api/content/{id}"
            ),
            Some(Access::Removed(_))
        ));
    }
}
