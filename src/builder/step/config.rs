//! Config steps (ENV, LABEL, CMD, WORKDIR, …): a change to the image
//! config, and for WORKDIR the directories it creates.

use super::{CacheMap, Output, Step};
use crate::builder::config::{self, StageFlags};
use crate::builder::cx::Cx;
use crate::builder::scheduler::Below;
use crate::builder::sources;
use crate::builder::{CopyError, ImageState, Result};
use crate::graph::ConfigChange;
use crate::layer::index::Merged;
use crate::layer::{Entry, LayerPath};
use crate::oci::ImageConfig;

pub(super) struct Config<'g> {
    pub(super) change: &'g ConfigChange,
}

impl Step for Config<'_> {
    fn cache_map<'s>(&'s self, _cx: &'s Cx<'_>, _workdir: &str) -> Result<CacheMap<'s>> {
        // The change is all of the step, so all of its key.
        Ok(CacheMap {
            inputs: Vec::new(),
            files: Vec::new(),
            content: None,
            exec: Box::new(move |below| match self.change {
                ConfigChange::WorkdirCreate(w) => workdir_create(w, below),
                _ => Ok(Output::Config),
            }),
        })
    }

    fn configure(&self, config: Option<&mut ImageConfig>, flags: &mut StageFlags) {
        match config {
            Some(cfg) => config::apply(cfg, self.change, flags),
            None => config::track(self.change, flags),
        }
    }

    fn workdir(&self) -> Option<&str> {
        match self.change {
            ConfigChange::Workdir(w) | ConfigChange::WorkdirCreate(w) => Some(w),
            _ => None,
        }
    }
}

/// WORKDIR creates its directory, owned by the current USER, even when no
/// later step writes there (the Dockerfile reference; BuildKit's mkdir).
/// What exists is in the listing below (pending copies included); who USER
/// is, and its /etc/passwd, in the committed state: the pending steps are
/// committed first only when there is a directory to make.
fn workdir_create(dir: &str, below: &mut Below<'_, '_>) -> Result<Output> {
    let missing = missing_dirs(dir, below.listing()?);
    if missing.is_empty() {
        return Ok(Output::Config);
    }
    below.commit_pending()?;
    let entries =
        workdir_entries(below.cx(), missing, below.state()).map_err(|e| below.copy_error(e))?;
    Ok(Output::Entries {
        entries,
        guard: None,
    })
}

/// The directories of `dir` (after links) that `lower` lacks, innermost
/// first.
fn missing_dirs(dir: &str, lower: &Merged) -> Vec<LayerPath> {
    let path = sources::absolute("/", dir);
    let resolved = if lower.is_empty() {
        path
    } else {
        lower.resolve(&path)
    };
    let mut missing = Vec::new();
    let mut cur = Some(resolved);
    while let Some(p) = cur {
        if p.is_empty() || lower.get(&p).is_some() {
            break;
        }
        cur = p.parent();
        missing.push(p);
    }
    missing
}

/// The directories WORKDIR creates (from [`missing_dirs`]), 0755, owned
/// by the image's USER.
fn workdir_entries(
    cx: &Cx<'_>,
    missing: Vec<LayerPath>,
    state: &ImageState,
) -> Result<Vec<Entry>, CopyError> {
    // The USER a RUN would run as (one resolution for both).
    let user = state.config.config().user().clone().unwrap_or_default();
    let (uid, gid) = if user.is_empty() {
        (0, 0)
    } else {
        let text =
            |f: Option<Vec<u8>>| String::from_utf8_lossy(&f.unwrap_or_default()).into_owned();
        let passwd = text(cx.read_file(&state.layers, "etc/passwd")?);
        let group = text(cx.read_file(&state.layers, "etc/group")?);
        let id =
            crate::exec::user::resolve(&user, &passwd, &group).map_err(|e| CopyError::Owner {
                owner: user.clone(),
                reason: e.to_string(),
            })?;
        (u64::from(id.uid), u64::from(id.gid))
    };
    let mtime = u64::try_from(cx.time()).unwrap_or(0);
    Ok(missing
        .into_iter()
        .rev()
        .map(|p| Entry::dir(p, 0o755, uid, gid, mtime))
        .collect())
}
