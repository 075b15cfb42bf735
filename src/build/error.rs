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
        source: super::base::BaseError,
    },
    /// A COPY step failed.
    #[error("{location}: COPY failed")]
    Copy {
        /// The step.
        location: String,
        /// Why.
        #[source]
        source: CopyError,
    },
    /// RUN steps need the sandbox, which this build of imgbuild does not have yet.
    #[error(
        "{location}: `{step}`: RUN is not supported yet (the sandbox lands with RUN support); nothing was built past this step"
    )]
    RunUnsupported {
        /// The step.
        location: String,
        /// Its text.
        step: String,
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
    /// Materializing another stage's filesystem failed.
    #[error("preparing the source filesystem: {what}")]
    Snapshot {
        /// What failed.
        what: String,
    },
}

/// Result alias for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;
