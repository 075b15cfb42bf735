//! One GET of a URL, conditional when validators of an earlier download
//! are known, the body streamed into a store blob while it is hashed
//! (never held in memory). A body cut short, a status that is not a
//! success, or a checksum that does not match stores nothing.
//!
//! Transport: ureq (as the registry client), HTTPS with the Mozilla roots
//! built in (`webpki-roots`), redirects followed up to
//! [`Options::max_redirects`], no transparent decompression (the bytes
//! saved are the bytes served), a proxy only when the caller passes one.

use std::io;

use ureq::http::{Response, header};

use super::Options;
use crate::digest::Digest;
use crate::store::{self, Store};

/// Why a fetch failed; each names the URL.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The proxy setting is not a proxy URL.
    #[error("invalid proxy `{proxy}`")]
    Proxy {
        /// As given.
        proxy: String,
        /// Why.
        #[source]
        source: ureq::Error,
    },
    /// No answer: connection, TLS, timeout, too many redirects.
    #[error("GET {url}")]
    Request {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: ureq::Error,
    },
    /// The server answered with a status that is not a success.
    #[error("GET {url}: the server answered {status}")]
    Status {
        /// The URL.
        url: String,
        /// Status code and reason (`404 Not Found`).
        status: String,
    },
    /// `304 Not Modified` to a request that had no validators.
    #[error("GET {url}: the server answered 304 Not Modified to an unconditional request")]
    UnaskedNotModified {
        /// The URL.
        url: String,
    },
    /// The body could not be read to its end (the connection dropped, the
    /// length did not match, a read timed out).
    #[error("GET {url}: the download broke off after {bytes} bytes")]
    Body {
        /// The URL.
        url: String,
        /// Bytes received.
        bytes: u64,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The content could not be written into the store.
    #[error("GET {url}: writing the content into the store")]
    Write {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The content is not what `--checksum` says.
    #[error("GET {url}: checksum mismatch: expected {expected}, got {actual}")]
    Checksum {
        /// The URL.
        url: String,
        /// The checksum asked for.
        expected: Digest,
        /// The digest of what was served.
        actual: Digest,
    },
    /// Saving the content failed.
    #[error("GET {url}: saving the content")]
    Store {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: store::Error,
    },
}

/// Result alias for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An HTTP client for fetches.
pub struct Client {
    agent: ureq::Agent,
}

/// What an earlier download of the URL was, to ask whether it changed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Conditions<'a> {
    /// Sent as `If-None-Match`.
    pub etag: Option<&'a str>,
    /// Sent as `If-Modified-Since`.
    pub last_modified: Option<&'a str>,
}

impl Conditions<'_> {
    fn any(&self) -> bool {
        self.etag.is_some() || self.last_modified.is_some()
    }
}

/// What to do with a changed body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body<'a> {
    /// Save it as a blob; with `Some`, only if it hashes to that digest.
    Save(Option<&'a Digest>),
    /// Leave it unread (a dry run only asks whether it changed).
    Skip,
}

/// A server's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `304 Not Modified`: what the conditions describe is current.
    NotModified,
    /// The content, saved.
    Saved(Saved),
    /// A new body, left unread ([`Body::Skip`]).
    Changed,
}

/// A downloaded body, in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    /// The blob it was saved as (the sha256 of the bytes).
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// The `ETag` sent with it.
    pub etag: Option<String>,
    /// The `Last-Modified` sent with it.
    pub last_modified: Option<String>,
}

impl Client {
    /// A client with `opts`.
    ///
    /// # Errors
    /// [`Error::Proxy`]: the proxy is not a proxy URL.
    pub fn new(opts: &Options) -> Result<Client> {
        let proxy = match &opts.proxy {
            Some(p) => Some(
                proxy(p, opts.no_proxy.as_deref()).map_err(|source| Error::Proxy {
                    proxy: p.clone(),
                    source,
                })?,
            ),
            None => None,
        };
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // Set explicitly: ureq's default reads the proxy variables.
            .proxy(proxy)
            // The bytes saved are the bytes served: never ask for an
            // encoding ureq would undo (with its gzip feature on).
            .accept_encoding(ureq::config::AutoHeaderValue::None)
            .max_redirects(opts.max_redirects)
            .max_redirects_will_error(true)
            .timeout_connect(Some(opts.connect_timeout))
            .timeout_per_read(Some(opts.read_timeout))
            .user_agent(concat!("imgbuild/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Client {
            agent: config.into(),
        })
    }

    /// GETs `url`, asking with `cond` whether it changed; a changed body is
    /// saved into `store` (or skipped) as `body` says.
    ///
    /// # Errors
    /// No answer, a status other than 2xx (or 304 to a conditional
    /// request), a body cut short, a checksum mismatch, a store failure.
    pub fn get(
        &self,
        url: &str,
        cond: Conditions<'_>,
        body: Body<'_>,
        store: &Store,
    ) -> Result<Answer> {
        let mut req = self.agent.get(url);
        if let Some(etag) = cond.etag {
            req = req.header(header::IF_NONE_MATCH, etag);
        }
        if let Some(lm) = cond.last_modified {
            req = req.header(header::IF_MODIFIED_SINCE, lm);
        }
        let resp = req.call().map_err(|source| Error::Request {
            url: url.to_string(),
            source,
        })?;
        let status = resp.status();
        if status == ureq::http::StatusCode::NOT_MODIFIED {
            return if cond.any() {
                Ok(Answer::NotModified)
            } else {
                Err(Error::UnaskedNotModified {
                    url: url.to_string(),
                })
            };
        }
        if !status.is_success() {
            return Err(Error::Status {
                url: url.to_string(),
                status: match status.canonical_reason() {
                    Some(r) => format!("{} {r}", status.as_u16()),
                    None => status.as_u16().to_string(),
                },
            });
        }
        match body {
            Body::Skip => Ok(Answer::Changed),
            Body::Save(expected) => save(url, resp, expected, store).map(Answer::Saved),
        }
    }
}

/// A header's value when it is text (a validator that is not cannot be
/// sent back).
fn text_header(resp: &Response<ureq::Body>, name: header::HeaderName) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn save(
    url: &str,
    resp: Response<ureq::Body>,
    expected: Option<&Digest>,
    store: &Store,
) -> Result<Saved> {
    let etag = text_header(&resp, header::ETAG);
    let last_modified = text_header(&resp, header::LAST_MODIFIED);
    let store_err = |source| Error::Store {
        url: url.to_string(),
        source,
    };
    let mut writer = store.blob_writer().map_err(store_err)?;
    let mut reader = resp.into_body().into_reader();
    // On failure the writer's temporary file goes with it.
    match copy(&mut reader, &mut writer) {
        Ok(()) => {}
        Err(Broke::Read(source)) => {
            return Err(Error::Body {
                url: url.to_string(),
                bytes: writer.written(),
                source,
            });
        }
        Err(Broke::Write(source)) => {
            return Err(Error::Write {
                url: url.to_string(),
                source,
            });
        }
    }
    let size = writer.written();
    let digest = writer.commit(expected).map_err(|e| match e {
        store::Error::DigestMismatch { expected, actual } => Error::Checksum {
            url: url.to_string(),
            expected,
            actual,
        },
        other => store_err(other),
    })?;
    Ok(Saved {
        digest,
        size,
        etag,
        last_modified,
    })
}

/// Where a copy failed.
enum Broke {
    Read(io::Error),
    Write(io::Error),
}

/// `io::copy`, telling a failed read (the download) from a failed write
/// (the store's disk).
fn copy(r: &mut impl io::Read, w: &mut impl io::Write) -> std::result::Result<(), Broke> {
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return w.flush().map_err(Broke::Write),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Broke::Read(e)),
        };
        w.write_all(&buf[..n]).map_err(Broke::Write)?;
    }
}

/// A ureq proxy for `url`, bypassed for the hosts `no_proxy` lists.
fn proxy(url: &str, no_proxy: Option<&str>) -> std::result::Result<ureq::Proxy, ureq::Error> {
    let p = ureq::Proxy::new(url)?;
    let Some(list) = no_proxy else {
        return Ok(p);
    };
    let mut b = ureq::Proxy::builder(p.protocol())
        .host(p.host())
        .port(p.port());
    if let Some(u) = p.username() {
        b = b.username(u);
    }
    if let Some(pw) = p.password() {
        b = b.password(pw);
    }
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        b = b.no_proxy(entry);
    }
    b.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxies_keep_credentials_and_skip_no_proxy_hosts() {
        let p = proxy(
            "http://u:p%40ss@proxy.example:3128",
            Some("localhost, .internal"),
        )
        .unwrap();
        assert_eq!((p.host(), p.port()), ("proxy.example", 3128));
        assert_eq!((p.username(), p.password()), (Some("u"), Some("p@ss")));
        let uri = |s: &str| s.parse::<ureq::http::Uri>().unwrap();
        assert!(p.is_no_proxy(&uri("http://localhost/x")));
        assert!(p.is_no_proxy(&uri("https://files.internal/x")));
        assert!(!p.is_no_proxy(&uri("https://example.com/x")));
        assert!(
            Client::new(&Options {
                proxy: Some("http://[bad".into()),
                ..Options::default()
            })
            .is_err()
        );
    }
}
