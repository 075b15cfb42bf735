//! The reference parser's AST dump (`imgbuild parse --dump`): one
//! s-expression per instruction, strings quoted as Go's `strconv.Quote` does.

use unicode_general_category::{GeneralCategory, get_general_category};

use super::parser::{Ast, Node};

/// The dump of a whole file: one line per instruction, ending in `\n`.
pub fn dump(ast: &Ast) -> String {
    let mut out = String::new();
    for n in &ast.nodes {
        out.push('(');
        out.push_str(&node(n));
        out.push_str(")\n");
    }
    out
}

/// The dump of a Dockerfile, parsed node by node: the same text as
/// [`dump`] of [`parse`](super::parse), without holding the parse tree.
///
/// # Errors
/// The first syntax error, as [`parse`](super::parse) reports it.
pub fn dump_file(
    file: &std::sync::Arc<crate::diag::SourceFile>,
) -> Result<String, crate::diag::Diagnostic> {
    let mut nodes = super::parser::nodes(file)?;
    let mut out = String::new();
    let mut any = false;
    for n in &mut nodes {
        let n = n?;
        any = true;
        out.push('(');
        out.push_str(&node(&n));
        out.push_str(")\n");
    }
    if !any {
        return Err(nodes.no_instructions());
    }
    Ok(out)
}

fn node(n: &Node) -> String {
    let mut s = n.keyword.value.to_lowercase();
    if !n.flags.is_empty() {
        let flags: Vec<String> = n.flags.iter().map(|f| quote(&f.value)).collect();
        s.push_str(&format!(" [{}]", flags.join(" ")));
    }
    if let Some(inner) = &n.inner {
        s.push_str(&format!(" ({})", node(inner)));
    }
    for a in &n.args {
        s.push(' ');
        s.push_str(&quote(&a.value));
    }
    s
}

/// Go's `unicode.IsPrint`: letters, marks, numbers, punctuation, symbols and
/// the ASCII space.
fn is_print(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    use GeneralCategory::*;
    matches!(
        get_general_category(c),
        UppercaseLetter
            | LowercaseLetter
            | TitlecaseLetter
            | ModifierLetter
            | OtherLetter
            | NonspacingMark
            | SpacingMark
            | EnclosingMark
            | DecimalNumber
            | LetterNumber
            | OtherNumber
            | ConnectorPunctuation
            | DashPunctuation
            | OpenPunctuation
            | ClosePunctuation
            | InitialPunctuation
            | FinalPunctuation
            | OtherPunctuation
            | MathSymbol
            | CurrencySymbol
            | ModifierSymbol
            | OtherSymbol
    )
}

/// Go's `strconv.Quote`.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if is_print(c) => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn quotes_like_go() {
        assert_eq!(quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(quote("\u{0}\u{1b}\u{7f}"), r#""\x00\x1b\x7f""#);
        assert_eq!(quote("♥ é"), "\"♥ é\"");
        assert_eq!(quote("\u{a0}\u{200b}\u{feff}"), r#""\u00a0\u200b\ufeff""#);
        assert_eq!(quote("\u{f0000}"), r#""\U000f0000""#);
    }
}
