//! ADD's local archive extraction: a tar file (plain, gzip, bzip2, xz or
//! zstd) named directly as an ADD source is unpacked into the destination
//! instead of copied, keeping its members' modes, owners and mtimes, as docker
//! does. Members are extracted root-confined into a temporary directory and
//! stream from there into the layer, read through that directory's
//! [`Root`] — never by a host path, which a member's symlink could point
//! anywhere.

use crate::progress::{self, Sink};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::CopyError;
use super::sources::{Selected, Selection, SourceKind};
use crate::confine::Root;
use crate::layer::extract::extract_layer;
use crate::layer::index::{self, Kind, Merged, Record};
use crate::layer::{FileSource, LayerPath};
use crate::store::Store;

/// Compressions docker recognises for ADD.
#[derive(Debug, Clone, Copy)]
enum Packing {
    Plain,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

fn sniff(source: &FileSource) -> std::io::Result<Option<Packing>> {
    let mut f = BufReader::new(source.open()?);
    let head = f.fill_buf()?;
    let packing = if head.starts_with(&[0x1f, 0x8b]) {
        Packing::Gzip
    } else if head.starts_with(b"BZh") {
        Packing::Bzip2
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Packing::Xz
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Packing::Zstd
    } else {
        Packing::Plain
    };
    // It is an archive only if what is inside starts with a tar header.
    let mut block = [0u8; 512];
    let mut r = open(source, packing)?;
    let mut got = 0;
    while got < block.len() {
        match r.read(&mut block[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok((got == 512 && is_tar_header(&block)).then_some(packing))
}

fn open(source: &FileSource, packing: Packing) -> std::io::Result<Box<dyn Read + '_>> {
    let f = BufReader::new(source.open()?);
    Ok(match packing {
        Packing::Plain => Box::new(f),
        Packing::Gzip => Box::new(flate2::read::MultiGzDecoder::new(f)),
        Packing::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(f)),
        Packing::Xz => Box::new(xz2::read::XzDecoder::new_multi_decoder(f)),
        Packing::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(f)?),
    })
}

/// A ustar/GNU header: the magic, or at least a valid checksum.
fn is_tar_header(b: &[u8; 512]) -> bool {
    if &b[257..262] == b"ustar" {
        return true;
    }
    let stored = std::str::from_utf8(&b[148..156])
        .ok()
        .map(|s| s.trim_matches(|c: char| c == '\0' || c == ' '))
        .and_then(|s| u32::from_str_radix(s, 8).ok());
    let sum: u32 = b
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            if (148..156).contains(&i) {
                u32::from(b' ')
            } else {
                u32::from(x)
            }
        })
        .sum();
    b[0] != 0 && stored == Some(sum)
}

/// Temporary directories removed with the step.
#[derive(Default)]
pub struct TempDirs(pub Vec<PathBuf>);

impl Drop for TempDirs {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = fs_err::remove_dir_all(d);
        }
    }
}

/// Replaces every archive named directly in `sel` by its members.
///
/// `warn` hears of entries skipped (device nodes when not root).
///
/// # Errors
/// An archive that cannot be read or extracted.
pub fn unpack_archives(
    store: &Store,
    sel: Selection,
    temps: &mut TempDirs,
    events: &dyn Sink,
) -> Result<Selection, CopyError> {
    let mut out = Vec::new();
    let mut unpacked = false;
    let read_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CopyError::Read { path, source }
    };
    for s in sel.entries {
        let archive = match (&s.kind, s.direct) {
            (SourceKind::File { source, .. }, true) => Some(source.clone()),
            _ => None,
        };
        let packing = match &archive {
            Some(src) => sniff(src).map_err(read_err(&src.describe()))?,
            None => None,
        };
        let (Some(packing), Some(archive)) = (packing, archive) else {
            out.push(s);
            continue;
        };
        unpacked = true;
        let shown = archive.describe();
        let target = sel.dest_dir.clone().unwrap_or_else(|| s.dest.clone());
        let dir = store.tmp_path("add");
        #[allow(clippy::disallowed_methods)] // the error names the path already
        std::fs::create_dir_all(&dir).map_err(read_err(&dir))?;
        temps.0.push(dir.clone());
        let stream = open(&archive, packing).map_err(read_err(&shown))?;
        let report = extract_layer(&dir, stream).map_err(crate::layer::Error::from)?;
        for skipped in report.skipped {
            progress::warn(events, format!("{}: {skipped}", shown.display()));
        }
        let root = Arc::new(Root::open(&dir).map_err(|e| CopyError::Read {
            path: dir.clone(),
            source: std::io::Error::other(e),
        })?);
        let stream = open(&archive, packing).map_err(read_err(&shown))?;
        let listing = index::list(stream, &shown.display().to_string())?;
        // What the archive leaves once every member is applied in order: a
        // later member replaces an earlier one, and a non-directory a
        // whole subtree, exactly as extraction did.
        let mut merged = Merged::new();
        merged.apply(&listing);
        let join = |p: &LayerPath| target.join(p.as_bytes());
        for r in listing {
            let Record::Entry(path, _) = r else {
                continue;
            };
            // Listed once, with its final metadata.
            let Some(meta) = merged.take(&path) else {
                continue;
            };
            let kind = match meta.kind {
                Kind::Dir => SourceKind::Dir,
                Kind::File => SourceKind::File {
                    size: meta.size,
                    source: FileSource::in_root(&root, path.clone(), false),
                },
                Kind::Symlink(t) => {
                    SourceKind::Symlink(PathBuf::from(std::ffi::OsStr::from_bytes(&t)))
                }
                Kind::Hardlink(t) => SourceKind::Hardlink(join(&t)),
                Kind::Other => continue,
            };
            out.push(Selected {
                dest: join(&path),
                shown: dir.join(path.as_path()),
                kind,
                mode: meta.mode,
                mtime: i64::try_from(meta.mtime).unwrap_or(i64::MAX),
                link_key: None,
                direct: false,
                owner: Some((meta.uid, meta.gid)),
                stat: None,
            });
        }
    }
    Ok(Selection {
        entries: out,
        dest_dir: sel.dest_dir,
        ignored: sel.ignored,
        roots: sel.roots,
        // An archive is extracted into `dest` whatever is there.
        into_dir: if unpacked { None } else { sel.into_dir },
        unmatched: sel.unmatched,
    })
}
