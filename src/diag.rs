//! Source files, byte spans and user-facing diagnostics.
//!
//! Owns the one way imgbuild points at a place in a user's file:
//! `path:line:col: error: message`, the source line, and a caret line sized by
//! Unicode display width. Frontends produce [`Diagnostic`]s; only the CLI prints
//! them. This module is a leaf: it imports nothing from the crate.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

    /// How many lines the text has (a last line without `\n` counts).
    pub fn line_count(&self) -> usize {
        self.line_starts.len()
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
        let line_start = file.line_starts.get(line - 1).copied().unwrap_or(0);
        // The caret covers the span, clipped to this line, at least one column wide.
        let from = floor_char_boundary(
            text,
            at.span.start.saturating_sub(line_start).min(text.len()),
        );
        let to = floor_char_boundary(text, at.span.end.saturating_sub(line_start).min(text.len()))
            .max(from);
        let shown = excerpt(text, from, to);
        let gutter = " ".repeat(line.to_string().len());
        writeln!(f, "{gutter} |")?;
        writeln!(f, "{line} | {}", shown.text)?;
        write!(
            f,
            "{gutter} | {}{}",
            " ".repeat(shown.pad),
            "^".repeat(shown.width)
        )?;
        if let Some(label) = &self.label {
            write!(f, " {label}")?;
        }
        if let Some(help) = &self.help {
            write!(f, "\n{gutter} = help: {help}")?;
        }
        Ok(())
    }
}

/// How many columns of a source line a diagnostic shows at most; a longer line
/// is cut to a window around the caret, with `…` where text was left out.
const MAX_SHOWN_COLUMNS: usize = 120;
/// Columns shown before the caret when the line is cut.
const CONTEXT_BEFORE: usize = 40;

/// A source line made printable, with the caret's place in it.
struct Excerpt {
    /// The text to print.
    text: String,
    /// Columns before the caret.
    pad: usize,
    /// Width of the caret (at least 1).
    width: usize,
}

/// How one character of a source line is shown: tabs as four spaces (their
/// width is unknown), control characters (NUL included) as their Unicode
/// control picture or U+FFFD, so the terminal shows them and the caret lines
/// up. Appends what is shown to `out` when given (nothing is allocated per
/// character: a long line's columns are counted several times) and returns
/// the columns it takes.
fn show_char(c: char, out: Option<&mut String>) -> usize {
    let (shown, width) = match c {
        '\t' => {
            if let Some(out) = out {
                out.push_str("    ");
            }
            return 4;
        }
        '\u{0}'..='\u{1f}' => (char::from_u32(0x2400 + c as u32).unwrap_or('\u{fffd}'), 1),
        '\u{7f}' => ('\u{2421}', 1),
        '\u{80}'..='\u{9f}' => ('\u{fffd}', 1),
        c => (c, unicode_width::UnicodeWidthChar::width(c).unwrap_or(0)),
    };
    if let Some(out) = out {
        out.push(shown);
    }
    width
}

/// The columns `c` takes when shown.
fn char_width(c: char) -> usize {
    show_char(c, None)
}

/// The printable excerpt of `text` for a caret over bytes `from..to`: the
/// whole line when it fits in [`MAX_SHOWN_COLUMNS`], else a window that starts
/// a little before the caret. Linear in the line's length, whatever it holds.
fn excerpt(text: &str, from: usize, to: usize) -> Excerpt {
    let col_of = |end: usize| -> usize { text[..end].chars().map(char_width).sum() };
    let pad = col_of(from);
    let caret_end = pad + text[from..to].chars().map(char_width).sum::<usize>();
    let total = caret_end + text[to..].chars().map(char_width).sum::<usize>();
    let (win_start, win_end) = if total <= MAX_SHOWN_COLUMNS {
        (0, total)
    } else {
        let start = pad.saturating_sub(CONTEXT_BEFORE);
        (start, start + MAX_SHOWN_COLUMNS)
    };
    let mut out = String::new();
    let mut shift = 0;
    if win_start > 0 {
        out.push('…');
        shift = 1;
    }
    let mut col = 0;
    let mut cut_end = false;
    for c in text.chars() {
        let w = char_width(c);
        if col >= win_start && col + w <= win_end {
            show_char(c, Some(&mut out));
        } else if col >= win_end {
            cut_end = true;
            break;
        }
        col += w;
    }
    if cut_end {
        out.push('…');
    }
    let pad_shown = pad.saturating_sub(win_start) + shift;
    let width = caret_end
        .min(win_end)
        .saturating_sub(pad.max(win_start))
        .max(1);
    Excerpt {
        text: out,
        pad: pad_shown,
        width,
    }
}

/// Words longer than this get no "did you mean": the hint is for typos, and
/// the distance costs the product of the two lengths.
const MAX_SUGGEST_LEN: usize = 64;

/// The closest candidate to `word` by edit distance, for "did you mean" hints.
///
/// Returns a candidate only when it is plausibly a typo (distance at most a third
/// of the word's length, and at least 1 allowed). Bounded work whatever the
/// input: long words and candidates whose length alone rules them out are
/// skipped without computing a distance.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let len = word.chars().count();
    if len > MAX_SUGGEST_LEN {
        return None;
    }
    let limit = (len / 3).max(1);
    let word: Vec<char> = word.to_lowercase().chars().collect();
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        // Cheap length filters first: a name of another length class cannot
        // be within `limit` edits.
        if c.len() > 4 * (MAX_SUGGEST_LEN + limit) {
            continue;
        }
        let cand: Vec<char> = c.to_lowercase().chars().collect();
        if cand.len().abs_diff(word.len()) > limit {
            continue;
        }
        let d = osa_distance(&word, &cand);
        if d <= limit && best.is_none_or(|(b, _)| d < b) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

/// Optimal-string-alignment distance: edits, with a swap of two adjacent
/// characters counting as one (`CPOY` is one edit from `COPY`). Three rows of
/// memory, not a full matrix.
fn osa_distance(a: &[char], b: &[char]) -> usize {
    let mut prev2: Vec<usize> = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur: Vec<usize> = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(prev2[j - 2] + 1);
            }
            cur[j] = v;
        }
        std::mem::swap(&mut prev2, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
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

    fn caret_line(d: &Diagnostic) -> String {
        d.to_string().lines().nth(3).unwrap_or_default().to_string()
    }

    /// The character the caret points at, read back from the rendered lines.
    fn under_caret(d: &Diagnostic) -> String {
        let text = d.to_string();
        let lines: Vec<&str> = text.lines().collect();
        let shown = lines[2].split_once(" | ").unwrap().1;
        let caret = lines[3].split_once(" | ").unwrap().1;
        let pad = caret.chars().take_while(|&c| c == ' ').count();
        let width = caret[pad..].chars().take_while(|&c| c == '^').count();
        let mut col = 0;
        let mut out = String::new();
        for c in shown.chars() {
            if col >= pad && col < pad + width {
                out.push(c);
            }
            col += unicode_width::UnicodeWidthChar::width(c).unwrap_or(0);
        }
        out
    }

    #[test]
    fn issue_10_caret_past_column_65535() {
        // 70,000 columns before the error: the old renderer padded with a
        // format width, which panics past u16::MAX.
        let text = format!("{}bogus = 1\n", " ".repeat(70_000));
        let f = SourceFile::new("a.toml", text);
        let d = Diagnostic::error(&f, 70_000..70_005, "unknown key");
        assert!(
            d.to_string()
                .starts_with("a.toml:1:70001: error: unknown key")
        );
        assert_eq!(under_caret(&d), "bogus");
        // The line is cut to a window around the caret.
        assert!(d.to_string().lines().nth(2).unwrap().chars().count() < 200);
    }

    #[test]
    fn caret_after_many_tabs_and_wide_chars() {
        let text = format!("{}{}x\n", "\t".repeat(20_000), "日".repeat(20_000));
        let f = SourceFile::new("D", text.clone());
        let at = text.find('x').unwrap();
        let d = Diagnostic::error(&f, at..at + 1, "here");
        assert_eq!(under_caret(&d), "x");
        assert!(caret_line(&d).ends_with('^'));
    }

    #[test]
    fn control_characters_are_shown_and_counted() {
        let f = SourceFile::new("D", "RUN a\u{0}b\u{1b}[31m c\n");
        let d = Diagnostic::error(&f, 13..14, "here");
        let text = d.to_string();
        assert!(
            !text.contains('\u{0}') && !text.contains('\u{1b}'),
            "{text:?}"
        );
        assert_eq!(under_caret(&d), "c");
    }

    #[test]
    fn spans_anywhere_render() {
        let texts = ["", "\n", "a", "\r\n\r\n", "é\u{fffd}", "x\ty\n\n"];
        for t in texts {
            let f = SourceFile::new("D", t);
            for start in 0..=t.len() + 2 {
                for end in [0, start, start + 1, t.len() + 5] {
                    let _ = Diagnostic::error(&f, Span::new(start, end), "m")
                        .with_label("l")
                        .with_help("h")
                        .to_string();
                }
            }
        }
    }

    #[test]
    fn suggestions_stay_cheap_for_huge_names() {
        let long = "a".repeat(100_000);
        assert_eq!(did_you_mean(&long, [long.as_str()]), None);
        let names: Vec<String> = (0..20_000).map(|i| format!("stage{i}")).collect();
        assert_eq!(
            did_you_mean("stage1999x", names.iter().map(String::as_str)),
            Some("stage1999")
        );
    }
}
