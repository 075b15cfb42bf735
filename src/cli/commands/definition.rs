//! Reading the build definition named on the command line: a TOML spec, or a
//! Dockerfile with its context and `.dockerignore`. Every problem found is
//! reported together, as diagnostics.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};

use crate::builder::base::StoreResolver;
use crate::cli::exit::Failure;
use crate::cli::util::absolute;
use crate::diag::{Diagnostic, SourceFile};
use crate::frontend::dockerfile;
use crate::graph::BuildGraph;
use crate::store::Store;

/// What to read.
pub struct Request<'a> {
    /// SPEC.toml, a context directory, or a Dockerfile.
    pub input: &'a Path,
    /// `-f`.
    pub dockerfile: Option<&'a Path>,
    /// `--target`.
    pub target: Option<&'a str>,
    /// `--build-arg` as given.
    pub build_args: &'a [String],
    /// The environment `--build-arg NAME` takes its value from.
    pub env: &'a crate::cli::env::Env,
    /// Run the pre-build checks (missing files…) here, as `check` does.
    pub run_checks: bool,
    /// The store, for base images a Dockerfile needs to know about.
    pub store: &'a Store,
    /// Pulls base images the store lacks.
    pub puller: Option<&'a crate::builder::base::Puller>,
    /// `--platform`: the platforms to build for (empty: the host's, and the
    /// outputs name none).
    pub platforms: &'a [crate::platform::Platform],
    /// `--build-context`.
    pub named_contexts: &'a crate::graph::NamedContexts,
}

/// What was read.
pub struct Definition {
    /// The lowered graph.
    pub graph: BuildGraph,
}

/// Reads and lowers the definition.
pub fn load(req: &Request<'_>) -> Result<Definition, Failure> {
    let is_spec = crate::cli::options::is_spec(req.input, req.dockerfile);
    let (graph, mut diags) = if is_spec {
        if !req.build_args.is_empty() {
            return Err(Failure::Usage(anyhow!(
                "--build-arg applies to Dockerfiles; a TOML spec sets values directly"
            )));
        }
        let file = read(req.input)?;
        let abs = absolute(req.input)?;
        let dir = abs.parent().unwrap_or(Path::new("/"));
        crate::frontend::spec::load_all(&file, dir, req.platforms)
    } else {
        load_dockerfile(req)?
    };
    let has_errors = diags.iter().any(Diagnostic::is_error);
    if let Some(g) = &graph
        && (has_errors || req.run_checks)
    {
        // `check` promises every problem at once, missing files included; a
        // build runs these checks itself before any work.
        diags.extend(crate::builder::check(
            g,
            if is_spec { req.target } else { None },
        ));
    }
    diags.sort_by_key(|d| {
        d.at.as_ref()
            .map(|a| (a.file.path().to_path_buf(), a.span.start))
    });
    match graph {
        Some(g) if !diags.iter().any(Diagnostic::is_error) => {
            if !diags.is_empty() {
                // Warnings only: show them, then carry on.
                let _ = crate::cli::exit::report(Err(Failure::Diagnostics(diags)));
            }
            Ok(Definition { graph: g })
        }
        _ => Err(Failure::Diagnostics(diags)),
    }
}

fn read(path: &Path) -> Result<std::sync::Arc<SourceFile>, Failure> {
    #[allow(clippy::disallowed_methods)] // the error names the path already
    let bytes = std::fs::read(path)
        .with_context(|| format!("reading {}", path.display()))
        .map_err(Failure::Usage)?;
    let text = match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    };
    Ok(SourceFile::new(path, text))
}

type Loaded = (Option<BuildGraph>, Vec<Diagnostic>);

fn load_dockerfile(req: &Request<'_>) -> Result<Loaded, Failure> {
    // `imgbuild build CONTEXT` reads CONTEXT/Dockerfile; `imgbuild check
    // path/Dockerfile` takes the file's directory as the context.
    let (context, dockerfile): (PathBuf, PathBuf) = match req.dockerfile {
        Some(f) => (req.input.to_path_buf(), f.to_path_buf()),
        None if req.input.is_dir() => (req.input.to_path_buf(), req.input.join("Dockerfile")),
        None => (
            req.input
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
            req.input.to_path_buf(),
        ),
    };
    if !context.is_dir() {
        return Err(Failure::Usage(anyhow!(
            "{}: the build context must be a directory",
            context.display()
        )));
    }
    // Shown in diagnostics as the user would write it: `Dockerfile`, not `./Dockerfile`.
    let dockerfile = dockerfile
        .strip_prefix(".")
        .map(Path::to_path_buf)
        .unwrap_or(dockerfile);
    let file = read(&dockerfile)?;
    let context = absolute(&context)?;
    let mut inputs = vec![absolute(&dockerfile)?];
    // `<Dockerfile>.dockerignore` beside the Dockerfile wins over the context's.
    let mut own = dockerfile.clone().into_os_string();
    own.push(".dockerignore");
    let own = PathBuf::from(own);
    let ignore = [own, context.join(".dockerignore")]
        .into_iter()
        .find(|p| p.is_file());
    let mut diags = Vec::new();
    let excludes = match &ignore {
        Some(p) => {
            inputs.push(absolute(p)?);
            match dockerfile::dockerignore::patterns(&read(p)?) {
                Ok(pats) => pats,
                Err(d) => {
                    diags.push(d);
                    Vec::new()
                }
            }
        }
        None => Vec::new(),
    };
    let build_args = req
        .build_args
        .iter()
        .filter_map(|a| match a.split_once('=') {
            Some((k, v)) => Some((k.to_string(), v.to_string())),
            // `--build-arg NAME` takes the value from the environment, as docker.
            None => req.env.var(a).map(|v| (a.clone(), v.to_string())),
        })
        .collect();
    let resolver = StoreResolver::new(req.store, req.puller);
    let host = crate::platform::host();
    let mut opts = dockerfile::lower::Options {
        context,
        inputs,
        excludes,
        build_args,
        target: req.target.map(str::to_string),
        platform: host.clone(),
        build_platform: host.clone(),
        resolver: &resolver,
        warn_unused_stages: req.platforms.is_empty(),
        named_contexts: req.named_contexts,
    };
    if !req.platforms.is_empty() {
        // One lowering per platform (TARGETARCH and friends differ), merged
        // into one graph; diagnostics said once.
        let mut graphs = Vec::new();
        for p in req.platforms {
            opts.platform = p.clone();
            match dockerfile::lower::parse_and_lower(&file, &opts) {
                Ok((graph, more)) => {
                    for d in more {
                        if !diags.iter().any(|e: &Diagnostic| {
                            e.message == d.message
                                && e.at.as_ref().map(|a| a.span) == d.at.as_ref().map(|a| a.span)
                        }) {
                            diags.push(d);
                        }
                    }
                    graphs.push((p.clone(), graph));
                }
                Err(d) => {
                    diags.push(d);
                    return Ok((None, diags));
                }
            }
        }
        let graph = crate::graph::merge(graphs);
        let targets: Vec<_> = graph.outputs.iter().map(|o| o.stage).collect();
        diags.extend(graph.unused_stages(&targets));
        return Ok((Some(graph), diags));
    }
    // Parsed and lowered node by node: the parse tree is never held whole.
    match dockerfile::lower::parse_and_lower(&file, &opts) {
        Ok((graph, more)) => {
            diags.extend(more);
            Ok((Some(graph), diags))
        }
        Err(d) => {
            diags.push(d);
            Ok((None, diags))
        }
    }
}
