//! `imgbuild check`: every problem, no build.

use super::load_definition;
use crate::cli::args::CheckArgs;
use crate::cli::exit::Failure;
use crate::cli::util::out;

/// Validates a build definition.
pub fn run(a: &CheckArgs) -> Result<(), Failure> {
    let graph = load_definition(&a.input, a.file.as_deref(), a.target.as_deref(), true)?;
    let (stages, images) = (graph.stages.len(), graph.outputs.len());
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    out(&format!(
        "{}: OK ({stages} stage{}, {images} image{})\n",
        a.input.display(),
        plural(stages),
        plural(images)
    ))
}
