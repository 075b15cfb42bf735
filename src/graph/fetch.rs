//! Steps that fetch their sources from outside the build (ADD of a URL or
//! of a git repository): what is fetched and where it goes. URLs are read
//! here once, for both frontends (and the CLI's git context); fetching is
//! the builder's (`builder::step::fetch`).
//!
//! [`Remote`] is the one place a new kind of remote source is added: a
//! variant beside [`Remote::Http`] and [`Remote::Git`].

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
    /// The tree of one commit of a git repository.
    Git(GitSource),
}

impl std::fmt::Display for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Remote::Http(h) => f.write_str(&h.url),
            Remote::Git(g) => g.fmt(f),
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
    /// Not a git URL: none of the forms BuildKit takes for one.
    #[error(
        "`{0}` is not a git URL: write https://HOST/PATH.git, ssh://, git://, or USER@HOST:PATH"
    )]
    NotGit(String),
    /// A URL or host git could take for an option.
    #[error("`{0}` starts with `-`, which git would take for an option")]
    Dash(String),
    /// A REF that is no branch, tag or commit name git accepts.
    #[error("`{0}` cannot name a branch, tag or commit")]
    BadRef(String),
    /// A SUBDIR that climbs out of the repository.
    #[error("the subdirectory `{0}` leaves the repository (`..`)")]
    SubdirEscapes(String),
}

/// Whether a source is fetched over HTTP (`ADD` takes it as a URL, as
/// BuildKit does: by its prefix).
pub fn is_http_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// A commit of a git repository, checked out (`ADD GIT-URL#REF:SUBDIR
/// DEST`, the spec's `fetch = [{ git = … }]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GitSource {
    /// The repository, as git takes it (the fragment cut off).
    pub url: String,
    /// REF: a branch, a tag, a full commit hash, or any ref name (`None`:
    /// the repository's HEAD). Resolved to a commit when the build runs:
    /// the commit is the step's input, the name only part of its definition.
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// SUBDIR, cleaned and relative (`None`: the whole tree).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subdir: Option<String>,
    /// `--keep-git-dir`: the tree keeps its `.git` (only without SUBDIR, as
    /// in BuildKit). Absent from the key when false.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub keep_git_dir: bool,
}

/// How a git URL reaches its repository, by its form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GitTransport {
    /// `https://`.
    Https,
    /// `http://`.
    Http,
    /// `ssh://` or `USER@HOST:PATH`.
    Ssh,
    /// `git://`.
    Git,
    /// `file://`: a repository on this machine (the CLI's git context; ADD
    /// only where the builder allows it, since it reads outside the context).
    File,
}

/// The transport of a git URL as BuildKit's `gitutil.ParseGitRef` takes
/// one: `SCHEME://` for ssh, git, http and https, or the scp-like
/// `USER@HOST:PATH`; also `file://`. With `strict` (ADD telling a
/// repository from a file), http(s) only when the path ends in `.git`.
fn git_transport(s: &str, strict: bool) -> Option<GitTransport> {
    let scheme_len = s
        .find("://")
        .filter(|&i| i > 0 && s[..i].bytes().all(|b| b.is_ascii_alphanumeric()));
    if let Some(i) = scheme_len {
        let t = match s[..i].to_ascii_lowercase().as_str() {
            "https" => GitTransport::Https,
            "http" => GitTransport::Http,
            "ssh" => GitTransport::Ssh,
            "git" => GitTransport::Git,
            "file" => GitTransport::File,
            _ => return None,
        };
        if strict && matches!(t, GitTransport::Https | GitTransport::Http) {
            let rest = &s[i + 3..];
            let path_end = rest.find(['?', '#']).unwrap_or(rest.len());
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let path = rest.get(authority_end..path_end).unwrap_or("");
            if !path.ends_with(".git") {
                return None;
            }
        }
        return Some(t);
    }
    // BuildKit's `sshutil.IsImplicitSSHTransport`: `[A-Za-z0-9_-]+@[A-Za-z0-9.-]+:`.
    let (user, rest) = s.split_once('@')?;
    let (host, _) = rest.split_once(':')?;
    let user_ok = !user.is_empty()
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    (user_ok && host_ok).then_some(GitTransport::Ssh)
}

/// Whether ADD takes `s` as a git repository (BuildKit's rules: an http(s)
/// URL only when its path ends in `.git`).
pub fn is_git_url(s: &str) -> bool {
    git_transport(s, true).is_some()
}

/// Whether `imgbuild build` takes `s` as a git context (buildx's rules: a
/// git URL as ADD takes one, or a GitHub URL with a `#` fragment).
pub fn is_git_context(s: &str) -> bool {
    is_git_url(s)
        || ((s.starts_with("https://github.com/") || s.starts_with("http://github.com/"))
            && s.contains('#'))
}

impl GitSource {
    /// Reads `URL[#REF[:SUBDIR]]` as ADD (and a git context) write it.
    ///
    /// # Errors
    /// Not a git URL, spaces or control characters, a URL or host starting
    /// with `-`, a REF git would not take, a SUBDIR with `..`.
    pub fn parse(s: &str, keep_git_dir: bool) -> Result<GitSource, UrlError> {
        let (url, fragment) = match s.split_once('#') {
            Some((u, f)) => (u, Some(f)),
            None => (s, None),
        };
        let (reference, subdir) = match fragment {
            Some(f) => match f.split_once(':') {
                Some((r, d)) => (r, Some(d)),
                None => (f, None),
            },
            None => ("", None),
        };
        GitSource::new(url, Some(reference), subdir, keep_git_dir).map_err(|e| match e {
            UrlError::NotGit(_) => UrlError::NotGit(s.to_string()),
            other => other,
        })
    }

    /// A source from its parts (the spec writes them apart, and says it is
    /// git: any http(s) URL is taken); an empty REF or SUBDIR is none.
    ///
    /// # Errors
    /// As [`GitSource::parse`].
    pub fn new(
        url: &str,
        reference: Option<&str>,
        subdir: Option<&str>,
        keep_git_dir: bool,
    ) -> Result<GitSource, UrlError> {
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(UrlError::BadCharacter(url.to_string()));
        }
        if url.starts_with('-') {
            return Err(UrlError::Dash(url.to_string()));
        }
        let transport = git_transport(url, false)
            .filter(|_| !url.contains('#'))
            .ok_or_else(|| UrlError::NotGit(url.to_string()))?;
        let host = match url.split_once("://") {
            Some((_, rest)) => {
                let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
                authority.rsplit_once('@').map_or(authority, |(_, h)| h)
            }
            None => url
                .split_once('@')
                .map_or("", |(_, r)| r.split_once(':').map_or(r, |(h, _)| h)),
        };
        if host.starts_with('-') {
            return Err(UrlError::Dash(host.to_string()));
        }
        if host.is_empty() && transport != GitTransport::File {
            return Err(UrlError::NotGit(url.to_string()));
        }
        let reference = reference.filter(|r| !r.is_empty());
        if let Some(r) = reference
            && !valid_ref(r)
        {
            return Err(UrlError::BadRef(r.to_string()));
        }
        let subdir = match subdir {
            Some(d) => clean_subdir(d)?,
            None => None,
        };
        Ok(GitSource {
            url: url.to_string(),
            reference: reference.map(str::to_string),
            subdir,
            keep_git_dir,
        })
    }

    /// The URL with any password replaced by `xxxxx` (as BuildKit's
    /// `urlutil.RedactCredentials`), for history, messages and a kept
    /// `.git/config`.
    pub fn redacted_url(&self) -> String {
        crate::reference::redact_url(&self.url)
    }
}

impl std::fmt::Display for GitSource {
    /// `URL#REF:SUBDIR` as written (the password redacted).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted_url())?;
        if self.reference.is_some() || self.subdir.is_some() {
            f.write_str("#")?;
        }
        if let Some(r) = &self.reference {
            f.write_str(r)?;
        }
        if let Some(d) = &self.subdir {
            write!(f, ":{d}")?;
        }
        Ok(())
    }
}

/// A name git takes for a ref (`git check-ref-format`'s rules, a single
/// component allowed) that cannot be read as an option or a pattern.
fn valid_ref(r: &str) -> bool {
    r.len() <= 1024
        && !r.starts_with('-')
        && !r.starts_with('/')
        && !r.ends_with('/')
        && !r.ends_with('.')
        && !r.ends_with(".lock")
        && !r.contains("..")
        && !r.contains("//")
        && !r.contains("@{")
        && r != "@"
        && !r.split('/').any(|c| c.starts_with('.'))
        && !r.chars().any(|c| {
            c.is_control()
                || c.is_whitespace()
                || matches!(c, '~' | '^' | ':' | '?' | '*' | '[' | '\\')
        })
}

/// SUBDIR made relative and clean (`path.Clean`, as BuildKit); `..` is
/// refused rather than resolved: no subdirectory is outside the tree.
fn clean_subdir(d: &str) -> Result<Option<String>, UrlError> {
    if d.chars().any(char::is_control) {
        return Err(UrlError::BadCharacter(d.to_string()));
    }
    let mut parts = Vec::new();
    for c in d.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(UrlError::SubdirEscapes(d.to_string())),
            c => parts.push(c),
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
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
    fn git_urls_follow_buildkit() {
        for yes in [
            "https://example.com/foo.git",
            "https://example.com/foo.git#deadbeef",
            "https://example.com/foo.git#release/1.2:sub/dir",
            "HTTPS://example.com/foo.git",
            "http://example.com/foo.git?x=1#main",
            "git://example.com/foo",
            "ssh://git@example.com/foo",
            "git@github.com:moby/buildkit",
            "deploy-1@git.example.org:a/b.git#v1",
            "file:///srv/repo.git",
        ] {
            assert!(is_git_url(yes), "{yes}");
        }
        for no in [
            "https://example.com/",
            "https://example.com/foo",
            "https://example.com/foo.git/",
            "https://example.com/foo.git.bar",
            "https://github.com/moby/buildkit",
            "ftp://example.com/foo.git",
            "./foo.git",
            ".git",
            "local/dir",
            "user@host",
            "a b@host:x",
        ] {
            assert!(!is_git_url(no), "{no}");
        }
        assert!(is_git_context(
            "https://github.com/moby/buildkit#master:docs"
        ));
        assert!(!is_git_context("https://github.com/moby/buildkit"));
        assert!(!is_git_context("https://example.com/x#y"));
    }

    #[test]
    fn git_fragments_are_ref_and_clean_subdir() {
        let g = GitSource::parse("https://h/foo.git#baz/qux:/quux//./quuz/", false).unwrap();
        assert_eq!(g.url, "https://h/foo.git");
        assert_eq!(g.reference.as_deref(), Some("baz/qux"));
        assert_eq!(g.subdir.as_deref(), Some("quux/quuz"));
        assert_eq!(g.to_string(), "https://h/foo.git#baz/qux:quux/quuz");
        let g = GitSource::parse("https://h/foo.git#:docs", true).unwrap();
        assert_eq!((g.reference, g.subdir.as_deref()), (None, Some("docs")));
        let g = GitSource::parse("git@h:x.git#v1:/", false).unwrap();
        assert_eq!((g.reference.as_deref(), g.subdir), (Some("v1"), None));
        assert_eq!(
            GitSource::parse("https://u:secret@h/x.git#main", false)
                .unwrap()
                .to_string(),
            "https://u:xxxxx@h/x.git#main"
        );
    }

    #[test]
    fn hostile_git_sources_are_refused() {
        let err = |s| GitSource::parse(s, false).unwrap_err();
        assert!(matches!(
            err("https://h/x.git#main:../.."),
            UrlError::SubdirEscapes(_)
        ));
        assert!(matches!(
            err("https://h/x.git#main:a/../../b"),
            UrlError::SubdirEscapes(_)
        ));
        assert!(matches!(err("ssh://-oProxyCommand=x/y"), UrlError::Dash(_)));
        assert!(matches!(
            err("ssh://u@-oProxyCommand=x/y"),
            UrlError::Dash(_)
        ));
        assert!(matches!(err("git@-oProxyCommand=x:y"), UrlError::NotGit(_)));
        for r in [
            "--upload-pack=x",
            "a..b",
            "a b",
            "x^{}",
            "x~1",
            "a:b:c",
            "@{-1}",
            "x.lock",
        ] {
            let url = format!("https://h/x.git#{r}");
            let e = GitSource::parse(&url, false);
            // `a:b:c` splits at the first `:`: REF `a`, SUBDIR `b:c`.
            if r == "a:b:c" {
                assert!(e.is_ok());
                continue;
            }
            assert!(
                matches!(e, Err(UrlError::BadRef(_)) | Err(UrlError::BadCharacter(_))),
                "{r}"
            );
        }
        assert!(matches!(err("https://h/x.git#a\u{7}"), UrlError::BadRef(_)));
        assert!(matches!(
            err("https://h/x.git#a:b\u{7}"),
            UrlError::BadCharacter(_)
        ));
        assert!(matches!(
            GitSource::new("https://h/x", Some("-x"), None, false),
            Err(UrlError::BadRef(_))
        ));
        // The spec says it is git: any http(s) URL is taken.
        assert!(GitSource::new("https://h/x", Some("main"), Some("d"), false).is_ok());
        assert!(GitSource::new("-https://h/x", None, None, false).is_err());
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
