//! The Atlassian scope catalogue: classic scopes and the granular ones Confluence v2 needs.

use grantry_core::ScopeInfo;
use grantry_protocol::{refresh_scope, scope};

/// Every scope grantry knows for Atlassian.
pub static SCOPES: &[ScopeInfo] = &[
    scope("read:me", "Read the user's profile (User Identity API)"),
    refresh_scope(
        "offline_access",
        "Receive a refresh token, so the connection outlives the one-hour access token",
    ),
    scope("read:jira-user", "Read Jira user information"),
    scope("read:jira-work", "Read Jira projects and issues"),
    scope(
        "write:jira-work",
        "Create and edit Jira issues and comments",
    ),
    scope("manage:jira-project", "Manage Jira project settings"),
    scope(
        "manage:jira-webhook",
        "Register, refresh and delete Jira webhooks (ATLASSIAN_WEBHOOK_EVENTS)",
    ),
    scope(
        "manage:jira-configuration",
        "Manage Jira site configuration",
    ),
    scope("read:confluence-content.all", "Read all Confluence content"),
    scope(
        "read:confluence-content.summary",
        "Read summaries of Confluence content",
    ),
    scope(
        "write:confluence-content",
        "Create and edit Confluence content",
    ),
    scope(
        "read:confluence-space.summary",
        "Read summaries of Confluence spaces",
    ),
    scope("search:confluence", "Search Confluence"),
    scope(
        "read:page:confluence",
        "Read Confluence pages (granular, v2 API)",
    ),
    scope(
        "read:space:confluence",
        "Read Confluence spaces (granular, v2 API)",
    ),
    scope(
        "readonly:content.attachment:confluence",
        "Download Confluence attachments",
    ),
];
