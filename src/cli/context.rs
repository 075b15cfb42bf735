//! Where a build's context comes from, made into a directory before the
//! definition is read: a directory as given, a tar on standard input
//! (`imgbuild build -`, gzip or zstd or plain, as `docker build -` takes
//! it; a stdin that is no tar is a Dockerfile with an empty context), and
//! a Dockerfile on standard input (`-f -`). Everything made here lives in
//! the store's per-process temporary directory, gone when the process is.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;

use anyhow::{Context as _, anyhow};

use crate::cli::exit::Failure;
use crate::store::Store;

/// Whether `head` (the first bytes of a stream) starts a tar archive or a
/// compressed stream (which can only be a tar here).
fn is_archive(head: &[u8]) -> bool {
    let compressed = head.starts_with(&[0x1f, 0x8b]) || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]);
    // ustar and GNU tar both put "ustar" at offset 257.
    compressed || head.get(257..262) == Some(b"ustar".as_slice())
}

/// The build's input and Dockerfile once standard input is read:
/// `input` `-` becomes a directory (the tar's contents, or empty with the
/// Dockerfile given on stdin), and `-f -` a file in that directory.
///
/// # Errors
/// Both reading standard input, or an archive that cannot be extracted.
pub fn prepare(
    store: &Store,
    input: &std::path::Path,
    file: Option<&std::path::Path>,
    stdin: impl Read,
) -> Result<(PathBuf, Option<PathBuf>), Failure> {
    let stdin_input = input.as_os_str() == "-";
    let stdin_file = file.is_some_and(|f| f.as_os_str() == "-");
    if !stdin_input && !stdin_file {
        return Ok((input.to_path_buf(), file.map(PathBuf::from)));
    }
    if stdin_input && stdin_file {
        return Err(Failure::Usage(anyhow!(
            "the context and the Dockerfile cannot both come from standard input"
        )));
    }
    let mut stdin = BufReader::with_capacity(1 << 20, stdin);
    if stdin_file {
        let dir = store.tmp_path("dockerfile");
        fs_err::create_dir_all(&dir)?;
        let path = dir.join("Dockerfile");
        let mut f = fs_err::File::create(&path)?;
        std::io::copy(&mut stdin, &mut f).context("reading the Dockerfile from standard input")?;
        f.flush()?;
        return Ok((input.to_path_buf(), Some(path)));
    }
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
        Ok((dir, file.map(PathBuf::from)))
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
