//! Registries that fail transiently do not fail the build (issue 10, item 8).
//!
//! A real distribution server on 127.0.0.1 sits behind a fault-injecting
//! proxy that also plays Docker Hub's token server. The proxy follows a
//! script — the next request of a kind gets the next fault scripted for that
//! kind — and logs every request, so each test checks that the retries
//! happened, and were the right ones, not only that the command succeeded.
//! Retries are made fast with `IMGBUILD_RETRY_DELAY` (documented in
//! docs/registry.md), except where a test checks the default schedule.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::registry::{Registry, build_image, manifest_of, stdout};
use crate::util::{TestEnv, assert_success, stderr};

const TOKEN: &str = "fl4ky";

/// Short fixed waits between retries.
const FAST: &[(&str, &str)] = &[("IMGBUILD_RETRY_DELAY", "50ms")];

/// What a request is, for the script and the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Ping,
    Token,
    Manifest,
    ManifestPut,
    BlobHead,
    BlobGet,
    Upload,
    Mount,
    Patch,
    UploadPut,
    Cancel,
    Other,
}

fn kind_of(method: &str, target: &str) -> Kind {
    let path = target.split('?').next().unwrap_or(target);
    match method {
        "GET" if path == "/v2/" => Kind::Ping,
        "GET" if path == "/token" => Kind::Token,
        "GET" | "HEAD" if path.contains("/manifests/") => Kind::Manifest,
        "PUT" if path.contains("/manifests/") => Kind::ManifestPut,
        "HEAD" if path.contains("/blobs/sha256:") => Kind::BlobHead,
        "GET" if path.contains("/blobs/sha256:") => Kind::BlobGet,
        "POST" if target.contains("mount=") => Kind::Mount,
        "POST" => Kind::Upload,
        "PATCH" => Kind::Patch,
        "PUT" if path.contains("/blobs/uploads/") => Kind::UploadPut,
        "DELETE" => Kind::Cancel,
        _ => Kind::Other,
    }
}

/// How the proxy misbehaves on one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// Answered by the proxy with this status.
    Status(u16),
    /// The same, with `Retry-After: SECONDS`.
    RetryAfter(u16, u64),
    /// The same, with `Retry-After` an HTTP-date this many seconds after the
    /// answer's `Date`.
    RetryAt(u16, u64),
    /// The connection is reset before any answer (nothing is forwarded).
    Reset,
    /// Half the request body reaches the registry; then the connections
    /// close, unanswered.
    CutUpstream,
    /// Forwarded whole; the registry's answer is lost on the way back.
    LoseAnswer,
    /// Forwarded; one byte of the answer's body is flipped.
    Corrupt,
    /// Forwarded; the answer's body stops halfway.
    CutBody,
}

/// One request the proxy saw.
#[derive(Clone, Debug)]
struct Entry {
    at: Instant,
    kind: Kind,
    target: String,
    range: Option<String>,
    fault: Option<Fault>,
}

#[derive(Default)]
struct State {
    script: Vec<(Kind, Fault)>,
    always: Option<(Kind, Fault)>,
    log: Vec<Entry>,
}

impl State {
    fn take(&mut self, kind: Kind) -> Option<Fault> {
        if let Some((k, f)) = self.always
            && k == kind
        {
            return Some(f);
        }
        let i = self.script.iter().position(|(k, _)| *k == kind)?;
        Some(self.script.remove(i).1)
    }
}

/// The fault-injecting proxy (and token server) in front of a registry.
struct Flaky {
    port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl Flaky {
    fn start(upstream: u16, script: &[(Kind, Fault)]) -> Flaky {
        Flaky::with(upstream, script, None)
    }

    /// Every request of `kind` gets `fault`.
    fn always(upstream: u16, kind: Kind, fault: Fault) -> Flaky {
        Flaky::with(upstream, &[], Some((kind, fault)))
    }

    fn with(upstream: u16, script: &[(Kind, Fault)], always: Option<(Kind, Fault)>) -> Flaky {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State {
            script: script.to_vec(),
            always,
            log: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, s) = (Arc::clone(&state), Arc::clone(&stop));
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let st = Arc::clone(&st);
                        std::thread::spawn(move || serve(client, upstream, port, &st));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Flaky { port, state, stop }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log(&self) -> Vec<Entry> {
        self.state.lock().unwrap().log.clone()
    }

    fn of(&self, kind: Kind) -> Vec<Entry> {
        self.log().into_iter().filter(|e| e.kind == kind).collect()
    }

    /// Requests that got a fault.
    fn faulted(&self) -> Vec<Entry> {
        self.log()
            .into_iter()
            .filter(|e| e.fault.is_some())
            .collect()
    }

    /// Faults of the script no request got.
    fn unused(&self) -> Vec<(Kind, Fault)> {
        self.state.lock().unwrap().script.clone()
    }

    /// The time from the request that got `fault` to the next one of its kind.
    fn wait_after(&self, kind: Kind, fault: Fault) -> Duration {
        let e = self.of(kind);
        let i = e
            .iter()
            .position(|x| x.fault == Some(fault))
            .unwrap_or_else(|| panic!("no {kind:?} got {fault:?}: {e:#?}"));
        let next = e
            .get(i + 1)
            .unwrap_or_else(|| panic!("{kind:?} was not retried after {fault:?}"));
        next.at - e[i].at
    }
}

impl Drop for Flaky {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Reads from `s` into `buf` until it ends with `end`.
fn read_until(s: &mut TcpStream, buf: &mut Vec<u8>, end: &[u8]) -> Option<()> {
    let mut b = [0u8; 1];
    while !buf.ends_with(end) {
        if s.read(&mut b).ok()? == 0 {
            return None;
        }
        buf.push(b[0]);
    }
    Some(())
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        401 => "Unauthorized",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Whatever",
    }
}

fn answer(status: u16, headers: &[(&str, String)], body: &str) -> String {
    let mut a = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (k, v) in headers {
        a.push_str(&format!("{k}: {v}\r\n"));
    }
    a.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    a
}

/// Serves one client connection: each request is answered by a scripted
/// fault, by the token server, by a challenge when it carries no token, or
/// else forwarded upstream on a fresh connection (`Connection: close`).
fn serve(mut client: TcpStream, upstream: u16, me: u16, state: &Mutex<State>) {
    loop {
        let mut head = Vec::new();
        if read_until(&mut client, &mut head, b"\r\n").is_none() {
            return;
        }
        let line = String::from_utf8_lossy(&head).into_owned();
        let mut words = line.split(' ');
        let method = words.next().unwrap_or("").to_string();
        let target = words.next().unwrap_or("").to_string();
        let kind = kind_of(&method, &target);
        let mut fault = state.lock().unwrap().take(kind);
        let log = |range: Option<String>, fault: Option<Fault>| {
            state.lock().unwrap().log.push(Entry {
                at: Instant::now(),
                kind,
                target: target.clone(),
                range,
                fault,
            });
        };
        if fault == Some(Fault::Reset) {
            log(None, fault);
            // The rest of the request stays unread: closing the socket now
            // makes the kernel answer with a reset.
            std::thread::sleep(Duration::from_millis(20));
            return;
        }
        if read_until(&mut client, &mut head, b"\r\n\r\n").is_none() {
            return;
        }
        let text = String::from_utf8_lossy(&head).into_owned();
        let len = header(&text, "content-length").map_or(0, |v| v.parse().unwrap_or(0));
        let mut body = vec![0u8; len];
        if client.read_exact(&mut body).is_err() {
            return;
        }
        let range = header(&text, "range");
        let authed = header(&text, "authorization").as_deref() == Some(&format!("Bearer {TOKEN}"));
        let now = SystemTime::now();
        let own = match fault {
            Some(Fault::Status(s)) => Some(answer(s, &[], "")),
            Some(Fault::RetryAfter(s, n)) => Some(answer(s, &[("Retry-After", n.to_string())], "")),
            Some(Fault::RetryAt(s, n)) => Some(answer(
                s,
                &[
                    ("Date", httpdate::fmt_http_date(now)),
                    (
                        "Retry-After",
                        httpdate::fmt_http_date(now + Duration::from_secs(n)),
                    ),
                ],
                "",
            )),
            _ if kind == Kind::Token => {
                // Anonymous tokens, for a repository scope only.
                assert!(target.contains("scope=repository"), "{target}");
                Some(answer(
                    200,
                    &[("Content-Type", "application/json".into())],
                    &format!("{{\"token\":\"{TOKEN}\"}}"),
                ))
            }
            _ if !authed => {
                // The registry's challenge, not a fault: a forwarding fault
                // waits for a request that gets through.
                if let Some(f) = fault.take() {
                    state.lock().unwrap().script.insert(0, (kind, f));
                }
                Some(answer(
                    401,
                    &[(
                        "WWW-Authenticate",
                        format!("Bearer realm=\"http://127.0.0.1:{me}/token\",service=\"flaky\""),
                    )],
                    "",
                ))
            }
            _ => None,
        };
        log(range, fault);
        if let Some(a) = own {
            if client.write_all(a.as_bytes()).is_err() {
                return;
            }
            continue;
        }
        let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)) else {
            return;
        };
        let head = text.replacen("\r\n", "\r\nConnection: close\r\n", 1);
        if up.write_all(head.as_bytes()).is_err() {
            return;
        }
        if fault == Some(Fault::CutUpstream) {
            let _ = up.write_all(&body[..body.len() / 2]);
            let _ = up.shutdown(Shutdown::Write);
            let _ = up.read_to_end(&mut Vec::new());
            return;
        }
        if up.write_all(&body).is_err() {
            return;
        }
        let mut rhead = Vec::new();
        if read_until(&mut up, &mut rhead, b"\r\n\r\n").is_none() {
            return;
        }
        let mut rbody = Vec::new();
        let _ = up.read_to_end(&mut rbody);
        match fault {
            Some(Fault::LoseAnswer) => return,
            Some(Fault::Corrupt) if !rbody.is_empty() => {
                let i = rbody.len() / 2;
                rbody[i] ^= 0xff;
            }
            Some(Fault::CutBody) if rbody.len() > 1 => {
                let _ = client.write_all(&rhead);
                let _ = client.write_all(&rbody[..rbody.len() / 2]);
                return;
            }
            _ => {}
        }
        if client.write_all(&rhead).is_err() || client.write_all(&rbody).is_err() {
            return;
        }
    }
}

/// `imgbuild ARGS` in `cwd` on store `store`, pulls allowed, with `vars`.
fn imgbuild(
    env: &TestEnv,
    store: &str,
    cwd: &Path,
    args: &[&str],
    vars: &[(&str, &str)],
) -> Output {
    let mut c = env.cmd_in(cwd, args);
    c.env("IMGBUILD_STORE", env.path().join(store))
        .env("IMGBUILD_PULL", "missing")
        .env("SOURCE_DATE_EPOCH", "1700000000");
    for (k, v) in vars {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// The retry notices among a command's lines.
fn notices(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with("retrying "))
        .map(str::to_string)
        .collect()
}

/// The store has no temporary file left and checks clean.
fn assert_store_clean(env: &TestEnv, store: &str) {
    let tmp = std::fs::read_dir(env.path().join(store).join("tmp")).map_or(0, |r| r.count());
    assert_eq!(tmp, 0, "temporary files left in {store}");
    let check = imgbuild(env, store, env.path(), &["store", "check"], &[]);
    assert_success(&check, &["store check", store]);
}

/// `digest=sha256:…` of an upload PUT, or the session part of an upload URL.
fn query_digest(target: &str) -> Option<&str> {
    target
        .split("digest=")
        .nth(1)
        .map(|d| d.split('&').next().unwrap_or(d))
}

fn session(target: &str) -> &str {
    target.split('?').next().unwrap_or(target)
}

crate::it_test!(a_pull_through_a_flaky_registry_retries_every_request_and_gets_the_image);
fn a_pull_through_a_flaky_registry_retries_every_request_and_gets_the_image() {
    let env = TestEnv::new();
    let reg = Registry::start(&env, false);
    let big: String = (0..100_000).map(|i| format!("{i}\n")).collect();
    let dest = format!("{}/team/app:1", reg.host());
    build_image(
        &env,
        "app",
        &[("big.txt", &big), ("small.txt", "small\n")],
        &dest,
    );
    env.ok(&["push", &dest]);
    let flaky = Flaky::start(
        reg.port,
        &[
            (Kind::Ping, Fault::RetryAfter(503, 1)),
            (Kind::Token, Fault::Status(500)),
            (Kind::Manifest, Fault::Status(503)),
            (Kind::Manifest, Fault::RetryAt(429, 1)),
            (Kind::BlobGet, Fault::Reset),
            (Kind::BlobGet, Fault::Status(502)),
            (Kind::BlobGet, Fault::Corrupt),
            (Kind::BlobGet, Fault::CutBody),
            (Kind::BlobGet, Fault::Status(504)),
            (Kind::BlobGet, Fault::Status(408)),
        ],
    );
    let via = format!("{}/team/app:1", flaky.host());
    let started = Instant::now();
    let out = imgbuild(&env, "pulled", env.path(), &["pull", &via], FAST);
    assert_success(&out, &["pull through a flaky registry"]);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(flaky.unused(), [], "faults no request got");
    assert_eq!(
        manifest_of(&env, "pulled", &via)["Id"],
        manifest_of(&env, "store", &dest)["Id"]
    );
    assert_store_clean(&env, "pulled");

    // One notice per retry, no more, on pull's stream.
    let text = stdout(&out);
    let lines = notices(&text);
    assert_eq!(lines.len(), flaky.faulted().len(), "{text}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("retrying GET /v2/ of ")
                && l.ends_with(": 503 Service Unavailable")),
        "{text}"
    );
    assert!(
        lines.iter().any(|l| l.contains("Too Many Requests")),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("from scratch: it does not match its digest")),
        "{text}"
    );

    // Retry-After was honoured, as seconds and as an HTTP-date (the fixed
    // 50ms delay would have come back at once).
    assert!(flaky.wait_after(Kind::Ping, Fault::RetryAfter(503, 1)) >= Duration::from_millis(950));
    assert!(flaky.wait_after(Kind::Manifest, Fault::RetryAt(429, 1)) >= Duration::from_millis(950));
    assert!(flaky.wait_after(Kind::Manifest, Fault::Status(503)) < Duration::from_millis(900));

    // A body cut short was resumed with Range; the corrupt one was fetched
    // again from its first byte.
    let gets = flaky.of(Kind::BlobGet);
    for (i, e) in gets.iter().enumerate() {
        let next = gets[i + 1..].iter().find(|n| n.target == e.target);
        match e.fault {
            Some(Fault::CutBody) => {
                let r = next.and_then(|n| n.range.clone()).unwrap_or_default();
                assert!(r.starts_with("bytes=") && r != "bytes=0-", "{gets:#?}");
            }
            Some(Fault::Corrupt) => {
                let n = next.unwrap_or_else(|| panic!("not fetched again: {gets:#?}"));
                assert_eq!(n.range, None, "{gets:#?}");
            }
            _ => {}
        }
    }
}

crate::it_test!(a_push_through_a_flaky_registry_restarts_what_broke_and_publishes_the_image);
fn a_push_through_a_flaky_registry_restarts_what_broke_and_publishes_the_image() {
    let env = TestEnv::new();
    let reg = Registry::start(&env, false);
    let flaky = Flaky::start(
        reg.port,
        &[
            (Kind::Ping, Fault::Status(503)),
            (Kind::Token, Fault::Status(503)),
            (Kind::BlobHead, Fault::Status(503)),
            (Kind::BlobHead, Fault::Reset),
            (Kind::Upload, Fault::Status(429)),
            (Kind::Patch, Fault::CutUpstream),
            (Kind::Patch, Fault::Status(500)),
            (Kind::UploadPut, Fault::LoseAnswer),
            (Kind::ManifestPut, Fault::Status(502)),
            (Kind::ManifestPut, Fault::RetryAfter(503, 0)),
            (Kind::Mount, Fault::Status(503)),
        ],
    );
    let one = format!("{}/team/one:1", flaky.host());
    let two = format!("{}/team/two:1", flaky.host());
    let big: String = (0..50_000).map(|i| format!("{i}\n")).collect();
    build_image(
        &env,
        "one",
        &[("base.txt", "shared\n"), ("big.txt", &big)],
        &one,
    );
    build_image(&env, "two", &[("base.txt", "shared\n")], &two);

    let out = imgbuild(&env, "store", env.path(), &["push", &one], FAST);
    assert_success(&out, &["push through a flaky registry"]);
    let text = stdout(&out);
    let faults_one = flaky.faulted().len();
    assert_eq!(notices(&text).len(), faults_one, "{text}");
    assert_eq!(text.matches(": Pushed").count(), 2, "{text}");
    // The second image's layer is mounted from the first repository, after
    // the mount request's own retry.
    let out = imgbuild(&env, "store", env.path(), &["push", &two], FAST);
    assert_success(&out, &["push a second image, mounting"]);
    let text = stdout(&out);
    assert!(text.contains("Mounted from team/one"), "{text}");
    assert_eq!(
        notices(&text).len(),
        flaky.faulted().len() - faults_one,
        "{text}"
    );
    assert_eq!(flaky.unused(), [], "faults no request got");

    // Both images are in the registry, whole: an empty store pulls them
    // straight from it, every blob checked against its digest.
    for (name, image) in [("one", &one), ("two", &two)] {
        let direct = format!("{}/team/{name}:1", reg.host());
        let out = imgbuild(&env, "check", env.path(), &["pull", &direct], &[]);
        assert_success(&out, &["pull what was pushed", name]);
        assert_eq!(
            manifest_of(&env, "check", &direct)["Id"],
            manifest_of(&env, "store", image)["Id"]
        );
    }
    assert_eq!(flaky.of(Kind::ManifestPut).len(), 2 + 2);

    let log = flaky.log();
    // The upload whose PATCH broke halfway into the registry was cancelled
    // and started over in a new session, never resumed in the broken one.
    let cut = log
        .iter()
        .find(|e| e.fault == Some(Fault::CutUpstream))
        .unwrap();
    let broken = session(&cut.target);
    assert!(
        log.iter()
            .any(|e| e.kind == Kind::Cancel && session(&e.target) == broken),
        "{log:#?}"
    );
    assert_eq!(
        log.iter()
            .filter(|e| e.kind == Kind::Patch && session(&e.target) == broken)
            .count(),
        1,
        "{log:#?}"
    );
    // The upload whose final PUT lost its answer had in fact succeeded: the
    // retry asked with HEAD and uploaded nothing again.
    let lost = log
        .iter()
        .position(|e| e.fault == Some(Fault::LoseAnswer))
        .unwrap();
    let digest = query_digest(&log[lost].target).unwrap().to_string();
    let after = &log[lost + 1..];
    assert!(
        after
            .iter()
            .any(|e| e.kind == Kind::BlobHead && e.target.ends_with(&digest)),
        "{log:#?}"
    );
    assert!(
        !after
            .iter()
            .any(|e| e.kind == Kind::UploadPut && query_digest(&e.target) == Some(&digest)),
        "uploaded again: {log:#?}"
    );
}

crate::it_test!(a_build_pulls_its_base_through_a_flaky_registry);
fn a_build_pulls_its_base_through_a_flaky_registry() {
    let env = TestEnv::new();
    let reg = Registry::start(&env, false);
    let base = format!("{}/team/base:1", reg.host());
    build_image(&env, "base", &[("etc.txt", "base\n")], &base);
    env.ok(&["push", &base]);
    let flaky = Flaky::start(
        reg.port,
        &[
            (Kind::Ping, Fault::Reset),
            (Kind::Token, Fault::Status(502)),
            (Kind::Manifest, Fault::RetryAfter(503, 1)),
            (Kind::BlobGet, Fault::Corrupt),
            (Kind::BlobGet, Fault::Status(500)),
        ],
    );
    env.write("ctx/x.txt", "x\n");
    env.write(
        "ctx/Dockerfile",
        format!("FROM {}/team/base:1\nCOPY x.txt /x.txt\n", flaky.host()),
    );
    let out = imgbuild(
        &env,
        "b",
        &env.path().join("ctx"),
        &["build", "--progress=plain", "-o", "out.tar", "."],
        FAST,
    );
    assert_success(&out, &["build pulling its base through a flaky registry"]);
    assert_eq!(flaky.unused(), [], "faults no request got");
    let log = stderr(&out);
    assert!(log.contains("Pull complete"), "{log}");
    assert_eq!(notices(&log).len(), flaky.faulted().len(), "{log}");
    assert!(
        flaky.wait_after(Kind::Manifest, Fault::RetryAfter(503, 1)) >= Duration::from_millis(950)
    );
    let layers = crate::util::manifest_layers(&env.path().join("ctx/out.tar"));
    assert_eq!(layers.len(), 2);
    assert_store_clean(&env, "b");
}

crate::it_test!(a_registry_that_keeps_failing_fails_in_bounded_time_with_a_clear_error);
fn a_registry_that_keeps_failing_fails_in_bounded_time_with_a_clear_error() {
    let env = TestEnv::new();
    let reg = Registry::start(&env, false);
    let dest = format!("{}/team/app:1", reg.host());
    build_image(&env, "app", &[("a.txt", "alpha\n")], &dest);
    env.ok(&["push", &dest]);

    // Pull: the default backoff (1s doubling, jittered into its upper
    // half), two retries.
    let flaky = Flaky::always(reg.port, Kind::Manifest, Fault::Status(503));
    let via = format!("{}/team/app:1", flaky.host());
    let started = Instant::now();
    let out = imgbuild(
        &env,
        "p",
        env.path(),
        &["pull", &via],
        &[("IMGBUILD_RETRY", "2")],
    );
    let took = started.elapsed();
    assert!(!out.status.success());
    assert!(took < Duration::from_secs(8), "{took:?}");
    let err = stderr(&out);
    assert!(err.contains(&format!("pulling {via}")), "{err}");
    assert!(
        err.contains(&format!(
            "http://{}/v2/team/app/manifests/1: the registry answered 503 Service Unavailable (gave up after 3 attempts)",
            flaky.host()
        )),
        "{err}"
    );
    let asks = flaky.of(Kind::Manifest);
    assert_eq!(asks.len(), 3, "{asks:#?}");
    // The upper bounds allow for a loaded machine (the whole suite runs
    // at once); the lower bounds are what proves the backoff.
    let slack = Duration::from_millis(1000);
    let (first, second) = (asks[1].at - asks[0].at, asks[2].at - asks[1].at);
    assert!(
        first >= Duration::from_millis(500) && first < Duration::from_secs(1) + slack,
        "{first:?}"
    );
    assert!(
        second >= Duration::from_secs(1) && second < Duration::from_secs(2) + slack,
        "{second:?}"
    );
    assert_eq!(notices(&stdout(&out)).len(), 2, "{}", stdout(&out));
    assert_store_clean(&env, "p");

    // By default, five attempts in all.
    let out = imgbuild(&env, "p", env.path(), &["pull", &via], FAST);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("(gave up after 5 attempts)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(flaky.of(Kind::Manifest).len(), 3 + 5);

    // Push: every upload's PATCH fails. Each broken session is cancelled,
    // the push gives up, and no manifest is put: nothing half-pushed is
    // visible.
    let flaky = Flaky::always(reg.port, Kind::Patch, Fault::Status(500));
    let elsewhere = format!("{}/team/elsewhere:1", flaky.host());
    let out = imgbuild(
        &env,
        "store",
        env.path(),
        &["push", &dest, &elsewhere],
        FAST,
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("500 Internal Server Error (gave up after 5 attempts)"),
        "{}",
        stderr(&out)
    );
    let log = flaky.log();
    let patches: Vec<&Entry> = log.iter().filter(|e| e.kind == Kind::Patch).collect();
    assert!(patches.len() >= 5, "{log:#?}");
    for p in &patches {
        assert!(
            log.iter()
                .any(|e| e.kind == Kind::Cancel && session(&e.target) == session(&p.target)),
            "session not cancelled: {log:#?}"
        );
    }
    assert!(!log.iter().any(|e| e.kind == Kind::ManifestPut), "{log:#?}");
}

crate::it_test!(auth_and_not_found_answers_are_not_retried);
fn auth_and_not_found_answers_are_not_retried() {
    let env = TestEnv::new();
    let reg = Registry::start(&env, false);
    let dest = format!("{}/team/app:1", reg.host());
    build_image(&env, "app", &[("a.txt", "alpha\n")], &dest);
    env.ok(&["push", &dest]);

    // A 503 is retried; the registry's 404 for a tag it lacks is final.
    let flaky = Flaky::start(reg.port, &[(Kind::Manifest, Fault::Status(503))]);
    let missing = format!("{}/team/app:nope", flaky.host());
    let out = imgbuild(&env, "p", env.path(), &["pull", &missing], FAST);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
    assert_eq!(flaky.of(Kind::Manifest).len(), 2, "{:#?}", flaky.log());
    assert_eq!(notices(&stdout(&out)).len(), 1, "{}", stdout(&out));

    // A 503 from the token server is retried; its 401 is final.
    let flaky = Flaky::start(
        reg.port,
        &[
            (Kind::Token, Fault::Status(503)),
            (Kind::Token, Fault::Status(401)),
        ],
    );
    let via = format!("{}/team/app:1", flaky.host());
    let out = imgbuild(&env, "p", env.path(), &["pull", &via], FAST);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "authentication required for {}/team/app",
            flaky.host()
        )),
        "{err}"
    );
    assert_eq!(flaky.of(Kind::Token).len(), 2, "{:#?}", flaky.log());
    assert_eq!(flaky.of(Kind::Manifest).len(), 0);

    // A registry that refuses a fresh token too: asked once more with a new
    // token (docker's rule), then the error, no backoff loop.
    let flaky = Flaky::start(
        reg.port,
        &[
            (Kind::Manifest, Fault::Status(401)),
            (Kind::Manifest, Fault::Status(401)),
            (Kind::Manifest, Fault::Status(401)),
        ],
    );
    let via = format!("{}/team/app:1", flaky.host());
    let out = imgbuild(&env, "p", env.path(), &["pull", &via], FAST);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("authentication required"),
        "{}",
        stderr(&out)
    );
    assert_eq!(flaky.of(Kind::Manifest).len(), 2, "{:#?}", flaky.log());
    assert_eq!(notices(&stdout(&out)).len(), 0, "{}", stdout(&out));
    assert_store_clean(&env, "p");
}
