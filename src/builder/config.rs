//! Applying config changes to an image config, with docker's semantics.

use oci_spec::image::History;

use crate::graph::{Command, ConfigChange};
use crate::oci::{ImageConfig, rfc3339};

/// The shell docker uses for shell-form commands when the image sets none.
pub const DEFAULT_SHELL: &[&str] = &["/bin/sh", "-c"];

/// Per-stage state that docker's semantics depend on.
#[derive(Debug, Default, Clone)]
pub struct StageFlags {
    /// CMD was set in this stage (ENTRYPOINT then keeps it).
    pub cmd_set: bool,
}

/// The shell for shell-form commands: the image's `Shell`, else `/bin/sh -c`.
pub fn shell_of(cfg: &ImageConfig) -> Vec<String> {
    cfg.docker_ext
        .get("Shell")
        .and_then(|v| serde_json::from_value::<Vec<String>>(v.clone()).ok())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_SHELL.iter().map(|s| s.to_string()).collect())
}

/// A command as the config stores it: exec form as is; shell form wrapped in
/// the image's shell.
pub fn argv(cfg: &ImageConfig, c: &Command) -> Vec<String> {
    match c {
        Command::Exec(a) => a.clone(),
        Command::Shell(s) => {
            let mut v = shell_of(cfg);
            v.push(s.clone());
            v
        }
    }
}

/// What a change does to the stage's flags alone: for a change taken from
/// the cache, whose config is already applied.
pub fn track(change: &ConfigChange, flags: &mut StageFlags) {
    if let ConfigChange::Cmd(_) = change {
        flags.cmd_set = true;
    }
}

/// Applies one change in place.
pub fn apply(cfg: &mut ImageConfig, change: &ConfigChange, flags: &mut StageFlags) {
    match change {
        ConfigChange::Env(kv) => cfg.edit_config(|c| {
            let mut env = c.env().clone().unwrap_or_default();
            for (k, v) in kv {
                let entry = format!("{k}={v}");
                match env
                    .iter_mut()
                    .find(|e| e.split_once('=').map_or(e.as_str(), |(n, _)| n) == k)
                {
                    Some(e) => *e = entry,
                    None => env.push(entry),
                }
            }
            c.set_env(Some(env));
        }),
        ConfigChange::Label(kv) => cfg.edit_config(|c| {
            let mut labels = c.labels().clone().unwrap_or_default();
            for (k, v) in kv {
                labels.insert(k.clone(), v.clone());
            }
            c.set_labels(Some(labels));
        }),
        ConfigChange::Entrypoint(cmd) => {
            let v = argv(cfg, cmd);
            let cmd_set = flags.cmd_set;
            cfg.edit_config(|c| {
                c.set_entrypoint(if v.is_empty() { None } else { Some(v) });
                // Docker: a new ENTRYPOINT drops an inherited CMD.
                if !cmd_set {
                    c.set_cmd(None);
                }
            });
        }
        ConfigChange::Cmd(cmd) => {
            let v = argv(cfg, cmd);
            flags.cmd_set = true;
            cfg.edit_config(|c| {
                c.set_cmd(if v.is_empty() { None } else { Some(v) });
            });
        }
        ConfigChange::Workdir(w) | ConfigChange::WorkdirCreate(w) => cfg.edit_config(|c| {
            c.set_working_dir(Some(w.clone()));
        }),
        ConfigChange::User(u) => cfg.edit_config(|c| {
            c.set_user(Some(u.clone()));
        }),
        ConfigChange::Expose(ports) => cfg.edit_config(|c| {
            let mut all = c.exposed_ports().clone().unwrap_or_default();
            for p in ports {
                if !all.contains(p) {
                    all.push(p.clone());
                }
            }
            c.set_exposed_ports(Some(all));
        }),
        ConfigChange::Volume(vols) => cfg.edit_config(|c| {
            let mut all = c.volumes().clone().unwrap_or_default();
            for v in vols {
                if !all.contains(v) {
                    all.push(v.clone());
                }
            }
            c.set_volumes(Some(all));
        }),
        ConfigChange::StopSignal(s) => cfg.edit_config(|c| {
            c.set_stop_signal(Some(s.clone()));
        }),
        ConfigChange::Shell(sh) => {
            cfg.docker_ext.insert("Shell".into(), serde_json::json!(sh));
        }
        ConfigChange::Healthcheck(h) => {
            let v = match h {
                None => serde_json::json!({"Test": ["NONE"]}),
                Some(h) => {
                    let mut v = serde_json::json!({"Test": h.test});
                    for (k, ns) in [
                        ("Interval", h.interval),
                        ("Timeout", h.timeout),
                        ("StartPeriod", h.start_period),
                        ("StartInterval", h.start_interval),
                    ] {
                        if ns > 0 {
                            v[k] = serde_json::json!(ns);
                        }
                    }
                    if h.retries > 0 {
                        v["Retries"] = serde_json::json!(h.retries);
                    }
                    v
                }
            };
            cfg.docker_ext.insert("Healthcheck".into(), v);
        }
        ConfigChange::OnBuild(t) => {
            let mut list: Vec<serde_json::Value> = cfg
                .docker_ext
                .get("OnBuild")
                .and_then(|v| v.as_array().cloned())
                .unwrap_or_default();
            list.push(serde_json::json!(t));
            cfg.docker_ext
                .insert("OnBuild".into(), serde_json::Value::Array(list));
        }
        ConfigChange::Maintainer(m) => {
            cfg.oci.set_author(Some(m.clone()));
        }
    }
}

/// Stamps a config for a new step: `created` set, every history entry clamped
/// to the epoch (DESIGN.md "Reproducibility"), and a history entry appended.
pub fn stamp(
    cfg: &mut ImageConfig,
    created_by: &str,
    empty_layer: bool,
    time: i64,
    epoch: Option<i64>,
) {
    if let Some(e) = epoch
        && let Some(hist) = cfg.oci.history().clone()
    {
        let clamped = hist
            .into_iter()
            .map(|mut h| {
                if let Some(t) = h.created().as_deref().and_then(crate::oci::parse_rfc3339)
                    && t > e
                {
                    h.set_created(Some(rfc3339(e)));
                }
                h
            })
            .collect();
        cfg.oci.set_history(Some(clamped));
    }
    let created = rfc3339(time);
    cfg.oci.set_created(Some(created.clone()));
    let mut h = History::default();
    h.set_created(Some(created));
    h.set_created_by(Some(created_by.to_string()));
    h.set_comment(Some("imgbuild".to_string()));
    if empty_layer {
        h.set_empty_layer(Some(true));
    }
    cfg.push_history(h);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_replaces_in_place_and_entrypoint_resets_cmd() {
        let mut cfg = ImageConfig::scratch();
        let mut f = StageFlags::default();
        apply(
            &mut cfg,
            &ConfigChange::Env(vec![("A".into(), "1".into()), ("B".into(), "2".into())]),
            &mut f,
        );
        apply(
            &mut cfg,
            &ConfigChange::Env(vec![("A".into(), "3".into())]),
            &mut f,
        );
        assert_eq!(cfg.config().env().clone().unwrap(), ["A=3", "B=2"]);
        cfg.edit_config(|c| {
            c.set_cmd(Some(vec!["inherited".into()]));
        });
        apply(
            &mut cfg,
            &ConfigChange::Entrypoint(Command::Exec(vec!["/e".into()])),
            &mut f,
        );
        assert_eq!(cfg.config().cmd(), &None);
        apply(
            &mut cfg,
            &ConfigChange::Cmd(Command::Shell("run me".into())),
            &mut f,
        );
        apply(
            &mut cfg,
            &ConfigChange::Entrypoint(Command::Exec(vec!["/e2".into()])),
            &mut f,
        );
        assert_eq!(
            cfg.config().cmd().clone().unwrap(),
            ["/bin/sh", "-c", "run me"]
        );
    }

    #[test]
    fn stamp_clamps_history() {
        let mut cfg = ImageConfig::scratch();
        stamp(&mut cfg, "COPY a /a", false, 2_000_000_000, None);
        stamp(&mut cfg, "ENV A=1", true, 1_000, Some(1_000));
        let h = cfg.oci.history().clone().unwrap();
        assert_eq!(h[0].created().as_deref(), Some("1970-01-01T00:16:40Z"));
        assert_eq!(h[1].empty_layer(), Some(true));
    }
}
