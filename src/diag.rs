//! Source files, byte spans and user-facing diagnostics.
//!
//! Owns the one way imgbuild points at a place in a user's file:
//! `path:line:col: error: message`, the source line, and a caret line sized by
//! Unicode display width. Frontends produce [`Diagnostic`]s; only the CLI prints
//! them. This module is a leaf: it imports nothing from the crate.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use unicode_width::UnicodeWidthStr;

/// A file as the user wrote it, kept whole so diagnostics can quote it.
#[derive(Debug)]
pub struct SourceFile {
    path: PathBuf,
    text: String,
    /// Byte offset of the start of every line, for offset → line:col.
    line_starts: Vec<usize>,
}

impl SourceFile {
    /// Wraps `text`, read from `path`, for parsing and diagnostics.
    pub fn new(path: impl Into<PathBuf>, text: impl Into<String>) -> Arc<Self> {
        let text = text.into();
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Arc::new(SourceFile {
            path: path.into(),
            text,
            line_starts,
        })
    }

    /// The path the file was read from, as the user named it.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The full text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let start = self.line_starts[line];
        let col = self.text[start..floor_char_boundary(&self.text, offset)]
            .chars()
            .count();
        (line + 1, col + 1)
    }

    /// The text of 1-based line `line`, without its line terminator.
    pub fn line_text(&self, line: usize) -> &str {
        let Some(&start) = self.line_starts.get(line.saturating_sub(1)) else {
            return "";
        };
        let end = self
            .line_starts
            .get(line)
            .map_or(self.text.len(), |&next| next);
        self.text[start..end].trim_end_matches(['\n', '\r'])
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// A half-open byte range `[start, end)` in a [`SourceFile`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Span {
    /// A span from a byte range.
    pub fn new(start: usize, end: usize) -> Self {
        Span {
            start,
            end: end.max(start),
        }
    }
}

impl From<std::ops::Range<usize>> for Span {
    fn from(r: std::ops::Range<usize>) -> Self {
        Span::new(r.start, r.end)
    }
}

/// A place in a user's file: the file plus a span in it.
#[derive(Debug, Clone)]
pub struct SourceRef {
    /// The file.
    pub file: Arc<SourceFile>,
    /// Where in it.
    pub span: Span,
}

impl SourceRef {
    /// `path:line` for messages that name a step without quoting it.
    pub fn location(&self) -> String {
        let (line, col) = self.file.line_col(self.span.start);
        format!("{}:{line}:{col}", self.file.path().display())
    }
}

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Stops the build.
    Error,
    /// Reported, but the build goes on.
    Warning,
}

/// One problem in a user's file, ready to render.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Where; `None` for problems about the file as a whole (e.g. unreadable).
    pub at: Option<SourceRef>,
    /// What is wrong, in one line.
    pub message: String,
    /// A short note printed under the caret.
    pub label: Option<String>,
    /// A hint on how to fix it.
    pub help: Option<String>,
}

impl Diagnostic {
    /// An error at `span` of `file`.
    pub fn error(
        file: &Arc<SourceFile>,
        span: impl Into<Span>,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity: Severity::Error,
            at: Some(SourceRef {
                file: Arc::clone(file),
                span: span.into(),
            }),
            message: message.into(),
            label: None,
            help: None,
        }
    }

    /// A warning at `span` of `file`.
    pub fn warning(
        file: &Arc<SourceFile>,
        span: impl Into<Span>,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(file, span, message)
        }
    }

    /// Adds a label shown after the caret.
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// Adds a `help:` line.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Whether this diagnostic stops a build.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    /// Renders as
    ///
    /// ```text
    /// specs/app.toml:12:5: error: unknown key `bogus`
    ///    |
    /// 12 | bogus = 1
    ///    | ^^^^^ not a stage key
    ///    = help: did you mean `base`?
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let Some(at) = &self.at else {
            write!(f, "{kind}: {}", self.message)?;
            if let Some(help) = &self.help {
                write!(f, "\n  = help: {help}")?;
            }
            return Ok(());
        };
        let file = &at.file;
        let (line, col) = file.line_col(at.span.start);
        writeln!(
            f,
            "{}:{line}:{col}: {kind}: {}",
            file.path().display(),
            self.message
        )?;
        let text = file.line_text(line);
        let gutter = line.to_string().len();
        let line_start = file.line_starts[line - 1];
        // The caret covers the span, clipped to this line, at least one column wide.
        let before = &text[..col_byte_offset(text, col)];
        let span_end_in_line = at
            .span
            .end
            .saturating_sub(line_start)
            .min(text.len())
            .max(before.len());
        let under = &text[before.len()..floor_char_boundary(text, span_end_in_line)];
        let pad = UnicodeWidthStr::width(expand_tabs(before).as_str());
        let width = UnicodeWidthStr::width(expand_tabs(under).as_str()).max(1);
        writeln!(f, "{:gutter$} |", "")?;
        writeln!(f, "{line} | {}", expand_tabs(text))?;
        write!(f, "{:gutter$} | {:pad$}{}", "", "", "^".repeat(width))?;
        if let Some(label) = &self.label {
            write!(f, " {label}")?;
        }
        if let Some(help) = &self.help {
            write!(f, "\n{:gutter$} = help: {help}", "")?;
        }
        Ok(())
    }
}

/// Byte offset within `text` of 1-based character column `col`.
fn col_byte_offset(text: &str, col: usize) -> usize {
    text.char_indices()
        .nth(col.saturating_sub(1))
        .map_or(text.len(), |(i, _)| i)
}

/// Tabs render at unknown widths; show them as four spaces so the caret lines up.
fn expand_tabs(s: &str) -> String {
    s.replace('\t', "    ")
}

/// The closest candidate to `word` by edit distance, for "did you mean" hints.
///
/// Returns a candidate only when it is plausibly a typo (distance at most a third
/// of the word's length, and at least 1 allowed).
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (levenshtein(&word.to_lowercase(), &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Optimal-string-alignment distance: edits, with a swap of two adjacent
/// characters counting as one (`CPOY` is one edit from `COPY`).
fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_characters() {
        let f = SourceFile::new("x.toml", "a = 1\nbé = 2\n");
        assert_eq!(f.line_col(0), (1, 1));
        assert_eq!(f.line_col(6), (2, 1));
        // "é" is two bytes; the '=' after it is column 4.
        assert_eq!(f.line_col(10), (2, 4));
        assert_eq!(f.line_text(2), "bé = 2");
    }

    #[test]
    fn renders_caret_under_span() {
        let f = SourceFile::new("specs/a.toml", "[build]\nbogus = 1\n");
        let d =
            Diagnostic::error(&f, 8..13, "unknown key `bogus`").with_help("did you mean `base`?");
        let text = d.to_string();
        assert_eq!(
            text,
            "specs/a.toml:2:1: error: unknown key `bogus`\n  |\n2 | bogus = 1\n  | ^^^^^\n  = help: did you mean `base`?"
        );
    }

    #[test]
    fn caret_width_follows_unicode_width() {
        let f = SourceFile::new("a", "x = \"日本\"\n");
        let d = Diagnostic::error(&f, 4..12, "bad");
        let caret = d.to_string().lines().last().unwrap_or_default().to_string();
        assert_eq!(caret, "  |     ^^^^^^");
    }

    #[test]
    fn suggestions_need_to_be_close() {
        assert_eq!(
            did_you_mean("entrypiont", ["entrypoint", "env"]),
            Some("entrypoint")
        );
        assert_eq!(did_you_mean("zzz", ["entrypoint", "env"]), None);
        assert_eq!(did_you_mean("CPOY", ["COPY", "CMD"]), Some("COPY"));
    }
}
