//! GNU sparse files in PAX form (formats 0.0, 0.1 and 1.0, as GNU tar writes
//! them with `--sparse --format=posix`, and as Go's `archive/tar` reads them
//! for docker and containerd). The tar crate reads the old GNU `S` entry type
//! itself but not these, which look like regular files whose data is a map
//! followed by the stored chunks: read naively they extract as a file named
//! `GNUSparseFile.N/NAME` holding the wrong bytes.
//!
//! Hand-written because no maintained crate reads them; bounded because the
//! map is untrusted: the number of chunks is limited by the bytes stored, each
//! number by its digits, and the chunks must be in order, non-overlapping and
//! inside the file's real size.

use std::io::{self, Read};

/// What an entry's PAX records say about its sparse layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PaxSparse {
    /// The real name (`GNU.sparse.name`), when the header's name is the
    /// `GNUSparseFile.N/…` placeholder.
    pub name: Option<Vec<u8>>,
    /// The file's real (logical) size.
    pub real_size: u64,
    /// `(offset, length)` of each stored chunk; `None` for format 1.0, which
    /// keeps the map at the start of the data.
    pub map: Option<Vec<(u64, u64)>>,
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("sparse file: {msg}"))
}

fn number(v: &[u8]) -> io::Result<u64> {
    let s = std::str::from_utf8(v).map_err(|_| bad("a number is not ASCII"))?;
    s.trim()
        .parse()
        .map_err(|_| bad("a number in the map is not a decimal u64"))
}

/// Reads the sparse records among an entry's PAX `(key, value)` pairs;
/// `None` when the entry is not a PAX sparse file.
///
/// # Errors
/// Records that are present but malformed.
pub(crate) fn from_pax<'a>(
    records: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> io::Result<Option<PaxSparse>> {
    let mut major = None;
    let mut minor = None;
    let mut name = None;
    let mut size = None;
    let mut realsize = None;
    let mut map_text = None;
    let mut offsets = Vec::new();
    let mut lengths = Vec::new();
    let mut any = false;
    for (k, v) in records {
        let Some(key) = k.strip_prefix(b"GNU.sparse.") else {
            continue;
        };
        any = true;
        match key {
            b"major" => major = Some(number(v)?),
            b"minor" => minor = Some(number(v)?),
            b"name" => name = Some(v.to_vec()),
            b"size" => size = Some(number(v)?),
            b"realsize" => realsize = Some(number(v)?),
            b"map" => map_text = Some(v.to_vec()),
            b"offset" => offsets.push(number(v)?),
            b"numbytes" => lengths.push(number(v)?),
            _ => {}
        }
    }
    if !any {
        return Ok(None);
    }
    let real_size = realsize
        .or(size)
        .ok_or_else(|| bad("no GNU.sparse.size or GNU.sparse.realsize"))?;
    let map = match (major, minor) {
        (Some(1), Some(0)) => None,
        (Some(m), _) if m != 0 => return Err(bad("unknown format version")),
        _ => Some(match map_text {
            // 0.1: "offset,length,offset,length…"
            Some(text) => {
                let nums = text
                    .split(|&b| b == b',')
                    .filter(|p| !p.is_empty())
                    .map(number)
                    .collect::<io::Result<Vec<u64>>>()?;
                if nums.len() % 2 != 0 {
                    return Err(bad("odd number of values in GNU.sparse.map"));
                }
                nums.chunks(2).map(|c| (c[0], c[1])).collect::<Vec<_>>()
            }
            // 0.0: repeated offset/numbytes records.
            None => {
                if offsets.len() != lengths.len() {
                    return Err(bad("GNU.sparse.offset and numbytes do not pair up"));
                }
                offsets.into_iter().zip(lengths).collect::<Vec<_>>()
            }
        }),
    };
    if let Some(m) = &map {
        check(m, real_size)?;
    }
    Ok(Some(PaxSparse {
        name,
        real_size,
        map,
    }))
}

/// Chunks in order, not overlapping, inside the real size.
fn check(map: &[(u64, u64)], real_size: u64) -> io::Result<()> {
    let mut end = 0u64;
    for &(off, len) in map {
        if off < end {
            return Err(bad("chunks out of order or overlapping"));
        }
        end = off
            .checked_add(len)
            .filter(|e| *e <= real_size)
            .ok_or_else(|| bad("a chunk lies beyond the file's size"))?;
    }
    Ok(())
}

/// Reads format 1.0's map from the start of the entry's data: decimal
/// numbers, one per line (the count, then offset and length pairs), padded
/// with NULs to a 512-byte block. `stored` is the entry's data size; returns
/// the map and the bytes it took.
fn read_map<R: Read>(r: &mut R, stored: u64, real_size: u64) -> io::Result<(Vec<(u64, u64)>, u64)> {
    let mut consumed = 0u64;
    let mut next = |r: &mut R| -> io::Result<u64> {
        let mut digits = Vec::new();
        loop {
            let mut b = [0u8; 1];
            if consumed >= stored || r.read(&mut b)? == 0 {
                return Err(bad("the map is cut short"));
            }
            consumed += 1;
            match b[0] {
                b'\n' => break,
                d @ b'0'..=b'9' if digits.len() < 20 => digits.push(d),
                _ => return Err(bad("the map holds something other than numbers")),
            }
        }
        number(&digits)
    };
    let count = next(r)?;
    // Every chunk costs at least four bytes of map ("0\n0\n"): a count the
    // data cannot hold is a lie, refused before anything is allocated.
    if count > stored / 4 {
        return Err(bad("more chunks than the entry can hold"));
    }
    let mut map = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    for _ in 0..count {
        let off = next(r)?;
        let len = next(r)?;
        map.push((off, len));
    }
    check(&map, real_size)?;
    let pad = (512 - consumed % 512) % 512;
    if consumed + pad > stored {
        return Err(bad("the map is cut short"));
    }
    io::copy(&mut r.take(pad), &mut io::sink())?;
    Ok((map, consumed + pad))
}

/// The logical bytes of a sparse file: zeros in the holes, the stored
/// chunks in place.
pub(crate) struct SparseReader<R> {
    inner: R,
    map: std::vec::IntoIter<(u64, u64)>,
    /// The chunk being read: `(offset, remaining)`.
    current: Option<(u64, u64)>,
    pos: u64,
    real_size: u64,
}

impl<R: Read> SparseReader<R> {
    /// Wraps an entry's data. `stored` is the entry's data size (what the
    /// header or the PAX `size` record says).
    ///
    /// # Errors
    /// A malformed map (format 1.0), or chunks that need more bytes than
    /// are stored.
    pub(crate) fn new(mut inner: R, sparse: PaxSparse, stored: u64) -> io::Result<Self> {
        let (map, taken) = match sparse.map {
            Some(m) => (m, 0),
            None => read_map(&mut inner, stored, sparse.real_size)?,
        };
        let data: u64 = map.iter().map(|c| c.1).sum();
        if data > stored - taken {
            return Err(bad("the chunks need more bytes than the entry stores"));
        }
        Ok(SparseReader {
            inner,
            map: map.into_iter(),
            current: None,
            pos: 0,
            real_size: sparse.real_size,
        })
    }
}

impl<R: Read> Read for SparseReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.pos >= self.real_size {
            return Ok(0);
        }
        if self.current.is_none_or(|(_, left)| left == 0) {
            self.current = self.map.next();
        }
        let cap = |n: u64| usize::try_from(n).unwrap_or(usize::MAX).min(buf.len());
        match self.current {
            // In a hole before the next chunk (or after the last): zeros.
            Some((off, _)) if self.pos < off => {
                let n = cap(off - self.pos);
                buf[..n].fill(0);
                self.pos += n as u64;
                Ok(n)
            }
            Some((off, left)) => {
                let n = cap(left);
                let got = self.inner.read(&mut buf[..n])?;
                if got == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "sparse file: a chunk is cut short",
                    ));
                }
                self.pos += got as u64;
                self.current = Some((off + got as u64, left - got as u64));
                Ok(got)
            }
            None => {
                let n = cap(self.real_size - self.pos);
                buf[..n].fill(0);
                self.pos += n as u64;
                Ok(n)
            }
        }
    }
}

/// An entry's name and sparse layout, from its header and PAX records: a
/// PAX sparse file's real name replaces its `GNUSparseFile.N/…` placeholder.
///
/// # Errors
/// Unreadable PAX records, or a malformed sparse description.
pub(crate) fn name_and_layout<R: Read>(
    entry: &mut ::tar::Entry<'_, R>,
) -> io::Result<(Vec<u8>, Option<PaxSparse>)> {
    let sparse = match entry.pax_extensions()? {
        Some(exts) => {
            let records: Vec<(&[u8], &[u8])> = exts
                .filter_map(Result::ok)
                .map(|e| (e.key_bytes(), e.value_bytes()))
                .collect();
            from_pax(records.into_iter())?
        }
        None => None,
    };
    let name = match sparse.as_ref().and_then(|s| s.name.clone()) {
        Some(n) => n,
        None => entry.path_bytes().into_owned(),
    };
    Ok((name, sparse))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pax<'a>(v: &'a [(&'a str, &'a str)]) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
        v.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes()))
    }

    fn logical(r: impl Read) -> Vec<u8> {
        let mut v = Vec::new();
        let mut r = r;
        r.read_to_end(&mut v).unwrap();
        v
    }

    #[test]
    fn format_0_1_map() {
        let s = from_pax(pax(&[
            ("GNU.sparse.size", "10"),
            ("GNU.sparse.map", "2,3,8,2"),
            ("GNU.sparse.name", "real"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(s.name.as_deref(), Some(&b"real"[..]));
        let r = SparseReader::new(&b"abcde"[..], s, 5).unwrap();
        assert_eq!(logical(r), b"\0\0abc\0\0\0de");
    }

    #[test]
    fn format_1_0_map_in_data() {
        let s = from_pax(pax(&[
            ("GNU.sparse.major", "1"),
            ("GNU.sparse.minor", "0"),
            ("GNU.sparse.realsize", "6"),
        ]))
        .unwrap()
        .unwrap();
        let mut data = b"1\n4\n2\n".to_vec();
        data.resize(512, 0);
        data.extend_from_slice(b"xy");
        let stored = data.len() as u64;
        let r = SparseReader::new(&data[..], s, stored).unwrap();
        assert_eq!(logical(r), b"\0\0\0\0xy");
    }

    #[test]
    fn lying_maps_are_refused() {
        // Overlapping chunks.
        assert!(
            from_pax(pax(&[
                ("GNU.sparse.size", "10"),
                ("GNU.sparse.map", "4,4,2,2")
            ]))
            .is_err()
        );
        // Beyond the size.
        assert!(from_pax(pax(&[("GNU.sparse.size", "4"), ("GNU.sparse.map", "2,4")])).is_err());
        // A 1.0 count the data cannot hold.
        let s = PaxSparse {
            name: None,
            real_size: 1 << 40,
            map: None,
        };
        let data = b"99999999999999\n".to_vec();
        assert!(SparseReader::new(&data[..], s, data.len() as u64).is_err());
        // Chunks needing more data than stored.
        let s = from_pax(pax(&[
            ("GNU.sparse.size", "100"),
            ("GNU.sparse.map", "0,50"),
        ]))
        .unwrap()
        .unwrap();
        assert!(SparseReader::new(&b"short"[..], s, 5).is_err());
    }

    #[test]
    fn not_sparse() {
        assert_eq!(from_pax(pax(&[("path", "x")])).unwrap(), None);
    }
}
