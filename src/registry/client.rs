//! One registry, over HTTP: requests with authentication, manifests, blobs.
//! Every request runs under the client's [`Retry`] policy (`retry.rs`): this
//! file says, per request, what one attempt is and what an answer means.

use std::collections::HashMap;
use std::io::{Read, Seek};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ureq::http::Response;

use super::auth::{self, Challenge, Credentials};
use super::retry::{
    Attempt, Retry, Retrying, Transient, retry_after, transient_status, transient_transport,
};
use super::{Error, MANIFEST_ACCEPT, Result};
use crate::digest::Digest;
use crate::store::Store;

/// Manifests and token answers are small; anything bigger is refused.
const SMALL_LIMIT: u64 = 4 << 20;

/// Connection settings the user chooses.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Hosts (`host[:port]`) to talk to over plain http.
    pub insecure: Vec<String>,
    /// How failed requests are retried (`--retry`, `--retry-delay`).
    pub retry: Retry,
    /// The docker CLI's config file, where credentials are looked up
    /// (`None`: anonymous). The CLI finds it from `DOCKER_CONFIG` or `HOME`.
    pub docker_config: Option<std::path::PathBuf>,
}

/// Hears each retry.
type Notices = Arc<dyn Fn(&Retrying<'_>) + Send + Sync>;

type Answer = Response<ureq::Body>;

/// A client for one registry. Shared by the threads of one transfer.
pub struct Client {
    agent: ureq::Agent,
    registry: String,
    base: String,
    creds: Option<Credentials>,
    /// The registry's challenge, learned from `GET /v2/` on first need.
    challenge: Mutex<Option<Option<Challenge>>>,
    /// `Authorization` values by token scope.
    tokens: Mutex<HashMap<String, String>>,
    retry: Retry,
    notices: Option<Notices>,
}

/// Inside an attempt: the value of a `Done`, or return the `Again`.
macro_rules! done {
    ($e:expr) => {
        match $e {
            Attempt::Done(v) => v,
            Attempt::Again(t) => return Ok(Attempt::Again(t)),
        }
    };
}

/// The host the API of `registry` answers on.
fn api_host(registry: &str) -> &str {
    if registry == "docker.io" {
        "registry-1.docker.io"
    } else {
        registry
    }
}

fn is_loopback(registry: &str) -> bool {
    let host = match registry.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => registry,
    };
    matches!(host, "localhost" | "[::1]") || host.starts_with("127.")
}

fn http_err(url: &str, e: ureq::Error) -> Error {
    Error::Http {
        url: url.to_string(),
        message: e.to_string(),
    }
}

fn with_auth<B>(r: ureq::RequestBuilder<B>, auth: Option<&str>) -> ureq::RequestBuilder<B> {
    match auth {
        Some(a) => r.header("Authorization", a),
        None => r,
    }
}

impl Client {
    /// A client for `registry` (a reference's domain: `docker.io`,
    /// `127.0.0.1:5000`), with credentials from the docker config file
    /// [`Options::docker_config`] names.
    pub fn new(registry: &str, opts: &Options) -> Client {
        let plain = is_loopback(registry) || opts.insecure.iter().any(|h| h == registry);
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .user_agent(concat!("imgbuild/", env!("CARGO_PKG_VERSION")))
            .build();
        Client {
            agent: config.into(),
            registry: registry.to_string(),
            base: format!(
                "{}://{}",
                if plain { "http" } else { "https" },
                api_host(registry)
            ),
            creds: opts
                .docker_config
                .as_deref()
                .and_then(|c| auth::lookup(c, registry)),
            challenge: Mutex::new(None),
            tokens: Mutex::new(HashMap::new()),
            retry: opts.retry,
            notices: None,
        }
    }

    /// Uses these credentials instead of the docker config's.
    pub fn with_credentials(mut self, c: Credentials) -> Client {
        self.creds = Some(c);
        self
    }

    /// Tells `notice` about every retry, before its wait (one line each on
    /// the progress stream).
    pub fn with_notices(
        mut self,
        notice: impl Fn(&Retrying<'_>) + Send + Sync + 'static,
    ) -> Client {
        self.notices = Some(Arc::new(notice));
        self
    }

    /// The registry, as references name it.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Whether `url` is on the registry's own API host: only there does a
    /// request carry its credentials or token (an upload `Location` may
    /// point anywhere; docker, too, authorizes only hosts it was challenged
    /// by).
    fn ours(&self, url: &str) -> bool {
        url.strip_prefix(&self.base)
            .is_some_and(|rest| rest.starts_with('/'))
    }

    fn notice(&self, r: &Retrying<'_>) {
        if let Some(n) = &self.notices {
            n(r);
        }
    }

    /// Runs `attempt` under the retry policy.
    fn retrying<T>(&self, what: &str, attempt: impl FnMut() -> Result<Attempt<T>>) -> Result<T> {
        self.retry.run(what, &|r| self.notice(r), attempt)
    }

    /// Sorts what one request came to: a transport failure that may pass, or
    /// a transient status (with its `Retry-After`), is `Again`; any other
    /// answer is `Done`, whatever its status.
    fn classify(
        &self,
        url: &str,
        sent: std::result::Result<Answer, ureq::Error>,
    ) -> Result<Attempt<Answer>> {
        match sent {
            Ok(resp) if transient_status(resp.status().as_u16()) => {
                let after = retry_after(resp.headers());
                Ok(Attempt::Again(Transient {
                    error: self.status_error(url, resp),
                    after,
                }))
            }
            Ok(resp) => Ok(Attempt::Done(resp)),
            Err(e) if transient_transport(&e) => {
                Ok(Attempt::Again(Transient::new(http_err(url, e))))
            }
            Err(e) => Err(http_err(url, e)),
        }
    }

    /// A small body (manifest, token answer); one cut short is `Again`.
    fn read_small(&self, url: &str, resp: &mut Answer) -> Result<Attempt<Vec<u8>>> {
        match resp
            .body_mut()
            .with_config()
            .limit(SMALL_LIMIT)
            .read_to_vec()
        {
            Ok(b) => Ok(Attempt::Done(b)),
            Err(e) if transient_transport(&e) => {
                Ok(Attempt::Again(Transient::new(http_err(url, e))))
            }
            Err(e) => Err(http_err(url, e)),
        }
    }

    fn challenge(&self) -> Result<Option<Challenge>> {
        let mut c = self.challenge.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = c.as_ref() {
            return Ok(known.clone());
        }
        let url = self.url("/v2/");
        let what = format!("GET /v2/ of {}", self.registry);
        let resp = self.retrying(&what, || self.classify(&url, self.agent.get(&url).call()))?;
        let found = match resp.status().as_u16() {
            401 => resp
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .and_then(auth::parse_challenge),
            _ => None,
        };
        *c = Some(found.clone());
        Ok(found)
    }

    /// The `Authorization` value for `repo` (pull, or pull and push), getting
    /// a token when the registry uses them; `fresh` forgets a cached one.
    fn authorization(&self, repo: &str, push: bool, fresh: bool) -> Result<Option<String>> {
        let scope = format!(
            "repository:{repo}:{}",
            if push { "pull,push" } else { "pull" }
        );
        let required = || Error::AuthRequired {
            registry: self.registry.clone(),
            repository: repo.to_string(),
        };
        match self.challenge()? {
            None => Ok(None),
            Some(Challenge::Basic) => match &self.creds {
                Some(c) => Ok(Some(c.basic())),
                None => Err(required()),
            },
            Some(Challenge::Bearer { realm, service }) => {
                let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
                if fresh {
                    tokens.remove(&scope);
                }
                if let Some(t) = tokens.get(&scope) {
                    return Ok(Some(t.clone()));
                }
                let what = if repo.is_empty() {
                    format!("token from {realm}")
                } else {
                    format!("token for {repo}")
                };
                let value = self.retrying(&what, || {
                    let mut req = self.agent.get(&realm).query("scope", &scope);
                    if let Some(s) = &service {
                        req = req.query("service", s);
                    }
                    if let Some(c) = &self.creds {
                        req = req.header("Authorization", c.basic());
                    }
                    let mut resp = done!(self.classify(&realm, req.call())?);
                    match resp.status().as_u16() {
                        200 => {}
                        401 | 403 => return Err(required()),
                        _ => return Err(self.status_error(&realm, resp)),
                    }
                    let body = done!(self.read_small(&realm, &mut resp)?);
                    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
                        Error::Manifest(format!("{realm}: token answer is not JSON: {e}"))
                    })?;
                    let token = v["token"]
                        .as_str()
                        .or_else(|| v["access_token"].as_str())
                        .ok_or_else(|| {
                            Error::Manifest(format!("{realm}: no token in the answer"))
                        })?;
                    Ok(Attempt::Done(format!("Bearer {token}")))
                })?;
                tokens.insert(scope, value.clone());
                Ok(Some(value))
            }
        }
    }

    /// One attempt at a request authenticated for `repo` (on the registry's
    /// own host): on 401 once more with a fresh token, then
    /// [`Error::AuthRequired`].
    fn exchange(
        &self,
        url: &str,
        repo: &str,
        push: bool,
        mut request: impl FnMut(Option<&str>) -> std::result::Result<Answer, ureq::Error>,
    ) -> Result<Attempt<Answer>> {
        for fresh in [false, true] {
            let auth = if self.ours(url) {
                self.authorization(repo, push, fresh)?
            } else {
                None
            };
            let resp = done!(self.classify(url, request(auth.as_deref()))?);
            if resp.status().as_u16() != 401 {
                return Ok(Attempt::Done(resp));
            }
        }
        Err(Error::AuthRequired {
            registry: self.registry.clone(),
            repository: repo.to_string(),
        })
    }

    /// A request that can be repeated as it is, under the retry policy.
    fn send(
        &self,
        what: &str,
        url: &str,
        repo: &str,
        push: bool,
        mut request: impl FnMut(Option<&str>) -> std::result::Result<Answer, ureq::Error>,
    ) -> Result<Answer> {
        self.retrying(what, || self.exchange(url, repo, push, &mut request))
    }

    /// Runs `fetch` once more, from scratch, when what it got does not match
    /// its digest (a proxy, a cache node or the network may have damaged one
    /// copy; nothing of the first is kept); a second mismatch is the error.
    fn verified<T>(&self, what: &str, mut fetch: impl FnMut() -> Result<T>) -> Result<T> {
        match fetch() {
            Err(Error::DigestMismatch { actual, .. }) => {
                self.notice(&Retrying {
                    what,
                    delay: None,
                    asked: false,
                    attempt: 2,
                    attempts: 2,
                    reason: &format!("it does not match its digest (got {})", actual.short()),
                });
                fetch()
            }
            other => other,
        }
    }

    fn status_error(&self, url: &str, mut resp: Answer) -> Error {
        let status = resp.status().as_u16();
        if status == 404 {
            return Error::NotFound(url.to_string());
        }
        // The distribution API's errors: {"errors":[{"code":…,"message":…}]}.
        let body = resp
            .body_mut()
            .with_config()
            .limit(64 << 10)
            .read_to_vec()
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| {
                v["errors"].as_array().map(|errs| {
                    errs.iter()
                        .map(|e| {
                            format!(
                                "{} {}",
                                e["code"].as_str().unwrap_or(""),
                                e["message"].as_str().unwrap_or("")
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("; ")
                })
            })
            .unwrap_or_default();
        Error::Status {
            url: url.to_string(),
            status,
            body,
        }
    }

    /// Fetches a manifest or index by tag or digest: its bytes, media type
    /// and digest (checked when `reference` is a digest).
    ///
    /// # Errors
    /// Transport (after the retries), auth, status or digest failures.
    pub fn manifest(&self, repo: &str, reference: &str) -> Result<(Vec<u8>, String, Digest)> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let expected = reference.parse::<Digest>().ok();
        let what = match &expected {
            Some(d) => format!("GET manifest {repo}@{}", d.short()),
            None => format!("GET manifest {repo}:{reference}"),
        };
        self.verified(&what, || {
            let (bytes, media_type) = self.retrying(&what, || {
                let mut resp = done!(self.exchange(&url, repo, false, |auth| {
                    with_auth(self.agent.get(&url).header("Accept", MANIFEST_ACCEPT), auth).call()
                })?);
                if resp.status().as_u16() != 200 {
                    return Err(self.status_error(&url, resp));
                }
                let media_type = resp
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string();
                let bytes = done!(self.read_small(&url, &mut resp)?);
                Ok(Attempt::Done((bytes, media_type)))
            })?;
            let digest = Digest::of(&bytes);
            if let Some(expected) = expected
                && expected != digest
            {
                return Err(Error::DigestMismatch {
                    what: format!("manifest {repo}@{expected}"),
                    registry: self.registry.clone(),
                    expected,
                    actual: digest,
                });
            }
            Ok((bytes, media_type, digest))
        })
    }

    /// Whether the registry has a blob in `repo` (`HEAD`).
    ///
    /// # Errors
    /// Transport (after the retries), auth or unexpected status.
    pub fn has_blob(&self, repo: &str, digest: &Digest, push: bool) -> Result<bool> {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        let what = format!("HEAD blob {}", digest.short());
        let resp = self.send(&what, &url, repo, push, |auth| {
            with_auth(self.agent.head(&url), auth).call()
        })?;
        match resp.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(self.status_error(&url, resp)),
        }
    }

    /// Downloads a blob into the store, verified against `digest` before it
    /// enters. A broken connection is retried, resuming where it stopped
    /// when the registry honours `Range`; a blob that does not match its
    /// digest is fetched once more from scratch. `on_bytes` hears the bytes
    /// received so far.
    ///
    /// # Errors
    /// Transport (after the retries), auth, status, or a digest mismatch
    /// twice (nothing is stored then).
    pub fn fetch_blob(
        &self,
        store: &Store,
        repo: &str,
        digest: &Digest,
        size: u64,
        on_bytes: &dyn Fn(u64),
    ) -> Result<()> {
        let what = format!("GET blob {}", digest.short());
        self.verified(&what, || {
            self.fetch_blob_once(&what, store, repo, digest, size, on_bytes)
        })
    }

    fn fetch_blob_once(
        &self,
        what: &str,
        store: &Store,
        repo: &str,
        digest: &Digest,
        size: u64,
        on_bytes: &dyn Fn(u64),
    ) -> Result<()> {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        let mut writer = store.blob_writer()?;
        self.retrying(what, || {
            let have = writer.written();
            let resp = done!(self.exchange(&url, repo, false, |auth| {
                let mut r = self.agent.get(&url);
                if have > 0 {
                    r = r.header("Range", format!("bytes={have}-"));
                }
                with_auth(r, auth).call()
            })?);
            match resp.status().as_u16() {
                200 if have > 0 => {
                    // No resume: start over.
                    writer = store.blob_writer()?;
                }
                200 => {}
                206 if range_start(&resp) == Some(have) => {}
                206 => {
                    // Another range than asked for: those bytes cannot be
                    // used; start over.
                    writer = store.blob_writer()?;
                    return Ok(Attempt::Again(Transient::new(Error::Http {
                        url: url.clone(),
                        message: format!(
                            "the registry answered a resume at byte {have} with another range"
                        ),
                    })));
                }
                _ => return Err(self.status_error(&url, resp)),
            }
            let start = writer.written();
            // One byte more than the blob may have: a registry sending too
            // much is caught, never stored.
            let mut body = resp
                .into_body()
                .into_reader()
                .take(size.saturating_sub(start) + 1);
            let broken = |source| {
                Ok(Attempt::Again(Transient::new(Error::Io {
                    path: url.clone().into(),
                    source,
                })))
            };
            match copy_counting(&mut body, &mut writer, start, on_bytes) {
                Ok(()) => {}
                Err(Copy::Read(e)) => return broken(e),
                Err(Copy::Write(source)) => {
                    return Err(Error::Io {
                        path: store.root().join("tmp"),
                        source,
                    });
                }
            }
            if writer.written() < size {
                // A body that ends early is a broken transfer too: resume it
                // rather than fail the digest.
                return broken(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "the connection ended after {} of {size} bytes",
                        writer.written()
                    ),
                ));
            }
            Ok(Attempt::Done(()))
        })?;
        writer
            .commit(Some(digest))
            .map_err(|e| match e {
                crate::store::Error::DigestMismatch { expected, actual } => Error::DigestMismatch {
                    what: format!("blob {repo}@{expected}"),
                    registry: self.registry.clone(),
                    expected,
                    actual,
                },
                other => Error::Store(other),
            })
            .map(|_| ())
    }

    /// An upload session's URL from an answer's `Location` (a URL, or a
    /// path on the registry).
    fn location(&self, url: &str, resp: &Answer) -> Result<String> {
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Error::Manifest(format!("{url}: no upload location")))?;
        Ok(
            if location.starts_with("http://") || location.starts_with("https://") {
                location.to_string()
            } else {
                self.url(location)
            },
        )
    }

    /// Cancels an upload session: one attempt, whatever it answers (the
    /// registry expires abandoned sessions anyway).
    fn cancel(&self, session: &str, repo: &str) {
        let _ = self.exchange(session, repo, true, |auth| {
            with_auth(self.agent.delete(session), auth).call()
        });
    }

    /// Uploads the file at `path` as blob `digest`, as docker does: POST
    /// opens a session, one streamed PATCH sends the bytes, PUT with the
    /// digest closes it (the registry refuses bytes that do not match). With
    /// `mount_from`, the POST asks the registry to mount the blob from that
    /// repository instead; returns whether it did (nothing uploaded then).
    ///
    /// A failed attempt is never resumed: its session is cancelled and the
    /// next attempt opens a new one and sends every byte again (distribution
    /// refuses a session resumed at an offset its state token did not
    /// record, and how many bytes of a broken PATCH it kept is unknown). An
    /// attempt after one that got past the POST first asks with `HEAD`
    /// whether the blob is there already: the PUT may have succeeded with
    /// its answer lost.
    ///
    /// # Errors
    /// Transport (after the retries), auth, status or file failures.
    pub fn upload_blob(
        &self,
        repo: &str,
        digest: &Digest,
        path: &Path,
        mount_from: Option<&str>,
    ) -> Result<bool> {
        let mut post = self.url(&format!("/v2/{repo}/blobs/uploads/"));
        if let Some(from) = mount_from {
            post.push_str(&format!("?mount={digest}&from={from}"));
        }
        let io_err = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        #[allow(clippy::disallowed_methods)] // the error names the path already
        let mut file = std::fs::File::open(path).map_err(io_err)?;
        // The file's own length: a damaged store blob is then refused by the
        // registry's digest check rather than cut short here.
        let len = file.metadata().map_err(io_err)?.len();
        let what = format!("upload of blob {}", digest.short());
        let mut past_post = false;
        self.retrying(&what, || {
            if past_post && self.has_blob(repo, digest, true)? {
                return Ok(Attempt::Done(false));
            }
            let resp = done!(self.exchange(&post, repo, true, |auth| {
                with_auth(self.agent.post(&post), auth).send_empty()
            })?);
            match resp.status().as_u16() {
                201 => return Ok(Attempt::Done(true)),
                202 => {}
                _ => return Err(self.status_error(&post, resp)),
            }
            let session = self.location(&post, &resp)?;
            past_post = true;
            let sent = self.exchange(&session, repo, true, |auth| {
                file.rewind().map_err(ureq::Error::Io)?;
                with_auth(self.agent.patch(&session), auth)
                    .header("Content-Type", "application/octet-stream")
                    .header("Content-Length", len.to_string())
                    .send(ureq::SendBody::from_reader(&mut file))
            });
            let resp = match sent {
                Ok(Attempt::Done(r)) if r.status().as_u16() == 202 => r,
                other => {
                    self.cancel(&session, repo);
                    return match other {
                        Ok(Attempt::Done(r)) => Err(self.status_error(&session, r)),
                        Ok(Attempt::Again(t)) => Ok(Attempt::Again(t)),
                        Err(e) => Err(e),
                    };
                }
            };
            let mut put = self.location(&session, &resp)?;
            put.push(if put.contains('?') { '&' } else { '?' });
            put.push_str(&format!("digest={digest}"));
            let resp = done!(self.exchange(&put, repo, true, |auth| {
                with_auth(self.agent.put(&put), auth).send_empty()
            })?);
            match resp.status().as_u16() {
                201 | 204 => Ok(Attempt::Done(false)),
                _ => Err(self.status_error(&put, resp)),
            }
        })
    }

    /// Uploads a manifest under `reference` (a tag or its digest); returns
    /// the digest the registry reports.
    ///
    /// # Errors
    /// Transport (after the retries), auth or status failures.
    pub fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Digest> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let what = format!("PUT manifest {repo}:{reference}");
        let resp = self.send(&what, &url, repo, true, |auth| {
            with_auth(
                self.agent.put(&url).header("Content-Type", media_type),
                auth,
            )
            .send(bytes)
        })?;
        if !matches!(resp.status().as_u16(), 200 | 201) {
            return Err(self.status_error(&url, resp));
        }
        Ok(resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| Digest::of(bytes)))
    }

    /// Checks the credentials against the registry (`imgbuild login`).
    ///
    /// # Errors
    /// [`Error::AuthRequired`] when they are refused.
    pub fn check_login(&self) -> Result<()> {
        match self.challenge()? {
            None => Ok(()),
            Some(Challenge::Basic) => {
                let url = self.url("/v2/");
                let what = format!("GET /v2/ of {}", self.registry);
                let basic = self.creds.as_ref().map(Credentials::basic);
                let resp = self.retrying(&what, || {
                    self.classify(
                        &url,
                        with_auth(self.agent.get(&url), basic.as_deref()).call(),
                    )
                })?;
                match resp.status().as_u16() {
                    200 => Ok(()),
                    _ => Err(Error::AuthRequired {
                        registry: self.registry.clone(),
                        repository: String::new(),
                    }),
                }
            }
            // A token for no particular repository proves the credentials.
            Some(Challenge::Bearer { .. }) => self.authorization("", false, true).map(|_| ()),
        }
    }
}

/// Where a 206 answer's `Content-Range: bytes START-END/TOTAL` starts.
fn range_start(resp: &Answer) -> Option<u64> {
    let v = resp.headers().get("content-range")?.to_str().ok()?;
    let range = v.trim().strip_prefix("bytes")?.trim_start();
    range.split('-').next()?.trim().parse().ok()
}

/// Which side of a copy failed.
enum Copy {
    /// Reading the answer: the transfer broke.
    Read(std::io::Error),
    /// Writing the store.
    Write(std::io::Error),
}

/// Copies all of `r` into `w`, reporting the running total (from `start`).
fn copy_counting(
    r: &mut impl Read,
    w: &mut impl std::io::Write,
    start: u64,
    on_bytes: &dyn Fn(u64),
) -> std::result::Result<(), Copy> {
    let mut buf = vec![0u8; 256 << 10];
    let mut total = start;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Copy::Read(e)),
        };
        w.write_all(&buf[..n]).map_err(Copy::Write)?;
        total += n as u64;
        on_bytes(total);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_for_loopback_and_named_hosts() {
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("127.0.0.1:41234"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("registry.example.com"));
        assert!(!is_loopback("10.0.0.1:5000"));
        let c = Client::new("10.0.0.1:5000", &Options::default());
        assert!(c.base.starts_with("https://"));
        let c = Client::new(
            "10.0.0.1:5000",
            &Options {
                insecure: vec!["10.0.0.1:5000".into()],
                ..Options::default()
            },
        );
        assert!(c.base.starts_with("http://"));
        assert_eq!(
            Client::new("docker.io", &Options::default()).base,
            "https://registry-1.docker.io"
        );
    }
}
