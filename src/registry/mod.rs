//! The OCI distribution protocol: pull images from and push them to any
//! registry (docker.io, a CNCF distribution server, a cloud registry).
//!
//! `client` speaks HTTP (ureq, blocking: transfers run on a few threads of
//! our own) and owns authentication: the registry's `WWW-Authenticate`
//! challenge, anonymous or credentialed bearer tokens per repository scope,
//! basic auth, credentials from `~/.docker/config.json` (`auth`). `pull`
//! resolves a reference to a manifest for the platform, fetches missing
//! blobs in parallel, streamed to the store and verified against their
//! digests before they enter it, resumed with `Range`. `push` uploads what
//! the registry lacks (`HEAD` first), streamed, and the manifest last.
//! Every request the client makes goes through one policy (`retry`): a
//! connection error, a timeout or a 408/429/500/502/503/504 is tried again
//! after an exponential backoff with jitter (or the registry's
//! `Retry-After`), a bounded number of times; auth and not-found answers
//! never are.
//!
//! Plain http is used only for loopback hosts and hosts the user names as
//! insecure (`--insecure-registry`), as docker does.

pub mod auth;
pub mod cache;
mod client;
pub mod pull;
pub mod push;
mod retry;

use std::path::PathBuf;

pub use client::{Client, Options};
pub use retry::{BASE_DELAY, DEFAULT_RETRIES, MAX_DELAY, Retry, Retrying};

use crate::digest::Digest;

/// A registry operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The connection failed or broke.
    #[error("{url}: {message}")]
    Http {
        /// The request.
        url: String,
        /// Why (ureq's message, which already names its cause).
        message: String,
    },
    /// The registry answered with an error status.
    #[error("{url}: the registry answered {}{}", retry::status_line(*.status), detail(.body))]
    Status {
        /// The request.
        url: String,
        /// HTTP status.
        status: u16,
        /// The registry's error message, if any.
        body: String,
    },
    /// The registry wants credentials we do not have (or refused ours).
    #[error(
        "authentication required for {registry}/{repository}: run `imgbuild login {registry}` (or add credentials to ~/.docker/config.json)"
    )]
    AuthRequired {
        /// Registry host.
        registry: String,
        /// Repository.
        repository: String,
    },
    /// Something the registry sent does not match its digest.
    #[error(
        "{what} from {registry} does not match its digest {expected} (got {actual}); it was not stored"
    )]
    DigestMismatch {
        /// Blob or manifest.
        what: String,
        /// Registry host.
        registry: String,
        /// The digest it should have.
        expected: Digest,
        /// What it hashed to.
        actual: Digest,
    },
    /// A transient failure that every attempt met (the last one is kept).
    #[error("{last} (gave up after {attempts} attempts)")]
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// The last attempt's failure.
        last: Box<Error>,
    },
    /// No such image, tag or blob.
    #[error("{0}: not found")]
    NotFound(String),
    /// A manifest or index that cannot be used.
    #[error("{0}")]
    Manifest(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    /// Image documents failed to parse or build.
    #[error(transparent)]
    Oci(#[from] crate::oci::Error),
    /// A local file failed.
    #[error("{path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

fn detail(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    }
}

/// Result of registry operations.
pub type Result<T> = std::result::Result<T, Error>;

/// Media types a registry may answer a manifest request with, best first.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Runs `work` on every item, on up to `threads` threads; stops taking new
/// items after the first failure, which is returned.
fn in_parallel<T: Sync>(
    items: &[T],
    threads: usize,
    work: impl Fn(&T) -> Result<()> + Sync,
) -> Result<()> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let failed = std::sync::Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads.min(items.len()) {
            s.spawn(|| {
                while let Some(item) = items.get(next.fetch_add(1, Ordering::Relaxed)) {
                    if failed.lock().map(|f| f.is_some()).unwrap_or(true) {
                        return;
                    }
                    if let Err(e) = work(item) {
                        if let Ok(mut f) = failed.lock() {
                            f.get_or_insert(e);
                        }
                        return;
                    }
                }
            });
        }
    });
    match failed.into_inner() {
        Ok(Some(e)) => Err(e),
        _ => Ok(()),
    }
}
