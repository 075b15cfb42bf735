//! `--ssh` and `RUN --mount=type=ssh`: the SSH agents a build forwards, and
//! the socket each RUN gets. It never reads a key's bytes into anything but
//! `ssh-add`, and never writes them anywhere.
//!
//! An id names an agent socket (forwarded as it is) or key files. For key
//! files imgbuild starts a private `ssh-agent -D` (OpenSSH's own, so every
//! key type it supports works and no signing code lives here) for the build,
//! `ssh-add`s the keys into it, and kills it when the build ends (it also
//! dies with the builder: `PR_SET_PDEATHSIG`). BuildKit holds such keys in
//! an in-process agent instead; the reference agent is the smaller risk
//! than an agent of our own. Passphrase-protected keys are refused up front,
//! as buildx refuses them (nothing could type the passphrase).
//!
//! A RUN never sees the agent's socket itself: each ssh mount gets a proxy,
//! a socket of its own in the step's directory, which stage 1 gives the
//! mount's owner and mode (`exec::MountKind::Socket`) and binds at the
//! target. The proxy passes on only what using keys needs (listing them and
//! signing); adding, removing, locking and extensions are answered with
//! `SSH_AGENT_FAILURE`, as BuildKit's read-only agent does, so a step can
//! neither change the caller's agent nor lock it. The framing (a 4-byte
//! length, at most OpenSSH's 256 KiB, then the message) and the type byte
//! are all the proxy reads; the agent protocol is request/response, one at
//! a time, so one thread per connection relays, `MAX_CONNECTIONS` (32) at
//! most. Filtering needs that much parsing; a byte-for-byte relay would
//! hand a step the whole agent.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use crate::exec::HostOptions;

/// The most a key file may hold (BuildKit's limit).
const MAX_KEY: u64 = 100 * 1024;

/// The longest agent message relayed (OpenSSH's `AGENT_MAX_LEN`).
const MAX_MESSAGE: usize = 256 * 1024;

/// The most connections one RUN's socket serves at once (a thread each, in
/// the builder, outside the step's pids limit); more are closed unserved.
/// git and ssh hold one each.
const MAX_CONNECTIONS: usize = 32;

/// Requests a RUN may make: `SSH_AGENTC_REQUEST_IDENTITIES` and
/// `SSH_AGENTC_SIGN_REQUEST` (draft-miller-ssh-agent, section 6.1).
const ALLOWED: [u8; 2] = [11, 13];

/// `SSH_AGENT_FAILURE`, as a framed message.
const FAILURE: [u8; 5] = [0, 0, 0, 1, 5];

/// Why an `--ssh` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// A path that cannot be examined.
    #[error("--ssh {id}: {}: {source}", path.display())]
    Stat {
        /// The id.
        id: String,
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Sockets and keys under one id, or two sockets (buildx refuses both).
    #[error("--ssh {id}: give one agent socket, or key files, not both or two sockets")]
    Mixed {
        /// The id.
        id: String,
    },
    /// A key file that is no private key imgbuild can tell apart.
    #[error("--ssh {id}: {} is not a private key (OpenSSH or PEM)", path.display())]
    NotKey {
        /// The id.
        id: String,
        /// The file.
        path: PathBuf,
    },
    /// A key with a passphrase.
    #[error(
        "--ssh {id}: {} is passphrase protected: add it to an agent (ssh-add) and give its socket (--ssh {id}=$SSH_AUTH_SOCK)",
        path.display()
    )]
    Encrypted {
        /// The id.
        id: String,
        /// The file.
        path: PathBuf,
    },
    /// Key files, but no OpenSSH client to hold them.
    #[error(
        "--ssh {id}: key files need ssh-agent and ssh-add in PATH (Debian: apt-get install openssh-client)"
    )]
    NoAgent {
        /// The id.
        id: String,
    },
    /// The private agent could not be started or given the keys.
    #[error("--ssh {id}: {what}")]
    Agent {
        /// The id.
        id: String,
        /// What failed.
        what: String,
    },
}

impl SshError {
    /// Whether the flag's value is at fault (a path that is no socket or
    /// usable key), rather than this machine (no OpenSSH client, an agent
    /// that does not start).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            SshError::Stat { .. }
                | SshError::Mixed { .. }
                | SshError::NotKey { .. }
                | SshError::Encrypted { .. }
        )
    }
}

/// What an `--ssh` id names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An agent's socket.
    Socket(PathBuf),
    /// Private key files, for a private agent.
    Keys(Vec<PathBuf>),
}

/// What `paths` are: one socket, or key files (every one readable, a
/// private key, without a passphrase).
///
/// # Errors
/// A path that cannot be examined, a mix, a key that is not one or is
/// encrypted.
pub fn resolve(id: &str, paths: &[PathBuf]) -> Result<Source, SshError> {
    use std::os::unix::fs::FileTypeExt;
    let stat_err = |path: &Path, source| SshError::Stat {
        id: id.to_string(),
        path: path.to_path_buf(),
        source,
    };
    let mut sockets = Vec::new();
    let mut keys = Vec::new();
    for p in paths {
        let meta = fs_err::metadata(p).map_err(|e| stat_err(p, e))?;
        if meta.file_type().is_socket() {
            sockets.push(p.clone());
            continue;
        }
        let mut text = Vec::new();
        fs_err::File::open(p)
            .and_then(|f| f.take(MAX_KEY).read_to_end(&mut text))
            .map_err(|e| stat_err(p, e))?;
        match key_kind(&text) {
            KeyKind::Plain => keys.push(p.clone()),
            KeyKind::Encrypted => {
                return Err(SshError::Encrypted {
                    id: id.to_string(),
                    path: p.clone(),
                });
            }
            KeyKind::Unknown => {
                return Err(SshError::NotKey {
                    id: id.to_string(),
                    path: p.clone(),
                });
            }
        }
    }
    match (sockets.as_slice(), keys.is_empty()) {
        ([one], true) => Ok(Source::Socket(one.clone())),
        ([], false) => Ok(Source::Keys(keys)),
        _ => Err(SshError::Mixed { id: id.to_string() }),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum KeyKind {
    Plain,
    Encrypted,
    Unknown,
}

/// Whether `text` is a private key and whether it has a passphrase, from
/// its armour alone: OpenSSH's format names its cipher (`none` when
/// plain) right after its magic (PROTOCOL.key); PEM says `Proc-Type:
/// 4,ENCRYPTED` (RFC 1421) or is PKCS#8's `ENCRYPTED PRIVATE KEY`. ssh-add
/// parses the key itself; this only spares the user its passphrase prompt.
fn key_kind(text: &[u8]) -> KeyKind {
    use base64::Engine;
    let text = String::from_utf8_lossy(text);
    let body = |label: &str| -> Option<String> {
        let begin = format!("-----BEGIN {label}-----");
        let end = format!("-----END {label}-----");
        let start = text.find(&begin)? + begin.len();
        let stop = text[start..].find(&end)? + start;
        Some(text[start..stop].to_string())
    };
    if let Some(b) = body("OPENSSH PRIVATE KEY") {
        let b64: String = b.chars().filter(|c| !c.is_whitespace()).collect();
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64) else {
            return KeyKind::Unknown;
        };
        let Some(rest) = raw.strip_prefix(b"openssh-key-v1\0") else {
            return KeyKind::Unknown;
        };
        let Some((len, rest)) = rest.split_first_chunk::<4>() else {
            return KeyKind::Unknown;
        };
        let len = u32::from_be_bytes(*len) as usize;
        return match rest.get(..len) {
            Some(b"none") => KeyKind::Plain,
            Some(_) => KeyKind::Encrypted,
            None => KeyKind::Unknown,
        };
    }
    if body("ENCRYPTED PRIVATE KEY").is_some() {
        return KeyKind::Encrypted;
    }
    for label in [
        "RSA PRIVATE KEY",
        "EC PRIVATE KEY",
        "DSA PRIVATE KEY",
        "PRIVATE KEY",
    ] {
        if let Some(b) = body(label) {
            return if b.contains("ENCRYPTED") {
                KeyKind::Encrypted
            } else {
                KeyKind::Plain
            };
        }
    }
    KeyKind::Unknown
}

/// The agents of one build, by id: sockets to forward, and the private
/// agents this build started (killed when this is dropped).
#[derive(Default)]
pub struct Agents {
    sockets: HashMap<String, PathBuf>,
    private: Vec<PrivateAgent>,
}

impl Agents {
    /// Resolves every `--ssh` (`ssh`) and starts a private agent for each id
    /// of key files among `used` (the ids some RUN mounts). The agents'
    /// directories go in `tmp(what)`, the store's per-process directory.
    ///
    /// # Errors
    /// See [`resolve`]; an agent that does not start or refuses a key.
    pub fn start(
        ssh: &HashMap<String, Vec<PathBuf>>,
        used: &dyn Fn(&str) -> bool,
        host: &HostOptions,
        tmp: &dyn Fn(&str) -> PathBuf,
    ) -> Result<Agents, SshError> {
        let mut agents = Agents::default();
        let mut ids: Vec<&String> = ssh.keys().collect();
        ids.sort();
        for id in ids {
            let source = resolve(id, &ssh[id])?;
            if !used(id) {
                continue;
            }
            match source {
                Source::Socket(p) => {
                    agents.sockets.insert(id.clone(), p);
                }
                Source::Keys(keys) => {
                    let agent = PrivateAgent::start(id, &keys, host, &tmp("ssh-agent"))?;
                    agents.sockets.insert(id.clone(), agent.socket.clone());
                    agents.private.push(agent);
                }
            }
        }
        Ok(agents)
    }

    /// The socket forwarded under `id`, if `--ssh` named it (and a RUN
    /// uses it).
    pub fn socket(&self, id: &str) -> Option<&Path> {
        self.sockets.get(id).map(PathBuf::as_path)
    }
}

/// An `ssh-agent -D` of this build's.
struct PrivateAgent {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
}

impl PrivateAgent {
    fn start(
        id: &str,
        keys: &[PathBuf],
        host: &HostOptions,
        dir: &Path,
    ) -> Result<PrivateAgent, SshError> {
        let fail = |what: String| SshError::Agent {
            id: id.to_string(),
            what,
        };
        let (Some(agent), Some(add)) =
            (host.find_in_path("ssh-agent"), host.find_in_path("ssh-add"))
        else {
            return Err(SshError::NoAgent { id: id.to_string() });
        };
        // In the store's per-process directory (0700, like the store).
        fs_err::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
        let log = dir.join("agent.log");
        let stderr = fs_err::File::create(&log).map_err(|e| fail(e.to_string()))?;
        // The socket is named relative to the agent's working directory: a
        // store's path may be longer than a socket address holds (108).
        let mut cmd = Command::new(&agent);
        cmd.args(["-D", "-a", "agent.sock"])
            .current_dir(dir)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::from(stderr)));
        crate::exec::die_with_parent(&mut cmd);
        let mut child = cmd
            .spawn()
            .map_err(|e| fail(format!("starting {}: {e}", agent.display())))?;
        let mut me = PrivateAgent {
            socket: dir.join("agent.sock"),
            dir: dir.to_path_buf(),
            child: {
                // Its first line (`SSH_AUTH_SOCK=…`) comes once it listens.
                let mut line = Vec::new();
                let mut out = child.stdout.take();
                if let Some(o) = out.as_mut() {
                    let mut byte = [0u8; 1];
                    while line.len() < 4096 {
                        match o.read(&mut byte) {
                            Ok(1) if byte[0] != b'\n' => line.push(byte[0]),
                            _ => break,
                        }
                    }
                }
                if line.is_empty() {
                    let _ = child.kill();
                    let _ = child.wait();
                    let said = fs_err::read_to_string(&log).unwrap_or_default();
                    return Err(fail(format!("ssh-agent did not start: {}", said.trim())));
                }
                child
            },
        };
        let out = Command::new(&add)
            .arg("-q")
            .args(keys)
            .current_dir(&me.dir)
            .env_clear()
            .env("SSH_AUTH_SOCK", "agent.sock")
            .env("SSH_ASKPASS_REQUIRE", "never")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| fail(format!("running {}: {e}", add.display())))?;
        if !out.status.success() {
            me.stop();
            return Err(fail(format!(
                "ssh-add: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(me)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        crate::builder::run::remove_tree(&self.dir);
    }
}

impl Drop for PrivateAgent {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `path` in a form no longer than a socket address holds: through
/// `/proc/self/fd` and a descriptor of its directory (returned: it must
/// stay open while the name is used).
fn short_name(path: &Path) -> std::io::Result<(OwnedFd, PathBuf)> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let dir = rustix::fs::open(
        parent,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    let short = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
    Ok((dir, short))
}

fn connect(path: &Path) -> std::io::Result<UnixStream> {
    let (_dir, short) = short_name(path)?;
    UnixStream::connect(short)
}

/// One RUN's socket for one agent: listens at a path in the step's
/// directory and relays the allowed requests (see the module docs) until
/// dropped.
pub struct Proxy {
    path: PathBuf,
    /// Dropped to stop the accept loop (it polls the read end). Not a
    /// connection to the socket: given to another owner and mode, it may
    /// refuse the builder.
    wake: Option<OwnedFd>,
    accept: Option<std::thread::JoinHandle<()>>,
    conns: Arc<Conns>,
}

/// The open connections of a proxy, by number: the relays' sockets, shut
/// down when the proxy stops; each relay takes itself out when it ends.
#[derive(Default)]
struct Conns {
    open: Mutex<HashMap<u64, UnixStream>>,
}

impl Conns {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, UnixStream>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Proxy {
    /// Listens at `path` (created; its directory must exist) for `agent`.
    ///
    /// # Errors
    /// The socket cannot be made.
    pub fn start(path: &Path, agent: &Path) -> std::io::Result<Proxy> {
        let listener = {
            let (_dir, short) = short_name(path)?;
            UnixListener::bind(short)?
        };
        let (stop, wake) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let conns: Arc<Conns> = Arc::default();
        let agent = agent.to_path_buf();
        let accept = {
            let conns = Arc::clone(&conns);
            std::thread::Builder::new()
                .name("imgbuild-ssh".into())
                .spawn(move || accept_loop(&listener, &stop, &agent, &conns))?
        };
        Ok(Proxy {
            path: path.to_path_buf(),
            wake: Some(wake),
            accept: Some(accept),
            conns,
        })
    }

    /// The socket's host path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Accepts until `stop` reads the end (or fails), one relay thread per
/// connection, at most [`MAX_CONNECTIONS`] at once.
fn accept_loop(listener: &UnixListener, stop: &OwnedFd, agent: &Path, conns: &Arc<Conns>) {
    use rustix::event::{PollFd, PollFlags, poll};
    let mut next = 0u64;
    loop {
        let mut fds = [
            PollFd::new(listener, PollFlags::IN),
            PollFd::new(stop, PollFlags::IN),
        ];
        match poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return,
        }
        if !fds[1].revents().is_empty() {
            return;
        }
        let Ok((client, _)) = listener.accept() else {
            continue;
        };
        let Ok(handle) = client.try_clone() else {
            continue;
        };
        {
            let mut open = conns.lock();
            if open.len() >= MAX_CONNECTIONS {
                // Dropped: the client sees the end of the stream.
                continue;
            }
            open.insert(next, handle);
        }
        let (n, agent, mine) = (next, agent.to_path_buf(), Arc::clone(conns));
        next += 1;
        let spawned = std::thread::Builder::new()
            .name("imgbuild-ssh".into())
            .spawn(move || {
                relay(client, &agent);
                mine.lock().remove(&n);
            });
        if spawned.is_err() {
            conns.lock().remove(&n);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        drop(self.wake.take());
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        for (_, c) in self.conns.lock().drain() {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        let _ = fs_err::remove_file(&self.path);
    }
}

/// Reads one framed message (length included); `None` at the end of the
/// stream or on a malformed one.
fn read_message(s: &mut UnixStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let n = u32::from_be_bytes(len) as usize;
    if n == 0 || n > MAX_MESSAGE {
        return None;
    }
    let mut msg = vec![0u8; 4 + n];
    msg[..4].copy_from_slice(&len);
    s.read_exact(&mut msg[4..]).ok()?;
    Some(msg)
}

/// Serves one connection of a RUN: allowed requests go to the agent (one
/// connection of its own) and its answer back; others fail.
fn relay(mut client: UnixStream, agent: &Path) {
    let mut upstream: Option<UnixStream> = None;
    while let Some(msg) = read_message(&mut client) {
        if !ALLOWED.contains(&msg[4]) {
            if client.write_all(&FAILURE).is_err() {
                break;
            }
            continue;
        }
        if upstream.is_none() {
            upstream = connect(agent).ok();
        }
        let answer = upstream.as_mut().and_then(|u| {
            u.write_all(&msg).ok()?;
            read_message(u)
        });
        let Some(answer) = answer else {
            // The agent is gone: the RUN's client sees the end.
            break;
        };
        if client.write_all(&answer).is_err() {
            break;
        }
    }
    let _ = client.shutdown(std::net::Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn openssh(cipher: &str) -> String {
        use base64::Engine;
        let mut raw = b"openssh-key-v1\0".to_vec();
        raw.extend((cipher.len() as u32).to_be_bytes());
        raw.extend(cipher.as_bytes());
        raw.extend([0u8; 8]);
        let b = base64::engine::general_purpose::STANDARD.encode(raw);
        format!("-----BEGIN OPENSSH PRIVATE KEY-----\n{b}\n-----END OPENSSH PRIVATE KEY-----\n")
    }

    #[test]
    fn key_kinds_from_their_armour() {
        assert_eq!(key_kind(openssh("none").as_bytes()), KeyKind::Plain);
        assert_eq!(
            key_kind(openssh("aes256-ctr").as_bytes()),
            KeyKind::Encrypted
        );
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----\n";
        assert_eq!(key_kind(pem.as_bytes()), KeyKind::Plain);
        let enc = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nMIIB\n-----END RSA PRIVATE KEY-----\n";
        assert_eq!(key_kind(enc.as_bytes()), KeyKind::Encrypted);
        let p8 =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert_eq!(key_kind(p8.as_bytes()), KeyKind::Encrypted);
        assert_eq!(key_kind(b"ssh-ed25519 AAAA user@host\n"), KeyKind::Unknown);
        let bad = "-----BEGIN OPENSSH PRIVATE KEY-----\n!!!\n-----END OPENSSH PRIVATE KEY-----\n";
        assert_eq!(key_kind(bad.as_bytes()), KeyKind::Unknown);
    }

    #[test]
    fn resolve_tells_sockets_from_keys() {
        let t = tempfile::tempdir().unwrap();
        let sock = t.path().join("s");
        let _l = UnixListener::bind(&sock).unwrap();
        let key = t.path().join("k");
        fs_err::write(&key, openssh("none")).unwrap();
        let enc = t.path().join("e");
        fs_err::write(&enc, openssh("aes256-ctr")).unwrap();
        assert_eq!(
            resolve("a", std::slice::from_ref(&sock)).unwrap(),
            Source::Socket(sock.clone())
        );
        assert_eq!(
            resolve("a", &[key.clone(), key.clone()]).unwrap(),
            Source::Keys(vec![key.clone(), key.clone()])
        );
        assert!(matches!(
            resolve("a", &[sock.clone(), key.clone()]),
            Err(SshError::Mixed { .. })
        ));
        assert!(matches!(
            resolve("a", &[sock.clone(), sock.clone()]),
            Err(SshError::Mixed { .. })
        ));
        assert!(matches!(
            resolve("a", &[enc]),
            Err(SshError::Encrypted { .. })
        ));
        assert!(matches!(
            resolve("a", &[t.path().join("missing")]),
            Err(SshError::Stat { .. })
        ));
    }

    /// A fake agent answering every request with one byte `42`; the proxy
    /// passes listing requests and fails the rest itself.
    #[test]
    fn the_proxy_passes_only_listing_and_signing() {
        let t = tempfile::tempdir().unwrap();
        let agent_path = t.path().join("agent");
        let agent = UnixListener::bind(&agent_path).unwrap();
        std::thread::spawn(move || {
            for c in agent.incoming() {
                let mut c = c.unwrap();
                while read_message(&mut c).is_some() {
                    c.write_all(&[0, 0, 0, 1, 42]).unwrap();
                }
            }
        });
        let proxy = Proxy::start(&t.path().join("proxy"), &agent_path).unwrap();
        let mut c = UnixStream::connect(proxy.path()).unwrap();
        let mut ask = |kind: u8| {
            c.write_all(&[0, 0, 0, 1, kind]).unwrap();
            read_message(&mut c).unwrap()[4]
        };
        assert_eq!(ask(11), 42, "request identities");
        assert_eq!(ask(13), 42, "sign");
        for denied in [17, 18, 19, 22, 23, 25, 27] {
            assert_eq!(ask(denied), 5, "request {denied}");
        }
        drop(proxy);
        assert!(!t.path().join("proxy").exists());
    }

    /// A fake agent answering every request with `42`, at `dir/agent`.
    fn answering_agent(dir: &Path) -> PathBuf {
        let path = dir.join("agent");
        let agent = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            for c in agent.incoming() {
                let mut c = c.unwrap();
                std::thread::spawn(move || {
                    while read_message(&mut c).is_some() {
                        c.write_all(&[0, 0, 0, 1, 42]).unwrap();
                    }
                });
            }
        });
        path
    }

    fn served(c: &mut UnixStream) -> bool {
        c.write_all(&[0, 0, 0, 1, 11]).is_ok() && read_message(c).is_some_and(|m| m[4] == 42)
    }

    #[test]
    fn the_proxy_bounds_messages_and_connections() {
        let t = tempfile::tempdir().unwrap();
        let agent = answering_agent(t.path());
        let proxy = Proxy::start(&t.path().join("proxy"), &agent).unwrap();
        // A length over OpenSSH's limit ends the connection, unread.
        let mut c = UnixStream::connect(proxy.path()).unwrap();
        let too_long = u32::try_from(MAX_MESSAGE + 1).unwrap().to_be_bytes();
        c.write_all(&too_long).unwrap();
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "{rest:?}");
        // MAX_CONNECTIONS at once are served; one more is closed.
        let mut open: Vec<UnixStream> = (0..MAX_CONNECTIONS)
            .map(|_| UnixStream::connect(proxy.path()).unwrap())
            .collect();
        for c in &mut open {
            assert!(served(c));
        }
        let mut extra = UnixStream::connect(proxy.path()).unwrap();
        assert!(
            !served(&mut extra),
            "connection {} is refused",
            MAX_CONNECTIONS + 1
        );
        // One closed makes room (once its relay has noticed).
        drop(open.pop());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let mut c = UnixStream::connect(proxy.path()).unwrap();
            if served(&mut c) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no room made");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
