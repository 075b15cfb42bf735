//! Remote sources: what ADD fetches from outside the build, saved in the
//! store as it streams in. `http` downloads one URL (with the store's
//! saved validators, `store::validators`); a git fetcher sits beside it.
//! Knows nothing of steps, layers or keys; the builder's
//! `step::fetch` decides what to ask and what the answer means for the
//! cache.

pub mod http;

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
}

impl Default for Options {
    fn default() -> Self {
        Options {
            proxy: None,
            no_proxy: None,
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            max_redirects: 10,
        }
    }
}
