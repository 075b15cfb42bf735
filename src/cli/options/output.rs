//! `-o` in buildx's syntax: `type=oci|docker|tar|local|image|registry`
//! with `dest=`, `name=`, `push=`, `compression=`, `compression-level=`,
//! `force-compression=`, `oci-mediatypes=`; `-o PATH` stays imgbuild's
//! short form for an OCI archive, and `-o -` is buildx's (the root
//! filesystem as a tar on stdout).

use std::path::{Path, PathBuf};

use super::{ArgError, absolute};
use crate::layer::Compression;
use crate::oci::archive::ArchiveFormat;
use crate::reference::Reference;

/// What an output writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// An image archive (OCI, with a docker `manifest.json` too, or
    /// docker's own) at `dest`.
    Archive(ArchiveFormat),
    /// The root filesystem as a tarball.
    Tar,
    /// The root filesystem into a directory.
    Local,
    /// The image in the store under `name=`, pushed with `push=true`.
    Image,
}

/// Where an output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// Nowhere (type=image, type=registry).
    None,
    /// Standard output (`dest=-`).
    Stdout,
    /// A path: absolute, and as written (a depfile rule's target).
    Path(PathBuf, PathBuf),
}

/// One `-o`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    /// What.
    pub kind: OutputKind,
    /// Where.
    pub dest: Dest,
    /// `name=`: tags.
    pub names: Vec<Reference>,
    /// `push=true` (always for type=registry).
    pub push: bool,
    /// `compression=`.
    pub compression: Option<Compression>,
    /// `force-compression=true`: every layer in `compression`, base
    /// layers included.
    pub force_compression: bool,
}

fn syntax(spec: &str, why: impl Into<String>) -> ArgError {
    ArgError::OutputSyntax {
        spec: spec.to_string(),
        why: why.into(),
    }
}

fn parse_bool(spec: &str, key: &str, v: &str) -> Result<bool, ArgError> {
    match v {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(syntax(spec, format!("{key}={v}: expected true or false"))),
    }
}

/// Splits `a=b,c="d,e"` at the commas outside double quotes (buildx reads
/// these fields as CSV, so `name="a:1,b:2"` names two tags).
fn csv_fields(spec: &str) -> Result<Vec<(String, String)>, ArgError> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in spec.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    if quoted {
        return Err(syntax(spec, "an unterminated quote"));
    }
    fields.push(cur);
    fields
        .into_iter()
        .map(|f| match f.split_once('=') {
            Some((k, v)) => Ok((k.trim().to_string(), v.to_string())),
            None => Err(syntax(spec, format!("`{f}` is not KEY=VALUE"))),
        })
        .collect()
}

/// Parses one `-o`; relative destinations are taken from `cwd`.
///
/// # Errors
/// A spec of no known form, an unknown attribute, a bad name, or a
/// destination the type needs and lacks.
pub fn output(spec: &str, cwd: Option<&Path>) -> Result<OutputSpec, ArgError> {
    if spec == "-" {
        return Ok(OutputSpec {
            kind: OutputKind::Tar,
            dest: Dest::Stdout,
            names: Vec::new(),
            push: false,
            compression: None,
            force_compression: false,
        });
    }
    if !spec.contains('=') {
        return Ok(OutputSpec {
            kind: OutputKind::Archive(ArchiveFormat::Oci),
            dest: Dest::Path(absolute(cwd, Path::new(spec))?, PathBuf::from(spec)),
            names: Vec::new(),
            push: false,
            compression: None,
            force_compression: false,
        });
    }
    let fields = csv_fields(spec)?;
    let kind = fields
        .iter()
        .rev()
        .find(|(k, _)| k == "type")
        .map(|(_, v)| v.as_str());
    let (mut kind, registry) = match kind {
        Some("oci") => (OutputKind::Archive(ArchiveFormat::Oci), false),
        Some("docker") => (OutputKind::Archive(ArchiveFormat::Docker), false),
        Some("tar") => (OutputKind::Tar, false),
        Some("local") => (OutputKind::Local, false),
        Some("image") => (OutputKind::Image, false),
        Some("registry") => (OutputKind::Image, true),
        Some("cacheonly") => {
            return Err(syntax(
                spec,
                "type=cacheonly: build with --cache-to and no -o instead",
            ));
        }
        Some(t) => {
            return Err(syntax(
                spec,
                format!("unknown type `{t}` (oci, docker, tar, local, image or registry)"),
            ));
        }
        None => return Err(syntax(spec, "no type=")),
    };
    let mut out = OutputSpec {
        kind,
        dest: Dest::None,
        names: Vec::new(),
        push: registry,
        compression: None,
        force_compression: false,
    };
    let mut level = None;
    for (k, v) in &fields {
        match k.as_str() {
            "type" => {}
            "dest" if v == "-" => out.dest = Dest::Stdout,
            "dest" if !v.is_empty() => {
                out.dest = Dest::Path(absolute(cwd, Path::new(v))?, PathBuf::from(v));
            }
            "dest" => return Err(syntax(spec, "dest= is empty")),
            "name" => {
                for n in v.split(',').filter(|n| !n.is_empty()) {
                    out.names
                        .push(Reference::parse(n.trim()).map_err(ArgError::Tag)?);
                }
            }
            "push" => out.push = parse_bool(spec, k, v)? || registry,
            "compression" => {
                out.compression = Some(match v.as_str() {
                    "gzip" => Compression::Gzip,
                    "zstd" => Compression::Zstd,
                    "uncompressed" => Compression::None,
                    "estargz" => {
                        return Err(syntax(
                            spec,
                            "compression=estargz is not written by imgbuild; use gzip, zstd or uncompressed",
                        ));
                    }
                    _ => {
                        return Err(syntax(
                            spec,
                            format!("compression={v}: expected gzip, zstd or uncompressed"),
                        ));
                    }
                });
            }
            "compression-level" => {
                level =
                    Some(v.parse::<u32>().map_err(|_| {
                        syntax(spec, format!("compression-level={v} is no number"))
                    })?);
            }
            "force-compression" => out.force_compression = parse_bool(spec, k, v)?,
            "oci-mediatypes" => {
                // imgbuild's OCI archive carries a docker manifest.json
                // too; docker's archive has docker media types.
                let oci = parse_bool(spec, k, v)?;
                if let OutputKind::Archive(_) = kind {
                    kind = OutputKind::Archive(if oci {
                        ArchiveFormat::Oci
                    } else {
                        ArchiveFormat::Docker
                    });
                    out.kind = kind;
                }
            }
            // buildx attributes that change nothing here.
            "tar" if v == "true" && matches!(kind, OutputKind::Archive(_)) => {}
            "tar" => {
                return Err(syntax(
                    spec,
                    "tar=false (an OCI layout directory) is not written; use an archive",
                ));
            }
            "unpack" | "store" | "annotation" | "platform-split" => {}
            k if k.starts_with("annotation") => {}
            k => return Err(syntax(spec, format!("unknown attribute `{k}`"))),
        }
    }
    if let Some(level) = level {
        // The layer digests depend on the level (docs/architecture.md):
        // imgbuild compresses at one pinned level per format.
        let pinned = match out.compression.unwrap_or(Compression::Gzip) {
            Compression::Gzip => 6,
            Compression::Zstd => 3,
            Compression::None => level,
        };
        if level != pinned {
            return Err(syntax(
                spec,
                format!(
                    "compression-level={level}: imgbuild compresses at level {pinned}, \
                     pinned because layer digests depend on it"
                ),
            ));
        }
    }
    match (kind, &out.dest) {
        (OutputKind::Archive(_) | OutputKind::Tar, Dest::None) => Err(syntax(
            spec,
            "needs dest=FILE (or dest=- for standard output)",
        )),
        (OutputKind::Local, Dest::None) => Err(syntax(spec, "needs dest=DIR")),
        (OutputKind::Local, Dest::Stdout) => {
            Err(syntax(spec, "type=local writes a directory: dest=DIR"))
        }
        (OutputKind::Image, Dest::Path(..) | Dest::Stdout) => Err(syntax(
            spec,
            "type=image and type=registry go to the store and a registry: no dest=",
        )),
        (OutputKind::Image, Dest::None) if out.push && out.names.is_empty() => {
            Err(syntax(spec, "pushing needs name=REGISTRY/NAME:TAG"))
        }
        _ => Ok(out),
    }
}
