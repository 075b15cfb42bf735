//! Path patterns as Docker reads them.
//!
//! Two flavours, both pure functions of strings:
//! - [`Glob`]: Go's `filepath.Match` on a single path, used for COPY sources
//!   (`*`, `?`, `[a-z]`, `[^a]`, `\` escapes; `*` never crosses `/`).
//! - [`PatternSet`]: the `.dockerignore` / `--exclude` matcher of
//!   `moby/patternmatcher`: cleaned patterns, `**`, `!` exceptions where the last
//!   matching pattern wins, and a pattern matching a parent directory matching
//!   everything below it.
//!
//! Leaf module: imports nothing from the crate.

use regex::Regex;

/// A malformed pattern.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PatternError {
    /// `[` without a closing `]`, or an empty or inverted range.
    #[error("malformed character class in pattern `{0}`")]
    BadClass(String),
    /// A lone `!`.
    #[error("illegal exclusion pattern `!`")]
    LoneBang,
}

/// Whether `s` contains glob metacharacters (`*`, `?`, `[`), so callers can take
/// the fast path of a plain lookup otherwise.
pub fn has_wildcards(s: &str) -> bool {
    let mut escaped = false;
    for c in s.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '*' | '?' | '[' => return true,
            _ => {}
        }
    }
    false
}

/// Go's `filepath.Match` pattern, compiled.
#[derive(Debug, Clone)]
pub struct Glob {
    re: Regex,
}

impl Glob {
    /// Compiles a `filepath.Match` pattern.
    ///
    /// # Errors
    /// [`PatternError::BadClass`] for a malformed `[...]`.
    pub fn new(pattern: &str) -> Result<Self, PatternError> {
        let mut re = String::from("^");
        let chars: Vec<char> = pattern.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            match c {
                '*' => re.push_str("[^/]*"),
                '?' => re.push_str("[^/]"),
                '[' => i = push_class(&chars, i, &mut re, pattern)?,
                '\\' if i + 1 < chars.len() => {
                    i += 1;
                    push_literal(&mut re, chars[i]);
                }
                _ => push_literal(&mut re, c),
            }
            i += 1;
        }
        re.push('$');
        let re = Regex::new(&re).map_err(|_| PatternError::BadClass(pattern.to_string()))?;
        Ok(Glob { re })
    }

    /// Whether the whole of `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        self.re.is_match(name)
    }
}

fn push_literal(re: &mut String, c: char) {
    let mut buf = [0u8; 4];
    re.push_str(&regex::escape(c.encode_utf8(&mut buf)));
}

/// Translates the `[...]` class starting at `chars[start]`; returns the index of
/// its closing `]`.
fn push_class(
    chars: &[char],
    start: usize,
    re: &mut String,
    pattern: &str,
) -> Result<usize, PatternError> {
    let bad = || PatternError::BadClass(pattern.to_string());
    let mut i = start + 1;
    re.push('[');
    if chars.get(i) == Some(&'^') {
        re.push('^');
        i += 1;
    }
    let mut first = true;
    loop {
        let c = *chars.get(i).ok_or_else(bad)?;
        if c == ']' && !first {
            break;
        }
        first = false;
        let lo = if c == '\\' {
            i += 1;
            *chars.get(i).ok_or_else(bad)?
        } else {
            c
        };
        i += 1;
        if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|&n| n != ']') {
            let mut hi = chars[i + 1];
            i += 2;
            if hi == '\\' {
                hi = *chars.get(i).ok_or_else(bad)?;
                i += 1;
            }
            if hi < lo {
                return Err(bad());
            }
            re.push_str(&format!("\\x{{{:x}}}-\\x{{{:x}}}", lo as u32, hi as u32));
        } else {
            re.push_str(&format!("\\x{{{:x}}}", lo as u32));
        }
    }
    re.push(']');
    Ok(i)
}

/// How one exclude pattern is tested; mirrors moby/patternmatcher's fast paths,
/// which are observable (e.g. `**foo` matches `xfoo`), so we keep them.
#[derive(Debug, Clone)]
enum MatchKind {
    Exact,
    /// Pattern ended in `**`: the cleaned pattern minus `**` is a prefix.
    Prefix(String),
    /// Pattern started with `**` and had no other wildcard: a suffix.
    Suffix(String),
    Regex(Regex),
}

#[derive(Debug, Clone)]
struct Pattern {
    cleaned: String,
    exclusion: bool,
    kind: MatchKind,
}

impl Pattern {
    fn matches(&self, path: &str) -> bool {
        match &self.kind {
            MatchKind::Exact => path == self.cleaned,
            MatchKind::Prefix(p) => path.starts_with(p.as_str()),
            MatchKind::Suffix(s) => {
                path.ends_with(s.as_str()) || (s.starts_with('/') && path == &s[1..])
            }
            MatchKind::Regex(re) => re.is_match(path),
        }
    }
}

/// An ordered list of exclude patterns with `!` exceptions, as `.dockerignore`.
#[derive(Debug, Clone, Default)]
pub struct PatternSet {
    patterns: Vec<Pattern>,
    has_exclusions: bool,
    /// Paths excluded whatever the patterns say (no `!` brings them back):
    /// the build's own outputs inside the context.
    always: std::collections::BTreeSet<String>,
}

impl PatternSet {
    /// Compiles patterns in order. Blank patterns are skipped; each is cleaned
    /// like Go's `filepath.Clean` and a leading `/` is dropped.
    ///
    /// # Errors
    /// A malformed character class or a lone `!`.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, PatternError> {
        let mut set = PatternSet::default();
        for p in patterns {
            let mut p = p.as_ref().trim();
            if p.is_empty() {
                continue;
            }
            let exclusion = p.starts_with('!');
            if exclusion {
                p = p[1..].trim_start();
                if p.is_empty() {
                    return Err(PatternError::LoneBang);
                }
            }
            let mut cleaned = clean_path(p);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
            // Validate syntax the way moby does: by compiling it as a Match pattern.
            Glob::new(&cleaned)?;
            let kind = compile_kind(&cleaned)?;
            set.has_exclusions |= exclusion;
            set.patterns.push(Pattern {
                cleaned,
                exclusion,
                kind,
            });
        }
        Ok(set)
    }

    /// Also excludes each of `paths` (relative, slash-separated, no `./`)
    /// exactly, whatever the patterns say: a build's outputs inside its
    /// context, which the next build must not read back.
    #[must_use]
    pub fn with_excluded_paths(mut self, paths: impl IntoIterator<Item = String>) -> Self {
        self.always.extend(paths);
        self
    }

    /// True when there are no patterns at all.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty() && self.always.is_empty()
    }

    /// Whether any pattern is a `!` exception; when none is, an excluded
    /// directory can be skipped without looking inside.
    pub fn has_exclusions(&self) -> bool {
        self.has_exclusions
    }

    /// Whether `path` (slash-separated, relative, no leading `./`) is excluded:
    /// the last pattern matching it or one of its parent directories decides.
    pub fn is_excluded(&self, path: &str) -> bool {
        if self.always.contains(path) {
            return true;
        }
        let mut matched = false;
        let parent = match path.rfind('/') {
            Some(i) => &path[..i],
            None => ".",
        };
        for pattern in &self.patterns {
            // Only a pattern that could flip the current answer needs testing.
            if pattern.exclusion != matched {
                continue;
            }
            let mut hit = pattern.matches(path);
            if !hit && parent != "." {
                hit = parent
                    .match_indices('/')
                    .map(|(i, _)| i)
                    .chain([parent.len()])
                    .any(|end| pattern.matches(&parent[..end]));
            }
            if hit {
                matched = !pattern.exclusion;
            }
        }
        matched
    }
}

fn compile_kind(cleaned: &str) -> Result<MatchKind, PatternError> {
    #[derive(PartialEq)]
    enum K {
        Exact,
        Prefix,
        Suffix,
        Regex,
    }
    let chars: Vec<char> = cleaned.chars().collect();
    let mut re = String::from("^");
    let mut kind = K::Exact;
    let mut i = 0;
    let mut n = 0; // index in scanner terms, for the "** at start" rule
    while i < chars.len() {
        let c = chars[i];
        match c {
            '*' if chars.get(i + 1) == Some(&'*') => {
                i += 1;
                if chars.get(i + 1) == Some(&'/') {
                    i += 1;
                }
                if i + 1 >= chars.len() {
                    if kind == K::Exact {
                        kind = K::Prefix;
                    } else {
                        re.push_str(".*");
                        kind = K::Regex;
                    }
                } else {
                    re.push_str("(.*/)?");
                    kind = K::Regex;
                }
                if n == 0 {
                    kind = K::Suffix;
                }
            }
            '*' => {
                re.push_str("[^/]*");
                kind = K::Regex;
            }
            '?' => {
                re.push_str("[^/]");
                kind = K::Regex;
            }
            '\\' => {
                if i + 1 < chars.len() {
                    i += 1;
                    push_literal(&mut re, chars[i]);
                    kind = K::Regex;
                } else {
                    re.push_str("\\\\");
                }
            }
            '[' | ']' => {
                re.push(c);
                kind = K::Regex;
            }
            _ => push_literal(&mut re, c),
        }
        i += 1;
        n += 1;
    }
    Ok(match kind {
        K::Exact => MatchKind::Exact,
        K::Prefix => MatchKind::Prefix(cleaned[..cleaned.len() - 2].to_string()),
        K::Suffix => MatchKind::Suffix(cleaned[2..].to_string()),
        K::Regex => {
            re.push('$');
            // Go's regexp rejects what Rust's does for these translated forms
            // (unbalanced brackets), so an error here is a malformed class.
            MatchKind::Regex(Regex::new(&re).map_err(|_| PatternError::BadClass(cleaned.into()))?)
        }
    })
}

/// Lexical path cleaning, as Go's `path.Clean`: collapses `//`, removes `.`
/// elements, resolves `..` against preceding elements, drops a trailing `/`.
/// The result is `.` for an empty path.
pub fn clean_path(p: &str) -> String {
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            _ => parts.push(part),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_is_filepath_match() {
        let g = Glob::new("*.txt").unwrap();
        assert!(g.matches("a.txt"));
        assert!(!g.matches("d/a.txt"));
        assert!(Glob::new("fi?e").unwrap().matches("file"));
        assert!(Glob::new("[a-c]x").unwrap().matches("bx"));
        assert!(!Glob::new("[^a-c]x").unwrap().matches("bx"));
        assert!(Glob::new("a\\*").unwrap().matches("a*"));
        assert!(!Glob::new("a\\*").unwrap().matches("ab"));
        assert!(Glob::new("[").is_err());
        assert!(Glob::new("[z-a]").is_err());
        assert!(Glob::new("a.(b)+").unwrap().matches("a.(b)+"));
    }

    #[test]
    fn wildcards_detected() {
        assert!(has_wildcards("src/*.rs"));
        assert!(!has_wildcards("src/main.rs"));
        assert!(!has_wildcards("a\\*b"));
    }

    #[test]
    fn dockerignore_semantics() {
        let s = PatternSet::new(&["*.md", "!README.md", "target", "**/*.tmp"]).unwrap();
        assert!(s.is_excluded("NOTES.md"));
        assert!(!s.is_excluded("README.md"));
        assert!(!s.is_excluded("docs/x.md")); // `*` does not cross `/`
        assert!(s.is_excluded("target"));
        assert!(s.is_excluded("target/debug/x")); // parent matched
        assert!(s.is_excluded("a/b/c.tmp"));
        assert!(s.is_excluded("c.tmp"));
        assert!(!s.is_excluded("src/main.rs"));
    }

    #[test]
    fn last_match_wins() {
        let s = PatternSet::new(&["!a", "a"]).unwrap();
        assert!(s.is_excluded("a"));
        let s = PatternSet::new(&["a", "!a"]).unwrap();
        assert!(!s.is_excluded("a"));
    }

    #[test]
    fn leading_slash_and_cleaning() {
        let s = PatternSet::new(&["/foo/./bar/", "dir/**"]).unwrap();
        assert!(s.is_excluded("foo/bar"));
        assert!(s.is_excluded("foo/bar/baz"));
        assert!(s.is_excluded("dir/x/y"));
        assert!(!s.is_excluded("dirx"));
    }

    #[test]
    fn moby_fast_paths_kept() {
        // moby treats a leading ** with no other wildcard as a suffix match.
        let s = PatternSet::new(&["**foo"]).unwrap();
        assert!(s.is_excluded("xfoo"));
    }

    #[test]
    fn lone_bang_is_an_error() {
        assert!(matches!(
            PatternSet::new(&["!"]),
            Err(PatternError::LoneBang)
        ));
    }

    #[test]
    fn clean() {
        assert_eq!(clean_path("a//b/./c/.."), "a/b");
        assert_eq!(clean_path("/../a"), "/a");
        assert_eq!(clean_path("../a"), "../a");
        assert_eq!(clean_path(""), ".");
        assert_eq!(clean_path("a/"), "a");
    }
}
