//! Jira wiki markup (text formatting notation, as Jira Data Center's REST v2 serves issue
//! descriptions and comments) to the document model.
//!
//! Every string is accepted. Line ends may be CRLF, CR or LF. Formatting is read per line, as
//! Jira does, and only where its delimiters sit at word boundaries (`2 * 3` and `well-known`
//! stay text). `{code}` and `{noformat}` keep their body verbatim (an unclosed one runs to the
//! end); `{quote}`, `{panel}` and the callout macros become quotes (an unclosed one loses its
//! tag); other known macros (`{color}`, `{anchor}`) vanish and unknown ones stay as text.
//! Nesting is bounded: lists deeper than [`MAX_LIST_DEPTH`] levels are flattened, and every
//! search for a closing delimiter is a lookup, so the work stays close to linear.

use std::collections::HashMap;

use url::Url;

use super::model::{Block, Cell, Inline, Item};

/// Deepest list nesting kept; deeper items join the deepest level.
const MAX_LIST_DEPTH: usize = 16;

/// Deepest nesting of quotes and panels kept; deeper ones keep their text as a paragraph.
const MAX_BLOCK_DEPTH: usize = 16;

/// Deepest nesting of inline formatting kept; deeper delimiters stay text.
const MAX_INLINE_DEPTH: usize = 16;

/// Longest bare URL recognised; a longer one is cut there.
const MAX_URL_CHARS: usize = 4096;

/// Macros whose body is kept verbatim as a code block.
const CODE_MACROS: &[&str] = &["code", "noformat"];

/// Macros whose body becomes a block quote.
const BOX_MACROS: &[&str] = &["quote", "panel", "info", "note", "tip", "warning"];

/// Macros whose tags are dropped where they appear inside a line (their text stays).
const INLINE_MACROS: &[&str] = &[
    "color", "anchor", "quote", "panel", "info", "note", "tip", "warning",
];

/// The blocks of a wiki-markup text.
pub(crate) fn blocks(text: &str) -> Vec<Block> {
    let doc = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut parser = Parser {
        lower: doc.to_ascii_lowercase(),
        doc: &doc,
        closes: HashMap::new(),
        newline: (usize::MAX, None),
    };
    parser.blocks(0, doc.len(), 0)
}

/// A macro tag such as `{code:title=X|language=sql}`.
struct Tag<'a> {
    /// The name, lower case.
    name: String,
    /// What follows the colon, if anything.
    params: &'a str,
    /// The tag's length in bytes, braces included.
    len: usize,
}

impl Tag<'_> {
    /// A named parameter (`title=…`), trimmed, when given and not empty.
    fn param(&self, key: &str) -> Option<String> {
        self.params
            .split('|')
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(key))
            .map(|(_, v)| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    /// The code language: `language=…` or the first parameter without a `=`.
    fn language(&self) -> String {
        self.param("language")
            .or_else(|| {
                self.params
                    .split('|')
                    .map(str::trim)
                    .find(|p| !p.is_empty() && !p.contains('='))
                    .map(str::to_owned)
            })
            .unwrap_or_default()
    }
}

/// A macro tag at the start of `s`.
fn macro_tag(s: &str) -> Option<Tag<'_>> {
    let rest = s.strip_prefix('{')?;
    let name_len = rest
        .bytes()
        .take(33)
        .take_while(u8::is_ascii_alphabetic)
        .count();
    if name_len == 0 || name_len > 32 {
        return None;
    }
    let after = &rest[name_len..];
    let (params, len) = if after.starts_with('}') {
        ("", 1 + name_len + 1)
    } else if let Some(params) = after.strip_prefix(':') {
        // Parameters longer than this are not a tag, which keeps the search short.
        let end = params
            .bytes()
            .take(1024)
            .position(|b| b == b'}' || b == b'\n')?;
        if !params[end..].starts_with('}') {
            return None;
        }
        (&params[..end], 1 + name_len + 1 + end + 1)
    } else {
        return None;
    };
    Some(Tag {
        name: rest[..name_len].to_ascii_lowercase(),
        params,
        len,
    })
}

struct Parser<'a> {
    doc: &'a str,
    /// The document in ASCII lower case (same byte offsets), for finding closing tags.
    lower: String,
    /// Per macro name: the offset a search for its closing tag started at, and what it found.
    closes: HashMap<String, (usize, Option<usize>)>,
    /// The offset the last search for a line end started at, and what it found.
    newline: (usize, Option<usize>),
}

impl Parser<'_> {
    /// Where the closing tag `{name}` starts, searching from `from`, if it ends by `end`.
    ///
    /// Searches only move forward through the document, so one search answers every later
    /// question up to the tag it found: the work per macro name is linear.
    fn find_close(&mut self, name: &str, from: usize, end: usize) -> Option<usize> {
        let pattern = format!("{{{name}}}");
        let cached = self
            .closes
            .get(name)
            .filter(|(start, found)| from >= *start && found.is_none_or(|f| from <= f))
            .map(|(_, found)| *found);
        let found = match cached {
            Some(found) => found,
            None => {
                let found = if CODE_MACROS.contains(&name) {
                    self.find(&pattern, from)
                } else {
                    self.find_outside_code(&pattern, from)
                };
                self.closes.insert(name.to_owned(), (from, found));
                found
            }
        };
        found.filter(|at| at + pattern.len() <= end)
    }

    /// Where `pattern` (lower case) next starts at or after `from`.
    fn find(&self, pattern: &str, from: usize) -> Option<usize> {
        self.lower
            .get(from..)
            .and_then(|rest| rest.find(pattern))
            .map(|at| from + at)
    }

    /// Where `pattern` next starts at or after `from`, outside `{code}` and `{noformat}`
    /// blocks (a quote's closing tag inside a code block in the quote does not close it).
    fn find_outside_code(&self, pattern: &str, from: usize) -> Option<usize> {
        let mut at = from;
        let mut found = self.find(pattern, at)?;
        loop {
            let mut code = None;
            let mut brace = at;
            while let Some(next) = self.find("{", brace).filter(|&b| b < found) {
                if let Some(tag) = macro_tag(&self.doc[next..])
                    .filter(|tag| CODE_MACROS.contains(&tag.name.as_str()))
                {
                    code = Some((next + tag.len, tag.name));
                    break;
                }
                brace = next + 1;
            }
            let Some((body, name)) = code else {
                return Some(found);
            };
            // Skip the code block; an unclosed one runs to the end, closing nothing.
            at = self.find(&format!("{{{name}}}"), body)? + name.len() + 2;
            if found < at {
                found = self.find(pattern, at)?;
            }
        }
    }

    /// Where the line at `from` ends: the next `\n`, or `end`. Cached like [`Self::find_close`],
    /// so that a long line holding many macro tags is not searched again for each.
    fn line_end(&mut self, from: usize, end: usize) -> usize {
        let (start, found) = self.newline;
        let found = if from >= start && found.is_none_or(|f| from <= f) {
            found
        } else {
            let found = self.doc[from..].find('\n').map(|at| from + at);
            self.newline = (from, found);
            found
        };
        found.map_or(end, |at| at.min(end))
    }

    /// The blocks of the document between byte offsets `start` and `end`.
    fn blocks(&mut self, start: usize, end: usize, depth: usize) -> Vec<Block> {
        let doc = self.doc;
        let mut out = Vec::new();
        let mut paragraph: Vec<Inline> = Vec::new();
        let mut pos = start;
        while pos < end {
            let line_end = self.line_end(pos, end);
            let next = (line_end + 1).min(end);
            let line = &doc[pos..line_end];
            let trimmed = line.trim_start();
            let at = line_end - trimmed.len();
            if trimmed.trim().is_empty() {
                flush(&mut paragraph, &mut out);
                pos = next;
                continue;
            }
            if let Some(tag) = macro_tag(trimmed) {
                let code = CODE_MACROS.contains(&tag.name.as_str());
                if code || BOX_MACROS.contains(&tag.name.as_str()) {
                    let body = at + tag.len;
                    let close = self.find_close(&tag.name, body, end);
                    if close.is_none() && !code {
                        // An unclosed quote or panel: drop its tag, keep what follows.
                        pos = body;
                        continue;
                    }
                    flush(&mut paragraph, &mut out);
                    let body_end = close.unwrap_or(end);
                    pos = close.map_or(end, |c| c + tag.name.len() + 2);
                    if code {
                        if let Some(title) = tag.param("title") {
                            out.push(strong_paragraph(title));
                        }
                        out.push(Block::Code {
                            language: tag.language(),
                            text: doc[body..body_end].to_owned(),
                        });
                    } else {
                        out.push(self.boxed(&tag, body, body_end, depth));
                    }
                    continue;
                }
            }
            if let Some((level, rest)) = heading(trimmed) {
                flush(&mut paragraph, &mut out);
                out.push(Block::Heading(level, inline(rest)));
                pos = next;
                continue;
            }
            if trimmed.trim_end().len() >= 4 && trimmed.trim_end().bytes().all(|b| b == b'-') {
                flush(&mut paragraph, &mut out);
                out.push(Block::Rule);
                pos = next;
                continue;
            }
            if let Some(rest) = strip_prefix_ignore_case(trimmed, "bq.")
                && (rest.is_empty() || rest.starts_with(char::is_whitespace))
            {
                flush(&mut paragraph, &mut out);
                out.push(Block::Quote(vec![Block::Paragraph(inline(rest))]));
                pos = next;
                continue;
            }
            if list_marker(trimmed).is_some() {
                flush(&mut paragraph, &mut out);
                let mut entries = Vec::new();
                while pos < end {
                    let line_end = self.line_end(pos, end);
                    let Some((markers, rest)) = list_marker(doc[pos..line_end].trim_start()) else {
                        break;
                    };
                    entries.push((markers, inline(rest)));
                    pos = (line_end + 1).min(end);
                }
                out.extend(build_lists(&entries, 0));
                continue;
            }
            if trimmed.starts_with('|') {
                flush(&mut paragraph, &mut out);
                let mut rows = Vec::new();
                while pos < end {
                    let line_end = self.line_end(pos, end);
                    let row = doc[pos..line_end].trim();
                    if !row.starts_with('|') {
                        break;
                    }
                    let first = rows.is_empty();
                    let cells = table_row(row, first);
                    if !cells.is_empty() {
                        rows.push(cells);
                    }
                    pos = (line_end + 1).min(end);
                }
                if !rows.is_empty() {
                    out.push(Block::Table(rows));
                }
                continue;
            }
            // A line of a paragraph: Jira keeps the line ends within a paragraph as breaks.
            if !paragraph.is_empty() {
                paragraph.push(Inline::Break);
            }
            let after_first = at + trimmed.chars().next().map_or(1, char::len_utf8);
            if let Some(tag_at) = self.code_tag_within(after_first, line_end, end) {
                // A code block opening after some text: the text, then the block.
                paragraph.extend(inline(&doc[pos..tag_at]));
                pos = tag_at;
                continue;
            }
            paragraph.extend(inline(line));
            pos = next;
        }
        flush(&mut paragraph, &mut out);
        out
    }

    /// Where a `{code}` or `{noformat}` tag that is not closed on its own line starts between
    /// `from` and `line_end`, if one does (one closed on its line is inline code).
    fn code_tag_within(&mut self, from: usize, line_end: usize, end: usize) -> Option<usize> {
        let mut from = from;
        while from < line_end {
            let brace = from + self.lower.get(from..line_end)?.find('{')?;
            let tag = macro_tag(&self.doc[brace..line_end])
                .filter(|tag| CODE_MACROS.contains(&tag.name.as_str()));
            let Some(tag) = tag else {
                from = brace + 1;
                continue;
            };
            match self.find_close(&tag.name, brace + tag.len, end) {
                Some(close) if close < line_end => from = close + tag.name.len() + 2,
                _ => return Some(brace),
            }
        }
        None
    }

    /// A quote, panel or callout: a quote headed by its title (or, for callouts, its kind).
    fn boxed(&mut self, tag: &Tag<'_>, body: usize, body_end: usize, depth: usize) -> Block {
        let label = tag.param("title").or_else(|| {
            matches!(tag.name.as_str(), "info" | "note" | "tip" | "warning").then(|| {
                let mut label = tag.name.clone();
                label[..1].make_ascii_uppercase();
                label
            })
        });
        let mut inner: Vec<Block> = label.into_iter().map(strong_paragraph).collect();
        if depth < MAX_BLOCK_DEPTH {
            inner.extend(self.blocks(body, body_end, depth + 1));
        } else {
            inner.push(Block::Paragraph(vec![Inline::text(
                &self.doc[body..body_end],
            )]));
        }
        Block::Quote(inner)
    }
}

fn flush(paragraph: &mut Vec<Inline>, out: &mut Vec<Block>) {
    let content = std::mem::take(paragraph);
    let has_content = content.iter().any(|i| match i {
        Inline::Text(t) => !t.trim().is_empty(),
        Inline::Break => false,
        _ => true,
    });
    if has_content {
        out.push(Block::Paragraph(content));
    }
}

fn strong_paragraph(text: String) -> Block {
    Block::Paragraph(vec![Inline::Strong(vec![Inline::Text(text)])])
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// `h1. Title` … `h6. Title`: the level and the title.
fn heading(line: &str) -> Option<(u8, &str)> {
    let bytes = line.as_bytes();
    if bytes.len() < 3 || !matches!(bytes[0], b'h' | b'H') || bytes[2] != b'.' {
        return None;
    }
    let level = match bytes[1] {
        b @ b'1'..=b'6' => b - b'0',
        _ => return None,
    };
    let rest = &line[3..];
    (rest.is_empty() || rest.starts_with(char::is_whitespace)).then_some((level, rest))
}

/// A list item's markers (`true` for numbered levels, at most [`MAX_LIST_DEPTH`]) and text:
/// a run of `*` and `#`, or a single `-`, then white space.
fn list_marker(line: &str) -> Option<(Vec<bool>, &str)> {
    let marks = line
        .bytes()
        .take_while(|b| matches!(b, b'*' | b'#' | b'-'))
        .count();
    let (markers, rest) = line.split_at(marks);
    if marks == 0 || (markers.contains('-') && markers != "-") {
        return None;
    }
    if !rest.starts_with([' ', '\t']) {
        return None;
    }
    let levels = markers
        .bytes()
        .take(MAX_LIST_DEPTH)
        .map(|b| b == b'#')
        .collect();
    Some((levels, rest))
}

/// Nested lists from list lines, every one of which has more than `level` markers.
fn build_lists(entries: &[(Vec<bool>, Vec<Inline>)], level: usize) -> Vec<Block> {
    let mut out = Vec::new();
    let mut current: Option<(bool, Vec<Item>)> = None;
    let mut i = 0;
    while let Some((markers, content)) = entries.get(i) {
        let ordered = markers.get(level).copied().unwrap_or(false);
        if markers.len() <= level + 1 {
            if current.as_ref().is_some_and(|(o, _)| *o != ordered)
                && let Some((o, items)) = current.take()
            {
                out.push(list(o, items));
            }
            let items = &mut current.get_or_insert_with(|| (ordered, Vec::new())).1;
            let mut blocks = Vec::new();
            flush(&mut content.clone(), &mut blocks);
            items.push(Item { task: None, blocks });
            i += 1;
        } else {
            let deeper = entries[i..]
                .iter()
                .take_while(|(m, _)| m.len() > level + 1)
                .count();
            let items = &mut current.get_or_insert_with(|| (ordered, Vec::new())).1;
            if items.is_empty() {
                items.push(Item::default());
            }
            if let Some(last) = items.last_mut() {
                last.blocks
                    .extend(build_lists(&entries[i..i + deeper], level + 1));
            }
            i += deeper;
        }
    }
    if let Some((ordered, items)) = current {
        out.push(list(ordered, items));
    }
    out
}

fn list(ordered: bool, items: Vec<Item>) -> Block {
    Block::List {
        ordered,
        start: 1,
        items,
    }
}

/// The cells of a table row: `||` starts a header cell, `|` a cell; a `|` inside a link, an
/// image or monospace text does not split. Header cells after the first row are bold.
fn table_row(row: &str, first: bool) -> Vec<Cell> {
    let line = Line::new(row);
    let chars = &line.chars;
    let n = chars.len();
    let mut cells = Vec::new();
    let mut start: Option<(usize, bool)> = None;
    let mut i = 0;
    while i < n {
        let c = chars[i];
        if !line.plain[i] {
            i += 1;
            continue;
        }
        let skip_to = match c {
            '[' => Some(line.next_bracket[i + 1]).filter(|&j| j < n),
            '{' if chars.get(i + 1) == Some(&'{') => Some(line.next_double_brace[i + 2])
                .filter(|&j| j < n)
                .map(|j| j + 1),
            '!' => line.image_end(i, n),
            _ => None,
        };
        if let Some(j) = skip_to {
            i = j + 1;
            continue;
        }
        if c == '|' {
            if let Some((from, header)) = start {
                cells.push(line.cell(from, i, header && !first));
            }
            let header = chars.get(i + 1) == Some(&'|');
            i += if header { 2 } else { 1 };
            start = Some((i, header));
            continue;
        }
        i += 1;
    }
    if let Some((from, header)) = start
        && chars[from.min(n)..].iter().any(|c| !c.is_whitespace())
    {
        cells.push(line.cell(from, n, header && !first));
    }
    cells
}

/// What an inline delimiter becomes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Style {
    /// Bold.
    Strong,
    /// Italic (`_…_` and `??…??`).
    Emphasis,
    /// Struck through.
    Strike,
    /// Underline, superscript and subscript: the text is kept, the styling is not.
    Plain,
}

/// The inline delimiters: the text, what it becomes, and whether it may open inside a word.
const DELIMITERS: [(&str, Style, bool); 7] = [
    ("*", Style::Strong, false),
    ("_", Style::Emphasis, false),
    ("??", Style::Emphasis, false),
    ("-", Style::Strike, false),
    ("+", Style::Plain, false),
    ("^", Style::Plain, true),
    ("~", Style::Plain, true),
];

/// The inline content of one line of text.
fn inline(text: &str) -> Vec<Inline> {
    let line = Line::new(text);
    line.parse(0, line.chars.len(), 0)
}

/// One line of text, with lookup tables that make every search for a closing delimiter cheap.
struct Line {
    chars: Vec<char>,
    /// Whether a character is markup, not taken by a backslash escape.
    plain: Vec<bool>,
    /// The next unescaped `]` at or after each offset (the length when none).
    next_bracket: Vec<usize>,
    /// The next unescaped `!` at or after each offset.
    next_bang: Vec<usize>,
    /// The next unescaped `}` at or after each offset.
    next_brace: Vec<usize>,
    /// The next unescaped `}}` at or after each offset.
    next_double_brace: Vec<usize>,
    /// Per delimiter of [`DELIMITERS`], the offsets where it can close, in order.
    closers: Vec<Vec<usize>>,
    /// The offsets of `{code}` and `{noformat}` tags, in order.
    code_closers: [Vec<usize>; 2],
}

impl Line {
    fn new(text: &str) -> Self {
        let chars: Vec<char> = text.chars().collect();
        let n = chars.len();
        let mut plain = vec![true; n];
        let mut i = 0;
        while i < n {
            if chars[i] == '\\' && chars.get(i + 1).is_some_and(char::is_ascii_punctuation) {
                plain[i] = false;
                plain[i + 1] = false;
                i += 2;
            } else {
                i += 1;
            }
        }
        let next_of = |wanted: char| {
            let mut next = vec![n; n + 1];
            for i in (0..n).rev() {
                next[i] = if chars[i] == wanted && plain[i] {
                    i
                } else {
                    next[i + 1]
                };
            }
            next
        };
        let mut next_double_brace = vec![n; n + 1];
        for i in (0..n.saturating_sub(1)).rev() {
            let here = chars[i] == '}' && chars[i + 1] == '}' && plain[i] && plain[i + 1];
            next_double_brace[i] = if here { i } else { next_double_brace[i + 1] };
        }
        let mut line = Self {
            next_double_brace,
            next_bracket: next_of(']'),
            next_bang: next_of('!'),
            next_brace: next_of('}'),
            closers: Vec::new(),
            code_closers: [Vec::new(), Vec::new()],
            chars,
            plain,
        };
        line.closers = (0..DELIMITERS.len())
            .map(|d| (0..n).filter(|&j| line.closes(j, d)).collect())
            .collect();
        line.code_closers = [
            (0..n).filter(|&j| line.is_tag(j, "{code}")).collect(),
            (0..n).filter(|&j| line.is_tag(j, "{noformat}")).collect(),
        ];
        line
    }

    /// Whether the unescaped text at `at` is `text` (ASCII, any case).
    fn is_tag(&self, at: usize, text: &str) -> bool {
        text.chars().enumerate().all(|(k, t)| {
            self.chars
                .get(at + k)
                .is_some_and(|c| c.eq_ignore_ascii_case(&t))
                && self.plain.get(at + k) == Some(&true)
        })
    }

    /// Whether delimiter `d` of [`DELIMITERS`] stands unescaped at `at`.
    fn is_delimiter(&self, at: usize, d: usize) -> bool {
        let (text, _, _) = DELIMITERS[d];
        self.is_tag(at, text)
    }

    /// Whether delimiter `d` can open at `at`: not inside a word (unless it may be), and
    /// followed by something other than white space or itself.
    fn opens(&self, at: usize, d: usize) -> bool {
        let (text, _, intraword) = DELIMITERS[d];
        let first = text.chars().next();
        let before = at.checked_sub(1).and_then(|p| self.chars.get(p));
        let after = self.chars.get(at + text.chars().count());
        self.is_delimiter(at, d)
            && (intraword || !before.is_some_and(|c| c.is_alphanumeric()))
            && after.is_some_and(|c| !c.is_whitespace() && Some(*c) != first)
    }

    /// Whether delimiter `d` can close at `at`: after something other than white space or
    /// itself, and not followed by a letter or digit (unless it may be).
    fn closes(&self, at: usize, d: usize) -> bool {
        let (text, _, intraword) = DELIMITERS[d];
        let first = text.chars().next();
        let before = at.checked_sub(1).and_then(|p| self.chars.get(p));
        let after = self.chars.get(at + text.chars().count());
        self.is_delimiter(at, d)
            && before.is_some_and(|c| !c.is_whitespace() && Some(*c) != first)
            && (intraword || !after.is_some_and(|c| c.is_alphanumeric()))
    }

    /// The first offset in `sorted` after `after` that ends (with `len` characters) by `end`.
    fn first_after(sorted: &[usize], after: usize, len: usize, end: usize) -> Option<usize> {
        let k = sorted.partition_point(|&j| j <= after);
        sorted.get(k).copied().filter(|&j| j + len <= end)
    }

    /// Where the image that opens with the `!` at `at` closes, if it is one: `!src!` or
    /// `!src|params!`, the source one word that starts with a letter, digit or `/` and holds
    /// a `.` or a scheme.
    fn image_end(&self, at: usize, end: usize) -> Option<usize> {
        let chars = &self.chars;
        let before = at.checked_sub(1).and_then(|p| chars.get(p));
        if before.is_some_and(|c| c.is_alphanumeric()) {
            return None;
        }
        let first = chars.get(at + 1)?;
        if !(first.is_alphanumeric() || *first == '/') {
            return None;
        }
        let close = self.next_bang[at + 1];
        if close >= end {
            return None;
        }
        let inner: String = chars[at + 1..close].iter().collect();
        let src = inner.split('|').next().unwrap_or("");
        let plausible = src.contains('.') || Url::parse(src).is_ok();
        (!src.contains(char::is_whitespace) && plausible).then_some(close)
    }

    /// The text between two offsets, with escapes kept.
    fn raw(&self, from: usize, to: usize) -> String {
        self.chars[from.min(to)..to].iter().collect()
    }

    /// A table cell from offsets `from` to `to`.
    fn cell(&self, from: usize, to: usize, bold: bool) -> Cell {
        let line = Line::new(&self.raw(from, to));
        let mut content = line.parse(0, line.chars.len(), 0);
        if bold {
            content = vec![Inline::Strong(content)];
        }
        let mut blocks = Vec::new();
        flush(&mut content, &mut blocks);
        Cell { blocks }
    }

    /// The inline content between offsets `start` and `end`.
    fn parse(&self, start: usize, end: usize, depth: usize) -> Vec<Inline> {
        let chars = &self.chars;
        let mut out = Vec::new();
        let mut text = String::new();
        let mut i = start;
        while i < end {
            let c = chars[i];
            if !self.plain[i] {
                // A backslash escape: `\\` is a line break, `\X` the character X.
                let escaped = chars.get(i + 1).copied().unwrap_or('\\');
                if escaped == '\\' {
                    push_text(&mut text, &mut out);
                    out.push(Inline::Break);
                } else {
                    text.push(escaped);
                }
                i += 2;
                continue;
            }
            if depth < MAX_INLINE_DEPTH
                && let Some((inlines, next)) = self.markup(i, end, depth)
            {
                push_text(&mut text, &mut out);
                out.extend(inlines);
                i = next;
                continue;
            }
            text.push(c);
            i += 1;
        }
        push_text(&mut text, &mut out);
        out
    }

    /// The markup that starts at `at`, if any, and the offset after it.
    fn markup(&self, at: usize, end: usize, depth: usize) -> Option<(Vec<Inline>, usize)> {
        let chars = &self.chars;
        match chars[at] {
            '[' => return self.link(at, end, depth),
            '!' => {
                if let Some(close) = self.image_end(at, end) {
                    return Some((self.image(at + 1, close), close + 1));
                }
            }
            '{' => return self.brace(at, end),
            'h' | 'H' | 'm' | 'M' => {
                if let Some(found) = self.bare_url(at, end) {
                    return Some(found);
                }
            }
            _ => {}
        }
        let d = DELIMITERS
            .iter()
            .position(|(text, _, _)| text.starts_with(chars[at]))?;
        if !self.opens(at, d) {
            return None;
        }
        let (text, style, _) = DELIMITERS[d];
        let len = text.len();
        let close = Self::first_after(&self.closers[d], at + len - 1, len, end)?;
        let inner = self.parse(at + len, close, depth + 1);
        let inlines = match style {
            Style::Strong => vec![Inline::Strong(inner)],
            Style::Emphasis => vec![Inline::Emphasis(inner)],
            Style::Strike => vec![Inline::Strike(inner)],
            Style::Plain => inner,
        };
        Some((inlines, close + len))
    }

    /// `[text|target|tip]`, `[target]` or `[~user]`.
    fn link(&self, at: usize, end: usize, depth: usize) -> Option<(Vec<Inline>, usize)> {
        let close = self.next_bracket[at + 1];
        if close >= end {
            return None;
        }
        let raw = self.raw(at + 1, close);
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return None;
        }
        let after = close + 1;
        if let Some(user) = trimmed.strip_prefix('~') {
            let user = user.trim();
            let user = strip_prefix_ignore_case(user, "accountid:").unwrap_or(user);
            return Some((vec![Inline::Text(format!("@{}", user.trim()))], after));
        }
        // The alias, when there is one, is the text up to the first unescaped `|`.
        let bar = (at + 1..close).find(|&j| chars_eq(&self.chars, j, '|') && self.plain[j]);
        let (alias, target) = match bar {
            Some(bar) => {
                let target_end = (bar + 1..close)
                    .find(|&j| chars_eq(&self.chars, j, '|') && self.plain[j])
                    .unwrap_or(close);
                let alias = self.parse(at + 1, bar, depth + 1);
                (Some(alias), self.raw(bar + 1, target_end))
            }
            None => (None, raw.clone()),
        };
        let target = target.trim();
        let alias = alias.filter(|a| {
            a.iter()
                .any(|i| !matches!(i, Inline::Text(t) if t.trim().is_empty()))
        });
        let named = |name: &str| alias.clone().unwrap_or_else(|| vec![Inline::text(name)]);
        let inlines = if let Some(user) = target.strip_prefix('~') {
            named(&format!("@{}", user.trim()))
        } else if let Some(name) = target.strip_prefix('#').or(target.strip_prefix('^')) {
            named(name.trim())
        } else {
            match Url::parse(target) {
                Ok(url) => {
                    let content = alias.unwrap_or_else(|| match url.scheme() {
                        "http" | "https" => Vec::new(),
                        "mailto" => vec![Inline::text(url.path())],
                        _ => vec![Inline::text(target)],
                    });
                    vec![Inline::Link {
                        href: target.to_owned(),
                        content,
                    }]
                }
                Err(url::ParseError::RelativeUrlWithoutBase) if target.starts_with('/') => {
                    vec![Inline::Link {
                        href: target.to_owned(),
                        content: named(target),
                    }]
                }
                // A page, issue or space name: the alias, or the text as written.
                _ => match alias {
                    Some(alias) => alias,
                    None => vec![Inline::Text(format!("[{raw}]"))],
                },
            }
        };
        Some((inlines, after))
    }

    /// The image between offsets `from` and `to` (`src|params`).
    fn image(&self, from: usize, to: usize) -> Vec<Inline> {
        let inner = self.raw(from, to);
        let (src, params) = inner.split_once('|').unwrap_or((&inner, ""));
        let alt = params
            .split(',')
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("alt"))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default();
        let linkable = match Url::parse(src) {
            Ok(_) => true,
            Err(url::ParseError::RelativeUrlWithoutBase) => src.starts_with('/'),
            Err(_) => false,
        };
        if linkable {
            vec![Inline::Image {
                src: src.to_owned(),
                alt,
            }]
        } else {
            // An attachment, named by its file name.
            let name = src.rsplit('^').next().unwrap_or(src);
            vec![Inline::Emphasis(vec![Inline::Text(format!(
                "image: {name}"
            ))])]
        }
    }

    /// `{{monospace}}`, an inline `{code}…{code}`, or a macro tag.
    fn brace(&self, at: usize, end: usize) -> Option<(Vec<Inline>, usize)> {
        let chars = &self.chars;
        if chars.get(at + 1) == Some(&'{') {
            let close = self.next_double_brace[at + 2];
            if close + 2 > end || close == at + 2 {
                return None;
            }
            return Some((vec![Inline::Code(self.raw(at + 2, close))], close + 2));
        }
        let close = self.next_brace[at + 1];
        if close >= end {
            return None;
        }
        let name: String = chars[at + 1..close]
            .iter()
            .take(33)
            .take_while(|c| c.is_ascii_alphabetic())
            .collect();
        let follows = chars.get(at + 1 + name.len());
        if name.is_empty() || name.len() > 32 || !matches!(follows, Some('}' | ':')) {
            return None;
        }
        let name = name.to_ascii_lowercase();
        let after = close + 1;
        if let Some(k) = CODE_MACROS.iter().position(|m| *m == name) {
            let closing = CODE_MACROS[k].len() + 2;
            let found = Self::first_after(&self.code_closers[k], close, closing, end)?;
            return Some((vec![Inline::Code(self.raw(after, found))], found + closing));
        }
        INLINE_MACROS
            .contains(&name.as_str())
            .then(|| (Vec::new(), after))
    }

    /// A bare `http://`, `https://` or `mailto:` URL, ending before white space or markup and
    /// without trailing punctuation.
    fn bare_url(&self, at: usize, end: usize) -> Option<(Vec<Inline>, usize)> {
        let chars = &self.chars;
        let before = at.checked_sub(1).and_then(|p| chars.get(p));
        if before.is_some_and(|c| c.is_alphanumeric() || matches!(c, '/' | ':' | '.')) {
            return None;
        }
        let head: String = chars[at..(at + 8).min(end)].iter().collect();
        let head = head.to_ascii_lowercase();
        if !["http://", "https://", "mailto:"]
            .iter()
            .any(|p| head.starts_with(p))
        {
            return None;
        }
        let mut stop = at;
        let limit = end.min(at + MAX_URL_CHARS);
        while stop < limit
            && self.plain[stop]
            && !chars[stop].is_whitespace()
            && !matches!(chars[stop], '[' | ']' | '|' | '{' | '}' | '<' | '>' | '"')
        {
            stop += 1;
        }
        let mut candidate: String = chars[at..stop].iter().collect();
        while let Some(last) = candidate.chars().last() {
            let unbalanced = last == ')' && !candidate.contains('(');
            if unbalanced || matches!(last, '.' | ',' | ';' | ':' | '!' | '?' | '*' | '_' | '\'') {
                candidate.pop();
            } else {
                break;
            }
        }
        let url = Url::parse(&candidate).ok()?;
        if url.scheme() != "mailto" && url.host().is_none() {
            return None;
        }
        let next = at + candidate.chars().count();
        Some((
            vec![Inline::Link {
                href: candidate,
                content: Vec::new(),
            }],
            next,
        ))
    }
}

fn chars_eq(chars: &[char], at: usize, wanted: char) -> bool {
    chars.get(at) == Some(&wanted)
}

fn push_text(text: &mut String, out: &mut Vec<Inline>) {
    if !text.is_empty() {
        out.push(Inline::Text(std::mem::take(text)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::render;

    fn md(input: &str) -> String {
        render(&blocks(input), None)
    }

    fn md_at(input: &str, base: &str) -> String {
        let base = Url::parse(base).expect("url");
        render(&blocks(input), Some(&base))
    }

    #[test]
    fn formatting_at_word_boundaries_only() {
        assert_eq!(
            md("*bold* _it_ -gone- +under+"),
            "**bold** _it_ ~~gone~~ under\n"
        );
        assert_eq!(md("2 * 3 * 4 = 24"), "2 \\* 3 \\* 4 = 24\n");
        assert_eq!(
            md("a well-known, long-lived thing"),
            "a well-known, long-lived thing\n"
        );
        assert_eq!(
            md("snake_case_name and a*b*c"),
            "snake_case_name and a\\*b\\*c\n"
        );
        assert_eq!(md("??cited?? x^2^ H~2~O"), "_cited_ x2 H2O\n");
        assert_eq!(md("*bold _and italic_*"), "**bold _and italic_**\n");
        assert_eq!(md("-- and --- stay"), "\\-- and --- stay\n");
    }

    #[test]
    fn escapes_and_breaks() {
        assert_eq!(md("\\*not bold\\* C:\\temp"), "\\*not bold\\* C:\\\\temp\n");
        assert_eq!(md("one\\\\two"), "one\\\ntwo\n");
        assert_eq!(md("line one\nline two"), "line one\\\nline two\n");
    }

    #[test]
    fn crlf_and_cr_work_like_lf() {
        let lf = "h1. Title\n\n* a\n** b\n\n{code}\nx\ny\n{code}\n|a|b|\n|1|2|\ntext\nmore";
        let expected = md(lf);
        assert_eq!(md(&lf.replace('\n', "\r\n")), expected);
        assert_eq!(md(&lf.replace('\n', "\r")), expected);
        assert!(expected.contains("```\nx\ny\n```"), "{expected}");
    }

    #[test]
    fn nested_and_mixed_lists() {
        assert_eq!(
            md("* a\n** b\n*** c\n* d\n# one\n#* sub\n## two"),
            "- a\n  - b\n    - c\n- d\n\n1. one\n   - sub\n\n   1. two\n"
        );
        assert_eq!(md("- dash\n- item"), "- dash\n- item\n");
        assert_eq!(md("*** starts deep"), "- - - starts deep\n");
    }

    #[test]
    fn deep_lists_are_flattened() {
        let input = format!("{} deep", "*".repeat(500));
        let out = md(&input);
        assert!(out.trim_end().ends_with("- deep"), "{out}");
        assert!(out.lines().count() <= MAX_LIST_DEPTH, "{out}");
    }

    #[test]
    fn tables_keep_links_with_bars_in_one_cell() {
        assert_eq!(
            md(
                "||Name||Link||\n|Docs|[the docs|https://e.com/a?x=1|tip]|\n|{{a|b}}|!x.png|thumbnail!|"
            ),
            "| Name | Link |\n| --- | --- |\n| Docs | [the docs](https://e.com/a?x=1) |\n| `a\\|b` | _image: x.png_ |\n"
        );
        assert_eq!(md("||Row||1|"), "| Row | 1 |\n| --- | --- |\n");
        assert_eq!(
            md("|a|b|\n||Side|2|"),
            "| a | b |\n| --- | --- |\n| **Side** | 2 |\n"
        );
    }

    #[test]
    fn code_blocks_are_verbatim() {
        assert_eq!(
            md("{code:java}\nint *a* = [b|c];\n{code}\nafter"),
            "```java\nint *a* = [b|c];\n```\n\nafter\n"
        );
        assert_eq!(
            md("{code:title=Query|language=sql}select 1{code}"),
            "**Query**\n\n```sql\nselect 1\n```\n"
        );
        assert_eq!(md("{noformat}\n*raw*\n{noformat}"), "```\n*raw*\n```\n");
        assert_eq!(md("run {code}ls -la{code} now"), "run `ls -la` now\n");
    }

    #[test]
    fn a_code_block_may_open_after_text() {
        assert_eq!(
            md("Run this:{code:bash}\nls -la\n{code}\nthen *check*"),
            "Run this:\n\n```bash\nls -la\n```\n\nthen **check**\n"
        );
        assert_eq!(
            md("a {code}x{code} b {noformat}\n*y*\n{noformat}"),
            "a `x` b\n\n```\n*y*\n```\n"
        );
    }

    #[test]
    fn an_unclosed_code_block_runs_to_the_end() {
        assert_eq!(
            md("before\n{code}\nfn x() {}\n*y*"),
            "before\n\n```\nfn x() {}\n*y*\n```\n"
        );
    }

    #[test]
    fn quotes_and_panels() {
        assert_eq!(md("bq. quoted *text*"), "> quoted **text**\n");
        assert_eq!(
            md("{quote}\nsaid\n\nagain\n{quote}"),
            "> said\n>\n> again\n"
        );
        assert_eq!(
            md("{panel:title=Heads up|borderStyle=dashed}\n* one\n{panel}"),
            "> **Heads up**\n>\n> - one\n"
        );
        assert_eq!(
            md("{warning}careful{warning}"),
            "> **Warning**\n>\n> careful\n"
        );
        assert_eq!(md("{info:title=FYI}x{info}"), "> **FYI**\n>\n> x\n");
        assert_eq!(md("{quote}\nunclosed"), "unclosed\n");
    }

    #[test]
    fn containers_nest() {
        assert_eq!(
            md("{panel:title=Run}\n{code:sh}\nmake {panel}\n{code}\n|a|b|\n{panel}\nafter"),
            "> **Run**\n>\n> ```sh\n> make {panel}\n> ```\n>\n> | a | b |\n> | --- | --- |\n\nafter\n"
        );
        assert_eq!(
            md("{note}\n{quote}\n* inner\n{quote}\n{note}"),
            "> **Note**\n>\n> > - inner\n"
        );
    }

    #[test]
    fn links_mentions_and_images() {
        assert_eq!(md("[http://e.com]"), "<http://e.com/>\n");
        assert_eq!(
            md("[Example|https://e.com/x]"),
            "[Example](https://e.com/x)\n"
        );
        assert_eq!(md("[mailto:a@e.com]"), "[a@e.com](mailto:a@e.com)\n");
        assert_eq!(
            md("[~jsmith] and [~accountid:5b10a2]"),
            "@jsmith and @5b10a2\n"
        );
        assert_eq!(md("[bad|javascript:alert(1)]"), "bad\n");
        assert_eq!(
            md("[WIP] and [Other page|Space:Page]"),
            "\\[WIP\\] and Other page\n"
        );
        assert_eq!(md("[top|#anchor] [^file.txt]"), "top file.txt\n");
        assert_eq!(
            md("see https://e.com/a_b, then"),
            "see <https://e.com/a_b>, then\n"
        );
        assert_eq!(
            md("!https://e.com/x.png|alt=Diagram!"),
            "![Diagram](https://e.com/x.png)\n"
        );
        assert_eq!(md("Wow! Nice! (!) (x) :)"), "Wow! Nice! (!) (x) :)\n");
        assert_eq!(
            md_at(
                "[docs|/secure/Docs.jspa] !/img/a.png!",
                "https://jira.example.com/"
            ),
            "[docs](https://jira.example.com/secure/Docs.jspa) ![](https://jira.example.com/img/a.png)\n"
        );
        assert_eq!(md("[docs|/secure/Docs.jspa]"), "docs\n");
    }

    #[test]
    fn headings_rules_and_macros() {
        assert_eq!(
            md("h1. One\nh6. Six\nh7. no"),
            "# One\n\n###### Six\n\nh7. no\n"
        );
        assert_eq!(md("----"), "---\n");
        assert_eq!(
            md("{color:red}red *text*{color}{anchor:top}"),
            "red **text**\n"
        );
        assert_eq!(
            md("{unknown}kept{unknown} {\"json\": 1}"),
            "{unknown}kept{unknown} {\"json\": 1}\n"
        );
    }

    #[test]
    fn markup_in_text_is_escaped() {
        assert_eq!(
            md("<script>x</script> # not"),
            "\\<script>x\\</script> # not\n"
        );
        assert_eq!(md("\\# not a list"), "\\# not a list\n");
    }
}
