//! COPY: selected sources → layer entries → a layer blob in the store.
//!
//! Besides the copied entries, the layer carries every parent directory of
//! them (parents first, as DESIGN.md "Formats" asks). A parent the filesystem
//! below already has keeps its mode and owner there; a new one is created
//! 0755 and owned by `--chown`'s user, as docker's COPY creates it.
//! Destinations are resolved through symlinks of the filesystem below, so
//! `COPY x /lib/` lands in `usr/lib` when `/lib → usr/lib`.

use std::collections::HashSet;

use super::error::CopyError;
use super::sources::{Selected, SourceKind};
use crate::graph::Chmod;
use crate::layer::index::{Kind, Merged};
use crate::layer::{Entry, EntryKind, LayerPath};

/// Ownership and permissions applied to one copy's entries.
#[derive(Debug, Clone)]
pub struct Apply {
    /// `--chmod`.
    pub mode: Option<Chmod>,
    /// Whether `--chown` was given (it then overrides owners archives carry).
    pub chown: bool,
    /// Resolved `--chown` uid.
    pub uid: u64,
    /// Resolved `--chown` gid.
    pub gid: u64,
    /// mtime for every entry when the build has an epoch.
    pub epoch: Option<u64>,
    /// mtime of directories created (no epoch): the build's start time.
    pub now: u64,
}

/// One copy's selection with what to apply, plus its destination root (created
/// even if the source directory was empty).
pub struct ItemSelection {
    /// Selected sources.
    pub selected: Vec<Selected>,
    /// How to own and stamp them.
    pub apply: Apply,
    /// The directory the item copies into (the root for `/`), when its
    /// sources include a directory.
    pub dest_root: Option<LayerPath>,
    /// Where the item's one file goes when its destination is a directory
    /// in `lower` ([`Selection::into_dir`](super::sources::Selection)).
    pub into_dir: Option<LayerPath>,
}

/// Builds the entries of one layer from its copies, over the filesystem `lower`.
///
/// # Errors
/// A destination whose parent is a file (or another non-directory) below.
pub fn entries(items: Vec<ItemSelection>, lower: &Merged) -> Result<Vec<Entry>, CopyError> {
    let mut out: Vec<Entry> = Vec::with_capacity(items.iter().map(|i| i.selected.len()).sum());
    // Created directories take the owner of the first copy that needs them.
    // Many files share a parent, so each parent is remembered once: a copy of
    // 50,000 files must not hold 50,000 parent strings.
    let mut implicit: Vec<(LayerPath, Apply)> = Vec::new();
    let mut claimed: HashSet<LayerPath> = HashSet::new();
    let mut claim = |dir: LayerPath, a: &Apply, implicit: &mut Vec<(LayerPath, Apply)>| {
        if !dir.is_empty() && !claimed.contains(&dir) {
            claimed.insert(dir.clone());
            implicit.push((dir, a.clone()));
        }
    };
    for item in items {
        let a = item.apply;
        let mut selected = item.selected;
        if let (Some(into), [only]) = (&item.into_dir, selected.as_mut_slice()) {
            if is_dir(lower, &only.dest) {
                only.dest = into.clone();
            } else if let Some(Kind::Symlink(_)) =
                lower.get(&redirect(lower, &only.dest)).map(|m| &m.kind)
            {
                // A destination that is a link to a file: written through
                // the link, which stays (BuildKit).
                only.dest = lower.resolve(&only.dest);
            }
        }
        if let Some(root) = &item.dest_root {
            // The directory copied into is followed through links below
            // (`COPY dir/ /link/` fills the link's target, not a new
            // directory in the link's place).
            let dir = if lower.is_empty() {
                root.clone()
            } else {
                lower.resolve(root)
            };
            claim(dir, &a, &mut implicit);
        }
        for s in selected {
            let path = redirect(lower, &s.dest);
            let mtime = a.epoch.unwrap_or(s.mtime.max(0) as u64);
            let (kind, mode) = match s.kind {
                SourceKind::Dir => (EntryKind::Dir, chmod(&a, s.mode, true)),
                SourceKind::File { size, source } => {
                    (EntryKind::File { source, size }, chmod(&a, s.mode, false))
                }
                SourceKind::Symlink(t) => (EntryKind::Symlink(t), 0o777),
                SourceKind::Hardlink(t) => (EntryKind::Hardlink(redirect(lower, &t)), 0o644),
            };
            let (uid, gid) = match s.owner {
                Some(o) if !a.chown => o,
                _ => (a.uid, a.gid),
            };
            if let Some(parent) = path.parent() {
                claim(parent, &a, &mut implicit);
            }
            out.push(Entry {
                path,
                kind,
                mode,
                uid,
                gid,
                mtime,
                xattrs: Vec::new(),
                link_key: s.link_key,
            });
        }
    }
    let explicit: HashSet<&LayerPath> = out.iter().map(|e| &e.path).collect();
    let mut added: HashSet<LayerPath> = HashSet::new();
    let mut dirs = Vec::new();
    for (dir, a) in implicit {
        let mut cur = Some(dir);
        while let Some(p) = cur {
            if p.is_empty() || explicit.contains(&p) || !added.insert(p.clone()) {
                break;
            }
            let mtime = a.epoch.unwrap_or(a.now);
            let e = match lower.get(&p) {
                Some(m) if m.kind == Kind::Dir => {
                    Entry::dir(p.clone(), m.mode, m.uid, m.gid, mtime)
                }
                None => Entry::dir(p.clone(), 0o755, a.uid, a.gid, mtime),
                // Parents are resolved through links: what is left here is
                // a file or a device, which a copy does not replace.
                Some(_) => {
                    return Err(CopyError::NotADirectory {
                        path: dir_needed_by(&out, &p),
                        file: p.to_string_lossy().into_owned(),
                    });
                }
            };
            dirs.push(e);
            cur = p.parent();
        }
    }
    drop(explicit);
    out.append(&mut dirs);
    Ok(out)
}

/// A copied path under `dir`, for the message when `dir` is not a directory.
fn dir_needed_by(out: &[Entry], dir: &LayerPath) -> String {
    out.iter()
        .find(|e| e.path.is_within(dir) && e.path != *dir)
        .map_or_else(
            || dir.to_string_lossy().into_owned(),
            |e| e.path.to_string_lossy().into_owned(),
        )
}

fn chmod(a: &Apply, mode: u32, is_dir: bool) -> u32 {
    a.mode.as_ref().map_or(mode, |m| m.apply(mode, is_dir))
}

/// Whether `path`, followed through links, is a directory in `lower`.
fn is_dir(lower: &Merged, path: &LayerPath) -> bool {
    !lower.is_empty()
        && lower
            .get(&lower.resolve(path))
            .is_some_and(|m| m.kind == Kind::Dir)
}

/// Resolves the directory part of `path` through symlinks of `lower`.
fn redirect(lower: &Merged, path: &LayerPath) -> LayerPath {
    if lower.is_empty() {
        return path.clone();
    }
    match path.parent() {
        Some(dir) if !dir.is_empty() => lower.resolve(&dir).join(path.file_name()),
        _ => path.clone(),
    }
}

/// Looks up a user (and optionally a group) in passwd/group file contents,
/// returning `(uid, gid)`. A user named without a group gets its primary
/// group from `/etc/passwd`, as BuildKit does; a numeric user without a group
/// gets gid = uid.
///
/// # Errors
/// A message naming what was not found.
pub fn resolve_owner(
    user: &str,
    group: Option<&str>,
    passwd: Option<&[u8]>,
    groups: Option<&[u8]>,
) -> Result<(u64, u64), String> {
    let lookup = |file: Option<&[u8]>, name: &str, what: &str| -> Result<u64, String> {
        if let Ok(n) = name.parse::<u64>() {
            return Ok(n);
        }
        let text = file.ok_or_else(|| {
            format!(
                "unable to find {what} {name}: no /etc/{what_file} file in the image",
                what_file = if what == "user" { "passwd" } else { "group" }
            )
        })?;
        String::from_utf8_lossy(text)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                let mut f = l.split(':');
                (f.next() == Some(name))
                    .then(|| f.nth(1).and_then(|id| id.parse().ok()))
                    .flatten()
            })
            .ok_or_else(|| {
                format!("unable to find {what} {name}: no matching entries in the {what} file")
            })
    };
    let uid = lookup(passwd, user, "user")?;
    let gid = match group {
        Some(g) => lookup(groups, g, "group")?,
        None if user.parse::<u64>().is_ok() => uid,
        None => passwd
            .and_then(|p| crate::exec::user::primary_gid(&String::from_utf8_lossy(p), user))
            .map_or(uid, u64::from),
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::FileSource;
    use crate::layer::index::{Meta, Record};

    fn sel(dest: &str) -> Selected {
        Selected {
            dest: dest.into(),
            shown: std::path::PathBuf::new(),
            kind: SourceKind::File {
                size: 0,
                source: FileSource::Empty,
            },
            mode: 0o644,
            mtime: 5,
            link_key: None,
            direct: true,
            owner: None,
            stat: None,
        }
    }

    fn apply() -> Apply {
        Apply {
            mode: None,
            chown: false,
            uid: 0,
            gid: 0,
            epoch: Some(100),
            now: 0,
        }
    }

    #[test]
    fn parents_come_from_below_or_are_new() {
        let mut lower = Merged::new();
        lower.apply(&[
            Record::Entry(
                "tmp".into(),
                Meta {
                    kind: Kind::Dir,
                    mode: 0o1777,
                    uid: 0,
                    gid: 0,
                    mtime: 0,
                    size: 0,
                },
            ),
            Record::Entry(
                "usr".into(),
                Meta {
                    kind: Kind::Dir,
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                    mtime: 0,
                    size: 0,
                },
            ),
            Record::Entry(
                "usr/lib".into(),
                Meta {
                    kind: Kind::Dir,
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                    mtime: 0,
                    size: 0,
                },
            ),
            Record::Entry(
                "lib".into(),
                Meta {
                    kind: Kind::Symlink("usr/lib".into()),
                    mode: 0o777,
                    uid: 0,
                    gid: 0,
                    mtime: 0,
                    size: 0,
                },
            ),
        ]);
        let mut a = apply();
        a.uid = 7;
        a.gid = 8;
        let es = entries(
            vec![ItemSelection {
                selected: vec![sel("tmp/x"), sel("new/dir/y"), sel("lib/z")],
                apply: a,
                dest_root: None,
                into_dir: None,
            }],
            &lower,
        )
        .unwrap();
        let find = |p: &str| es.iter().find(|e| e.path == *p).unwrap();
        assert_eq!(find("tmp").mode, 0o1777);
        assert_eq!(find("tmp").uid, 0);
        assert_eq!((find("new").mode, find("new").uid), (0o755, 7));
        assert!(es.iter().any(|e| e.path == "usr/lib/z"));
        assert!(es.iter().all(|e| e.mtime == 100));
    }

    #[test]
    fn owner_lookup() {
        let passwd = b"root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n\
                       svc:x:1001:2000::/:/bin/sh\n";
        let group = b"root:x:0:\nstaff:x:50:\n";
        assert_eq!(
            resolve_owner("app", None, Some(passwd), None),
            Ok((1000, 1000))
        );
        assert_eq!(
            resolve_owner("app", Some("staff"), Some(passwd), Some(group)),
            Ok((1000, 50))
        );
        assert_eq!(resolve_owner("10", Some("20"), None, None), Ok((10, 20)));
        // A name without a group: its primary group, not its uid.
        assert_eq!(
            resolve_owner("svc", None, Some(passwd), None),
            Ok((1001, 2000))
        );
        assert_eq!(
            resolve_owner("1001", None, Some(passwd), None),
            Ok((1001, 1001))
        );
        assert!(resolve_owner("nobody", None, Some(passwd), None).is_err());
        assert!(resolve_owner("app", None, None, None).is_err());
    }
}
