//! Cache keys: `sha256(schema, parent key, canonical step, inputs)`.
//!
//! What goes in is what changes a step's result: the step as lowered (concrete
//! values, no spans, no display names), the key of the image below it, the
//! digests of what it reads (context files, other stages, base manifests) and
//! the build epoch (it sets timestamps). What stays out: paths on the host, `-j`,
//! the clock, file mtimes. Changing what goes in means bumping [`KEY_SCHEMA`].

use serde::{Deserialize, Serialize};

use super::StepKind;
use crate::digest::{Digest, Hasher, canonical_json};

/// Version tag hashed into every key; bump it whenever key inputs change meaning.
/// v2: COPY follows the filesystem below (existing directories, links, the
/// newest RUN layer), keeps a stage's owners; WORKDIR creates its directory.
pub const KEY_SCHEMA: &str = "imgbuild.cache-key.v2";

/// The cache key of a step's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CacheKey(pub Digest);

impl std::fmt::Display for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The key of a stage's starting point: `None` for scratch, else the base
/// image's manifest digest.
pub fn base_key(manifest: Option<&Digest>, epoch: Option<i64>) -> CacheKey {
    let mut h = Hasher::new();
    h.field(KEY_SCHEMA.as_bytes());
    h.field(b"base");
    match manifest {
        Some(d) => h.field(d.to_string().as_bytes()),
        None => h.field(b"scratch"),
    }
    epoch_field(&mut h, epoch);
    CacheKey(h.finish())
}

/// The key of a step over `parent`, given the digests of its inputs. Inputs are
/// labelled (`"context"`, `"stage:builder"`) and hashed in the order given,
/// which the caller keeps deterministic.
///
/// # Errors
/// Serialization of the step (not expected for lowered steps).
pub fn step_key(
    parent: &CacheKey,
    step: &StepKind,
    inputs: &[(String, Digest)],
    epoch: Option<i64>,
) -> Result<CacheKey, serde_json::Error> {
    keyed(b"step", parent, step, inputs, epoch)
}

/// The content key of a step (BuildKit's `ComputeDigestFunc`): like
/// [`step_key`], but its `inputs` digest what the step's dependencies
/// *produced* (a stage's filesystem) rather than how they were defined, so
/// a dependency rebuilt to the same result still hits. Hashed in its own
/// domain: no content key equals a definition key.
///
/// # Errors
/// Serialization of the step (not expected for lowered steps).
pub fn content_key(
    parent: &CacheKey,
    step: &StepKind,
    inputs: &[(String, Digest)],
    epoch: Option<i64>,
) -> Result<CacheKey, serde_json::Error> {
    keyed(b"content", parent, step, inputs, epoch)
}

fn keyed(
    domain: &[u8],
    parent: &CacheKey,
    step: &StepKind,
    inputs: &[(String, Digest)],
    epoch: Option<i64>,
) -> Result<CacheKey, serde_json::Error> {
    let mut h = Hasher::new();
    h.field(KEY_SCHEMA.as_bytes());
    h.field(domain);
    h.field(parent.0.as_bytes());
    h.field(&canonical_json(step)?);
    for (label, d) in inputs {
        h.field(label.as_bytes());
        h.field(d.as_bytes());
    }
    epoch_field(&mut h, epoch);
    Ok(CacheKey(h.finish()))
}

fn epoch_field(h: &mut Hasher, epoch: Option<i64>) {
    match epoch {
        Some(e) => h.field(e.to_string().as_bytes()),
        None => h.field(b"no-epoch"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{ConfigChange, CopyItem, CopyStep};

    fn copy(dest: &str, name: Option<&str>) -> StepKind {
        StepKind::Copy(CopyStep {
            items: vec![CopyItem::from_context(&["a"], dest)],
            name: name.map(str::to_string),
            add: false,
            link: false,
        })
    }

    #[test]
    fn keys_depend_on_semantics_only() {
        let p = base_key(None, Some(0));
        let input = vec![("context".to_string(), Digest::of(b"x"))];
        let a = step_key(&p, &copy("/a", Some("one")), &input, Some(0)).unwrap();
        let b = step_key(&p, &copy("/a", Some("two")), &input, Some(0)).unwrap();
        assert_eq!(a, b, "display names are not part of the key");
        let c = step_key(&p, &copy("/b", None), &input, Some(0)).unwrap();
        assert_ne!(a, c);
        let other_input = vec![("context".to_string(), Digest::of(b"y"))];
        assert_ne!(
            a,
            step_key(&p, &copy("/a", None), &other_input, Some(0)).unwrap()
        );
        assert_ne!(a, step_key(&p, &copy("/a", None), &input, Some(1)).unwrap());
        let p2 = base_key(Some(&Digest::of(b"m")), Some(0));
        assert_ne!(
            a,
            step_key(&p2, &copy("/a", None), &input, Some(0)).unwrap()
        );
    }

    #[test]
    fn config_changes_key_on_content() {
        let p = base_key(None, None);
        let env = |v: &str| StepKind::Config(ConfigChange::Env(vec![("A".into(), v.into())]));
        assert_ne!(
            step_key(&p, &env("1"), &[], None).unwrap(),
            step_key(&p, &env("2"), &[], None).unwrap()
        );
    }
}
