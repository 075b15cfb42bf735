//! Layer compression: gzip (the default, readable everywhere), zstd, or none.

use std::io::{self, BufRead, BufReader, Read, Write};

use super::pgzip::ParGzip;

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// gzip, level 6 (Go's and docker's default level), compressed in
    /// parallel blocks with thread-count-independent output.
    #[default]
    Gzip,
    /// zstd, level 3.
    Zstd,
    /// A plain tar.
    None,
}

const GZIP_LEVEL: u32 = 6;
const ZSTD_LEVEL: i32 = 3;

impl Compression {
    /// The OCI media type of a layer blob with this compression.
    pub fn oci_media_type(self) -> &'static str {
        match self {
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
        }
    }

    /// The Docker media type, where docker has one (it has none for zstd).
    pub fn docker_media_type(self) -> Option<&'static str> {
        match self {
            Compression::Gzip => Some("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Compression::None => Some("application/vnd.docker.image.rootfs.diff.tar"),
            Compression::Zstd => None,
        }
    }

    /// Recognizes a layer media type, OCI or Docker.
    pub fn from_media_type(mt: &str) -> Option<Compression> {
        match mt {
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
                Some(Compression::Gzip)
            }
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => {
                Some(Compression::Zstd)
            }
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
            _ => None,
        }
    }

    /// The name users type: `gzip`, `zstd`, `none`.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::None => "none",
        }
    }

    /// Parses a user-facing name (`gzip`, `zstd`, `none`/`uncompressed`).
    pub fn from_name(s: &str) -> Option<Compression> {
        match s {
            "gzip" => Some(Compression::Gzip),
            "zstd" => Some(Compression::Zstd),
            "none" | "uncompressed" => Some(Compression::None),
            _ => None,
        }
    }

    pub(crate) fn encoder<'p, W: Write>(
        self,
        w: W,
        pool: Option<&'p rayon::ThreadPool>,
    ) -> io::Result<Encoder<'p, W>> {
        Ok(match self {
            Compression::Gzip => Encoder::Gzip(ParGzip::new(w, GZIP_LEVEL, pool)?),
            Compression::Zstd => {
                let mut z = zstd::stream::write::Encoder::new(w, ZSTD_LEVEL)?;
                // The content size is unknown up front; the checksum lets readers
                // verify the frame on their own.
                z.include_checksum(true)?;
                Encoder::Zstd(z)
            }
            Compression::None => Encoder::None(w),
        })
    }
}

/// A compressing writer of any [`Compression`].
pub(crate) enum Encoder<'p, W: Write> {
    Gzip(ParGzip<'p, W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    None(W),
}

impl<W: Write> Encoder<'_, W> {
    /// Ends the stream and returns the inner writer.
    pub(crate) fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Gzip(g) => g.finish(),
            Encoder::Zstd(z) => z.finish(),
            Encoder::None(w) => Ok(w),
        }
    }
}

impl<W: Write> Write for Encoder<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Gzip(g) => g.write(buf),
            Encoder::Zstd(z) => z.write(buf),
            Encoder::None(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Gzip(g) => g.flush(),
            Encoder::Zstd(z) => z.flush(),
            Encoder::None(w) => w.flush(),
        }
    }
}

/// A decompressing reader of any [`Compression`].
pub enum Decompressor<R: Read> {
    /// gzip (multi-member streams are read whole, as `gzip -d` does).
    Gzip(Box<flate2::read::MultiGzDecoder<BufReader<R>>>),
    /// zstd.
    Zstd(Box<zstd::stream::read::Decoder<'static, BufReader<R>>>),
    /// Plain.
    None(R),
}

impl<R: Read> Decompressor<R> {
    /// Wraps `r`.
    ///
    /// # Errors
    /// When the zstd decoder cannot be set up.
    pub fn new(r: R, c: Compression) -> io::Result<Self> {
        Ok(match c {
            Compression::Gzip => Decompressor::Gzip(Box::new(flate2::read::MultiGzDecoder::new(
                BufReader::with_capacity(256 * 1024, r),
            ))),
            Compression::Zstd => Decompressor::Zstd(Box::new(
                zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(256 * 1024, r))?,
            )),
            Compression::None => Decompressor::None(r),
        })
    }
}

impl<R: Read> Read for Decompressor<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decompressor::Gzip(d) => d.read(buf),
            Decompressor::Zstd(d) => d.read(buf),
            Decompressor::None(r) => r.read(buf),
        }
    }
}

/// Sniffs the compression of a stream from its magic bytes, without consuming
/// them. Used for archives whose layers carry no media type (docker-archive).
///
/// # Errors
/// A failing reader.
pub fn detect_compression<R: BufRead>(r: &mut R) -> io::Result<Compression> {
    let head = r.fill_buf()?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    })
}
