//! Image references (`ubuntu`, `registry:5000/team/app:1.2`, `name@sha256:…`),
//! parsed and normalized the way docker does.
//!
//! Owns the grammar of `distribution/reference` and its normalization rules:
//! `ubuntu` → `docker.io/library/ubuntu:latest`; a first component with a `.` or
//! `:`, or `localhost`, is a registry host. Leaf module apart from [`crate::digest`].

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;

/// The registry docker assumes when a reference names none.
pub const DEFAULT_DOMAIN: &str = "docker.io";
const OFFICIAL_PREFIX: &str = "library/";
const MAX_NAME_LEN: usize = 255;

/// A parsed, normalized image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

/// Why a string is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// Empty input.
    #[error("empty image reference")]
    Empty,
    /// Upper-case letters in the repository name.
    #[error("invalid reference `{0}`: repository name must be lowercase")]
    Uppercase(String),
    /// Anything else the grammar rejects.
    #[error("invalid reference `{reference}`: {why}")]
    Invalid {
        /// The input.
        reference: String,
        /// What rule it broke.
        why: &'static str,
    },
}

impl Reference {
    /// Parses and normalizes `s`; a reference without tag or digest gets `latest`.
    ///
    /// # Errors
    /// When `s` does not follow the reference grammar.
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        let invalid = |why| ReferenceError::Invalid {
            reference: s.to_string(),
            why,
        };
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (
                r,
                Some(d.parse::<Digest>().map_err(|_| invalid("bad digest"))?),
            ),
            None => (s, None),
        };
        // A tag is after the last ':' that follows the last '/', so a port is not a tag.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let i = last_slash + i;
                (&rest[..i], Some(&rest[i + 1..]))
            }
            None => (rest, None),
        };
        if let Some(tag) = tag
            && !valid_tag(tag)
        {
            return Err(invalid("bad tag"));
        }
        if name.is_empty() {
            return Err(invalid("missing repository name"));
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, remainder))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), remainder.to_string())
            }
            _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
        };
        if !valid_domain(&domain) {
            return Err(invalid("bad registry host"));
        }
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ReferenceError::Uppercase(s.to_string()));
        }
        if !path.split('/').all(valid_path_component) {
            return Err(invalid("bad repository name"));
        }
        let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
            format!("{OFFICIAL_PREFIX}{path}")
        } else {
            path
        };
        if domain.len() + 1 + path.len() > MAX_NAME_LEN {
            return Err(invalid("repository name longer than 255 characters"));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some("latest".to_string()),
            (None, Some(_)) => None,
        };
        Ok(Reference {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// The registry host (with port), e.g. `docker.io`, `127.0.0.1:5000`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path within the registry, e.g. `library/ubuntu`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The tag, if any (`latest` is filled in when neither tag nor digest is given).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, for `name@sha256:…` references.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// `domain/path`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The short form docker prints: `ubuntu:latest` for
    /// `docker.io/library/ubuntu:latest`.
    pub fn familiar(&self) -> String {
        let name = if self.domain == DEFAULT_DOMAIN {
            self.path
                .strip_prefix(OFFICIAL_PREFIX)
                .unwrap_or(&self.path)
                .to_string()
        } else {
            self.name()
        };
        self.with_suffix(name)
    }

    fn with_suffix(&self, mut s: String) -> String {
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(&d.to_string());
        }
        s
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.with_suffix(self.name()))
    }
}

impl serde::Serialize for Reference {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

fn valid_tag(t: &str) -> bool {
    let mut bytes = t.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric() || b == b'_')
        && t.len() <= 128
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn valid_domain(d: &str) -> bool {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || d.starts_with('[') => (h, Some(p)),
        _ => (d, None),
    };
    if let Some(p) = port
        && (p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    if host.starts_with('[') && host.ends_with(']') {
        return host[1..host.len() - 1]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b':');
    }
    !host.is_empty()
        && host.split('.').all(|c| {
            !c.is_empty()
                && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !c.starts_with('-')
                && !c.ends_with('-')
        })
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// A URL (of an ADD source, a git repository) with any password in
/// `scheme://user:password@host/…` replaced by `xxxxx`, as BuildKit's
/// `urlutil.RedactCredentials`: for history, messages and a kept
/// `.git/config`. The one rule for the graph and the fetchers.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{scheme}://{user}:xxxxx@{host}{}", &rest[authority_end..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    #[test]
    fn normalizes_like_docker() {
        assert_eq!(norm("ubuntu"), "docker.io/library/ubuntu:latest");
        assert_eq!(norm("ubuntu:22.04"), "docker.io/library/ubuntu:22.04");
        assert_eq!(norm("team/app"), "docker.io/team/app:latest");
        assert_eq!(norm("localhost/app"), "localhost/app:latest");
        assert_eq!(norm("127.0.0.1:5000/a/b:v1"), "127.0.0.1:5000/a/b:v1");
        assert_eq!(norm("registry:5000/app"), "registry:5000/app:latest");
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            norm(&format!("ubuntu@{d}")),
            format!("docker.io/library/ubuntu@{d}")
        );
    }

    #[test]
    fn familiar_strips_defaults() {
        let r = Reference::parse("docker.io/library/ubuntu:22.04").unwrap();
        assert_eq!(r.familiar(), "ubuntu:22.04");
        let r = Reference::parse("quay.io/x/y").unwrap();
        assert_eq!(r.familiar(), "quay.io/x/y:latest");
    }

    #[test]
    fn rejects_bad_references() {
        assert!(matches!(
            Reference::parse("Ubuntu"),
            Err(ReferenceError::Uppercase(_))
        ));
        assert!(Reference::parse("").is_err());
        assert!(Reference::parse("a:").is_err());
        assert!(Reference::parse("a:-x").is_err());
        assert!(Reference::parse("a..b").is_err());
        assert!(Reference::parse("a@sha256:zz").is_err());
        assert!(Reference::parse("-a").is_err());
        assert!(Reference::parse("host:port/a").is_err());
    }
}
