//! Resolving base images (and `COPY --from` images) to images in the store:
//! archives and layout directories are imported, names and IDs looked up.
//! Also the [`BaseResolver`](crate::graph::BaseResolver) frontends use to learn
//! a base image's environment before lowering.

use std::sync::Arc;

use crate::progress::{Event as ProgressEvent, Sink};
use std::cell::RefCell;
use std::collections::HashMap;

use super::error::error_chain;
use crate::graph::{BaseInfo, BaseResolver, ImageSource};
use crate::oci::ImageConfig;
use crate::oci::import::{self, Imported, Source};
use crate::platform::Platform;
use crate::store::Store;

/// Why an image could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum BaseError {
    /// Not in the local store, and not pulled.
    #[error(
        "image `{0}` not found in the local store (pull it with `imgbuild pull`, load it with `imgbuild load FILE`, or use oci-archive:PATH)"
    )]
    NotFound(String),
    /// Pulling it from its registry failed.
    #[error("pulling {image}")]
    Pull {
        /// The reference.
        image: String,
        /// Why.
        #[source]
        source: Box<crate::registry::Error>,
    },
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
    /// The image has no variant for the platform asked for.
    #[error(
        "{image} has no image for {want} (it has: {})",
        crate::platform::index::list(has)
    )]
    Platform {
        /// The source.
        image: String,
        /// The platform asked for.
        want: Box<Platform>,
        /// The platforms it has.
        has: Vec<Platform>,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
}

/// When and how named images come from their registries.
pub struct Puller {
    /// Connection settings.
    pub options: crate::registry::Options,
    /// Pull even when the store has the name (`--pull`): once per run.
    pub always: bool,
    /// Where docker's pull lines go, as [`ProgressEvent::Pull`].
    events: Arc<dyn Sink>,
    /// References pulled in this run.
    pulled: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl std::fmt::Debug for Puller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Puller")
            .field("options", &self.options)
            .field("always", &self.always)
            .finish_non_exhaustive()
    }
}

impl Puller {
    /// Pulls missing images (and with `always`, every named image once),
    /// reporting docker's pull lines to `events`.
    pub fn new(options: crate::registry::Options, always: bool, events: Arc<dyn Sink>) -> Self {
        Puller {
            options,
            always,
            events,
            pulled: Default::default(),
        }
    }

    fn pull(
        &self,
        store: &Store,
        r: &crate::reference::Reference,
        platform: &Platform,
    ) -> Result<(), BaseError> {
        use crate::registry::pull::Event;
        let mut client = crate::registry::Client::new(r.domain(), &self.options);
        // Retries on the same stream as the pull's lines.
        let events = Arc::clone(&self.events);
        client = client.with_notices(move |r| {
            events.event(ProgressEvent::Pull {
                line: r.to_string(),
            });
        });
        let say = |line: String| self.events.event(ProgressEvent::Pull { line });
        let on = |e: Event<'_>| {
            if let Some(line) = e.line() {
                say(line);
            }
        };
        let pulled = crate::registry::pull::pull(store, &client, r, Some(platform), &on).map_err(
            |source| BaseError::Pull {
                image: r.familiar(),
                source: Box::new(source),
            },
        )?;
        say(format!("Digest: {}", pulled.digest));
        if let Ok(mut p) = self.pulled.lock() {
            p.insert(format!("{r} {platform}"));
        }
        Ok(())
    }

    fn pulled(&self, r: &crate::reference::Reference, platform: &Platform) -> bool {
        self.pulled
            .lock()
            .map(|p| p.contains(&format!("{r} {platform}")))
            .unwrap_or(false)
    }
}

/// A base resolved: the image, and the platform its config names.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The image in the store.
    pub image: Imported,
    /// Its platform, from its config.
    pub platform: Platform,
}

/// Brings `src` into the store for `platform` (importing an archive or
/// layout, choosing from a multi-platform tag or archive, or pulling a
/// named image `puller` may fetch) and returns it with the platform its
/// config names. A single-platform image is returned whatever its
/// platform: the caller decides whether a mismatch is an error.
///
/// # Errors
/// See [`BaseError`]; [`BaseError::Platform`] when a multi-platform
/// source has no image for `platform`.
pub fn resolve(
    store: &Store,
    src: &ImageSource,
    platform: &Platform,
    puller: Option<&Puller>,
) -> Result<Resolved, BaseError> {
    let key = src.to_string();
    let image = match src {
        ImageSource::OciArchive { path, name }
        | ImageSource::DockerArchive { path, name }
        | ImageSource::OciDir { path, name } => {
            let source = match src {
                ImageSource::OciArchive { .. } => Source::OciArchive(path.clone()),
                ImageSource::DockerArchive { .. } => Source::DockerArchive(path.clone()),
                _ => Source::OciDir(path.clone()),
            };
            let mut all =
                import::import(store, &source, name.as_deref(), platform).map_err(|source| {
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
            all.pop().ok_or(BaseError::NotFound(key.clone()))?
        }
        ImageSource::Id(id) => local(store, id)?,
        ImageSource::Named(r) => return named(store, r, platform, puller),
    };
    let has = image_platform(store, &image, platform)?;
    Ok(Resolved {
        image,
        platform: has,
    })
}

/// A named image for `platform`: the store's (a multi-platform tag's entry
/// for it, or a single-platform tag's image), pulled when `puller` allows
/// and the store has none, or only another platform's.
fn named(
    store: &Store,
    r: &crate::reference::Reference,
    platform: &Platform,
    puller: Option<&Puller>,
) -> Result<Resolved, BaseError> {
    let lookup = || -> Result<Option<Resolved>, BaseError> {
        let Some(id) = store.tag_for(r, platform)? else {
            return Ok(None);
        };
        let image = local(store, &id.to_string())?;
        let has = image_platform(store, &image, platform)?;
        Ok(Some(Resolved {
            image,
            platform: has,
        }))
    };
    let missing = || BaseError::NotFound(r.to_string());
    let Some(p) = puller else {
        return lookup()?.ok_or_else(missing);
    };
    if p.always && !p.pulled(r, platform) {
        p.pull(store, r, platform)?;
    }
    match lookup()? {
        // Here, but for another platform: the registry may have it.
        Some(found) if !platform.accepts(&found.platform) && !p.pulled(r, platform) => {
            p.pull(store, r, platform)?;
            lookup()?.ok_or_else(missing)
        }
        Some(found) => Ok(found),
        None if !p.pulled(r, platform) => {
            p.pull(store, r, platform)?;
            lookup()?.ok_or_else(missing)
        }
        None => Err(missing()),
    }
}

/// The platform an image's config names; an image that names no
/// architecture serves any (old images and hand-made ones), so it reads as
/// `want`.
fn image_platform(store: &Store, image: &Imported, want: &Platform) -> Result<Platform, BaseError> {
    Ok(store
        .image_platform(&image.id)?
        .unwrap_or_else(|| want.clone()))
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
    Ok(crate::oci::Image::from_manifest(store, &imported.manifest)?.config)
}

/// [`BaseResolver`] over a store, remembering what it resolved.
pub struct StoreResolver<'a> {
    store: &'a Store,
    puller: Option<&'a Puller>,
    seen: RefCell<HashMap<String, BaseInfo>>,
}

impl<'a> StoreResolver<'a> {
    /// A resolver over `store`, pulling named images with `puller`.
    pub fn new(store: &'a Store, puller: Option<&'a Puller>) -> Self {
        StoreResolver {
            store,
            puller,
            seen: RefCell::new(HashMap::new()),
        }
    }
}

impl BaseResolver for StoreResolver<'_> {
    fn resolve(&self, image: &ImageSource, platform: &Platform) -> Result<BaseInfo, String> {
        let key = format!("{image} {platform}");
        if let Some(i) = self.seen.borrow().get(&key) {
            return Ok(i.clone());
        }
        let resolved =
            resolve(self.store, image, platform, self.puller).map_err(|e| error_chain(&e))?;
        let cfg = config(self.store, &resolved.image).map_err(|e| error_chain(&e))?;
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
