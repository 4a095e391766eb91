//! The content the fake serves: Jira projects, issues and comments (ADF), Confluence spaces
//! and pages (storage format) for the two default sites.

use serde_json::{Value, json};

use super::{ACME_SITE_ID, BETA_SITE_ID};

/// A Jira project.
pub(crate) struct Project {
    pub(crate) id: &'static str,
    pub(crate) key: &'static str,
    pub(crate) name: &'static str,
    pub(crate) kind: &'static str,
}

/// A person as Jira and Confluence show them.
#[derive(Clone, Copy)]
pub(crate) struct Person {
    pub(crate) account_id: &'static str,
    pub(crate) name: &'static str,
}

/// A Jira issue.
pub(crate) struct Issue {
    pub(crate) id: &'static str,
    pub(crate) key: &'static str,
    pub(crate) summary: &'static str,
    pub(crate) status: &'static str,
    pub(crate) issue_type: &'static str,
    pub(crate) priority: &'static str,
    pub(crate) labels: &'static [&'static str],
    pub(crate) assignee: Option<Person>,
    pub(crate) reporter: Person,
    pub(crate) created: &'static str,
    pub(crate) updated: &'static str,
    pub(crate) description: Value,
    pub(crate) comments: Vec<Comment>,
}

/// A Jira comment.
pub(crate) struct Comment {
    pub(crate) id: &'static str,
    pub(crate) author: Person,
    pub(crate) created: &'static str,
    pub(crate) body: Value,
}

/// A Confluence space.
pub(crate) struct Space {
    pub(crate) id: &'static str,
    pub(crate) key: &'static str,
    pub(crate) name: &'static str,
    pub(crate) kind: &'static str,
}

/// A Confluence page.
pub(crate) struct Page {
    pub(crate) id: &'static str,
    pub(crate) space_key: &'static str,
    pub(crate) title: &'static str,
    pub(crate) version: u64,
    pub(crate) updated: &'static str,
    pub(crate) author: Person,
    pub(crate) storage: &'static str,
    /// The words CQL `text ~` matches, written out by hand.
    pub(crate) text: &'static str,
}

/// Everything one site holds.
#[derive(Default)]
pub(crate) struct Site {
    pub(crate) projects: Vec<Project>,
    pub(crate) issues: Vec<Issue>,
    pub(crate) spaces: Vec<Space>,
    pub(crate) pages: Vec<Page>,
}

const GRACE: Person = Person {
    account_id: "5b10ac8d82e05b22cc7d4ef5",
    name: "Grace Hopper",
};
const ADA: Person = Person {
    account_id: "fake-account-1",
    name: "Ada Lovelace",
};
const KATHERINE: Person = Person {
    account_id: "712020:4c3b9f0e-8a77-4f5e-b6a1-0d3c2e1f9a8b",
    name: "Katherine Johnson",
};

/// ACME-1's description: headings, marks, a mention, nested lists, a table, a code block,
/// a panel, a status and a date.
pub(crate) const ACME_1_DESCRIPTION: &str = include_str!("data/acme-1-description.json");
/// The runbook page: the same structures in storage format, with macros.
pub(crate) const RUNBOOK_STORAGE: &str = include_str!("data/eng-runbook.storage.xml");

fn adf(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

fn paragraph(content: Value) -> Value {
    json!({"type": "doc", "version": 1, "content": [{"type": "paragraph", "content": content}]})
}

fn text(t: &str) -> Value {
    json!({"type": "text", "text": t})
}

/// The content of a site, by cloud id (empty for sites the fake has no content for).
pub(crate) fn site(cloud_id: &str) -> Site {
    match cloud_id {
        ACME_SITE_ID => acme(),
        BETA_SITE_ID => beta(),
        _ => Site::default(),
    }
}

fn acme() -> Site {
    Site {
        projects: vec![
            Project {
                id: "10000",
                key: "ACME",
                name: "Acme Platform",
                kind: "software",
            },
            Project {
                id: "10010",
                key: "DATA",
                name: "Data Platform",
                kind: "software",
            },
            Project {
                id: "10020",
                key: "OPS",
                name: "Operations",
                kind: "service_desk",
            },
            Project {
                id: "10030",
                key: "SEC",
                name: "Security",
                kind: "business",
            },
            Project {
                id: "10040",
                key: "WEB",
                name: "Website",
                kind: "software",
            },
        ],
        issues: vec![
            Issue {
                id: "10001",
                key: "ACME-1",
                summary: "Roll out the new payment service",
                status: "In Progress",
                issue_type: "Story",
                priority: "High",
                labels: &["payments", "rollout"],
                assignee: Some(GRACE),
                reporter: ADA,
                created: "2024-06-03T09:12:00.000+0000",
                updated: "2024-06-20T16:45:10.000+0000",
                description: adf(ACME_1_DESCRIPTION),
                comments: vec![
                    Comment {
                        id: "20001",
                        author: GRACE,
                        created: "2024-06-10T08:00:00.000+0000",
                        body: paragraph(json!([
                            text("Staging looks good. The "),
                            {"type": "text", "text": "dashboard", "marks": [{"type": "link", "attrs": {"href": "https://grafana.acme.example/d/payments"}}]},
                            text(" is green.")
                        ])),
                    },
                    Comment {
                        id: "20002",
                        author: ADA,
                        created: "2024-06-12T14:30:00.000+0000",
                        body: json!({"type": "doc", "version": 1, "content": [
                            {"type": "paragraph", "content": [
                                text("Blocked on "),
                                {"type": "text", "text": "legal", "marks": [{"type": "strong"}]},
                                text(" review:")
                            ]},
                            {"type": "bulletList", "content": [
                                {"type": "listItem", "content": [{"type": "paragraph", "content": [text("EU data residency")]}]},
                                {"type": "listItem", "content": [{"type": "paragraph", "content": [text("PCI scope")]}]}
                            ]}
                        ]}),
                    },
                    Comment {
                        id: "20003",
                        author: GRACE,
                        created: "2024-06-20T16:45:10.000+0000",
                        body: paragraph(json!([
                            text("Legal signed off; "),
                            {"type": "text", "text": "payments.v2.enabled", "marks": [{"type": "code"}]},
                            text(" is on for 5% of traffic.")
                        ])),
                    },
                ],
            },
            Issue {
                id: "10002",
                key: "ACME-2",
                summary: "Login page times out on Safari",
                status: "To Do",
                issue_type: "Bug",
                priority: "Medium",
                labels: &[],
                assignee: None,
                reporter: KATHERINE,
                created: "2024-05-02T10:00:00.000+0000",
                updated: "2024-05-11T11:20:00.000+0000",
                description: paragraph(json!([text(
                    "Safari 17 waits 30 s on the login page before it gives up."
                )])),
                comments: Vec::new(),
            },
            Issue {
                id: "10003",
                key: "ACME-3",
                summary: "Rollout dashboard for payments",
                status: "Done",
                issue_type: "Task",
                priority: "Low",
                labels: &["rollout"],
                assignee: Some(KATHERINE),
                reporter: GRACE,
                created: "2024-05-20T07:45:00.000+0000",
                updated: "2024-06-01T12:00:00.000+0000",
                description: paragraph(json!([text(
                    "A dashboard that follows the rollout: latency, errors, traffic share."
                )])),
                comments: Vec::new(),
            },
        ],
        spaces: vec![
            Space {
                id: "98305",
                key: "ENG",
                name: "Engineering",
                kind: "global",
            },
            Space {
                id: "98306",
                key: "OPS",
                name: "Operations",
                kind: "global",
            },
            Space {
                id: "98307",
                key: "DOC",
                name: "Documentation",
                kind: "global",
            },
            Space {
                id: "98308",
                key: "~fake-account-1",
                name: "Ada Lovelace",
                kind: "personal",
            },
        ],
        pages: vec![
            Page {
                id: "123456",
                space_key: "ENG",
                title: "Payment service runbook",
                version: 7,
                updated: "2024-06-19T08:30:00.000Z",
                author: GRACE,
                storage: RUNBOOK_STORAGE,
                text: "Payment service runbook This runbook covers the payments-v2 rollout. \
                       Deploy: build the image, tag it with the commit SHA, push to the registry, \
                       staging first, then production. Run the migrations. Limits per region. \
                       Health check: kubectl rollout status. Rollback.",
            },
            Page {
                id: "123457",
                space_key: "ENG",
                title: "Architecture overview",
                version: 3,
                updated: "2024-04-02T15:00:00.000Z",
                author: ADA,
                storage: "<p>The platform is three services behind one gateway.</p>\
                          <ul><li>gateway</li><li>accounts</li><li>payments</li></ul>",
                text: "Architecture overview The platform is three services behind one gateway: \
                       gateway, accounts, payments.",
            },
            Page {
                id: "123458",
                space_key: "ENG",
                title: "Onboarding",
                version: 12,
                updated: "2024-03-15T09:00:00.000Z",
                author: KATHERINE,
                storage: "<h2>First week</h2><ol><li>Get a laptop</li><li>Read the \
                          <ac:link><ri:page ri:content-title=\"Architecture overview\" /></ac:link></li></ol>",
                text: "Onboarding First week: get a laptop, read the architecture overview.",
            },
            Page {
                id: "223344",
                space_key: "OPS",
                title: "On-call handbook",
                version: 5,
                updated: "2024-06-05T18:00:00.000Z",
                author: GRACE,
                storage: "<p>Page the secondary after <strong>15 minutes</strong>.</p>",
                text: "On-call handbook Page the secondary after 15 minutes.",
            },
        ],
    }
}

fn beta() -> Site {
    Site {
        projects: vec![Project {
            id: "20000",
            key: "LAB",
            name: "Lab Automation",
            kind: "software",
        }],
        issues: vec![
            Issue {
                id: "30007",
                key: "LAB-7",
                summary: "Rollout of the spectrometer firmware",
                status: "In Review",
                issue_type: "Task",
                priority: "Medium",
                labels: &["firmware"],
                assignee: Some(ADA),
                reporter: KATHERINE,
                created: "2024-06-01T08:00:00.000+0000",
                updated: "2024-06-19T17:05:00.000+0000",
                description: json!({"type": "doc", "version": 1, "content": [
                    {"type": "paragraph", "content": [text("Firmware 2.4 goes to every spectrometer in the lab.")]},
                    {"type": "orderedList", "content": [
                        {"type": "listItem", "content": [{"type": "paragraph", "content": [text("Back up the calibration")]}]},
                        {"type": "listItem", "content": [{"type": "paragraph", "content": [text("Flash the firmware")]}]}
                    ]}
                ]}),
                comments: Vec::new(),
            },
            Issue {
                id: "30008",
                key: "LAB-8",
                summary: "Calibrate the centrifuge",
                status: "To Do",
                issue_type: "Task",
                priority: "Low",
                labels: &[],
                assignee: None,
                reporter: ADA,
                created: "2024-06-02T08:00:00.000+0000",
                updated: "2024-06-02T08:00:00.000+0000",
                description: Value::Null,
                comments: Vec::new(),
            },
        ],
        spaces: Vec::new(),
        pages: Vec::new(),
    }
}
