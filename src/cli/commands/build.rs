//! `imgbuild build`: converts the flags ([`HiBuild`]), then orchestrates:
//! open the store, load the definition, import caches, build, write the
//! side outputs, push, export the cache, print.

use std::sync::Arc;

use anyhow::Context;

use super::definition::{self, Request};
use crate::builder::{self, BuildOptions};
use crate::cli::args::{BuildArgs, Cli, PullPolicy};
use crate::cli::env::Env;
use crate::cli::exit::Failure;
use crate::cli::options::{CacheBackend, CacheTo, HiBuild, Progress};
use crate::cli::util::{now, open_store, out};
use crate::progress::{self, Sink};
use crate::reference::Reference;
use crate::store::atomic_write;

/// Runs a build.
pub fn run(cli: &Cli, env: &Env, a: &BuildArgs) -> Result<(), Failure> {
    let mut hi = HiBuild::from_low_args(a, env, &|p| p.is_file()).map_err(|e| e.into_failure())?;
    let store = open_store(cli, env)?;
    // `-` and `-f -`: standard input, made into files first; a git
    // context checked out.
    let fetch = fetch_options(env);
    let git = crate::cli::context::GitOptions {
        fetch: &fetch,
        keep_git_dir: keep_git_dir(&hi.build_args),
    };
    (hi.input, hi.file) = crate::cli::context::prepare(
        &store,
        &hi.input,
        hi.file.as_deref(),
        std::io::stdin(),
        &git,
    )?;
    // Bases are resolved (imported, pulled) before the build proper: under
    // the lock too, so a prune never sweeps what they bring in.
    let _lock = store.lock_shared()?;
    // One event channel: the build's view, with pull lines on stderr
    // unless the view is machine-read or silent.
    let mut sink = progress_sink(hi.progress);
    if hi.chatty {
        sink = Arc::new(progress::PullLines::new(sink, Box::new(std::io::stderr())));
    }
    let puller = (hi.pull != PullPolicy::Never).then(|| {
        Arc::new(builder::base::Puller::new(
            hi.registry.clone(),
            hi.pull == PullPolicy::Always,
            Arc::clone(&sink),
        ))
    });
    let def = definition::load(&Request {
        input: &hi.input,
        dockerfile: hi.file.as_deref(),
        target: hi.target.as_deref(),
        build_args: &hi.build_args,
        env,
        run_checks: false,
        store: &store,
        puller: puller.as_deref(),
        platforms: &hi.platforms,
        named_contexts: &hi.named_contexts,
    })?;
    let graph = def.graph;
    let store = import_caches(store, &hi);
    let opts = BuildOptions {
        store,
        epoch: hi.epoch.or(graph.settings.source_date_epoch),
        now: now(),
        no_cache: hi.no_cache,
        target: hi.builder_target(),
        tags: hi.tags.clone(),
        output: hi.output.clone(),
        format: hi.format,
        compression: hi.compression,
        // A Dockerfile names no archive: like `docker build`, the image is
        // stored and tagged, and nothing is written (least of all into the
        // context). A spec's image without `output` goes to ./NAME.oci.tar.
        output_dir: hi.output_dir.clone(),
        side_outputs: hi.side_outputs.clone(),
        progress: sink,
        jobs: hi.jobs,
        dry_run: hi.dry_run,
        network: hi.network,
        limits: hi.limits,
        secrets: hi.secrets.clone(),
        ssh: hi.ssh.clone(),
        sandbox: hi.sandbox,
        host: hi.host.clone(),
        puller,
        run: hi.run.clone(),
        labels: hi.labels.clone(),
        annotations: hi.annotations.clone(),
        force_compression: hi.force_compression,
        no_cache_stages: hi.no_cache_stages.clone(),
        inline_cache: hi
            .cache_to
            .iter()
            .any(|c| c.backend == CacheBackend::Inline),
        fetch,
    };
    let result = builder::build(&graph, &opts).map_err(|e| match e {
        builder::Error::Invalid(d) => Failure::Diagnostics(d),
        // A bad --ssh path or key is the caller's to fix, as a bad flag is.
        builder::Error::Ssh(e) if e.is_usage() => Failure::Usage(e.into()),
        other => Failure::Failed(other.into()),
    })?;
    if let Some(path) = &hi.depfile {
        let targets = hi.depfile_targets(&result.outputs);
        atomic_write(path, depfile(&targets, &result.inputs).as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if hi.dry_run {
        return dry_run_report(&result);
    }
    super::outputs::write_all(
        &opts.store,
        &result,
        &hi.exports,
        opts.epoch.unwrap_or(0).max(0) as u64,
        &*opts.progress,
    )?;
    if hi.chatty && hi.exports.is_empty() {
        hint_no_archive(&result);
    }
    if hi.push {
        push_tags(&opts.store, &result, &hi.registry)?;
    }
    for c in &hi.cache_to {
        export_cache(&opts.store, &result, c, &hi.registry)?;
    }
    if hi.progress == Progress::Quiet {
        // `-q`: the full image IDs, as `docker build -q` prints them.
        let ids: String = result
            .images
            .iter()
            .map(|i| format!("{}\n", i.id))
            .collect();
        out(&ids)?;
    }
    if let Some(path) = &hi.iidfile {
        let ids: Vec<String> = result.images.iter().map(|i| i.id.to_string()).collect();
        atomic_write(path, ids.join("\n").as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &hi.metadata_file {
        let text = serde_json::to_string_pretty(&metadata(&opts.store, &result)?)
            .map_err(anyhow::Error::from)?;
        atomic_write(path, text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// `--build-arg BUILDKIT_CONTEXT_KEEP_GIT_DIR=1` (or `true`): a git
/// context keeps its `.git`, as BuildKit's Dockerfile frontend has it.
fn keep_git_dir(build_args: &[String]) -> bool {
    build_args
        .iter()
        .rev()
        .find_map(|a| a.strip_prefix("BUILDKIT_CONTEXT_KEEP_GIT_DIR="))
        .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "t"))
}

/// How ADD reaches URLs: the proxy the usual variables name (the first
/// set of `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, each also in lower
/// case; one proxy for both schemes) and `NO_PROXY`; `PATH` for git, and
/// `IMGBUILD_GIT_ALLOW_FILE` (a test seam: ADD may name `file://`
/// repositories).
fn fetch_options(env: &Env) -> crate::fetch::Options {
    let first = |names: &[&str]| {
        names
            .iter()
            .filter_map(|n| env.var(n))
            .find(|v| !v.is_empty())
            .map(str::to_string)
    };
    crate::fetch::Options {
        proxy: first(&[
            "HTTPS_PROXY",
            "https_proxy",
            "HTTP_PROXY",
            "http_proxy",
            "ALL_PROXY",
            "all_proxy",
        ]),
        no_proxy: first(&["NO_PROXY", "no_proxy"]),
        path: env.var_os("PATH").map(std::ffi::OsStr::to_os_string),
        git_file: env
            .var_os("IMGBUILD_GIT_ALLOW_FILE")
            .is_some_and(|v| v == "1"),
        ..crate::fetch::Options::default()
    }
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
    let tags: Vec<(&Reference, &builder::BuiltImage)> = result
        .images
        .iter()
        .flat_map(|i| i.tags.iter().map(move |t| (t, i)))
        .collect();
    if tags.is_empty() {
        return Err(Failure::Usage(anyhow::anyhow!(
            "--push: nothing to push; name the image with -t REGISTRY/NAME:TAG"
        )));
    }
    for (tag, image) in tags {
        let notice = super::registry::notice_to_stderr;
        if image.is_index() {
            let target = crate::store::TagTarget::Index(image.id);
            super::registry::push_target(store, target, tag, opts, Some(&say), notice)?;
        } else {
            // The build's manifest: with its --annotation, if any.
            super::registry::push_manifest(store, &image.manifest, tag, opts, Some(&say), notice)?;
        }
    }
    Ok(())
}

/// `--cache-to`: the steps `c.mode` asks for, to where it says (an inline
/// cache is in the images already). A failure fails the build, unless
/// `ignore-error=true`.
fn export_cache(
    store: &crate::store::Store,
    result: &builder::BuildResult,
    c: &CacheTo,
    registry: &crate::registry::Options,
) -> Result<(), Failure> {
    use std::io::Write;
    // Every platform's chain: a multi-platform output's ID is its index,
    // which has no steps of its own.
    let mut ids: Vec<_> = result
        .images
        .iter()
        .flat_map(|i| i.platforms.iter().map(|(_, id)| *id))
        .collect();
    if c.mode == crate::oci::cache::Mode::Max {
        ids.extend(result.stage_images.iter().copied());
    }
    let (done, place) = match &c.backend {
        CacheBackend::Inline => return Ok(()),
        CacheBackend::Registry(r) => {
            let client = crate::registry::Client::new(r.domain(), registry)
                .with_notices(super::registry::notice_to_stderr);
            (
                crate::registry::cache::export(store, &client, r, &ids)
                    .map_err(anyhow::Error::from),
                r.familiar(),
            )
        }
        CacheBackend::Local(l) => (
            crate::oci::cache::assemble(store, &ids)
                .and_then(|a| l.write(store, &a).map(|()| a.entries))
                .map_err(anyhow::Error::from),
            l.dir.display().to_string(),
        ),
    };
    let mut err = std::io::stderr().lock();
    match done {
        Ok(n) => {
            let _ = writeln!(err, "Exported {n} cache entries to {place}");
            Ok(())
        }
        Err(e) if c.ignore_error => {
            let _ = writeln!(
                err,
                "WARNING: the build cache was not exported to {place}: {}",
                crate::builder::error_chain(e.as_ref())
            );
            Ok(())
        }
        Err(e) => Err(Failure::Failed(
            e.context(format!("exporting the build cache to {place}")),
        )),
    }
}

/// Imports every `--cache-from`; a cache that cannot be read is a warning
/// (the build goes on without it), as with docker.
fn import_caches(store: crate::store::Store, hi: &HiBuild) -> crate::store::Store {
    use std::io::Write;
    let platform = hi
        .platforms
        .first()
        .cloned()
        .unwrap_or_else(crate::platform::host);
    let mut sources: Vec<Arc<dyn crate::store::BlobSource>> = Vec::new();
    for c in &hi.cache_from {
        let (imported, place) = match c {
            CacheBackend::Registry(r) => {
                let client = crate::registry::Client::new(r.domain(), &hi.registry)
                    .with_notices(super::registry::notice_to_stderr);
                (
                    crate::registry::cache::import(&store, client, r, &platform)
                        .map(|(n, l)| (n, Arc::new(l) as Arc<dyn crate::store::BlobSource>))
                        .map_err(anyhow::Error::from),
                    r.familiar(),
                )
            }
            CacheBackend::Local(l) => (
                l.import(&store)
                    .map(|(r, l)| (r.entries, Arc::new(l) as Arc<dyn crate::store::BlobSource>))
                    .map_err(anyhow::Error::from),
                l.dir.display().to_string(),
            ),
            CacheBackend::Inline => continue,
        };
        let mut err = std::io::stderr().lock();
        match imported {
            Ok((n, layers)) => {
                let _ = writeln!(err, "Imported {n} cache entries from {place}");
                sources.push(layers);
            }
            Err(e) => {
                let _ = writeln!(
                    err,
                    "WARNING: cache {place} not imported: {}",
                    crate::builder::error_chain(e.as_ref())
                );
            }
        }
    }
    if sources.is_empty() {
        store
    } else {
        store.with_source(Arc::new(crate::registry::cache::Sources(sources)))
    }
}

/// The renderer the options ask for.
fn progress_sink(p: Progress) -> Arc<dyn Sink> {
    match p {
        Progress::Null => Arc::new(progress::Null),
        // The CLI prints the image IDs itself once the build is done.
        Progress::Quiet => Arc::new(progress::Null),
        Progress::Json => Arc::new(progress::Json::new(Box::new(std::io::stderr()))),
        Progress::Tty => Arc::new(progress::Tty::new()),
        Progress::Plain => Arc::new(progress::Plain::new(Box::new(std::io::stderr()), true)),
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
    let layers = |id: &crate::digest::Digest| -> Result<serde_json::Value, Failure> {
        let image = crate::oci::Image::load(store, id)?;
        Ok(serde_json::json!(image.layers.iter().map(|l| serde_json::json!({
            "digest": l.digest.to_string(), "size": l.size, "mediaType": l.media_type, "diffID": l.diff_id.to_string(),
        })).collect::<Vec<_>>()))
    };
    let mut images = Vec::new();
    for i in &result.images {
        let mut v = serde_json::json!({
            "name": i.name,
            "image.id": i.id.to_string(),
            "manifest.digest": i.archive_manifest.to_string(),
            "tags": i.tags.iter().map(|t| t.familiar()).collect::<Vec<_>>(),
            "archive": i.archive.as_ref().map(|p| p.display().to_string()),
        });
        if !i.is_index() {
            v["layers"] = layers(&i.id)?;
        } else {
            // A multi-platform image: its ID and digest are its index's;
            // each platform has its own image.
            let mut each = Vec::new();
            for (p, id) in &i.platforms {
                let rec = store
                    .image(id)?
                    .ok_or_else(|| crate::store::Error::NoSuchImage(id.to_string()))?;
                each.push(serde_json::json!({
                    "platform": p.as_ref().map(ToString::to_string),
                    "image.id": id.to_string(),
                    "manifest.digest": rec.manifest.to_string(),
                    "layers": layers(id)?,
                }));
            }
            v["platforms"] = serde_json::json!(each);
        }
        images.push(v);
    }
    let mut v = serde_json::json!({
        "images": images,
        "steps": result.steps,
    });
    if let Some(first) = result.images.first() {
        // buildx names a config only for a single-platform image.
        if !first.is_index() {
            v["containerimage.config.digest"] = serde_json::json!(first.id.to_string());
        }
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
