//! Git repositories through the system `git`: which commit a ref names
//! (`git ls-remote`, no clone), and the tree of one commit checked out
//! into a directory (a shallow fetch of that commit, then `git checkout`).
//! Knows nothing of steps, layers or keys: the builder's `step::fetch` and
//! the CLI's git context decide what the tree becomes.
//!
//! git runs on URLs a Dockerfile names, which may be hostile, so it gets:
//! - no option from the user: URLs and refs are checked first
//!   (`graph::GitSource`: nothing starting with `-`) and passed after `--`;
//!   a commit is passed only once it is known to be hex;
//! - a configuration of our own: no system or user file
//!   (`GIT_CONFIG_NOSYSTEM`, `GIT_CONFIG_GLOBAL=/dev/null`,
//!   `HOME=/dev/null`, so no `~/.netrc` or credential store either), no
//!   credential helper, no hooks, no template, no prompt
//!   (`GIT_TERMINAL_PROMPT=0`, stdin `/dev/null`), and no inherited
//!   environment at all (only `PATH`, `LC_ALL=C` and the proxies);
//! - transports allowed by name: https, http, ssh and git, `file` only
//!   when the caller allows it ([`Git::allow_file`]), `ext` never (it runs
//!   commands);
//! - ssh without configuration or credentials (`-F /dev/null`, no keys,
//!   no agent, `BatchMode`), as BuildKit's git source without `--ssh`;
//! - bounds: `ls-remote`'s output is read up to 64 MiB and git's error
//!   output up to its last 4 KiB; an http transfer slower than a byte a
//!   second for the read timeout fails.
//!
//! The checkout itself is git's: it refuses tree entries named `..` or
//! `.git` and never writes through a symlink, and every file lands under
//! the directory given. Submodules are not checked out.

use std::ffi::OsString;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::Options;
use crate::confine::{self, Root};
use crate::reference::redact_url as redact;

/// Why a git operation failed; each names the repository.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// git could not be started.
    #[error("running git (is it installed?)")]
    Spawn {
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A git command failed.
    #[error("git {what} {url} failed ({status}){}", tail(.stderr))]
    Failed {
        /// The operation (`ls-remote`, `fetch`, `checkout`).
        what: &'static str,
        /// The repository (password redacted).
        url: String,
        /// The exit status.
        status: std::process::ExitStatus,
        /// The end of what git wrote on stderr.
        stderr: String,
    },
    /// The repository has no ref of that name.
    #[error("{url} has no branch, tag or ref named `{reference}`")]
    NoSuchRef {
        /// The repository.
        url: String,
        /// The name asked for.
        reference: String,
    },
    /// The repository has no HEAD to take the default branch from.
    #[error("{url} has no HEAD (an empty repository?): name a branch, tag or commit")]
    NoHead {
        /// The repository.
        url: String,
    },
    /// The commit asked for is not in the repository (or is no commit).
    #[error("{url} has no commit {commit}")]
    NoSuchCommit {
        /// The repository.
        url: String,
        /// The commit.
        commit: String,
    },
    /// The ref moved between resolving it and fetching it.
    #[error("{url}: `{reference}` moved from {expected} to {actual} during the build")]
    Moved {
        /// The repository.
        url: String,
        /// The ref.
        reference: String,
        /// The commit resolved first.
        expected: String,
        /// The commit fetched.
        actual: String,
    },
    /// git said something that is not what it says.
    #[error("git {what} {url}: unexpected output `{output}`")]
    Output {
        /// The operation.
        what: &'static str,
        /// The repository.
        url: String,
        /// What it said (cut to 200 bytes).
        output: String,
    },
    /// A git command ran past its deadline (a stalled server).
    #[error("git {what} {url} took more than {secs} s: stopped")]
    TimedOut {
        /// The operation.
        what: &'static str,
        /// The repository.
        url: String,
        /// The deadline.
        secs: u64,
    },
    /// `ls-remote` said more than any repository needs to.
    #[error("git ls-remote {url}: the server listed more than {limit} bytes of refs")]
    TooMuch {
        /// The repository.
        url: String,
        /// The bound.
        limit: usize,
    },
    /// A file:// repository where the caller allows none.
    #[error(
        "{url}: file:// git sources read this machine's files outside the build context, \
         and are refused"
    )]
    FileRefused {
        /// The repository.
        url: String,
    },
    /// SUBDIR is not a directory of the commit's tree.
    #[error("the repository has no directory `{subdir}`")]
    NoSubdir {
        /// The subdirectory.
        subdir: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// SUBDIR is (or passes through) a symlink, where a host path is
    /// needed (it would be followed out of the tree).
    #[error(
        "the subdirectory `{subdir}` is a symbolic link or passes through one: name the directory it points to"
    )]
    SubdirLink {
        /// The subdirectory.
        subdir: String,
    },
    /// The checked-out tree could not be opened.
    #[error("opening the checked-out tree")]
    Tree(#[source] confine::Error),
    /// A directory for the checkout could not be made.
    #[error("making {path}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

fn tail(stderr: &str) -> String {
    let s = stderr.trim();
    if s.is_empty() {
        String::new()
    } else {
        format!(": {s}")
    }
}

/// Result alias for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The most `ls-remote` may print (a repository with a million refs needs
/// about 60 MiB).
const LS_REMOTE_LIMIT: usize = 64 << 20;
/// How long asking a server for its refs may take: it runs for the cache
/// key on every build, cached or not.
const LS_REMOTE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);
/// How long a fetch (or a local git operation) may take, all told.
const FETCH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30 * 60);
/// How much of git's stderr an error keeps (its end).
const STDERR_TAIL: usize = 4096;
/// What a command that should print nothing (or a line) may print.
const QUIET: usize = 64 << 10;
/// Where the fallback of a bare commit fetches every branch and tag to.
const SCRATCH_REFS: &str = "refs/imgbuild/";

/// What a REF resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The commit, lowercase hex.
    pub commit: String,
    /// What named it.
    pub name: RefName,
}

/// The kind of name a commit was found under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefName {
    /// The repository's HEAD, and the branch it points to when it said.
    Head(Option<String>),
    /// `refs/heads/NAME`.
    Branch(String),
    /// `refs/tags/NAME`.
    Tag(String),
    /// Another full ref name (`refs/pull/1/head`).
    Other(String),
    /// A commit hash given as the REF: nothing was asked.
    Commit,
}

impl RefName {
    /// The full ref name to fetch, when there is one.
    fn full(&self) -> Option<String> {
        match self {
            RefName::Head(_) => Some("HEAD".into()),
            RefName::Branch(b) => Some(format!("refs/heads/{b}")),
            RefName::Tag(t) => Some(format!("refs/tags/{t}")),
            RefName::Other(r) => Some(r.clone()),
            RefName::Commit => None,
        }
    }
}

/// A commit checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkout {
    /// The directory holding the tree (with `.git` when kept).
    pub tree: PathBuf,
    /// The commit's committer time, seconds since the epoch.
    pub commit_time: i64,
}

impl Checkout {
    /// The tree, or its `subdir`, as a root to read it through: `subdir`
    /// is resolved inside the tree (a symlink on the way is followed as if
    /// the tree were `/`, never out of it).
    ///
    /// # Errors
    /// No such directory; the tree cannot be opened.
    pub fn root(&self, subdir: Option<&str>) -> Result<Root> {
        let root = Root::open(&self.tree).map_err(Error::Tree)?;
        let Some(d) = subdir else {
            return Ok(root);
        };
        let fd = root
            .open_dir(Path::new(d))
            .map_err(|source| Error::NoSubdir {
                subdir: d.to_string(),
                source,
            })?;
        Ok(Root::from_fd(fd, self.tree.join(d)))
    }

    /// The host path of the tree or its `subdir`, for callers that read it
    /// by path: `subdir` must be a directory reached without a symlink
    /// (a host path through one would leave the tree).
    ///
    /// # Errors
    /// No such directory, a symlink on the way, the tree cannot be opened.
    pub fn path(&self, subdir: Option<&str>) -> Result<PathBuf> {
        let Some(d) = subdir else {
            return Ok(self.tree.clone());
        };
        let root = Root::open(&self.tree).map_err(Error::Tree)?;
        let flags = rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::RDONLY;
        match root.open_strict(Path::new(d), flags) {
            Ok(_) => Ok(self.tree.join(d)),
            // Reached by following links (inside the tree), not without.
            Err(_) if root.open_dir(Path::new(d)).is_ok() => Err(Error::SubdirLink {
                subdir: d.to_string(),
            }),
            Err(source) => Err(Error::NoSubdir {
                subdir: d.to_string(),
                source,
            }),
        }
    }
}

/// Whether `s` is a full commit hash (SHA-1 or SHA-256, lowercase, as
/// BuildKit's `isCommitSHA` takes one).
pub fn is_commit(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Runs git with the settings of a fetch.
#[derive(Debug, Clone)]
pub struct Git {
    path: OsString,
    proxy: Option<String>,
    no_proxy: Option<String>,
    low_speed_secs: u64,
    allow_file: bool,
}

impl Git {
    /// git as `opts` say (its `PATH`, proxies and read timeout); `file://`
    /// repositories refused.
    pub fn new(opts: &Options) -> Git {
        Git {
            path: opts
                .path
                .clone()
                .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()),
            proxy: opts.proxy.clone(),
            no_proxy: opts.no_proxy.clone(),
            low_speed_secs: opts.read_timeout.as_secs().max(1),
            allow_file: false,
        }
    }

    /// The same, with `file://` repositories allowed or not.
    pub fn allow_file(mut self, allow: bool) -> Git {
        self.allow_file = allow;
        self
    }

    /// A git command with our environment and configuration, for `url`
    /// (refused when it is a `file://` one we do not allow).
    fn command(&self, url: &str) -> Result<Command> {
        let file = url
            .get(..7)
            .is_some_and(|p| p.eq_ignore_ascii_case("file://"));
        if file && !self.allow_file {
            return Err(Error::FileRefused { url: redact(url) });
        }
        let mut c = Command::new("git");
        c.env_clear()
            .env("PATH", &self.path)
            .env("HOME", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("LC_ALL", "C")
            .env(
                "GIT_SSH_COMMAND",
                "ssh -F /dev/null -o BatchMode=yes -o IdentitiesOnly=yes \
                 -o IdentityAgent=none -o PubkeyAuthentication=no \
                 -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
                 -o ConnectTimeout=30 -o ServerAliveInterval=15 -o ServerAliveCountMax=4",
            )
            .env("GIT_SSH_VARIANT", "ssh")
            .stdin(Stdio::null());
        if let Some(p) = &self.proxy {
            c.env("http_proxy", p).env("https_proxy", p);
        }
        if let Some(n) = &self.no_proxy {
            c.env("no_proxy", n);
        }
        let low_speed = format!("http.lowSpeedTime={}", self.low_speed_secs);
        let file_allow = if self.allow_file {
            "protocol.file.allow=always"
        } else {
            "protocol.file.allow=never"
        };
        for setting in [
            "protocol.allow=never",
            "protocol.https.allow=always",
            "protocol.http.allow=always",
            "protocol.ssh.allow=always",
            "protocol.git.allow=always",
            "protocol.ext.allow=never",
            file_allow,
            "credential.helper=",
            "core.hooksPath=/dev/null",
            "core.fsmonitor=false",
            "core.symlinks=true",
            "core.autocrlf=false",
            "submodule.recurse=false",
            "gc.auto=0",
            "maintenance.auto=false",
            "advice.detachedHead=false",
            "init.defaultBranch=main",
            "http.lowSpeedLimit=1",
            &low_speed,
        ] {
            c.arg("-c").arg(setting);
        }
        Ok(c)
    }

    /// Runs `c`, returning its stdout (up to `limit` bytes).
    /// Stops it (and its helpers, `git-remote-https` and ssh: git runs in
    /// its own process group) when it runs past its deadline.
    fn run(&self, what: &'static str, url: &str, mut c: Command, limit: usize) -> Result<Vec<u8>> {
        use std::os::unix::process::CommandExt;
        let deadline = if what == "ls-remote" {
            LS_REMOTE_DEADLINE
        } else {
            FETCH_DEADLINE
        };
        c.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = c.spawn().map_err(|source| Error::Spawn { source })?;
        let group = rustix::process::Pid::from_child(&child);
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let (done, finished) = std::sync::mpsc::channel::<()>();
        // stderr is drained beside stdout, or a chatty git would block on
        // it; the watchdog is joined before the child is reaped, so the
        // group it may kill is still ours.
        let (out, over, err, timed_out) = std::thread::scope(|s| {
            let watchdog = s.spawn(move || {
                let late = matches!(
                    finished.recv_timeout(deadline),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                );
                if late {
                    let _ =
                        rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
                }
                late
            });
            let err = s.spawn(move || stderr.map(read_tail).unwrap_or_default());
            let (out, over) = stdout.map(|o| read_bounded(o, limit)).unwrap_or_default();
            if over {
                let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
            }
            let err = err.join().unwrap_or_default();
            let _ = done.send(());
            (out, over, err, watchdog.join().unwrap_or(false))
        });
        let status = child.wait().map_err(|source| Error::Spawn { source })?;
        if timed_out {
            return Err(Error::TimedOut {
                what,
                url: redact(url),
                secs: deadline.as_secs(),
            });
        }
        if over {
            return Err(Error::TooMuch {
                url: redact(url),
                limit,
            });
        }
        if !status.success() {
            return Err(Error::Failed {
                what,
                url: redact(url),
                status,
                stderr: err,
            });
        }
        Ok(out)
    }

    /// The commit `reference` names in `url` (the repository's HEAD for
    /// `None`). A full commit hash is taken as it is, without asking; a
    /// name is looked up with `git ls-remote`, first as a branch, then as a
    /// tag (an annotated tag peeled to its commit), then as any ref ending
    /// in it (`pull/1/head`); `refs/…` names that ref exactly.
    ///
    /// # Errors
    /// git failing (the server unreachable, no such repository), no ref of
    /// that name.
    pub fn resolve(&self, url: &str, reference: Option<&str>) -> Result<Resolved> {
        if let Some(r) = reference.filter(|r| is_commit(r)) {
            return Ok(Resolved {
                commit: r.to_string(),
                name: RefName::Commit,
            });
        }
        let mut c = self.command(url)?;
        c.arg("ls-remote");
        if reference.is_none() {
            c.arg("--symref");
        }
        c.arg("--").arg(url).arg(reference.unwrap_or("HEAD"));
        // An annotated tag's commit is listed only when asked for by name.
        if let Some(r) = reference {
            c.arg(format!("{r}^{{}}"));
        }
        // Outside any repository: git would otherwise read the config of
        // the one imgbuild runs in (`url.insteadOf`, extra headers).
        c.env("GIT_DIR", "/dev/null");
        let out = self.run("ls-remote", url, c, LS_REMOTE_LIMIT)?;
        let text = String::from_utf8_lossy(&out);
        let (refs, head_symref) = parse_ls_remote(&text).ok_or_else(|| Error::Output {
            what: "ls-remote",
            url: redact(url),
            output: text.chars().take(200).collect(),
        })?;
        match reference {
            None => {
                let commit =
                    find(&refs, "HEAD").ok_or_else(|| Error::NoHead { url: redact(url) })?;
                let branch = head_symref
                    .and_then(|r| r.strip_prefix("refs/heads/"))
                    .map(str::to_string);
                Ok(Resolved {
                    commit,
                    name: RefName::Head(branch),
                })
            }
            Some(r) => choose(&refs, r).ok_or_else(|| Error::NoSuchRef {
                url: redact(url),
                reference: r.to_string(),
            }),
        }
    }

    /// Checks out `want` from `url` under `dir` (an empty directory the
    /// caller owns and removes): the tree in `dir/tree`, with its `.git`
    /// when `keep_git_dir` (a shallow repository: the one commit, HEAD
    /// detached at it, the branch or tag it was asked by pointing at it,
    /// `origin` the URL with its password redacted, no reflog, an index
    /// without stat data so it is the same for every checkout); otherwise
    /// the repository is kept apart in `dir/git`.
    ///
    /// The commit is fetched by its hash, one commit deep (see
    /// [`Git::fetch`] for servers that cannot).
    ///
    /// # Errors
    /// git failing, the commit not in the repository, the ref moved.
    pub fn checkout(
        &self,
        url: &str,
        want: &Resolved,
        dir: &Path,
        keep_git_dir: bool,
    ) -> Result<Checkout> {
        let tree = dir.join("tree");
        let git_dir = if keep_git_dir {
            tree.join(".git")
        } else {
            dir.join("git")
        };
        fs_err::create_dir_all(&tree).map_err(|source| Error::Dir {
            path: tree.clone(),
            source,
        })?;
        let mut init = self.command(url)?;
        init.args(["init", "-q", "--template="]);
        if !keep_git_dir {
            init.arg("--bare");
        }
        init.arg("--")
            .arg(if keep_git_dir { &tree } else { &git_dir });
        self.run("init", url, init, QUIET)?;
        let git = |args: &[&str]| -> Result<Command> {
            let mut c = self.command(url)?;
            c.arg("--git-dir")
                .arg(&git_dir)
                .arg("--work-tree")
                .arg(&tree);
            c.args(args);
            Ok(c)
        };
        let commit = want.commit.as_str();
        self.fetch(url, &git, want)?;
        let peeled = format!("{commit}^{{commit}}");
        let found = self
            .rev_parse(url, &git, &peeled)
            .map_err(|_| Error::NoSuchCommit {
                url: redact(url),
                commit: commit.to_string(),
            })?;
        let mut co = git(&["checkout", "-q", "-f", "--detach"])?;
        co.arg(&found);
        self.run("checkout", url, co, QUIET)?;
        let mut log = git(&["log", "-1", "--format=%ct"])?;
        log.arg(&found).arg("--");
        let out = self.run("log", url, log, 4096)?;
        let text = String::from_utf8_lossy(&out);
        let commit_time = text.trim().parse::<i64>().map_err(|_| Error::Output {
            what: "log",
            url: redact(url),
            output: text.chars().take(200).collect(),
        })?;
        let _ = fs_err::remove_file(git_dir.join("FETCH_HEAD"));
        if keep_git_dir {
            self.tidy_kept(url, &git, want, &found, dir)?;
        }
        Ok(Checkout { tree, commit_time })
    }

    /// Fetches `want.commit` into the repository `git` runs in: by its
    /// hash, one commit deep; then, for a server that takes no `want` of a
    /// bare hash (protocol v0 without `uploadpack.allowAnySHA1InWant`), by
    /// its ref name, checked to still be the commit; then, for one that
    /// cannot make shallow packs either (the dumb HTTP protocol), every
    /// branch and tag with their history. The first failure is the one
    /// reported (the later attempts only stand in for server features).
    fn fetch(
        &self,
        url: &str,
        git: &dyn Fn(&[&str]) -> Result<Command>,
        want: &Resolved,
    ) -> Result<()> {
        let commit = want.commit.as_str();
        let mut c = git(&["fetch", "-q", "--depth=1", "--no-tags", "--"])?;
        c.arg(url).arg(commit);
        let Err(first) = self.run("fetch", url, c, QUIET) else {
            return Ok(());
        };
        if let Some(name) = want.name.full() {
            let mut c = git(&["fetch", "-q", "--depth=1", "--no-tags", "--"])?;
            c.arg(url).arg(&name);
            if self.run("fetch", url, c, QUIET).is_ok() {
                let got = self.rev_parse(url, git, "FETCH_HEAD^{commit}")?;
                return if got == commit {
                    Ok(())
                } else {
                    Err(Error::Moved {
                        url: redact(url),
                        reference: name,
                        expected: commit.to_string(),
                        actual: got,
                    })
                };
            }
        }
        let mut c = git(&["fetch", "-q", "--no-tags", "--"])?;
        c.arg(url).args([
            format!("+refs/heads/*:{SCRATCH_REFS}heads/*"),
            format!("+refs/tags/*:{SCRATCH_REFS}tags/*"),
        ]);
        match self.run("fetch", url, c, QUIET) {
            Ok(_) => Ok(()),
            Err(_) => Err(first),
        }
    }

    /// What BuildKit leaves in a kept `.git`, made the same on every
    /// checkout: `origin`, the asked-for name, no reflog, no stat data.
    fn tidy_kept(
        &self,
        url: &str,
        git: &dyn Fn(&[&str]) -> Result<Command>,
        want: &Resolved,
        commit: &str,
        scratch: &Path,
    ) -> Result<()> {
        let mut c = git(&["remote", "add", "--", "origin"])?;
        c.arg(redact(url));
        self.run("remote add", url, c, QUIET)?;
        // The refs a fallback fetched every branch and tag to.
        let mut c = git(&["for-each-ref", "--format=delete %(refname)"])?;
        c.arg(SCRATCH_REFS);
        let deletes = self.run("for-each-ref", url, c, LS_REMOTE_LIMIT)?;
        if !deletes.is_empty() {
            let script = scratch.join("delete-refs");
            fs_err::write(&script, &deletes).map_err(|source| Error::Dir {
                path: script.clone(),
                source,
            })?;
            let input = fs_err::File::open(&script).map_err(|source| Error::Dir {
                path: script.clone(),
                source,
            })?;
            let mut c = git(&["update-ref", "--stdin"])?;
            c.stdin(Stdio::from(input.into_parts().0));
            self.run("update-ref", url, c, QUIET)?;
        }
        let local = match &want.name {
            RefName::Branch(b) | RefName::Head(Some(b)) => Some(format!("refs/heads/{b}")),
            RefName::Tag(t) => Some(format!("refs/tags/{t}")),
            RefName::Head(None) | RefName::Other(_) | RefName::Commit => None,
        };
        if let Some(name) = local {
            let mut c = git(&["update-ref", "--no-deref", "--"])?;
            c.arg(&name).arg(commit);
            self.run("update-ref", url, c, QUIET)?;
        }
        self.run(
            "reflog expire",
            url,
            git(&["reflog", "expire", "--all", "--expire=now"])?,
            QUIET,
        )?;
        // The emptied logs themselves (BuildKit keeps no reflog either).
        let logs = scratch.join("tree/.git/logs");
        if logs.exists() {
            fs_err::remove_dir_all(&logs).map_err(|source| Error::Dir {
                path: logs.clone(),
                source,
            })?;
        }
        // An index without stat data (inode, times of this checkout): the
        // same bytes for every checkout of the commit. git refreshes it on
        // the first `git status`.
        let mut c = git(&["read-tree"])?;
        c.arg(commit);
        self.run("read-tree", url, c, QUIET)?;
        Ok(())
    }

    fn rev_parse(
        &self,
        url: &str,
        git: &dyn Fn(&[&str]) -> Result<Command>,
        what: &str,
    ) -> Result<String> {
        let mut c = git(&["rev-parse", "-q", "--verify"])?;
        c.arg(what);
        let out = self.run("rev-parse", url, c, 4096)?;
        let s = String::from_utf8_lossy(&out).trim().to_string();
        if is_commit(&s) {
            Ok(s)
        } else {
            Err(Error::Output {
                what: "rev-parse",
                url: redact(url),
                output: s.chars().take(200).collect(),
            })
        }
    }
}

/// A repository's refs as `ls-remote` lists them: (commit, name).
type Refs = Vec<(String, String)>;

/// `ls-remote`'s lines as (commit, ref name), and the ref HEAD points to
/// when `--symref` printed it; `None` for a line that is neither.
fn parse_ls_remote(text: &str) -> Option<(Refs, Option<&str>)> {
    let mut refs = Vec::new();
    let mut head = None;
    for line in text.lines().filter(|l| !l.is_empty()) {
        let (left, name) = line.split_once('\t')?;
        if let Some(target) = left.strip_prefix("ref: ") {
            if name == "HEAD" {
                head = Some(target);
            }
            continue;
        }
        if !is_commit(left) {
            return None;
        }
        refs.push((left.to_string(), name.to_string()));
    }
    Some((refs, head))
}

fn find(refs: &[(String, String)], name: &str) -> Option<String> {
    refs.iter().find(|(_, n)| n == name).map(|(c, _)| c.clone())
}

/// The commit a name stands for among `refs`: exactly a `refs/…` name (or
/// `HEAD`), else a branch, a tag (peeled), any ref ending in `/NAME`.
fn choose(refs: &[(String, String)], r: &str) -> Option<Resolved> {
    let peeled = |name: &str| find(refs, &format!("{name}^{{}}")).or_else(|| find(refs, name));
    let named = |full: &str| {
        if let Some(b) = full.strip_prefix("refs/heads/") {
            RefName::Branch(b.to_string())
        } else if let Some(t) = full.strip_prefix("refs/tags/") {
            RefName::Tag(t.to_string())
        } else {
            RefName::Other(full.to_string())
        }
    };
    if r == "HEAD" {
        return find(refs, "HEAD").map(|commit| Resolved {
            commit,
            name: RefName::Head(None),
        });
    }
    if r.starts_with("refs/") {
        return peeled(r).map(|commit| Resolved {
            commit,
            name: named(r),
        });
    }
    if let Some(commit) = find(refs, &format!("refs/heads/{r}")) {
        return Some(Resolved {
            commit,
            name: RefName::Branch(r.to_string()),
        });
    }
    if let Some(commit) = peeled(&format!("refs/tags/{r}")) {
        return Some(Resolved {
            commit,
            name: RefName::Tag(r.to_string()),
        });
    }
    let suffix = format!("/{r}");
    let full = refs
        .iter()
        .map(|(_, n)| n)
        .find(|n| n.starts_with("refs/") && n.ends_with(&suffix))?;
    peeled(full).map(|commit| Resolved {
        commit,
        name: named(full),
    })
}

/// Reads `r` to its end, keeping at most `limit` bytes; `true` when there
/// was more (the rest is not read).
fn read_bounded(mut r: impl Read, limit: usize) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 64 << 10];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return (out, false),
            Ok(n) if out.len() + n > limit => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return (out, false),
        }
    }
}

/// Reads `r` to its end, keeping the last [`STDERR_TAIL`] bytes.
fn read_tail(mut r: impl Read) -> String {
    let mut keep: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8 << 10];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                keep.extend_from_slice(&buf[..n]);
                if keep.len() > STDERR_TAIL {
                    keep.drain(..keep.len() - STDERR_TAIL);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&keep).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";
    const C: &str = "3333333333333333333333333333333333333333";

    fn refs(lines: &[(&str, &str)]) -> Vec<(String, String)> {
        lines
            .iter()
            .map(|(c, n)| (c.to_string(), n.to_string()))
            .collect()
    }

    #[test]
    fn names_resolve_as_branches_then_peeled_tags_then_any_ref() {
        let r = refs(&[
            (A, "refs/heads/main"),
            (B, "refs/pull/7/head"),
            (A, "refs/tags/main"),
            (C, "refs/tags/v1"),
            (B, "refs/tags/v1^{}"),
        ]);
        let got = |name| choose(&r, name).map(|x| (x.commit, x.name));
        assert_eq!(
            got("main"),
            Some((A.into(), RefName::Branch("main".into())))
        );
        // An annotated tag: the commit it points to, not the tag object.
        assert_eq!(got("v1"), Some((B.into(), RefName::Tag("v1".into()))));
        assert_eq!(
            got("refs/tags/v1"),
            Some((B.into(), RefName::Tag("v1".into())))
        );
        assert_eq!(
            got("pull/7/head"),
            Some((B.into(), RefName::Other("refs/pull/7/head".into())))
        );
        assert_eq!(got("7/head"), got("pull/7/head"));
        assert_eq!(got("nope"), None);
        assert_eq!(got("ain"), None, "a tail match is by whole components");
    }

    #[test]
    fn an_annotated_tag_resolves_to_its_commit_with_real_git() {
        let t = tempfile::tempdir().unwrap();
        let work = t.path().join("w");
        let sh = |args: &[&str], dir: &Path| {
            let out = Command::new("git")
                .args([
                    "-c",
                    "user.name=t",
                    "-c",
                    "user.email=t@t",
                    "-c",
                    "init.defaultBranch=main",
                ])
                .args(args)
                .current_dir(dir)
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("HOME", t.path())
                .output()
                .unwrap();
            assert!(out.status.success(), "{args:?}: {out:?}");
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        };
        fs_err::create_dir_all(&work).unwrap();
        sh(&["init", "-q"], &work);
        fs_err::write(work.join("f"), "x").unwrap();
        sh(&["add", "f"], &work);
        sh(&["commit", "-q", "-m", "one"], &work);
        sh(&["tag", "-a", "-m", "tag", "v1"], &work);
        let commit = sh(&["rev-parse", "v1^{commit}"], &work);
        let tag = sh(&["rev-parse", "v1"], &work);
        assert_ne!(commit, tag);
        let git = Git::new(&Options::default()).allow_file(true);
        let url = format!("file://{}", work.display());
        let got = git.resolve(&url, Some("v1")).unwrap();
        assert_eq!(got.commit, commit);
        assert_eq!(got.name, RefName::Tag("v1".into()));
    }

    #[test]
    fn ls_remote_output_is_parsed_or_refused() {
        let text = format!("ref: refs/heads/dev\tHEAD\n{A}\tHEAD\n{A}\trefs/heads/dev\n");
        let (r, head) = parse_ls_remote(&text).unwrap();
        assert_eq!(head, Some("refs/heads/dev"));
        assert_eq!(find(&r, "HEAD").as_deref(), Some(A));
        assert!(parse_ls_remote("not a hash\trefs/heads/x\n").is_none());
        assert!(parse_ls_remote("garbage\n").is_none());
        assert_eq!(parse_ls_remote("").unwrap().0.len(), 0);
    }

    #[test]
    fn commits_are_full_lowercase_hashes() {
        assert!(is_commit(A));
        assert!(is_commit(&"ab".repeat(32)));
        assert!(!is_commit(&A[..39]));
        assert!(!is_commit(&A.to_uppercase().replace('1', "A")));
        assert!(!is_commit("main"));
    }

    #[test]
    fn output_is_bounded() {
        let (out, over) = read_bounded(&[7u8; 1000][..], 100);
        assert!(over);
        assert!(out.len() <= 100);
        let (out, over) = read_bounded(&b"abc"[..], 100);
        assert_eq!((out.as_slice(), over), (&b"abc"[..], false));
        let long = "x".repeat(10_000) + "the end";
        let t = read_tail(long.as_bytes());
        assert_eq!(t.len(), STDERR_TAIL);
        assert!(t.ends_with("the end"));
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("https://u:tok@h.example/x.git"),
            "https://u:xxxxx@h.example/x.git"
        );
        assert_eq!(redact("https://u@h/x.git"), "https://u@h/x.git");
        assert_eq!(redact("git@h:x.git"), "git@h:x.git");
        assert_eq!(redact("https://h/a@b:c"), "https://h/a@b:c");
    }

    #[test]
    fn file_urls_are_refused_unless_allowed() {
        let g = Git::new(&Options::default());
        assert!(matches!(
            g.command("file:///srv/x.git"),
            Err(Error::FileRefused { .. })
        ));
        assert!(matches!(
            g.command("FILE:///srv/x.git"),
            Err(Error::FileRefused { .. })
        ));
        assert!(
            g.clone()
                .allow_file(true)
                .command("file:///srv/x.git")
                .is_ok()
        );
        assert!(g.command("https://h/x.git").is_ok());
    }
}
