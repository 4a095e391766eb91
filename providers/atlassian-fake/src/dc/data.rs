//! The content the fake Data Center serves: Jira projects, issues and comments in wiki markup
//! (CRLF line ends, as Jira stores them), Confluence spaces and pages in storage format.

/// A Jira DC user as issues and comments show them.
#[derive(Clone, Copy)]
pub(super) struct Person {
    pub(super) key: &'static str,
    pub(super) name: &'static str,
    pub(super) display_name: &'static str,
}

/// A Jira project.
pub(super) struct Project {
    pub(super) id: &'static str,
    pub(super) key: &'static str,
    pub(super) name: &'static str,
    pub(super) kind: &'static str,
}

/// A Jira issue; texts are wiki markup with `\n` line ends, sent with CRLF.
pub(super) struct Issue {
    pub(super) id: &'static str,
    pub(super) key: &'static str,
    pub(super) project: &'static str,
    pub(super) summary: &'static str,
    pub(super) status: &'static str,
    pub(super) status_category: &'static str,
    pub(super) issue_type: &'static str,
    pub(super) priority: &'static str,
    pub(super) labels: &'static [&'static str],
    pub(super) assignee: Option<Person>,
    pub(super) reporter: Person,
    pub(super) created: &'static str,
    pub(super) updated: &'static str,
    pub(super) description: &'static str,
    pub(super) comments: &'static [Comment],
}

/// A Jira comment.
pub(super) struct Comment {
    pub(super) id: &'static str,
    pub(super) author: Person,
    pub(super) created: &'static str,
    pub(super) updated: &'static str,
    pub(super) body: &'static str,
}

/// A Confluence space.
pub(super) struct Space {
    pub(super) id: u64,
    pub(super) key: &'static str,
    pub(super) name: &'static str,
}

/// A Confluence page.
pub(super) struct Page {
    pub(super) id: &'static str,
    pub(super) space_key: &'static str,
    pub(super) title: &'static str,
    pub(super) version: u64,
    pub(super) when: &'static str,
    pub(super) storage: &'static str,
    /// The words CQL `text ~` matches, written out by hand.
    pub(super) text: &'static str,
}

/// `text` with every line end as CRLF, the way Jira stores wiki markup.
pub(super) fn crlf(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\n', "\r\n")
}

pub(super) const ALICE: Person = Person {
    key: "JIRAUSER10000",
    name: "alice",
    display_name: "Alice Example",
};
const BOB: Person = Person {
    key: "JIRAUSER10001",
    name: "bob",
    display_name: "Bob Builder",
};
const CAROL: Person = Person {
    key: "JIRAUSER10002",
    name: "carol",
    display_name: "Carol Smith",
};

/// The Jira projects.
pub(super) const PROJECTS: &[Project] = &[
    Project {
        id: "10000",
        key: "ENG",
        name: "Engineering",
        kind: "software",
    },
    Project {
        id: "10001",
        key: "OPS",
        name: "Operations",
        kind: "service_desk",
    },
    Project {
        id: "10002",
        key: "DOC",
        name: "Documentation",
        kind: "business",
    },
];

/// ENG-1's description: every wiki markup structure a renderer must handle.
const ENG_1_DESCRIPTION: &str = r#"h2. Goal
Roll out *payments-v2* behind a feature flag, _carefully_, and retire -the old gateway- by July.
Owner: [~alice], see the [rollout plan|https://wiki.example.com/display/ENG/Payment+service+runbook].

h2. Steps
# Build the image
## Tag it with the commit SHA
## Push to the registry
*** Staging first
*** Then production
# Run the migrations
# Enable for 5% of traffic

h2. Limits
||Region||Max RPS||Owner||
|EU|1200|Payments & Billing|
|US|3400|Team _Orion_|

{code:java}
public final class FeatureFlag {
    boolean enabled(String name) { return flags.contains(name); }
}
{code}

{noformat}
curl -s https://payments.internal/health | jq .status
{noformat}

{quote}
Measure twice, deploy once.
{quote}

{panel:title=Rollback}
Flip the *payments-v2* flag off, then page the on-call.
{panel}

!diagram.png!"#;

const ENG_1_COMMENTS: &[Comment] = &[
    Comment {
        id: "10100",
        author: BOB,
        created: "2024-06-18T09:12:00.000+0000",
        updated: "2024-06-18T09:12:00.000+0000",
        body: "Staging is *green*. Can we go to 5% tomorrow?",
    },
    Comment {
        id: "10101",
        author: ALICE,
        created: "2024-06-19T10:05:30.000+0000",
        updated: "2024-06-19T11:00:00.000+0000",
        body: "Yes, after the migration:\n* check the {{payments_v2}} table\n* watch the _p99_ latency",
    },
    Comment {
        id: "10102",
        author: CAROL,
        created: "2024-06-20T16:45:10.000+0000",
        updated: "2024-06-20T16:45:10.000+0000",
        body: "[~bob] the dashboard is at [Grafana|https://grafana.example.com/d/payments].",
    },
];

/// The Jira issues, newest update first.
pub(super) const ISSUES: &[Issue] = &[
    Issue {
        id: "10010",
        key: "ENG-1",
        project: "ENG",
        summary: "Roll out payments-v2 behind a feature flag",
        status: "In Progress",
        status_category: "indeterminate",
        issue_type: "Story",
        priority: "High",
        labels: &["payments", "rollout"],
        assignee: Some(ALICE),
        reporter: BOB,
        created: "2024-06-17T08:00:00.000+0000",
        updated: "2024-06-20T16:45:10.000+0000",
        description: ENG_1_DESCRIPTION,
        comments: ENG_1_COMMENTS,
    },
    Issue {
        id: "10011",
        key: "ENG-2",
        project: "ENG",
        summary: "Checkout times out on slow networks",
        status: "To Do",
        status_category: "new",
        issue_type: "Bug",
        priority: "Medium",
        labels: &["payments"],
        assignee: None,
        reporter: CAROL,
        created: "2024-06-15T13:20:00.000+0000",
        updated: "2024-06-19T07:30:00.000+0000",
        description: "Steps:\n# Throttle the network to 3G\n# Pay with a card\n\nThe checkout gives up after *10 s*.",
        comments: &[Comment {
            id: "10110",
            author: ALICE,
            created: "2024-06-19T07:30:00.000+0000",
            updated: "2024-06-19T07:30:00.000+0000",
            body: "Reproduced. The payments timeout is too short.",
        }],
    },
    Issue {
        id: "10020",
        key: "OPS-1",
        project: "OPS",
        summary: "Rotate the database credentials",
        status: "Done",
        status_category: "done",
        issue_type: "Task",
        priority: "Highest",
        labels: &[],
        assignee: Some(CAROL),
        reporter: ALICE,
        created: "2024-06-10T10:00:00.000+0000",
        updated: "2024-06-12T15:00:00.000+0000",
        description: "Rotate the credentials of the *orders* database.\n{quote}\nEvery 90 days.\n{quote}",
        comments: &[],
    },
    Issue {
        id: "10030",
        key: "DOC-1",
        project: "DOC",
        summary: "Document the payments API",
        status: "To Do",
        status_category: "new",
        issue_type: "Task",
        priority: "Low",
        labels: &["docs"],
        assignee: Some(BOB),
        reporter: ALICE,
        created: "2024-06-01T09:00:00.000+0000",
        updated: "2024-06-05T09:00:00.000+0000",
        description: "Describe every endpoint of the payments API, with examples.",
        comments: &[],
    },
];

/// The Confluence spaces.
pub(super) const SPACES: &[Space] = &[
    Space {
        id: 98305,
        key: "ENG",
        name: "Engineering",
    },
    Space {
        id: 98306,
        key: "OPS",
        name: "Operations",
    },
];

const RUNBOOK_STORAGE: &str = r#"<h1>Payment service runbook</h1>
<p>This runbook covers the <strong>payments-v2</strong> rollout. Owner: <ac:link><ri:user ri:userkey="8a7f808a8e0f0c2a018e0f0c7a2a0000" /></ac:link>.</p>
<ac:structured-macro ac:name="info" ac:schema-version="1" ac:macro-id="0c4a3f63-0d52-4a8e-9e4f-4ac1a3f8a7d1"><ac:rich-text-body>
<p>Read the <a href="https://jira.example.com/browse/ENG-1">rollout issue</a> first.</p>
</ac:rich-text-body></ac:structured-macro>
<h2>Deploy</h2>
<ol>
  <li>Build the image
    <ul>
      <li>Tag it with the commit&nbsp;SHA</li>
      <li>Push to the registry</li>
    </ul>
  </li>
  <li><p>Run the migrations</p></li>
  <li>Enable for 5% of traffic</li>
</ol>
<h2>Limits</h2>
<table><tbody>
<tr><th><p><strong>Region</strong></p></th><th><p><strong>Max RPS</strong></p></th></tr>
<tr><td><p>EU</p></td><td><p>1200</p></td></tr>
<tr><td><p>US</p></td><td><p>3400</p></td></tr>
</tbody></table>
<h2>Health check</h2>
<ac:structured-macro ac:name="code" ac:schema-version="1"><ac:parameter ac:name="language">bash</ac:parameter><ac:plain-text-body><![CDATA[curl -s https://payments.internal/health | jq .status]]></ac:plain-text-body></ac:structured-macro>
<p><ac:image><ri:attachment ri:filename="diagram.png" /></ac:image></p>"#;

/// The Confluence pages.
pub(super) const PAGES: &[Page] = &[
    Page {
        id: "65601",
        space_key: "ENG",
        title: "Payment service runbook",
        version: 7,
        when: "2024-06-19T08:30:00.000Z",
        storage: RUNBOOK_STORAGE,
        text: "Payment service runbook payments-v2 rollout owner rollout issue deploy build the image \
               tag it with the commit SHA push to the registry run the migrations enable for 5% of \
               traffic limits region max RPS EU US health check curl",
    },
    Page {
        id: "65602",
        space_key: "ENG",
        title: "Release checklist",
        version: 3,
        when: "2024-06-18T14:00:00.000Z",
        storage: "<p>Before every release:</p><ul><li><p>Tag the commit</p></li><li><p>Update the <em>changelog</em></p></li><li><p>Announce the payments window</p></li></ul>",
        text: "Release checklist before every release tag the commit update the changelog announce the payments window",
    },
    Page {
        id: "65701",
        space_key: "OPS",
        title: "On-call handbook",
        version: 12,
        when: "2024-06-12T09:45:00.000Z",
        storage: "<h2>Paging</h2><p>Page the on-call through <strong>PagerDuty</strong>. Rotate the database credentials every 90 days.</p>",
        text: "On-call handbook paging page the on-call through PagerDuty rotate the database credentials every 90 days",
    },
];
