//! ADD of a URL against a real HTTP server on 127.0.0.1, started and
//! stopped by each test: one that sends `ETag` and `Last-Modified`, answers
//! `If-None-Match`/`If-Modified-Since` with `304`, redirects, fails, and
//! breaks a body off on request, and counts what it was asked and what it
//! sent whole (python's http.server sends no `ETag`, so it is written here).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::util::{TestEnv, archive_layers, assert_success, layer_listing, stderr};

/// What the server has at one path.
#[derive(Clone)]
enum Resource {
    File {
        body: Vec<u8>,
        etag: Option<String>,
        last_modified: Option<String>,
    },
    /// `302 Found` to this path.
    Redirect(String),
    /// Headers for the whole body, half of it, then the connection closes.
    Truncated(Vec<u8>),
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    if_none_match: Option<String>,
    if_modified_since: Option<String>,
    status: u16,
}

#[derive(Default)]
struct State {
    files: HashMap<String, Resource>,
    seen: Vec<Seen>,
    /// Bodies sent whole with `200`.
    full: usize,
}

struct Server {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (Arc::clone(&state), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(c) = conn {
                    serve(c, &st);
                }
            }
        });
        Server {
            addr,
            state,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn put(&self, path: &str, r: Resource) {
        self.state.lock().unwrap().files.insert(path.into(), r);
    }

    fn file(&self, path: &str, body: &[u8], etag: Option<&str>, last_modified: Option<&str>) {
        self.put(
            path,
            Resource::File {
                body: body.to_vec(),
                etag: etag.map(str::to_string),
                last_modified: last_modified.map(str::to_string),
            },
        );
    }

    fn full(&self) -> usize {
        self.state.lock().unwrap().full
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answers one request on `c`, then closes it.
fn serve(c: TcpStream, state: &Mutex<State>) {
    let mut r = BufReader::new(c.try_clone().unwrap());
    let mut line = String::new();
    if r.read_line(&mut line).is_err() || line.is_empty() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let mut st = state.lock().unwrap();
    let resource = st.files.get(&path).cloned();
    let mut w = c;
    let (status, head, body): (u16, String, Vec<u8>) = match resource {
        None => (404, String::new(), b"not found".to_vec()),
        Some(Resource::Redirect(to)) => (302, format!("Location: {to}\r\n"), Vec::new()),
        Some(Resource::Truncated(body)) => {
            st.seen.push(Seen {
                path,
                if_none_match: None,
                if_modified_since: None,
                status: 200,
            });
            drop(st);
            let _ = write!(
                w,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = w.write_all(&body[..body.len() / 2]);
            let _ = w.flush();
            return;
        }
        Some(Resource::File {
            body,
            etag,
            last_modified,
        }) => {
            let inm = headers.get("if-none-match");
            let ims = headers.get("if-modified-since");
            // RFC 9110: If-None-Match wins over If-Modified-Since.
            let fresh = match (inm, ims) {
                (Some(tags), _) => etag
                    .as_ref()
                    .is_some_and(|e| tags.split(',').any(|t| t.trim() == e)),
                (None, Some(since)) => last_modified.as_ref() == Some(since),
                (None, None) => false,
            };
            let mut head = String::new();
            if let Some(e) = &etag {
                head.push_str(&format!("ETag: {e}\r\n"));
            }
            if let Some(l) = &last_modified {
                head.push_str(&format!("Last-Modified: {l}\r\n"));
            }
            if fresh {
                (304, head, Vec::new())
            } else {
                (200, head, body)
            }
        }
    };
    st.seen.push(Seen {
        path,
        if_none_match: headers.get("if-none-match").cloned(),
        if_modified_since: headers.get("if-modified-since").cloned(),
        status,
    });
    if status == 200 {
        st.full += 1;
    }
    drop(st);
    let reason = match status {
        200 => "OK",
        302 => "Found",
        304 => "Not Modified",
        _ => "Not Found",
    };
    let _ = write!(
        w,
        "HTTP/1.1 {status} {reason}\r\n{head}Connection: close\r\n"
    );
    if status != 304 {
        let _ = write!(w, "Content-Length: {}\r\n", body.len());
    }
    let _ = w.write_all(b"\r\n");
    let _ = w.write_all(&body);
    let _ = w.flush();
}

const DATE1: &str = "Wed, 21 Oct 2015 07:28:00 GMT";
const DATE1_SECS: u64 = 1445412480;
const DATE2: &str = "Thu, 22 Oct 2015 07:28:00 GMT";

/// `imgbuild ARGS` in `ctx`, straight to 127.0.0.1 whatever proxy the
/// machine sets.
fn run(env: &TestEnv, ctx: &Path, args: &[&str]) -> std::process::Output {
    let mut c = env.cmd_in(ctx, args);
    crate::util::without_proxies(&mut c);
    c.output().unwrap()
}

/// Builds the Dockerfile in `ctx` into `out`, returning (image ID, stderr).
fn build(env: &TestEnv, ctx: &Path, out: &str, extra: &[&str]) -> (String, String) {
    let mut args = vec!["build", "--progress=plain", "-o", out, "--iidfile", "iid"];
    args.extend_from_slice(extra);
    args.push(".");
    let o = run(env, ctx, &args);
    assert_success(&o, &args);
    let id = std::fs::read_to_string(ctx.join("iid")).unwrap();
    (id, stderr(&o))
}

fn listing(archive: &Path, layer: usize) -> Vec<String> {
    layer_listing(&archive_layers(archive)[layer])
}

fn blobs(env: &TestEnv) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(env.store().join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn sha256(bytes: &[u8]) -> String {
    imgbuild::digest::Digest::of(bytes).hex()
}

crate::it_test!(add_url_downloads_revalidates_and_keys_on_content);
fn add_url_downloads_revalidates_and_keys_on_content() {
    let srv = Server::start();
    srv.file("/file.txt", b"v1", Some("\"1\""), Some(DATE1));
    let env = TestEnv::new();
    let ctx = env.path().join("ctx");
    env.write(
        "ctx/Dockerfile",
        format!("FROM scratch\nADD {} /opt/\n", srv.url("/file.txt")),
    );

    // First build: one full download; the file is 0600, its mtime the
    // Last-Modified time, named after the URL.
    let (first, _) = build(&env, &ctx, "a.tar", &[]);
    assert_eq!(srv.full(), 1);
    let l = listing(&ctx.join("a.tar"), 0);
    assert!(
        l.contains(&format!("opt/file.txt 600 0:0 {DATE1_SECS} 2")),
        "{l:?}"
    );
    let history = env.ok(&["history", "--no-trunc", first.trim()]);
    assert!(
        history.contains(&format!("ADD {} /opt/", srv.url("/file.txt"))),
        "{history}"
    );

    // Rebuild: the validators go back, the server says 304, the step hits.
    let (again, log) = build(&env, &ctx, "b.tar", &[]);
    assert_eq!(again, first);
    assert_eq!(srv.full(), 1, "no body was sent again");
    let last = srv.seen().last().cloned().unwrap();
    assert_eq!(last.status, 304);
    assert_eq!(last.if_none_match.as_deref(), Some("\"1\""));
    assert_eq!(last.if_modified_since.as_deref(), Some(DATE1));
    assert!(log.contains("Using cache"), "{log}");

    // A dry run revalidates and reads no body: up to date.
    let o = run(&env, &ctx, &["build", "--dry-run", "-o", "b.tar", "."]);
    assert_success(&o, &["build --dry-run"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("up to date"));

    // The content changes: downloaded again, the step misses, a new image
    // with the new bytes and time.
    srv.file("/file.txt", b"v2!", Some("\"2\""), Some(DATE2));
    let o = run(&env, &ctx, &["build", "--dry-run", "-o", "c.tar", "."]);
    assert_eq!(o.status.code(), Some(1), "a dry run reports the change");
    assert!(String::from_utf8_lossy(&o.stdout).contains("would rebuild"));
    // (The server sent its 200; the dry run did not save the body.)
    assert_eq!(srv.full(), 2);
    assert!(
        !blobs(&env).contains(&sha256(b"v2!")),
        "a dry run saves no body"
    );
    let (changed, log) = build(&env, &ctx, "c.tar", &[]);
    assert_ne!(changed, first);
    assert_eq!(srv.full(), 3);
    assert!(blobs(&env).contains(&sha256(b"v2!")));
    assert!(!log.contains("Using cache"), "{log}");
    assert!(log.contains("the file at its URL changed"), "{log}");
    let l = listing(&ctx.join("c.tar"), 0);
    assert!(
        l.contains(&format!("opt/file.txt 600 0:0 {} 3", DATE1_SECS + 86400)),
        "{l:?}"
    );

    // The same bytes as the first time under a new ETag: downloaded, and
    // the step hits by content.
    srv.file("/file.txt", b"v1", Some("\"3\""), Some(DATE1));
    let (back, log) = build(&env, &ctx, "d.tar", &[]);
    assert_eq!(srv.full(), 4);
    assert_eq!(back, first);
    assert!(log.contains("Using cache"), "{log}");

    // A server that sends no validators: every build downloads, and an
    // unchanged file still hits.
    srv.file("/file.txt", b"v1", None, Some(DATE1));
    srv.file("/plain", b"plain", None, None);
    env.write(
        "ctx/Dockerfile",
        format!("FROM scratch\nADD {} /plain\n", srv.url("/plain")),
    );
    let (p1, _) = build(&env, &ctx, "e.tar", &[]);
    let (p2, log) = build(&env, &ctx, "e.tar", &[]);
    assert_eq!(p1, p2);
    assert!(log.contains("Using cache"), "{log}");
    let plain: Vec<Seen> = srv
        .seen()
        .into_iter()
        .filter(|s| s.path == "/plain")
        .collect();
    assert_eq!(plain.len(), 2);
    assert!(
        plain
            .iter()
            .all(|s| s.status == 200 && s.if_none_match.is_none())
    );
    // No Last-Modified: the Unix epoch.
    assert_eq!(listing(&ctx.join("e.tar"), 0), ["plain 600 0:0 0 5"]);
}

crate::it_test!(add_url_checksum_needs_no_request_and_is_verified);
fn add_url_checksum_needs_no_request_and_is_verified() {
    let srv = Server::start();
    srv.file(
        "/tool.tgz",
        b"not really a tarball",
        Some("\"t\""),
        Some(DATE1),
    );
    let env = TestEnv::new();
    let ctx = env.path().join("ctx");
    let sum = sha256(b"not really a tarball");
    env.write(
        "ctx/Dockerfile",
        format!(
            "FROM scratch\nADD --checksum=sha256:{sum} {} /opt/\n",
            srv.url("/tool.tgz")
        ),
    );
    let (first, _) = build(&env, &ctx, "a.tar", &["--no-cache"]);
    assert_eq!(srv.seen().len(), 1);
    // Not extracted; with a checksum the mtime is no server's to say.
    let l = listing(&ctx.join("a.tar"), 0);
    assert!(
        l.contains(&"opt/tool.tgz 600 0:0 0 20".to_string()),
        "{l:?}"
    );
    // Rebuild: the cache hit is decided without asking the server.
    let (again, log) = build(&env, &ctx, "b.tar", &[]);
    assert_eq!(again, first);
    assert!(log.contains("Using cache"), "{log}");
    assert_eq!(srv.seen().len(), 1, "no request on a rebuild");

    // A wrong checksum: an error naming both digests, nothing stored.
    srv.file("/other", b"other bytes", None, None);
    let wrong = sha256(b"what was expected");
    env.write(
        "ctx/Dockerfile",
        format!(
            "FROM scratch\nADD --checksum=sha256:{wrong} {} /other\n",
            srv.url("/other")
        ),
    );
    let before = blobs(&env);
    let o = run(&env, &ctx, &["build", "-o", "c.tar", "."]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains(&format!("expected sha256:{wrong}")), "{err}");
    assert!(
        err.contains(&format!("got sha256:{}", sha256(b"other bytes"))),
        "{err}"
    );
    assert!(err.contains("Dockerfile:2"), "{err}");
    assert_eq!(blobs(&env), before, "nothing was stored");
}

crate::it_test!(add_url_modes_owners_and_destinations);
fn add_url_modes_owners_and_destinations() {
    let srv = Server::start();
    srv.file("/tool", b"#!/bin/sh\n", Some("\"a\""), None);
    srv.file("/conf.txt", b"x=1\n", None, None);
    srv.file("/dir/", b"index", None, None);
    srv.file("/", b"root", None, None);
    srv.file("/a%20b.txt", b"spaced", None, None);
    srv.put("/old", Resource::Redirect("/conf.txt".into()));
    let env = TestEnv::new();
    let ctx = env.path().join("ctx");
    env.write(
        "ctx/passwd",
        "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
    );
    env.write("ctx/group", "root:x:0:\napp:x:1000:\n");
    env.write(
        "ctx/Dockerfile",
        format!(
            "FROM scratch AS base\nCOPY passwd group /etc/\n\
             FROM base\n\
             ADD --chmod=755 {tool} /usr/local/bin/\n\
             ADD --chown=app {conf} /etc/app.conf\n\
             ADD {conf} /etc\n\
             ADD {dir} {root} /srv/\n\
             ADD {spaced} /srv/\n\
             ADD --chown=1:2 {old} /x/\n",
            tool = srv.url("/tool"),
            conf = srv.url("/conf.txt"),
            dir = srv.url("/dir/"),
            root = srv.url("/"),
            spaced = srv.url("/a%20b.txt"),
            old = srv.url("/old"),
        ),
    );
    let mut c = env.cmd_in(&ctx, &["build", "-o", "a.tar", "."]);
    c.env("SOURCE_DATE_EPOCH", "100");
    crate::util::without_proxies(&mut c);
    assert_success(&c.output().unwrap(), &["build"]);
    let a = ctx.join("a.tar");
    let l = |i| listing(&a, i);
    assert!(
        l(1).contains(&"usr/local/bin/tool 755 0:0 100 10".to_string()),
        "{:?}",
        l(1)
    );
    // A created parent is 0755 and owned by --chown's user.
    assert!(
        l(2).contains(&"etc/app.conf 600 1000:1000 100 4".to_string()),
        "{:?}",
        l(2)
    );
    // DEST an existing directory (no trailing /): the file goes inside.
    assert!(
        l(3).contains(&"etc/conf.txt 600 0:0 100 4".to_string()),
        "{:?}",
        l(3)
    );
    // Names from the URL's path, `__unnamed__` for none.
    assert!(
        l(4).contains(&"srv/dir 600 0:0 100 5".to_string()),
        "{:?}",
        l(4)
    );
    assert!(
        l(4).contains(&"srv/__unnamed__ 600 0:0 100 4".to_string()),
        "{:?}",
        l(4)
    );
    assert!(
        l(5).contains(&"srv/a b.txt 600 0:0 100 6".to_string()),
        "{:?}",
        l(5)
    );
    // A redirect is followed; the name is the URL's as written.
    assert!(l(6).contains(&"x/ 755 1:2 100 0".to_string()), "{:?}", l(6));
    assert!(
        l(6).contains(&"x/old 600 1:2 100 4".to_string()),
        "{:?}",
        l(6)
    );
    assert!(
        srv.seen()
            .iter()
            .any(|s| s.path == "/old" && s.status == 302)
    );
}

crate::it_test!(add_url_failures_are_located_and_leave_nothing);
fn add_url_failures_are_located_and_leave_nothing() {
    let srv = Server::start();
    srv.put("/cut", Resource::Truncated(vec![7u8; 200_000]));
    let env = TestEnv::new();
    let ctx = env.path().join("ctx");
    // A 404: a located error, exit 1.
    env.write(
        "ctx/Dockerfile",
        format!("FROM scratch\nADD {} /x\n", srv.url("/missing")),
    );
    let o = run(&env, &ctx, &["build", "-o", "a.tar", "."]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("Dockerfile:2"), "{err}");
    assert!(err.contains("404 Not Found"), "{err}");
    // The connection drops mid-body: an error, no blob, no temporary file.
    env.write(
        "ctx/Dockerfile",
        format!("FROM scratch\nADD {} /x\n", srv.url("/cut")),
    );
    let before = blobs(&env);
    let o = run(&env, &ctx, &["build", "-o", "b.tar", "."]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("Dockerfile:2"), "{err}");
    assert!(err.contains("broke off"), "{err}");
    assert_eq!(blobs(&env), before, "nothing was stored");
    assert!(
        !env.store()
            .join("validators")
            .read_dir()
            .unwrap()
            .any(|_| true)
    );
    assert!(!ctx.join("b.tar").exists());
    let tmp: Vec<_> = std::fs::read_dir(env.store().join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() && std::fs::read_dir(p).unwrap().any(|_| true))
        .collect();
    assert!(tmp.is_empty(), "temporary files left: {tmp:?}");
}

crate::it_test!(add_url_definition_errors);
fn add_url_definition_errors() {
    let env = TestEnv::new();
    let ctx = env.path().join("ctx");
    env.write("ctx/local.txt", "x");
    for (dockerfile, message) in [
        (
            "ADD http://127.0.0.1:1/a local.txt /d/",
            "cannot mix URLs with local sources",
        ),
        (
            "ADD http://127.0.0.1:1/a http://127.0.0.1:1/b /d",
            "must be a directory and end with a /",
        ),
        (
            "ADD --checksum=sha256:00 http://127.0.0.1:1/a /d",
            "invalid checksum",
        ),
        (
            "ADD --checksum=sha256:00 local.txt /d",
            "http:// and https:// sources only",
        ),
        ("COPY http://127.0.0.1:1/a /d", "not found"),
    ] {
        env.write("ctx/Dockerfile", format!("FROM scratch\n{dockerfile}\n"));
        let o = run(&env, &ctx, &["build", "-o", "a.tar", "."]);
        assert_ne!(o.status.code(), Some(0), "{dockerfile}");
        let err = stderr(&o);
        assert!(err.contains(message), "{dockerfile}: {err}");
    }
}

crate::it_test!(add_url_and_a_spec_fetch_make_the_same_image);
fn add_url_and_a_spec_fetch_make_the_same_image() {
    let srv = Server::start();
    srv.file(
        "/tool",
        b"#!/bin/sh\necho hi\n",
        Some("\"t1\""),
        Some(DATE1),
    );
    let env = TestEnv::new();
    let ctx = env.path().join("ctx");
    let sum = sha256(b"#!/bin/sh\necho hi\n");
    env.write(
        "ctx/Dockerfile",
        format!(
            "FROM scratch\nADD --chmod=755 {tool} /usr/local/bin/\n\
             ADD --checksum=sha256:{sum} {tool} /tool.sh\n",
            tool = srv.url("/tool")
        ),
    );
    env.write(
        "ctx/spec.toml",
        format!(
            r#"
[image.x]
from = "scratch"
[[image.x.step]]
fetch = [{{ url = "{tool}", dest = "/usr/local/bin/", mode = "0755" }}]
[[image.x.step]]
name = "pinned"
fetch = [{{ url = "{tool}", dest = "/tool.sh", checksum = "sha256:{sum}" }}]
"#,
            tool = srv.url("/tool")
        ),
    );
    let (from_dockerfile, _) = build(&env, &ctx, "d.tar", &[]);
    let o = run(
        &env,
        &ctx,
        &["build", "-o", "s.tar", "--iidfile", "iid", "spec.toml"],
    );
    assert_success(&o, &["build spec.toml"]);
    let from_spec = std::fs::read_to_string(ctx.join("iid")).unwrap();
    assert_eq!(from_dockerfile, from_spec);

    // Spec mistakes are located diagnostics, before any request.
    let asked = srv.seen().len();
    env.write(
        "ctx/bad.toml",
        r#"
[image.x]
from = "scratch"
[[image.x.step]]
fetch = [{ url = "ftp://example.com/x", dest = "/x" }, { dest = "/y" }]
"#,
    );
    let o = run(&env, &ctx, &["build", "-o", "b.tar", "bad.toml"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("bad.toml:5:"), "{err}");
    assert!(err.contains("is not an http:// or https:// URL"), "{err}");
    assert!(err.contains("a fetch needs `url`"), "{err}");
    assert_eq!(srv.seen().len(), asked);
}
