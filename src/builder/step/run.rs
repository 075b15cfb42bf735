//! RUN: the command's bind mounts are its inputs (the command, shell, env
//! and mounts are the step itself); executing it runs the command in the
//! sandbox over the image below and captures its changes as one layer.

use std::sync::Arc;

use super::{CacheMap, Output, Step};
use crate::builder::cx::{Cx, Labelled};
use crate::builder::run;
use crate::builder::sources::{self, SourceRoot};
use crate::builder::{CopyError, Error, ImageState, Result, RunError, SandboxMode, snapshot};
use crate::exec::Phase;
use crate::graph::{CopyItem, Mount, RunStep, Step as GraphStep, StepId};
use crate::oci::LayerDescriptor;
use crate::progress::Event;

pub(super) struct Run<'g> {
    pub(super) id: StepId,
    pub(super) step: &'g GraphStep,
    pub(super) r: &'g RunStep,
}

impl Step for Run<'_> {
    fn cache_map<'s>(&'s self, cx: &'s Cx<'_>, _workdir: &str) -> Result<CacheMap<'s>> {
        let (mut inputs, files) = self.mount_inputs(cx)?;
        // What the command runs as: the same command gives another layer
        // for another architecture (natively or emulated).
        let platform = cx
            .graph
            .stage(self.step.stage)
            .platform
            .clone()
            .unwrap_or_else(crate::platform::host);
        inputs.push((
            "platform".to_string(),
            crate::digest::Digest::of(platform.to_string().as_bytes()),
        ));
        inputs.extend(cx.opts.run.key_inputs());
        Ok(CacheMap {
            inputs,
            files,
            content: None,
            exec: Box::new(move |below| {
                // RUN reads the filesystem below: everything pending first.
                below.commit_pending()?;
                let (stage, index) = below.position();
                run_layer(cx, self.r, below.state(), stage, index)
                    .map(Output::Layer)
                    .map_err(|source| Error::Run {
                        location: below.location().to_string(),
                        step: cx.graph.created_by(self.id),
                        source: Box::new(source),
                    })
            }),
        })
    }
}

impl Run<'_> {
    /// What the bind mounts show the command, for its key: the content of a
    /// context source (after .dockerignore, through the stat memo), or the
    /// key of the stage it binds from. Cache, tmpfs and secret mounts are
    /// not inputs (docker: a secret's content never reaches the key).
    fn mount_inputs(&self, cx: &Cx<'_>) -> Result<(Labelled, Labelled)> {
        let location = self.step.source.location();
        let mut inputs = Vec::new();
        let mut files = Vec::new();
        for (j, m) in self.r.mounts.iter().enumerate() {
            let Mount::Bind {
                source,
                from,
                stage,
                ..
            } = m
            else {
                continue;
            };
            match from {
                None => {
                    let root = SourceRoot {
                        root: &cx.context,
                        excludes: Some(&cx.excludes),
                        owners: None,
                    };
                    let src = match source.trim_start_matches('/') {
                        "" => ".",
                        s => s,
                    };
                    let item = CopyItem::from_context(&[src], "/mnt/");
                    let sel = sources::select(&root, &item, "/").map_err(|e| Error::Copy {
                        location: location.clone(),
                        source: CopyError::Select(e),
                    })?;
                    let d = cx.hash_context(&sel, &location, &mut files)?;
                    inputs.push((format!("mount{j}:context"), d));
                }
                Some(_) => {
                    // A stage not built (or not a stage) is reported when
                    // the mount is made; its name alone keys it until then.
                    if let Some(id) = *stage
                        && let Some(built) = cx.result(id)?
                    {
                        inputs.push((format!("mount{j}:stage"), built.key.0));
                    }
                }
            }
        }
        Ok((inputs, files))
    }
}

/// Runs a RUN step in the sandbox and writes its layer. Moves down the
/// [`SandboxMode`]s, for this and later steps, when the kernel refuses a
/// mount, and runs a step that filled the memory upper again on disk.
fn run_layer(
    cx: &Cx<'_>,
    r: &RunStep,
    state: &ImageState,
    stage: &str,
    index: usize,
) -> Result<LayerDescriptor, RunError> {
    let stage_roots =
        |id: Option<crate::graph::StageId>| -> Option<Result<std::path::PathBuf, RunError>> {
            let id = id?;
            let name = &cx.graph.stage(id).name;
            let layers = match cx.result(id) {
                Ok(built) => built?.layers,
                Err(e) => {
                    return Some(Err(RunError::Snapshot {
                        what: e.to_string(),
                    }));
                }
            };
            Some(
                snapshot::rootfs(cx.store, &layers, &*cx.opts.progress).map_err(|e| {
                    RunError::Snapshot {
                        what: format!("stage `{name}`: {e}"),
                    }
                }),
            )
        };
    let progress = Arc::clone(&cx.opts.progress);
    let mut on_line = |line: &str| {
        progress.event(Event::StepOutput {
            stage: stage.to_string(),
            index,
            line: line.to_string(),
        });
    };
    loop {
        let mode = *cx.sandbox.lock().unwrap_or_else(|p| p.into_inner());
        let inp = run::RunInputs {
            settings: &cx.opts.run,
            store: cx.store,
            config: &state.config,
            layers: &state.layers,
            epoch: cx.opts.epoch.map(|e| e.max(0) as u64),
            context: &cx.graph.settings.context,
            secrets: &cx.opts.secrets,
            ssh: &cx.ssh,
            stage_roots: &stage_roots,
            mode,
            compression: cx.opts.compression,
            events: &*cx.opts.progress,
            isolation: &cx.isolation,
        };
        let dir = cx.store.tmp_path("run");
        #[allow(clippy::disallowed_methods)] // the error names the path already
        std::fs::create_dir_all(&dir).map_err(|source| RunError::Io {
            path: dir.clone(),
            source,
        })?;
        let result =
            run::run_step(r, &inp, &dir, &mut on_line).and_then(|captured| match captured {
                run::Captured::Entries {
                    entries,
                    held,
                    cgroup,
                } => {
                    let r = crate::layer::normalize(entries)
                        .map_err(|e| RunError::Layer(CopyError::from(e)))
                        .and_then(|entries| {
                            cx.write_layer(&entries, stage, index)
                                .map_err(RunError::Layer)
                        });
                    // The sandbox ends, then its cgroups can go.
                    drop(held);
                    drop(cgroup);
                    r
                }
                run::Captured::Layer { path, digests } => {
                    let digest = cx
                        .store
                        .adopt_blob(&path, &digests.digest)
                        .map_err(|e| RunError::Layer(CopyError::from(e)))?;
                    Ok(LayerDescriptor {
                        diff_id: digests.diff_id,
                        digest,
                        size: digests.size,
                        media_type: cx.opts.compression.oci_media_type().to_string(),
                    })
                }
            });
        run::remove_tree(&dir);
        let (next, why) = match &result {
            // The kernel refused the overlay or the tmpfs under it.
            Err(RunError::Sandbox(crate::exec::Error::Setup(e)))
                if matches!(e.phase, Phase::Overlay | Phase::UpperTmpfs) =>
            {
                (mode.fallback(), e.to_string())
            }
            Err(e @ RunError::MemoryFull { .. }) => (Some(SandboxMode::Disk), e.to_string()),
            _ => (None, String::new()),
        };
        let Some(next) = next else {
            return result;
        };
        let how = match next {
            SandboxMode::Disk => "keeping the changes of RUN steps on disk",
            _ => "running RUN steps on a copy of the filesystem",
        };
        cx.warn(format!("{why}; {how} instead"));
        let mut m = cx.sandbox.lock().unwrap_or_else(|p| p.into_inner());
        *m = (*m).max(next);
    }
}
