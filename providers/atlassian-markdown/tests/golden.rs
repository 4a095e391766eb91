//! Golden files: ADF, storage-format and wiki-markup inputs and the Markdown they must convert to.
//!
//! Run with `GRANTRY_UPDATE_GOLDEN=1` to rewrite the expected files after a deliberate change,
//! then review the diff.

use std::path::{Path, PathBuf};

use grantry_atlassian_markdown::{adf_to_markdown, storage_to_markdown, wiki_to_markdown};

fn path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(path(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

fn check(actual: &str, expected_file: &str) {
    if std::env::var_os("GRANTRY_UPDATE_GOLDEN").is_some() {
        std::fs::write(path(expected_file), actual).expect("write golden file");
        return;
    }
    let expected = read(expected_file);
    assert!(
        actual == expected,
        "{expected_file} differs.\n--- expected\n{expected}\n--- actual\n{actual}"
    );
}

fn adf(input: &str) -> String {
    let doc: serde_json::Value = serde_json::from_str(&read(input)).expect("ADF input is JSON");
    adf_to_markdown(&doc)
}

fn storage(input: &str) -> String {
    let base = url::Url::parse("https://acme.atlassian.net/wiki/").expect("url");
    storage_to_markdown(&read(input), Some(&base))
}

/// The description of ACME-1 as the fake serves it: nested lists, a table, a code block.
#[test]
fn jira_description_with_nested_lists_table_and_code() {
    let out = adf("../atlassian-fake/src/data/acme-1-description.json");
    for needle in [
        "1. Deploy to staging\n   - Run the smoke tests\n   - Check the dashboards\n     - Latency",
        "| **Region** | **Max RPS** | **Owner** |\n| --- | --- | --- |",
        "```bash\nkubectl -n payments rollout status deploy/payments-v2\n",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in\n{out}");
    }
    check(&out, "tests/golden/jira_description.md");
}

/// The runbook page as the fake serves it: the same structures in storage format.
#[test]
fn confluence_page_with_nested_lists_table_and_code() {
    let out = storage("../atlassian-fake/src/data/eng-runbook.storage.xml");
    for needle in [
        "1. Build the image\n   - Tag it with the commit SHA\n   - Push to the registry\n     - Staging first",
        "| **Region** | **Max RPS** | **Owner** |\n| --- | --- | --- |",
        "```bash\nkubectl -n payments rollout status deploy/payments-v2\n",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in\n{out}");
    }
    check(&out, "tests/golden/confluence_page.md");
}

/// Escaping, unsafe links, tasks, decisions, panels, media, unknown nodes, odd values.
#[test]
fn adf_edge_cases() {
    check(
        &adf("tests/golden/adf_edge_cases.json"),
        "tests/golden/adf_edge_cases.md",
    );
}

/// Entities, sloppy markup, macros of every kind, layouts, ADF extensions, scripts.
#[test]
fn storage_edge_cases() {
    check(
        &storage("tests/golden/storage_edge_cases.xml"),
        "tests/golden/storage_edge_cases.md",
    );
}

/// A Jira Data Center description in wiki markup, with the CRLF line ends Jira stores: headings,
/// formatting, nested lists, a table, code, quotes, panels, links, mentions and images.
#[test]
fn jira_wiki_markup() {
    let input = read("tests/golden/jira_wiki.txt");
    assert!(input.contains("\r\n"), "the input keeps its CRLF line ends");
    let base = url::Url::parse("https://jira.acme.example.com/").expect("url");
    let out = wiki_to_markdown(&input, Some(&base));
    assert!(!out.contains('\r'), "{out}");
    assert_eq!(
        out,
        wiki_to_markdown(&input.replace("\r\n", "\n"), Some(&base))
    );
    for needle in [
        "1. Deploy to staging\n   - Run the smoke tests\n   - Check the dashboards\n     - Latency",
        "| Region | Max RPS | Owner |\n| --- | --- | --- |",
        "```bash\nkubectl -n payments rollout status deploy/payments-v2\n",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in\n{out}");
    }
    check(&out, "tests/golden/jira_wiki.md");
}

/// The same Jira and Confluence content reads the same in both formats where they overlap.
#[test]
fn both_formats_agree_on_the_shared_structures() {
    let jira = adf("../atlassian-fake/src/data/acme-1-description.json");
    let page = storage("../atlassian-fake/src/data/eng-runbook.storage.xml");
    let table = |md: &str| -> Vec<String> {
        md.lines()
            .filter(|l| l.starts_with('|'))
            .map(str::to_owned)
            .collect()
    };
    let (jira_table, page_table) = (table(&jira), table(&page));
    assert_eq!(jira_table.len(), 5);
    assert_eq!(jira_table.len(), page_table.len());
    // The owner of the EU row differs (a mention in Jira, a team name in Confluence).
    for row in [0, 1, 3, 4] {
        assert_eq!(jira_table[row], page_table[row]);
    }
    let code = |md: &str| md.split("```").nth(1).map(str::to_owned);
    assert_eq!(code(&jira), code(&page));
}
