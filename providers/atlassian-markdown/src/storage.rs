//! Confluence storage format (XHTML with `ac:` and `ri:` elements) to the document model.
//!
//! quick-xml reads the markup leniently: HTML entities resolve, mismatched or stray end tags
//! close what they can, elements deeper than [`MAX_DEPTH`] are flattened, and whatever follows
//! a syntax error is kept as text. Macros are degraded to text: code and no-format macros
//! become code blocks, panels become quotes, the rest keep their body or their name.

use quick_xml::Reader;
use quick_xml::escape::{resolve_html5_entity, resolve_xml_entity};
use quick_xml::events::{BytesRef, BytesStart, Event};

use super::model::{Block, Cell, Inline, Item};

/// Deepest element nesting kept; deeper elements are dropped and their text kept in place.
const MAX_DEPTH: usize = 40;

/// Elements that never have content.
const VOID: &[&str] = &[
    "br", "hr", "img", "col", "input", "meta", "link", "area", "base", "wbr", "source", "param",
    "embed", "track",
];

/// A parsed node.
#[derive(Debug)]
enum Node {
    Element(Element),
    Text(String),
}

#[derive(Debug, Default)]
struct Element {
    name: String,
    attrs: Vec<(String, String)>,
    children: Vec<Node>,
}

impl Element {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn child(&self, name: &str) -> Option<&Element> {
        self.elements().find(|e| e.name == name)
    }

    fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }
}

/// The blocks of a storage-format body.
pub(crate) fn blocks(input: &str) -> Vec<Block> {
    let root = parse(input);
    block_list(&root.children)
}

/// Reads the markup into a tree, never failing.
fn parse(input: &str) -> Element {
    let mut reader = Reader::from_str(input);
    let config = reader.config_mut();
    config.check_end_names = false;
    config.allow_unmatched_ends = true;
    config.allow_dangling_amp = true;
    config.check_comments = false;
    config.expand_empty_elements = false;
    let mut stack: Vec<Element> = vec![Element::default()];
    loop {
        let event = reader.read_event();
        match event {
            Ok(Event::Start(start)) => {
                let element = element(&start);
                auto_close(&mut stack, &element.name);
                if stack.len() > MAX_DEPTH || VOID.contains(&element.name.as_str()) {
                    push_node(&mut stack, Node::Element(element));
                } else {
                    stack.push(element);
                }
            }
            Ok(Event::Empty(start)) => push_node(&mut stack, Node::Element(element(&start))),
            Ok(Event::End(end)) => {
                let name = lower(end.name().as_ref());
                if let Some(at) = stack.iter().rposition(|e| e.name == name)
                    && at > 0
                {
                    close_to(&mut stack, at);
                }
            }
            Ok(Event::Text(text)) => push_text(&mut stack, &text.xml10_content()),
            Ok(Event::CData(data)) => push_text(&mut stack, &data.xml10_content()),
            Ok(Event::GeneralRef(reference)) => push_text(&mut stack, &entity(&reference)),
            Ok(Event::Eof) => break,
            Ok(Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_)) => {}
            Err(_) => {
                // Keep what could not be read as text rather than losing it.
                let at = usize::try_from(reader.error_position()).unwrap_or(usize::MAX);
                if let Some(rest) = input.get(at..) {
                    push_text(&mut stack, rest);
                }
                break;
            }
        }
    }
    close_to(&mut stack, 1);
    stack.pop().unwrap_or_default()
}

/// An unclosed `li`, `p`, `tr`, `td` or `th` ends where the next one of its kind starts (as
/// in HTML), unless an element that scopes it (its list, row or table) is open in between.
fn auto_close(stack: &mut Vec<Element>, name: &str) {
    let scopes: &[&str] = match name {
        "li" => &["ul", "ol"],
        "tr" => &["table", "thead", "tbody", "tfoot"],
        "td" | "th" => &["tr", "table"],
        "p" => &[
            "div",
            "li",
            "td",
            "th",
            "blockquote",
            "table",
            "ul",
            "ol",
            "ac:rich-text-body",
            "ac:layout-cell",
            "ac:task-body",
        ],
        _ => return,
    };
    let same = |e: &Element| {
        e.name == name
            || (name.starts_with('t') && (e.name == "td" || e.name == "th") && name != "tr")
    };
    for at in (1..stack.len()).rev() {
        let Some(open) = stack.get(at) else { break };
        if same(open) {
            close_to(stack, at);
            return;
        }
        if scopes.contains(&open.name.as_str()) {
            return;
        }
    }
}

/// Pops every element from `at` up, each into its parent.
fn close_to(stack: &mut Vec<Element>, at: usize) {
    while stack.len() > at.max(1) {
        if let Some(done) = stack.pop() {
            push_node(stack, Node::Element(done));
        }
    }
}

fn push_node(stack: &mut [Element], node: Node) {
    if let Some(top) = stack.last_mut() {
        top.children.push(node);
    }
}

fn push_text(stack: &mut [Element], text: &str) {
    if text.is_empty() {
        return;
    }
    if let Some(top) = stack.last_mut() {
        if let Some(Node::Text(previous)) = top.children.last_mut() {
            previous.push_str(text);
        } else {
            top.children.push(Node::Text(text.to_owned()));
        }
    }
}

fn lower(name: &str) -> String {
    name.to_ascii_lowercase()
}

fn element(start: &BytesStart<'_>) -> Element {
    let mut attributes = start.html_attributes();
    attributes.with_checks(false);
    let attrs = attributes
        .filter_map(Result::ok)
        .map(|a| {
            let value = a
                .normalized_value_with(quick_xml::XmlVersion::Implicit1_0, 4, |name| {
                    resolve_xml_entity(name).or_else(|| resolve_html5_entity(name))
                })
                .map(|v| v.into_owned())
                .unwrap_or_else(|_| a.value.clone().into_owned());
            (lower(a.key.as_ref()), value)
        })
        .collect();
    Element {
        name: lower(start.name().as_ref()),
        attrs,
        children: Vec::new(),
    }
}

/// The text an entity or character reference stands for; unknown ones stay as written.
fn entity(reference: &BytesRef<'_>) -> String {
    if let Ok(Some(c)) = reference.resolve_char_ref() {
        return c.to_string();
    }
    let name: &str = reference;
    resolve_xml_entity(name)
        .or_else(|| resolve_html5_entity(name))
        .map(str::to_owned)
        .unwrap_or_else(|| format!("&{name};"))
}

fn is_block(node: &Node) -> bool {
    let Node::Element(e) = node else {
        return false;
    };
    match e.name.as_str() {
        "p" | "div" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "ul" | "ol" | "li" | "table"
        | "pre" | "blockquote" | "hr" | "section" | "article" | "header" | "footer" | "aside"
        | "nav" | "main" | "figure" | "dl" | "center" | "ac:layout" | "ac:layout-section"
        | "ac:layout-cell" | "ac:task-list" | "ac:rich-text-body" | "ac:adf-extension"
        | "ac:adf-node" | "ac:adf-content" | "ac:adf-fallback" => true,
        "ac:structured-macro" | "ac:macro" => {
            !matches!(macro_name(e).as_str(), "status" | "jira" | "anchor")
                && (e.child("ac:rich-text-body").is_some()
                    || e.child("ac:plain-text-body").is_some()
                    || matches!(macro_name(e).as_str(), "code" | "noformat"))
        }
        _ => false,
    }
}

/// Children of a block container: runs of inline content become paragraphs.
fn block_list(nodes: &[Node]) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut pending: Vec<Inline> = Vec::new();
    for node in nodes {
        if is_block(node) {
            flush(&mut pending, &mut blocks);
            if let Node::Element(e) = node {
                blocks.extend(element_blocks(e));
            }
        } else {
            pending.extend(inline(node));
        }
    }
    flush(&mut pending, &mut blocks);
    blocks
}

fn flush(pending: &mut Vec<Inline>, blocks: &mut Vec<Block>) {
    let has_content = pending.iter().any(|i| match i {
        Inline::Text(t) => !t.trim().is_empty(),
        Inline::Break => false,
        _ => true,
    });
    if has_content {
        blocks.push(Block::Paragraph(std::mem::take(pending)));
    } else {
        pending.clear();
    }
}

fn element_blocks(e: &Element) -> Vec<Block> {
    match e.name.as_str() {
        "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => {
            let level = e.name[1..].parse().unwrap_or(1);
            vec![Block::Heading(level, inline_children(e))]
        }
        "ul" | "ol" => vec![Block::List {
            ordered: e.name == "ol",
            start: e
                .attr("start")
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(1),
            items: list_items(e),
        }],
        "table" => vec![Block::Table(table_rows(e))],
        "pre" => vec![Block::Code {
            language: String::new(),
            text: text_of(e),
        }],
        "blockquote" => vec![Block::Quote(block_list(&e.children))],
        "hr" => vec![Block::Rule],
        "ac:task-list" => vec![Block::List {
            ordered: false,
            start: 1,
            items: e
                .elements()
                .filter(|t| t.name == "ac:task")
                .map(|task| Item {
                    task: Some(
                        task.child("ac:task-status")
                            .is_some_and(|s| text_of(s).trim() == "complete"),
                    ),
                    blocks: task
                        .child("ac:task-body")
                        .map(|body| block_list(&body.children))
                        .unwrap_or_default(),
                })
                .collect(),
        }],
        "ac:adf-extension" => match e.child("ac:adf-fallback") {
            Some(fallback) => block_list(&fallback.children),
            None => block_list(&e.children),
        },
        "ac:structured-macro" | "ac:macro" => macro_blocks(e),
        // p, div, li, layouts, rich-text bodies and other containers.
        _ => block_list(&e.children),
    }
}

fn list_items(list: &Element) -> Vec<Item> {
    let mut items: Vec<Item> = Vec::new();
    for node in &list.children {
        match node {
            Node::Element(li) if li.name == "li" => items.push(Item {
                task: None,
                blocks: block_list(&li.children),
            }),
            Node::Text(t) if t.trim().is_empty() => {}
            // A list or text straight inside a list: it belongs to the item before it.
            other => {
                let blocks = block_list(std::slice::from_ref(other));
                match items.last_mut() {
                    Some(last) => last.blocks.extend(blocks),
                    None => items.push(Item { task: None, blocks }),
                }
            }
        }
    }
    items
}

fn table_rows(table: &Element) -> Vec<Vec<Cell>> {
    let mut rows = Vec::new();
    let mut sections = vec![table];
    let mut i = 0;
    // The table, then its thead/tbody/tfoot, in document order.
    while let Some(&section) = sections.get(i) {
        for child in section.elements() {
            match child.name.as_str() {
                "thead" | "tbody" | "tfoot" if i == 0 => sections.push(child),
                "tr" => rows.push(
                    child
                        .elements()
                        .filter(|c| c.name == "td" || c.name == "th")
                        .map(|c| Cell {
                            blocks: block_list(&c.children),
                        })
                        .collect(),
                ),
                _ => {}
            }
        }
        i += 1;
    }
    rows
}

fn macro_name(e: &Element) -> String {
    e.attr("ac:name").unwrap_or("").trim().to_ascii_lowercase()
}

fn parameter(e: &Element, name: &str) -> Option<String> {
    e.elements()
        .find(|p| {
            p.name == "ac:parameter"
                && p.attr("ac:name")
                    .is_some_and(|n| n.trim().eq_ignore_ascii_case(name))
        })
        .map(text_of)
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
}

fn strong_paragraph(text: String) -> Block {
    Block::Paragraph(vec![Inline::Strong(vec![Inline::Text(text)])])
}

fn macro_blocks(e: &Element) -> Vec<Block> {
    let name = macro_name(e);
    let rich = e.child("ac:rich-text-body");
    let plain = e.child("ac:plain-text-body").map(text_of);
    let title = parameter(e, "title");
    match name.as_str() {
        "code" | "noformat" => {
            let mut out = Vec::new();
            if let Some(title) = title {
                out.push(strong_paragraph(title));
            }
            out.push(Block::Code {
                language: parameter(e, "language").unwrap_or_default(),
                text: plain.unwrap_or_default(),
            });
            out
        }
        "info" | "note" | "warning" | "tip" | "panel" => {
            let label = title.or_else(|| {
                (name != "panel").then(|| {
                    let mut label = name.clone();
                    label[..1].make_ascii_uppercase();
                    label
                })
            });
            let mut inner: Vec<Block> = label.into_iter().map(strong_paragraph).collect();
            inner.extend(rich.map(|r| block_list(&r.children)).unwrap_or_default());
            vec![Block::Quote(inner)]
        }
        "expand" => {
            let mut out = vec![strong_paragraph(title.unwrap_or_else(|| "Details".into()))];
            out.extend(rich.map(|r| block_list(&r.children)).unwrap_or_default());
            out
        }
        _ => match (rich, plain) {
            (Some(rich), _) => block_list(&rich.children),
            (None, Some(plain)) => vec![Block::Code {
                language: String::new(),
                text: plain,
            }],
            (None, None) => vec![Block::Paragraph(macro_inline(e))],
        },
    }
}

fn macro_inline(e: &Element) -> Vec<Inline> {
    let name = macro_name(e);
    match name.as_str() {
        "status" => parameter(e, "title")
            .map(|t| vec![Inline::Code(t)])
            .unwrap_or_default(),
        "anchor" => Vec::new(),
        "jira" => match (parameter(e, "key"), parameter(e, "jqlquery")) {
            (Some(key), _) => vec![Inline::Text(key)],
            (None, Some(jql)) => vec![Inline::Emphasis(vec![Inline::Text(format!(
                "Jira query: {jql}"
            ))])],
            (None, None) => vec![Inline::Emphasis(vec![Inline::text("(jira macro)")])],
        },
        "view-file" | "viewpdf" | "viewdoc" | "viewppt" | "viewxls" => {
            let file = e
                .elements()
                .find(|p| p.name == "ac:parameter")
                .and_then(|p| p.child("ri:attachment"))
                .and_then(|a| a.attr("ri:filename"))
                .unwrap_or("file");
            vec![Inline::Emphasis(vec![Inline::Text(format!(
                "attachment: {file}"
            ))])]
        }
        _ => {
            if let Some(rich) = e.child("ac:rich-text-body") {
                return inline_children(rich);
            }
            if let Some(plain) = e.child("ac:plain-text-body") {
                return vec![Inline::Text(text_of(plain))];
            }
            let name = if name.is_empty() { "unnamed" } else { &name };
            vec![Inline::Emphasis(vec![Inline::Text(format!(
                "({name} macro)"
            ))])]
        }
    }
}

fn inline_children(e: &Element) -> Vec<Inline> {
    e.children.iter().flat_map(inline).collect()
}

fn inline(node: &Node) -> Vec<Inline> {
    let e = match node {
        Node::Text(text) => return vec![Inline::Text(text.clone())],
        Node::Element(e) => e,
    };
    match e.name.as_str() {
        "strong" | "b" => vec![Inline::Strong(inline_children(e))],
        "em" | "i" | "cite" | "dfn" | "var" => vec![Inline::Emphasis(inline_children(e))],
        "s" | "del" | "strike" => vec![Inline::Strike(inline_children(e))],
        "code" | "tt" | "kbd" | "samp" => vec![Inline::Code(text_of(e))],
        "br" => vec![Inline::Break],
        "a" => vec![Inline::Link {
            href: e.attr("href").unwrap_or("").to_owned(),
            content: inline_children(e),
        }],
        "img" => vec![Inline::Image {
            src: e.attr("src").unwrap_or("").to_owned(),
            alt: e.attr("alt").unwrap_or("").to_owned(),
        }],
        "time" => match e.attr("datetime") {
            Some(when) => vec![Inline::text(when)],
            None => inline_children(e),
        },
        "ac:link" => link(e),
        "ac:image" => image(e),
        "ac:emoticon" => {
            let shown = e
                .attr("ac:emoji-fallback")
                .map(str::to_owned)
                .or_else(|| e.attr("ac:name").map(|n| format!(":{n}:")))
                .unwrap_or_default();
            vec![Inline::Text(shown)]
        }
        "ac:structured-macro" | "ac:macro" => macro_inline(e),
        "ac:parameter" | "ac:placeholder" | "ac:task-id" | "ac:adf-attribute" | "colgroup"
        | "col" | "script" | "style" | "head" | "title" => Vec::new(),
        "ri:user" => vec![Inline::text("@user")],
        "ri:page" | "ri:blog-post" | "ri:attachment" | "ri:url" | "ri:space" | "ri:shortcut" => {
            Vec::new()
        }
        // Block elements where inline content belongs keep their text, one per line.
        _ if is_block(node) => {
            let mut out = Vec::new();
            for block in element_blocks(e) {
                out.push(Inline::Break);
                out.extend(block_text(block));
            }
            out.push(Inline::Break);
            out
        }
        // span, u, sub, sup, small, font, mark, abbr, label and anything unknown.
        _ => inline_children(e),
    }
}

/// The inline content of a block, for blocks nested inside inline elements.
fn block_text(block: Block) -> Vec<Inline> {
    match block {
        Block::Paragraph(content) | Block::Heading(_, content) => content,
        Block::Code { text, .. } => vec![Inline::Code(text)],
        Block::List { items, .. } => items
            .into_iter()
            .flat_map(|item| {
                let mut line = vec![Inline::Break];
                line.extend(item.blocks.into_iter().flat_map(block_text));
                line
            })
            .collect(),
        Block::Quote(blocks) => blocks.into_iter().flat_map(block_text).collect(),
        Block::Table(rows) => rows
            .into_iter()
            .flat_map(|row| {
                let mut line = vec![Inline::Break];
                for cell in row {
                    line.extend(cell.blocks.into_iter().flat_map(block_text));
                    line.push(Inline::text(" "));
                }
                line
            })
            .collect(),
        Block::Rule => Vec::new(),
    }
}

/// `ac:link`: a link to a page, user, attachment, space or URL, with an optional body.
fn link(e: &Element) -> Vec<Inline> {
    let body: Vec<Inline> = match (e.child("ac:link-body"), e.child("ac:plain-text-link-body")) {
        (Some(rich), _) => inline_children(rich),
        (None, Some(plain)) => vec![Inline::Text(text_of(plain))],
        (None, None) => Vec::new(),
    };
    let has_body = body
        .iter()
        .any(|i| !matches!(i, Inline::Text(t) if t.trim().is_empty()));
    let fallback = |text: String| {
        if has_body {
            body.clone()
        } else {
            vec![Inline::Text(text)]
        }
    };
    if let Some(url) = e.child("ri:url").and_then(|u| u.attr("ri:value")) {
        return vec![Inline::Link {
            href: url.to_owned(),
            content: if has_body { body } else { Vec::new() },
        }];
    }
    if let Some(page) = e.child("ri:page").or_else(|| e.child("ri:blog-post")) {
        return fallback(page.attr("ri:content-title").unwrap_or("page").to_owned());
    }
    if e.child("ri:user").is_some() {
        return fallback("@user".to_owned());
    }
    if let Some(file) = e.child("ri:attachment") {
        return fallback(file.attr("ri:filename").unwrap_or("attachment").to_owned());
    }
    if let Some(space) = e.child("ri:space") {
        return fallback(space.attr("ri:space-key").unwrap_or("space").to_owned());
    }
    if let Some(anchor) = e.attr("ac:anchor") {
        return fallback(anchor.to_owned());
    }
    body
}

/// `ac:image`: an external image keeps its URL; an attachment is named.
fn image(e: &Element) -> Vec<Inline> {
    let alt = e
        .attr("ac:alt")
        .or_else(|| e.attr("ac:title"))
        .unwrap_or("")
        .to_owned();
    if let Some(url) = e.child("ri:url").and_then(|u| u.attr("ri:value")) {
        return vec![Inline::Image {
            src: url.to_owned(),
            alt,
        }];
    }
    let name = e
        .child("ri:attachment")
        .and_then(|a| a.attr("ri:filename"))
        .map(str::to_owned)
        .unwrap_or(alt);
    let label = if name.is_empty() {
        "image".to_owned()
    } else {
        format!("image: {name}")
    };
    vec![Inline::Emphasis(vec![Inline::Text(label)])]
}

/// All the text of an element (CDATA included), verbatim; `br` counts as a newline.
fn text_of(e: &Element) -> String {
    let mut out = String::new();
    let mut stack: Vec<&Node> = e.children.iter().rev().collect();
    while let Some(node) = stack.pop() {
        match node {
            Node::Text(text) => out.push_str(text),
            Node::Element(child) if child.name == "br" => out.push('\n'),
            Node::Element(child) => stack.extend(child.children.iter().rev()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::render;

    fn md(input: &str) -> String {
        render(&blocks(input), None)
    }

    #[test]
    fn entities_and_cdata() {
        assert_eq!(
            md("<p>a&nbsp;b &amp; c &hellip; &#x41; &bogus;</p>"),
            "a b & c … A \\&bogus;\n"
        );
        assert_eq!(
            md(
                r#"<ac:structured-macro ac:name="code"><ac:plain-text-body><![CDATA[if a < b && c {}]]></ac:plain-text-body></ac:structured-macro>"#
            ),
            "```\nif a < b && c {}\n```\n"
        );
    }

    #[test]
    fn sloppy_markup_is_recovered() {
        assert_eq!(md("<p>one<br>two</p><p>three"), "one\\\ntwo\n\nthree\n");
        assert_eq!(md("<p>a</b>b</p>"), "ab\n");
        assert_eq!(md("<ul><li>x<li>y</ul>"), "- x\n- y\n");
        assert_eq!(
            md("<table><tr><th>a<th>b<tr><td>1<td>2</table>"),
            "| a | b |\n| --- | --- |\n| 1 | 2 |\n"
        );
    }

    #[test]
    fn a_syntax_error_keeps_the_rest_as_text() {
        let out = md("<p>fine</p><p a=\"unterminated>lost?");
        assert!(out.starts_with("fine\n"), "{out}");
        assert!(out.contains("lost?"), "{out}");
    }

    #[test]
    fn deep_nesting_is_flattened() {
        let input = format!("{}deep{}", "<div>".repeat(500), "</div>".repeat(500));
        assert_eq!(md(&input), "deep\n");
    }
}
