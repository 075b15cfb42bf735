//! One registry, over HTTP: requests with authentication, manifests, blobs.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use ureq::http::Response;

use super::auth::{self, Challenge, Credentials};
use super::{Error, MANIFEST_ACCEPT, Result};
use crate::digest::Digest;
use crate::store::Store;

/// How a blob transfer is retried: attempts, and the first backoff (doubled
/// each time).
const ATTEMPTS: u32 = 5;
const BACKOFF: Duration = Duration::from_millis(200);

/// Manifests and token answers are small; anything bigger is refused.
const SMALL_LIMIT: u64 = 4 << 20;

/// Connection settings the user chooses.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Hosts (`host[:port]`) to talk to over plain http.
    pub insecure: Vec<String>,
}

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

impl Client {
    /// A client for `registry` (a reference's domain: `docker.io`,
    /// `127.0.0.1:5000`), with credentials from the docker config.
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
            creds: auth::lookup(registry),
            challenge: Mutex::new(None),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// Uses these credentials instead of the docker config's.
    pub fn with_credentials(mut self, c: Credentials) -> Client {
        self.creds = Some(c);
        self
    }

    /// The registry, as references name it.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn http_err(&self, url: &str) -> impl FnOnce(ureq::Error) -> Error + '_ {
        let url = url.to_string();
        move |e| Error::Http {
            url,
            message: e.to_string(),
        }
    }

    fn challenge(&self) -> Result<Option<Challenge>> {
        let mut c = self.challenge.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = c.as_ref() {
            return Ok(known.clone());
        }
        let url = self.url("/v2/");
        let resp = self.agent.get(&url).call().map_err(self.http_err(&url))?;
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
                let mut req = self.agent.get(&realm).query("scope", &scope);
                if let Some(s) = &service {
                    req = req.query("service", s);
                }
                if let Some(c) = &self.creds {
                    req = req.header("Authorization", c.basic());
                }
                let mut resp = req.call().map_err(self.http_err(&realm))?;
                match resp.status().as_u16() {
                    200 => {}
                    401 | 403 => return Err(required()),
                    status => {
                        return Err(Error::Status {
                            url: realm,
                            status,
                            body: String::new(),
                        });
                    }
                }
                let body = resp
                    .body_mut()
                    .with_config()
                    .limit(SMALL_LIMIT)
                    .read_to_vec()
                    .map_err(self.http_err(&realm))?;
                let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
                    Error::Manifest(format!("{realm}: token answer is not JSON: {e}"))
                })?;
                let token = v["token"]
                    .as_str()
                    .or_else(|| v["access_token"].as_str())
                    .ok_or_else(|| Error::Manifest(format!("{realm}: no token in the answer")))?;
                let value = format!("Bearer {token}");
                tokens.insert(scope, value.clone());
                Ok(Some(value))
            }
        }
    }

    /// Sends a request that can be repeated, authenticated for `repo`; on
    /// 401 once more with a fresh token, then [`Error::AuthRequired`].
    fn send(
        &self,
        url: &str,
        repo: &str,
        push: bool,
        request: impl Fn(Option<&str>) -> std::result::Result<Response<ureq::Body>, ureq::Error>,
    ) -> Result<Response<ureq::Body>> {
        for fresh in [false, true] {
            let auth = self.authorization(repo, push, fresh)?;
            let resp = request(auth.as_deref()).map_err(self.http_err(url))?;
            if resp.status().as_u16() != 401 {
                return Ok(resp);
            }
        }
        Err(Error::AuthRequired {
            registry: self.registry.clone(),
            repository: repo.to_string(),
        })
    }

    fn status_error(&self, url: &str, mut resp: Response<ureq::Body>) -> Error {
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
    /// Transport, auth, status or digest failures.
    pub fn manifest(&self, repo: &str, reference: &str) -> Result<(Vec<u8>, String, Digest)> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let mut resp = self.send(&url, repo, false, |auth| {
            let mut r = self.agent.get(&url).header("Accept", MANIFEST_ACCEPT);
            if let Some(a) = auth {
                r = r.header("Authorization", a);
            }
            r.call()
        })?;
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
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(SMALL_LIMIT)
            .read_to_vec()
            .map_err(self.http_err(&url))?;
        let digest = Digest::of(&bytes);
        if let Ok(expected) = reference.parse::<Digest>()
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
    }

    /// Whether the registry has a blob in `repo` (`HEAD`).
    ///
    /// # Errors
    /// Transport, auth or unexpected status.
    pub fn has_blob(&self, repo: &str, digest: &Digest, push: bool) -> Result<bool> {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        let resp = self.send(&url, repo, push, |auth| {
            let mut r = self.agent.head(&url);
            if let Some(a) = auth {
                r = r.header("Authorization", a);
            }
            r.call()
        })?;
        match resp.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(self.status_error(&url, resp)),
        }
    }

    /// Downloads a blob into the store, verified against `digest` before it
    /// enters. A broken connection is retried with backoff, resuming where it
    /// stopped when the registry honours `Range`. `on_bytes` hears the bytes
    /// received so far.
    ///
    /// # Errors
    /// Transport (after the retries), auth, status, or a digest mismatch
    /// (nothing is stored then).
    pub fn fetch_blob(
        &self,
        store: &Store,
        repo: &str,
        digest: &Digest,
        size: u64,
        on_bytes: &dyn Fn(u64),
    ) -> Result<()> {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        let mut writer = store.blob_writer()?;
        let mut delay = BACKOFF;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let have = writer.written();
            let result = self.send(&url, repo, false, |auth| {
                let mut r = self.agent.get(&url);
                if have > 0 {
                    r = r.header("Range", format!("bytes={have}-"));
                }
                if let Some(a) = auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            });
            let failure = match result {
                Ok(resp) => match resp.status().as_u16() {
                    status @ (200 | 206) => {
                        if status == 200 && have > 0 {
                            // No resume: start over.
                            writer = store.blob_writer()?;
                        }
                        let start = writer.written();
                        // One byte more than the blob may have: a registry
                        // sending too much is caught, never stored.
                        let mut body = resp
                            .into_body()
                            .into_reader()
                            .take(size.saturating_sub(start) + 1);
                        let copied = copy_counting(&mut body, &mut writer, start, on_bytes)
                            .and_then(|()| {
                                // A body that ends early is a broken transfer
                                // too: resume it rather than fail the digest.
                                if writer.written() < size {
                                    Err(std::io::Error::new(
                                        std::io::ErrorKind::UnexpectedEof,
                                        format!(
                                            "the connection ended after {} of {size} bytes",
                                            writer.written()
                                        ),
                                    ))
                                } else {
                                    Ok(())
                                }
                            });
                        match copied {
                            Ok(()) => break,
                            Err(e) => Error::Io {
                                path: url.clone().into(),
                                source: e,
                            },
                        }
                    }
                    429 | 500..=599 => self.status_error(&url, resp),
                    _ => return Err(self.status_error(&url, resp)),
                },
                Err(e @ Error::Http { .. }) => e,
                Err(e) => return Err(e),
            };
            if attempt >= ATTEMPTS {
                return Err(failure);
            }
            std::thread::sleep(delay);
            delay *= 2;
        }
        writer.commit(Some(digest)).map_err(|e| match e {
            crate::store::Error::DigestMismatch { expected, actual } => Error::DigestMismatch {
                what: format!("blob {repo}@{expected}"),
                registry: self.registry.clone(),
                expected,
                actual,
            },
            other => Error::Store(other),
        })?;
        Ok(())
    }

    /// Uploads the file at `path` as blob `digest` (POST, then one streamed
    /// PUT). With `mount_from`, asks the registry to mount it from that
    /// repository first; returns whether it did (nothing uploaded then).
    ///
    /// # Errors
    /// Transport, auth, status or file failures.
    pub fn upload_blob(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        path: &Path,
        mount_from: Option<&str>,
    ) -> Result<bool> {
        let mut post = self.url(&format!("/v2/{repo}/blobs/uploads/"));
        if let Some(from) = mount_from {
            post.push_str(&format!("?mount={digest}&from={from}"));
        }
        let resp = self.send(&post, repo, true, |auth| {
            let mut r = self.agent.post(&post);
            if let Some(a) = auth {
                r = r.header("Authorization", a);
            }
            r.send_empty()
        })?;
        match resp.status().as_u16() {
            201 => return Ok(true),
            202 => {}
            _ => return Err(self.status_error(&post, resp)),
        }
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Error::Manifest(format!("{post}: no upload location")))?;
        let mut put = if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            self.url(location)
        };
        put.push(if put.contains('?') { '&' } else { '?' });
        put.push_str(&format!("digest={digest}"));
        let auth = self.authorization(repo, true, false)?;
        let mut file = std::fs::File::open(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut r = self
            .agent
            .put(&put)
            .header("Content-Type", "application/octet-stream")
            .header("Content-Length", size.to_string());
        if let Some(a) = &auth {
            r = r.header("Authorization", a);
        }
        let resp = r
            .send(ureq::SendBody::from_reader(&mut file))
            .map_err(self.http_err(&put))?;
        match resp.status().as_u16() {
            201 | 204 => Ok(false),
            _ => Err(self.status_error(&put, resp)),
        }
    }

    /// Uploads a manifest under `reference` (a tag or its digest); returns
    /// the digest the registry reports.
    ///
    /// # Errors
    /// Transport, auth or status failures.
    pub fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Digest> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let resp = self.send(&url, repo, true, |auth| {
            let mut r = self.agent.put(&url).header("Content-Type", media_type);
            if let Some(a) = auth {
                r = r.header("Authorization", a);
            }
            r.send(bytes)
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
                let mut r = self.agent.get(&url);
                if let Some(c) = &self.creds {
                    r = r.header("Authorization", c.basic());
                }
                let resp = r.call().map_err(self.http_err(&url))?;
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

/// Copies all of `r` into `w`, reporting the running total (from `start`).
fn copy_counting(
    r: &mut impl Read,
    w: &mut impl std::io::Write,
    start: u64,
    on_bytes: &dyn Fn(u64),
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 256 << 10];
    let mut total = start;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..n])?;
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
            },
        );
        assert!(c.base.starts_with("http://"));
        assert_eq!(
            Client::new("docker.io", &Options::default()).base,
            "https://registry-1.docker.io"
        );
    }
}
