//! Property tests: the ADF, storage-format and wiki-markup converters accept any input without
//! panicking (arbitrary JSON values, ADF-shaped trees with odd attributes, arbitrary strings,
//! generated tag soup and wiki-markup token soup), and what they produce is well-formed
//! Markdown text.

use std::time::{Duration, Instant};

use grantry_atlassian_markdown::{
    adf_to_markdown, adf_to_plain_text, storage_to_markdown, wiki_to_markdown,
};
use proptest::prelude::*;
use serde_json::{Map, Value};

const ADF_TYPES: &[&str] = &[
    "doc",
    "paragraph",
    "text",
    "heading",
    "bulletList",
    "orderedList",
    "listItem",
    "taskList",
    "taskItem",
    "decisionList",
    "decisionItem",
    "codeBlock",
    "blockquote",
    "rule",
    "panel",
    "expand",
    "nestedExpand",
    "table",
    "tableRow",
    "tableHeader",
    "tableCell",
    "mediaSingle",
    "mediaGroup",
    "media",
    "mediaInline",
    "blockCard",
    "embedCard",
    "inlineCard",
    "extension",
    "bodiedExtension",
    "inlineExtension",
    "layoutSection",
    "layoutColumn",
    "hardBreak",
    "mention",
    "emoji",
    "status",
    "date",
    "placeholder",
    "unknownThing",
];

const MARKS: &[&str] = &[
    "strong",
    "em",
    "code",
    "strike",
    "link",
    "underline",
    "textColor",
    "subsup",
    "bogus",
];

const ATTRS: &[&str] = &[
    "level",
    "order",
    "language",
    "href",
    "url",
    "text",
    "shortName",
    "timestamp",
    "state",
    "panelType",
    "title",
    "alt",
    "type",
    "extensionKey",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        "[#*_`<>\\[\\]()|&;! \n\t\\\\a-z0-9-]{0,24}".prop_map(Value::String),
    ]
}

/// Any JSON value at all.
fn json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(6, 96, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("type".to_owned()),
                        Just("content".to_owned()),
                        Just("attrs".to_owned()),
                        Just("text".to_owned()),
                        Just("marks".to_owned()),
                        any::<String>()
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn attrs() -> impl Strategy<Value = Value> {
    prop::collection::vec((prop::sample::select(ATTRS), leaf()), 0..4).prop_map(|pairs| {
        Value::Object(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    })
}

fn marks() -> impl Strategy<Value = Value> {
    prop::collection::vec((prop::sample::select(MARKS), attrs()), 0..4).prop_map(|marks| {
        Value::Array(
            marks
                .into_iter()
                .map(|(kind, attrs)| serde_json::json!({"type": kind, "attrs": attrs}))
                .collect(),
        )
    })
}

/// ADF-shaped trees: known node types (and some unknown), odd attributes, marks, nesting.
fn adf() -> impl Strategy<Value = Value> {
    let node_leaf = (
        prop::sample::select(ADF_TYPES),
        attrs(),
        marks(),
        prop::option::of(leaf()),
    )
        .prop_map(|(kind, attrs, marks, text)| {
            let mut node = serde_json::json!({"type": kind, "attrs": attrs, "marks": marks});
            if let (Some(text), Value::Object(map)) = (text, &mut node) {
                map.insert("text".into(), text);
            }
            node
        });
    node_leaf.prop_recursive(12, 256, 6, |inner| {
        (
            prop::sample::select(ADF_TYPES),
            attrs(),
            prop::collection::vec(inner, 0..6),
            prop::option::of(json()),
        )
            .prop_map(|(kind, attrs, content, extra)| {
                let mut node =
                    serde_json::json!({"type": kind, "attrs": attrs, "content": content});
                if let (Some(extra), Value::Object(map)) = (extra, &mut node) {
                    map.insert("marks".into(), extra);
                }
                node
            })
    })
}

const TAGS: &[&str] = &[
    "p",
    "div",
    "span",
    "h1",
    "h3",
    "h9",
    "ul",
    "ol",
    "li",
    "table",
    "thead",
    "tbody",
    "tr",
    "td",
    "th",
    "colgroup",
    "col",
    "pre",
    "code",
    "blockquote",
    "strong",
    "em",
    "s",
    "a",
    "img",
    "br",
    "hr",
    "time",
    "script",
    "ac:structured-macro",
    "ac:parameter",
    "ac:rich-text-body",
    "ac:plain-text-body",
    "ac:link",
    "ac:link-body",
    "ac:plain-text-link-body",
    "ac:image",
    "ac:emoticon",
    "ac:task-list",
    "ac:task",
    "ac:task-status",
    "ac:task-body",
    "ac:layout",
    "ac:layout-section",
    "ac:layout-cell",
    "ac:adf-extension",
    "ac:adf-fallback",
    "ri:page",
    "ri:user",
    "ri:attachment",
    "ri:url",
    "x:unknown",
];

const ATTR_SNIPPETS: &[&str] = &[
    "",
    " ac:name=\"code\"",
    " ac:name=\"info\"",
    " ac:name=\"expand\"",
    " ac:name=\"jira\"",
    " ac:name=\"status\"",
    " ac:name=\"title\"",
    " ac:name=\"language\"",
    " ac:name=\"\"",
    " href=\"javascript:x\"",
    " href=\"/wiki/x\"",
    " href=\"https://e.com/(a)\"",
    " src=\"https://e.com/i.png\" alt=\"&lt;alt&gt;\"",
    " ri:value=\"https://e.com\"",
    " ri:filename=\"a&amp;b.png\"",
    " ri:content-title=\"Page\"",
    " start=\"99999999999999999999\"",
    " start=\"3\"",
    " datetime=\"2024-01-01\"",
    " ac:emoji-fallback=\"&#x1F600;\"",
    " broken=\"unterminated",
    " noquotes=value",
    " novalue",
    " a=\"1\" a=\"2\"",
    " =\"x\"",
];

const TEXT_SNIPPETS: &[&str] = &[
    "text",
    " ",
    "\n",
    "&nbsp;",
    "&amp;",
    "&lt;b&gt;",
    "&#x1F600;",
    "&#0;",
    "&#xFFFFFFFF;",
    "&#99999999;",
    "&bogus;",
    "& alone",
    "&",
    "<",
    ">",
    "\"",
    "'",
    "]]>",
    "<![CDATA[cdata <p> ]]>",
    "<![CDATA[unterminated",
    "<!-- comment -->",
    "<!-- unterminated",
    "<?xml version=\"1.0\"?>",
    "<!DOCTYPE html>",
    "<?pi",
    "</>",
    "<//>",
    "< p>",
    "1. ",
    "# ",
    "- ",
    "```",
    "*_`[]|\\",
    "\u{0}\u{1b}\u{7f}",
    "é漢字🚀",
];

#[derive(Debug, Clone)]
enum Token {
    Open(usize, usize),
    Close(usize),
    Empty(usize, usize),
    Text(usize),
    Raw(String),
}

fn token() -> impl Strategy<Value = Token> {
    prop_oneof![
        4 => (0..TAGS.len(), 0..ATTR_SNIPPETS.len()).prop_map(|(t, a)| Token::Open(t, a)),
        3 => (0..TAGS.len()).prop_map(Token::Close),
        1 => (0..TAGS.len(), 0..ATTR_SNIPPETS.len()).prop_map(|(t, a)| Token::Empty(t, a)),
        4 => (0..TEXT_SNIPPETS.len()).prop_map(Token::Text),
        1 => any::<String>().prop_map(Token::Raw),
    ]
}

fn render_soup(tokens: &[Token]) -> String {
    let mut out = String::new();
    for token in tokens {
        match token {
            Token::Open(t, a) => out.push_str(&format!("<{}{}>", TAGS[*t], ATTR_SNIPPETS[*a])),
            Token::Close(t) => out.push_str(&format!("</{}>", TAGS[*t])),
            Token::Empty(t, a) => out.push_str(&format!("<{}{} />", TAGS[*t], ATTR_SNIPPETS[*a])),
            Token::Text(t) => out.push_str(TEXT_SNIPPETS[*t]),
            Token::Raw(s) => out.push_str(s),
        }
    }
    out
}

/// Pieces of Jira wiki markup, well-formed and not.
const WIKI_TOKENS: &[&str] = &[
    "text",
    "word",
    " ",
    "  ",
    "\n",
    "\r\n",
    "\r",
    "\n\n",
    "\t",
    "h1. ",
    "h3. ",
    "h6. ",
    "h7. ",
    "*",
    "_",
    "-",
    "+",
    "^",
    "~",
    "??",
    "{{",
    "}}",
    "* ",
    "** ",
    "# ",
    "#* ",
    "*# ",
    "- ",
    "-- ",
    "----",
    "bq. ",
    "|",
    "||",
    "[",
    "]",
    "[~",
    "[~accountid:",
    "~user",
    "|http://e.com",
    "http://e.com/a_b",
    "https://",
    "mailto:a@e.com",
    "javascript:x",
    "/rel/path",
    "#anchor",
    "^file.pdf",
    "!",
    "!x.png!",
    "!x.png|thumbnail!",
    "!http://e.com/i.png|alt=a!",
    "{code}",
    "{code:java}",
    "{code:title=T|language=sql}",
    "{noformat}",
    "{quote}",
    "{panel}",
    "{panel:title=P}",
    "{info}",
    "{note}",
    "{tip}",
    "{warning}",
    "{color:red}",
    "{color}",
    "{anchor:x}",
    "{unknown}",
    "{",
    "}",
    ":",
    "=",
    "\\",
    "\\\\",
    "\\*",
    "(/)",
    "(x)",
    ":)",
    "<b>",
    "&amp;",
    "`",
    "```",
    "\u{0}",
    "\u{1b}",
    "é漢字🚀",
];

fn wiki_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            6 => prop::sample::select(WIKI_TOKENS).prop_map(str::to_owned),
            1 => any::<String>(),
        ],
        0..160,
    )
    .prop_map(|tokens| tokens.concat())
}

/// What every conversion result must look like.
fn well_formed(markdown: &str) -> Result<(), TestCaseError> {
    prop_assert!(markdown.is_empty() || markdown.ends_with('\n'));
    prop_assert!(!markdown.starts_with('\n'));
    prop_assert!(
        !markdown
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t'),
        "control characters in {markdown:?}"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn adf_accepts_any_json(value in json()) {
        well_formed(&adf_to_markdown(&value))?;
        let text = adf_to_plain_text(&value, 50);
        prop_assert!(text.chars().count() <= 50);
    }

    #[test]
    fn adf_accepts_any_adf_shaped_tree(value in adf()) {
        let doc = serde_json::json!({"type": "doc", "version": 1, "content": [value]});
        let first = adf_to_markdown(&doc);
        well_formed(&first)?;
        prop_assert_eq!(first, adf_to_markdown(&doc));
        prop_assert!(adf_to_plain_text(&doc, 200).chars().count() <= 200);
    }

    #[test]
    fn adf_keeps_plain_words(words in prop::collection::vec("[a-zA-Z0-9]{1,12}", 1..10)) {
        let text = words.join(" ");
        let doc = serde_json::json!({"type": "doc", "content": [
            {"type": "paragraph", "content": [{"type": "text", "text": text}]}]});
        prop_assert_eq!(adf_to_markdown(&doc), format!("{text}\n"));
    }

    #[test]
    fn storage_accepts_any_string(input in any::<String>()) {
        well_formed(&storage_to_markdown(&input, None))?;
    }

    #[test]
    fn storage_accepts_tag_soup(tokens in prop::collection::vec(token(), 0..120)) {
        let input = render_soup(&tokens);
        let base = url::Url::parse("https://acme.atlassian.net/wiki/").expect("url");
        let first = storage_to_markdown(&input, Some(&base));
        well_formed(&first)?;
        prop_assert_eq!(first, storage_to_markdown(&input, Some(&base)));
    }

    #[test]
    fn wiki_accepts_any_string(input in any::<String>()) {
        well_formed(&wiki_to_markdown(&input, None))?;
    }

    #[test]
    fn wiki_accepts_token_soup(input in wiki_soup()) {
        let base = url::Url::parse("https://jira.acme.example.com/").expect("url");
        let first = wiki_to_markdown(&input, Some(&base));
        well_formed(&first)?;
        prop_assert_eq!(&first, &wiki_to_markdown(&input, Some(&base)));
        // CR and CRLF line ends read exactly like LF.
        let lf = input.replace("\r\n", "\n").replace('\r', "\n");
        prop_assert_eq!(&first, &wiki_to_markdown(&lf, Some(&base)));
        prop_assert_eq!(first, wiki_to_markdown(&lf.replace('\n', "\r\n"), Some(&base)));
    }

    #[test]
    fn wiki_keeps_plain_words(words in prop::collection::vec("[a-zA-Z0-9]{1,12}", 1..10)) {
        let text = words.join(" ");
        prop_assert_eq!(wiki_to_markdown(&text, None), format!("{text}\n"));
    }

    #[test]
    fn storage_keeps_plain_words(words in prop::collection::vec("[a-zA-Z0-9]{1,12}", 1..10)) {
        let text = words.join(" ");
        prop_assert_eq!(storage_to_markdown(&format!("<p>{text}</p>"), None), format!("{text}\n"));
    }
}

#[test]
fn deep_nesting_does_not_overflow_the_stack() {
    let deep_storage = format!(
        "{}x{}",
        "<ul><li>".repeat(20_000),
        "</li></ul>".repeat(20_000)
    );
    well_formed(&storage_to_markdown(&deep_storage, None)).expect("well formed");
    let unclosed = "<div><table><tr><td><blockquote>".repeat(10_000);
    well_formed(&storage_to_markdown(&unclosed, None)).expect("well formed");

    // serde_json refuses to parse deeper than 128 levels, so that is as deep as ADF gets.
    let mut adf = serde_json::json!({"type": "text", "text": "x"});
    for i in 0..126 {
        let kind = [
            "bulletList",
            "listItem",
            "blockquote",
            "table",
            "tableRow",
            "tableCell",
        ][i % 6];
        adf = serde_json::json!({"type": kind, "content": [adf]});
    }
    let out = adf_to_markdown(&adf);
    well_formed(&out).expect("well formed");
    assert!(out.contains('x'), "{out}");
}

#[test]
fn wiki_nesting_and_unclosed_markup_stay_cheap() {
    let started = Instant::now();
    let inputs = [
        format!("{} deep", "*".repeat(20_000)),
        "*a ".repeat(20_000),
        "[".repeat(50_000),
        "[a|".repeat(20_000),
        "{{".repeat(30_000),
        "{{}".repeat(20_000),
        "!a.png ".repeat(20_000),
        "http://%".repeat(10_000),
        "{panel:title=x}\n".repeat(5_000),
        "{quote}{panel}{info}{note}{tip}{warning}".repeat(2_000),
        "{code:x}".repeat(10_000),
        "|[x|".repeat(20_000),
        "-a _b *c +d ^e ~f ??g ".repeat(5_000),
        "\\\\".repeat(30_000),
        "\r".repeat(50_000),
    ];
    for input in &inputs {
        well_formed(&wiki_to_markdown(input, None)).expect("well formed");
    }
    let deep = format!("{} x", "*".repeat(5_000));
    assert!(wiki_to_markdown(&deep, None).contains('x'));
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}
