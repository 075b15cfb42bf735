//! `imgbuild inspect IMAGE…`: JSON, like `docker image inspect`.

use serde_json::{Value, json};

use crate::cli::args::{Cli, InspectArgs};
use crate::cli::env::Env;
use crate::cli::exit::Failure;
use crate::cli::template::Template;
use crate::cli::util::{open_store, out};
use crate::oci::{ImageConfig, Manifest};

/// The config as docker's typed one shows it: every field users script
/// against is there, with its zero value when the image leaves it out
/// (so `{{.Config.User}}` is empty, not `<no value>`).
fn docker_config(c: Option<&Value>) -> Value {
    let mut c = c.cloned().unwrap_or_else(|| json!({}));
    if let Some(m) = c.as_object_mut() {
        for (k, zero) in [
            ("User", json!("")),
            ("WorkingDir", json!("")),
            ("Env", json!([])),
            ("Cmd", json!([])),
            ("Entrypoint", json!([])),
            ("Labels", json!({})),
            ("ExposedPorts", json!({})),
            ("Volumes", json!({})),
        ] {
            if m.get(k).is_none_or(Value::is_null) {
                m.insert(k.to_string(), zero);
            }
        }
    }
    c
}

/// Prints a JSON array with one object per image (of a multi-platform tag:
/// the `--platform`'s, else the host's).
pub fn run(cli: &Cli, env: &Env, a: &InspectArgs) -> Result<(), Failure> {
    let platform = super::parse_platform(a.platform.as_deref())?;
    let store = open_store(cli, env)?;
    let _lock = store.lock_shared()?;
    let mut all = Vec::new();
    for what in &a.images {
        let id = super::resolve_image_for(&store, what, platform.as_ref())?;
        let rec = store
            .image(&id)?
            .ok_or_else(|| crate::store::Error::NoSuchImage(what.clone()))?;
        let m = Manifest::from_bytes(&store.read_blob(&rec.manifest)?)?;
        let config_bytes = store.read_blob(&m.config)?;
        let cfg = ImageConfig::from_bytes(&config_bytes)?;
        let raw: Value = serde_json::from_slice(&config_bytes).map_err(anyhow::Error::from)?;
        // A multi-platform tag names each of its platforms' images.
        let repo_tags: Vec<String> = store.tags_of(&id)?.iter().map(|r| r.familiar()).collect();
        let mut v = json!({
            "Id": id.to_string(),
            "RepoTags": repo_tags,
            "Parent": rec.parent.map(|p| p.to_string()).unwrap_or_default(),
            "Created": cfg.oci.created(),
            "Author": cfg.oci.author(),
            "Architecture": raw.get("architecture"),
            "Os": raw.get("os"),
            "Config": docker_config(raw.get("config")),
            // docker's names for the config's rootfs.
            "RootFS": {
                "Type": raw.pointer("/rootfs/type"),
                "Layers": raw.pointer("/rootfs/diff_ids"),
            },
            // What the layers hold, as docker counts Size.
            "Size": m
                .layers
                .iter()
                .map(|l| store.content_size(&l.digest, &l.media_type))
                .sum::<Result<u64, _>>()?,
            "Manifest": {
                "Digest": rec.manifest.to_string(),
                "Layers": m.layers.iter().map(|l| json!({"Digest": l.digest.to_string(), "Size": l.size, "MediaType": l.media_type})).collect::<Vec<_>>(),
            },
        });
        // docker shows a variant only when the image has one.
        if let Some(variant) = raw.get("variant") {
            v["Variant"] = variant.clone();
        }
        all.push(v);
    }
    if let Some(f) = a.format.as_deref().filter(|f| *f != "json") {
        let t = Template::parse_docker(f).map_err(|e| Failure::Usage(e.into()))?;
        let mut text = String::new();
        for v in &all {
            text.push_str(&t.render(v).map_err(|e| Failure::Failed(e.into()))?);
            text.push('\n');
        }
        return out(&text);
    }
    let text = serde_json::to_string_pretty(&all).map_err(anyhow::Error::from)?;
    out(&format!("{text}\n"))
}
