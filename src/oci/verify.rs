//! Layers are what their configs claim: a layer's uncompressed stream must
//! hash to the config's `diff_id` before the layer is stored, and again when
//! it is extracted. Caches keyed by diff_id (`layers/`, `snapshots/`) rely on
//! this: without it, an image could claim another image's diff_id for bytes
//! of its own and replace that layer for everyone sharing it.
//!
//! Verification is streamed, never a second pass and never in memory:
//!
//! - while a blob is written through a staging view (load, pull), an
//!   [`UnpackTap`] feeds a copy of the bytes to a decompressor on a thread of
//!   its own, which hashes what comes out; the result is known when the blob
//!   is complete, and the caller compares it with the config before
//!   publishing anything ([`check_layers`]);
//! - extraction reads through a [`VerifiedLayer`], which hashes the
//!   decompressed stream it hands to the extractor and is finished before the
//!   extraction is made visible;
//! - what a blob was seen to decompress to is remembered in the store
//!   (`diffids/`), so a blob that is already there ("Already exists") is not
//!   decoded again to check a new image's claim about it.

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use super::{Error, LayerDescriptor, Mismatch, Result};
use crate::digest::{Digest, HashingReader};
use crate::layer::{Compression, Decompressor};
use crate::store::gc::Checked;
use crate::store::{BlobTap, Store, TapMaker};

/// Bytes handed to the decoding thread at a time.
const CHUNK: usize = 256 * 1024;
/// Chunks in flight: bounds the memory a tap holds (1 MiB).
const IN_FLIGHT: usize = 4;

/// The [`TapMaker`] for staging views that take in layers: every blob that
/// looks gzip- or zstd-compressed is decoded and hashed as it is written.
pub fn unpack_taps() -> Arc<TapMaker> {
    Arc::new(|| Box::new(UnpackTap::Sniffing(Vec::new())) as Box<dyn BlobTap>)
}

/// A staging view of `store` whose blobs are decoded as they are written.
///
/// # Errors
/// When the staging directory cannot be made.
pub fn staging(store: &Store) -> Result<Store> {
    Ok(store.staging(unpack_taps())?)
}

/// Decodes a copy of a blob's bytes on a thread of its own and hashes the
/// result, so the writer pays one memcpy per byte and nothing waits on it.
pub enum UnpackTap {
    /// Waiting for the first bytes to tell the compression.
    Sniffing(Vec<u8>),
    /// Not compressed (configs, manifests, plain tars): nothing to do.
    Plain,
    /// Feeding the decoder.
    Decoding(Decoding),
}

/// A running decoder of an [`UnpackTap`].
pub struct Decoding {
    compression: Compression,
    buf: Vec<u8>,
    tx: Option<SyncSender<Vec<u8>>>,
    worker: JoinHandle<io::Result<Digest>>,
}

fn sniff(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

impl UnpackTap {
    /// Leaves `Sniffing` once the head tells the compression (or, at the end
    /// of the blob, with whatever head there is).
    fn decide(&mut self, at_end: bool) {
        let UnpackTap::Sniffing(head) = self else {
            return;
        };
        if head.len() < 4 && !at_end {
            return;
        }
        let head = std::mem::take(head);
        *self = match sniff(&head) {
            Compression::None => UnpackTap::Plain,
            c => match Decoding::start(c, head) {
                Some(d) => UnpackTap::Decoding(d),
                // No thread: the digest is computed when the layer is used.
                None => UnpackTap::Plain,
            },
        };
    }
}

impl Decoding {
    fn start(compression: Compression, head: Vec<u8>) -> Option<Decoding> {
        let (tx, rx) = sync_channel::<Vec<u8>>(IN_FLIGHT);
        let worker = std::thread::Builder::new()
            .name("unpack".into())
            .spawn(move || {
                let reader = ChunkReader {
                    rx,
                    cur: Vec::new(),
                    pos: 0,
                };
                let mut hashing = HashingReader::new(Decompressor::new(reader, compression)?);
                io::copy(&mut hashing, &mut io::sink())?;
                Ok(hashing.finish().0)
            })
            .ok()?;
        let mut buf = Vec::with_capacity(CHUNK);
        buf.extend_from_slice(&head);
        Some(Decoding {
            compression,
            buf,
            tx: Some(tx),
            worker,
        })
    }

    fn send(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        if let Some(tx) = &self.tx
            && tx.send(chunk).is_err()
        {
            // The decoder stopped (a corrupt stream): nothing more to feed.
            self.tx = None;
        }
    }
}

impl BlobTap for UnpackTap {
    fn write(&mut self, bytes: &[u8]) {
        if let UnpackTap::Sniffing(head) = self {
            head.extend_from_slice(bytes);
            self.decide(false);
            return;
        }
        if let UnpackTap::Decoding(d) = self
            && d.tx.is_some()
        {
            d.buf.extend_from_slice(bytes);
            if d.buf.len() >= CHUNK {
                d.send();
            }
        }
    }

    fn finish(mut self: Box<Self>) -> Option<(String, Digest)> {
        self.decide(true);
        match *self {
            UnpackTap::Decoding(mut d) => {
                d.send();
                d.tx = None;
                let digest = d.worker.join().ok()?.ok()?;
                Some((d.compression.name().to_string(), digest))
            }
            UnpackTap::Sniffing(_) | UnpackTap::Plain => None,
        }
    }
}

/// The decoder's input: the chunks the tap sends, then end of file when the
/// tap hangs up.
struct ChunkReader {
    rx: Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    self.cur = chunk;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The compression a layer's media type declares.
///
/// # Errors
/// [`Error::UnsupportedLayer`] for media types that are not layers imgbuild
/// can read (and so verify).
pub fn compression_of(layer: &Digest, media_type: &str) -> Result<Compression> {
    Compression::from_media_type(media_type).ok_or_else(|| Error::UnsupportedLayer {
        layer: *layer,
        media_type: media_type.to_string(),
    })
}

/// The digest of what the blob `blob` decompresses to as `compression`:
/// known without reading when the blob is uncompressed (its content is its
/// verified digest), seen while it was staged, or remembered in the store;
/// otherwise the blob is decoded and hashed once, and remembered.
///
/// # Errors
/// A missing blob, or one that does not decode as `compression`.
pub fn diff_id_of(store: &Store, blob: &Digest, compression: Compression) -> Result<Digest> {
    if compression == Compression::None {
        return Ok(*blob);
    }
    let name = compression.name();
    if let Some((seen, d)) = store.staged_unpacked(blob)
        && seen == name
    {
        return Ok(d);
    }
    if let Some(d) = store.diff_ids(blob).get(name) {
        return Ok(*d);
    }
    let d = decode_digest(store, blob, compression)?;
    if !store.is_staged(blob) {
        store.put_diff_id(blob, name, &d)?;
    }
    Ok(d)
}

/// Decodes the blob and hashes what comes out.
fn decode_digest(store: &Store, blob: &Digest, compression: Compression) -> Result<Digest> {
    let unreadable = |source| Error::LayerUnreadable {
        layer: *blob,
        compression: compression.name(),
        source,
    };
    let f = store.open_blob(blob)?;
    let d = Decompressor::new(io::BufReader::with_capacity(1 << 20, f), compression)
        .map_err(unreadable)?;
    let mut h = HashingReader::new(d);
    io::copy(&mut h, &mut io::sink()).map_err(unreadable)?;
    Ok(h.finish().0)
}

/// Checks every layer against its diff_id (see [`diff_id_of`]).
///
/// # Errors
/// [`Error::DiffIdMismatch`] for the first layer that is not what its config
/// claims; unreadable or unsupported layers.
pub fn check_layers(store: &Store, layers: &[LayerDescriptor]) -> Result<()> {
    for l in layers {
        let c = compression_of(&l.digest, &l.media_type)?;
        let actual = diff_id_of(store, &l.digest, c)?;
        if actual != l.diff_id {
            return Err(Error::DiffIdMismatch(Box::new(Mismatch {
                layer: l.digest,
                claimed: l.diff_id,
                actual,
            })));
        }
    }
    Ok(())
}

/// A layer's uncompressed stream that checks itself against the layer's
/// diff_id: read it (the extractor does), then [`VerifiedLayer::finish`]
/// before using what was made from it.
pub struct VerifiedLayer {
    inner: HashingReader<Decompressor<io::BufReader<std::fs::File>>>,
    layer: LayerDescriptor,
    compression: Compression,
    store: Store,
}

/// Opens `layer`'s blob as its uncompressed tar stream, hashed as it is read.
///
/// # Errors
/// A missing blob or an unsupported media type.
pub fn open_verified(store: &Store, layer: &LayerDescriptor) -> Result<VerifiedLayer> {
    let compression = compression_of(&layer.digest, &layer.media_type)?;
    let f = store.open_blob(&layer.digest)?;
    let d = Decompressor::new(io::BufReader::with_capacity(1 << 20, f), compression).map_err(
        |source| Error::LayerUnreadable {
            layer: layer.digest,
            compression: compression.name(),
            source,
        },
    )?;
    Ok(VerifiedLayer {
        inner: HashingReader::new(d),
        layer: layer.clone(),
        compression,
        store: store.clone(),
    })
}

impl Read for VerifiedLayer {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl VerifiedLayer {
    /// Reads what the consumer left (a tar reader stops at the end-of-archive
    /// blocks, before the padding) and compares the digest of the whole
    /// stream with the layer's diff_id.
    ///
    /// # Errors
    /// [`Error::DiffIdMismatch`], or a stream that breaks off.
    pub fn finish(mut self) -> Result<()> {
        io::copy(&mut self.inner, &mut io::sink()).map_err(|source| Error::LayerUnreadable {
            layer: self.layer.digest,
            compression: self.compression.name(),
            source,
        })?;
        let (actual, _) = self.inner.finish();
        if actual != self.layer.diff_id {
            return Err(Error::DiffIdMismatch(Box::new(Mismatch {
                layer: self.layer.digest,
                claimed: self.layer.diff_id,
                actual,
            })));
        }
        if self.compression != Compression::None {
            // Only a cache: a failure costs a decode later.
            let _ = self
                .store
                .put_diff_id(&self.layer.digest, self.compression.name(), &actual);
        }
        Ok(())
    }
}

/// `store check`'s part for layers: every image's layers decode to the
/// diff_ids its config claims, and what the store remembers of a blob's
/// decoding is true. Images found bad are reported through `checked`, with
/// their tags and cache entries as the repair.
///
/// # Errors
/// When the store cannot be listed.
pub fn check_store(store: &Store, checked: &mut Checked) -> crate::store::Result<()> {
    for id in store.image_ids()? {
        if checked.bad_images.contains(&id) {
            continue;
        }
        let Ok(Some(rec)) = store.image(&id) else {
            continue;
        };
        let layers = match image_layers(store, &rec.manifest) {
            Ok(l) => l,
            Err(e) => {
                checked.bad_image(store, id, format!("image {}: {e}", id.short()))?;
                continue;
            }
        };
        for (i, l) in layers.iter().enumerate() {
            if !checked.blobs.contains(&l.digest) {
                // Missing or corrupt: already reported by the blob check.
                continue;
            }
            let what = match decoded(store, checked, l) {
                Ok(actual) if actual == l.diff_id => continue,
                Ok(actual) => format!(
                    "image {}: layer {} ({}) decompresses to {actual}, but its config claims diff_id {}",
                    id.short(),
                    i + 1,
                    l.digest,
                    l.diff_id
                ),
                Err(why) => format!(
                    "image {}: layer {} ({}): {why}",
                    id.short(),
                    i + 1,
                    l.digest
                ),
            };
            checked.bad_image(store, id, what)?;
            break;
        }
    }
    // What the store remembers must be what the blobs really decode to.
    let records: Vec<Digest> = checked.blobs.iter().copied().collect();
    for blob in records {
        for (name, remembered) in store.diff_ids(&blob) {
            let Some(c) = Compression::from_name(&name) else {
                continue;
            };
            let key = (blob, name.clone());
            let actual = match checked.unpacked.get(&key) {
                Some(r) => r.clone(),
                None => {
                    let r = decode_digest(store, &blob, c).map_err(|e| chain(&e));
                    checked.unpacked.insert(key, r.clone());
                    r
                }
            };
            if actual.as_ref().ok() != Some(&remembered) {
                checked.problems.push(crate::store::gc::Problem {
                    what: format!(
                        "the store's record says blob {blob} decompresses ({name}) to {remembered}, which is wrong"
                    ),
                    fixes: vec![crate::store::gc::Fix::DiffIds(blob)],
                });
                break;
            }
        }
    }
    Ok(())
}

/// What `l`'s blob decodes to, decoding it at most once per check.
fn decoded(
    store: &Store,
    checked: &mut Checked,
    l: &LayerDescriptor,
) -> std::result::Result<Digest, String> {
    let c = compression_of(&l.digest, &l.media_type).map_err(|e| e.to_string())?;
    if c == Compression::None {
        return Ok(l.digest);
    }
    let key = (l.digest, c.name().to_string());
    if let Some(r) = checked.unpacked.get(&key) {
        return r.clone();
    }
    let r = decode_digest(store, &l.digest, c).map_err(|e| chain(&e));
    checked.unpacked.insert(key, r.clone());
    r
}

/// An error with its causes, for a problem line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The layers of the image whose manifest is `manifest`, with their diff_ids.
///
/// # Errors
/// Missing or malformed manifest or config, or a count mismatch.
pub fn image_layers(store: &Store, manifest: &Digest) -> Result<Vec<LayerDescriptor>> {
    Ok(super::Image::from_manifest(store, manifest)?.layers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn a_staged_blob_is_decoded_as_it_is_written() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path()).unwrap();
        let tar: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let gz = gzip(&tar);
        let view = staging(&store).unwrap();
        let mut w = view.blob_writer().unwrap();
        // Small writes, as a network body gives them.
        for piece in gz.chunks(7919) {
            w.write_all(piece).unwrap();
        }
        let blob = w.commit(None).unwrap();
        assert!(view.is_staged(&blob) && !store.has_blob(&blob));
        assert_eq!(
            view.staged_unpacked(&blob),
            Some(("gzip".to_string(), Digest::of(&tar)))
        );
        let layer = LayerDescriptor {
            diff_id: Digest::of(&tar),
            digest: blob,
            size: gz.len() as u64,
            media_type: Compression::Gzip.oci_media_type().into(),
        };
        check_layers(&view, std::slice::from_ref(&layer)).unwrap();
        let liar = LayerDescriptor {
            diff_id: Digest::of(b"something else"),
            ..layer.clone()
        };
        assert!(matches!(
            check_layers(&view, &[liar]),
            Err(Error::DiffIdMismatch(_))
        ));
        view.publish(&[blob]).unwrap();
        assert!(store.has_blob(&blob));
        // Remembered: the store knows without decoding again.
        assert_eq!(store.diff_ids(&blob).get("gzip"), Some(&Digest::of(&tar)));
        // Dropping the view removes what was not published.
        drop(view);
        assert_eq!(
            fs_err::read_dir(d.path().join("tmp"))
                .unwrap()
                .flatten()
                .filter(|e| e.path().is_dir())
                .flat_map(|e| fs_err::read_dir(e.path()).unwrap())
                .count(),
            0
        );
    }

    #[test]
    fn extraction_stream_checks_itself() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path()).unwrap();
        let tar = b"not really a tar, but a stream".to_vec();
        let gz = gzip(&tar);
        let blob = store.put_blob(&gz).unwrap();
        let mut layer = LayerDescriptor {
            diff_id: Digest::of(&tar),
            digest: blob,
            size: gz.len() as u64,
            media_type: Compression::Gzip.oci_media_type().into(),
        };
        let mut v = open_verified(&store, &layer).unwrap();
        let mut first = [0u8; 5];
        v.read_exact(&mut first).unwrap();
        // The rest is drained by finish.
        v.finish().unwrap();
        layer.diff_id = Digest::of(b"a lie");
        let v = open_verified(&store, &layer).unwrap();
        match v.finish() {
            Err(Error::DiffIdMismatch(m)) => {
                assert_eq!(m.claimed, Digest::of(b"a lie"));
                assert_eq!(m.actual, Digest::of(&tar));
            }
            other => panic!("{other:?}"),
        }
    }
}
