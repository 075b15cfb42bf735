//! `--chmod` modes: octal (`0644`) or symbolic (`a=rX,u+w`), as chmod(1) and
//! BuildKit take them. Symbolic modes let one copy give files and directories
//! different bits (`X` is execute for directories and already-executable
//! files), so a spec does not depend on the permissions a checkout happened to
//! get from its umask.

use serde::Serialize;

/// A parsed mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Chmod {
    /// Set exactly these bits.
    Octal(u32),
    /// Apply these clauses in order (kept as written; parsed on use).
    Symbolic(String),
}

#[derive(Debug, Clone, Copy)]
struct Clause {
    who: u32,
    op: u8,
    perm: u32,
    big_x: bool,
}

fn parse_clauses(s: &str) -> Option<Vec<Clause>> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let b = part.as_bytes();
        let mut i = 0;
        let mut who = 0u32;
        while i < b.len() && matches!(b[i], b'u' | b'g' | b'o' | b'a') {
            who |= match b[i] {
                b'u' => 0o4700,
                b'g' => 0o2070,
                b'o' => 0o1007,
                _ => 0o7777,
            };
            i += 1;
        }
        if who == 0 {
            who = 0o7777;
        }
        if i >= b.len() {
            return None;
        }
        while i < b.len() {
            let op = b[i];
            if !matches!(op, b'+' | b'-' | b'=') {
                return None;
            }
            i += 1;
            let mut perm = 0u32;
            let mut big_x = false;
            while i < b.len() && !matches!(b[i], b'+' | b'-' | b'=') {
                perm |= match b[i] {
                    b'r' => 0o444,
                    b'w' => 0o222,
                    b'x' => 0o111,
                    b'X' => {
                        big_x = true;
                        0
                    }
                    b's' => 0o6000,
                    b't' => 0o1000,
                    _ => return None,
                };
                i += 1;
            }
            out.push(Clause {
                who,
                op,
                perm,
                big_x,
            });
        }
    }
    Some(out)
}

impl Chmod {
    /// Parses `0644`, `755` or a symbolic mode.
    pub fn parse(s: &str) -> Option<Chmod> {
        if !s.is_empty() && s.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return u32::from_str_radix(s, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .map(Chmod::Octal);
        }
        parse_clauses(s).map(|_| Chmod::Symbolic(s.to_string()))
    }

    /// The new permission bits of an entry that had `old`.
    pub fn apply(&self, old: u32, is_dir: bool) -> u32 {
        match self {
            Chmod::Octal(m) => *m,
            Chmod::Symbolic(s) => {
                let mut mode = old & 0o7777;
                for c in parse_clauses(s).unwrap_or_default() {
                    let mut perm = c.perm;
                    if c.big_x && (is_dir || old & 0o111 != 0) {
                        perm |= 0o111;
                    }
                    let bits = perm & c.who;
                    match c.op {
                        b'+' => mode |= bits,
                        b'-' => mode &= !bits,
                        _ => mode = (mode & !(c.who & 0o7777)) | bits,
                    }
                }
                mode
            }
        }
    }
}

impl std::fmt::Display for Chmod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Chmod::Octal(m) => write!(f, "{m:o}"),
            Chmod::Symbolic(s) => f.write_str(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_and_symbolic() {
        assert_eq!(Chmod::parse("0644"), Some(Chmod::Octal(0o644)));
        assert_eq!(Chmod::parse("755"), Some(Chmod::Octal(0o755)));
        assert_eq!(Chmod::parse("99"), None);
        let m = Chmod::parse("a=rX,u+w").unwrap();
        assert_eq!(m.apply(0o600, false), 0o644);
        assert_eq!(m.apply(0o700, false), 0o755);
        assert_eq!(m.apply(0o700, true), 0o755);
        assert_eq!(m.apply(0o000, true), 0o755);
        assert_eq!(Chmod::parse("go-w").unwrap().apply(0o777, false), 0o755);
        assert_eq!(
            Chmod::parse("u=rwx,g=rx,o=").unwrap().apply(0o666, false),
            0o750
        );
        assert_eq!(Chmod::parse("+x").unwrap().apply(0o644, false), 0o755);
        assert!(Chmod::parse("q+r").is_none());
        assert!(Chmod::parse("u").is_none());
    }
}
