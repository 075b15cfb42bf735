//! Pull and push against a real registry: the CNCF distribution server
//! (Debian's `docker-registry`), started per test on 127.0.0.1 with its own
//! storage, and a small proxy in front of it for fault injection.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::util::{TestEnv, assert_success, stderr, tool};

/// bcrypt of PASSWORD (as `htpasswd -B` writes it), for the auth test.
const HTPASSWD: &str = "tester:$2b$12$r7LTJiOcbpqnaNYWFpQmROpUsBQqzp20VGz7AaC.cx8GdK2mkvuEq\n";
const PASSWORD: &str = "secret";

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A distribution server on 127.0.0.1, stopped when dropped.
pub(crate) struct Registry {
    child: Child,
    pub(crate) port: u16,
    log: PathBuf,
}

impl Registry {
    pub(crate) fn start(env: &TestEnv, htpasswd: bool) -> Registry {
        assert!(
            std::path::Path::new("/usr/bin/docker-registry").exists(),
            "docker-registry is missing: install it (see .ci/run)"
        );
        let dir = env.path().join(format!("registry-{}", free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("data").display()
        );
        if htpasswd {
            std::fs::write(dir.join("htpasswd"), HTPASSWD).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                dir.join("htpasswd").display()
            ));
        }
        std::fs::write(dir.join("config.yml"), config).unwrap();
        // The access log goes to stdout, the rest to stderr.
        let log = dir.join("access.log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.join("registry.log")).unwrap())
            .spawn()
            .unwrap();
        let r = Registry { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    pub(crate) fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Blob GETs the registry has served so far.
    fn blob_gets(&self) -> usize {
        self.gets_of("sha256:")
    }

    /// Blob GETs served so far whose path contains `digest`.
    fn gets_of(&self, digest: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"GET /v2/") && l.contains(&format!("/blobs/{digest}")))
            .count()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How the proxy misbehaves on blob responses.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    /// Cut the first blob response after this many body bytes.
    CutOnce(usize),
    /// Flip a byte in every blob body.
    Corrupt,
    /// Demand a bearer token, served anonymously at /token (Docker Hub's
    /// scheme), on every registry request.
    Bearer,
}

const TOKEN: &str = "t0k3n";

/// A one-connection-at-a-time HTTP/1.1 proxy to `upstream` that injects a
/// fault into blob downloads; counts the faults it injected.
struct Proxy {
    port: u16,
    faults: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    fn start(upstream: u16, fault: Fault) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let faults = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, s) = (Arc::clone(&faults), Arc::clone(&stop));
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let f = Arc::clone(&f);
                        std::thread::spawn(move || serve(client, upstream, port, fault, &f));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Proxy { port, faults, stop }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Reads one HTTP message head (through the blank line).
fn read_head(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).ok()? == 0 {
            return None;
        }
        head.push(b[0]);
    }
    Some(head)
}

fn content_length(head: &[u8]) -> usize {
    String::from_utf8_lossy(head)
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0)
}

/// Serves one client connection: each request goes upstream on a fresh
/// connection (`Connection: close`), the answer comes back, maybe damaged.
fn serve(mut client: TcpStream, upstream: u16, me: u16, fault: Fault, faults: &AtomicUsize) {
    while let Some(head) = read_head(&mut client) {
        let mut body = vec![0u8; content_length(&head)];
        if client.read_exact(&mut body).is_err() {
            return;
        }
        let text = String::from_utf8_lossy(&head).into_owned();
        if fault == Fault::Bearer {
            let answer = if text.starts_with("GET /token?") {
                // Anonymous tokens, for a repository scope only.
                assert!(text.contains("scope=repository"), "{text}");
                faults.fetch_add(1, Ordering::Relaxed);
                let body = format!("{{\"token\":\"{TOKEN}\"}}");
                Some(format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                ))
            } else if !text
                .to_ascii_lowercase()
                .contains(&format!("authorization: bearer {TOKEN}"))
            {
                Some(format!(
                    "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://127.0.0.1:{me}/token\",service=\"test\"\r\nContent-Length: 0\r\n\r\n"
                ))
            } else {
                None
            };
            if let Some(a) = answer {
                if client.write_all(a.as_bytes()).is_err() {
                    return;
                }
                continue;
            }
        }
        let is_blob_get = text.starts_with("GET ") && text.contains("/blobs/sha256:");
        let mut up = TcpStream::connect(("127.0.0.1", upstream)).unwrap();
        let head = text.replacen("\r\n", "\r\nConnection: close\r\n", 1);
        up.write_all(head.as_bytes()).unwrap();
        up.write_all(&body).unwrap();
        let Some(rhead) = read_head(&mut up) else {
            return;
        };
        let mut rbody = Vec::new();
        let _ = up.read_to_end(&mut rbody);
        let ok = String::from_utf8_lossy(&rhead).starts_with("HTTP/1.1 20");
        if is_blob_get && ok && !rbody.is_empty() {
            match fault {
                Fault::CutOnce(n) if faults.load(Ordering::Relaxed) == 0 => {
                    faults.fetch_add(1, Ordering::Relaxed);
                    let _ = client.write_all(&rhead);
                    let _ = client.write_all(&rbody[..n.min(rbody.len() - 1)]);
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    return;
                }
                Fault::Corrupt => {
                    faults.fetch_add(1, Ordering::Relaxed);
                    let last = rbody.len() - 1;
                    rbody[last] ^= 0xff;
                }
                _ => {}
            }
        }
        if client.write_all(&rhead).is_err() || client.write_all(&rbody).is_err() {
            return;
        }
    }
}

/// Builds `FROM scratch` + COPY of `files` into the test store, tagged `tag`.
pub(crate) fn build_image(env: &TestEnv, name: &str, files: &[(&str, &str)], tag: &str) {
    let mut df = String::from("FROM scratch\n");
    for (f, content) in files {
        env.write(&format!("{name}/{f}"), content);
        df.push_str(&format!("COPY {f} /{f}\n"));
    }
    env.write(&format!("{name}/Dockerfile"), df);
    let mut c = env.cmd_in(
        &env.path().join(name),
        &["build", "-q", "-t", tag, "-o", "out.tar", "."],
    );
    c.env("SOURCE_DATE_EPOCH", "1700000000");
    assert_success(&c.output().unwrap(), &["build", name]);
}

pub(crate) fn in_store(env: &TestEnv, store: &str, args: &[&str]) -> std::process::Output {
    let mut c = env.cmd_in(env.path(), args);
    c.env("IMGBUILD_STORE", env.path().join(store));
    c.output().unwrap()
}

/// `imgbuild build --progress=plain ARGS .` in ctx/ on store `store`, with
/// pulls allowed and SOURCE_DATE_EPOCH set.
fn build_ctx(env: &TestEnv, store: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["build", "--progress=plain"];
    all.extend_from_slice(args);
    all.push(".");
    let mut c = env.cmd_in(&env.path().join("ctx"), &all);
    c.env("IMGBUILD_STORE", env.path().join(store))
        .env("IMGBUILD_PULL", "missing")
        .env("SOURCE_DATE_EPOCH", "1700000000");
    c.output().unwrap()
}

/// The manifest digest push reports on its last line (`TAG: digest: D size: N`).
pub(crate) fn pushed_digest(stdout: &str) -> String {
    stdout
        .lines()
        .last()
        .and_then(|l| l.split("digest: ").nth(1))
        .and_then(|l| l.split(' ').next())
        .unwrap_or_else(|| panic!("no digest in {stdout}"))
        .to_string()
}

pub(crate) fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub(crate) fn manifest_of(env: &TestEnv, store: &str, image: &str) -> serde_json::Value {
    let out = in_store(env, store, &["inspect", image]);
    assert_success(&out, &["inspect", image]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0].clone()
}

crate::it_test!(push_then_pull_into_an_empty_store_gives_the_same_image);
fn push_then_pull_into_an_empty_store_gives_the_same_image() {
    let env = TestEnv::new();
    let reg = Registry::start(&env, false);
    let dest = format!("{}/team/app:1", reg.host());
    build_image(
        &env,
        "app",
        &[("a.txt", "alpha\n"), ("b.txt", "beta\n")],
        &dest,
    );
    let out = env.run(&["push", &dest]);
    assert_success(&out, &["push"]);
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "The push refers to repository [{}/team/app]",
            reg.host()
        )),
        "{text}"
    );
    assert_eq!(text.matches(": Pushed").count(), 2, "{text}");
    let pushed = pushed_digest(&text);

    // Again: nothing to upload.
    let again = env.ok(&["push", &dest]);
    assert_eq!(
        again.matches(": Layer already exists").count(),
        2,
        "{again}"
    );

    let out = in_store(&env, "empty", &["pull", &dest]);
    assert_success(&out, &["pull"]);
    let text = stdout(&out);
    assert!(text.contains(&format!("Digest: {pushed}")), "{text}");
    assert!(
        text.contains("Status: Downloaded newer image for"),
        "{text}"
    );
    assert_eq!(text.matches(": Pull complete").count(), 2, "{text}");

    let ours = manifest_of(&env, "store", &dest);
    let theirs = manifest_of(&env, "empty", &dest);
    assert_eq!(ours["Id"], theirs["Id"]);
    assert_eq!(ours["RootFS"], theirs["RootFS"]);

    // skopeo agrees on the layers.
    let sk = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", &format!("docker://{dest}")])
        .output()
        .expect("skopeo");
    assert_success(&sk, &["skopeo inspect"]);
    let sk: serde_json::Value = serde_json::from_slice(&sk.stdout).unwrap();
    assert_eq!(sk["Digest"], pushed.as_str());
    let export = in_store(&env, "empty", &["export", &dest, "-o", "pulled.tar"]);
    assert_success(&export, &["export"]);
    let layers: Vec<String> = crate::util::manifest_layers(&env.path().join("pulled.tar"));
    let sk_layers: Vec<String> = sk["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect();
    assert_eq!(layers, sk_layers);

    // The same image as a docker v2 schema 2 manifest (skopeo converts):
    // pulled, it is the same image.
    let v2 = format!("{}/team/v2s2:1", reg.host());
    let sk = Command::new("skopeo")
        .args(["copy", "-q", "--format", "v2s2", "--dest-tls-verify=false"])
        .arg(format!(
            "oci-archive:{}",
            env.path().join("pulled.tar").display()
        ))
        .arg(format!("docker://{v2}"))
        .output()
        .expect("skopeo");
    assert_success(&sk, &["skopeo copy --format v2s2"]);
    let out = in_store(&env, "v2", &["pull", &v2]);
    assert_success(&out, &["pull a docker v2 manifest"]);
    assert_eq!(manifest_of(&env, "v2", &v2)["Id"], ours["Id"]);
}

crate::it_test!(a_second_image_on_the_same_base_fetches_only_its_own_layers);
fn a_second_image_on_the_same_base_fetches_only_its_own_layers() {
    let env = TestEnv::new();
    let reg = Registry::start(&env, false);
    let one = format!("{}/team/one:1", reg.host());
    let two = format!("{}/team/two:1", reg.host());
    // Same first layer (same content, same epoch): a shared base.
    build_image(
        &env,
        "one",
        &[("base.txt", "shared\n"), ("one.txt", "1\n")],
        &one,
    );
    build_image(
        &env,
        "two",
        &[("base.txt", "shared\n"), ("two.txt", "2\n")],
        &two,
    );
    env.ok(&["push", &one]);
    let out = env.ok(&["push", &two]);
    assert!(out.contains("Mounted from team/one"), "{out}");

    let out = in_store(&env, "fresh", &["pull", &one]);
    assert_success(&out, &["pull one"]);
    let before = reg.blob_gets();
    let out = in_store(&env, "fresh", &["pull", &two]);
    assert_success(&out, &["pull two"]);
    let text = stdout(&out);
    assert_eq!(text.matches(": Already exists").count(), 1, "{text}");
    assert_eq!(text.matches(": Pull complete").count(), 1, "{text}");
    // The new layer and the config: nothing else crossed the wire.
    assert_eq!(reg.blob_gets() - before, 2);
}

crate::it_test!(from_pulls_a_missing_base_and_then_uses_the_store);
fn from_pulls_a_missing_base_and_then_uses_the_store() {
    let env = TestEnv::new();
    let reg = Registry::start(&env, false);
    let base = format!("{}/team/base:1", reg.host());
    build_image(&env, "base", &[("etc.txt", "base\n")], &base);
    env.ok(&["push", &base]);
    env.write("ctx/x.txt", "x\n");
    env.write(
        "ctx/Dockerfile",
        format!("FROM {base}\nCOPY x.txt /x.txt\n"),
    );
    let build = |store: &str, extra: &[&str]| {
        let mut args = vec!["-o", "out.tar"];
        args.extend_from_slice(extra);
        build_ctx(&env, store, &args)
    };
    let out = build("b", &[]);
    assert_success(&out, &["build pulling its base"]);
    assert!(stderr(&out).contains("Pull complete"), "{}", stderr(&out));
    let gets = reg.blob_gets();
    let out = build("b", &[]);
    assert_success(&out, &["build again"]);
    assert!(!stderr(&out).contains("Pulling from"), "{}", stderr(&out));
    assert_eq!(reg.blob_gets(), gets);
    // --pull asks the registry again, and finds nothing new to fetch.
    let out = build("b", &["--pull"]);
    assert_success(&out, &["build --pull"]);
    assert!(stderr(&out).contains("Already exists"), "{}", stderr(&out));
    assert_eq!(reg.blob_gets(), gets);

    // build --push: the result goes to the registry, base layers mounted or
    // already there, and an empty store can pull it back.
    let derived = format!("{}/team/derived:1", reg.host());
    let out = build("b", &["--push", "-t", &derived]);
    assert_success(&out, &["build --push"]);
    let log = stderr(&out);
    assert!(
        log.contains(&format!(
            "The push refers to repository [{}/team/derived]",
            reg.host()
        )),
        "{log}"
    );
    assert!(log.contains("1: digest: sha256:"), "{log}");
    let out = in_store(&env, "again", &["pull", &derived]);
    assert_success(&out, &["pull the pushed build"]);
}

crate::it_test!(a_connection_cut_mid_blob_is_retried);
fn a_connection_cut_mid_blob_is_retried() {
    let env = TestEnv::new();
    let reg = Registry::start(&env, false);
    let big: String = (0..200_000).map(|i| format!("{i}\n")).collect();
    let dest = format!("{}/team/big:1", reg.host());
    build_image(&env, "big", &[("big.txt", &big)], &dest);
    env.ok(&["push", &dest]);
    let proxy = Proxy::start(reg.port, Fault::CutOnce(100_000));
    let via = format!("{}/team/big:1", proxy.host());
    let out = in_store(&env, "cut", &["pull", &via]);
    assert_success(&out, &["pull through a cutting proxy"]);
    assert_eq!(proxy.faults.load(Ordering::Relaxed), 1);
    let ours = manifest_of(&env, "store", &dest);
    let pulled = manifest_of(&env, "cut", &via);
    assert_eq!(ours["Id"], pulled["Id"]);
    let check = in_store(&env, "cut", &["store", "check"]);
    assert_success(&check, &["store check"]);
}

crate::it_test!(a_blob_that_does_not_match_its_digest_never_enters_the_store);
fn a_blob_that_does_not_match_its_digest_never_enters_the_store() {
    let env = TestEnv::new();
    let reg = Registry::start(&env, false);
    let dest = format!("{}/team/app:1", reg.host());
    build_image(&env, "app", &[("a.txt", "alpha\n")], &dest);
    env.ok(&["push", &dest]);
    let proxy = Proxy::start(reg.port, Fault::Corrupt);
    let via = format!("{}/team/app:1", proxy.host());
    let out = in_store(&env, "bad", &["pull", &via]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("does not match its digest"), "{err}");
    assert!(proxy.faults.load(Ordering::Relaxed) >= 1);
    let blobs = env.path().join("bad/blobs/sha256");
    let n = std::fs::read_dir(&blobs).map_or(0, |r| r.count());
    assert_eq!(n, 0, "a corrupt blob was stored");
    let tmp = std::fs::read_dir(env.path().join("bad/tmp")).map_or(0, |r| r.count());
    assert_eq!(tmp, 0);

    // The other way: a store blob damaged on disk is refused by the registry
    // on push (the upload names the digest), and the manifest is not put.
    let layer = crate::util::manifest_layers(&env.path().join("app/out.tar"))[0]
        .trim_start_matches("sha256:")
        .to_string();
    let blob = env.store().join("blobs/sha256").join(&layer);
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    // Another name for the same registry: no repository to mount from.
    let elsewhere = format!("localhost:{}/team/damaged:1", reg.port);
    let out = env.run(&["push", &dest, &elsewhere]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("DIGEST_INVALID"), "{err}");
    let sk = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{elsewhere}"))
        .output()
        .unwrap();
    assert!(!sk.status.success(), "the damaged image was published");
}

crate::it_test!(a_registry_with_htpasswd_wants_credentials);
fn a_registry_with_htpasswd_wants_credentials() {
    let env = TestEnv::new();
    let reg = Registry::start(&env, true);
    let dest = format!("{}/team/app:1", reg.host());
    build_image(&env, "app", &[("a.txt", "alpha\n")], &dest);
    let docker_config = env.path().join("docker-config");
    let with_config = |args: &[&str]| {
        let mut c = env.cmd_in(env.path(), args);
        c.env("DOCKER_CONFIG", &docker_config);
        c
    };
    let out = with_config(&["push", &dest]).output().unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "authentication required for {}/team/app",
            reg.host()
        )),
        "{err}"
    );
    // Wrong password: refused, nothing saved.
    let mut c = with_config(&["login", &reg.host(), "-u", "tester", "--password-stdin"]);
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"wrong\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(!docker_config.join("config.json").exists());
    let mut c = with_config(&["login", &reg.host(), "-u", "tester", "--password-stdin"]);
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_success(&out, &["login"]);
    assert!(stdout(&out).contains("Login Succeeded"));
    let out = with_config(&["push", &dest]).output().unwrap();
    assert_success(&out, &["push with credentials"]);
    let out = with_config(&["pull", &dest]).output().unwrap();
    assert_success(&out, &["pull with credentials"]);
    let out = with_config(&["logout", &reg.host()]).output().unwrap();
    assert_success(&out, &["logout"]);
    let out = with_config(&["push", &dest]).output().unwrap();
    assert!(!out.status.success());

    // A credential helper named in credHelpers answers instead (the docker
    // credential-helper protocol: server on stdin, JSON on stdout).
    let bin = env.path().join("helper-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-imgbuildtest");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread server\necho '{{\"ServerURL\":\"'$server'\",\"Username\":\"tester\",\"Secret\":\"{PASSWORD}\"}}'\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        docker_config.join("config.json"),
        format!(
            "{{\"credHelpers\":{{\"{}\":\"imgbuildtest\"}}}}",
            reg.host()
        ),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = with_config(&["push", &dest])
        .env("PATH", path)
        .output()
        .unwrap();
    assert_success(&out, &["push with a credential helper"]);
}

crate::it_test!(a_build_cache_in_the_registry_serves_an_empty_store);
fn a_build_cache_in_the_registry_serves_an_empty_store() {
    let env = TestEnv::new();
    let reg = Registry::start(&env, false);
    crate::util::busybox_base(&env);
    std::fs::create_dir_all(env.path().join("ctx")).unwrap();
    std::fs::copy(
        env.path().join("base/base.tar"),
        env.path().join("ctx/base.tar"),
    )
    .unwrap();
    env.write("ctx/foo.txt", "Hello World\n");
    env.write(
        "ctx/Dockerfile",
        "FROM oci-archive:base.tar\nCOPY foo.txt /foo.txt\nRUN cat /foo.txt > /bar.txt\nLABEL demo=1\n",
    );
    let cache = format!("registry:{}/cache/app:buildcache", reg.host());
    let build = |store: &str, args: &[&str]| build_ctx(&env, store, args);
    let out = build("a", &["--cache-to", &cache, "-o", "a.tar"]);
    assert_success(&out, &["build with --cache-to"]);
    assert!(stderr(&out).contains("Exported"), "{}", stderr(&out));

    // Importing reads the index, manifests and configs, never a layer: a
    // dry run on an empty store finds every step cached (only the archive
    // is missing) without fetching one.
    let layers = crate::util::manifest_layers(&env.path().join("ctx/a.tar"));
    let layer_gets = || layers.iter().map(|l| reg.gets_of(l)).sum::<usize>();
    let out = build(
        "dry",
        &["--cache-from", &cache, "--dry-run", "-o", "dry.tar"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("every step is cached, but an output archive is missing"),
        "{}",
        stdout(&out)
    );
    assert_eq!(layer_gets(), 0);

    let gets = reg.blob_gets();
    let out = build("b", &["--cache-from", &cache, "-o", "b.tar"]);
    assert_success(&out, &["build with --cache-from"]);
    let log = stderr(&out);
    assert_eq!(log.matches(" ---> Using cache").count(), 3, "{log}");
    assert!(!log.contains("Cache miss"), "{log}");
    assert_eq!(
        std::fs::read(env.path().join("ctx/a.tar")).unwrap(),
        std::fs::read(env.path().join("ctx/b.tar")).unwrap()
    );
    // Layers came from the registry only because the archive needed them:
    // the base's came from base.tar, so only the COPY and RUN layers (plus
    // small documents) crossed the wire.
    let fetched = reg.blob_gets() - gets;
    assert!(fetched >= 2, "{fetched}");
    // The archive needed the COPY and RUN layers, each fetched once; the
    // base's came from base.tar.
    assert_eq!(layer_gets(), 2);

    // A cache that is not there is a warning, not a failure.
    let out = build(
        "c",
        &[
            "--cache-from",
            &format!("registry:{}/cache/none:x", reg.host()),
            "-o",
            "c.tar",
        ],
    );
    assert_success(&out, &["build with a missing cache"]);
    assert!(stderr(&out).contains("WARNING: cache"), "{}", stderr(&out));
}

crate::it_test!(a_registry_with_bearer_tokens_is_used_anonymously);
fn a_registry_with_bearer_tokens_is_used_anonymously() {
    let env = TestEnv::new();
    let reg = Registry::start(&env, false);
    let proxy = Proxy::start(reg.port, Fault::Bearer);
    let dest = format!("{}/team/app:1", proxy.host());
    build_image(&env, "app", &[("a.txt", "alpha\n")], &dest);
    let out = env.run(&["push", &dest]);
    assert_success(&out, &["push through a token-protected registry"]);
    let out = in_store(&env, "tok", &["pull", &dest]);
    assert_success(&out, &["pull through a token-protected registry"]);
    // One token per scope: push (pull,push) and pull, not one per request.
    let tokens = proxy.faults.load(Ordering::Relaxed);
    assert!((2..=4).contains(&tokens), "{tokens} tokens");
}

/// `PUT`s a manifest straight to the registry (no auth), returning the status line.
fn put_manifest(port: u16, path: &str, media_type: &str, body: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "PUT {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {media_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer.lines().next().unwrap_or("").to_string()
}

crate::it_test!(a_multi_platform_index_gives_each_platform_its_image);
fn a_multi_platform_index_gives_each_platform_its_image() {
    let env = TestEnv::new();
    let reg = Registry::start(&env, false);
    let amd = format!("{}/team/amd:1", reg.host());
    let arm = format!("{}/team/multi:arm", reg.host());
    build_image(&env, "amd", &[("which", "amd64\n")], &amd);
    build_image(&env, "arm", &[("which", "arm64\n")], &arm);
    let digest_of = |image: &str| pushed_digest(&env.ok(&["push", image]));
    // Both manifests in the index's repository (the amd64 one mounted in).
    env.ok(&["tag", &amd, &format!("{}/team/multi:amd", reg.host())]);
    let amd_digest = digest_of(&format!("{}/team/multi:amd", reg.host()));
    let arm_digest = digest_of(&arm);
    let size = |d: &str| {
        let out = Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{}/team/multi@{d}", reg.host()))
            .output()
            .unwrap();
        out.stdout.len()
    };
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm_digest,
             "size": size(&arm_digest), "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": amd_digest,
             "size": size(&amd_digest), "platform": {"os": "linux", "architecture": "amd64"}},
        ],
    });
    let status = put_manifest(
        reg.port,
        "/v2/team/multi/manifests/latest",
        "application/vnd.oci.image.index.v1+json",
        &serde_json::to_vec(&index).unwrap(),
    );
    assert!(status.contains("201"), "{status}");
    let multi = format!("{}/team/multi:latest", reg.host());
    let id = |store: &str, image: &str| manifest_of(&env, store, image)["Id"].clone();
    let out = in_store(
        &env,
        "arm64",
        &["pull", "--platform", "linux/arm64", &multi],
    );
    assert_success(&out, &["pull --platform linux/arm64"]);
    assert_eq!(id("arm64", &multi), id("store", &arm));
    if std::env::consts::ARCH == "x86_64" {
        let out = in_store(&env, "host", &["pull", &multi]);
        assert_success(&out, &["pull for the host"]);
        assert_eq!(id("host", &multi), id("store", &amd));
    }
    let out = in_store(&env, "none", &["pull", "--platform", "linux/s390x", &multi]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("has no image for linux/s390x") && err.contains("linux/arm64,"),
        "{err}"
    );
}

crate::it_test!(a_multi_platform_build_takes_each_base_from_the_registry_index);
fn a_multi_platform_build_takes_each_base_from_the_registry_index() {
    let env = TestEnv::new();
    let reg = Registry::start(&env, false);
    // One base per platform, each config naming its own, under one index.
    let mut entries = Vec::new();
    for arch in ["amd64", "arm64"] {
        let tag = format!("{}/team/base:{arch}", reg.host());
        env.write(&format!("b-{arch}/which"), format!("{arch}\n"));
        env.write(
            &format!("b-{arch}/Dockerfile"),
            "FROM scratch\nCOPY which /which\n",
        );
        let mut c = env.cmd_in(
            &env.path().join(format!("b-{arch}")),
            &[
                "build",
                "-q",
                "--platform",
                &format!("linux/{arch}"),
                "-t",
                &tag,
                ".",
            ],
        );
        c.env("SOURCE_DATE_EPOCH", "1700000000");
        assert_success(&c.output().unwrap(), &["build", arch]);
        let digest = pushed_digest(&env.ok(&["push", &tag]));
        let size = Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{}/team/base@{digest}", reg.host()))
            .output()
            .unwrap()
            .stdout
            .len();
        entries.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest, "size": size,
            "platform": {"os": "linux", "architecture": arch},
        }));
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    });
    let status = put_manifest(
        reg.port,
        "/v2/team/base/manifests/latest",
        "application/vnd.oci.image.index.v1+json",
        &serde_json::to_vec(&index).unwrap(),
    );
    assert!(status.contains("201"), "{status}");
    env.write("ctx/a.txt", "a\n");
    env.write(
        "ctx/Dockerfile",
        format!("FROM {}/team/base:latest\nCOPY a.txt /a.txt\n", reg.host()),
    );
    let out = build_ctx(
        &env,
        "fresh",
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "-o",
            "../multi.tar",
        ],
    );
    assert_success(&out, &["multi-platform build"]);
    let archive = env.path().join("multi.tar");
    for arch in ["amd64", "arm64"] {
        let cfg = crate::platforms::config_for(&archive, arch);
        assert_eq!(cfg["architecture"], arch, "{cfg}");
        // Its own base layer below the copy.
        assert_eq!(cfg["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
    }
    // Both platforms stay in the store under the one tag: a second build
    // finds them without pulling.
    let again = build_ctx(
        &env,
        "fresh",
        &[
            "--platform",
            "linux/arm64,linux/amd64",
            "-o",
            "../again.tar",
        ],
    );
    assert_success(&again, &["second build"]);
    let log = String::from_utf8_lossy(&again.stdout).into_owned() + &stderr(&again);
    assert!(!log.contains("Pulling from"), "{log}");
}

/// A context whose image differs per platform (`$TARGETARCH` picks a file
/// and a label), so each platform has its own chain of steps.
fn per_platform_ctx(env: &TestEnv) {
    env.write("ctx/a.txt", "shared\n");
    env.write("ctx/amd64.txt", "amd64\n");
    env.write("ctx/arm64.txt", "arm64\n");
    env.write(
        "ctx/Dockerfile",
        "FROM scratch\nARG TARGETARCH\nCOPY a.txt /a.txt\nCOPY $TARGETARCH.txt /which\nLABEL arch=$TARGETARCH\n",
    );
}

/// `skopeo inspect --raw` of `reference` in the test registry.
fn raw_manifest(reference: &str) -> serde_json::Value {
    let raw = tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{reference}"),
        ],
    );
    serde_json::from_str(&raw).unwrap()
}

crate::it_test!(a_multi_platform_push_sends_every_manifest_then_the_index);
/// Issue 14 item 5: each platform's image goes by digest, the index under
/// the tag; a pull of one platform gets that platform's very image.
fn a_multi_platform_push_sends_every_manifest_then_the_index() {
    let env = TestEnv::new();
    let reg = Registry::start(&env, false);
    let dest = format!("{}/team/x:1", reg.host());
    per_platform_ctx(&env);
    let out = build_ctx(
        &env,
        "store",
        &["--platform", "linux/amd64,linux/arm64", "-t", &dest],
    );
    assert_success(&out, &["multi-platform build"]);
    let out = env.run(&["push", &dest]);
    assert_success(&out, &["push"]);
    let text = stdout(&out);
    // Docker's lines, a digest line per platform, the index's last.
    assert!(
        text.starts_with(&format!(
            "The push refers to repository [{}/team/x]\n",
            reg.host()
        )),
        "{text}"
    );
    let index = raw_manifest(&dest);
    assert_eq!(
        index["mediaType"], "application/vnd.oci.image.index.v1+json",
        "{index}"
    );
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2, "{index}");
    for (m, arch) in manifests.iter().zip(["amd64", "arm64"]) {
        assert_eq!(m["platform"]["architecture"], arch, "{index}");
        let digest = m["digest"].as_str().unwrap();
        assert!(
            text.contains(&format!("linux/{arch}: digest: {digest} size: ")),
            "{text}"
        );
        // Each manifest is in the repository, by its digest.
        let one = raw_manifest(&format!("{}/team/x@{digest}", reg.host()));
        assert_eq!(
            one["mediaType"],
            "application/vnd.oci.image.manifest.v1+json"
        );
    }
    let pushed = pushed_digest(&text);
    let raw = tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{dest}"),
        ],
    );
    let index_digest = imgbuild::digest::Digest::of(raw.as_bytes()).to_string();
    assert_eq!(pushed, index_digest, "{text}");
    // The shared layer is uploaded once.
    assert_eq!(text.matches(": Layer already exists").count(), 1, "{text}");
    assert_eq!(text.matches(": Pushed").count(), 3, "{text}");

    // One platform pulled into an empty store is the image built for it.
    let out = in_store(&env, "fresh", &["pull", "--platform", "linux/arm64", &dest]);
    assert_success(&out, &["pull --platform linux/arm64"]);
    assert!(
        stdout(&out).contains(&format!("Digest: {pushed}")),
        "{}",
        stdout(&out)
    );
    let id_for = |store: &str, platform: &str| {
        let out = in_store(&env, store, &["inspect", "--platform", platform, &dest]);
        assert_success(&out, &["inspect --platform", platform]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (v[0]["Id"].clone(), v[0]["Architecture"].clone())
    };
    let (built, arch) = id_for("store", "linux/arm64");
    assert_eq!(arch, "arm64");
    assert_eq!(id_for("fresh", "linux/arm64").0, built);

    // What the fresh store lacks of the index is named; --platform pushes
    // the one it has, as a plain manifest.
    let other = format!("{}/team/y:1", reg.host());
    let out = in_store(&env, "fresh", &["push", &dest, &other]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("the store lacks linux/amd64") && err.contains("--platform"),
        "{err}"
    );
    let out = in_store(
        &env,
        "fresh",
        &["push", "--platform", "linux/arm64", &dest, &other],
    );
    assert_success(&out, &["push --platform linux/arm64"]);
    let one = raw_manifest(&other);
    assert_eq!(
        one["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );

    // build --push sends the index too.
    let pushed_by_build = format!("{}/team/z:1", reg.host());
    let out = build_ctx(
        &env,
        "store",
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "-t",
            &pushed_by_build,
            "--push",
        ],
    );
    assert_success(&out, &["build --push"]);
    assert_eq!(raw_manifest(&pushed_by_build), index);
}

crate::it_test!(a_multi_platform_build_cache_serves_every_platform);
/// Issue 14 item 5: `--cache-to` of a multi-platform build carries every
/// platform's chain, so an empty store with `--cache-from` builds both
/// platforms from the cache alone, to the same archive. (Its metadata file
/// lists every platform's image too.)
fn a_multi_platform_build_cache_serves_every_platform() {
    let env = TestEnv::new();
    let reg = Registry::start(&env, false);
    per_platform_ctx(&env);
    let cache = format!("registry:{}/cache/mp:buildcache", reg.host());
    let platforms = "linux/amd64,linux/arm64";
    let out = build_ctx(
        &env,
        "a",
        &[
            "--platform",
            platforms,
            "--cache-to",
            &cache,
            "-o",
            "a.tar",
            "--metadata-file",
            "../meta.json",
        ],
    );
    assert_success(&out, &["build with --cache-to"]);
    // The metadata names each platform's image (the index has no layers).
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.path().join("meta.json")).unwrap()).unwrap();
    let each: Vec<&str> = meta["images"][0]["platforms"]
        .as_array()
        .unwrap_or_else(|| panic!("{meta}"))
        .iter()
        .map(|p| p["platform"].as_str().unwrap())
        .collect();
    assert_eq!(each, ["linux/amd64", "linux/arm64"], "{meta}");
    assert!(meta.get("containerimage.config.digest").is_none(), "{meta}");
    // Per platform: COPY a.txt (the same key for both), COPY which, LABEL.
    assert!(
        stderr(&out).contains("Exported 5 cache entries"),
        "{}",
        stderr(&out)
    );
    let out = build_ctx(
        &env,
        "b",
        &[
            "--platform",
            platforms,
            "--cache-from",
            &cache,
            "-o",
            "b.tar",
        ],
    );
    assert_success(&out, &["build with --cache-from"]);
    let log = stderr(&out);
    assert!(!log.contains("Cache miss"), "{log}");
    // The shared COPY a.txt once (a stage both platforms continue from),
    // then COPY which and LABEL per platform: every one from the cache.
    assert_eq!(log.matches(" ---> Using cache").count(), 5, "{log}");
    for platform in ["linux/amd64", "linux/arm64"] {
        assert!(
            log.contains(&format!("[{platform} 0]  ---> Using cache")),
            "{log}"
        );
    }
    assert_eq!(
        std::fs::read(env.path().join("ctx/a.tar")).unwrap(),
        std::fs::read(env.path().join("ctx/b.tar")).unwrap()
    );
}

/// A multi-stage build for the cache backends: a build stage that RUNs,
/// and a final stage that copies its result. Returns the context's
/// Dockerfile steps count (every step, both stages).
fn two_stage_context(env: &TestEnv) -> usize {
    crate::util::busybox_base(env);
    std::fs::create_dir_all(env.path().join("ctx")).unwrap();
    std::fs::copy(
        env.path().join("base/base.tar"),
        env.path().join("ctx/base.tar"),
    )
    .unwrap();
    env.write("ctx/src.txt", "source\n");
    env.write(
        "ctx/Dockerfile",
        "FROM oci-archive:base.tar AS build\nCOPY src.txt /src.txt\n\
         RUN tr a-z A-Z < /src.txt > /out.txt\nENV BUILT=1\n\
         FROM oci-archive:base.tar\nCOPY --from=build /out.txt /app/out.txt\n\
         COPY src.txt /app/src.txt\nLABEL demo=1\n",
    );
    6
}

/// Every step's "Step N/M : TEXT" line but FROM's, and whether it hit:
/// `(text, cached)`.
fn cache_lines(log: &str) -> Vec<(String, bool)> {
    let lines: Vec<&str> = log.lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if let Some(rest) = l.strip_prefix("Step ")
            && let Some((_, text)) = rest.split_once(" : ")
            && !text.starts_with("FROM ")
        {
            let cached = lines
                .get(i + 1)
                .is_some_and(|n| n.starts_with(" ---> Using cache"));
            out.push((text.to_string(), cached));
        }
    }
    out
}

crate::it_test!(issue_15_a_mode_max_cache_serves_every_stage_to_an_empty_store);
/// Issue 15 item 6: `mode=max` exports every step of every stage the build
/// ran, so a second machine (an empty store) with `--cache-from` runs no
/// step, the build stage's included, and writes the same archive; with
/// `mode=min` only the final image's steps are shared and the build
/// stage runs again. The same for a registry and for a local directory.
fn issue_15_a_mode_max_cache_serves_every_stage_to_an_empty_store() {
    let env = TestEnv::new();
    let reg = Registry::start(&env, false);
    let steps = two_stage_context(&env);
    let build = |store: &str, args: &[&str]| build_ctx(&env, store, args);
    let out = build("a", &["-o", "a.tar"]);
    assert_success(&out, &["the first build"]);
    let a = std::fs::read(env.path().join("ctx/a.tar")).unwrap();
    let cache_dir = env.path().join("cache-dir");
    let backends = [
        (
            format!("type=registry,ref={}/cache/app:max,mode=max", reg.host()),
            format!("type=registry,ref={}/cache/app:max", reg.host()),
        ),
        (
            format!("type=local,dest={},mode=max", cache_dir.display()),
            format!("type=local,src={}", cache_dir.display()),
        ),
    ];
    for (i, (to, from)) in backends.iter().enumerate() {
        // Exported from the store that built it (every step cached there).
        let out = build("a", &["--cache-to", to, "-o", "a2.tar"]);
        assert_success(&out, &["export", to]);
        assert!(stderr(&out).contains("Exported"), "{}", stderr(&out));
        let empty = format!("b{i}");
        let out = build(&empty, &["--cache-from", from, "-o", &format!("b{i}.tar")]);
        assert_success(&out, &["import", from]);
        let log = stderr(&out);
        let lines = cache_lines(&log);
        assert_eq!(lines.len(), steps, "{log}");
        assert!(
            lines.iter().all(|(_, hit)| *hit),
            "{from}: {lines:?}\n{log}"
        );
        assert!(!log.contains("Cache miss"), "{log}");
        assert_eq!(
            std::fs::read(env.path().join(format!("ctx/b{i}.tar"))).unwrap(),
            a,
            "{from}: the same archive"
        );
    }
    // The local cache is an OCI layout: skopeo reads its manifest.
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci:{}:latest", cache_dir.display()))
        .output()
        .unwrap();
    assert_success(&out, &["skopeo inspect of the local cache"]);
    assert!(
        stdout(&out).contains("application/vnd.imgbuild.cache.index.v1+json"),
        "{}",
        stdout(&out)
    );

    // mode=min: the final image's steps only; the build stage runs again.
    let min = format!("type=local,dest={},tag=min", cache_dir.display());
    let out = build("a", &["--cache-to", &min, "-o", "a3.tar"]);
    assert_success(&out, &["export with mode=min"]);
    let out = build(
        "c",
        &[
            "--cache-from",
            &format!("type=local,src={},tag=min", cache_dir.display()),
            "-o",
            "c.tar",
        ],
    );
    assert_success(&out, &["import of mode=min"]);
    let lines = cache_lines(&stderr(&out));
    let missed: Vec<&str> = lines
        .iter()
        .filter(|(_, hit)| !hit)
        .map(|(t, _)| t.as_str())
        .collect();
    assert_eq!(
        missed,
        [
            "COPY src.txt /src.txt",
            "RUN tr a-z A-Z < /src.txt > /out.txt",
            "ENV BUILT=1"
        ],
        "{lines:?}"
    );
    assert_eq!(std::fs::read(env.path().join("ctx/c.tar")).unwrap(), a);
}

crate::it_test!(issue_15_an_inline_cache_travels_in_the_image);
/// `--cache-to type=inline` puts the cache of the image's steps into its
/// config; `--cache-from` that image (pushed to a registry) on an empty
/// store finds them, and the image stays loadable.
fn issue_15_an_inline_cache_travels_in_the_image() {
    let env = TestEnv::new();
    let reg = Registry::start(&env, false);
    two_stage_context(&env);
    let image = format!("{}/team/app:inline", reg.host());
    let out = build_ctx(
        &env,
        "a",
        &[
            "--cache-to",
            "type=inline",
            "-t",
            &image,
            "--push",
            "-o",
            "a.tar",
        ],
    );
    assert_success(&out, &["build with an inline cache"]);
    let out = build_ctx(&env, "b", &["--cache-from", &image, "-o", "b.tar"]);
    assert_success(&out, &["build from an inline cache"]);
    let lines = cache_lines(&stderr(&out));
    let hits: Vec<bool> = lines.iter().map(|(_, h)| *h).collect();
    // The final stage's steps hit; the build stage's are not in an
    // inline cache (mode=min).
    assert_eq!(hits, [false, false, false, true, true, true], "{lines:?}");
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--config", "--raw"])
        .arg(format!(
            "oci-archive:{}",
            env.path().join("ctx/a.tar").display()
        ))
        .output()
        .unwrap();
    assert_success(&out, &["skopeo reads the image with an inline cache"]);
    assert!(
        stdout(&out).contains("imgbuild.cache.v1"),
        "{}",
        stdout(&out)
    );
}
