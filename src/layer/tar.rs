//! A deterministic PAX/ustar tar writer.
//!
//! Hand-written rather than `tar::Builder` because the exact bytes are part of
//! our reproducibility contract (DESIGN.md "Formats"): we choose the name/prefix
//! split, when a PAX record is emitted and what it is called, and never emit GNU
//! extensions (base-256 numbers, `././@LongLink`), atime/ctime, or user and group
//! names. Reading tar goes through the `tar` crate.

use std::io::{self, Write};

pub(crate) const BLOCK: usize = 512;
const NAME_LEN: usize = 100;
const PREFIX_LEN: usize = 155;
/// Largest value of an 8-byte octal field (7 digits + NUL).
const MAX_OCTAL_8: u64 = 0o7777777;
/// Largest value of a 12-byte octal field (11 digits + NUL).
const MAX_OCTAL_12: u64 = 0o77777777777;

/// Tar entry types we write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TypeFlag {
    File,
    Hardlink,
    Symlink,
    Char,
    Block,
    Dir,
    Fifo,
}

impl TypeFlag {
    fn byte(self) -> u8 {
        match self {
            TypeFlag::File => b'0',
            TypeFlag::Hardlink => b'1',
            TypeFlag::Symlink => b'2',
            TypeFlag::Char => b'3',
            TypeFlag::Block => b'4',
            TypeFlag::Dir => b'5',
            TypeFlag::Fifo => b'6',
        }
    }
}

/// Everything that goes into one header; names are raw bytes as they go in the
/// archive (directories already carry their trailing `/`).
#[derive(Debug, Clone)]
pub(crate) struct Header<'a> {
    pub name: &'a [u8],
    pub link: &'a [u8],
    pub flag: TypeFlag,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime: u64,
    pub dev_major: u32,
    pub dev_minor: u32,
    /// Extended attributes, sorted by name by the caller.
    pub xattrs: &'a [(String, Vec<u8>)],
}

/// Streams tar entries to `W`, counting bytes.
pub(crate) struct TarWriter<W> {
    out: W,
}

impl<W: Write> TarWriter<W> {
    pub(crate) fn new(out: W) -> Self {
        TarWriter { out }
    }

    /// Writes one header (preceded by a PAX header when a field does not fit
    /// ustar). The caller then writes exactly `size` bytes of data with
    /// [`TarWriter::data`] and calls [`TarWriter::pad`].
    pub(crate) fn header(&mut self, h: &Header<'_>) -> io::Result<()> {
        let mut pax: Vec<(&str, Vec<u8>)> = Vec::new();
        let (prefix, name) = match split_name(h.name) {
            Some(split) => split,
            None => {
                pax.push(("path", h.name.to_vec()));
                (&b""[..], truncate_name(h.name))
            }
        };
        let link = if h.link.len() > NAME_LEN {
            pax.push(("linkpath", h.link.to_vec()));
            &h.link[..0]
        } else {
            h.link
        };
        if h.uid > MAX_OCTAL_8 {
            pax.push(("uid", h.uid.to_string().into_bytes()));
        }
        if h.gid > MAX_OCTAL_8 {
            pax.push(("gid", h.gid.to_string().into_bytes()));
        }
        if h.size > MAX_OCTAL_12 {
            pax.push(("size", h.size.to_string().into_bytes()));
        }
        let xattr_keys: Vec<String> = h
            .xattrs
            .iter()
            .map(|(k, _)| format!("SCHILY.xattr.{k}"))
            .collect();
        for ((_, v), k) in h.xattrs.iter().zip(&xattr_keys) {
            pax.push((k.as_str(), v.clone()));
        }
        if !pax.is_empty() {
            // PAX records are sorted by key so the header bytes never depend on
            // the order in which fields overflowed.
            pax.sort_by(|a, b| a.0.cmp(b.0));
            let body = pax_records(&pax);
            let mut pax_name = b"PaxHeaders.0/".to_vec();
            pax_name.extend_from_slice(last_component(h.name));
            let pax_name = truncate_name(&pax_name).to_vec();
            let block = ustar_block(
                b"",
                &pax_name,
                b"",
                b'x',
                0o644,
                0,
                0,
                body.len() as u64,
                h.mtime.min(MAX_OCTAL_12),
                0,
                0,
            );
            self.out.write_all(&block)?;
            self.out.write_all(&body)?;
            self.pad(body.len() as u64)?;
        }
        let block = ustar_block(
            prefix,
            name,
            link,
            h.flag.byte(),
            h.mode,
            h.uid.min(MAX_OCTAL_8),
            h.gid.min(MAX_OCTAL_8),
            h.size.min(MAX_OCTAL_12),
            h.mtime.min(MAX_OCTAL_12),
            h.dev_major,
            h.dev_minor,
        );
        self.out.write_all(&block)
    }

    /// Writes entry data.
    pub(crate) fn data(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)
    }

    /// Pads entry data of `size` bytes to a whole block.
    pub(crate) fn pad(&mut self, size: u64) -> io::Result<()> {
        let rem = (size % BLOCK as u64) as usize;
        if rem != 0 {
            self.out.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    /// Writes the end-of-archive marker (two zero blocks) and returns the sink.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; BLOCK * 2])?;
        Ok(self.out)
    }
}

/// Splits a name into ustar (prefix, name) if it fits, at a `/`.
fn split_name(name: &[u8]) -> Option<(&[u8], &[u8])> {
    if name.len() <= NAME_LEN {
        return Some((b"", name));
    }
    // Trailing slash of a directory stays in the name part.
    let search_end = name.len().saturating_sub(1);
    (0..search_end)
        .rev()
        .filter(|&i| name[i] == b'/')
        .map(|i| (&name[..i], &name[i + 1..]))
        .find(|(p, n)| p.len() <= PREFIX_LEN && n.len() <= NAME_LEN && !n.is_empty())
}

fn truncate_name(name: &[u8]) -> &[u8] {
    &name[..name.len().min(NAME_LEN)]
}

fn last_component(name: &[u8]) -> &[u8] {
    let trimmed = name.strip_suffix(b"/").unwrap_or(name);
    match trimmed.iter().rposition(|&b| b == b'/') {
        Some(i) => &trimmed[i + 1..],
        None => trimmed,
    }
}

/// PAX records: `"%d %s=%s\n"`, where the length counts itself.
fn pax_records(records: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        let rest = 1 + k.len() + 1 + v.len() + 1; // ' ' k '=' v '\n'
        let mut len = rest + 1;
        while len.to_string().len() + rest != len {
            len = len.to_string().len() + rest;
        }
        out.extend_from_slice(len.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(k.as_bytes());
        out.push(b'=');
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn ustar_block(
    prefix: &[u8],
    name: &[u8],
    link: &[u8],
    flag: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: u64,
    dev_major: u32,
    dev_minor: u32,
) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    b[..name.len()].copy_from_slice(name);
    octal(&mut b[100..108], u64::from(mode & 0o7777));
    octal(&mut b[108..116], uid);
    octal(&mut b[116..124], gid);
    octal(&mut b[124..136], size);
    octal(&mut b[136..148], mtime);
    b[156] = flag;
    b[157..157 + link.len()].copy_from_slice(link);
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    if matches!(flag, b'3' | b'4') {
        octal(&mut b[329..337], u64::from(dev_major));
        octal(&mut b[337..345], u64::from(dev_minor));
    }
    b[345..345 + prefix.len()].copy_from_slice(prefix);
    // Checksum: sum of all bytes with the checksum field taken as spaces.
    b[148..156].copy_from_slice(b"        ");
    let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    let digits = format!("{sum:06o}\0 ");
    b[148..156].copy_from_slice(digits.as_bytes());
    b
}

/// Zero-padded octal with a trailing NUL, filling the field.
fn octal(field: &mut [u8], v: u64) {
    let width = field.len() - 1;
    let s = format!("{v:0width$o}");
    field[..width].copy_from_slice(&s.as_bytes()[s.len() - width..]);
    field[width] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &[u8]) -> Header<'_> {
        Header {
            name,
            link: b"",
            flag: TypeFlag::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 5,
            mtime: 1_700_000_000,
            dev_major: 0,
            dev_minor: 0,
            xattrs: &[],
        }
    }

    fn roundtrip(headers: &[Header<'_>]) -> Vec<(String, u64, u32)> {
        let mut w = TarWriter::new(Vec::new());
        for h in headers {
            w.header(h).unwrap();
            w.data(&b"hello"[..h.size as usize]).unwrap();
            w.pad(h.size).unwrap();
        }
        let bytes = w.finish().unwrap();
        let mut a = tar::Archive::new(&bytes[..]);
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().mtime().unwrap(),
                    e.header().mode().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn short_and_long_names_read_back() {
        let long_split = format!("{}/{}", "d".repeat(120), "f".repeat(90));
        let long_pax = "x".repeat(300);
        let got = roundtrip(&[
            entry(b"a.txt"),
            entry(long_split.as_bytes()),
            entry(long_pax.as_bytes()),
        ]);
        assert_eq!(got[0], ("a.txt".into(), 1_700_000_000, 0o644));
        assert_eq!(got[1].0, long_split);
        assert_eq!(got[2].0, long_pax);
    }

    #[test]
    fn pax_length_counts_itself() {
        let r = pax_records(&[("path", b"abcdef".to_vec())]);
        assert_eq!(r, b"15 path=abcdef\n");
        // 9 + 2 digits = 11; check the rollover case where the length gains a digit.
        let v = vec![b'a'; 91];
        let r = pax_records(&[("path", v)]);
        let text = String::from_utf8(r.clone()).unwrap();
        let n: usize = text.split(' ').next().unwrap().parse().unwrap();
        assert_eq!(n, r.len());
    }

    #[test]
    fn xattrs_and_big_ids_use_pax() {
        let xattrs = vec![("user.k".to_string(), b"v".to_vec())];
        let h = Header {
            uid: 5_000_000,
            xattrs: &xattrs,
            ..entry(b"f")
        };
        let mut w = TarWriter::new(Vec::new());
        w.header(&h).unwrap();
        w.data(b"hello").unwrap();
        w.pad(5).unwrap();
        let bytes = w.finish().unwrap();
        let mut a = tar::Archive::new(&bytes[..]);
        let mut entries = a.entries().unwrap();
        let mut e = entries.next().unwrap().unwrap();
        // The reader applies the PAX record over the clamped ustar field.
        assert_eq!(e.header().uid().unwrap(), 5_000_000);
        let pax: Vec<_> = e
            .pax_extensions()
            .unwrap()
            .unwrap()
            .map(|x| x.unwrap().key().unwrap().to_string())
            .collect();
        assert_eq!(pax, ["SCHILY.xattr.user.k", "uid"]);
    }
}
