//! RUN: the command (shell or exec form, heredocs), `--mount`, `--network`,
//! `--security`, and the declared build args as its build-time environment.

use super::{Lowerer, Scope, Stage};
use crate::frontend::dockerfile::ast::{Instruction, ShellOrExec};
use crate::frontend::dockerfile::parser::{Heredoc, Word};
use crate::graph::{Command, GraphBuilder, Mount, Network, RunHeredoc, RunStep, StepKind};

impl Lowerer<'_> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn run(
        &mut self,
        g: &mut GraphBuilder,
        st: &mut Stage,
        scope: &Scope,
        i: &Instruction,
        cmd: &ShellOrExec,
        mounts: &[Word],
        network: Option<&Word>,
        security: Option<&Word>,
        heredocs: &[Heredoc],
    ) {
        let command = match cmd {
            ShellOrExec::Shell(w) => Command::Shell(w.value.clone()),
            ShellOrExec::Exec(ws) => Command::Exec(ws.iter().map(|w| w.value.clone()).collect()),
        };
        let network = match network {
            None => Network::Host,
            Some(w) => match self.expand(w, scope).as_deref() {
                Some("host" | "default") => Network::Host,
                Some("none") => Network::None,
                Some(other) => {
                    self.error(w.span, format!("unsupported network mode `{other}`"))
                        .help = Some("use --network=host (the default) or --network=none".into());
                    Network::Host
                }
                None => Network::Host,
            },
        };
        if let Some(w) = security {
            match w.value.as_str() {
                "sandbox" => {}
                "insecure" => {
                    self.error(w.span, "RUN --security=insecure is not supported: imgbuild runs every step sandboxed");
                }
                other => {
                    self.error(w.span, format!("unknown --security mode `{other}`"))
                        .help = Some("use sandbox or insecure".into());
                }
            }
        }
        let mut ssh = 0;
        let mounts = mounts
            .iter()
            .filter_map(|m| self.mount(m, scope, &mut ssh))
            .collect();
        let heredocs = heredocs
            .iter()
            .map(|h| RunHeredoc {
                name: h.name.clone(),
                content: if h.chomp {
                    h.content
                        .split_inclusive('\n')
                        .map(|l| l.trim_start_matches('\t'))
                        .collect()
                } else {
                    h.content.clone()
                },
                fd: h.fd,
                expand: h.expand,
            })
            .collect();
        // Declared build args are the command's environment (not persisted);
        // the image's ENV wins over those declared before it.
        let env = scope.arg_values();
        let env_wins = scope.args_over_env();
        let bytes = env.iter().map(|(k, v)| k.len() + v.len()).sum();
        if !self.charge(bytes, i.span) {
            return;
        }
        let step = RunStep {
            command,
            heredocs,
            env,
            env_wins,
            workdir: None,
            user: None,
            network,
            mounts,
        };
        self.step(g, st, StepKind::Run(Box::new(step)), i.span);
    }

    /// `--mount=type=cache,target=/x,...` (BuildKit's CSV syntax); `ssh`
    /// counts the RUN's ssh mounts so far (their default targets are
    /// numbered).
    fn mount(&mut self, w: &Word, scope: &Scope, ssh: &mut usize) -> Option<Mount> {
        let v = self.expand(w, scope)?;
        let mut kind = "bind".to_string();
        let mut target = None;
        let mut source = None;
        let mut from = None;
        let mut id = None;
        let mut rw = false;
        let mut required = false;
        let mut env = None;
        let (mut mode, mut uid, mut gid) = (None, None, None);
        for field in v.split(',') {
            let (k, val) = match field.split_once('=') {
                Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.trim().to_string())),
                None => (field.trim().to_ascii_lowercase(), None),
            };
            let truthy = || {
                val.as_deref()
                    .is_none_or(|v| v.eq_ignore_ascii_case("true"))
            };
            match k.as_str() {
                "type" => kind = val.unwrap_or_default(),
                "target" | "dst" | "destination" => target = val,
                "source" | "src" => source = val,
                "from" => from = val,
                "id" => id = val,
                "rw" | "readwrite" => rw = truthy(),
                "ro" | "readonly" => rw = !truthy(),
                "required" => required = truthy(),
                "env" => env = val.filter(|v| !v.is_empty()),
                // BuildKit's radixes: the mode octal, ids decimal.
                "mode" | "uid" | "gid" => {
                    let radix = if k == "mode" { 8 } else { 10 };
                    let text = val.unwrap_or_default();
                    let Ok(n) = u32::from_str_radix(&text, radix) else {
                        self.error(w.span, format!("--mount {k}=`{text}` is not a number"));
                        return None;
                    };
                    match k.as_str() {
                        "mode" => mode = Some(n),
                        "uid" => uid = Some(n),
                        _ => gid = Some(n),
                    }
                }
                // Accepted, applied by the sandbox when it lands.
                "sharing" | "size" => {}
                "" => {}
                other => {
                    self.error(w.span, format!("unexpected key `{other}` in --mount"));
                    return None;
                }
            }
        }
        let need_target = |this: &mut Self| -> Option<String> {
            match &target {
                Some(t) if !t.is_empty() => Some(t.clone()),
                _ => {
                    this.error(w.span, "--mount needs target=PATH");
                    None
                }
            }
        };
        Some(match kind.as_str() {
            "cache" => {
                let t = need_target(self)?;
                Mount::Cache {
                    id: id.unwrap_or_else(|| t.clone()),
                    target: t,
                }
            }
            "tmpfs" => Mount::Tmpfs {
                target: need_target(self)?,
            },
            "bind" => Mount::Bind {
                target: need_target(self)?,
                source: source.unwrap_or_else(|| "/".into()),
                from,
                stage: None,
                rw,
            },
            "secret" => {
                let id = id.or_else(|| {
                    target
                        .as_ref()
                        .and_then(|t| t.rsplit('/').next().map(str::to_string))
                });
                let Some(id) = id else {
                    self.error(w.span, "--mount=type=secret needs id=NAME (or a target)");
                    return None;
                };
                // With env= and no target= the secret is a variable only
                // (BuildKit's dispatchSecret).
                let target = match (target, &env) {
                    (Some(t), _) => t,
                    (None, Some(_)) => String::new(),
                    (None, None) => format!("/run/secrets/{id}"),
                };
                Mount::Secret {
                    target,
                    id,
                    required,
                    env,
                }
            }
            "ssh" => {
                if source.is_some() {
                    self.error(w.span, "--mount=type=ssh does not take source=");
                    return None;
                }
                let n = *ssh;
                *ssh += 1;
                Mount::Ssh {
                    id: id
                        .filter(|i| !i.is_empty())
                        .unwrap_or_else(|| "default".into()),
                    target: target
                        .filter(|t| !t.is_empty())
                        .unwrap_or_else(|| format!("/run/buildkit/ssh_agent.{n}")),
                    required,
                    uid: uid.unwrap_or(0),
                    gid: gid.unwrap_or(0),
                    mode: mode.unwrap_or(0o600),
                }
            }
            other => {
                self.error(w.span, format!("unknown mount type `{other}`"))
                    .help = Some("use bind, cache, tmpfs, secret or ssh".into());
                return None;
            }
        })
    }
}
