//! `imgbuild build`.

use std::io::IsTerminal;
use std::sync::Arc;

use anyhow::Context;

use super::definition::{self, Request};
use crate::builder::{self, BuildOptions};
use crate::cli::args::{BuildArgs, Cli, CompressionArg, FormatArg, ProgressMode};
use crate::cli::env::Env;
use crate::cli::exit::Failure;
use crate::cli::util::{absolute, now, open_store, out};
use crate::layer::Compression;
use crate::oci::archive::ArchiveFormat;
use crate::progress::{self, Sink};
use crate::reference::Reference;
use crate::store::atomic_write;

/// Runs a build.
pub fn run(cli: &Cli, env: &Env, a: &BuildArgs) -> Result<(), Failure> {
    let store = open_store(cli, env)?;
    // Bases are resolved (imported, pulled) before the build proper: under
    // the lock too, so a prune never sweeps what they bring in.
    let _lock = store.lock_shared()?;
    let say = (!matches!(a.progress, ProgressMode::Quiet | ProgressMode::Json)).then(|| {
        Box::new(|line: &str| {
            use std::io::Write;
            let _ = writeln!(std::io::stderr().lock(), "{line}");
        }) as builder::base::Say
    });
    let registry_opts = a.bases.registry(env.docker_config());
    let puller = a.bases.puller(registry_opts.clone(), say).map(Arc::new);
    let def = definition::load(&Request {
        input: &a.input,
        dockerfile: a.file.as_deref(),
        target: a.target.as_deref(),
        build_args: &a.build_args,
        env,
        run_checks: false,
        store: &store,
        puller: puller.as_deref(),
    })?;
    let graph = def.graph;
    let tags = a
        .tags
        .iter()
        .map(|t| Reference::parse(t).map_err(|e| Failure::Usage(e.into())))
        .collect::<Result<Vec<_>, _>>()?;
    let output = a.output.as_deref().map(absolute).transpose()?;
    if a.depfile.is_some() && output.is_none() && def.dockerfile && a.iidfile.is_none() {
        return Err(Failure::Usage(anyhow::anyhow!(
            "--depfile needs a file for its rule to make: give -o FILE (or --iidfile FILE)"
        )));
    }
    let side_outputs = [&a.iidfile, &a.depfile, &a.metadata_file]
        .into_iter()
        .flatten()
        .map(|p| absolute(p))
        .collect::<Result<Vec<_>, _>>()?;
    let sink = progress_sink(a);
    let store = import_caches(store, &a.cache_from, &registry_opts)?;
    let cache_to = a.cache_to.as_deref().map(cache_ref).transpose()?;
    let opts = BuildOptions {
        store,
        epoch: env_epoch(env)?.or(graph.settings.source_date_epoch),
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
        // A Dockerfile names no archive: like `docker build`, the image is
        // stored and tagged, and nothing is written (least of all into the
        // context). A spec's image without `output` goes to ./NAME.oci.tar.
        output_dir: if def.dockerfile {
            None
        } else {
            Some(absolute(std::path::Path::new("."))?)
        },
        side_outputs,
        progress: sink,
        jobs: a
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from)),
        dry_run: a.dry_run,
        network: a.network.run_network(),
        limits: a.limits.limits(),
        secrets: secrets(&a.secrets)?,
        sandbox: env.sandbox(),
        host: env.sandbox_host(),
        puller,
    };
    let result = builder::build(&graph, &opts).map_err(|e| match e {
        builder::Error::Invalid(d) => Failure::Diagnostics(d),
        other => Failure::Failed(other.into()),
    })?;
    if let Some(path) = &a.depfile {
        // The rule's target as make knows it: -o as written, when given.
        let targets: Vec<std::path::PathBuf> = match (&a.output, &a.iidfile) {
            (Some(o), _) => vec![o.clone()],
            (None, Some(iid)) if result.outputs.is_empty() => vec![iid.clone()],
            (None, _) => result.outputs.clone(),
        };
        atomic_write(path, depfile(&targets, &result.inputs).as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if a.dry_run {
        return dry_run_report(&result);
    }
    if !matches!(a.progress, ProgressMode::Quiet | ProgressMode::Json) {
        hint_no_archive(&result);
    }
    if a.push {
        push_tags(&opts.store, &result, &registry_opts)?;
    }
    if let Some(r) = &cache_to {
        let client = crate::registry::Client::new(r.domain(), &registry_opts)
            .with_notices(super::registry::notice_to_stderr);
        let ids: Vec<_> = result.images.iter().map(|i| i.id).collect();
        let n = crate::registry::cache::export(&opts.store, &client, r, &ids)
            .with_context(|| format!("exporting the build cache to {}", r.familiar()))?;
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr().lock(),
            "Exported {n} cache entries to {}",
            r.familiar()
        );
    }
    if let Some(path) = &a.iidfile {
        let ids: Vec<String> = result.images.iter().map(|i| i.id.to_string()).collect();
        atomic_write(path, ids.join("\n").as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &a.metadata_file {
        let text = serde_json::to_string_pretty(&metadata(&opts.store, &result)?)
            .map_err(anyhow::Error::from)?;
        atomic_write(path, text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// One line for each image left in the store only: how to get a file.
fn hint_no_archive(result: &builder::BuildResult) {
    use std::io::Write;
    for i in result.images.iter().filter(|i| i.archive.is_none()) {
        let name = i
            .tags
            .first()
            .map_or_else(|| i.id.short(), Reference::familiar);
        let _ = writeln!(
            std::io::stderr().lock(),
            "No archive written (the image is in the store): add -o FILE, or run `imgbuild export {name} -o FILE`"
        );
    }
}

/// `--push`: every tag of every built image, with push's lines on stderr
/// (stdout stays the build's).
fn push_tags(
    store: &crate::store::Store,
    result: &builder::BuildResult,
    opts: &crate::registry::Options,
) -> Result<(), Failure> {
    use std::io::Write;
    let say = |line: String| {
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    };
    let tags: Vec<(&Reference, &crate::digest::Digest)> = result
        .images
        .iter()
        .flat_map(|i| i.tags.iter().map(move |t| (t, &i.id)))
        .collect();
    if tags.is_empty() {
        return Err(Failure::Usage(anyhow::anyhow!(
            "--push: nothing to push; name the image with -t REGISTRY/NAME:TAG"
        )));
    }
    for (tag, id) in tags {
        let notice = super::registry::notice_to_stderr;
        super::registry::push_image(store, id, tag, opts, Some(&say), notice)?;
    }
    Ok(())
}

/// `registry:REF`, or buildx's `type=registry,ref=REF`.
fn cache_ref(spec: &str) -> Result<Reference, Failure> {
    let r = spec.strip_prefix("registry:").or_else(|| {
        let mut fields = spec.split(',');
        let mut is_registry = false;
        let mut r = None;
        for f in fields.by_ref() {
            match f.split_once('=') {
                Some(("type", "registry")) => is_registry = true,
                Some(("ref", v)) => r = Some(v),
                _ => {}
            }
        }
        r.filter(|_| is_registry)
    });
    let r = r.ok_or_else(|| {
        Failure::Usage(anyhow::anyhow!(
            "cache `{spec}`: expected registry:REF (or type=registry,ref=REF)"
        ))
    })?;
    Reference::parse(r).map_err(|e| Failure::Usage(e.into()))
}

/// Imports every `--cache-from`; a cache that cannot be read is a warning
/// (the build goes on without it), as with docker.
fn import_caches(
    store: crate::store::Store,
    specs: &[String],
    opts: &crate::registry::Options,
) -> Result<crate::store::Store, Failure> {
    use std::io::Write;
    let mut sources = Vec::new();
    for spec in specs {
        let r = cache_ref(spec)?;
        let client = crate::registry::Client::new(r.domain(), opts)
            .with_notices(super::registry::notice_to_stderr);
        match crate::registry::cache::import(&store, client, &r) {
            Ok((n, layers)) => {
                let _ = writeln!(
                    std::io::stderr().lock(),
                    "Imported {n} cache entries from {}",
                    r.familiar()
                );
                sources.push(Arc::new(layers));
            }
            Err(e) => {
                let _ = writeln!(
                    std::io::stderr().lock(),
                    "WARNING: cache {} not imported: {}",
                    r.familiar(),
                    crate::builder::error_chain(&e)
                );
            }
        }
    }
    Ok(if sources.is_empty() {
        store
    } else {
        store.with_source(Arc::new(crate::registry::cache::Sources(sources)))
    })
}

/// `--secret id=ID,src=FILE` (also `source=`; the id defaults to the file name).
fn secrets(
    specs: &[String],
) -> Result<std::collections::HashMap<String, std::path::PathBuf>, Failure> {
    let mut out = std::collections::HashMap::new();
    for spec in specs {
        let mut id = None;
        let mut src = None;
        for part in spec.split(',') {
            match part.split_once('=') {
                Some(("id", v)) => id = Some(v.to_string()),
                Some(("src" | "source", v)) => src = Some(absolute(std::path::Path::new(v))?),
                Some(("type", "file")) => {}
                _ => {
                    return Err(Failure::Usage(anyhow::anyhow!(
                        "--secret {spec}: expected id=ID,src=FILE"
                    )));
                }
            }
        }
        let id = id.or_else(|| {
            src.as_ref()
                .and_then(|s| s.file_name())
                .map(|n| n.to_string_lossy().into_owned())
        });
        match (id, src) {
            (Some(id), Some(src)) => {
                if !src.is_file() {
                    return Err(Failure::Usage(anyhow::anyhow!(
                        "--secret {spec}: {} is not a file",
                        src.display()
                    )));
                }
                out.insert(id, src);
            }
            _ => {
                return Err(Failure::Usage(anyhow::anyhow!(
                    "--secret {spec}: expected id=ID,src=FILE"
                )));
            }
        }
    }
    Ok(out)
}

/// The renderer `--progress` (and `-q`, `--dry-run`) asks for: `auto` is the
/// live view on a terminal and Docker-classic lines elsewhere.
fn progress_sink(a: &BuildArgs) -> Arc<dyn Sink> {
    if a.dry_run {
        // A dry run prints only its summary.
        return Arc::new(progress::Null);
    }
    let mode = if a.quiet {
        ProgressMode::Quiet
    } else {
        a.progress
    };
    let tty = std::io::stderr().is_terminal();
    match mode {
        ProgressMode::Quiet => Arc::new(progress::Quiet::new(Box::new(std::io::stdout()))),
        ProgressMode::Json => Arc::new(progress::Json::new(Box::new(std::io::stderr()))),
        ProgressMode::Tty => Arc::new(progress::Tty::new()),
        ProgressMode::Auto if tty => Arc::new(progress::Tty::new()),
        ProgressMode::Auto | ProgressMode::Plain => {
            Arc::new(progress::Plain::new(Box::new(std::io::stderr()), true))
        }
    }
}

/// `--dry-run`: what would rebuild, and the exit status make -q uses.
fn dry_run_report(result: &builder::BuildResult) -> Result<(), Failure> {
    let mut text = String::new();
    for s in result.steps.iter().filter(|s| !s.cached) {
        text.push_str(&format!(
            "would rebuild: step {} [{}] {} ({})\n",
            s.index,
            s.stage,
            s.text,
            s.reason.as_deref().unwrap_or("not cached")
        ));
    }
    if result.up_to_date {
        text.push_str("up to date\n");
        out(&text)
    } else {
        if result.steps.iter().all(|s| s.cached) {
            text.push_str(
                "every step is cached, but an output archive is missing or out of date\n",
            );
        }
        out(&text)?;
        Err(Failure::Quiet(1))
    }
}

/// The make-format dependency file: the archives depend on every input, and
/// every input is a target with no rule (as `gcc -MP` does), so deleting one
/// does not break make.
fn depfile(targets: &[std::path::PathBuf], inputs: &[std::path::PathBuf]) -> String {
    fn esc(p: &std::path::Path) -> String {
        let mut s = String::new();
        for c in p.to_string_lossy().chars() {
            match c {
                ' ' | '#' | '\\' => {
                    s.push('\\');
                    s.push(c);
                }
                '$' => s.push_str("$$"),
                c => s.push(c),
            }
        }
        s
    }
    let targets: Vec<String> = targets.iter().map(|p| esc(p)).collect();
    let mut out = format!("{}:", targets.join(" "));
    for i in inputs {
        out.push_str(" \\\n  ");
        out.push_str(&esc(i));
    }
    out.push('\n');
    for i in inputs {
        out.push_str(&format!("\n{}:\n", esc(i)));
    }
    out
}

/// `--metadata-file`: buildx's keys for one image, and everything per image and step.
fn metadata(
    store: &crate::store::Store,
    result: &builder::BuildResult,
) -> Result<serde_json::Value, Failure> {
    let mut images = Vec::new();
    for i in &result.images {
        let rec = store
            .image(&i.id)?
            .ok_or_else(|| crate::store::Error::NoSuchImage(i.id.to_string()))?;
        let m = crate::oci::Manifest::from_bytes(&store.read_blob(&rec.manifest)?)?;
        let cfg = crate::oci::ImageConfig::from_bytes(&store.read_blob(&m.config)?)?;
        let diff_ids = cfg.diff_ids()?;
        images.push(serde_json::json!({
            "name": i.name,
            "image.id": i.id.to_string(),
            "manifest.digest": i.archive_manifest.to_string(),
            "tags": i.tags.iter().map(|t| t.familiar()).collect::<Vec<_>>(),
            "archive": i.archive.as_ref().map(|p| p.display().to_string()),
            "layers": m.layers.iter().zip(diff_ids).map(|((d, size, mt), diff)| serde_json::json!({
                "digest": d.to_string(), "size": size, "mediaType": mt, "diffID": diff.to_string(),
            })).collect::<Vec<_>>(),
        }));
    }
    let mut v = serde_json::json!({
        "images": images,
        "steps": result.steps,
    });
    if let Some(first) = result.images.first() {
        v["containerimage.config.digest"] = serde_json::json!(first.id.to_string());
        v["containerimage.digest"] = serde_json::json!(first.archive_manifest.to_string());
        v["image.name"] = serde_json::json!(
            first
                .tags
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        );
    }
    Ok(v)
}

/// `SOURCE_DATE_EPOCH` from the environment, if set.
fn env_epoch(env: &Env) -> Result<Option<i64>, Failure> {
    match env.source_date_epoch() {
        Some(s) if s.trim().is_empty() => Ok(None),
        Some(s) => s
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|e| *e >= 0)
            .map(Some)
            .ok_or_else(|| {
                Failure::Usage(anyhow::anyhow!(
                    "SOURCE_DATE_EPOCH must be a non-negative integer (seconds since 1970), not `{s}`"
                ))
            }),
        None => Ok(None),
    }
}
