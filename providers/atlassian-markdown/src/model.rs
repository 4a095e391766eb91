//! The small document model both converters produce and the Markdown writer renders.

/// A block of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Block {
    /// A paragraph of inline content.
    Paragraph(Vec<Inline>),
    /// A heading, level 1 to 6.
    Heading(u8, Vec<Inline>),
    /// A bullet or numbered list.
    List {
        /// Numbered when true.
        ordered: bool,
        /// The first number of a numbered list.
        start: u64,
        /// The items.
        items: Vec<Item>,
    },
    /// A fenced code block.
    Code {
        /// The language (info string), possibly empty.
        language: String,
        /// The code, verbatim.
        text: String,
    },
    /// A block quote (also used for panels and callouts).
    Quote(Vec<Block>),
    /// A thematic break.
    Rule,
    /// A table, row by row; the first row is the header.
    Table(Vec<Vec<Cell>>),
}

/// One list item.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Item {
    /// `Some(done)` for a task item.
    pub(crate) task: Option<bool>,
    /// The item's content.
    pub(crate) blocks: Vec<Block>,
}

/// One table cell.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Cell {
    /// The cell's content.
    pub(crate) blocks: Vec<Block>,
}

/// Inline content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Inline {
    /// Plain text (escaped when written; runs of white space become one space).
    Text(String),
    /// Inline code.
    Code(String),
    /// Bold.
    Strong(Vec<Inline>),
    /// Italic.
    Emphasis(Vec<Inline>),
    /// Struck through.
    Strike(Vec<Inline>),
    /// A link; written as plain content when the target is not a safe URL.
    Link {
        /// The target as found in the source.
        href: String,
        /// The link text.
        content: Vec<Inline>,
    },
    /// An image; written as its alternative text when the source is not a safe URL.
    Image {
        /// The source as found in the document.
        src: String,
        /// The alternative text.
        alt: String,
    },
    /// A hard line break.
    Break,
}

impl Inline {
    /// Plain text.
    pub(crate) fn text(text: impl Into<String>) -> Self {
        Self::Text(text.into())
    }
}
