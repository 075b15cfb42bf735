//! Shell-style word expansion as BuildKit's `shell.Lex` does it: quote
//! removal, escapes, `$VAR`, `${VAR}` and the modifiers `:-`, `-`, `:+`, `+`,
//! `:?`, `?`, `#`, `##`, `%`, `%%`, `/` and `//`, and splitting into words.
//!
//! The same lexer, with its `raw_*` switches, finds heredoc names. Pure: the
//! environment is passed in, and the names it was asked for are recorded so
//! lowering can warn about undeclared build args.

use std::collections::BTreeSet;

/// Where variables come from.
pub trait Env {
    /// The value of `name`, if set.
    fn get(&self, name: &str) -> Option<String>;
}

/// No variables at all.
pub struct NoEnv;

impl Env for NoEnv {
    fn get(&self, _: &str) -> Option<String> {
        None
    }
}

impl<F: Fn(&str) -> Option<String>> Env for F {
    fn get(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// How deeply `${…}` substitutions may nest inside each other. Real
/// Dockerfiles nest two or three; the limit keeps the recursive descent well
/// inside a 2 MiB thread stack (the size Rust gives threads) in debug builds.
pub const MAX_NESTING: usize = 64;

/// The longest result one word may expand to. A value can be doubled by each
/// `ENV A=$A$A`, and `${A//x/…}` multiplies it: the limit stops that before
/// it allocates. (Linux refuses a single environment string over 128 KiB
/// anyway, `MAX_ARG_STRLEN`.)
pub const MAX_EXPANDED: usize = 16 << 20;

/// The longest `#`, `%` or `/` pattern, in characters, and the longest value
/// one applies to. Patterns become regexes whose matching costs up to the
/// pattern's size times the value's: a 70,000-character pattern over a
/// 70,000-byte value took minutes.
pub const MAX_PATTERN: usize = 256;
/// See [`MAX_PATTERN`].
pub const MAX_PATTERN_VALUE: usize = 1 << 20;

/// Why a word could not be expanded. The messages follow BuildKit's lexer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    /// A quote or `${` that never closes.
    #[error("unexpected end of statement while looking for matching {0}")]
    Unterminated(String),
    /// `${` without its `}` (or `${VAR/` without its `/`).
    #[error("syntax error: missing '{0}'{1}")]
    Missing(char, &'static str),
    /// `${}`, `${{`, `${:`.
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    /// `${VAR:x}` and other modifiers the shell lexer does not know.
    #[error("unsupported modifier ({0}) in substitution")]
    UnsupportedModifier(String),
    /// `${VAR:?message}` or `${VAR?message}` on an unset (or empty) variable.
    #[error("{name}: {message}")]
    Required {
        /// The variable.
        name: String,
        /// The message written in the Dockerfile, or the default one.
        message: String,
    },
    /// A `#`, `%` or `/` pattern that is not a valid shell pattern.
    #[error("invalid pattern ({pattern}) in substitution{why}")]
    Pattern {
        /// The pattern as written.
        pattern: String,
        /// What is wrong with it (may be empty).
        why: String,
    },
    /// A pattern longer than [`MAX_PATTERN`], or applied to a value longer
    /// than [`MAX_PATTERN_VALUE`].
    #[error(
        "pattern substitution too large: patterns are limited to {MAX_PATTERN} characters and the values they apply to to {} MiB",
        MAX_PATTERN_VALUE >> 20
    )]
    PatternTooLarge,
    /// `${A:-${B:-${C:-…}}}` deeper than [`MAX_NESTING`].
    #[error("substitutions nested deeper than {MAX_NESTING} levels")]
    TooDeep,
    /// The result would be longer than [`MAX_EXPANDED`] bytes.
    #[error("the expansion is longer than {} MiB", MAX_EXPANDED >> 20)]
    TooLong,
}

impl ExpandError {
    /// A short, stable name of the kind of error, for statistics (the fuzzer
    /// counts which kinds it reached).
    pub fn class(&self) -> &'static str {
        match self {
            ExpandError::Unterminated(_) => "unterminated",
            ExpandError::Missing(..) => "missing",
            ExpandError::BadSubstitution => "bad-substitution",
            ExpandError::UnsupportedModifier(_) => "unsupported-modifier",
            ExpandError::Required { .. } => "required",
            ExpandError::Pattern { .. } => "pattern",
            ExpandError::PatternTooLarge => "pattern-too-large",
            ExpandError::TooDeep => "too-deep",
            ExpandError::TooLong => "too-long",
        }
    }
}

type Result<T> = std::result::Result<T, ExpandError>;

/// Lexer settings (BuildKit's `shell.Lex`).
#[derive(Debug, Clone, Copy)]
pub struct Lexer {
    /// The escape character (`\` or `` ` ``).
    pub escape: char,
    /// Keep quote characters in the result.
    pub raw_quotes: bool,
    /// Keep escape characters in the result.
    pub raw_escapes: bool,
    /// Treat quotes as ordinary characters.
    pub skip_process_quotes: bool,
    /// Leave references to unset variables as written.
    pub skip_unset_env: bool,
}

impl Lexer {
    /// A lexer with the given escape character and default settings.
    pub fn new(escape: char) -> Self {
        Lexer {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_process_quotes: false,
            skip_unset_env: false,
        }
    }

    /// Expands `s` as one word.
    ///
    /// # Errors
    /// Unterminated quotes, bad substitutions, `${VAR:?msg}` on an unset variable.
    pub fn word(&self, s: &str, env: &dyn Env) -> Result<String> {
        Ok(self.run(s, env)?.0)
    }

    /// Expands `s` and splits it into words: unquoted expansions split on
    /// whitespace, quoted text does not.
    ///
    /// # Errors
    /// As [`Lexer::word`].
    pub fn words(&self, s: &str, env: &dyn Env) -> Result<Vec<String>> {
        Ok(self.run(s, env)?.1)
    }

    /// Expands `s` as one word and returns the variable names it referenced.
    ///
    /// # Errors
    /// As [`Lexer::word`].
    pub fn word_with_names(&self, s: &str, env: &dyn Env) -> Result<(String, BTreeSet<String>)> {
        let mut sw = ShellWord::new(self, s, env);
        let (w, _) = sw.process_stop_on(None, self.raw_escapes)?;
        Ok((w, sw.names))
    }

    fn run(&self, s: &str, env: &dyn Env) -> Result<(String, Vec<String>)> {
        let mut sw = ShellWord::new(self, s, env);
        sw.process_stop_on(None, self.raw_escapes)
    }
}

struct ShellWord<'a> {
    chars: Vec<char>,
    pos: usize,
    env: &'a dyn Env,
    escape: char,
    raw_quotes: bool,
    raw_escapes: bool,
    skip_process_quotes: bool,
    skip_unset_env: bool,
    names: BTreeSet<String>,
    /// `${` substitutions currently open.
    depth: usize,
}

#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() {
            if self.in_word && !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }

    fn add_raw_char(&mut self, ch: char) {
        self.word.push(ch);
        self.in_word = true;
    }

    fn add_string(&mut self, s: &str) {
        for ch in s.chars() {
            self.add_char(ch);
        }
    }

    fn add_raw_string(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(std::mem::take(&mut self.word));
        }
        self.words
    }
}

impl<'a> ShellWord<'a> {
    fn new(l: &Lexer, s: &str, env: &'a dyn Env) -> Self {
        ShellWord {
            chars: s.chars().collect(),
            pos: 0,
            env,
            escape: l.escape,
            raw_quotes: l.raw_quotes,
            raw_escapes: l.raw_escapes,
            skip_process_quotes: l.skip_process_quotes,
            skip_unset_env: l.skip_unset_env,
            names: BTreeSet::new(),
            depth: 0,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn get_env(&mut self, name: &str) -> Option<String> {
        self.names.insert(name.to_string());
        self.env.get(name)
    }

    /// Processes up to `stop` (consumed) or the end; returns the word and the
    /// words. `raw_escapes` applies for the duration of this call.
    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>)> {
        let saved = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        let r = self.stop_on_inner(stop);
        self.raw_escapes = saved;
        r
    }

    fn stop_on_inner(&mut self, stop: Option<char>) -> Result<(String, Vec<String>)> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.next();
                return Ok((result, words.finish()));
            }
            let special = ch == '$' || (!self.skip_process_quotes && (ch == '\'' || ch == '"'));
            if special {
                let tmp = match ch {
                    '$' => self.process_dollar()?,
                    '\'' => self.process_single_quote()?,
                    _ => self.process_double_quote()?,
                };
                if result.len() + tmp.len() > MAX_EXPANDED {
                    return Err(ExpandError::TooLong);
                }
                result.push_str(&tmp);
                if ch == '$' {
                    words.add_string(&tmp);
                } else {
                    words.add_raw_string(&tmp);
                }
                continue;
            }
            let mut ch = match self.next() {
                Some(c) => c,
                None => break,
            };
            if ch == self.escape {
                if self.raw_escapes {
                    words.add_raw_char(ch);
                    result.push(ch);
                }
                // The escape character escapes the next one, except at the end.
                match self.next() {
                    None => break,
                    Some(c) => ch = c,
                }
                words.add_raw_char(ch);
            } else {
                words.add_char(ch);
            }
            result.push(ch);
        }
        if let Some(s) = stop {
            return Err(ExpandError::Unterminated(s.to_string()));
        }
        Ok((result, words.finish()))
    }

    fn process_single_quote(&mut self) -> Result<String> {
        // Everything up to the next ' is literal; ' cannot be escaped.
        let mut result = String::new();
        let open = self.next();
        if self.raw_quotes
            && let Some(c) = open
        {
            result.push(c);
        }
        loop {
            match self.next() {
                None => {
                    return Err(ExpandError::Unterminated("single-quote".into()));
                }
                Some('\'') => {
                    if self.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    fn process_double_quote(&mut self) -> Result<String> {
        // Literal except $ and the escape character, which escapes only
        // `"`, `$` and itself.
        let mut result = String::new();
        let open = self.next();
        if self.raw_quotes
            && let Some(c) = open
        {
            result.push(c);
        }
        loop {
            match self.peek() {
                None => {
                    return Err(ExpandError::Unterminated("double-quote".into()));
                }
                Some('"') => {
                    self.next();
                    if self.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let v = self.process_dollar()?;
                    if result.len() + v.len() > MAX_EXPANDED {
                        return Err(ExpandError::TooLong);
                    }
                    result.push_str(&v);
                }
                Some(_) => {
                    let Some(mut ch) = self.next() else { continue };
                    if ch == self.escape {
                        if self.raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            None => continue,
                            Some(c) if c == '"' || c == '$' || c == self.escape => {
                                self.next();
                                ch = c;
                            }
                            Some(c) => {
                                if !self.raw_escapes {
                                    result.push(ch);
                                }
                                self.next();
                                ch = c;
                            }
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_ascii_digit() {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    self.next();
                    name.push(d);
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.next();
                return ch.to_string();
            }
            if !ch.is_alphanumeric() && ch != '_' {
                break;
            }
            self.next();
            name.push(ch);
        }
        name
    }

    fn process_dollar(&mut self) -> Result<String> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".into());
            }
            let value = self.get_env(&name);
            if value.is_none() && self.skip_unset_env {
                return Ok(format!("${name}"));
            }
            return Ok(value.unwrap_or_default());
        }
        self.next();
        // `${` is where the lexer recurses (its word may hold more `${`): bound
        // it, so a deep nesting is an error instead of a stack overflow.
        if self.depth >= MAX_NESTING {
            return Err(ExpandError::TooDeep);
        }
        self.depth += 1;
        let r = self.process_braced();
        self.depth -= 1;
        r
    }

    /// `${…}` after the `${`.
    fn process_braced(&mut self) -> Result<String> {
        match self.peek() {
            None => return Err(ExpandError::Missing('}', "")),
            Some('{' | '}' | ':') => return Err(ExpandError::BadSubstitution),
            _ => {}
        }
        let name = self.process_name();
        let mut ch = self.next();
        let mut chs: String = ch.map(String::from).unwrap_or_default();
        let mut null_is_unset = false;
        match ch {
            Some('}') => {
                let value = self.get_env(&name);
                if value.is_none() && self.skip_unset_env {
                    return Ok(format!("${{{name}}}"));
                }
                Ok(value.unwrap_or_default())
            }
            Some(':' | '+' | '-' | '?' | '#' | '%') => {
                if ch == Some(':') {
                    null_is_unset = true;
                    ch = self.next();
                    if let Some(c) = ch {
                        chs.push(c);
                    }
                }
                let op = ch;
                let raw = matches!(op, Some('#' | '%'));
                if null_is_unset && raw {
                    return Err(ExpandError::UnsupportedModifier(chs));
                }
                if !matches!(op, Some('+' | '-' | '?' | '#' | '%')) {
                    // `${VAR:x}`: still consume the word so the error points at the modifier.
                    return Err(ExpandError::UnsupportedModifier(chs));
                }
                let word = match self.process_stop_on(Some('}'), raw) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err(ExpandError::Missing('}', ""));
                        }
                        return Err(e);
                    }
                };
                let value = self.get_env(&name);
                if self.skip_unset_env && value.is_none() {
                    return Ok(format!("${{{name}{chs}{word}}}"));
                }
                let set = value.is_some();
                let value = value.unwrap_or_default();
                let empty_as_unset = null_is_unset && value.is_empty();
                match op {
                    Some('-') => Ok(if !set || empty_as_unset { word } else { value }),
                    Some('+') => Ok(if !set || empty_as_unset {
                        String::new()
                    } else {
                        word
                    }),
                    Some('?') => {
                        if !set {
                            let m = if word.is_empty() {
                                "is not allowed to be unset".to_string()
                            } else {
                                word
                            };
                            return Err(ExpandError::Required { name, message: m });
                        }
                        if empty_as_unset {
                            let m = if word.is_empty() {
                                "is not allowed to be empty".to_string()
                            } else {
                                word
                            };
                            return Err(ExpandError::Required { name, message: m });
                        }
                        Ok(value)
                    }
                    Some(c @ ('#' | '%')) => {
                        let (greedy, pattern) = match word.strip_prefix(c) {
                            Some(rest) => (true, rest.to_string()),
                            None => (false, word),
                        };
                        if c == '%' {
                            trim_suffix(&pattern, &value, greedy)
                        } else {
                            trim_prefix(&pattern, &value, greedy)
                        }
                    }
                    _ => Err(ExpandError::UnsupportedModifier(chs)),
                }
            }
            Some('/') => {
                let replace_all = self.peek() == Some('/');
                if replace_all {
                    self.next();
                }
                let pattern = match self.process_stop_on(Some('/'), true) {
                    Ok((p, _)) => p,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err(ExpandError::Missing('/', " in ${}"));
                        }
                        return Err(e);
                    }
                };
                let replacement = match self.process_stop_on(Some('}'), true) {
                    Ok((r, _)) => r,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err(ExpandError::Missing('}', ""));
                        }
                        return Err(e);
                    }
                };
                let value = self.get_env(&name);
                if self.skip_unset_env && value.is_none() {
                    return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
                }
                let value = value.unwrap_or_default();
                if value.len() > MAX_PATTERN_VALUE {
                    return Err(ExpandError::PatternTooLarge);
                }
                let re = shell_pattern(&pattern, true, false)?;
                // Each match can grow the value by the replacement: refuse
                // before allocating a result over the limit.
                let matches = if replace_all {
                    re.find_iter(&value).count()
                } else {
                    usize::from(re.is_match(&value))
                };
                if matches
                    .saturating_mul(replacement.len())
                    .saturating_add(value.len())
                    > MAX_EXPANDED
                {
                    return Err(ExpandError::TooLong);
                }
                if replace_all {
                    Ok(re
                        .replace_all(&value, regex::NoExpand(&replacement))
                        .into_owned())
                } else {
                    Ok(re
                        .replace(&value, regex::NoExpand(&replacement))
                        .into_owned())
                }
            }
            _ => Err(ExpandError::UnsupportedModifier(chs)),
        }
    }
}

/// A shell glob (`*`, `?`, `\` escapes) as a regex; `*` is lazy unless greedy.
fn shell_pattern(pattern: &str, greedy: bool, anchored: bool) -> Result<regex::Regex> {
    if pattern.chars().count() > MAX_PATTERN {
        return Err(ExpandError::PatternTooLarge);
    }
    let mut out = String::new();
    if anchored {
        out.push('^');
    }
    let star = if greedy { ".*" } else { ".*?" };
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let tok = chars[i];
        i += 1;
        match tok {
            '*' => out.push_str(star),
            '?' => out.push('.'),
            '\\' => {
                if chars.get(i) == Some(&'}') {
                    continue;
                }
                let Some(&n) = chars.get(i) else {
                    return Err(ExpandError::Pattern {
                        pattern: pattern.to_string(),
                        why: String::new(),
                    });
                };
                i += 1;
                if !matches!(n, '*' | '?' | '\\') {
                    return Err(ExpandError::Pattern {
                        pattern: pattern.to_string(),
                        why: format!(": invalid escape '\\{n}'"),
                    });
                }
                out.push('\\');
                out.push(n);
            }
            c => out.push_str(&regex::escape(&c.to_string())),
        }
    }
    regex::Regex::new(&out).map_err(|e| ExpandError::Pattern {
        pattern: pattern.to_string(),
        why: format!(": {e}"),
    })
}

fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> Result<String> {
    if value.len() > MAX_PATTERN_VALUE {
        return Err(ExpandError::PatternTooLarge);
    }
    let re = shell_pattern(pattern, greedy, true)?;
    Ok(match re.find(value) {
        Some(m) => value[m.end()..].to_string(),
        None => value.to_string(),
    })
}

/// Reverses a pattern while keeping each `\x` escape pair in order.
fn reverse_pattern(p: &str) -> String {
    let chars: Vec<char> = p.chars().collect();
    let mut out: Vec<char> = Vec::with_capacity(chars.len());
    let mut i = 0;
    let mut pieces: Vec<Vec<char>> = Vec::new();
    while i < chars.len() {
        if chars[i] == '\\' && i + 1 < chars.len() {
            pieces.push(vec![chars[i], chars[i + 1]]);
            i += 2;
        } else {
            pieces.push(vec![chars[i]]);
            i += 1;
        }
    }
    for piece in pieces.into_iter().rev() {
        out.extend(piece);
    }
    out.into_iter().collect()
}

fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> Result<String> {
    // Regexes find the leftmost match; reversing both turns "shortest/longest
    // suffix" into "shortest/longest prefix".
    let rev_value: String = value.chars().rev().collect();
    let trimmed = trim_prefix(&reverse_pattern(pattern), &rev_value, greedy)?;
    Ok(trimmed.chars().rev().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "PWD" => Some("/home".into()),
            "SHELL" => Some("bash".into()),
            "NULL" => Some(String::new()),
            "FILE" => Some("archive.tar.gz".into()),
            _ => None,
        }
    }

    fn w(s: &str) -> Result<String> {
        Lexer::new('\\').word(s, &env)
    }

    #[test]
    fn modifiers_beyond_the_conformance_file() {
        assert_eq!(w("${FILE%.*}").unwrap(), "archive.tar");
        assert_eq!(w("${FILE%%.*}").unwrap(), "archive");
        assert_eq!(w("${FILE#*.}").unwrap(), "tar.gz");
        assert_eq!(w("${FILE##*.}").unwrap(), "gz");
        assert_eq!(w("${FILE/a/A}").unwrap(), "Archive.tar.gz");
        assert_eq!(w("${FILE//a/A}").unwrap(), "Archive.tAr.gz");
        assert_eq!(w("${XXX-def}").unwrap(), "def");
        assert_eq!(w("${NULL-def}").unwrap(), "");
        assert_eq!(w("${NULL+set}").unwrap(), "set");
        assert_eq!(w("${FILE#}").unwrap(), "archive.tar.gz");
        assert!(w("${FILE:#x}").is_err());
    }

    #[test]
    fn skip_unset_keeps_references() {
        let l = Lexer {
            skip_unset_env: true,
            ..Lexer::new('\\')
        };
        assert_eq!(l.word("$EOF", &NoEnv).unwrap(), "$EOF");
        assert_eq!(l.word("${EOF}", &NoEnv).unwrap(), "${EOF}");
    }

    #[test]
    fn names_are_recorded() {
        let (_, names) = Lexer::new('\\')
            .word_with_names("$A ${B:-$C}", &NoEnv)
            .unwrap();
        assert_eq!(names.into_iter().collect::<Vec<_>>(), ["A", "B", "C"]);
    }

    #[test]
    fn backtick_escape() {
        assert_eq!(Lexer::new('`').word("a`$b", &NoEnv).unwrap(), "a$b");
    }

    /// `${A:-${A:-…x…}}` nested `n` deep, in both the plain and quoted forms.
    fn nested(n: usize, quoted: bool) -> String {
        let open = if quoted { "\"${A:-" } else { "${A:-" };
        let close = if quoted { "}\"" } else { "}" };
        format!("{}x{}", open.repeat(n), close.repeat(n))
    }

    #[test]
    fn issue_10_deep_nesting_is_an_error_not_a_stack_overflow() {
        for quoted in [false, true] {
            for n in [MAX_NESTING + 1, 5_000, 100_000] {
                assert_eq!(w(&nested(n, quoted)), Err(ExpandError::TooDeep));
                // Unterminated as well: still bounded.
                let open = nested(n, quoted);
                assert!(w(&open[..open.len() / 2]).is_err());
            }
            assert_eq!(w(&nested(MAX_NESTING, quoted)).unwrap(), "x");
        }
    }

    #[test]
    fn the_deepest_nesting_allowed_fits_a_small_stack() {
        // Debug build, 512 KiB: a quarter of what a test or rayon thread gets.
        let text = nested(MAX_NESTING, true);
        let r = std::thread::Builder::new()
            .stack_size(512 << 10)
            .spawn(move || Lexer::new('\\').word(&text, &NoEnv))
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(r.unwrap(), "x");
    }

    #[test]
    fn results_are_bounded() {
        let big = "y".repeat(MAX_EXPANDED / 4 + 1);
        let env = |n: &str| (n == "B").then(|| big.clone());
        let l = Lexer::new('\\');
        assert_eq!(l.word("$B$B$B", &env).unwrap().len(), 3 * big.len());
        assert_eq!(l.word("$B$B$B$B", &env), Err(ExpandError::TooLong));
        assert_eq!(l.word("\"$B$B$B$B\"", &env), Err(ExpandError::TooLong));
        // A replacement that multiplies the value is refused before it is built.
        assert_eq!(l.word("${B//y/z}", &env), Err(ExpandError::PatternTooLarge));
        let mid = "y".repeat(MAX_PATTERN_VALUE);
        let env = |n: &str| (n == "B").then(|| mid.clone());
        assert_eq!(l.word("${B//y/z}", &env).unwrap().len(), mid.len());
        let r = format!("${{B//y/{}}}", "z".repeat(17));
        assert_eq!(l.word(&r, &env), Err(ExpandError::TooLong));
        // Patterns are bounded too: their cost is pattern × value.
        let p = format!("${{B#{}}}", "*y".repeat(MAX_PATTERN));
        assert_eq!(l.word(&p, &env), Err(ExpandError::PatternTooLarge));
    }

    #[test]
    fn error_messages_follow_buildkit() {
        let msg = |s: &str| w(s).unwrap_err().to_string();
        assert_eq!(msg("${"), "syntax error: missing '}'");
        assert_eq!(msg("${}"), "syntax error: bad substitution");
        assert_eq!(msg("${A:x}"), "unsupported modifier (:x) in substitution");
        assert_eq!(msg("${A/x"), "syntax error: missing '/' in ${}");
        assert_eq!(msg("${A:?}"), "A: is not allowed to be unset");
        assert_eq!(msg("${NULL:?oops}"), "NULL: oops");
        assert_eq!(
            msg("'abc"),
            "unexpected end of statement while looking for matching single-quote"
        );
        assert_eq!(
            msg("${FILE#\\a}"),
            "invalid pattern (\\a) in substitution: invalid escape '\\a'"
        );
    }
}
