//! The process environment, read once at the edge.
//!
//! [`Env::read`] takes one snapshot of the environment variables (and the
//! working directory and CPU count) when imgbuild starts; every command gets
//! it, [`super::options`] turns it into plain values, and those go down in
//! options structs. Nothing outside `cli`
//! reads the environment: the library's `SandboxMode`, `exec::HostOptions`
//! and `registry::Options` carry what used to be looked up on the spot.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use crate::builder::SandboxMode;

/// A snapshot of the environment imgbuild runs in.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: HashMap<OsString, OsString>,
    /// The working directory (`None` when it cannot be known: deleted).
    pub cwd: Option<PathBuf>,
    /// What `std::thread::available_parallelism` says (the default `-j`).
    pub cpus: usize,
    /// Whether stderr is a terminal (`--progress=auto` picks the live view).
    pub stderr_is_terminal: bool,
}

impl Env {
    /// The environment of this process.
    pub fn read() -> Env {
        use std::io::IsTerminal;
        Env {
            vars: std::env::vars_os().collect(),
            cwd: std::env::current_dir().ok(),
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            stderr_is_terminal: std::io::stderr().is_terminal(),
        }
    }

    /// An environment of exactly these variables (tests), in `/` with one
    /// CPU and no terminal.
    #[cfg(test)]
    pub fn from_vars<K: Into<OsString>, V: Into<OsString>>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Env {
        Env {
            vars: vars
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            cwd: Some(PathBuf::from("/")),
            cpus: 1,
            stderr_is_terminal: false,
        }
    }

    /// The variables, to change (tests).
    #[cfg(test)]
    pub fn vars_mut(&mut self) -> &mut HashMap<OsString, OsString> {
        &mut self.vars
    }

    /// A variable's raw value.
    pub fn var_os(&self, name: impl AsRef<OsStr>) -> Option<&OsStr> {
        self.vars.get(name.as_ref()).map(OsString::as_os_str)
    }

    /// A variable's value when it is set and valid UTF-8 (as
    /// `std::env::var` gives it): `--build-arg K` and `run -e K` read it.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.var_os(name).and_then(OsStr::to_str)
    }

    /// `IMGBUILD_SANDBOX` (`memory`, `disk`, `copy`; anything else is
    /// `memory`): for users on small-memory machines, and for testing the
    /// fallbacks.
    pub fn sandbox(&self) -> SandboxMode {
        match self.var("IMGBUILD_SANDBOX") {
            Some("disk") => SandboxMode::Disk,
            Some("copy") => SandboxMode::Copy,
            _ => SandboxMode::Memory,
        }
    }

    /// What the sandbox takes from here: `PATH` (where `newuidmap`,
    /// `newgidmap` and `slirp4netns` are looked up; `/usr/bin:/bin` when
    /// unset), `IMGBUILD_NO_SUBIDS` (set: never use subordinate ids) and
    /// `IMGBUILD_RUN_MEMORY` (the size of a memory upper, tmpfs syntax: `2g`,
    /// `25%`; default `50%`).
    pub fn sandbox_host(&self) -> crate::exec::HostOptions {
        let defaults = crate::exec::HostOptions::default();
        crate::exec::HostOptions {
            path: self
                .var_os("PATH")
                .map_or(defaults.path, OsStr::to_os_string),
            subids: self.var_os("IMGBUILD_NO_SUBIDS").is_none(),
            memory_upper: self
                .var("IMGBUILD_RUN_MEMORY")
                .filter(|s| !s.is_empty())
                .map_or(defaults.memory_upper, str::to_string),
            binfmt_misc: self.binfmt_misc(),
        }
    }

    /// The binfmt_misc directory the platform check reads:
    /// `IMGBUILD_BINFMT_MISC` when set and not empty (a test seam: tests
    /// point it at fabricated entries), else `/proc/sys/fs/binfmt_misc`.
    pub fn binfmt_misc(&self) -> PathBuf {
        self.var_os("IMGBUILD_BINFMT_MISC")
            .filter(|d| !d.is_empty())
            .map_or_else(
                || PathBuf::from(crate::exec::binfmt::DEFAULT_DIR),
                PathBuf::from,
            )
    }

    /// The docker CLI's config file: `$DOCKER_CONFIG/config.json`, else
    /// `~/.docker/config.json`; `None` without either variable.
    pub fn docker_config(&self) -> Option<PathBuf> {
        if let Some(d) = self.var_os("DOCKER_CONFIG") {
            return Some(PathBuf::from(d).join("config.json"));
        }
        self.var_os("HOME")
            .map(|h| PathBuf::from(h).join(".docker/config.json"))
    }

    /// `SOURCE_DATE_EPOCH` as given (unset or not UTF-8: `None`); the build
    /// options validate it.
    pub fn source_date_epoch(&self) -> Option<&str> {
        self.var("SOURCE_DATE_EPOCH")
    }

    /// The store when neither `--store` nor `IMGBUILD_STORE` names one:
    /// `$XDG_CACHE_HOME/imgbuild`, else `~/.cache/imgbuild` (empty values
    /// count as unset).
    pub fn default_store(&self) -> Option<PathBuf> {
        if let Some(x) = self.var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
            return Some(PathBuf::from(x).join("imgbuild"));
        }
        self.var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|h| PathBuf::from(h).join(".cache/imgbuild"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_mode() {
        assert_eq!(Env::default().sandbox(), SandboxMode::Memory);
        let e = |v: &str| Env::from_vars([("IMGBUILD_SANDBOX", v)]).sandbox();
        assert_eq!(e("disk"), SandboxMode::Disk);
        assert_eq!(e("copy"), SandboxMode::Copy);
        assert_eq!(e("memory"), SandboxMode::Memory);
        assert_eq!(e("bogus"), SandboxMode::Memory);
    }

    #[test]
    fn sandbox_host() {
        let h = Env::default().sandbox_host();
        assert_eq!(h.path, "/usr/bin:/bin");
        assert!(h.subids);
        assert_eq!(h.memory_upper, "50%");
        let h = Env::from_vars([
            ("PATH", "/opt/bin"),
            ("IMGBUILD_NO_SUBIDS", ""),
            ("IMGBUILD_RUN_MEMORY", "1m"),
        ])
        .sandbox_host();
        assert_eq!(h.path, "/opt/bin");
        assert!(!h.subids, "set, even empty, turns subordinate ids off");
        assert_eq!(h.memory_upper, "1m");
        let h = Env::from_vars([("IMGBUILD_RUN_MEMORY", "")]).sandbox_host();
        assert_eq!(h.memory_upper, "50%");
    }

    #[test]
    fn docker_config() {
        assert_eq!(Env::default().docker_config(), None);
        let e = Env::from_vars([("HOME", "/home/u")]);
        assert_eq!(
            e.docker_config(),
            Some(PathBuf::from("/home/u/.docker/config.json"))
        );
        let e = Env::from_vars([("HOME", "/home/u"), ("DOCKER_CONFIG", "/etc/d")]);
        assert_eq!(e.docker_config(), Some(PathBuf::from("/etc/d/config.json")));
    }

    #[test]
    fn binfmt_misc() {
        let d = Env::default().binfmt_misc();
        assert_eq!(d, PathBuf::from("/proc/sys/fs/binfmt_misc"));
        let e = Env::from_vars([("IMGBUILD_BINFMT_MISC", "")]);
        assert_eq!(e.binfmt_misc(), d);
        let e = Env::from_vars([("IMGBUILD_BINFMT_MISC", "/tmp/b")]);
        assert_eq!(e.binfmt_misc(), PathBuf::from("/tmp/b"));
    }

    #[test]
    fn default_store() {
        assert_eq!(Env::default().default_store(), None);
        let e = Env::from_vars([("HOME", "/h"), ("XDG_CACHE_HOME", "")]);
        assert_eq!(e.default_store(), Some(PathBuf::from("/h/.cache/imgbuild")));
        let e = Env::from_vars([("HOME", "/h"), ("XDG_CACHE_HOME", "/x")]);
        assert_eq!(e.default_store(), Some(PathBuf::from("/x/imgbuild")));
        assert_eq!(Env::from_vars([("HOME", "")]).default_store(), None);
    }

    #[test]
    fn var_is_utf8_only() {
        use std::os::unix::ffi::OsStringExt;
        let e = Env::from_vars([("A", OsString::from_vec(vec![0xff]))]);
        assert!(e.var_os("A").is_some());
        assert_eq!(e.var("A"), None);
    }
}
