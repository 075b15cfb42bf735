//! Build errors: one variant per way a build fails, each naming the step
//! (`file:line:col`) or the file involved.

use std::path::PathBuf;

use crate::diag::Diagnostic;

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Problems in the build definition found before any work started.
    #[error("{} problem(s) in the build definition", .0.len())]
    Invalid(Vec<Diagnostic>),
    /// A base or `--from` image could not be resolved.
    #[error("{location}: {source}")]
    Base {
        /// Where it is named.
        location: String,
        /// Why.
        #[source]
        source: Box<super::base::BaseError>,
    },
    /// An `--ssh` that cannot be used.
    #[error(transparent)]
    Ssh(#[from] super::ssh::SshError),
    /// A COPY step failed.
    #[error("{location}: COPY failed")]
    Copy {
        /// The step.
        location: String,
        /// Why.
        #[source]
        source: CopyError,
    },
    /// An ADD of a URL could not fetch it.
    #[error("{location}: ADD failed")]
    Fetch {
        /// The step.
        location: String,
        /// Why (boxed: the other variants are small).
        #[source]
        source: Box<crate::fetch::http::Error>,
    },
    /// An ADD of a git repository could not resolve or check it out.
    #[error("{location}: ADD failed")]
    Git {
        /// The step.
        location: String,
        /// Why (boxed: the other variants are small).
        #[source]
        source: Box<crate::fetch::git::Error>,
    },
    /// A RUN step failed: the command, or the sandbox around it.
    #[error("{location}: `{step}`: {source}")]
    Run {
        /// The step (`file:line:col`).
        location: String,
        /// Its text.
        step: String,
        /// Why (boxed: the other variants are small).
        #[source]
        source: Box<RunError>,
    },
    /// Writing an output archive failed.
    #[error("writing {path}")]
    Output {
        /// The archive path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    /// An image document failed.
    #[error(transparent)]
    Oci(#[from] crate::oci::Error),
    /// A broken invariant: a bug in imgbuild.
    #[error("internal error: {what}")]
    Internal {
        /// What went wrong.
        what: String,
    },
}

/// Why a COPY failed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// A source could not be selected.
    #[error(transparent)]
    Select(#[from] super::sources::SelectError),
    /// A source file could not be read for hashing.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `--chown` names a user or group the image does not have.
    #[error("invalid owner `{owner}`: {reason}")]
    Owner {
        /// As written.
        owner: String,
        /// What was missing.
        reason: String,
    },
    /// Writing the layer failed.
    #[error(transparent)]
    Layer(#[from] crate::layer::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    /// Reading an image failed.
    #[error(transparent)]
    Oci(#[from] crate::oci::Error),
    /// The destination goes through something that is not a directory in
    /// the filesystem below (`COPY a /etc/passwd/`).
    #[error("cannot copy to `/{path}`: `/{file}` is not a directory in the image")]
    NotADirectory {
        /// The destination path that needs the directory.
        path: String,
        /// The non-directory in the way.
        file: String,
    },
    /// Materializing another stage's filesystem failed.
    #[error("preparing the source filesystem: {what}")]
    Snapshot {
        /// What failed.
        what: String,
    },
}

/// Result alias for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a RUN step failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The command exited non-zero.
    #[error("the command exited with code {code}{}", tail_text(.tail))]
    Failed {
        /// Its exit status.
        code: i32,
        /// The last lines of its output.
        tail: Vec<String>,
    },
    /// The command failed after filling the tmpfs its changes were kept
    /// in; the step is run again with them on disk.
    #[error("the command exited with code {code} after filling the memory its changes are kept in")]
    MemoryFull {
        /// Its exit status.
        code: i32,
    },
    /// The sandbox could not be set up or the command could not start.
    #[error("sandbox: {0}")]
    Sandbox(#[source] crate::exec::Error),
    /// A layer below could not be prepared.
    #[error("{what}")]
    Snapshot {
        /// What failed.
        what: String,
    },
    /// A `--mount` cannot be provided.
    #[error("{what}")]
    Mount {
        /// What is wrong.
        what: String,
    },
    /// The command's changes could not be read.
    #[error("capturing the changes")]
    Diff(#[source] crate::exec::diff::Error),
    /// A file of the sandbox could not be written.
    #[error("{path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The layer could not be written.
    #[error("writing the layer")]
    Layer(#[source] CopyError),
    /// The seccomp filter could not be made.
    #[error("sandbox")]
    Seccomp(#[source] crate::exec::seccomp::Error),
    /// The step's cgroups could not be made.
    #[error("sandbox")]
    Cgroup(#[source] crate::exec::cgroup::Error),
    /// The build's network could not be set up.
    #[error("sandbox network (`--network host` runs RUN on the host's network instead)")]
    Network(#[source] crate::exec::network::Error),
}

fn tail_text(tail: &[String]) -> String {
    if tail.is_empty() {
        return String::new();
    }
    let mut s = String::from("; its last output:");
    for l in tail {
        s.push_str("\n  ");
        s.push_str(l);
    }
    s
}

/// An error and its sources, `: `-separated, for messages that end up as
/// plain text (a string inside another error).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
