//! `--cache-to` and `--cache-from` in buildx's syntax: `type=registry,ref=REF`,
//! `type=local,dest=DIR` / `src=DIR`, `type=inline`, each with its
//! attributes; plus the short forms `registry:REF` and a bare `REF`.

use std::path::Path;

use super::{ArgError, absolute};
use crate::oci::cache::{Layout, Mode};
use crate::reference::Reference;

/// Where a build cache is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheBackend {
    /// A cache artifact (or, read back, an image with an inline cache) in
    /// a registry.
    Registry(Reference),
    /// An OCI layout directory.
    Local(Layout),
    /// The output image's own config (`--cache-to` only).
    Inline,
}

/// One `--cache-to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheTo {
    /// Where.
    pub backend: CacheBackend,
    /// Which steps.
    pub mode: Mode,
    /// `ignore-error=true`: a failed export is a warning.
    pub ignore_error: bool,
}

/// Attributes buildx accepts that change nothing here: imgbuild's cache
/// blobs are the store's own (compressed as built), and its manifest is
/// always an OCI image manifest.
const IGNORED: &[&str] = &[
    "compression",
    "compression-level",
    "force-compression",
    "oci-mediatypes",
    "image-manifest",
];

fn syntax(spec: &str, why: impl Into<String>) -> ArgError {
    ArgError::CacheSyntax {
        spec: spec.to_string(),
        why: why.into(),
    }
}

/// The `key=value` fields of a buildx cache spec, or `None` for a short
/// form (`registry:REF`, `REF`).
fn fields(spec: &str) -> Result<Option<Vec<(&str, &str)>>, ArgError> {
    if spec.starts_with("registry:") || !spec.contains('=') {
        return Ok(None);
    }
    spec.split(',')
        .map(|f| {
            f.split_once('=')
                .ok_or_else(|| syntax(spec, format!("`{f}` is not KEY=VALUE")))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// The `type=` of `fields`, checked to be one imgbuild knows before any
/// other attribute is (a `type=gha` has attributes of its own).
fn kind<'a>(spec: &str, fields: &[(&str, &'a str)]) -> Result<&'a str, ArgError> {
    let kind = fields
        .iter()
        .rev()
        .find(|(k, _)| *k == "type")
        .map(|(_, v)| *v);
    match kind {
        Some(k @ ("registry" | "local" | "inline")) => Ok(k),
        other => Err(unknown_type(spec, other)),
    }
}

fn reference(r: &str) -> Result<Reference, ArgError> {
    Reference::parse(r).map_err(ArgError::CacheRef)
}

fn local(spec: &str, dir: Option<&str>, key: &str, cwd: Option<&Path>) -> Result<Layout, ArgError> {
    let dir = dir
        .filter(|d| !d.is_empty())
        .ok_or_else(|| syntax(spec, format!("type=local needs {key}=DIR")))?;
    Ok(Layout {
        dir: absolute(cwd, Path::new(dir))?,
        tag: "latest".into(),
        digest: None,
    })
}

/// Parses a `--cache-to`; relative directories are taken from `cwd`.
///
/// # Errors
/// A spec of no known form, an unknown attribute, or a bad reference.
pub fn cache_to(spec: &str, cwd: Option<&Path>) -> Result<CacheTo, ArgError> {
    let Some(fields) = fields(spec)? else {
        // The short form exports everything: what a shared cache is for.
        return Ok(CacheTo {
            backend: CacheBackend::Registry(reference(
                spec.strip_prefix("registry:").unwrap_or(spec),
            )?),
            mode: Mode::Max,
            ignore_error: false,
        });
    };
    let kind = kind(spec, &fields)?;
    let (mut r, mut dest, mut tag, mut mode, mut ignore_error) = (None, None, None, None, false);
    for (k, v) in fields {
        match k {
            "type" => {}
            "ref" => r = Some(v),
            "dest" => dest = Some(v),
            "tag" => tag = Some(v),
            "mode" => {
                mode = Some(match v {
                    "min" => Mode::Min,
                    "max" => Mode::Max,
                    _ => return Err(syntax(spec, format!("mode={v}: expected min or max"))),
                });
            }
            "ignore-error" => {
                ignore_error = parse_bool(spec, k, v)?;
            }
            k if IGNORED.contains(&k) => {}
            k => return Err(syntax(spec, format!("unknown attribute `{k}`"))),
        }
    }
    let backend = match kind {
        "registry" => CacheBackend::Registry(reference(
            r.ok_or_else(|| syntax(spec, "type=registry needs ref=REF"))?,
        )?),
        "local" => {
            let mut l = local(spec, dest, "dest", cwd)?;
            if let Some(t) = tag {
                l.tag = t.to_string();
            }
            CacheBackend::Local(l)
        }
        _ => {
            if mode == Some(Mode::Max) {
                return Err(syntax(
                    spec,
                    "an inline cache holds only the image's own steps (mode=min); \
                     use type=registry or type=local for mode=max",
                ));
            }
            CacheBackend::Inline
        }
    };
    Ok(CacheTo {
        backend,
        mode: mode.unwrap_or_default(),
        ignore_error,
    })
}

/// Parses a `--cache-from`; relative directories are taken from `cwd`.
///
/// # Errors
/// A spec of no known form, an unknown attribute, or a bad reference.
pub fn cache_from(spec: &str, cwd: Option<&Path>) -> Result<CacheBackend, ArgError> {
    let Some(fields) = fields(spec)? else {
        return Ok(CacheBackend::Registry(reference(
            spec.strip_prefix("registry:").unwrap_or(spec),
        )?));
    };
    let kind = kind(spec, &fields)?;
    let (mut r, mut src, mut tag, mut digest) = (None, None, None, None);
    for (k, v) in fields {
        match k {
            "type" => {}
            "ref" => r = Some(v),
            "src" => src = Some(v),
            "tag" => tag = Some(v),
            "digest" => {
                digest = Some(
                    v.parse()
                        .map_err(|_| syntax(spec, format!("digest={v} is no digest")))?,
                );
            }
            k => return Err(syntax(spec, format!("unknown attribute `{k}`"))),
        }
    }
    match kind {
        "registry" => {
            Ok(CacheBackend::Registry(reference(r.ok_or_else(|| {
                syntax(spec, "type=registry needs ref=REF")
            })?)?))
        }
        "local" => {
            let mut l = local(spec, src, "src", cwd)?;
            if let Some(t) = tag {
                l.tag = t.to_string();
            }
            l.digest = digest;
            Ok(CacheBackend::Local(l))
        }
        _ => Err(syntax(
            spec,
            "an inline cache is read from its image: type=registry,ref=IMAGE",
        )),
    }
}

fn unknown_type(spec: &str, kind: Option<&str>) -> ArgError {
    match kind {
        None => syntax(spec, "no type= (registry, local or inline)"),
        Some(t @ ("gha" | "s3" | "azblob")) => syntax(
            spec,
            format!(
                "type={t} is a cloud service imgbuild cannot reach; \
                 use type=registry, type=local or type=inline"
            ),
        ),
        Some(t) => syntax(
            spec,
            format!("unknown type `{t}` (registry, local or inline)"),
        ),
    }
}

fn parse_bool(spec: &str, key: &str, v: &str) -> Result<bool, ArgError> {
    match v {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(syntax(spec, format!("{key}={v}: expected true or false"))),
    }
}
