//! ADD of a URL or a git repository: files fetched from outside the
//! build, into one layer.
//!
//! The step's key is over what was fetched, not over the request: a file
//! is downloaded (or found unchanged by a `304` to the validators the store
//! saved from the last download, `store::validators`) while the key is
//! derived, as BuildKit's HTTP source computes its cache key, and its
//! content digest and `Last-Modified` time are the step's inputs. A server
//! whose file did not change gives a hit even when it sends no validators.
//! With `--checksum` the checksum is the content: the key needs no
//! request, and the file is fetched only when the step runs and the store
//! lacks the blob.
//!
//! The file lands like a COPY of one file (`builder::copy`): at DEST, or
//! under its URL's file name when DEST ends in `/` or is a directory
//! below; mode 0600 unless `--chmod` (BuildKit's HTTP source); mtime the
//! `Last-Modified` time (the Unix epoch without one, or with
//! `--checksum`, whose key no server may change); `--chown` as COPY's.
//! Archives are not extracted (the Dockerfile reference).
//!
//! A dry run revalidates (a conditional request) but reads no body: a
//! `304` gives the exact key, a changed file shows as a miss.
//!
//! A git source is keyed on the commit its REF names now (`git ls-remote`,
//! as BuildKit's git source computes its cache key; a full commit hash
//! needs no request): a rebuild of the same commit hits without a clone,
//! a branch that moved misses. Only a miss checks the commit out
//! (`fetch::git`, into the store's temporary directory, kept until the
//! layer is written), and its tree (or SUBDIR, resolved inside it) lands
//! like a COPY of a directory: its contents into DEST, symlinks kept as
//! links and never followed, modes as git keeps them (0644, 0755 for
//! executables, directories 0755, whatever the umask), owner `--chown`
//! (0:0 otherwise), every mtime the commit's committer time (BuildKit's
//! `git.mtime=commit`; `SOURCE_DATE_EPOCH` wins). No `.git` unless
//! `--keep-git-dir` (and no SUBDIR).

use std::sync::Arc;

use super::{CacheMap, Output, Step};
use crate::builder::add::TempDirs;
use crate::builder::cx::{Cx, Labelled};
use crate::builder::scheduler::Below;
use crate::builder::sources::{self, Selected, SourceKind};
use crate::builder::{CopyError, Error, ImageState, Result, copy};
use crate::confine::Root;
use crate::digest::{Digest, Hasher};
use crate::fetch::git::{self, Git, Resolved};
use crate::fetch::http::{self, Answer, Body, Client, Conditions};
use crate::graph::{
    CopyItem, FetchItem, FetchStep, GitSource, HttpSource, Remote, Step as GraphStep,
};
use crate::layer::index::Merged;
use crate::layer::{FileSource, LayerPath};
use crate::store::validators::Validators;

pub(super) struct Fetch<'g> {
    pub(super) step: &'g GraphStep,
    pub(super) f: &'g FetchStep,
}

/// A fetched file: its blob and mtime (a `--checksum` source has none
/// until the step runs: it is fetched only then).
#[derive(Debug, Clone, Copy)]
struct Blob {
    content: Digest,
    mtime: i64,
}

/// What the key found out about a source.
#[derive(Debug, Clone)]
enum Got {
    /// A file in the store.
    Blob(Blob),
    /// The commit a git REF names, not checked out yet.
    Commit(Resolved),
}

/// A source ready to land: a file in the store, or a checked-out tree.
enum Fetched {
    Blob(Blob),
    Tree { root: Arc<Root>, commit_time: i64 },
}

impl Step for Fetch<'_> {
    fn cache_map<'s>(&'s self, cx: &'s Cx<'_>, workdir: &str) -> Result<CacheMap<'s>> {
        let location = self.step.source.location();
        let client = Client::new(&cx.opts.fetch).map_err(|e| fetch_error(&location, e))?;
        let mut inputs = Vec::new();
        let mut got = Vec::new();
        for (i, item) in self.f.items.iter().enumerate() {
            for (j, source) in item.sources.iter().enumerate() {
                let (g, label) = match source {
                    Remote::Http(h) => (
                        http_input(cx, &client, h).map_err(|e| fetch_error(&location, e))?,
                        "url",
                    ),
                    Remote::Git(g) => (
                        git_input(cx, g).map_err(|e| git_error(&location, e))?,
                        "git",
                    ),
                };
                if let Some(d) = g.label {
                    inputs.push((format!("item{i}.{j}:{label}"), d));
                }
                got.push(g.got);
            }
        }
        let workdir = workdir.to_string();
        Ok(CacheMap {
            inputs,
            files: Labelled::new(),
            content: None,
            exec: Box::new(move |below| self.exec(cx, &client, got, &workdir, below)),
        })
    }
}

/// A source's part of the key and, when fetched already, the file.
struct Input {
    label: Option<Digest>,
    got: Option<Got>,
}

/// Asks the server whether the file changed since the store's validators
/// (downloading it when it did); the digest of content and mtime is the
/// input. A `--checksum` source asks nothing.
fn http_input(cx: &Cx<'_>, client: &Client, h: &HttpSource) -> http::Result<Input> {
    if h.checksum.is_some() {
        return Ok(Input {
            label: None,
            got: None,
        });
    }
    let store = cx.store;
    // A record that cannot be read costs a download, nothing more.
    let known = store.validators(&h.url).ok().flatten();
    let cond = known
        .as_ref()
        .map_or_else(Conditions::default, |v| Conditions {
            etag: v.etag.as_deref(),
            last_modified: v.last_modified.as_deref(),
        });
    let body = if cx.opts.dry_run {
        Body::Skip
    } else {
        Body::Save(None)
    };
    let got = match (client.get(&h.url, cond, body, store)?, known) {
        (Answer::NotModified, Some(v)) => Blob {
            content: v.content,
            mtime: mtime_of(v.last_modified.as_deref()),
        },
        (Answer::Saved(s), _) => {
            if s.etag.is_some() || s.last_modified.is_some() {
                // A record that cannot be written costs the next build a
                // download, nothing more.
                let _ = store.put_validators(&Validators {
                    url: h.url.clone(),
                    etag: s.etag.clone(),
                    last_modified: s.last_modified.clone(),
                    content: s.digest,
                });
            }
            Blob {
                content: s.digest,
                mtime: mtime_of(s.last_modified.as_deref()),
            }
        }
        // A dry run that would download: a key no build has.
        (Answer::Changed, _) | (Answer::NotModified, None) => {
            return Ok(Input {
                label: Some(Digest::of(b"imgbuild: changed, not downloaded (dry run)")),
                got: None,
            });
        }
    };
    let mut k = Hasher::new();
    k.field(got.content.as_bytes());
    k.field(got.mtime.to_string().as_bytes());
    Ok(Input {
        label: Some(k.finish()),
        got: Some(Got::Blob(got)),
    })
}

/// git as the build's options say.
fn git(cx: &Cx<'_>) -> Git {
    Git::new(&cx.opts.fetch).allow_file(cx.opts.fetch.git_file)
}

/// The commit the source's REF names now: the input (asked with `git
/// ls-remote`; a full commit hash asks nothing).
fn git_input(cx: &Cx<'_>, g: &GitSource) -> git::Result<Input> {
    let resolved = git(cx).resolve(&g.url, g.reference.as_deref())?;
    let mut k = Hasher::new();
    k.field(b"git-commit");
    k.field(resolved.commit.as_bytes());
    Ok(Input {
        label: Some(k.finish()),
        got: Some(Got::Commit(resolved)),
    })
}

/// Seconds since the epoch of an HTTP date (`Last-Modified`); the epoch
/// itself when there is none or it cannot be read (BuildKit).
fn mtime_of(last_modified: Option<&str>) -> i64 {
    last_modified
        .and_then(|s| httpdate::parse_http_date(s).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

fn fetch_error(location: &str, source: http::Error) -> Error {
    Error::Fetch {
        location: location.to_string(),
        source: Box::new(source),
    }
}

fn git_error(location: &str, source: git::Error) -> Error {
    Error::Git {
        location: location.to_string(),
        source: Box::new(source),
    }
}

impl Fetch<'_> {
    fn exec(
        &self,
        cx: &Cx<'_>,
        client: &Client,
        got: Vec<Option<Got>>,
        workdir: &str,
        below: &mut Below<'_, '_>,
    ) -> Result<Output> {
        // The sources the key did not need fetched: fetch them now; git
        // commits are checked out (into directories the layer reads until
        // it is written).
        let mut files = Vec::with_capacity(got.len());
        let mut temps = TempDirs::default();
        let sources = self.f.items.iter().flat_map(|i| i.sources.iter());
        for (source, g) in sources.zip(got) {
            let g = match (g, source) {
                (Some(Got::Blob(b)), _) => Fetched::Blob(b),
                (Some(Got::Commit(r)), Remote::Git(g)) => {
                    checkout(cx, g, &r, &mut temps).map_err(|e| git_error(below.location(), e))?
                }
                (
                    None,
                    Remote::Http(
                        h @ HttpSource {
                            checksum: Some(sum),
                            ..
                        },
                    ),
                ) => Fetched::Blob(
                    fetch_checksummed(cx, client, h, sum)
                        .map_err(|e| fetch_error(below.location(), e))?,
                ),
                // Only a dry run leaves a source unfetched, and it runs no
                // step.
                (_, source) => {
                    return Err(Error::Internal {
                        what: format!("ADD {source} ran before it was fetched"),
                    });
                }
            };
            files.push(g);
        }
        // `--chown=name` reads /etc/passwd from the layers below.
        if self
            .f
            .items
            .iter()
            .any(|i| i.owner.as_ref().is_some_and(|o| o.numeric().is_none()))
        {
            below.commit_pending()?;
        }
        let (state, listing) = below.view()?;
        let nothing = Merged::new();
        let over = if self.f.link { &nothing } else { listing };
        let entries = self
            .entries(cx, files, state, workdir, over)
            .map_err(|e| below.copy_error(e))?;
        Ok(Output::Entries {
            entries,
            guard: Some(Box::new(temps)),
        })
    }

    fn entries(
        &self,
        cx: &Cx<'_>,
        files: Vec<Fetched>,
        state: &ImageState,
        workdir: &str,
        lower: &Merged,
    ) -> Result<Vec<crate::layer::Entry>, CopyError> {
        let mut files = files.into_iter();
        let mut items = Vec::new();
        for item in &self.f.items {
            let (uid, gid) = match &item.owner {
                Some(o) => super::copy::resolve_owner(cx, o, state)?,
                None => (0, 0),
            };
            let mut selected = Vec::new();
            let has_tree = item.sources.iter().any(|s| matches!(s, Remote::Git(_)));
            let dest_dir =
                (into_dir_only(item) || has_tree).then(|| sources::absolute(workdir, &item.dest));
            let mut into_dir = None;
            // Directories the copy creates take the commit's time, so a
            // tree lands the same on every machine.
            let mut created = cx.opts.now.max(0) as u64;
            for source in &item.sources {
                let Some(g) = files.next() else { break };
                let (blob, name) = match (g, source) {
                    (Fetched::Blob(b), Remote::Http(h)) => (b, &h.file_name),
                    (Fetched::Tree { root, commit_time }, _) => {
                        created = commit_time.max(0) as u64;
                        selected.extend(tree_files(&root, &item.dest, workdir, commit_time)?);
                        continue;
                    }
                    (Fetched::Blob(_), Remote::Git(g)) => {
                        return Err(CopyError::Read {
                            path: g.to_string().into(),
                            source: std::io::Error::other("a git source fetched as a file"),
                        });
                    }
                };
                let dest = sources::absolute(workdir, &item.dest);
                let dest = match &dest_dir {
                    Some(d) => d.join(name.as_bytes()),
                    None => {
                        // DEST may be a directory below: then `DEST/NAME`.
                        into_dir = Some(dest.join(name.as_bytes()));
                        dest
                    }
                };
                selected.push(blob_file(cx, source, blob, dest)?);
            }
            items.push(copy::ItemSelection {
                selected,
                apply: copy::Apply {
                    mode: item.mode.clone(),
                    chown: item.owner.is_some(),
                    uid,
                    gid,
                    epoch: cx.opts.epoch.map(|e| e.max(0) as u64),
                    now: created,
                },
                dest_root: dest_dir,
                into_dir,
            });
        }
        Ok(crate::layer::normalize(copy::entries(items, lower)?)?)
    }
}

/// Checks the commit `r` of `g` out into a new temporary directory (kept
/// in `temps`), and opens its tree, or SUBDIR inside it.
fn checkout(
    cx: &Cx<'_>,
    g: &GitSource,
    r: &Resolved,
    temps: &mut TempDirs,
) -> git::Result<Fetched> {
    let dir = cx.store.tmp_path("git");
    fs_err::create_dir_all(&dir).map_err(|source| git::Error::Dir {
        path: dir.clone(),
        source,
    })?;
    temps.0.push(dir.clone());
    let co = git(cx).checkout(&g.url, r, &dir, g.keep_git_dir && g.subdir.is_none())?;
    let root = co.root(g.subdir.as_deref())?;
    Ok(Fetched::Tree {
        root: Arc::new(root),
        commit_time: co.commit_time,
    })
}

/// The files of a checked-out tree as the contents of DEST (a COPY of a
/// directory), stamped the same on every checkout: modes as git records
/// them, whatever the umask was, and the commit's time.
fn tree_files(
    root: &Arc<Root>,
    dest: &str,
    workdir: &str,
    commit_time: i64,
) -> Result<Vec<Selected>, CopyError> {
    let from = sources::SourceRoot {
        root,
        excludes: None,
        owners: None,
    };
    let sel = sources::select(&from, &CopyItem::from_context(&["."], dest), workdir)?;
    Ok(sel
        .entries
        .into_iter()
        .map(|mut s| {
            s.mode = git_mode(&s.kind, s.mode);
            s.mtime = commit_time;
            s.link_key = None;
            s.stat = None;
            s.owner = None;
            s
        })
        .collect())
}

/// The mode a checkout would have under umask 022 (BuildKit runs git with
/// it): git writes files 0666 or 0777 (read-only 0444 in `.git`) and
/// directories 0777, and the umask only ever clears bits, so the owner's
/// bits tell which it was.
fn git_mode(kind: &SourceKind, mode: u32) -> u32 {
    match kind {
        SourceKind::Dir => 0o755,
        SourceKind::Symlink(_) => 0o777,
        SourceKind::File { .. } | SourceKind::Hardlink(_) => {
            let base = if mode & 0o100 != 0 { 0o755 } else { 0o644 };
            if mode & 0o200 == 0 {
                base & !0o222
            } else {
                base
            }
        }
    }
}

/// Fetches a `--checksum` source, unless the store has its blob. (An
/// unconditional request that saves the body has no answer but `Saved`:
/// a `304` to it is the client's error.)
fn fetch_checksummed(
    cx: &Cx<'_>,
    client: &Client,
    h: &HttpSource,
    sum: &Digest,
) -> http::Result<Blob> {
    let got = Blob {
        content: *sum,
        mtime: 0,
    };
    if cx.store.has_blob(sum) {
        return Ok(got);
    }
    let answer = client.get(
        &h.url,
        Conditions::default(),
        Body::Save(Some(sum)),
        cx.store,
    )?;
    if let Answer::Saved(s) = answer {
        // A record that cannot be written costs a later build without the
        // checksum a download, nothing more.
        let _ = cx.store.put_validators(&Validators {
            url: h.url.clone(),
            etag: s.etag,
            last_modified: s.last_modified,
            content: s.digest,
        });
    }
    Ok(got)
}

/// Whether DEST is a directory the files go into by their names: it says
/// so (a trailing `/`, `.`), or there are several (the frontends check
/// that DEST then ends in `/`).
fn into_dir_only(item: &FetchItem) -> bool {
    item.dest.ends_with('/') || item.dest == "." || item.sources.len() > 1
}

/// The blob of a fetched file as one selected file, landing at `dest`.
fn blob_file(
    cx: &Cx<'_>,
    source: &Remote,
    g: Blob,
    dest: LayerPath,
) -> Result<Selected, CopyError> {
    let path = cx.store.blob_path(&g.content);
    let dir = path.parent().unwrap_or(&path).to_path_buf();
    let size = fs_err::metadata(&path)
        .map_err(|e| CopyError::Read {
            path: path.clone(),
            source: e,
        })?
        .len();
    let root = Arc::new(Root::open(&dir).map_err(|e| CopyError::Read {
        path: dir.clone(),
        source: std::io::Error::other(e),
    })?);
    Ok(Selected {
        dest,
        shown: std::path::PathBuf::from(source.to_string()),
        kind: SourceKind::File {
            size,
            source: FileSource::in_root(&root, LayerPath::from(g.content.hex()), false),
        },
        mode: 0o600,
        mtime: g.mtime,
        link_key: None,
        direct: true,
        owner: None,
        stat: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_modes_do_not_depend_on_the_umask() {
        let file = |mode| {
            let kind = SourceKind::Hardlink(LayerPath::root());
            git_mode(&kind, mode)
        };
        // umask 022, 077 and 002 over git's 0666 and 0777.
        for (on_disk, want) in [
            (0o644, 0o644),
            (0o600, 0o644),
            (0o664, 0o644),
            (0o755, 0o755),
            (0o700, 0o755),
            (0o775, 0o755),
            // A pack in a kept .git (0444).
            (0o444, 0o444),
            (0o400, 0o444),
        ] {
            assert_eq!(file(on_disk), want, "{on_disk:o}");
        }
        assert_eq!(git_mode(&SourceKind::Dir, 0o700), 0o755);
    }

    #[test]
    fn mtimes_are_http_dates_or_the_epoch() {
        assert_eq!(mtime_of(Some("Wed, 21 Oct 2015 07:28:00 GMT")), 1445412480);
        // RFC 850 and asctime, as Go's http.ParseTime reads them.
        assert_eq!(
            mtime_of(Some("Wednesday, 21-Oct-15 07:28:00 GMT")),
            1445412480
        );
        assert_eq!(mtime_of(Some("Wed Oct 21 07:28:00 2015")), 1445412480);
        assert_eq!(mtime_of(Some("yesterday")), 0);
        assert_eq!(mtime_of(None), 0);
    }
}
