//! Issue 10: imgbuild against hostile Dockerfiles, base images, contexts,
//! archives and registries. One module per class of attack; each test uses
//! its own crafted inputs and fails on a builder without the defence.

mod confine;
mod content;
mod fidelity;
mod parsers;
mod raw;
mod registry;
mod sandbox;
mod store;

use std::path::Path;
use std::process::{Command, Output};

use crate::util::TestEnv;

/// Who runs imgbuild in a test: root, or uid 1000 (which `.ci/run` creates
/// and gives subordinate ids) with its own user namespace, with or without
/// those subordinate ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum As {
    Root,
    /// uid 1000, container ids 1+ mapped to its subordinate ids.
    User,
    /// uid 1000 with only its own id mapped (`IMGBUILD_NO_SUBIDS`).
    UserSingle,
}

impl As {
    pub const ALL: [As; 3] = [As::Root, As::User, As::UserSingle];

    /// `imgbuild ARGS` in `cwd` with `env`'s store, as this user. For a
    /// user, the whole test env is handed to them first (they own the
    /// store and the context, as they would).
    pub fn run(self, env: &TestEnv, cwd: &Path, args: &[&str]) -> Output {
        self.cmd(env, cwd, args).output().expect("run imgbuild")
    }

    /// The command [`As::run`] runs, to add to (environment variables).
    pub fn cmd(self, env: &TestEnv, cwd: &Path, args: &[&str]) -> Command {
        if self == As::Root {
            return env.cmd_in(cwd, args);
        }
        chown_tree(env.path(), 1000);
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid",
            "1000",
            "--regid",
            "1000",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_imgbuild"))
        .args(args)
        .current_dir(cwd)
        .env("IMGBUILD_STORE", env.store())
        .env("IMGBUILD_PULL", "never")
        .env("HOME", env.path())
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("XDG_CACHE_HOME");
        if self == As::UserSingle {
            c.env("IMGBUILD_NO_SUBIDS", "1");
        }
        c
    }
}

/// Hands a tree to `uid` (not through symlinks).
pub fn chown_tree(p: &Path, uid: u32) {
    let mut todo = vec![p.to_path_buf()];
    while let Some(p) = todo.pop() {
        let _ = std::os::unix::fs::lchown(&p, Some(uid), Some(uid));
        if p.is_dir() && !p.is_symlink() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                todo.extend(rd.flatten().map(|e| e.path()));
            }
        }
    }
}
