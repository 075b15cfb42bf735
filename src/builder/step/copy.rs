//! COPY and ADD: the sources each item selects (the context, a stage, an
//! image, a heredoc) are the step's inputs; executing it computes the
//! entries of one layer over the filesystem below.

use std::sync::Arc;

use super::{CacheMap, Output, Step};
use crate::builder::cx::{Cx, Labelled};
use crate::builder::scheduler::Below;
use crate::builder::sources::{self, Selection, SourceRoot};
use crate::builder::{CopyError, Error, ImageState, Result, add, copy, snapshot};
use crate::confine::Root;
use crate::digest::{Digest, Hasher};
use crate::graph::{CopyFrom, CopyItem, CopyStep, Owner, Step as GraphStep, StepId};
use crate::layer::index::Merged;

pub(super) struct Copy<'g> {
    pub(super) id: StepId,
    pub(super) step: &'g GraphStep,
    pub(super) c: &'g CopyStep,
}

impl Step for Copy<'_> {
    fn cache_map<'s>(&'s self, cx: &'s Cx<'_>, workdir: &str) -> Result<CacheMap<'s>> {
        let location = self.step.source.location();
        let mut selections = Vec::new();
        let mut inputs = Vec::new();
        let mut files = Vec::new();
        // The content key's inputs: a stage's definition key replaced by
        // its filesystem's digest, once every such stage has a result.
        let mut content: Option<Labelled> = Some(Vec::new());
        let mut from_stage = false;
        for (i, item) in self.c.items.iter().enumerate() {
            match &item.from {
                CopyFrom::Context | CopyFrom::Local { .. } => {
                    // The build context, or a named local one (without
                    // the context's excludes).
                    let (root, excludes, what) = match &item.from {
                        CopyFrom::Local { name, path } => {
                            let root = cx.locals.get(path).ok_or_else(|| Error::Internal {
                                what: format!("the context `{name}` was not opened"),
                            })?;
                            (root, None, "local")
                        }
                        _ => (&cx.context, Some(&cx.excludes), "context"),
                    };
                    let sel = match cx.planned(self.id, i)? {
                        Some(sel) => sel,
                        None => {
                            let root = SourceRoot {
                                root,
                                excludes,
                                owners: None,
                            };
                            sources::select(&root, item, workdir).map_err(|e| Error::Copy {
                                location: location.clone(),
                                source: CopyError::Select(e),
                            })?
                        }
                    };
                    let d = cx.hash_context(&sel, &location, &mut files)?;
                    inputs.push((format!("item{i}:{what}"), d));
                    if let Some(c) = content.as_mut() {
                        c.push((format!("item{i}:{what}"), d));
                    }
                    selections.push(Some(sel));
                }
                CopyFrom::Stage { stage, name } => {
                    let built = cx.built(*stage, &format!("it was copied from as `{name}`"))?;
                    inputs.push((format!("item{i}:stage"), built.key.0));
                    from_stage = true;
                    content = content.zip(built.id).map(|(mut c, _)| {
                        c.push((format!("item{i}:stage-rootfs"), rootfs_digest(&built)));
                        c
                    });
                    selections.push(None);
                }
                CopyFrom::Image { source } => {
                    let platform = cx.graph.stage(self.step.stage).platform.as_ref();
                    let imported = cx.resolve_image(source, platform, &self.step.source)?;
                    inputs.push((format!("item{i}:image"), imported.manifest));
                    if let Some(c) = content.as_mut() {
                        c.push((format!("item{i}:image"), imported.manifest));
                    }
                    selections.push(None);
                }
                // The content is part of the step, so of its key.
                CopyFrom::Inline { .. } => selections.push(None),
            }
        }
        let workdir = workdir.to_string();
        Ok(CacheMap {
            inputs,
            files,
            content: content.filter(|_| from_stage),
            exec: Box::new(move |below| self.exec(cx, selections, &workdir, below)),
        })
    }
}

/// What a stage's filesystem is: the digest of its diff_ids, in order.
fn rootfs_digest(state: &ImageState) -> Digest {
    let mut h = Hasher::new();
    for l in &state.layers {
        h.field(l.diff_id.as_bytes());
    }
    h.finish()
}

impl Copy<'_> {
    fn exec(
        &self,
        cx: &Cx<'_>,
        selections: Vec<Option<Selection>>,
        workdir: &str,
        below: &mut Below<'_, '_>,
    ) -> Result<Output> {
        // `--chown=name` reads /etc/passwd from the layers below: they must
        // be written first.
        let names_owner = self
            .c
            .items
            .iter()
            .any(|i| i.owner.as_ref().is_some_and(|o| o.numeric().is_none()));
        if names_owner {
            below.commit_pending()?;
        }
        // The listing includes the pending layers (a RUN's among them: its
        // directories, links and modes are what this copy lands on).
        let (state, listing) = below.view()?;
        // `--link`: made over nothing, the same over any base.
        let nothing = Merged::new();
        let over = if self.c.link { &nothing } else { listing };
        let mut temps = add::TempDirs::default();
        let entries = self.entries(cx, selections, state, workdir, over, &mut temps);
        let entries = entries.map_err(|e| below.copy_error(e))?;
        Ok(Output::Entries {
            entries,
            guard: Some(Box::new(temps)),
        })
    }

    /// The entries of the layer over the filesystem `lower`.
    fn entries(
        &self,
        cx: &Cx<'_>,
        selections: Vec<Option<Selection>>,
        state: &ImageState,
        workdir: &str,
        lower: &Merged,
        temps: &mut add::TempDirs,
    ) -> Result<Vec<crate::layer::Entry>, CopyError> {
        let mut items = Vec::new();
        for (item, sel) in self.c.items.iter().zip(selections) {
            let mut sel = match (sel, &item.from) {
                (Some(s), _) => s,
                (None, CopyFrom::Inline { content }) => select_inline(cx, item, content, workdir),
                (None, _) => select_from_image(cx, item, workdir, self.step.stage)?,
            };
            if self.c.add {
                sel = add::unpack_archives(cx.store, sel, temps, &*cx.opts.progress)?;
            }
            let (uid, gid) = match &item.owner {
                Some(o) => resolve_owner(cx, o, state)?,
                None => (0, 0),
            };
            items.push(copy::ItemSelection {
                selected: sel.entries,
                apply: copy::Apply {
                    mode: item.mode.clone(),
                    chown: item.owner.is_some(),
                    uid,
                    gid,
                    epoch: cx.opts.epoch.map(|e| e.max(0) as u64),
                    now: cx.opts.now.max(0) as u64,
                },
                dest_root: sel.dest_dir,
                into_dir: sel.into_dir,
            });
            for pattern in sel.unmatched {
                cx.warn(format!(
                    "{}: `{pattern}` matches no file: nothing copied for it",
                    if self.c.add { "ADD" } else { "COPY" }
                ));
            }
        }
        Ok(crate::layer::normalize(copy::entries(items, lower)?)?)
    }
}

/// A heredoc copy: the content selected as a 0664 file named by the
/// heredoc (BuildKit's `COPY <<EOF /dest`, made with `llb.Mkfile` 0664).
fn select_inline(cx: &Cx<'_>, item: &CopyItem, content: &str, workdir: &str) -> Selection {
    let name = item.sources.first().cloned().unwrap_or_default();
    let dest_abs = sources::absolute(workdir, &item.dest);
    let (dest, dest_dir, into_dir) = if item.dest.ends_with('/') {
        (dest_abs.join(name.as_bytes()), Some(dest_abs), None)
    } else {
        let into = dest_abs.join(name.as_bytes());
        (dest_abs, None, Some(into))
    };
    Selection {
        entries: vec![sources::Selected {
            dest,
            shown: std::path::PathBuf::new(),
            kind: sources::SourceKind::File {
                size: content.len() as u64,
                source: crate::layer::FileSource::Bytes(content.as_bytes().into()),
            },
            mode: 0o664,
            mtime: cx.time(),
            link_key: None,
            direct: true,
            owner: None,
            stat: None,
        }],
        dest_dir,
        into_dir,
        ..Selection::default()
    }
}

/// Selects a copy's sources from another stage's or an image's filesystem.
fn select_from_image(
    cx: &Cx<'_>,
    item: &CopyItem,
    workdir: &str,
    stage: crate::graph::StageId,
) -> Result<Selection, CopyError> {
    let unresolved = |what: String| CopyError::Snapshot { what };
    let layers = match &item.from {
        CopyFrom::Stage { stage, .. } => cx
            .result(*stage)
            .map_err(|e| unresolved(e.to_string()))?
            .map(|s| s.layers)
            .unwrap_or_default(),
        CopyFrom::Image { source } => {
            let id = cx
                .imported(source, cx.graph.stage(stage).platform.as_ref())
                .map_err(|e| unresolved(e.to_string()))?
                .map(|i| i.id)
                .ok_or_else(|| unresolved(format!("image {source} was not resolved")))?;
            cx.load_state(&id)
                .map_err(|e| unresolved(e.to_string()))?
                .layers
        }
        CopyFrom::Context | CopyFrom::Local { .. } | CopyFrom::Inline { .. } => Vec::new(),
    };
    let listing = cx.listing(&layers)?;
    let rootfs = snapshot::rootfs(cx.store, &layers, &*cx.opts.progress)?;
    let rootfs = Arc::new(Root::open(&rootfs).map_err(|e| CopyError::Snapshot {
        what: e.to_string(),
    })?);
    let root = SourceRoot {
        root: &rootfs,
        excludes: None,
        owners: Some(&listing),
    };
    Ok(sources::select(&root, item, workdir)?)
}

/// `user[:group]` as ids, names looked up in the image's files.
pub(super) fn resolve_owner(
    cx: &Cx<'_>,
    o: &Owner,
    state: &ImageState,
) -> Result<(u64, u64), CopyError> {
    if let Some((uid, gid)) = o.numeric() {
        return Ok((uid, gid.unwrap_or(uid)));
    }
    let passwd = cx.read_file(&state.layers, "etc/passwd")?;
    let group = match &o.group {
        Some(g) if g.parse::<u64>().is_err() => cx.read_file(&state.layers, "etc/group")?,
        _ => None,
    };
    copy::resolve_owner(
        &o.user,
        o.group.as_deref(),
        passwd.as_deref(),
        group.as_deref(),
    )
    .map_err(|reason| CopyError::Owner {
        owner: o.to_string(),
        reason,
    })
}
