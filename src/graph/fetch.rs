//! Steps that fetch their sources from outside the build (ADD of a URL):
//! what is fetched and where it goes. The URL is read here once, for both
//! frontends; fetching is the builder's (`builder::step::fetch`).
//!
//! [`Remote`] is the one place a new kind of remote source (a git
//! repository) is added: a variant beside [`Remote::Http`].

use serde::Serialize;

use super::{Chmod, Owner};
use crate::digest::Digest;

/// Fetched files into one new layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FetchStep {
    /// The fetches, applied in order (a later one wins on a conflict).
    pub items: Vec<FetchItem>,
    /// A display name (spec `name = …`); not part of the cache key.
    #[serde(skip)]
    pub name: Option<String>,
    /// `--link`: the layer is made without looking at the filesystem below.
    /// Absent from the key when false.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub link: bool,
}

/// Remote sources to one destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FetchItem {
    /// What is fetched, in order.
    pub sources: Vec<Remote>,
    /// Destination, absolute or relative to the working directory; a
    /// trailing `/` (or `.`) means "into this directory".
    pub dest: String,
    /// Permissions of the files (`--chmod`); 0600 otherwise, as BuildKit's
    /// HTTP source writes them.
    pub mode: Option<Chmod>,
    /// Owner of the files and created directories (`--chown`).
    pub owner: Option<Owner>,
}

/// Something fetched from outside the build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Remote {
    /// A file over HTTP or HTTPS.
    Http(HttpSource),
}

impl std::fmt::Display for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Remote::Http(h) => f.write_str(&h.url),
        }
    }
}

/// A file at an `http://` or `https://` URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HttpSource {
    /// The URL as written (after variable expansion).
    pub url: String,
    /// The name the file gets in a destination directory: the last segment
    /// of the URL's path, percent-decoded, else `__unnamed__` (BuildKit's
    /// Dockerfile frontend; it never looks at `Content-Disposition`).
    pub file_name: String,
    /// `--checksum`: the sha256 the content must have. Known before any
    /// request, it is the step's whole input: a rebuild asks no server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum: Option<Digest>,
}

/// Why a URL source cannot be fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not `http://` or `https://` followed by a host.
    #[error("`{0}` is not an http:// or https:// URL with a host")]
    NotHttp(String),
    /// Spaces or control characters, which no request line may carry.
    #[error("`{0}` contains a space or a control character")]
    BadCharacter(String),
    /// A file name that cannot be a name in a directory.
    #[error("the URL's path ends in `{name}`, which cannot name a file")]
    BadName {
        /// The decoded last segment.
        name: String,
    },
    /// A checksum that is not `sha256:` and 64 hex digits.
    #[error("invalid checksum `{0}`: write sha256: and 64 lowercase hex digits")]
    Checksum(String),
}

/// Whether a source is fetched over HTTP (`ADD` takes it as a URL, as
/// BuildKit does: by its prefix).
pub fn is_http_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

impl HttpSource {
    /// Reads a URL (and a `--checksum`), as ADD and the spec write them.
    ///
    /// # Errors
    /// Not an http(s) URL with a host, characters no request can carry, a
    /// path whose last segment is `.`/`..` or holds a NUL, or a bad checksum.
    pub fn parse(url: &str, checksum: Option<&str>) -> Result<HttpSource, UrlError> {
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or_else(|| UrlError::NotHttp(url.to_string()))?;
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(UrlError::BadCharacter(url.to_string()));
        }
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..end];
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        if host.is_empty() || host.starts_with(':') {
            return Err(UrlError::NotHttp(url.to_string()));
        }
        let after = &rest[end..];
        let path = &after[..after.find(['?', '#']).unwrap_or(after.len())];
        let file_name = file_name(path)?;
        let checksum = checksum
            .map(|c| {
                c.parse::<Digest>()
                    .map_err(|_| UrlError::Checksum(c.to_string()))
            })
            .transpose()?;
        Ok(HttpSource {
            url: url.to_string(),
            file_name,
            checksum,
        })
    }
}

/// Go's `path.Base` of the decoded path, `__unnamed__` for none (BuildKit's
/// `dispatchCopy`).
fn file_name(raw_path: &str) -> Result<String, UrlError> {
    let decoded = percent_encoding::percent_decode_str(raw_path).collect::<Vec<u8>>();
    let trimmed = {
        let mut end = decoded.len();
        while end > 0 && decoded[end - 1] == b'/' {
            end -= 1;
        }
        &decoded[..end]
    };
    let base = match trimmed.iter().rposition(|&b| b == b'/') {
        Some(i) => &trimmed[i + 1..],
        None => trimmed,
    };
    if base.is_empty() {
        return Ok("__unnamed__".to_string());
    }
    let name = String::from_utf8_lossy(base).into_owned();
    if name == "." || name == ".." || base.contains(&0) {
        return Err(UrlError::BadName { name });
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(url: &str) -> String {
        HttpSource::parse(url, None).unwrap().file_name
    }

    #[test]
    fn file_names_follow_buildkit() {
        assert_eq!(name("https://example.com/a/b.tar.gz"), "b.tar.gz");
        assert_eq!(name("https://example.com/a/dir/"), "dir");
        assert_eq!(name("https://example.com/x%20y.txt?q=1#f"), "x y.txt");
        assert_eq!(name("https://example.com"), "__unnamed__");
        assert_eq!(name("https://example.com/"), "__unnamed__");
        assert_eq!(name("http://127.0.0.1:8080/?x=/y"), "__unnamed__");
        assert_eq!(name("http://u:p@h/a%2Fb"), "b");
    }

    #[test]
    fn bad_urls_are_refused() {
        for bad in ["ftp://h/x", "https://", "https:///x", "http://:80/x"] {
            assert!(
                matches!(HttpSource::parse(bad, None), Err(UrlError::NotHttp(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            HttpSource::parse("https://h/a b", None),
            Err(UrlError::BadCharacter(_))
        ));
        for bad in ["https://h/..", "https://h/a/%2e%2e", "https://h/a%00"] {
            assert!(
                matches!(HttpSource::parse(bad, None), Err(UrlError::BadName { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            HttpSource::parse("https://h/x", Some("md5:00")),
            Err(UrlError::Checksum(_))
        ));
        let sum = format!("sha256:{}", "ab".repeat(32));
        let s = HttpSource::parse("https://h/x", Some(&sum)).unwrap();
        assert_eq!(s.checksum.unwrap().to_string(), sum);
    }
}
