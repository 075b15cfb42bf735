//! `.dockerignore` files: one pattern per line, `#` comments, `!` exceptions,
//! read the way `moby/patternmatcher/ignorefile` reads them. Matching itself
//! is [`crate::pattern::PatternSet`].

use std::sync::Arc;

use crate::diag::{Diagnostic, SourceFile, Span};
use crate::pattern::{PatternSet, clean_path};

/// The patterns of an ignore file, normalized (cleaned, leading `/` dropped,
/// `!` kept), in order.
///
/// # Errors
/// A pattern that does not compile, at its line.
pub fn patterns(file: &Arc<SourceFile>) -> Result<Vec<String>, Diagnostic> {
    let text = file.text();
    let mut out = Vec::new();
    let mut offset = 0;
    for (n, raw_line) in text.split_inclusive('\n').enumerate() {
        let start = offset;
        offset += raw_line.len();
        let mut line = raw_line.trim_end_matches(['\n', '\r']);
        if n == 0 {
            line = line.strip_prefix('\u{feff}').unwrap_or(line);
        }
        if line.starts_with('#') {
            continue;
        }
        let mut pattern = line.trim();
        if pattern.is_empty() {
            continue;
        }
        let invert = pattern.starts_with('!');
        if invert {
            pattern = pattern[1..].trim();
        }
        let mut cleaned = if pattern.is_empty() {
            String::new()
        } else {
            clean_path(pattern)
        };
        if cleaned.len() > 1 && cleaned.starts_with('/') {
            cleaned.remove(0);
        }
        let full = if invert {
            format!("!{cleaned}")
        } else {
            cleaned
        };
        if let Err(e) = PatternSet::new(std::slice::from_ref(&full)) {
            return Err(Diagnostic::error(
                file,
                Span::new(start, start + line.len()),
                format!("invalid .dockerignore pattern: {e}"),
            ));
        }
        out.push(full);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_like_moby() {
        let f = SourceFile::new(
            ".dockerignore",
            "\u{feff}# comment\n  node_modules  \n/abs/path/\n!keep.md\n*.md\n\n ./a/../b \n",
        );
        assert_eq!(
            patterns(&f).unwrap(),
            ["node_modules", "abs/path", "!keep.md", "*.md", "b"]
        );
        let bad = SourceFile::new(".dockerignore", "ok\n[\n");
        let e = patterns(&bad).unwrap_err();
        assert!(e.to_string().starts_with(".dockerignore:2:1"), "{e}");
    }
}
