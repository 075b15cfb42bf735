//! Credentials and challenges: `WWW-Authenticate` parsing, and the docker
//! CLI's credential store (`~/.docker/config.json`: `auths` entries and
//! credential helpers), which `imgbuild login` writes too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

/// A user name and password (or token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or identity token.
    pub password: String,
}

impl Credentials {
    /// The `Authorization` value for basic auth.
    pub fn basic(&self) -> String {
        format!(
            "Basic {}",
            B64.encode(format!("{}:{}", self.username, self.password))
        )
    }
}

/// What a registry's `WWW-Authenticate` header asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm=…`.
    Basic,
    /// `Bearer realm=…,service=…[,scope=…]`: get a token from `realm`.
    Bearer {
        /// Token endpoint.
        realm: String,
        /// Service name to ask the endpoint for.
        service: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` header (RFC 7235: scheme, then
/// comma-separated `key=value` or `key="quoted value"` parameters).
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let params = parse_params(rest);
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => Some(Challenge::Bearer {
            realm: params.get("realm")?.clone(),
            service: params.get("service").cloned(),
        }),
        _ => None,
    }
}

fn parse_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        if key.is_empty() || chars.next() != Some('=') {
            return out;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect();
        }
        out.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
}

/// The keys docker uses for a registry in `auths`: the host, and for Docker
/// Hub its historical URL.
fn keys(registry: &str) -> Vec<String> {
    if registry == "docker.io" {
        vec![
            "https://index.docker.io/v1/".into(),
            "docker.io".into(),
            "index.docker.io".into(),
            "registry-1.docker.io".into(),
        ]
    } else {
        vec![
            registry.to_string(),
            format!("https://{registry}"),
            format!("http://{registry}"),
        ]
    }
}

/// Credentials for `registry` from the docker config file `config` (the
/// CLI finds it: `$DOCKER_CONFIG/config.json`, else
/// `~/.docker/config.json`): a credential helper (`credHelpers`,
/// `credsStore`) when one is configured, else `auths`. `None` when there
/// are none (anonymous access).
pub fn lookup(config: &Path, registry: &str) -> Option<Credentials> {
    let text = fs_err::read_to_string(config).ok()?;
    let config: serde_json::Value = serde_json::from_str(&text).ok()?;
    let keys = keys(registry);
    let helper = keys
        .iter()
        .find_map(|k| config["credHelpers"][k].as_str())
        .or_else(|| config["credsStore"].as_str());
    if let Some(h) = helper
        && let Some(c) = from_helper(h, &keys[0])
    {
        return Some(c);
    }
    keys.iter().find_map(|k| {
        let entry = &config["auths"][k];
        if let Some(auth) = entry["auth"].as_str() {
            let raw = B64.decode(auth.trim()).ok()?;
            let raw = String::from_utf8(raw).ok()?;
            let (u, p) = raw.split_once(':')?;
            return Some(Credentials {
                username: u.to_string(),
                password: p.to_string(),
            });
        }
        Some(Credentials {
            username: entry["username"].as_str()?.to_string(),
            password: entry["password"].as_str()?.to_string(),
        })
    })
}

/// Asks `docker-credential-HELPER get` (the docker credential helper
/// protocol: the server URL on stdin, JSON on stdout).
fn from_helper(helper: &str, server: &str) -> Option<Credentials> {
    use std::io::Write;
    let mut child = std::process::Command::new(format!("docker-credential-{helper}"))
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(server.as_bytes()).ok()?;
    let out = child.wait_with_output().ok()?;
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(Credentials {
        username: v["Username"].as_str()?.to_string(),
        password: v["Secret"].as_str()?.to_string(),
    })
}

/// Stores credentials for `registry` in the docker config file `config`
/// (`auths`, base64 as docker writes them), keeping everything else in the
/// file. Returns the file's path.
///
/// # Errors
/// An unreadable or unwritable config file.
pub fn store(config: &Path, registry: &str, c: &Credentials) -> std::io::Result<PathBuf> {
    edit(config, |auths| {
        auths.insert(
            keys(registry).swap_remove(0),
            serde_json::json!({ "auth": B64.encode(format!("{}:{}", c.username, c.password)) }),
        );
    })
}

/// Removes the credentials for `registry` from the docker config file
/// `config`. Returns whether there were any.
///
/// # Errors
/// An unreadable or unwritable config file.
pub fn remove(config: &Path, registry: &str) -> std::io::Result<bool> {
    let mut found = false;
    edit(config, |auths| {
        for k in keys(registry) {
            found |= auths.remove(&k).is_some();
        }
    })?;
    Ok(found)
}

fn edit(
    path: &Path,
    f: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) -> std::io::Result<PathBuf> {
    let path = path.to_path_buf();
    let mut config: serde_json::Value = match fs_err::read_to_string(&path) {
        Ok(t) => serde_json::from_str(&t).map_err(std::io::Error::other)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::json!({}),
        Err(e) => return Err(e),
    };
    let Some(obj) = config.as_object_mut() else {
        return Err(std::io::Error::other(format!(
            "{}: not a JSON object",
            path.display()
        )));
    };
    let auths = obj.entry("auths").or_insert_with(|| serde_json::json!({}));
    if let Some(a) = auths.as_object_mut() {
        f(a);
    }
    if let Some(dir) = path.parent() {
        fs_err::create_dir_all(dir)?;
    }
    let bytes = serde_json::to_vec_pretty(&config).map_err(std::io::Error::other)?;
    // Credentials: readable by the user only, replaced atomically.
    let tmp = path.with_extension("json.tmp");
    {
        use fs_err::os::unix::fs::OpenOptionsExt;
        use std::io::Write;
        let mut f = fs_err::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    fs_err::rename(&tmp, &path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse_as_registries_send_them() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/ubuntu:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge("bearer realm=http://127.0.0.1:1/t"),
            Some(Challenge::Bearer {
                realm: "http://127.0.0.1:1/t".into(),
                service: None,
            })
        );
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn basic_credentials_encode_as_docker_does() {
        let c = Credentials {
            username: "u".into(),
            password: "p:w".into(),
        };
        assert_eq!(c.basic(), "Basic dTpwOnc=");
    }
}
