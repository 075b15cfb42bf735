//! `imgbuild build`.

use std::io::IsTerminal;
use std::sync::Arc;

use anyhow::Context;

use super::definition::{self, Request};
use crate::build::{self, BuildOptions};
use crate::cli::args::{BuildArgs, Cli, CompressionArg, FormatArg, ProgressMode};
use crate::cli::exit::Failure;
use crate::cli::util::{absolute, env_epoch, now, open_store};
use crate::layer::Compression;
use crate::oci::archive::ArchiveFormat;
use crate::progress::{self, Sink};
use crate::reference::Reference;
use crate::store::atomic_write;

/// Runs a build.
pub fn run(cli: &Cli, a: &BuildArgs) -> Result<(), Failure> {
    let store = open_store(cli)?;
    let def = definition::load(&Request {
        input: &a.input,
        dockerfile: a.file.as_deref(),
        target: a.target.as_deref(),
        build_args: &a.build_args,
        run_checks: false,
        store: &store,
    })?;
    let graph = def.graph;
    let tags = a
        .tags
        .iter()
        .map(|t| Reference::parse(t).map_err(|e| Failure::Usage(e.into())))
        .collect::<Result<Vec<_>, _>>()?;
    let output = match (&a.output, def.dockerfile) {
        (Some(o), _) => Some(absolute(o)?),
        // A Dockerfile names no output: ./<repository>.oci.tar after the first
        // tag, else ./image.oci.tar.
        (None, true) => {
            let name = tags
                .first()
                .and_then(|t| t.path().rsplit('/').next().map(str::to_string))
                .unwrap_or_else(|| "image".to_string());
            Some(absolute(std::path::Path::new(&format!("{name}.oci.tar")))?)
        }
        (None, false) => None,
    };
    let mode = if a.quiet {
        ProgressMode::Quiet
    } else {
        a.progress
    };
    let sink: Arc<dyn Sink> = match mode {
        ProgressMode::Quiet => Arc::new(progress::Quiet::new(Box::new(std::io::stdout()))),
        ProgressMode::Json => Arc::new(progress::Json::new(Box::new(std::io::stderr()))),
        ProgressMode::Auto | ProgressMode::Tty | ProgressMode::Plain => {
            let show_reasons = mode == ProgressMode::Plain || !std::io::stderr().is_terminal();
            Arc::new(progress::Plain::new(
                Box::new(std::io::stderr()),
                show_reasons,
            ))
        }
    };
    let opts = BuildOptions {
        store,
        epoch: env_epoch()?.or(graph.settings.source_date_epoch),
        now: now(),
        no_cache: a.no_cache,
        // A Dockerfile's --target was applied when lowering.
        target: if def.dockerfile {
            None
        } else {
            a.target.clone()
        },
        tags,
        output,
        format: a.format.map(|f| match f {
            FormatArg::Oci => ArchiveFormat::Oci,
            FormatArg::Docker => ArchiveFormat::Docker,
        }),
        compression: match a.compression {
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::Zstd => Compression::Zstd,
            CompressionArg::None => Compression::None,
        },
        output_dir: absolute(std::path::Path::new("."))?,
        progress: sink,
        jobs: a
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from)),
    };
    let result = build::build(&graph, &opts).map_err(|e| match e {
        build::Error::Invalid(d) => Failure::Diagnostics(d),
        other => Failure::Failed(other.into()),
    })?;
    if let Some(path) = &a.iidfile {
        let ids: Vec<String> = result.images.iter().map(|i| i.id.to_string()).collect();
        atomic_write(path, ids.join("\n").as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
