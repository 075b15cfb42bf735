//! Where a build's context comes from, made into a directory before the
//! definition is read: a directory as given, a tar on standard input
//! (`imgbuild build -`, gzip or zstd or plain, as `docker build -` takes
//! it; a stdin that is no tar is a Dockerfile with an empty context), a
//! git repository (`imgbuild build URL#REF:SUBDIR`, as buildx takes one:
//! a shallow checkout of REF's commit, SUBDIR the context, without `.git`
//! unless `BUILDKIT_CONTEXT_KEEP_GIT_DIR` is set), and a Dockerfile on
//! standard input (`-f -`). Everything made here lives in the store's
//! per-process temporary directory, gone when the process is.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow};

use crate::cli::exit::Failure;
use crate::confine::Root;
use crate::fetch::git::Git;
use crate::graph::{GitSource, is_git_context};
use crate::store::Store;

/// How a git context is fetched: the build's fetch options, and whether it
/// keeps `.git` (`--build-arg BUILDKIT_CONTEXT_KEEP_GIT_DIR=1`, as BuildKit).
pub struct GitOptions<'a> {
    /// Proxies, timeouts, `PATH` for git.
    pub fetch: &'a crate::fetch::Options,
    /// Keep `.git` in the context.
    pub keep_git_dir: bool,
}

/// Whether `head` (the first bytes of a stream) starts a tar archive or a
/// compressed stream (which can only be a tar here).
fn is_archive(head: &[u8]) -> bool {
    let compressed = head.starts_with(&[0x1f, 0x8b]) || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]);
    // ustar and GNU tar both put "ustar" at offset 257.
    compressed || head.get(257..262) == Some(b"ustar".as_slice())
}

/// The build's input and Dockerfile once standard input is read and a git
/// context checked out: `input` `-` becomes a directory (the tar's
/// contents, or empty with the Dockerfile given on stdin), a git URL the
/// checkout (or its SUBDIR), and `-f -` a file in a directory of its own.
///
/// # Errors
/// Both reading standard input, an archive that cannot be extracted, a git
/// repository that cannot be checked out.
pub fn prepare(
    store: &Store,
    input: &Path,
    file: Option<&Path>,
    stdin: impl Read,
    git: &GitOptions<'_>,
) -> Result<(PathBuf, Option<PathBuf>), Failure> {
    let stdin_input = input.as_os_str() == "-";
    let stdin_file = file.is_some_and(|f| f.as_os_str() == "-");
    if let Some(url) = input.to_str().filter(|s| is_git_context(s)) {
        let context = git_context(store, url, git)?;
        let file = match file {
            Some(_) if stdin_file => Some(dockerfile_from_stdin(store, stdin)?),
            // The user's own file.
            Some(f) if f.is_absolute() => Some(f.to_path_buf()),
            // `-f` names a file of the repository, as BuildKit reads it.
            f => Some(definition_in(
                store,
                &context,
                f.unwrap_or(Path::new("Dockerfile")),
            )?),
        };
        return Ok((context, file));
    }
    if !stdin_input && !stdin_file {
        return Ok((input.to_path_buf(), file.map(PathBuf::from)));
    }
    if stdin_input && stdin_file {
        return Err(Failure::Usage(anyhow!(
            "the context and the Dockerfile cannot both come from standard input"
        )));
    }
    if stdin_file {
        let path = dockerfile_from_stdin(store, stdin)?;
        return Ok((input.to_path_buf(), Some(path)));
    }
    let mut stdin = BufReader::with_capacity(1 << 20, stdin);
    let dir = store.tmp_path("context");
    fs_err::create_dir_all(&dir)?;
    // Up to a tar header and a bit: enough to tell a tar from a Dockerfile.
    let mut head = Vec::with_capacity(1024);
    while head.len() < 512 {
        let buf = stdin.fill_buf().context("reading standard input")?;
        if buf.is_empty() {
            break;
        }
        let n = buf.len().min(1024 - head.len());
        head.extend_from_slice(&buf[..n]);
        stdin.consume(n);
    }
    let rest = std::io::Cursor::new(head.clone()).chain(stdin);
    if is_archive(&head) {
        let mut rest = BufReader::with_capacity(1 << 20, rest);
        let compression = crate::layer::detect_compression(&mut rest)
            .context("reading the context from standard input")?;
        let tar = crate::layer::Decompressor::new(rest, compression)
            .context("reading the context from standard input")?;
        crate::layer::extract::extract_layer(&dir, tar)
            .map_err(|e| anyhow!("extracting the context from standard input: {e}"))?;
        // `-f` names a file of the tar, as docker reads it, and a link
        // there resolves inside it: never to a host file.
        let file = match file {
            Some(f) if f.is_absolute() => f.to_path_buf(),
            f => definition_in(store, &dir, f.unwrap_or(Path::new("Dockerfile")))?,
        };
        Ok((dir, Some(file)))
    } else {
        // `docker build - < Dockerfile`: the Dockerfile, and no context.
        let path = dir.join("Dockerfile");
        let mut f = fs_err::File::create(&path)?;
        std::io::copy(&mut { rest }, &mut f)
            .context("reading the Dockerfile from standard input")?;
        f.flush()?;
        Ok((dir, file.map(PathBuf::from)))
    }
}

/// `-f -`: the Dockerfile read from standard input into a directory of its
/// own.
fn dockerfile_from_stdin(store: &Store, stdin: impl Read) -> Result<PathBuf, Failure> {
    let dir = store.tmp_path("dockerfile");
    fs_err::create_dir_all(&dir)?;
    let path = dir.join("Dockerfile");
    let mut f = fs_err::File::create(&path)?;
    std::io::copy(&mut BufReader::new(stdin), &mut f)
        .context("reading the Dockerfile from standard input")?;
    f.flush()?;
    Ok(path)
}

/// Checks the git context out: the commit REF names now (the repository's
/// HEAD without one), SUBDIR of it as the context. `file://` is allowed
/// here: the URL is the user's own, not a Dockerfile's.
fn git_context(store: &Store, url: &str, opts: &GitOptions<'_>) -> Result<PathBuf, Failure> {
    let source = GitSource::parse(url, opts.keep_git_dir)
        .map_err(|e| Failure::Usage(anyhow!("the build context: {e}")))?;
    let shown = source.to_string();
    let git = Git::new(opts.fetch).allow_file(true);
    let resolved = git
        .resolve(&source.url, source.reference.as_deref())
        .with_context(|| format!("the build context {shown}"))?;
    let dir = store.tmp_path("git-context");
    fs_err::create_dir_all(&dir)?;
    let keep = source.keep_git_dir && source.subdir.is_none();
    let checkout = git
        .checkout(&source.url, &resolved, &dir, keep)
        .with_context(|| format!("checking out the build context {shown}"))?;
    Ok(checkout
        .path(source.subdir.as_deref())
        .with_context(|| format!("the build context {shown}"))?)
}

/// The Dockerfile `rel` of a git context. A repository may hold links
/// anywhere: read by its path, a `Dockerfile` or `.dockerignore` that is
/// a symlink to `/etc/shadow` would put the host's file into the build's
/// diagnostics. When the Dockerfile, its own `.dockerignore` and the
/// context's are all reached without a symlink (the usual case), the
/// Dockerfile in the tree is used as it is; otherwise the three are read
/// through the tree's root (links resolved inside it, never out) into a
/// directory of their own, the ignore file beside the Dockerfile.
fn definition_in(store: &Store, context: &Path, rel: &Path) -> Result<PathBuf, Failure> {
    let root = Root::open(context).map_err(|e| anyhow!("opening the build context: {e}"))?;
    let mut own = rel.as_os_str().to_os_string();
    own.push(".dockerignore");
    let own = PathBuf::from(own);
    let ctx_ignore = Path::new(".dockerignore");
    let climbs = rel
        .components()
        .any(|c| c == std::path::Component::ParentDir);
    if !climbs
        && [rel, own.as_path(), ctx_ignore]
            .iter()
            .all(|p| without_links(&root, p))
    {
        return Ok(context.join(rel));
    }
    let read = |p: &Path| -> Result<Option<Vec<u8>>, Failure> {
        match root.open_file(p) {
            Ok(mut f) => {
                let mut v = Vec::new();
                f.read_to_end(&mut v)
                    .with_context(|| format!("reading {} in the build context", p.display()))?;
                Ok(Some(v))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::Error::new(e)
                .context(format!("reading {} in the build context", p.display()))
                .into()),
        }
    };
    let dockerfile = read(rel)?.ok_or_else(|| {
        Failure::Usage(anyhow!(
            "the build context has no Dockerfile at {}",
            rel.display()
        ))
    })?;
    let ignore = match read(&own)? {
        Some(v) => v,
        None => read(ctx_ignore)?.unwrap_or_default(),
    };
    let dir = store.tmp_path("dockerfile");
    fs_err::create_dir_all(&dir)?;
    let path = dir.join("Dockerfile");
    fs_err::write(&path, dockerfile)?;
    // Always there, so the context's own `.dockerignore` (a link) is never
    // read by its path.
    fs_err::write(dir.join("Dockerfile.dockerignore"), ignore)?;
    Ok(path)
}

/// Whether `rel` is a regular file reached without a symlink, or absent
/// with no symlink on the way (a path read by its name then finds the same
/// thing, or nothing).
fn without_links(root: &Root, rel: &Path) -> bool {
    use rustix::fs::OFlags;
    match root.open_strict(rel, OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY) {
        Ok(fd) => rustix::fs::fstat(&fd)
            .is_ok_and(|st| rustix::fs::FileType::from_raw_mode(st.st_mode).is_file()),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::is_archive;

    #[test]
    fn tars_and_compressed_streams_are_archives_dockerfiles_are_not() {
        let mut tar = vec![0u8; 512];
        tar[257..262].copy_from_slice(b"ustar");
        assert!(is_archive(&tar));
        assert!(is_archive(&[0x1f, 0x8b, 8, 0]));
        assert!(is_archive(&[0x28, 0xb5, 0x2f, 0xfd]));
        assert!(!is_archive(b"FROM scratch\nCOPY a /a\n"));
        assert!(!is_archive(b""));
    }
}
