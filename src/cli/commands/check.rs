//! `imgbuild check`: every problem, no build.

use super::definition::{self, Request};
use crate::cli::args::{CheckArgs, Cli};
use crate::cli::env::Env;
use crate::cli::exit::Failure;
use crate::cli::util::{open_store, out};

/// Validates a build definition.
pub fn run(cli: &Cli, env: &Env, a: &CheckArgs) -> Result<(), Failure> {
    let mut platforms: Vec<crate::platform::Platform> = Vec::new();
    for list in &a.platforms {
        for p in crate::platform::Platform::parse_list(list)
            .map_err(|e| Failure::Usage(anyhow::anyhow!("--platform: {e}")))?
        {
            if !platforms.contains(&p) {
                platforms.push(p);
            }
        }
    }
    let store = open_store(cli, env)?;
    // Bases are resolved (imported, pulled) before the build proper: under
    // the lock too, so a prune never sweeps what they bring in.
    let _lock = store.lock_shared()?;
    let graph = definition::load(&Request {
        input: &a.input,
        dockerfile: a.file.as_deref(),
        target: a.target.as_deref(),
        build_args: &a.build_args,
        env,
        run_checks: true,
        named_contexts: &crate::graph::NamedContexts::new(),
        store: &store,
        // Lowering needs a base's environment: a missing base is pulled,
        // as build would.
        puller: a
            .bases
            .puller(
                a.bases.registry(env.docker_config()),
                std::sync::Arc::new(crate::progress::Null),
            )
            .as_ref(),
        platforms: &platforms,
    })?
    .graph;
    let (stages, images) = (graph.stages.len(), graph.outputs.len());
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    out(&format!(
        "{}: OK ({stages} stage{}, {images} image{})\n",
        a.input.display(),
        plural(stages),
        plural(images)
    ))
}
