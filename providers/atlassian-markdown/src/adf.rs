//! Atlassian Document Format (Jira descriptions and comments) to the document model.
//!
//! Every JSON value is accepted: unknown nodes keep their text, malformed ones are skipped,
//! and nesting deeper than [`MAX_DEPTH`] is flattened to plain text.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::model::{Block, Cell, Inline, Item};

/// Deepest nesting converted structurally; deeper content becomes plain text.
const MAX_DEPTH: usize = 32;

/// Node types that are inline content.
const INLINE_TYPES: &[&str] = &[
    "text",
    "hardBreak",
    "mention",
    "emoji",
    "inlineCard",
    "status",
    "date",
    "placeholder",
    "inlineExtension",
    "mediaInline",
];

/// The blocks of an ADF document (or of a bare list of nodes, or of plain text).
pub(crate) fn blocks(doc: &Value) -> Vec<Block> {
    match doc {
        Value::Null => Vec::new(),
        Value::String(text) => text
            .split("\n\n")
            .filter(|p| !p.trim().is_empty())
            .map(|p| Block::Paragraph(lines_with_breaks(p)))
            .collect(),
        Value::Array(nodes) => block_list(nodes, 0),
        Value::Object(_) => node_blocks(doc, 0),
        Value::Bool(_) | Value::Number(_) => Vec::new(),
    }
}

/// The text of an ADF document on one line, at most `max` characters (an ellipsis marks a cut).
///
/// Neighbouring inline nodes join as they are; blocks are separated by a space.
pub(crate) fn plain_text(doc: &Value, max: usize) -> String {
    let mut out = String::new();
    let mut stack: Vec<&Value> = vec![doc];
    let mut visited = 0usize;
    // Enough text to cut at `max` characters once white space is folded.
    let enough = max.saturating_mul(4).saturating_add(16);
    while let Some(value) = stack.pop() {
        visited += 1;
        if visited > 100_000 || out.len() > enough {
            break;
        }
        match value {
            Value::String(text) if std::ptr::eq(value, doc) => out.push_str(text),
            Value::Object(map) => {
                let kind = map.get("type").and_then(Value::as_str).unwrap_or("");
                let attrs = map.get("attrs");
                let attr = |name: &str| attrs.and_then(|a| a.get(name)).and_then(Value::as_str);
                let shown = match kind {
                    "text" => map.get("text").and_then(Value::as_str),
                    "mention" | "emoji" | "status" => attr("text"),
                    "inlineCard" | "blockCard" => attr("url"),
                    "hardBreak" => Some(" "),
                    _ => None,
                };
                if !INLINE_TYPES.contains(&kind) {
                    out.push(' ');
                }
                if let Some(text) = shown {
                    out.push_str(text);
                }
                if let Some(Value::Array(children)) = map.get("content") {
                    stack.extend(children.iter().rev());
                }
            }
            Value::Array(items) => stack.extend(items.iter().rev()),
            _ => {}
        }
    }
    let words: Vec<&str> = out.split_whitespace().collect();
    let joined = words.join(" ");
    if joined.chars().count() <= max {
        return joined;
    }
    let mut cut: String = joined.chars().take(max.saturating_sub(1)).collect();
    cut = cut.trim_end().to_owned();
    if max > 0 {
        cut.push('…');
    }
    cut
}

fn kind(node: &Value) -> &str {
    node.get("type").and_then(Value::as_str).unwrap_or("")
}

fn attr<'a>(node: &'a Value, name: &str) -> Option<&'a Value> {
    node.get("attrs").and_then(|a| a.get(name))
}

fn attr_str<'a>(node: &'a Value, name: &str) -> Option<&'a str> {
    attr(node, name).and_then(Value::as_str)
}

fn children(node: &Value) -> &[Value] {
    match node.get("content") {
        Some(Value::Array(items)) => items,
        _ => &[],
    }
}

fn is_inline(node: &Value) -> bool {
    let kind = kind(node);
    INLINE_TYPES.contains(&kind) || (!kind.is_empty() && node.get("text").is_some())
}

/// A sequence of nodes in a block container; stray inline nodes are gathered into paragraphs.
fn block_list(nodes: &[Value], depth: usize) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut pending: Vec<&Value> = Vec::new();
    for node in nodes {
        if is_inline(node) {
            pending.push(node);
            continue;
        }
        flush(&mut pending, &mut blocks, depth);
        blocks.extend(node_blocks(node, depth + 1));
    }
    flush(&mut pending, &mut blocks, depth);
    blocks
}

fn flush(pending: &mut Vec<&Value>, blocks: &mut Vec<Block>, depth: usize) {
    if pending.is_empty() {
        return;
    }
    let content = inline_list(pending, depth);
    pending.clear();
    if !content.is_empty() {
        blocks.push(Block::Paragraph(content));
    }
}

/// The blocks one node stands for.
fn node_blocks(node: &Value, depth: usize) -> Vec<Block> {
    if !node.is_object() {
        return Vec::new();
    }
    if depth > MAX_DEPTH {
        let text = plain_text(node, 100_000);
        return if text.is_empty() {
            Vec::new()
        } else {
            vec![Block::Paragraph(vec![Inline::Text(text)])]
        };
    }
    let content = children(node);
    match kind(node) {
        "paragraph" => {
            let inlines = inline_list(&content.iter().collect::<Vec<_>>(), depth);
            if inlines.is_empty() {
                Vec::new()
            } else {
                vec![Block::Paragraph(inlines)]
            }
        }
        "heading" => {
            let level = attr(node, "level")
                .and_then(Value::as_u64)
                .unwrap_or(1)
                .clamp(1, 6) as u8;
            vec![Block::Heading(
                level,
                inline_list(&content.iter().collect::<Vec<_>>(), depth),
            )]
        }
        "bulletList" => vec![Block::List {
            ordered: false,
            start: 1,
            items: list_items(content, depth),
        }],
        "orderedList" => vec![Block::List {
            ordered: true,
            start: attr(node, "order").and_then(Value::as_u64).unwrap_or(1),
            items: list_items(content, depth),
        }],
        "taskList" | "decisionList" => vec![Block::List {
            ordered: false,
            start: 1,
            items: task_items(content, depth),
        }],
        "codeBlock" => vec![Block::Code {
            language: attr_str(node, "language").unwrap_or("").to_owned(),
            text: content
                .iter()
                .filter_map(|n| n.get("text").and_then(Value::as_str))
                .collect(),
        }],
        "blockquote" => vec![Block::Quote(block_list(content, depth))],
        "rule" => vec![Block::Rule],
        "panel" => {
            let label = match attr_str(node, "panelType").unwrap_or("info") {
                "note" => "Note",
                "warning" => "Warning",
                "error" => "Error",
                "success" => "Success",
                "tip" => "Tip",
                _ => "Info",
            };
            let mut inner = vec![Block::Paragraph(vec![Inline::Strong(vec![Inline::text(
                label,
            )])])];
            inner.extend(block_list(content, depth));
            vec![Block::Quote(inner)]
        }
        "expand" | "nestedExpand" => {
            let mut out = Vec::new();
            if let Some(title) = attr_str(node, "title").filter(|t| !t.trim().is_empty()) {
                out.push(Block::Paragraph(vec![Inline::Strong(vec![Inline::text(
                    title,
                )])]));
            }
            out.extend(block_list(content, depth));
            out
        }
        "table" => vec![Block::Table(
            content
                .iter()
                .map(|row| {
                    children(row)
                        .iter()
                        .map(|cell| Cell {
                            blocks: block_list(children(cell), depth + 1),
                        })
                        .collect()
                })
                .collect(),
        )],
        "mediaSingle" | "mediaGroup" => block_list(content, depth),
        "media" => vec![Block::Paragraph(vec![media(node)])],
        "blockCard" | "embedCard" => match attr_str(node, "url") {
            Some(url) => vec![Block::Paragraph(vec![Inline::Link {
                href: url.to_owned(),
                content: Vec::new(),
            }])],
            None => Vec::new(),
        },
        "extension" => vec![Block::Paragraph(vec![extension(node)])],
        // doc, listItem, tableCell, layoutSection, layoutColumn, bodiedExtension and every
        // unknown container: their content, as blocks.
        _ => block_list(content, depth),
    }
}

fn list_items(nodes: &[Value], depth: usize) -> Vec<Item> {
    nodes
        .iter()
        .map(|node| Item {
            task: None,
            blocks: if kind(node) == "listItem" {
                block_list(children(node), depth + 1)
            } else {
                block_list(std::slice::from_ref(node), depth + 1)
            },
        })
        .collect()
}

/// Task and decision items; a nested task list belongs to the item before it.
fn task_items(nodes: &[Value], depth: usize) -> Vec<Item> {
    let mut items: Vec<Item> = Vec::new();
    for node in nodes {
        let blocks = block_list(children(node), depth + 1);
        match kind(node) {
            "taskItem" => items.push(Item {
                task: Some(attr_str(node, "state") == Some("DONE")),
                blocks,
            }),
            "decisionItem" => items.push(Item { task: None, blocks }),
            _ => {
                let nested = node_blocks(node, depth + 1);
                match items.last_mut() {
                    Some(last) => last.blocks.extend(nested),
                    None => items.push(Item {
                        task: None,
                        blocks: nested,
                    }),
                }
            }
        }
    }
    items
}

/// Inline nodes; neighbouring text nodes with the same marks are merged first.
fn inline_list(nodes: &[&Value], depth: usize) -> Vec<Inline> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&node) = nodes.get(i) {
        if kind(node) == "text" {
            let marks = node.get("marks");
            let mut text = String::from(node.get("text").and_then(Value::as_str).unwrap_or(""));
            let mut j = i + 1;
            while let Some(&next) = nodes.get(j) {
                if kind(next) != "text" || next.get("marks") != marks {
                    break;
                }
                text.push_str(next.get("text").and_then(Value::as_str).unwrap_or(""));
                j += 1;
            }
            if !text.is_empty() {
                out.push(marked(text, marks));
            }
            i = j;
            continue;
        }
        out.extend(inline_node(node, depth));
        i += 1;
    }
    out
}

fn inline_node(node: &Value, depth: usize) -> Vec<Inline> {
    let attr_text = |name: &str| attr_str(node, name).unwrap_or("").to_owned();
    match kind(node) {
        "hardBreak" => vec![Inline::Break],
        "mention" => {
            let text = attr_text("text");
            let text = if text.is_empty() {
                "@user".to_owned()
            } else if text.starts_with('@') {
                text
            } else {
                format!("@{text}")
            };
            vec![Inline::Text(text)]
        }
        "emoji" => {
            let text = attr_text("text");
            vec![Inline::Text(if text.is_empty() {
                attr_text("shortName")
            } else {
                text
            })]
        }
        "inlineCard" => match attr_str(node, "url") {
            Some(url) => vec![Inline::Link {
                href: url.to_owned(),
                content: Vec::new(),
            }],
            None => Vec::new(),
        },
        "status" => vec![Inline::Code(attr_text("text"))],
        "date" => vec![Inline::Text(date(node))],
        "placeholder" => Vec::new(),
        "inlineExtension" => vec![extension(node)],
        "mediaInline" => vec![media(node)],
        _ if depth > MAX_DEPTH => vec![Inline::Text(plain_text(node, 100_000))],
        _ => {
            if let Some(text) = node.get("text").and_then(Value::as_str) {
                return vec![Inline::text(text)];
            }
            // A block where inline content belongs: keep its text, separated by breaks.
            let mut out = Vec::new();
            for block in node_blocks(node, depth + 1) {
                if !out.is_empty() {
                    out.push(Inline::Break);
                }
                out.extend(block_inlines(block));
            }
            out
        }
    }
}

/// The inline content of a block, for blocks found where inline content belongs.
fn block_inlines(block: Block) -> Vec<Inline> {
    match block {
        Block::Paragraph(content) | Block::Heading(_, content) => content,
        Block::Code { text, .. } => vec![Inline::Code(text)],
        Block::List { items, .. } => {
            let mut out = Vec::new();
            for item in items {
                for block in item.blocks {
                    if !out.is_empty() {
                        out.push(Inline::Break);
                    }
                    out.extend(block_inlines(block));
                }
            }
            out
        }
        Block::Quote(blocks) => blocks.into_iter().flat_map(block_inlines).collect(),
        Block::Table(rows) => rows
            .into_iter()
            .flatten()
            .flat_map(|cell| cell.blocks.into_iter().flat_map(block_inlines))
            .collect(),
        Block::Rule => Vec::new(),
    }
}

/// Text with its marks: code innermost, then strike, emphasis, strong, and the link outside.
fn marked(text: String, marks: Option<&Value>) -> Inline {
    let marks: &[Value] = match marks {
        Some(Value::Array(marks)) => marks,
        _ => &[],
    };
    let has = |wanted: &str| marks.iter().any(|m| kind(m) == wanted);
    let mut inline = if has("code") {
        Inline::Code(text)
    } else {
        Inline::Text(text)
    };
    if has("strike") {
        inline = Inline::Strike(vec![inline]);
    }
    if has("em") {
        inline = Inline::Emphasis(vec![inline]);
    }
    if has("strong") {
        inline = Inline::Strong(vec![inline]);
    }
    if let Some(href) = marks
        .iter()
        .find(|m| kind(m) == "link")
        .and_then(|m| attr_str(m, "href"))
    {
        inline = Inline::Link {
            href: href.to_owned(),
            content: vec![inline],
        };
    }
    inline
}

fn media(node: &Value) -> Inline {
    let alt = attr_str(node, "alt").unwrap_or("").trim();
    if attr_str(node, "type") == Some("external")
        && let Some(url) = attr_str(node, "url")
    {
        return Inline::Image {
            src: url.to_owned(),
            alt: alt.to_owned(),
        };
    }
    let label = if alt.is_empty() {
        "attachment".to_owned()
    } else {
        format!("attachment: {alt}")
    };
    Inline::Emphasis(vec![Inline::Text(label)])
}

fn extension(node: &Value) -> Inline {
    let key = attr_str(node, "extensionKey").unwrap_or("extension");
    Inline::Emphasis(vec![Inline::Text(format!("({key} macro)"))])
}

/// An ADF date node: a UTC day from milliseconds since the epoch (a string or a number).
fn date(node: &Value) -> String {
    let millis = match attr(node, "timestamp") {
        Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
        Some(Value::Number(n)) => n.as_i64(),
        _ => None,
    };
    millis
        .and_then(DateTime::<Utc>::from_timestamp_millis)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

fn lines_with_breaks(text: &str) -> Vec<Inline> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if i > 0 {
            out.push(Inline::Break);
        }
        out.push(Inline::text(line));
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::writer::render;

    fn md(doc: Value) -> String {
        render(&blocks(&doc), None)
    }

    #[test]
    fn marks_and_merging() {
        let doc = json!({"type":"doc","version":1,"content":[{"type":"paragraph","content":[
            {"type":"text","text":"bold ","marks":[{"type":"strong"}]},
            {"type":"text","text":"still","marks":[{"type":"strong"}]},
            {"type":"text","text":" and "},
            {"type":"text","text":"x()","marks":[{"type":"code"},{"type":"link","attrs":{"href":"https://e.com/"}}]}
        ]}]});
        assert_eq!(md(doc), "**bold still** and [`x()`](https://e.com/)\n");
    }

    #[test]
    fn deep_nesting_is_flattened_not_overflowed() {
        let mut node = json!({"type":"text","text":"deep"});
        for _ in 0..120 {
            node = json!({"type":"blockquote","content":[node]});
        }
        let out = md(json!({"type":"doc","content":[node]}));
        assert!(out.contains("deep"), "{out}");
    }

    #[test]
    fn plain_text_is_cut() {
        let doc = json!({"type":"doc","content":[{"type":"paragraph","content":[
            {"type":"text","text":"one two three four"}]}]});
        assert_eq!(plain_text(&doc, 100), "one two three four");
        assert_eq!(plain_text(&doc, 9), "one two…");
    }

    #[test]
    fn plain_strings_and_nonsense() {
        assert_eq!(
            md(json!("line one\nline two\n\nnext")),
            "line one\\\nline two\n\nnext\n"
        );
        assert_eq!(md(json!(42)), "");
        assert_eq!(md(json!({"type": 3, "content": {"x": 1}})), "");
    }
}
