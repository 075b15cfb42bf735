//! Resolving base images (and `COPY --from` images) to images in the store:
//! archives and layout directories are imported, names and IDs looked up.
//! Also the [`BaseResolver`](crate::graph::BaseResolver) frontends use to learn
//! a base image's environment before lowering.

use std::cell::RefCell;
use std::collections::HashMap;

use super::error::error_chain;
use crate::graph::{BaseInfo, BaseResolver, ImageSource};
use crate::oci::import::{self, Imported, Source};
use crate::oci::{ImageConfig, Manifest};
use crate::store::Store;

/// Why an image could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum BaseError {
    /// Not in the local store (and registries are not supported yet).
    #[error(
        "image `{0}` not found in the local store (pulling from registries is not supported yet; load it with `imgbuild load FILE` or use oci-archive:PATH)"
    )]
    NotFound(String),
    /// The archive holds several images and the reference names none.
    #[error("{image} holds {count} images; name one, e.g. oci-archive:PATH:NAME")]
    Ambiguous {
        /// The source.
        image: String,
        /// How many images.
        count: usize,
    },
    /// The archive or layout could not be read.
    #[error("cannot read image {image}")]
    Import {
        /// The source.
        image: String,
        /// Why.
        #[source]
        source: crate::oci::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
}

/// Brings `src` into the store (if it is an archive or layout) and returns it.
///
/// # Errors
/// See [`BaseError`].
pub fn resolve(store: &Store, src: &ImageSource) -> Result<Imported, BaseError> {
    let key = src.to_string();
    match src {
        ImageSource::OciArchive { path, name }
        | ImageSource::DockerArchive { path, name }
        | ImageSource::OciDir { path, name } => {
            let source = match src {
                ImageSource::OciArchive { .. } => Source::OciArchive(path.clone()),
                ImageSource::DockerArchive { .. } => Source::DockerArchive(path.clone()),
                _ => Source::OciDir(path.clone()),
            };
            let mut all = import::import(store, &source, name.as_deref()).map_err(|source| {
                BaseError::Import {
                    image: key.clone(),
                    source,
                }
            })?;
            if all.len() > 1 {
                return Err(BaseError::Ambiguous {
                    image: key,
                    count: all.len(),
                });
            }
            all.pop().ok_or(BaseError::NotFound(key))
        }
        ImageSource::Id(id) => local(store, id),
        ImageSource::Named(r) => local(store, &r.to_string()),
    }
}

fn local(store: &Store, what: &str) -> Result<Imported, BaseError> {
    match store.resolve(what) {
        Ok(id) => {
            let rec = store
                .image(&id)?
                .ok_or_else(|| BaseError::NotFound(what.to_string()))?;
            Ok(Imported {
                manifest: rec.manifest,
                id,
                names: Vec::new(),
            })
        }
        Err(crate::store::Error::NoSuchImage(_)) => Err(BaseError::NotFound(what.to_string())),
        Err(e) => Err(e.into()),
    }
}

/// The config of an image in the store.
///
/// # Errors
/// Missing or corrupt blobs.
pub fn config(store: &Store, imported: &Imported) -> Result<ImageConfig, crate::oci::Error> {
    let m = Manifest::from_bytes(&store.read_blob(&imported.manifest)?)?;
    ImageConfig::from_bytes(&store.read_blob(&m.config)?)
}

/// [`BaseResolver`] over a store, remembering what it resolved.
pub struct StoreResolver<'a> {
    store: &'a Store,
    seen: RefCell<HashMap<String, BaseInfo>>,
}

impl<'a> StoreResolver<'a> {
    /// A resolver over `store`.
    pub fn new(store: &'a Store) -> Self {
        StoreResolver {
            store,
            seen: RefCell::new(HashMap::new()),
        }
    }
}

impl BaseResolver for StoreResolver<'_> {
    fn resolve(&self, image: &ImageSource) -> Result<BaseInfo, String> {
        let key = image.to_string();
        if let Some(i) = self.seen.borrow().get(&key) {
            return Ok(i.clone());
        }
        let imported = resolve(self.store, image).map_err(|e| error_chain(&e))?;
        let cfg = config(self.store, &imported).map_err(|e| error_chain(&e))?;
        let c = cfg.config();
        let info = BaseInfo {
            env: c.env().clone().unwrap_or_default(),
            workdir: c.working_dir().clone(),
            onbuild: cfg
                .docker_ext
                .get("OnBuild")
                .and_then(|v| serde_json::from_value::<Vec<String>>(v.clone()).ok())
                .unwrap_or_default(),
        };
        self.seen.borrow_mut().insert(key, info.clone());
        Ok(info)
    }
}
