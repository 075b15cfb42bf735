//! OCI image configs, manifests and indexes (through the `oci-spec` types), their
//! canonical bytes, and image archives: writing them and reading them back.
//!
//! Every document imgbuild hashes or writes goes through
//! [`crate::digest::canonical_json`], because oci-spec keeps labels, annotations,
//! ports and volumes in `HashMap`s whose order changes from run to run.

pub mod archive;
pub mod cache;
mod image;
pub mod import;
pub mod verify;

pub use image::Image;

use std::collections::BTreeMap;

use oci_spec::image::{
    Arch, Config, Descriptor, History, ImageConfiguration, ImageManifest, ImageManifestBuilder,
    MediaType, Os, RootFs,
};
use serde_json::Value;

use crate::digest::{Digest, canonical_json};

/// Media type of an OCI image manifest.
pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an OCI image index.
pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Media type of an OCI image config.
pub const MEDIA_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of a Docker v2 schema 2 manifest.
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Media type of a Docker manifest list.
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Media type of a Docker image config.
pub const MEDIA_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Annotation naming a manifest inside an OCI layout.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Annotation containerd (and docker) use for the full image name.
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";

/// OCI-level failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A JSON document did not parse as the type it should be.
    #[error("invalid {what}")]
    Json {
        /// Which document.
        what: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A digest string inside a document is malformed.
    #[error("invalid digest `{0}` in {1}")]
    BadDigest(String, &'static str),
    /// An archive or layout is malformed.
    #[error("{0}")]
    Malformed(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    /// A layer's uncompressed content is not what the image config says it
    /// is (OCI image spec: `rootfs.diff_ids` are the digests of the
    /// uncompressed layers).
    #[error(
        "layer {} is not what its image config claims: the config's diff_id is {}, \
         but the layer decompresses to {}",
        .0.layer, .0.claimed, .0.actual
    )]
    DiffIdMismatch(Box<Mismatch>),
    /// A layer blob does not decode as its media type says.
    #[error("layer {layer} cannot be read as {compression}")]
    LayerUnreadable {
        /// The layer blob.
        layer: Digest,
        /// The compression it was read as.
        compression: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A layer whose media type imgbuild cannot read, and so cannot verify.
    #[error("layer {layer} has media type `{media_type}`, which imgbuild cannot read")]
    UnsupportedLayer {
        /// The layer blob.
        layer: Digest,
        /// Its media type.
        media_type: String,
    },
    /// A layout directory could not be opened as a root.
    #[error(transparent)]
    Confine(#[from] crate::confine::Error),
    /// Reading or writing an archive failed.
    #[error("{action} {path}")]
    Io {
        /// What we were doing.
        action: &'static str,
        /// Which file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Result alias for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A layer whose content does not hash to the diff_id its config claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The layer blob.
    pub layer: Digest,
    /// The config's diff_id for it.
    pub claimed: Digest,
    /// The digest of its uncompressed content.
    pub actual: Digest,
}

/// Keys of a config's `config` object that the OCI spec (and so oci-spec) models.
const OCI_CONFIG_KEYS: &[&str] = &[
    "User",
    "ExposedPorts",
    "Env",
    "Entrypoint",
    "Cmd",
    "Volumes",
    "WorkingDir",
    "Labels",
    "StopSignal",
];

/// An image config: the OCI fields through oci-spec, plus the Docker extensions
/// of the `config` object (`Healthcheck`, `OnBuild`, `Shell`, …) that oci-spec
/// drops, kept as JSON so base images round-trip.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageConfig {
    /// The OCI fields.
    pub oci: ImageConfiguration,
    /// Docker extensions inside `config`, by key.
    pub docker_ext: BTreeMap<String, Value>,
}

impl ImageConfig {
    /// The config of an empty image (`FROM scratch`) for this host's platform.
    pub fn scratch() -> Self {
        let mut oci = ImageConfiguration::default();
        oci.set_architecture(host_arch());
        oci.set_os(Os::Linux);
        oci.set_rootfs(RootFs::default());
        oci.set_config(Some(Config::default()));
        ImageConfig {
            oci,
            docker_ext: BTreeMap::new(),
        }
    }

    /// Parses config bytes as found in an image.
    ///
    /// # Errors
    /// When the bytes are not a config.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let json_err = |source| Error::Json {
            what: "image config".into(),
            source,
        };
        let mut v: Value = serde_json::from_slice(bytes).map_err(json_err)?;
        let mut docker_ext = BTreeMap::new();
        if let Some(Value::Object(cfg)) = v.get_mut("config") {
            let extra: Vec<String> = cfg
                .keys()
                .filter(|k| !OCI_CONFIG_KEYS.contains(&k.as_str()))
                .cloned()
                .collect();
            for k in extra {
                if let Some(val) = cfg.remove(&k)
                    && !val.is_null()
                {
                    docker_ext.insert(k, val);
                }
            }
        }
        let oci: ImageConfiguration = serde_json::from_value(v).map_err(json_err)?;
        Ok(ImageConfig { oci, docker_ext })
    }

    /// The canonical bytes of this config; their digest is the image ID.
    ///
    /// # Errors
    /// Never for configs built by imgbuild; serde errors otherwise.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let json_err = |source| Error::Json {
            what: "image config".into(),
            source,
        };
        let mut v = serde_json::to_value(&self.oci).map_err(json_err)?;
        if !self.docker_ext.is_empty()
            && let Value::Object(top) = &mut v
        {
            let cfg = top
                .entry("config")
                .or_insert_with(|| Value::Object(serde_json::Map::new()));
            if let Value::Object(cfg) = cfg {
                for (k, val) in &self.docker_ext {
                    cfg.insert(k.clone(), val.clone());
                }
            }
        }
        canonical_json(&v).map_err(json_err)
    }

    /// Edits the runtime config (created empty if absent). oci-spec offers no
    /// mutable accessor for it, so this takes it out and puts it back.
    pub fn edit_config(&mut self, f: impl FnOnce(&mut Config)) {
        let mut cfg = self.oci.config().clone().unwrap_or_default();
        f(&mut cfg);
        self.oci.set_config(Some(cfg));
    }

    /// The runtime config, or an empty one.
    pub fn config(&self) -> Config {
        self.oci.config().clone().unwrap_or_default()
    }

    /// The diff IDs of the layers, in order.
    ///
    /// # Errors
    /// A malformed digest in `rootfs.diff_ids`.
    pub fn diff_ids(&self) -> Result<Vec<Digest>> {
        self.oci
            .rootfs()
            .diff_ids()
            .iter()
            .map(|s| {
                s.parse::<Digest>()
                    .map_err(|_| Error::BadDigest(s.clone(), "rootfs.diff_ids"))
            })
            .collect()
    }

    /// Appends a history entry.
    pub fn push_history(&mut self, h: History) {
        let mut hist = self.oci.history().clone().unwrap_or_default();
        hist.push(h);
        self.oci.set_history(Some(hist));
    }
}

/// The platform architecture of this host in GOARCH terms.
pub fn host_arch() -> Arch {
    Arch::from(crate::platform::host().arch.as_str())
}

/// One layer of an image: what the manifest and config say about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerDescriptor {
    /// Digest of the uncompressed tar (goes into the config).
    pub diff_id: Digest,
    /// Digest of the blob (goes into the manifest).
    pub digest: Digest,
    /// Size of the blob.
    pub size: u64,
    /// OCI media type of the blob.
    pub media_type: String,
}

/// Builds the OCI manifest for a config and its layers, returning its canonical
/// bytes.
///
/// # Errors
/// Serialization failures only.
pub fn manifest_bytes(
    config_digest: &Digest,
    config_size: u64,
    layers: &[LayerDescriptor],
) -> Result<Vec<u8>> {
    let layers: Vec<Descriptor> = layers
        .iter()
        .map(|l| descriptor(&l.media_type, &l.digest, l.size))
        .collect::<Result<_>>()?;
    let m: ImageManifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(descriptor(MEDIA_OCI_CONFIG, config_digest, config_size)?)
        .layers(layers)
        .build()
        .map_err(|e| Error::Malformed(format!("building manifest: {e}")))?;
    canonical_json(&m).map_err(|source| Error::Json {
        what: "manifest".into(),
        source,
    })
}

/// An oci-spec descriptor.
///
/// # Errors
/// Never for digests made by [`Digest`]; kept fallible because oci-spec parses.
pub fn descriptor(media_type: &str, digest: &Digest, size: u64) -> Result<Descriptor> {
    let d: oci_spec::image::Digest = digest
        .to_string()
        .parse()
        .map_err(|_| Error::BadDigest(digest.to_string(), "descriptor"))?;
    Ok(Descriptor::new(MediaType::from(media_type), size, d))
}

/// A parsed manifest, reduced to what imgbuild uses.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Config blob digest (the image ID).
    pub config: Digest,
    /// Config blob size.
    pub config_size: u64,
    /// Layer blobs, bottom first.
    pub layers: Vec<BlobDescriptor>,
}

/// A blob as a manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobDescriptor {
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Its media type, as the manifest spells it.
    pub media_type: String,
}

impl Manifest {
    /// Parses an OCI or Docker v2s2 manifest.
    ///
    /// # Errors
    /// When the bytes are not a manifest.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let m: ImageManifest = serde_json::from_slice(bytes).map_err(|source| Error::Json {
            what: "manifest".into(),
            source,
        })?;
        let dg = |d: &Descriptor| {
            d.digest()
                .to_string()
                .parse::<Digest>()
                .map_err(|_| Error::BadDigest(d.digest().to_string(), "manifest"))
        };
        Ok(Manifest {
            config: dg(m.config())?,
            config_size: m.config().size(),
            layers: m
                .layers()
                .iter()
                .map(|l| {
                    Ok(BlobDescriptor {
                        digest: dg(l)?,
                        size: l.size(),
                        media_type: l.media_type().to_string(),
                    })
                })
                .collect::<Result<_>>()?,
        })
    }
}

/// Formats a unix time as RFC 3339 UTC (`2023-11-14T22:13:20Z`), as image configs
/// carry it.
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm), proleptic Gregorian.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if mo <= 2 { y + 1 } else { y };
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

/// Parses the RFC 3339 timestamps found in configs (any offset, optional
/// fraction) back to unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' => 0,
        sign @ (b'+' | b'-') => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            let o = oh * 3600 + om * 60;
            if *sign == b'+' { o } else { -o }
        }
        _ => return None,
    };
    // Days-from-civil.
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + se - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20Z"), Some(1_700_000_000));
        assert_eq!(
            parse_rfc3339("2023-11-14T23:13:20.123456789+01:00"),
            Some(1_700_000_000)
        );
        for t in [0, 951_782_400, 4_102_444_800] {
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
        }
    }

    #[test]
    fn config_round_trips_docker_extensions() {
        let raw = br#"{"architecture":"amd64","os":"linux","config":{"Env":["A=1"],"Healthcheck":{"Test":["CMD","true"]},"OnBuild":null,"Labels":{"b":"2","a":"1"}},"rootfs":{"type":"layers","diff_ids":[]}}"#;
        let c = ImageConfig::from_bytes(raw).unwrap();
        assert!(c.docker_ext.contains_key("Healthcheck"));
        assert!(!c.docker_ext.contains_key("OnBuild"));
        let out = String::from_utf8(c.to_bytes().unwrap()).unwrap();
        assert_eq!(
            out,
            r#"{"architecture":"amd64","config":{"Env":["A=1"],"Healthcheck":{"Test":["CMD","true"]},"Labels":{"a":"1","b":"2"}},"os":"linux","rootfs":{"diff_ids":[],"type":"layers"}}"#
        );
    }
}
