//! A step's inputs as digests: context selections hashed file by file, with
//! content digests from the stat memo when a file's stat fields match.

use std::io::Read;
use std::sync::Mutex;

use super::error::CopyError;
use super::sources::{self, Selection};
use crate::digest::{Digest, Hasher};
use crate::store::memo::StatMemo;

/// A file's content digest: from the stat memo when its stat fields match,
/// else read and hashed (and memoized).
pub(super) fn file_content_digest(
    s: &sources::Selected,
    memo: &Mutex<StatMemo>,
) -> Result<Digest, CopyError> {
    let sources::SourceKind::File { source, .. } = &s.kind else {
        return Ok(Digest::of(b""));
    };
    let shown = source.describe();
    // A name that is not UTF-8 keys the memo lossily; the stat fields
    // (inode, device) still tell two such files apart.
    let key = shown.to_string_lossy();
    if let Some(stat) = &s.stat
        && let Ok(m) = memo.lock()
        && let Some(d) = m.get(&key, stat)
    {
        return Ok(d);
    }
    let read_err = |source| CopyError::Read {
        path: shown.clone(),
        source,
    };
    let mut f = source.open().map_err(read_err)?;
    let mut fh = Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf).map_err(read_err)?;
        if n == 0 {
            break;
        }
        fh.update(&buf[..n]);
    }
    let d = fh.finish();
    if let Some(stat) = s.stat
        && let Ok(mut m) = memo.lock()
    {
        m.put(key.into_owned(), stat, d);
    }
    Ok(d)
}

/// The input digest of a context selection: every entry's layer path, type,
/// mode, content digest or link target, and hard-link grouping. Never mtimes.
///
/// Also returns each entry's own digest by layer path, so a cache miss can
/// say which files changed.
pub(super) fn hash_selection(
    sel: &Selection,
    memo: &Mutex<StatMemo>,
) -> Result<(Digest, Vec<(String, Digest)>), CopyError> {
    let mut all = Hasher::new();
    let mut files: Vec<(String, Digest)> = Vec::with_capacity(sel.entries.len());
    let groups = sources::link_groups(&sel.entries);
    all.field(sel.dest_dir.as_ref().map_or(&b"\0"[..], |d| d.as_bytes()));
    for s in &sel.entries {
        let mut h = Hasher::new();
        h.field(s.dest.as_bytes());
        h.field(&s.mode.to_be_bytes());
        match &s.kind {
            sources::SourceKind::Dir => h.field(b"dir"),
            sources::SourceKind::Hardlink(t) => {
                h.field(b"hardlink");
                h.field(t.as_bytes());
            }
            sources::SourceKind::Symlink(t) => {
                h.field(b"symlink");
                h.field(t.as_os_str().as_encoded_bytes());
            }
            sources::SourceKind::File { size, .. } => {
                h.field(b"file");
                h.field(&size.to_be_bytes());
                h.field(file_content_digest(s, memo)?.as_bytes());
                if let Some(first) = groups.get(&s.dest)
                    && first != &s.dest
                {
                    h.field(b"hardlink");
                    h.field(first.as_bytes());
                }
            }
        }
        let d = h.finish();
        all.field(d.as_bytes());
        files.push((s.dest.to_string(), d));
    }
    Ok((all.finish(), files))
}
