//! Writes the document model as CommonMark with GitHub tables, task items and strikethrough.
//!
//! Text is escaped so that nothing in a source document turns into markup it did not have:
//! emphasis characters, brackets, backticks, HTML, entities, and block markers at the start
//! of a line. Links and images keep only `http`, `https` and `mailto` targets.

use url::Url;

use super::model::{Block, Cell, Inline, Item};

/// Most columns a table is written with.
const MAX_COLUMNS: usize = 64;

/// How inline content ends up on lines.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A paragraph: hard breaks are `\` at the end of a line.
    Block,
    /// A table cell: one line, breaks are `<br>`.
    Cell,
    /// A heading: one line, breaks are spaces.
    Line,
}

/// The emphasis already open around some inline content.
#[derive(Clone, Copy, Default)]
struct Open {
    strong: bool,
    emphasis: bool,
    strike: bool,
    link: bool,
}

/// Renders blocks as Markdown; relative link targets resolve against `base` when given.
pub(crate) fn render(blocks: &[Block], base: Option<&Url>) -> String {
    let writer = Writer { base };
    let text = writer.blocks(blocks, false);
    let text = text.trim_start_matches('\n').trim_end();
    if text.is_empty() {
        String::new()
    } else {
        format!("{text}\n")
    }
}

struct Writer<'a> {
    base: Option<&'a Url>,
}

impl Writer<'_> {
    fn blocks(&self, blocks: &[Block], tight: bool) -> String {
        let mut out = String::new();
        let mut previous: Option<&Block> = None;
        for block in blocks {
            let text = self.block(block);
            if text.trim().is_empty() {
                continue;
            }
            if let Some(previous) = previous {
                out.push_str(separator(previous, block, tight));
            }
            out.push_str(&text);
            previous = Some(block);
        }
        out
    }

    fn block(&self, block: &Block) -> String {
        match block {
            Block::Paragraph(content) => self.paragraph(content, Mode::Block),
            Block::Heading(level, content) => {
                let text = self.paragraph(content, Mode::Line);
                if text.is_empty() {
                    return text;
                }
                let hashes = "#".repeat(usize::from((*level).clamp(1, 6)));
                // A trailing `#` would be read as the closing sequence of the heading.
                let text = match text.strip_suffix('#') {
                    Some(rest) => format!("{rest}\\#"),
                    None => text,
                };
                format!("{hashes} {text}")
            }
            Block::List {
                ordered,
                start,
                items,
            } => self.list(*ordered, *start, items),
            Block::Code { language, text } => code_block(language, text),
            Block::Quote(inner) => {
                let text = self.blocks(inner, false);
                text.lines()
                    .map(|line| {
                        if line.is_empty() {
                            ">".to_owned()
                        } else {
                            format!("> {line}")
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            }
            Block::Rule => "---".to_owned(),
            Block::Table(rows) => self.table(rows),
        }
    }

    fn list(&self, ordered: bool, start: u64, items: &[Item]) -> String {
        // CommonMark reads at most nine digits as a list number.
        let start = start.min(999_000_000);
        let mut lines = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let marker = if ordered {
                format!("{}. ", start.saturating_add(i as u64))
            } else {
                "- ".to_owned()
            };
            let mut body = self.blocks(&item.blocks, true);
            if let Some(done) = item.task {
                let check = if done { "[x]" } else { "[ ]" };
                body = match item.blocks.first() {
                    _ if body.is_empty() => check.to_owned(),
                    Some(Block::Paragraph(_)) => format!("{check} {body}"),
                    _ => format!("{check}\n{body}"),
                };
            }
            if body.is_empty() {
                lines.push(marker.trim_end().to_owned());
            } else {
                lines.push(format!("{marker}{}", indent(&body, marker.len())));
            }
        }
        lines.join("\n")
    }

    fn table(&self, rows: &[Vec<Cell>]) -> String {
        let columns = rows
            .iter()
            .map(Vec::len)
            .max()
            .unwrap_or(0)
            .min(MAX_COLUMNS);
        if columns == 0 {
            return String::new();
        }
        let mut lines = Vec::with_capacity(rows.len() + 1);
        for (i, row) in rows.iter().enumerate() {
            let cells: Vec<String> = (0..columns)
                .map(|c| row.get(c).map(|cell| self.cell(cell)).unwrap_or_default())
                .collect();
            lines.push(format!("| {} |", cells.join(" | ")));
            if i == 0 {
                lines.push(format!("|{}", " --- |".repeat(columns)));
            }
        }
        lines.join("\n")
    }

    fn cell(&self, cell: &Cell) -> String {
        self.compact(&cell.blocks)
            .replace('\n', " ")
            .replace('|', "\\|")
    }

    /// Blocks on one line, for a table cell.
    fn compact(&self, blocks: &[Block]) -> String {
        let mut parts = Vec::new();
        for block in blocks {
            let part = match block {
                Block::Paragraph(content) | Block::Heading(_, content) => {
                    self.paragraph(content, Mode::Cell)
                }
                Block::List {
                    ordered,
                    start,
                    items,
                } => items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        let marker = if *ordered {
                            format!("{}.", (*start).min(999_000_000).saturating_add(i as u64))
                        } else {
                            "-".to_owned()
                        };
                        let check = match item.task {
                            Some(true) => " [x]",
                            Some(false) => " [ ]",
                            None => "",
                        };
                        format!("{marker}{check} {}", self.compact(&item.blocks))
                    })
                    .collect::<Vec<_>>()
                    .join("<br>"),
                Block::Code { text, .. } => text
                    .lines()
                    .filter(|line| !line.trim().is_empty())
                    .map(code_span)
                    .collect::<Vec<_>>()
                    .join("<br>"),
                Block::Quote(inner) => self.compact(inner),
                Block::Rule => String::new(),
                Block::Table(rows) => rows
                    .iter()
                    .map(|row| {
                        row.iter()
                            .map(|cell| self.compact(&cell.blocks))
                            .collect::<Vec<_>>()
                            .join(" / ")
                    })
                    .collect::<Vec<_>>()
                    .join("<br>"),
            };
            if !part.trim().is_empty() {
                parts.push(part);
            }
        }
        parts.join("<br>")
    }

    /// Inline content laid out for `mode`; breaks come out of [`Self::inlines`] as `\n`.
    fn paragraph(&self, content: &[Inline], mode: Mode) -> String {
        let raw = self.inlines(content, Open::default());
        let lines = raw
            .split('\n')
            .map(str::trim)
            .filter(|line| !line.is_empty());
        match mode {
            Mode::Block => lines
                .map(escape_line_start)
                .collect::<Vec<_>>()
                .join("\\\n"),
            Mode::Cell => lines.collect::<Vec<_>>().join("<br>"),
            Mode::Line => lines.collect::<Vec<_>>().join(" "),
        }
    }

    fn inlines(&self, content: &[Inline], open: Open) -> String {
        let mut out = String::new();
        for inline in content {
            match inline {
                Inline::Text(text) => escape_text(text, &mut out),
                Inline::Code(code) => out.push_str(&code_span(code)),
                Inline::Strong(inner) => {
                    let text = self.inlines(
                        inner,
                        Open {
                            strong: true,
                            ..open
                        },
                    );
                    out.push_str(&wrap(&text, if open.strong { "" } else { "**" }));
                }
                Inline::Emphasis(inner) => {
                    let text = self.inlines(
                        inner,
                        Open {
                            emphasis: true,
                            ..open
                        },
                    );
                    out.push_str(&wrap(&text, if open.emphasis { "" } else { "_" }));
                }
                Inline::Strike(inner) => {
                    let text = self.inlines(
                        inner,
                        Open {
                            strike: true,
                            ..open
                        },
                    );
                    out.push_str(&wrap(&text, if open.strike { "" } else { "~~" }));
                }
                Inline::Link { href, content } => {
                    let text = self.inlines(content, Open { link: true, ..open });
                    match self.safe_url(href).filter(|_| !open.link) {
                        Some(url) => {
                            // A link cannot span a hard break: keep its text on one line.
                            let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
                            if text.is_empty() {
                                out.push_str(&format!("<{url}>"));
                            } else {
                                out.push_str(&format!("[{text}]({url})"));
                            }
                        }
                        None => out.push_str(&text),
                    }
                }
                Inline::Image { src, alt } => {
                    let mut alt_text = String::new();
                    escape_text(alt, &mut alt_text);
                    match self.safe_url(src).filter(|_| !open.link) {
                        Some(url) => out.push_str(&format!("![{}]({url})", alt_text.trim())),
                        None => out.push_str(&alt_text),
                    }
                }
                Inline::Break => out.push('\n'),
            }
        }
        out
    }

    /// An absolute `http`, `https` or `mailto` URL, ready for a link destination.
    fn safe_url(&self, raw: &str) -> Option<String> {
        let raw = raw.trim();
        if raw.is_empty() {
            return None;
        }
        let url = match Url::parse(raw) {
            Ok(url) => url,
            Err(url::ParseError::RelativeUrlWithoutBase) => self.base?.join(raw).ok()?,
            Err(_) => return None,
        };
        if !matches!(url.scheme(), "http" | "https" | "mailto") {
            return None;
        }
        Some(url.as_str().replace('(', "%28").replace(')', "%29"))
    }
}

/// What goes between two blocks: a blank line, a single newline between a paragraph and the
/// list that continues it inside a list item, and an HTML comment between two lists of the
/// same kind (which Markdown would otherwise merge).
fn separator(previous: &Block, next: &Block, tight: bool) -> &'static str {
    match (previous, next) {
        (
            Block::List {
                ordered: a,
                start: _,
                items: _,
            },
            Block::List { ordered: b, .. },
        ) if a == b => "\n\n<!-- -->\n\n",
        (Block::Paragraph(_), Block::List { ordered, start, .. })
            if tight && (!ordered || *start == 1) =>
        {
            "\n"
        }
        _ => "\n\n",
    }
}

/// Indents every line but the first by `width` spaces (blank lines stay empty).
fn indent(text: &str, width: usize) -> String {
    let pad = " ".repeat(width);
    let mut out = String::with_capacity(text.len() + 16);
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
            if !line.is_empty() {
                out.push_str(&pad);
            }
        }
        out.push_str(line);
    }
    out
}

/// Wraps `text` in `delimiter`, keeping surrounding white space (and breaks) outside.
fn wrap(text: &str, delimiter: &str) -> String {
    let trimmed = text.trim();
    if trimmed.is_empty() || delimiter.is_empty() {
        return text.to_owned();
    }
    let lead = &text[..text.len() - text.trim_start().len()];
    let trail = &text[text.trim_end().len()..];
    // Emphasis cannot span a hard break either: close and reopen around it.
    let inner = trimmed
        .split('\n')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| format!("{delimiter}{part}{delimiter}"))
        .collect::<Vec<_>>()
        .join("\n");
    format!("{lead}{inner}{trail}")
}

/// Escapes text and folds runs of white space into one space; control characters are dropped.
fn escape_text(text: &str, out: &mut String) {
    let chars: Vec<char> = text.chars().collect();
    let mut in_space = false;
    for (i, &c) in chars.iter().enumerate() {
        if c.is_whitespace() {
            if !in_space {
                out.push(' ');
            }
            in_space = true;
            continue;
        }
        in_space = false;
        let previous = i.checked_sub(1).and_then(|p| chars.get(p)).copied();
        let next = chars.get(i + 1).copied();
        match c {
            '\\' | '`' | '*' | '[' | ']' => {
                out.push('\\');
                out.push(c);
            }
            // Only what could open an HTML tag, a comment or an autolink.
            '<' => {
                if next.is_some_and(|n| n.is_alphabetic() || matches!(n, '/' | '!' | '?')) {
                    out.push('\\');
                }
                out.push('<');
            }
            '_' => {
                let intraword = previous.is_some_and(char::is_alphanumeric)
                    && next.is_some_and(char::is_alphanumeric);
                if !intraword {
                    out.push('\\');
                }
                out.push('_');
            }
            '~' => {
                if previous == Some('~') || next == Some('~') {
                    out.push('\\');
                }
                out.push('~');
            }
            '&' => {
                if looks_like_entity(&chars[i + 1..]) {
                    out.push('\\');
                }
                out.push('&');
            }
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
}

/// Whether the characters after an `&` would be read as an entity (`amp;`, `#35;`, `#x1F;`).
fn looks_like_entity(rest: &[char]) -> bool {
    let name: Vec<char> = rest
        .iter()
        .copied()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '#')
        .take(40)
        .collect();
    !name.is_empty() && rest.get(name.len()) == Some(&';')
}

/// Escapes what would start a heading, quote, list, table or setext underline at a line start.
fn escape_line_start(line: &str) -> String {
    let Some(first) = line.chars().next() else {
        return String::new();
    };
    if matches!(first, '#' | '>' | '-' | '+' | '=' | '|') {
        return format!("\\{line}");
    }
    let digits = line.chars().take_while(char::is_ascii_digit).count();
    if (1..=9).contains(&digits) && matches!(line[digits..].chars().next(), Some('.' | ')')) {
        return format!("{}\\{}", &line[..digits], &line[digits..]);
    }
    line.to_owned()
}

/// Inline code with a fence longer than any run of backticks inside.
fn code_span(code: &str) -> String {
    let code: String = code
        .chars()
        .map(|c| if c.is_whitespace() { ' ' } else { c })
        .filter(|c| !c.is_control())
        .collect();
    if code.trim().is_empty() {
        return String::new();
    }
    let fence = "`".repeat(longest_run(&code, '`') + 1);
    let pad = code.starts_with('`') || code.ends_with('`') || code.starts_with(' ');
    if pad {
        format!("{fence} {code} {fence}")
    } else {
        format!("{fence}{code}{fence}")
    }
}

/// A fenced code block; the fence outgrows any run of backticks in the code.
fn code_block(language: &str, text: &str) -> String {
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let text: String = text
        .chars()
        .filter(|c| !c.is_control() || matches!(c, '\n' | '\t'))
        .collect();
    let text = text.trim_end_matches('\n');
    let text = text.trim_start_matches('\n');
    let fence = "`".repeat((longest_run(text, '`') + 1).max(3));
    let language: String = language
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '#' | '.' | '_'))
        .take(32)
        .collect();
    if text.is_empty() {
        format!("{fence}{language}\n{fence}")
    } else {
        format!("{fence}{language}\n{text}\n{fence}")
    }
}

fn longest_run(text: &str, wanted: char) -> usize {
    let mut longest = 0;
    let mut run = 0;
    for c in text.chars() {
        if c == wanted {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    longest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn para(inlines: Vec<Inline>) -> String {
        render(&[Block::Paragraph(inlines)], None)
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            para(vec![Inline::text(
                "a *b* [c](d) <e> < 1 snake_case _x_ ~~y~~ &amp; \\"
            )]),
            "a \\*b\\* \\[c\\](d) \\<e> < 1 snake_case \\_x\\_ \\~\\~y\\~\\~ \\&amp; \\\\\n"
        );
    }

    #[test]
    fn line_starts_are_escaped() {
        assert_eq!(
            para(vec![
                Inline::text("# not a heading"),
                Inline::Break,
                Inline::text("1. not a list"),
                Inline::Break,
                Inline::text("- nor this"),
            ]),
            "\\# not a heading\\\n1\\. not a list\\\n\\- nor this\n"
        );
    }

    #[test]
    fn emphasis_keeps_spaces_outside() {
        assert_eq!(
            para(vec![
                Inline::text("a"),
                Inline::Strong(vec![Inline::text(" b ")]),
                Inline::text("c"),
            ]),
            "a **b** c\n"
        );
    }

    #[test]
    fn unsafe_links_lose_their_target() {
        assert_eq!(
            para(vec![Inline::Link {
                href: "javascript:alert(1)".into(),
                content: vec![Inline::text("x")],
            }]),
            "x\n"
        );
        assert_eq!(
            para(vec![Inline::Link {
                href: "https://e.com/a(b)".into(),
                content: vec![],
            }]),
            "<https://e.com/a%28b%29>\n"
        );
    }

    #[test]
    fn code_fences_outgrow_the_content() {
        assert_eq!(code_span("a`b"), "``a`b``");
        assert_eq!(code_block("rust", "```\nx"), "````rust\n```\nx\n````");
    }

    #[test]
    fn tables_pad_rows_and_escape_pipes() {
        let cell = |t: &str| Cell {
            blocks: vec![Block::Paragraph(vec![Inline::text(t)])],
        };
        let out = render(
            &[Block::Table(vec![
                vec![cell("a"), cell("b")],
                vec![cell("1 | 2")],
            ])],
            None,
        );
        assert_eq!(out, "| a | b |\n| --- | --- |\n| 1 \\| 2 |  |\n");
    }
}
