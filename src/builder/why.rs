//! Why a cache lookup missed: each step's inputs are recorded under a stable
//! identity (its build definition, stage and position), and a miss is
//! explained by comparing them with the last build of the same step.

use serde::{Deserialize, Serialize};

use crate::digest::{Digest, Hasher};
use crate::graph::{BuildGraph, CacheKey, StepId};

/// What a step's key was made of.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct StepRecord {
    /// The key.
    pub key: CacheKey,
    /// The key of the image below.
    pub parent: CacheKey,
    /// Digest of the step as lowered (its canonical JSON).
    pub step: Digest,
    /// The build epoch.
    pub epoch: Option<i64>,
    /// Labelled input digests.
    pub inputs: Vec<(String, Digest)>,
    /// For context copies: each file's digest by its path in the image.
    pub files: Vec<(String, Digest)>,
}

/// A stable name for a step across builds: its definition file, stage name
/// and position in the stage.
pub(super) fn identity(graph: &BuildGraph, id: StepId) -> Digest {
    let step = graph.step(id);
    let stage = graph.stage(step.stage);
    let pos = stage.steps.iter().position(|s| *s == id).unwrap_or(0);
    let mut h = Hasher::new();
    h.field(b"imgbuild.step-identity.v1");
    h.field(step.source.file.path().to_string_lossy().as_bytes());
    if let Some(def) = graph.settings.inputs.first() {
        h.field(def.as_os_str().as_encoded_bytes());
    }
    h.field(stage.name.as_bytes());
    h.field(&(pos as u64).to_be_bytes());
    h.finish()
}

/// The reason a step with `new` inputs missed the cache, given what it was
/// last built from.
pub(super) fn explain(old: Option<&StepRecord>, new: &StepRecord, previous_missed: bool) -> String {
    let Some(old) = old else {
        return "not built before".into();
    };
    if old.key == new.key {
        return "its cached result is gone (pruned or removed)".into();
    }
    if old.step != new.step {
        return "the instruction changed".into();
    }
    if old.epoch != new.epoch {
        return "SOURCE_DATE_EPOCH changed".into();
    }
    if old.parent != new.parent {
        return if previous_missed {
            "the step before it was rebuilt".into()
        } else {
            "the image below it changed".into()
        };
    }
    for (label, d) in &new.inputs {
        match old.inputs.iter().find(|(l, _)| l == label) {
            Some((_, od)) if od == d => continue,
            Some(_) if label.ends_with(":context") => return files_changed(&old.files, &new.files),
            Some(_) if label.ends_with(":url") => {
                return "the file at its URL changed".into();
            }
            Some(_) if label.ends_with(":git") => {
                return "its git ref names another commit now".into();
            }
            Some(_) if label.ends_with(":stage") => {
                return "the stage it copies from changed".into();
            }
            Some(_) => return "the image it copies from changed".into(),
            None => return "its sources changed".into(),
        }
    }
    "its inputs changed".into()
}

fn files_changed(old: &[(String, Digest)], new: &[(String, Digest)]) -> String {
    use std::collections::HashMap;
    let before: HashMap<&str, &Digest> = old.iter().map(|(p, d)| (p.as_str(), d)).collect();
    let after: HashMap<&str, &Digest> = new.iter().map(|(p, d)| (p.as_str(), d)).collect();
    let mut changed = Vec::new();
    for (p, d) in new {
        match before.get(p.as_str()) {
            Some(od) if *od == d => {}
            Some(_) => changed.push(format!("/{p} changed")),
            None => changed.push(format!("/{p} added")),
        }
    }
    for (p, _) in old {
        if !after.contains_key(p.as_str()) {
            changed.push(format!("/{p} removed"));
        }
    }
    match changed.len() {
        0 => "its files changed".into(),
        1..=3 => changed.join(", "),
        n => format!("{} and {} more", changed[..3].join(", "), n - 3),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &[u8], parent: &[u8], files: &[(&str, &[u8])]) -> StepRecord {
        StepRecord {
            key: CacheKey(Digest::of(key)),
            parent: CacheKey(Digest::of(parent)),
            step: Digest::of(b"COPY"),
            epoch: None,
            inputs: vec![(
                "item0:context".into(),
                Digest::of(format!("{files:?}").as_bytes()),
            )],
            files: files
                .iter()
                .map(|(p, d)| (p.to_string(), Digest::of(d)))
                .collect(),
        }
    }

    #[test]
    fn names_the_changed_file() {
        let old = rec(b"k1", b"p", &[("foo.txt", b"1"), ("bar.txt", b"1")]);
        let new = rec(
            b"k2",
            b"p",
            &[("foo.txt", b"1"), ("bar.txt", b"2"), ("new.txt", b"1")],
        );
        assert_eq!(
            explain(Some(&old), &new, false),
            "/bar.txt changed, /new.txt added"
        );
        assert_eq!(explain(None, &new, false), "not built before");
        let moved = rec(b"k3", b"q", &[("foo.txt", b"1"), ("bar.txt", b"1")]);
        assert_eq!(
            explain(Some(&old), &moved, true),
            "the step before it was rebuilt"
        );
    }
}
