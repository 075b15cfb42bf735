//! Step kinds. Each kind implements [`Step`], in the spirit of BuildKit's
//! `Op` (`solver/types.go`): [`Step::cache_map`] says what the step reads
//! besides its parent (its definition key is computed over that, and,
//! where the step has one, a content key over its dependencies' results, as
//! BuildKit's `ComputeDigestFunc` does for `COPY --from`); the
//! [`Exec`] it returns makes the step's result against the filesystem
//! [`Below`] it. The scheduler walks the graph, asks the cache by either
//! key, runs what missed and commits; it knows no step kind.
//!
//! A new kind is a module here, a variant of [`crate::graph::StepKind`]
//! (with its key and rendering), one arm in [`of`], and the frontends that
//! lower to it.

mod config;
mod copy;
mod fetch;
mod run;

use super::cx::{Cx, Labelled};
use super::scheduler::Below;
use super::{Result, config::StageFlags};
use crate::graph::{StepId, StepKind};
use crate::layer::Entry;
use crate::oci::{ImageConfig, LayerDescriptor};

/// One step of the graph, as the scheduler sees it.
pub(super) trait Step {
    /// What the step reads besides its parent, and how it will execute.
    /// `workdir` is the working directory the step runs in (relative
    /// sources and destinations resolve in it).
    ///
    /// # Errors
    /// An input that cannot be read (a context source, an image to resolve).
    fn cache_map<'s>(&'s self, cx: &'s Cx<'_>, workdir: &str) -> Result<CacheMap<'s>>;

    /// What the step changes in the image config when it commits, and in
    /// the stage's flags (also on a cache hit, when `config` is `None`).
    fn configure(&self, _config: Option<&mut ImageConfig>, _flags: &mut StageFlags) {}

    /// The working directory the steps after this one run in, when this
    /// step sets it.
    fn workdir(&self) -> Option<&str> {
        None
    }
}

/// What a step reads, for its keys, and how it executes.
pub(super) struct CacheMap<'s> {
    /// Labelled digests its definition key covers, besides the parent's key
    /// and the step itself.
    pub inputs: Labelled,
    /// The context files it read, by path, to explain the next miss.
    pub files: Labelled,
    /// The inputs of a content key: the same as `inputs` with each
    /// dependency's definition key replaced by a digest of its result.
    /// `None`: the step has no content key (or a dependency has no result
    /// yet, in a dry run).
    pub content: Option<Labelled>,
    /// Makes the step's result.
    pub exec: Exec<'s>,
}

/// Executes a step that missed the cache.
pub(super) type Exec<'s> = Box<dyn FnOnce(&mut Below<'_, '_>) -> Result<Output> + 's>;

/// What an executed step produced.
pub(super) enum Output {
    /// Nothing but its config change.
    Config,
    /// The entries of one new layer, which the scheduler writes on the pool
    /// while later steps go on.
    Entries {
        /// The layer's entries, normalized.
        entries: Vec<Entry>,
        /// What the entries need until the layer is written (temporary
        /// files they read from), dropped then.
        guard: Option<Box<dyn Send>>,
    },
    /// A layer already in the store (whose entries nobody listed).
    Layer(LayerDescriptor),
}

/// The implementation of step `id`.
pub(super) fn of<'g>(cx: &Cx<'g>, id: StepId) -> Box<dyn Step + 'g> {
    let step = cx.graph.step(id);
    match &step.kind {
        StepKind::Config(change) => Box::new(config::Config { change }),
        StepKind::Copy(c) => Box::new(copy::Copy { id, step, c }),
        StepKind::Run(r) => Box::new(run::Run { id, step, r }),
        StepKind::Fetch(f) => Box::new(fetch::Fetch { step, f }),
    }
}
