//! Paths inside a layer: bytes, not text. A file name in an image or a build
//! context need not be UTF-8, and a layer must carry it byte for byte (OCI
//! image spec: names are whatever the tar header holds), so every path that
//! goes from a tar header, a context directory or an overlay upper into a
//! layer is a [`LayerPath`]. Text appears only when one is shown.

use std::borrow::Cow;
use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A cleaned path inside a layer's root: relative (no leading `/`), no
/// trailing `/`, no `.`, `..` or empty components; the root itself is the
/// empty path. Ordered by its bytes, which is layer order (parents sort
/// before their children: `/` is the smallest byte a name can hold after
/// NUL, which no name holds).
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LayerPath(Vec<u8>);

impl LayerPath {
    /// The root.
    pub fn root() -> Self {
        LayerPath(Vec::new())
    }

    /// Cleans a name as a tar header or a user wrote it: `..` cannot climb
    /// above the root (it is resolved lexically against `/`, as the kernel
    /// resolves it inside a root), `.` and empty components vanish.
    pub fn clean(name: &[u8]) -> Self {
        let mut parts: Vec<&[u8]> = Vec::new();
        for part in name.split(|&b| b == b'/') {
            match part {
                b"" | b"." => {}
                b".." => {
                    parts.pop();
                }
                p => parts.push(p),
            }
        }
        LayerPath(parts.join(&b'/'))
    }

    /// The path's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The path for system calls relative to a root (`""` for the root,
    /// which `confine` takes as `.`).
    pub fn as_path(&self) -> &Path {
        Path::new(OsStr::from_bytes(&self.0))
    }

    /// Whether this is the root.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `self/name`; `name` is one component or a cleaned relative path.
    pub fn join(&self, name: &[u8]) -> LayerPath {
        if self.0.is_empty() {
            return LayerPath(name.to_vec());
        }
        if name.is_empty() {
            return self.clone();
        }
        let mut v = Vec::with_capacity(self.0.len() + 1 + name.len());
        v.extend_from_slice(&self.0);
        v.push(b'/');
        v.extend_from_slice(name);
        LayerPath(v)
    }

    /// The parent directory (the root for a top-level name), or `None` for
    /// the root itself.
    pub fn parent(&self) -> Option<LayerPath> {
        if self.0.is_empty() {
            return None;
        }
        Some(LayerPath(self.split().0.to_vec()))
    }

    /// `(parent, last component)`; the parent of a top-level name is empty.
    pub fn split(&self) -> (&[u8], &[u8]) {
        match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => (&self.0[..i], &self.0[i + 1..]),
            None => (&[], &self.0),
        }
    }

    /// The last component.
    pub fn file_name(&self) -> &[u8] {
        self.split().1
    }

    /// Whether `self` is `dir` or below it.
    pub fn is_within(&self, dir: &LayerPath) -> bool {
        dir.0.is_empty()
            || (self.0.starts_with(&dir.0)
                && (self.0.len() == dir.0.len() || self.0[dir.0.len()] == b'/'))
    }

    /// The path as text, for messages (invalid UTF-8 shown as U+FFFD).
    pub fn to_string_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.0)
    }

    /// Every ancestor, nearest first, the root excluded.
    pub fn ancestors(&self) -> impl Iterator<Item = &[u8]> {
        let bytes = &self.0;
        bytes
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, b)| **b == b'/')
            .map(move |(i, _)| &bytes[..i])
    }
}

impl fmt::Display for LayerPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_string_lossy())
    }
}

impl fmt::Debug for LayerPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}

impl From<&str> for LayerPath {
    /// Takes an already cleaned path (no leading `/`).
    fn from(s: &str) -> Self {
        LayerPath(s.as_bytes().to_vec())
    }
}

impl From<String> for LayerPath {
    /// Takes an already cleaned path (no leading `/`).
    fn from(s: String) -> Self {
        LayerPath(s.into_bytes())
    }
}

impl From<&[u8]> for LayerPath {
    /// Takes an already cleaned path (no leading `/`).
    fn from(b: &[u8]) -> Self {
        LayerPath(b.to_vec())
    }
}

impl PartialEq<str> for LayerPath {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for LayerPath {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_confines_and_keeps_bytes() {
        assert_eq!(LayerPath::clean(b"../../etc/./passwd"), "etc/passwd");
        assert_eq!(LayerPath::clean(b"/a//b/../c/"), "a/c");
        assert!(LayerPath::clean(b"./").is_empty());
        assert_eq!(LayerPath::clean(b"caf\xe9/x").as_bytes(), b"caf\xe9/x");
    }

    #[test]
    fn split_join_within() {
        let p = LayerPath::from("a/b/c");
        assert_eq!(p.split(), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(p.parent(), Some(LayerPath::from("a/b")));
        assert_eq!(LayerPath::from("a").parent(), Some(LayerPath::root()));
        assert_eq!(LayerPath::root().join(b"x"), "x");
        assert!(p.is_within(&LayerPath::from("a")));
        assert!(!LayerPath::from("ab").is_within(&LayerPath::from("a")));
        assert!(p.is_within(&LayerPath::root()));
        let anc: Vec<&[u8]> = p.ancestors().collect();
        assert_eq!(anc, [&b"a/b"[..], &b"a"[..]]);
    }

    #[test]
    fn order_is_bytewise_parents_first() {
        let mut v = vec![
            LayerPath::from("a/b"),
            LayerPath::from("a-b"),
            LayerPath::from("a"),
        ];
        v.sort();
        assert_eq!(v, ["a", "a-b", "a/b"].map(LayerPath::from));
    }
}
