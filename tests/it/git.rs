//! ADD of a git repository and the git build context, against real
//! repositories: a bare repository made with `git init --bare`, a work
//! repository pushing commits to it, served by path (`file://`) and by
//! `git http-backend` behind a small CGI bridge on 127.0.0.1 that each test
//! starts and stops (and that logs which git commands it was asked:
//! `ls-refs` only resolves a ref, `fetch` transfers objects).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::util::{TestEnv, archive_layers, assert_success, layer_listing, stderr};

/// Commit times the repositories use, so mtimes can be checked.
const T1: i64 = 1_600_000_000;
const T2: i64 = 1_600_086_400;

/// A bare repository `srv/NAME.git` and a work repository pushing to it.
struct Repo {
    dir: tempfile::TempDir,
    name: String,
}

/// git with no configuration of the machine's, as the tests' own tool.
fn git_in(dir: &Path, args: &[&str], time: i64) -> String {
    let date = format!("@{time} +0000");
    let out = Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=Tester", "-c", "user.email=t@example.com"])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "protocol.file.allow=always",
        ])
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("HOME", dir)
        .env("GIT_AUTHOR_DATE", &date)
        .env("GIT_COMMITTER_DATE", &date)
        .output()
        .expect("run git (installed by the README's packages)");
    assert!(
        out.status.success(),
        "git {} failed:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Repo {
    fn new(name: &str) -> Repo {
        let dir = tempfile::Builder::new()
            .prefix("imgbuild-git-")
            .tempdir()
            .unwrap();
        let r = Repo {
            dir,
            name: name.into(),
        };
        std::fs::create_dir_all(r.srv_root()).unwrap();
        git_in(
            &r.srv_root(),
            &["init", "-q", "--bare", &format!("{name}.git")],
            T1,
        );
        git_in(&r.bare(), &["symbolic-ref", "HEAD", "refs/heads/main"], T1);
        git_in(r.dir.path(), &["init", "-q", "-b", "main", "work"], T1);
        r
    }

    fn srv_root(&self) -> PathBuf {
        self.dir.path().join("srv")
    }

    fn bare(&self) -> PathBuf {
        self.srv_root().join(format!("{}.git", self.name))
    }

    fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    fn file_url(&self) -> String {
        format!("file://{}", self.bare().display())
    }

    fn write(&self, rel: &str, content: &str, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        let p = self.work().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn symlink(&self, rel: &str, target: &str) {
        let p = self.work().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, p).unwrap();
    }

    /// Commits everything at `time` and pushes `main` (and tags); the
    /// commit's hash.
    fn commit(&self, msg: &str, time: i64) -> String {
        git_in(&self.work(), &["add", "-A"], time);
        git_in(&self.work(), &["commit", "-q", "-m", msg], time);
        let bare = self.bare().display().to_string();
        git_in(
            &self.work(),
            &["push", "-q", "--tags", "-f", &bare, "main"],
            time,
        );
        git_in(&self.work(), &["rev-parse", "HEAD"], time)
    }

    fn git(&self, args: &[&str]) -> String {
        git_in(&self.work(), args, T1)
    }
}

/// One request the server answered: its path, and for a POST the
/// protocol-v2 command (`ls-refs`, `fetch`).
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    command: Option<String>,
}

/// `git http-backend` behind a CGI bridge on 127.0.0.1.
struct GitHttp {
    addr: SocketAddr,
    /// Protocol v0 only (the client's `Git-Protocol` header dropped): a
    /// server that takes no `want` of a commit no ref points at.
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl GitHttp {
    fn start(project_root: &Path) -> GitHttp {
        GitHttp::start_with(project_root, false)
    }

    fn start_with(project_root: &Path, v0: bool) -> GitHttp {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (sn, sp, root) = (
            Arc::clone(&seen),
            Arc::clone(&stop),
            project_root.to_path_buf(),
        );
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(c) = conn {
                    cgi(c, &root, &sn, v0);
                }
            }
        });
        GitHttp {
            addr,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self, repo: &Repo) -> String {
        format!("http://{}/{}.git", self.addr, repo.name)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// How many object transfers (`fetch` commands) were asked for.
    fn fetches(&self) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.command.as_deref() == Some("fetch"))
            .count()
    }
}

impl Drop for GitHttp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One HTTP request run through `git http-backend` as a CGI script.
fn cgi(c: TcpStream, root: &Path, seen: &Mutex<Vec<Seen>>, v0: bool) {
    let mut r = BufReader::new(c.try_clone().unwrap());
    let mut line = String::new();
    if r.read_line(&mut line).is_err() || line.is_empty() {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("GET").to_string();
    let target = parts.next().unwrap_or("/").to_string();
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
    let mut body = Vec::new();
    if let Some(n) = headers
        .get("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        body.resize(n, 0);
        r.read_exact(&mut body).unwrap();
    } else if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let plain = if headers.get("content-encoding").is_some_and(|e| e == "gzip") {
        let mut v = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut v)
            .unwrap();
        v
    } else {
        body.clone()
    };
    let text = String::from_utf8_lossy(&plain);
    let command = (method == "POST").then(|| {
        text.find("command=")
            .map(|i| {
                text[i + 8..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '-')
                    .collect()
            })
            .unwrap_or_else(|| "fetch".into())
    });
    seen.lock().unwrap().push(Seen {
        path: path.to_string(),
        command,
    });
    let mut cmd = Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", root)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("CONTENT_LENGTH", body.len().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (h, var) in [
        ("content-type", "CONTENT_TYPE"),
        ("content-encoding", "HTTP_CONTENT_ENCODING"),
        ("git-protocol", "GIT_PROTOCOL"),
    ] {
        if v0 && var == "GIT_PROTOCOL" {
            continue;
        }
        if let Some(v) = headers.get(h) {
            cmd.env(var, v);
        }
    }
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let out = std::thread::scope(|s| {
        s.spawn(move || {
            let _ = stdin.write_all(&body);
        });
        child.wait_with_output().unwrap()
    });
    let raw = out.stdout;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let (head, resp_body) = match split {
        Some((i, n)) => (
            String::from_utf8_lossy(&raw[..i]).into_owned(),
            &raw[i + n..],
        ),
        None => (String::new(), &raw[..]),
    };
    let mut status = "200 OK".to_string();
    let mut out_headers = String::new();
    for h in head.lines() {
        match h.split_once(':') {
            Some((k, v)) if k.eq_ignore_ascii_case("status") => status = v.trim().to_string(),
            Some(_) => {
                out_headers.push_str(h.trim_end());
                out_headers.push_str("\r\n");
            }
            None => {}
        }
    }
    let mut w = c;
    let _ = write!(
        w,
        "HTTP/1.1 {status}\r\n{out_headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        resp_body.len()
    );
    let _ = w.write_all(resp_body);
    let _ = w.flush();
}

/// `imgbuild ARGS` in `ctx`, straight to 127.0.0.1 whatever proxy the
/// machine sets; `file://` allowed in ADD when `allow_file`.
fn imgbuild(env: &TestEnv, ctx: &Path, args: &[&str], allow_file: bool) -> std::process::Output {
    let mut c = env.cmd_in(ctx, args);
    crate::util::without_proxies(&mut c);
    if allow_file {
        c.env("IMGBUILD_GIT_ALLOW_FILE", "1");
    } else {
        c.env_remove("IMGBUILD_GIT_ALLOW_FILE");
    }
    c.output().unwrap()
}

/// Builds `ctx` (the directory `.`) with `--progress=plain -o OUT
/// --iidfile iid`; (image ID, stderr).
fn build(
    env: &TestEnv,
    ctx: &Path,
    out: &str,
    extra: &[&str],
    allow_file: bool,
) -> (String, String) {
    build_input(env, ctx, out, extra, ".", allow_file)
}

/// [`build`] of the context `input` (a git URL), run in `cwd`.
fn build_input(
    env: &TestEnv,
    cwd: &Path,
    out: &str,
    extra: &[&str],
    input: &str,
    allow_file: bool,
) -> (String, String) {
    let mut args = vec!["build", "--progress=plain", "-o", out, "--iidfile", "iid"];
    args.extend_from_slice(extra);
    args.push(input);
    let o = imgbuild(env, cwd, &args, allow_file);
    assert_success(&o, &args);
    let id = std::fs::read_to_string(cwd.join("iid")).unwrap();
    (id, stderr(&o))
}

/// A repository with files, an executable, a subdirectory, and a tag.
fn sample() -> (Repo, String) {
    let repo = Repo::new("app");
    repo.write("README", "hello\n", 0o644);
    repo.write("bin/tool", "#!/bin/sh\necho tool\n", 0o755);
    repo.write("docs/guide.txt", "the guide\n", 0o600);
    repo.write("docs/img/logo.txt", "logo\n", 0o644);
    let c1 = repo.commit("first", T1);
    repo.git(&["tag", "-a", "-m", "release one", "v1"]);
    repo.git(&["push", "-q", &repo.bare().display().to_string(), "v1"]);
    (repo, c1)
}

crate::it_test!(add_git_branch_tag_commit_and_subdir);
fn add_git_branch_tag_commit_and_subdir() {
    let (repo, c1) = sample();
    // A later commit on main: the tag and the hash stay on the first.
    repo.write("README", "hello again\n", 0o644);
    let c2 = repo.commit("second", T2);
    let srv = GitHttp::start(&repo.srv_root());
    let url = srv.url(&repo);
    let env = TestEnv::new();
    let ctx = env.path().join("ctx");
    env.write(
        "ctx/Dockerfile",
        format!(
            "FROM scratch\n\
             ADD {url}#main /branch\n\
             ADD {url}#v1 /tag/\n\
             ADD --chown=1:2 {url}#{c1} /commit\n\
             ADD {url}#main:docs /docs\n\
             ADD {url} /head\n\
             ADD {file}#main:/docs/img/ /byfile\n",
            file = repo.file_url()
        ),
    );
    let (_, log) = build(&env, &ctx, "type=local,dest=root", &[], true);
    assert!(!log.contains("Using cache"), "{log}");
    let root = ctx.join("root");
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    assert_eq!(read("branch/README"), "hello again\n");
    assert_eq!(read("head/README"), "hello again\n");
    // The annotated tag is peeled to its commit, the first.
    assert_eq!(read("tag/README"), "hello\n");
    assert_eq!(read("commit/README"), "hello\n");
    assert_eq!(read("docs/guide.txt"), "the guide\n");
    assert_eq!(read("docs/img/logo.txt"), "logo\n");
    assert!(!root.join("docs/README").exists(), "SUBDIR only");
    assert_eq!(read("byfile/logo.txt"), "logo\n");
    for d in ["branch", "tag", "commit", "docs", "head", "byfile"] {
        assert!(
            !root.join(d).join(".git").exists(),
            "{d}: no .git by default"
        );
    }
    assert!(c2 != c1);

    // The layers: modes as git keeps them (0600 in the work tree is 0644
    // in git), owners 0:0 or --chown, every mtime the commit's time.
    let o = imgbuild(&env, &ctx, &["build", "-o", "a.tar", "."], true);
    assert_success(&o, &["build -o a.tar"]);
    let layers = archive_layers(&ctx.join("a.tar"));
    let l = |i: usize| layer_listing(&layers[i]);
    assert_eq!(
        l(0),
        [
            format!("branch/ 755 0:0 {T2} 0"),
            format!("branch/README 644 0:0 {T2} 12"),
            format!("branch/bin/ 755 0:0 {T2} 0"),
            format!("branch/bin/tool 755 0:0 {T2} 20"),
            format!("branch/docs/ 755 0:0 {T2} 0"),
            format!("branch/docs/guide.txt 644 0:0 {T2} 10"),
            format!("branch/docs/img/ 755 0:0 {T2} 0"),
            format!("branch/docs/img/logo.txt 644 0:0 {T2} 5"),
        ]
    );
    assert!(
        l(2).contains(&format!("commit/ 755 1:2 {T1} 0")),
        "{:?}",
        l(2)
    );
    assert!(
        l(2).contains(&format!("commit/bin/tool 755 1:2 {T1} 20")),
        "{:?}",
        l(2)
    );
    // SOURCE_DATE_EPOCH wins over the commit's time, as for every copy.
    let mut c = env.cmd_in(&ctx, &["build", "-o", "e.tar", "."]);
    c.env("SOURCE_DATE_EPOCH", "100")
        .env("IMGBUILD_GIT_ALLOW_FILE", "1");
    crate::util::without_proxies(&mut c);
    assert_success(&c.output().unwrap(), &["build SOURCE_DATE_EPOCH=100"]);
    let e = layer_listing(&archive_layers(&ctx.join("e.tar"))[0]);
    assert!(
        e.contains(&"branch/README 644 0:0 100 12".to_string()),
        "{e:?}"
    );

    // The history reads as the instruction.
    let id = std::fs::read_to_string(ctx.join("iid")).unwrap();
    let history = env.ok(&["history", "--no-trunc", id.trim()]);
    assert!(
        history.contains(&format!("ADD {url}#main:docs /docs")),
        "{history}"
    );
}

crate::it_test!(add_git_keys_on_the_commit);
fn add_git_keys_on_the_commit() {
    let (repo, c1) = sample();
    let srv = GitHttp::start(&repo.srv_root());
    let url = srv.url(&repo);
    let env = TestEnv::new();
    let ctx = env.path().join("ctx");
    env.write(
        "ctx/Dockerfile",
        format!("FROM scratch\nADD {url}#main /src\n"),
    );
    // Built from inside a repository whose config would send the URL
    // elsewhere: git must not read it.
    git_in(&ctx, &["init", "-q"], T1);
    git_in(
        &ctx,
        &["config", "url.http://127.0.0.1:9/none.git.insteadOf", &url],
        T1,
    );
    let (first, _) = build(&env, &ctx, "a.tar", &[], false);
    assert_eq!(srv.fetches(), 1, "{:?}", srv.seen());

    // The same commit: resolved (ls-refs), nothing fetched, a cache hit.
    let asked = srv.seen().len();
    let (again, log) = build(&env, &ctx, "b.tar", &[], false);
    assert_eq!(again, first);
    assert!(log.contains("Using cache"), "{log}");
    assert_eq!(srv.fetches(), 1, "a hit clones nothing: {:?}", srv.seen());
    let since: Vec<Seen> = srv.seen()[asked..].to_vec();
    assert!(
        since
            .iter()
            .any(|s| s.command.as_deref() == Some("ls-refs")),
        "the ref was resolved: {since:?}"
    );
    assert!(
        since.iter().all(|s| s.path.starts_with("/app.git/")),
        "{since:?}"
    );
    // A dry run resolves too: up to date.
    let o = imgbuild(
        &env,
        &ctx,
        &["build", "--dry-run", "-o", "b.tar", "."],
        false,
    );
    assert_success(&o, &["build --dry-run"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("up to date"));

    // A new commit on the branch: the step misses and fetches, the image
    // changes.
    repo.write("README", "changed\n", 0o644);
    let c2 = repo.commit("second", T2);
    let o = imgbuild(
        &env,
        &ctx,
        &["build", "--dry-run", "-o", "c.tar", "."],
        false,
    );
    assert_eq!(o.status.code(), Some(1), "a dry run reports the move");
    assert_eq!(srv.fetches(), 1, "a dry run fetches nothing");
    let (moved, log) = build(&env, &ctx, "type=local,dest=moved", &[], false);
    assert_ne!(moved, first);
    assert_eq!(srv.fetches(), 2);
    assert!(
        log.contains("its git ref names another commit now"),
        "{log}"
    );
    assert_eq!(
        std::fs::read_to_string(ctx.join("moved/src/README")).unwrap(),
        "changed\n"
    );

    // Pinned by hash: the key needs no request at all.
    env.write(
        "ctx/Dockerfile",
        format!("FROM scratch\nADD {url}#{c1} /src\n"),
    );
    let (pinned, _) = build(&env, &ctx, "d.tar", &[], false);
    let asked = srv.seen().len();
    let (pinned_again, log) = build(&env, &ctx, "d.tar", &[], false);
    assert_eq!(pinned, pinned_again);
    assert!(log.contains("Using cache"), "{log}");
    assert_eq!(srv.seen().len(), asked, "no request for a pinned commit");
    // The same commit by branch name, once main is back on it, is the same
    // content: only the instruction (and so history) differs.
    assert_ne!(c1, c2);
}

crate::it_test!(add_git_commit_no_ref_names_from_a_v0_server);
fn add_git_commit_no_ref_names_from_a_v0_server() {
    // Protocol v0 takes no `want` of a commit that is no ref's tip: the
    // fetch by hash fails, and every branch and tag is fetched instead.
    let (repo, c1) = sample();
    repo.write("README", "later\n", 0o644);
    repo.commit("later", T2);
    git_in(&repo.bare(), &["tag", "-d", "v1"], T1);
    let srv = GitHttp::start_with(&repo.srv_root(), true);
    let url = srv.url(&repo);
    let env = TestEnv::new();
    let ctx = env.path().join("ctx");
    env.write(
        "ctx/Dockerfile",
        format!("FROM scratch\nADD --keep-git-dir {url}#{c1} /old\nADD {url}#main /new\n"),
    );
    build(&env, &ctx, "type=local,dest=root", &[], false);
    let root = ctx.join("root");
    assert_eq!(
        std::fs::read_to_string(root.join("old/README")).unwrap(),
        "hello\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("new/README")).unwrap(),
        "later\n"
    );
    assert!(srv.fetches() >= 3, "{:?}", srv.seen());
    // The fallback's scratch refs are not left in a kept .git.
    let refs = git_in(
        &root.join("old"),
        &["for-each-ref", "--format=%(refname)"],
        T1,
    );
    assert!(!refs.contains("imgbuild"), "{refs}");
    assert_eq!(git_in(&root.join("old"), &["rev-parse", "HEAD"], T1), c1);
}

crate::it_test!(add_git_keep_git_dir);
fn add_git_keep_git_dir() {
    let (repo, c1) = sample();
    let srv = GitHttp::start(&repo.srv_root());
    let url = srv.url(&repo);
    let env = TestEnv::new();
    let ctx = env.path().join("ctx");
    env.write(
        "ctx/Dockerfile",
        format!(
            "FROM scratch\n\
             ADD --keep-git-dir=true {url}#main /kept\n\
             ADD --keep-git-dir=false {url}#main /plain\n\
             ADD --keep-git-dir {url}#v1:docs /sub\n"
        ),
    );
    let (id, _) = build(&env, &ctx, "type=local,dest=root", &[], false);
    let kept = ctx.join("root/kept");
    assert!(kept.join(".git").is_dir());
    assert!(!ctx.join("root/plain/.git").exists());
    // With SUBDIR there is no .git (BuildKit keeps it only for the root).
    assert!(!ctx.join("root/sub/.git").exists());
    // git works in the image's filesystem: the commit, its message, the
    // branch, a clean tree, origin without the server's secrets.
    let g = |args: &[&str]| git_in(&kept, args, T1);
    assert_eq!(g(&["rev-parse", "HEAD"]), c1);
    assert!(g(&["log", "--format=%s"]).contains("first"));
    assert_eq!(g(&["rev-parse", "refs/heads/main"]), c1);
    assert_eq!(g(&["status", "--porcelain"]), "");
    assert_eq!(g(&["remote", "get-url", "origin"]), url);
    assert!(!kept.join(".git/FETCH_HEAD").exists());
    assert!(!kept.join(".git/logs").exists());

    // A second build from an empty store makes the same layers (the
    // image's creation time aside): the kept .git is the same bytes (no
    // stat data in its index, no reflog).
    let env2 = TestEnv::new();
    let ctx2 = env2.path().join("ctx");
    std::fs::create_dir_all(&ctx2).unwrap();
    std::fs::copy(ctx.join("Dockerfile"), ctx2.join("Dockerfile")).unwrap();
    build(&env2, &ctx2, "x.tar", &[], false);
    let o = imgbuild(&env, &ctx, &["build", "-o", "y.tar", "."], false);
    assert_success(&o, &["build -o y.tar"]);
    assert!(
        archive_layers(&ctx.join("y.tar")) == archive_layers(&ctx2.join("x.tar")),
        "a kept .git is reproducible"
    );
    let history = env.ok(&["history", "--no-trunc", id.trim()]);
    assert!(
        history.contains(&format!("ADD --keep-git-dir=true {url}#main /kept")),
        "{history}"
    );
}

crate::it_test!(add_git_hostile_repo_stays_confined);
fn add_git_hostile_repo_stays_confined() {
    let repo = Repo::new("evil");
    repo.write("ok.txt", "fine\n", 0o644);
    repo.symlink("passwd", "/etc/passwd");
    repo.symlink("hostroot", "/");
    repo.symlink("up", "../../../../../../");
    repo.write("big.bin", &"x".repeat(4 << 20), 0o644);
    repo.commit("evil", T1);
    let env = TestEnv::new();
    let ctx = env.path().join("ctx");
    let url = repo.file_url();

    // Links are copied as links, never followed: no host file in the layer.
    env.write(
        "ctx/Dockerfile",
        format!(
            "FROM scratch\nADD {url}#main /r\nADD {url}#main:hostroot /h\nADD {url}#main:up /u\n"
        ),
    );
    let o = imgbuild(&env, &ctx, &["build", "-o", "a.tar", "."], true);
    assert_success(&o, &["build"]);
    let layers = archive_layers(&ctx.join("a.tar"));
    let l0 = layer_listing(&layers[0]);
    assert!(l0.contains(&format!("r/passwd 777 0:0 {T1} 0")), "{l0:?}");
    assert!(l0.contains(&format!("r/hostroot 777 0:0 {T1} 0")), "{l0:?}");
    assert!(
        l0.contains(&format!("r/big.bin 644 0:0 {T1} {}", 4 << 20)),
        "{l0:?}"
    );
    let host_passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    for layer in &layers {
        let mut a = tar::Archive::new(&layer[..]);
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let mut s = String::new();
            let _ = e.read_to_string(&mut s);
            assert!(
                host_passwd.is_empty() || s != host_passwd,
                "{:?} holds the host's /etc/passwd",
                e.path()
            );
            let p = e.path().unwrap().display().to_string();
            assert!(!p.starts_with("h/etc") && !p.starts_with("u/etc"), "{p}");
        }
    }
    // SUBDIR through a link resolves inside the tree: its root here.
    let l1 = layer_listing(&layers[1]);
    assert!(l1.contains(&format!("h/ok.txt 644 0:0 {T1} 5")), "{l1:?}");
    let l2 = layer_listing(&layers[2]);
    assert!(l2.contains(&format!("u/ok.txt 644 0:0 {T1} 5")), "{l2:?}");

    // `..` in SUBDIR, a URL git would take for an option, an ssh host that
    // is one: refused before anything runs (exit 2), at their line.
    for (line, message) in [
        (format!("ADD {url}#main:../.. /x"), "leaves the repository"),
        (
            "ADD ssh://-oProxyCommand=id/x.git /x".to_string(),
            "starts with `-`",
        ),
        (
            "ADD https://h.example/x.git#--upload-pack=id /x".to_string(),
            "cannot name a branch",
        ),
        (
            format!("ADD --checksum=sha256:{} {url}#main /x", "0".repeat(64)),
            "not git",
        ),
    ] {
        env.write("ctx/Dockerfile", format!("FROM scratch\n{line}\n"));
        let o = imgbuild(&env, &ctx, &["build", "-o", "b.tar", "."], true);
        assert_eq!(o.status.code(), Some(2), "{line}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains(message), "{line}: {err}");
        assert!(err.contains("Dockerfile:2"), "{line}: {err}");
    }

    // file:// reads this machine's repositories: refused unless allowed.
    env.write(
        "ctx/Dockerfile",
        format!("FROM scratch\nADD {url}#main /r\n"),
    );
    let o = imgbuild(
        &env,
        &ctx,
        &["build", "--no-cache", "-o", "c.tar", "."],
        false,
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("file:// git sources"), "{err}");
    assert!(err.contains("Dockerfile:2"), "{err}");

    // A ref the repository lacks: a located error naming it.
    env.write(
        "ctx/Dockerfile",
        format!("FROM scratch\nADD {url}#nope /r\n"),
    );
    let o = imgbuild(&env, &ctx, &["build", "-o", "d.tar", "."], true);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("no branch, tag or ref named `nope`"), "{err}");
}

crate::it_test!(git_context_with_subdir);
fn git_context_with_subdir() {
    let repo = Repo::new("ctx");
    repo.write("top.txt", "top\n", 0o644);
    repo.write("app/Dockerfile", "FROM scratch\nCOPY . /ctx/\n", 0o644);
    repo.write("app/.dockerignore", "ignored.txt\n", 0o644);
    repo.write("app/ignored.txt", "no\n", 0o644);
    repo.write("app/main.txt", "main\n", 0o644);
    repo.write(
        "app/alt.Dockerfile",
        "FROM scratch\nCOPY main.txt /alt.txt\n",
        0o644,
    );
    repo.commit("ctx", T1);
    let srv = GitHttp::start(&repo.srv_root());
    let env = TestEnv::new();
    let cwd = env.path().join("cwd");
    std::fs::create_dir_all(&cwd).unwrap();

    // Over HTTP: SUBDIR is the context, its Dockerfile and .dockerignore
    // used; no .git.
    let url = format!("{}#main:app", srv.url(&repo));
    let (id, _) = build_input(&env, &cwd, "type=local,dest=root", &[], &url, false);
    let root = cwd.join("root/ctx");
    assert_eq!(
        std::fs::read_to_string(root.join("main.txt")).unwrap(),
        "main\n"
    );
    assert!(!root.join("ignored.txt").exists());
    assert!(!root.join("top.txt").exists());
    assert!(!root.join(".git").exists());
    assert!(srv.fetches() >= 1);

    // By file:// (the user's own URL: no seam needed), the same image.
    let file = format!("{}#main:app", repo.file_url());
    let (by_file, _) = build_input(&env, &cwd, "a.tar", &[], &file, false);
    assert_eq!(by_file, id);

    // `-f` is a file of the repository, relative to SUBDIR.
    build_input(
        &env,
        &cwd,
        "type=local,dest=alt",
        &["-f", "alt.Dockerfile"],
        &url,
        false,
    );
    assert_eq!(
        std::fs::read_to_string(cwd.join("alt/alt.txt")).unwrap(),
        "main\n"
    );

    // `-f -`: the Dockerfile from standard input, the context from git.
    let mut c = env.cmd_in(
        &cwd,
        &["build", "-f", "-", "-o", "type=local,dest=stdin", &url],
    );
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    crate::util::without_proxies(&mut c);
    let mut child = c.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"FROM scratch\nCOPY main.txt /from-stdin.txt\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_success(&o, &["build -f - URL"]);
    assert_eq!(
        std::fs::read_to_string(cwd.join("stdin/from-stdin.txt")).unwrap(),
        "main\n"
    );

    // BUILDKIT_CONTEXT_KEEP_GIT_DIR keeps .git (for the whole tree).
    repo.write("Dockerfile", "FROM scratch\nCOPY . /all/\n", 0o644);
    let c2 = repo.commit("root dockerfile", T2);
    let whole = format!("{}#main", srv.url(&repo));
    build_input(
        &env,
        &cwd,
        "type=local,dest=kept",
        &["--build-arg", "BUILDKIT_CONTEXT_KEEP_GIT_DIR=1"],
        &whole,
        false,
    );
    assert_eq!(
        git_in(&cwd.join("kept/all"), &["rev-parse", "HEAD"], T1),
        c2
    );

    // A SUBDIR that is missing, or a link: a clear error.
    for (sub, message) in [
        ("nope", "no directory `nope`"),
        ("..", "leaves the repository"),
    ] {
        let u = format!("{}#main:{sub}", srv.url(&repo));
        let o = imgbuild(&env, &cwd, &["build", "-o", "x.tar", &u], false);
        assert_ne!(o.status.code(), Some(0), "{sub}");
        assert!(stderr(&o).contains(message), "{sub}: {}", stderr(&o));
    }
}

crate::it_test!(git_context_links_stay_in_the_tree);
fn git_context_links_stay_in_the_tree() {
    // A repository whose Dockerfile and .dockerignore are links out of it:
    // read through the tree (where /etc/passwd does not exist), never from
    // the host, whose lines would otherwise show in the diagnostics.
    let repo = Repo::new("links");
    repo.symlink("Dockerfile", "/etc/passwd");
    repo.symlink("linkdir", "real");
    repo.symlink("hostdir", "/etc");
    repo.write("real/Dockerfile", "FROM scratch\nCOPY f /f\n", 0o644);
    repo.write("real/f", "f\n", 0o644);
    repo.symlink("real/.dockerignore", "/etc/hostname");
    repo.symlink("real/alias.Dockerfile", "Dockerfile");
    repo.commit("links", T1);
    let env = TestEnv::new();
    let cwd = env.path().join("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    let base = repo.file_url();

    let o = imgbuild(
        &env,
        &cwd,
        &["build", "-o", "a.tar", &format!("{base}#main")],
        false,
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("no Dockerfile at Dockerfile"), "{err}");
    assert!(!err.contains("root:x:0"), "{err}");

    // A SUBDIR through a link would be a host path out of the tree.
    let o = imgbuild(
        &env,
        &cwd,
        &["build", "-o", "a.tar", &format!("{base}#main:linkdir")],
        false,
    );
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("symbolic link"), "{}", stderr(&o));

    // A link inside the tree is followed inside it; the .dockerignore link
    // to the host reads nothing from the host.
    build_input(
        &env,
        &cwd,
        "type=local,dest=root",
        &["-f", "alias.Dockerfile"],
        &format!("{base}#main:real"),
        false,
    );
    assert_eq!(std::fs::read_to_string(cwd.join("root/f")).unwrap(), "f\n");
}

crate::it_test!(spec_git_fetch_matches_add);
fn spec_git_fetch_matches_add() {
    let (repo, _) = sample();
    let srv = GitHttp::start(&repo.srv_root());
    let url = srv.url(&repo);
    let env = TestEnv::new();
    let ctx = env.path().join("ctx");
    env.write(
        "ctx/Dockerfile",
        format!("FROM scratch\nADD --keep-git-dir=true {url}#v1 /src\nADD {url}#v1:docs /docs/\n"),
    );
    env.write(
        "ctx/spec.toml",
        format!(
            r#"
[image.x]
from = "scratch"
[[image.x.step]]
fetch = [{{ git = "{url}", ref = "v1", dest = "/src", keep_git_dir = true }}]
[[image.x.step]]
fetch = [{{ git = "{url}#v1:docs", dest = "/docs/" }}]
"#
        ),
    );
    let (from_dockerfile, _) = build(&env, &ctx, "d.tar", &[], false);
    let o = imgbuild(
        &env,
        &ctx,
        &["build", "-o", "s.tar", "--iidfile", "iid", "spec.toml"],
        false,
    );
    assert_success(&o, &["build spec.toml"]);
    let from_spec = std::fs::read_to_string(ctx.join("iid")).unwrap();
    assert_eq!(from_dockerfile, from_spec);

    // Spec mistakes are located diagnostics, before any request.
    let asked = srv.seen().len();
    env.write(
        "ctx/bad.toml",
        format!(
            r#"
[image.x]
from = "scratch"
[[image.x.step]]
fetch = [
  {{ git = "{url}", url = "{url}", dest = "/a" }},
  {{ git = "{url}", subdir = "../x", dest = "/b" }},
  {{ url = "https://h/x", ref = "main", dest = "/c" }},
  {{ git = "{url}#main", ref = "v1", dest = "/d" }},
]
"#
        ),
    );
    let o = imgbuild(&env, &ctx, &["build", "-o", "b.tar", "bad.toml"], false);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("bad.toml:6:"), "{err}");
    assert!(err.contains("`url` or `git`, not both"), "{err}");
    assert!(err.contains("leaves the repository"), "{err}");
    assert!(err.contains("`ref` applies to a `git` fetch"), "{err}");
    assert!(err.contains("already has a #fragment"), "{err}");
    assert_eq!(srv.seen().len(), asked);
}
