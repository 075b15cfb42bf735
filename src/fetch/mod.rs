//! Remote sources: what ADD fetches from outside the build. `http`
//! downloads one URL into the store as it streams in (with the store's
//! saved validators, `store::validators`); `git` resolves a ref to a
//! commit and checks a commit out, with the system `git`. Knows nothing of
//! steps, layers or keys; the builder's `step::fetch` (and the CLI's git
//! context) decides what to ask and what the answer means for the cache.

pub mod git;
pub mod http;

use std::ffi::OsString;
use std::time::Duration;

/// How fetches connect, as the user chose (the CLI reads the proxy
/// variables; nothing here reads the environment).
#[derive(Debug, Clone)]
pub struct Options {
    /// A proxy for every request (`http://host:port`, credentials allowed),
    /// from `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY`; `None`: direct.
    pub proxy: Option<String>,
    /// Hosts reached directly despite the proxy (`NO_PROXY` syntax:
    /// comma-separated names, `.suffix`, `*`).
    pub no_proxy: Option<String>,
    /// Time allowed to connect.
    pub connect_timeout: Duration,
    /// Time allowed between two reads of an answer (a stalled server).
    pub read_timeout: Duration,
    /// Redirects followed before giving up.
    pub max_redirects: u32,
    /// Where `git` (and the helpers it runs: `git-remote-https`, `ssh`)
    /// is looked up, in `PATH` syntax; `None`: `/usr/local/bin:/usr/bin:/bin`.
    pub path: Option<OsString>,
    /// Whether ADD may name a `file://` git repository: it reads this
    /// machine's files outside the context, so only tests allow it
    /// (`IMGBUILD_GIT_ALLOW_FILE`).
    pub git_file: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            proxy: None,
            no_proxy: None,
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            max_redirects: 10,
            path: None,
            git_file: false,
        }
    }
}
