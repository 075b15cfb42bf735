//! Dockerfile text → [`Node`]s, exactly as BuildKit's parser forms them.
//!
//! The pipeline follows the reference parser step by step (the rules are
//! written out in `tests/fixtures/buildkit-parser/README.md`): physical lines,
//! parser directives, continuation lines, keyword / flags / arguments with each
//! instruction's own argument rule, then heredoc bodies. Every argument keeps
//! the byte span it came from, so later stages can point at it. Quirks of the
//! reference parser that are observable in its output are kept on purpose and
//! marked as such.
//!
//! The small grammars (directive lines, JSON string arrays, heredoc markers)
//! are nom parsers; the line and flag scanners are byte state machines
//! because that is how the reference behaves (it reads flags byte by byte).

use std::sync::Arc;

use nom::branch::alt;
use nom::bytes::complete::{tag, take_while, take_while_m_n};
use nom::character::complete::{char as nchar, satisfy};
use nom::combinator::{opt, recognize};
use nom::sequence::pair;
use nom::{IResult, Parser as _};

use super::expand::{Lexer, NoEnv};
use crate::diag::{Diagnostic, SourceFile, Span};

/// The longest physical line the reference parser accepts (bufio.Scanner).
const MAX_LINE: usize = 65_535;

/// How many ONBUILDs may wrap each other (`ONBUILD ONBUILD …`). The parser
/// forms nested nodes as the reference does (typing then refuses any ONBUILD
/// inside an ONBUILD), so the depth is bounded here, where it recurses.
pub const MAX_ONBUILD_NESTING: usize = 16;

/// A piece of text and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    /// The text (quotes and escapes as each rule leaves them).
    pub value: String,
    /// Its place in the file.
    pub span: Span,
}

/// Parser directives from the top of the file.
#[derive(Debug, Clone)]
pub struct Directives {
    /// The escape character: `\` (default) or `` ` ``.
    pub escape: char,
    /// `# syntax=…`.
    pub syntax: Option<Word>,
    /// `# check=…`.
    pub check: Option<Word>,
}

/// A heredoc attached to RUN, COPY or ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The name (`EOF`), quotes removed.
    pub name: String,
    /// The body: every line as written, each ending in `\n`.
    pub content: String,
    /// False when the name was quoted: the body is not expanded.
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from the body when used.
    pub chomp: bool,
    /// The file descriptor (`3<<EOF`), 0 by default.
    pub fd: u32,
}

/// One instruction as the reference parser forms it.
#[derive(Debug, Clone)]
pub struct Node {
    /// The keyword as written (`RuN`).
    pub keyword: Word,
    /// Flags (`--from=build`), quotes and escapes processed.
    pub flags: Vec<Word>,
    /// Arguments per the instruction's rule (for ENV/LABEL: key, value, `=`
    /// or `""` triples).
    pub args: Vec<Word>,
    /// The arguments were a JSON array.
    pub json: bool,
    /// Where the argument text after the flags is (trimmed).
    pub rest_span: Span,
    /// Heredocs, in the order their markers appear.
    pub heredocs: Vec<Heredoc>,
    /// For ONBUILD: the instruction it wraps.
    pub inner: Option<Box<Node>>,
    /// The whole instruction (without heredoc bodies).
    pub span: Span,
    /// First physical line (1-based).
    pub start_line: usize,
    /// Last physical line, heredoc bodies and skipped lines included.
    pub end_line: usize,
}

impl Node {
    /// The keyword, lowercased.
    pub fn command(&self) -> String {
        self.keyword.value.to_ascii_lowercase()
    }
}

/// The known keyword `kw` names, lowercase, without allocating; `""` for an
/// unknown one.
pub fn kind_of(kw: &str) -> &'static str {
    let b = kw.as_bytes();
    if b.len() > 11 {
        return "";
    }
    let mut buf = [0u8; 11];
    for (d, s) in buf.iter_mut().zip(b) {
        *d = s.to_ascii_lowercase();
    }
    match &buf[..b.len()] {
        b"add" => "add",
        b"arg" => "arg",
        b"cmd" => "cmd",
        b"copy" => "copy",
        b"entrypoint" => "entrypoint",
        b"env" => "env",
        b"expose" => "expose",
        b"from" => "from",
        b"healthcheck" => "healthcheck",
        b"label" => "label",
        b"maintainer" => "maintainer",
        b"onbuild" => "onbuild",
        b"run" => "run",
        b"shell" => "shell",
        b"stopsignal" => "stopsignal",
        b"user" => "user",
        b"volume" => "volume",
        b"workdir" => "workdir",
        _ => "",
    }
}

/// A parsed Dockerfile.
#[derive(Debug, Clone)]
pub struct Ast {
    /// Parser directives.
    pub directives: Directives,
    /// The instructions, in order.
    pub nodes: Vec<Node>,
    /// Things the reference parser warns about (empty continuation lines).
    pub warnings: Vec<Diagnostic>,
}

struct PhysLine<'a> {
    /// Without the `\n` (a trailing `\r` is still there).
    raw: &'a str,
    /// Without any trailing `\r`/`\n`.
    text: &'a str,
    start: usize,
    number: usize,
}

/// Physical lines, scanned lazily: no per-file vector of lines.
#[derive(Clone)]
struct Lines<'a> {
    text: &'a str,
    pos: usize,
    base: usize,
    number: usize,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str, base: usize) -> Self {
        Lines {
            text,
            pos: 0,
            base,
            number: 0,
        }
    }
}

impl<'a> Lines<'a> {
    /// The next line, or an error for one longer than the reference accepts.
    fn next_checked(&mut self, file: &Arc<SourceFile>) -> Result<Option<PhysLine<'a>>, Diagnostic> {
        match self.next() {
            Some(l) if l.raw.len() > MAX_LINE => Err(Diagnostic::error(
                file,
                Span::new(l.start, l.start + 1),
                format!(
                    "line is {} bytes long; the limit is {MAX_LINE}",
                    l.raw.len()
                ),
            )),
            other => Ok(other),
        }
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = PhysLine<'a>;

    fn next(&mut self) -> Option<PhysLine<'a>> {
        if self.pos >= self.text.len() {
            return None;
        }
        let rest = &self.text[self.pos..];
        let (raw, consumed) = match memchr::memchr(b'\n', rest.as_bytes()) {
            Some(i) => (&rest[..i], i + 1),
            None => (rest, rest.len()),
        };
        let line = PhysLine {
            raw,
            text: raw.trim_end_matches(['\r', '\n']),
            start: self.base + self.pos,
            number: self.number + 1,
        };
        self.pos += consumed;
        self.number += 1;
        Some(line)
    }
}

/// Go's `unicode.IsSpace` applied to one byte as the reference's byte loops do
/// (so 0x85 and 0xA0 count, even inside a UTF-8 sequence).
fn go_byte_space(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ' | 0x85 | 0xa0)
}

/// `[\t\v\f\r ]`: the reference's `reWhitespace`.
fn re_ws(b: u8) -> bool {
    matches!(b, b'\t' | 0x0b | 0x0c | b'\r' | b' ')
}

/// Go's `strings.TrimSpace` / `TrimLeftFunc(unicode.IsSpace)`.
fn go_trim(s: &str) -> &str {
    s.trim_matches(char::is_whitespace)
}

// ---------------------------------------------------------------------------
// Logical lines: text assembled from several physical lines, with a map back
// to file offsets.

#[derive(Default)]
struct Logical<'a> {
    /// Borrowed while the instruction is one physical line (the common case).
    text: std::borrow::Cow<'a, str>,
    /// (offset in `text`, offset in the file) at the start of each piece; the
    /// first piece inline, so one-line instructions allocate nothing here.
    first: (usize, usize),
    more: Vec<(usize, usize)>,
}

impl<'a> Logical<'a> {
    fn push(&mut self, piece: &'a str, file_start: usize) {
        if self.text.is_empty() && self.more.is_empty() {
            self.first = (0, file_start);
            self.text = std::borrow::Cow::Borrowed(piece);
        } else {
            self.more.push((self.text.len(), file_start));
            self.text.to_mut().push_str(piece);
        }
    }

    fn file(&self, logical: usize) -> usize {
        // `more` is sorted by logical offset: a binary search keeps an
        // instruction continued over 200,000 lines linear, not quadratic.
        let i = self.more.partition_point(|(l, _)| *l <= logical);
        let (l, f) = match i {
            0 => self.first,
            i => self.more[i - 1],
        };
        f + (logical - l)
    }

    fn span(&self, start: usize, end: usize) -> Span {
        let s = self.file(start);
        let e = if end > start {
            self.file(end - 1) + 1
        } else {
            s
        };
        Span::new(s, e)
    }

    fn word(&self, start: usize, end: usize) -> Word {
        Word {
            value: self.text[start..end].to_string(),
            span: self.span(start, end),
        }
    }
}

/// Removes a continuation escape at the end of `line`; returns the kept text
/// and whether the line continues. The character before the escape must not
/// be the escape itself, unless the escape is the first character.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let body = line.trim_end_matches([' ', '\t']);
    if let Some(before) = body.strip_suffix(escape)
        && (before.is_empty() || !before.ends_with(escape))
    {
        return (before, true);
    }
    (line, false)
}

// ---------------------------------------------------------------------------
// nom grammars

/// `#` ws* name ws* `=` ws* value — a parser directive line (leading
/// whitespace already removed). Returns (name, value offset, value).
fn directive(line: &str) -> Option<(String, usize, &str)> {
    let go_ws = |c: char| matches!(c, '\t' | '\n' | '\x0c' | '\r' | ' ');
    let mut p = (
        nchar::<&str, nom::error::Error<&str>>('#'),
        take_while(go_ws),
        recognize(pair(
            satisfy(|c: char| c.is_ascii_alphabetic()),
            take_while(|c: char| c.is_ascii_alphanumeric()),
        )),
        take_while(go_ws),
        nchar('='),
        take_while(go_ws),
    );
    let (value, (_, _, name, _, _, _)) = p.parse(line).ok()?;
    let trimmed = value.trim_end_matches(go_ws);
    if trimmed.is_empty() {
        return None;
    }
    Some((name.to_ascii_lowercase(), line.len() - value.len(), trimmed))
}

/// `[digits]<<[-]NAME`: a heredoc marker word. NAME may be empty when the
/// name is the next word (`<< EOF`).
fn heredoc_marker(word: &str) -> Option<(u32, bool, &str)> {
    let mut p = (
        take_while(|c: char| c.is_ascii_digit()),
        tag::<&str, &str, nom::error::Error<&str>>("<<"),
        opt(nchar('-')),
    );
    let (rest, (digits, _, dash)) = p.parse(word).ok()?;
    if rest.contains('<') {
        return None;
    }
    let fd = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    Some((fd, dash.is_some(), rest))
}

type JsonResult<'a, T> = IResult<&'a str, T, nom::error::Error<&'a str>>;

fn json_ws(i: &str) -> JsonResult<'_, &str> {
    take_while(|c| matches!(c, ' ' | '\t' | '\n' | '\r'))(i)
}

/// A JSON string with Go's decoding (lone surrogates become U+FFFD).
fn json_string(i: &str) -> JsonResult<'_, String> {
    let (mut i, _) = nchar('"')(i)?;
    let mut out = String::new();
    loop {
        let (rest, chunk) = take_while(|c: char| c != '"' && c != '\\' && c >= ' ')(i)?;
        out.push_str(chunk);
        i = rest;
        if let Ok((rest, _)) = nchar::<&str, nom::error::Error<&str>>('"')(i) {
            return Ok((rest, out));
        }
        let (rest, _) = nchar('\\')(i)?;
        let (rest, esc) = satisfy(|c| "\"\\/bfnrtu".contains(c))(rest)?;
        i = rest;
        match esc {
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'u' => {
                let (rest, hex) = take_while_m_n(4, 4, |c: char| c.is_ascii_hexdigit())(i)?;
                i = rest;
                let hi = u32::from_str_radix(hex, 16).unwrap_or(0xfffd);
                let c = if (0xd800..0xdc00).contains(&hi) {
                    // A surrogate pair, if the next escape completes it.
                    let lo = (|| {
                        let (r, _) = tag::<&str, &str, nom::error::Error<&str>>("\\u")(i).ok()?;
                        let (r, hex) =
                            take_while_m_n::<_, &str, nom::error::Error<&str>>(4, 4, |c: char| {
                                c.is_ascii_hexdigit()
                            })(r)
                            .ok()?;
                        let lo = u32::from_str_radix(hex, 16).ok()?;
                        (0xdc00..0xe000).contains(&lo).then_some((r, lo))
                    })();
                    match lo {
                        Some((r, lo)) => {
                            i = r;
                            char::from_u32(0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00))
                        }
                        None => None,
                    }
                } else {
                    char::from_u32(hi)
                };
                out.push(c.unwrap_or('\u{fffd}'));
            }
            c => out.push(c),
        }
    }
}

/// What the JSON rule makes of an argument text.
enum JsonArgs {
    /// A JSON array of strings, with each element's byte range in the text.
    Strings(Vec<(String, usize, usize)>),
    /// Valid JSON, but not all strings: a parse error.
    NotStrings,
    /// Not JSON: the shell form applies.
    NotJson,
}

fn json_args(text: &str) -> JsonArgs {
    let lead = text.len() - text.trim_start().len();
    let t = &text[lead..];
    if !t.starts_with('[') {
        return JsonArgs::NotJson;
    }
    fn array(t: &str) -> JsonResult<'_, Vec<(String, usize, usize)>> {
        let (mut i, _) = nchar('[')(t)?;
        let (r, _) = json_ws(i)?;
        i = r;
        let mut out = Vec::new();
        if let Ok((r, _)) = nchar::<&str, nom::error::Error<&str>>(']')(i) {
            return Ok((r, out));
        }
        loop {
            let start = t.len() - i.len();
            let (r, s) = json_string(i)?;
            let end = t.len() - r.len();
            out.push((s, start, end));
            let (r, _) = json_ws(r)?;
            let (r, sep) = alt((nchar(','), nchar(']'))).parse(r)?;
            if sep == ']' {
                return Ok((r, out));
            }
            let (r, _) = json_ws(r)?;
            i = r;
        }
    }
    if let Ok((rest, items)) = array(t)
        && json_ws(rest).is_ok_and(|(r, _)| r.is_empty())
    {
        return JsonArgs::Strings(
            items
                .into_iter()
                .map(|(v, s, e)| (v, lead + s, lead + e))
                .collect(),
        );
    }
    match serde_json::from_str::<serde_json::Value>(t) {
        Ok(serde_json::Value::Array(_)) => JsonArgs::NotStrings,
        _ => JsonArgs::NotJson,
    }
}

// ---------------------------------------------------------------------------

struct Parser<'f> {
    file: &'f Arc<SourceFile>,
    escape: char,
}

/// Parses a Dockerfile.
///
/// # Errors
/// The first syntax error, as a diagnostic.
pub fn parse(file: &Arc<SourceFile>) -> Result<Ast, Diagnostic> {
    let mut it = nodes(file)?;
    let mut nodes = Vec::new();
    for node in &mut it {
        nodes.push(node?);
    }
    if nodes.is_empty() {
        return Err(it.no_instructions());
    }
    Ok(Ast {
        directives: it.directives.clone(),
        nodes,
        warnings: it.warnings,
    })
}

/// The instructions of a Dockerfile one at a time, so a caller that consumes
/// them as they come (lowering, the dump) never holds the whole tree: a
/// 200,000-line file costs one node at a time. [`parse`] collects them.
pub struct Nodes<'f> {
    /// Parser directives (read before the first node).
    pub directives: Directives,
    /// Warnings so far (empty continuation lines).
    pub warnings: Vec<Diagnostic>,
    p: Parser<'f>,
    lines: Lines<'f>,
    /// An error ended the stream.
    failed: bool,
}

/// Reads the directives and checks line lengths; the nodes follow from the
/// returned iterator.
///
/// # Errors
/// A line longer than the reference accepts, or a bad directive.
pub fn nodes(file: &Arc<SourceFile>) -> Result<Nodes<'_>, Diagnostic> {
    let text = file.text();
    let base = if text.starts_with('\u{feff}') { 3 } else { 0 };
    let lines = Lines::new(&text[base..], base);
    let error = |span: Span, msg: &str| Diagnostic::error(file, span, msg.to_string());

    for l in lines.clone() {
        if l.raw.len() > MAX_LINE {
            return Err(error(
                Span::new(l.start, l.start + 1),
                &format!(
                    "line is {} bytes long; the limit is {MAX_LINE}",
                    l.raw.len()
                ),
            ));
        }
    }

    // Parser directives: only at the very top, stopping at the first other line.
    let mut directives = Directives {
        escape: '\\',
        syntax: None,
        check: None,
    };
    let mut seen: Vec<String> = Vec::new();
    for l in lines.clone() {
        let lead = l.text.len() - l.text.trim_start().len();
        let Some((name, voff, value)) = directive(&l.text[lead..]) else {
            break;
        };
        if !matches!(name.as_str(), "syntax" | "escape" | "check") {
            break;
        }
        let span = Span::new(l.start + lead + voff, l.start + lead + voff + value.len());
        if seen.contains(&name) {
            return Err(error(
                span,
                &format!("only one {name} parser directive can be used"),
            ));
        }
        seen.push(name.clone());
        let word = Word {
            value: value.to_string(),
            span,
        };
        match name.as_str() {
            "escape" => {
                directives.escape = match value {
                    "\\" => '\\',
                    "`" => '`',
                    _ => {
                        return Err(error(
                            span,
                            &format!("invalid escape character `{value}`: it must be ` or \\"),
                        ));
                    }
                };
            }
            "syntax" => directives.syntax = Some(word),
            _ => directives.check = Some(word),
        }
    }

    let p = Parser {
        file,
        escape: directives.escape,
    };
    Ok(Nodes {
        directives,
        warnings: Vec::new(),
        p,
        lines,
        failed: false,
    })
}

impl Nodes<'_> {
    /// The error for a file that turned out to hold no instruction.
    pub fn no_instructions(&self) -> Diagnostic {
        let end = self.p.file.text().len();
        Diagnostic::error(
            self.p.file,
            Span::new(end, end),
            "file with no instructions",
        )
        .with_help("a Dockerfile needs at least a FROM instruction")
    }

    fn next_node(&mut self) -> Result<Option<Node>, Diagnostic> {
        let file = self.p.file;
        let p = &self.p;
        let lines = &mut self.lines;
        let warnings = &mut self.warnings;
        let error = |span: Span, msg: &str| Diagnostic::error(file, span, msg.to_string());
        while let Some(first) = lines.next_checked(file)? {
            let lead = first.text.len() - first.text.trim_start().len();
            let trimmed = &first.text[lead..];
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let start_line = first.number;
            let mut end_line = first.number;
            let mut logical = Logical::default();
            let (piece, mut continues) = trim_continuation(trimmed, p.escape);
            logical.push(piece, first.start + lead);
            while continues {
                let Some(l) = lines.next_checked(file)? else {
                    break;
                };
                end_line = l.number;
                let t = l.text.trim_start();
                if t.starts_with('#') {
                    continue;
                }
                if t.is_empty() {
                    warnings.push(Diagnostic::warning(
                        file,
                        Span::new(l.start, l.start),
                        "empty continuation line (a future Dockerfile syntax may reject it)",
                    ));
                    continue;
                }
                let (piece, more) = trim_continuation(l.text, p.escape);
                logical.push(piece, l.start);
                continues = more;
            }
            if go_trim(&logical.text).is_empty() {
                continue;
            }
            let mut node = p.node(&logical, 0, logical.text.len(), 0)?;
            node.start_line = start_line;
            // Heredoc bodies follow the instruction's last physical line.
            let heredoc_cmd = match kind_of(&node.keyword.value) {
                "onbuild" => node
                    .inner
                    .as_ref()
                    .map(|n| (kind_of(&n.keyword.value), n.json)),
                c => Some((c, node.json)),
            };
            if let Some((cmd, json)) = heredoc_cmd
                && matches!(cmd, "run" | "copy" | "add")
                && !json
                && logical.text.contains("<<")
            {
                let mut docs = heredocs_from_line(&logical.text);
                for doc in &mut docs {
                    let mut terminated = false;
                    while let Some(l) = lines.next_checked(file)? {
                        end_line = l.number;
                        let candidate = if doc.chomp {
                            l.text.trim_start_matches('\t')
                        } else {
                            l.text
                        };
                        if candidate == doc.name {
                            terminated = true;
                            break;
                        }
                        doc.content
                            .push_str(l.raw.strip_suffix('\r').unwrap_or(l.raw));
                        doc.content.push('\n');
                    }
                    if !terminated {
                        return Err(error(
                            node.span,
                            &format!("unterminated heredoc `{}`", doc.name),
                        )
                        .with_help(format!(
                            "end the heredoc with a line that is exactly `{}`",
                            doc.name
                        )));
                    }
                }
                let is_onbuild = kind_of(&node.keyword.value) == "onbuild";
                match node.inner.as_mut() {
                    Some(inner) if is_onbuild => inner.heredocs = docs,
                    _ => node.heredocs = docs,
                }
            }
            node.end_line = end_line;
            return Ok(Some(node));
        }
        Ok(None)
    }
}

impl Iterator for Nodes<'_> {
    type Item = Result<Node, Diagnostic>;

    /// The next instruction; after an error, nothing more.
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.next_node() {
            Ok(n) => n.map(Ok),
            Err(d) => {
                self.failed = true;
                Some(Err(d))
            }
        }
    }
}

/// Heredoc markers of a logical line: shell words (quotes and escapes kept),
/// each `[n]<<[-]NAME`, or `<<` followed by the name as the next word.
fn heredocs_from_line(line: &str) -> Vec<Heredoc> {
    let lex = Lexer {
        raw_quotes: true,
        raw_escapes: true,
        skip_unset_env: true,
        ..Lexer::new('\\')
    };
    let Ok(words) = lex.words(line, &NoEnv) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut k = 0;
    while k < words.len() {
        let w = &words[k];
        k += 1;
        let Some((fd, chomp, mut rest)) = heredoc_marker(w) else {
            continue;
        };
        if rest.is_empty() {
            match words.get(k) {
                Some(next) if !next.contains('<') => {
                    rest = next;
                    k += 1;
                }
                _ => continue,
            }
        }
        if let Some((name, expand)) = heredoc_name(rest) {
            out.push(Heredoc {
                name,
                content: String::new(),
                expand,
                chomp,
                fd,
            });
        }
    }
    out
}

/// The heredoc name with quotes removed, and whether the body expands (it does
/// not when any part of the name was quoted).
fn heredoc_name(rest: &str) -> Option<(String, bool)> {
    let plain = Lexer {
        skip_unset_env: true,
        ..Lexer::new('\\')
    };
    let words = plain.words(rest, &NoEnv).ok()?;
    if words.len() != 1 {
        return None;
    }
    let raw = Lexer {
        raw_quotes: true,
        ..plain
    };
    let raw_words = raw.words(rest, &NoEnv).ok()?;
    let quotes = |s: &str| s.matches(['\'', '"']).count();
    let word = words.into_iter().next()?;
    let expand = raw_words
        .first()
        .is_some_and(|r| quotes(r) == quotes(&word));
    Some((word, expand))
}

impl Parser<'_> {
    fn error(&self, span: Span, msg: impl Into<String>) -> Diagnostic {
        Diagnostic::error(self.file, span, msg)
    }

    /// Forms the node for `logical.text[start..end]` (recursively for ONBUILD).
    fn node(
        &self,
        logical: &Logical,
        start: usize,
        end: usize,
        depth: usize,
    ) -> Result<Node, Diagnostic> {
        let text = &logical.text;
        let bytes = text.as_bytes();
        // Trim (Go TrimSpace) to the instruction itself.
        let slice = &text[start..end];
        let lead = slice.len() - slice.trim_start_matches(char::is_whitespace).len();
        let start = start + lead;
        let end = start + go_trim(&text[start..end]).len();
        let mut kw_end = start;
        while kw_end < end && !re_ws(bytes[kw_end]) {
            kw_end += 1;
        }
        let keyword = logical.word(start, kw_end);
        let mut rest_start = kw_end;
        while rest_start < end && re_ws(bytes[rest_start]) {
            rest_start += 1;
        }
        let (flags, args_start) = extract_flags(logical, rest_start, end);
        // The arguments: trimmed text after the flags.
        let mut a_start = args_start;
        let mut a_end = end;
        while a_start < a_end && !text.is_char_boundary(a_start) {
            a_start += 1;
        }
        let args_text = &text[a_start..a_end];
        let t = go_trim(args_text);
        let off = args_text.len() - args_text.trim_start_matches(char::is_whitespace).len();
        a_start += off;
        a_end = a_start + t.len();
        let mut node = Node {
            keyword,
            flags,
            args: Vec::new(),
            json: false,
            rest_span: logical.span(a_start, a_end),
            heredocs: Vec::new(),
            inner: None,
            span: logical.span(start, end),
            start_line: 0,
            end_line: 0,
        };
        let cmd = kind_of(&node.keyword.value);
        let rest = &text[a_start..a_end];
        match cmd {
            "from" | "expose" => node.args = ws_split(logical, a_start, a_end),
            "add" | "copy" | "volume" => match json_args(rest) {
                JsonArgs::Strings(items) => {
                    node.json = true;
                    node.args = items
                        .into_iter()
                        .map(|(v, s, e)| Word {
                            value: v,
                            span: logical.span(a_start + s, a_start + e),
                        })
                        .collect();
                }
                JsonArgs::NotStrings => return Err(self.not_strings(node.rest_span)),
                JsonArgs::NotJson => node.args = ws_split(logical, a_start, a_end),
            },
            "run" | "cmd" | "entrypoint" | "shell" => {
                self.maybe_json(&mut node, logical, a_start, a_end)?;
            }
            "healthcheck" => {
                if !rest.is_empty() {
                    let rb = rest.as_bytes();
                    let mut sep = 0;
                    while sep < rb.len() && !go_byte_space(rb[sep]) {
                        sep += 1;
                    }
                    let mut next = sep;
                    while next < rb.len() && go_byte_space(rb[next]) {
                        next += 1;
                    }
                    while next < rb.len() && !rest.is_char_boundary(next) {
                        next += 1;
                    }
                    let mut sep_b = sep;
                    while sep_b < rb.len() && !rest.is_char_boundary(sep_b) {
                        sep_b += 1;
                    }
                    let typ = logical.word(a_start, a_start + sep_b);
                    self.maybe_json(&mut node, logical, a_start + next, a_end)?;
                    node.args.insert(0, typ);
                }
            }
            "env" | "label" => {
                let key = if cmd == "env" { "ENV" } else { "LABEL" };
                node.args = self.name_val(logical, a_start, a_end, key)?;
            }
            "arg" => {
                node.args = parse_words(logical, a_start, a_end, self.escape);
            }
            "maintainer" | "user" | "workdir" | "stopsignal" => {
                if !rest.is_empty() {
                    node.args = vec![logical.word(a_start, a_end)];
                }
            }
            "onbuild" => {
                if !rest.is_empty() {
                    if depth >= MAX_ONBUILD_NESTING {
                        return Err(self
                            .error(
                                node.keyword.span,
                                format!("ONBUILD nested deeper than {MAX_ONBUILD_NESTING} levels"),
                            )
                            .with_help("an ONBUILD trigger cannot be another ONBUILD"));
                    }
                    node.inner = Some(Box::new(self.node(logical, a_start, a_end, depth + 1)?));
                }
            }
            _ => {
                // Unknown instruction: the reference keeps one empty argument.
                node.args = vec![Word {
                    value: String::new(),
                    span: node.rest_span,
                }];
            }
        }
        Ok(node)
    }

    fn not_strings(&self, span: Span) -> Diagnostic {
        self.error(
            span,
            "when using JSON array syntax, arrays must be comprised of strings only",
        )
        .with_help("quote every element, e.g. [\"echo\", \"1\"]")
    }

    fn maybe_json(
        &self,
        node: &mut Node,
        logical: &Logical,
        start: usize,
        end: usize,
    ) -> Result<(), Diagnostic> {
        let rest = &logical.text[start..end];
        if rest.is_empty() {
            return Ok(());
        }
        match json_args(rest) {
            JsonArgs::Strings(items) => {
                node.json = true;
                node.args = items
                    .into_iter()
                    .map(|(v, s, e)| Word {
                        value: v,
                        span: logical.span(start + s, start + e),
                    })
                    .collect();
            }
            JsonArgs::NotStrings => return Err(self.not_strings(logical.span(start, end))),
            JsonArgs::NotJson => node.args = vec![logical.word(start, end)],
        }
        Ok(())
    }

    /// ENV/LABEL: legacy `KEY value` or `k=v k2=v2`.
    fn name_val(
        &self,
        logical: &Logical,
        start: usize,
        end: usize,
        key: &str,
    ) -> Result<Vec<Word>, Diagnostic> {
        let words = parse_words(logical, start, end, self.escape);
        let Some(first) = words.first() else {
            return Ok(Vec::new());
        };
        if !first.value.contains('=') {
            let bytes = logical.text.as_bytes();
            let mut k = start;
            while k < end && !re_ws(bytes[k]) {
                k += 1;
            }
            let mut v = k;
            while v < end && re_ws(bytes[v]) {
                v += 1;
            }
            if k == end {
                return Err(self
                    .error(
                        logical.span(start, end),
                        format!("{key} must have two arguments"),
                    )
                    .with_help(format!("write `{key} name=value`")));
            }
            let sep = Word {
                value: String::new(),
                span: logical.span(end, end),
            };
            return Ok(vec![logical.word(start, k), logical.word(v, end), sep]);
        }
        let mut out = Vec::with_capacity(words.len() * 3);
        for w in words {
            let Some(eq) = w.value.find('=') else {
                return Err(self
                    .error(
                        w.span,
                        format!(
                            "Syntax error - can't find = in {:?}. Must be of the form: name=value",
                            w.value
                        ),
                    )
                    .with_label("no `=`"));
            };
            // Spans: the key ends at the `=`; approximate inside rewritten words.
            let key_span = Span::new(w.span.start, (w.span.start + eq).min(w.span.end));
            let val_span = Span::new((w.span.start + eq + 1).min(w.span.end), w.span.end);
            out.push(Word {
                value: w.value[..eq].to_string(),
                span: key_span,
            });
            out.push(Word {
                value: w.value[eq + 1..].to_string(),
                span: val_span,
            });
            out.push(Word {
                value: "=".into(),
                span: Span::new(key_span.end, val_span.start),
            });
        }
        Ok(out)
    }
}

/// Splits on runs of `[\t\v\f\r ]`.
fn ws_split(logical: &Logical, start: usize, end: usize) -> Vec<Word> {
    let bytes = logical.text.as_bytes();
    let mut out = Vec::new();
    let mut k = start;
    while k < end {
        while k < end && re_ws(bytes[k]) {
            k += 1;
        }
        let s = k;
        while k < end && !re_ws(bytes[k]) {
            k += 1;
        }
        if k > s {
            out.push(logical.word(s, k));
        }
    }
    out
}

/// Reads `--flags` from the start of `text[start..end]`, byte by byte as the
/// reference does; returns them and where the arguments start.
fn extract_flags(logical: &Logical, start: usize, end: usize) -> (Vec<Word>, usize) {
    let b = logical.text.as_bytes();
    let mut flags = Vec::new();
    let mut pos = start;
    loop {
        while pos < end && go_byte_space(b[pos]) {
            pos += 1;
        }
        if pos >= end || b[pos] != b'-' || pos + 1 >= end || b[pos + 1] != b'-' {
            return (flags, pos);
        }
        // In a word that starts with `--`.
        let word_start = pos;
        let mut word: Vec<u8> = Vec::new();
        let mut blank_ok = false;
        let mut quote: Option<u8> = None;
        while pos < end {
            let ch = b[pos];
            match quote {
                None => {
                    if go_byte_space(ch) {
                        break;
                    }
                    if ch == b'\'' || ch == b'"' {
                        quote = Some(ch);
                        blank_ok = true;
                        pos += 1;
                        continue;
                    }
                    if ch == b'\\' {
                        if pos + 1 == end {
                            pos += 1;
                            continue;
                        }
                        pos += 1;
                    }
                    word.push(b[pos]);
                    pos += 1;
                }
                Some(q) => {
                    if ch == q {
                        quote = None;
                        pos += 1;
                        continue;
                    }
                    if ch == b'\\' {
                        if pos + 1 == end {
                            quote = None;
                            pos += 1;
                            continue;
                        }
                        pos += 1;
                    }
                    word.push(b[pos]);
                    pos += 1;
                }
            }
        }
        if word == b"--" {
            // `--` ends the flags and is dropped.
            while pos < end && go_byte_space(b[pos]) {
                pos += 1;
            }
            return (flags, pos);
        }
        if blank_ok || !word.is_empty() {
            // Quirk kept from the reference: bytes become runes one by one, so
            // non-ASCII text turns into Latin-1 mojibake.
            let value: String = word.iter().map(|&c| c as char).collect();
            flags.push(Word {
                value,
                span: logical.span(word_start, pos),
            });
        }
    }
}

/// The ENV/LABEL/ARG tokenizer: words separated by whitespace outside quotes;
/// quotes and escapes are kept in the words.
fn parse_words(logical: &Logical, start: usize, end: usize, escape: char) -> Vec<Word> {
    // Every word is a substring of the text (quotes and escapes stay in it);
    // only an escape at the very end is dropped. So words are found as ranges
    // and copied once.
    let text = &logical.text[start..end];
    let mut out = Vec::new();
    let mut word_start: Option<usize> = None;
    let mut blank_ok = false;
    let mut quote: Option<char> = None;
    let mut cut = text.len();
    let mut iter = text.char_indices();
    let emit = |s: usize, e: usize, blank_ok: bool, out: &mut Vec<Word>| {
        if blank_ok || e > s {
            out.push(logical.word(start + s, start + e));
        }
    };
    while let Some((pos, ch)) = iter.next() {
        match quote {
            None => {
                if ch.is_whitespace() {
                    if let Some(s) = word_start.take() {
                        emit(s, pos, blank_ok, &mut out);
                        blank_ok = false;
                    }
                    continue;
                }
                if word_start.is_none() {
                    word_start = Some(pos);
                }
                if ch == '\'' || ch == '"' {
                    quote = Some(ch);
                    blank_ok = true;
                } else if ch == escape && iter.next().is_none() {
                    cut = pos;
                }
            }
            Some(q) => {
                if ch == q {
                    quote = None;
                } else if ch == escape && q != '\'' && iter.next().is_none() {
                    cut = pos;
                }
            }
        }
    }
    if let Some(s) = word_start {
        emit(s, cut.max(s), blank_ok, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Ast {
        parse(&SourceFile::new("Dockerfile", text)).unwrap()
    }

    #[test]
    fn continuation_rules() {
        assert_eq!(trim_continuation("a \\", '\\'), ("a ", true));
        assert_eq!(trim_continuation("a\\\\", '\\'), ("a\\\\", false));
        assert_eq!(trim_continuation("\\", '\\'), ("", true));
        assert_eq!(trim_continuation("a `  \t", '`'), ("a ", true));
    }

    #[test]
    fn spans_survive_continuations() {
        let text = "FROM a\nCOPY x \\\n  y /dest\n";
        let ast = p(text);
        let copy = &ast.nodes[1];
        let y = &copy.args[1];
        assert_eq!(y.value, "y");
        assert_eq!(&text[y.span.start..y.span.end], "y");
        assert_eq!((copy.start_line, copy.end_line), (2, 3));
    }

    #[test]
    fn directives_and_errors() {
        let ast = p("# syntax=docker/dockerfile:1\n#escape=`\nFROM a\n");
        assert_eq!(ast.directives.escape, '`');
        assert_eq!(ast.directives.syntax.unwrap().value, "docker/dockerfile:1");
        assert!(parse(&SourceFile::new("D", "# escape=x\nFROM a\n")).is_err());
        assert!(parse(&SourceFile::new("D", "# escape=\\\n# escape=`\nFROM a\n")).is_err());
        assert!(parse(&SourceFile::new("D", "# only\n\n")).is_err());
    }

    #[test]
    fn json_detection() {
        assert!(matches!(json_args(r#"["a", "b"]"#), JsonArgs::Strings(v) if v.len() == 2));
        assert!(matches!(json_args(r#"["a", 1]"#), JsonArgs::NotStrings));
        assert!(matches!(json_args(r#"["a"] # c"#), JsonArgs::NotJson));
        assert!(matches!(json_args("['a']"), JsonArgs::NotJson));
        assert!(matches!(json_args(r#"["\ud83d\ude00"]"#), JsonArgs::Strings(v) if v[0].0 == "😀"));
    }

    #[test]
    fn heredocs_are_read() {
        let ast = p("FROM a\nRUN <<EOF bash\necho hi\nEOF\nRUN true\n");
        assert_eq!(ast.nodes[1].heredocs[0].content, "echo hi\n");
        assert_eq!(ast.nodes[1].end_line, 4);
        assert_eq!(ast.nodes[2].command(), "run");
        assert!(parse(&SourceFile::new("D", "FROM a\nRUN <<EOF\nnever ends\n")).is_err());
    }

    #[test]
    fn issue_10_onbuild_nesting_is_bounded() {
        let deep = format!("FROM a\n{}RUN x\n", "ONBUILD ".repeat(60_000 / 8));
        let e = parse(&SourceFile::new("D", deep)).unwrap_err();
        assert!(
            e.message.contains("ONBUILD nested deeper than"),
            "{}",
            e.message
        );
        let ok = format!("FROM a\n{}RUN x\n", "ONBUILD ".repeat(MAX_ONBUILD_NESTING));
        assert!(parse(&SourceFile::new("D", ok)).is_ok());
    }

    #[test]
    fn long_continuations_stay_linear() {
        // 200,000 continuation lines: spans are looked up by binary search.
        let mut text = String::from("FROM a\nENV \\\n");
        for i in 0..200_000 {
            text.push_str(&format!("  V{i}=x \\\n"));
        }
        text.push_str("  LAST=1\n");
        let started = std::time::Instant::now();
        let ast = p(&text);
        assert_eq!(ast.nodes[1].args.len(), 3 * 200_001);
        let last = ast.nodes[1].args.last().unwrap();
        assert_eq!(&text[last.span.start..last.span.end], "=");
        assert!(started.elapsed().as_secs() < 20);
    }
}
