//! Instructions that only change the image config: ENV, LABEL, CMD,
//! ENTRYPOINT, SHELL, EXPOSE, VOLUME, USER, WORKDIR, STOPSIGNAL, MAINTAINER,
//! HEALTHCHECK, ONBUILD. Which of them expand variables follows BuildKit.

use super::{Lowerer, Scope, Stage, join_workdir};
use crate::frontend::dockerfile::ast::{Health, HealthCmd, Instruction, Kind, ShellOrExec};
use crate::graph::{Command, ConfigChange, GraphBuilder, Healthcheck, StepKind};

fn command(c: &ShellOrExec) -> Command {
    match c {
        ShellOrExec::Shell(w) => Command::Shell(w.value.clone()),
        ShellOrExec::Exec(ws) => Command::Exec(ws.iter().map(|w| w.value.clone()).collect()),
    }
}

/// Go's `time.ParseDuration` for the units HEALTHCHECK uses.
fn parse_duration(s: &str) -> Option<u64> {
    if s == "0" {
        return Some(0);
    }
    let mut total: f64 = 0.0;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[unit_len..];
    }
    Some(total as u64)
}

impl Lowerer<'_> {
    pub(super) fn meta(
        &mut self,
        g: &mut GraphBuilder,
        st: &mut Stage,
        scope: &mut Scope,
        i: &Instruction,
    ) {
        let change = match &i.kind {
            Kind::Env(pairs) | Kind::Label(pairs) => {
                // Every pair sees the variables as they were before this
                // instruction (docker: `ENV a=1 b=$a` gives b the old a).
                let mut kv = Vec::with_capacity(pairs.len());
                for (k, v) in pairs {
                    let (Some(k2), Some(v2)) = (self.expand(k, scope), self.expand(v, scope))
                    else {
                        continue;
                    };
                    if k2.is_empty() {
                        self.error(k.span, "empty name");
                        continue;
                    }
                    kv.push((k2, v2));
                }
                if let Kind::Env(_) = &i.kind {
                    for (k, v) in &kv {
                        scope.set_env(k, v);
                    }
                    ConfigChange::Env(kv)
                } else {
                    ConfigChange::Label(kv)
                }
            }
            Kind::Cmd(c) => ConfigChange::Cmd(command(c)),
            Kind::Entrypoint(c) => ConfigChange::Entrypoint(command(c)),
            Kind::Shell(ws) => ConfigChange::Shell(ws.iter().map(|w| w.value.clone()).collect()),
            Kind::Maintainer(w) => ConfigChange::Maintainer(w.value.clone()),
            Kind::Expose(ws) => {
                let mut ports = Vec::new();
                for w in ws {
                    for p in self.expand_words(w, scope) {
                        match normalize_port(&p) {
                            Some(p) => ports.push(p),
                            None => {
                                self.error(w.span, format!("invalid port `{p}`")).help = Some(
                                    "write PORT, PORT/tcp, PORT/udp or START-END/PROTO".into(),
                                );
                            }
                        }
                    }
                }
                ConfigChange::Expose(ports)
            }
            Kind::Volume(ws) => {
                let mut vols = Vec::new();
                for w in ws {
                    if let Some(v) = self.expand(w, scope) {
                        if v.trim().is_empty() {
                            self.error(w.span, "VOLUME specified can not be an empty string");
                        } else {
                            vols.push(v);
                        }
                    }
                }
                ConfigChange::Volume(vols)
            }
            Kind::User(w) => match self.expand(w, scope) {
                Some(u) if !u.is_empty() => ConfigChange::User(u),
                _ => {
                    self.error(w.span, "USER needs a user name or uid");
                    return;
                }
            },
            Kind::Workdir(w) => {
                let Some(p) = self.expand(w, scope) else {
                    return;
                };
                let abs = join_workdir(&st.workdir, &p);
                st.workdir = abs.clone();
                ConfigChange::WorkdirCreate(abs)
            }
            Kind::StopSignal(w) => {
                let Some(sig) = self.expand(w, scope) else {
                    return;
                };
                ConfigChange::StopSignal(sig)
            }
            Kind::Healthcheck(Health::None) => ConfigChange::Healthcheck(None),
            Kind::Healthcheck(Health::Cmd(h)) => {
                let HealthCmd {
                    test,
                    interval,
                    timeout,
                    start_period,
                    start_interval,
                    retries,
                } = h.as_ref();
                let mut dur =
                    |w: &Option<crate::frontend::dockerfile::parser::Word>, name: &str| -> u64 {
                        let Some(w) = w else { return 0 };
                        match parse_duration(&w.value) {
                            Some(d) => d,
                            None => {
                                self.error(
                                    w.span,
                                    format!("invalid --{name} duration `{}`", w.value),
                                )
                                .help = Some("write e.g. 30s, 1m30s or 500ms".into());
                                0
                            }
                        }
                    };
                let interval = dur(interval, "interval");
                let timeout = dur(timeout, "timeout");
                let start_period = dur(start_period, "start-period");
                let start_interval = dur(start_interval, "start-interval");
                let retries = match retries {
                    None => 0,
                    Some(w) => match w.value.parse::<u64>() {
                        Ok(n) => n,
                        Err(_) => {
                            self.error(
                                w.span,
                                format!("--retries must be a whole number, not `{}`", w.value),
                            );
                            0
                        }
                    },
                };
                let test = match test {
                    ShellOrExec::Shell(w) => vec!["CMD-SHELL".to_string(), w.value.clone()],
                    ShellOrExec::Exec(ws) => std::iter::once("CMD".to_string())
                        .chain(ws.iter().map(|w| w.value.clone()))
                        .collect(),
                };
                ConfigChange::Healthcheck(Some(Healthcheck {
                    test,
                    interval,
                    timeout,
                    start_period,
                    start_interval,
                    retries,
                }))
            }
            Kind::OnBuild(_, text) => {
                if let Some(info) = self.stages.get_mut(st.id.0) {
                    info.onbuild.push(text.clone());
                }
                ConfigChange::OnBuild(text.clone())
            }
            Kind::From { .. } | Kind::Arg(_) | Kind::Run { .. } | Kind::Add(_) | Kind::Copy(_) => {
                return;
            }
        };
        self.step(g, st, StepKind::Config(change), i.span);
    }
}

/// `80` → `80/tcp`; `53/UDP` → `53/udp`; ranges kept.
fn normalize_port(p: &str) -> Option<String> {
    let (range, proto) = match p.split_once('/') {
        Some((r, pr)) => (r, pr.to_ascii_lowercase()),
        None => (p, "tcp".to_string()),
    };
    let ok = |s: &str| s.parse::<u16>().is_ok();
    let valid = match range.split_once('-') {
        Some((a, b)) => ok(a) && ok(b),
        None => ok(range),
    };
    (valid && matches!(proto.as_str(), "tcp" | "udp" | "sctp")).then(|| format!("{range}/{proto}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_ports() {
        assert_eq!(parse_duration("30s"), Some(30_000_000_000));
        assert_eq!(parse_duration("1m30s"), Some(90_000_000_000));
        assert_eq!(parse_duration("500ms"), Some(500_000_000));
        assert_eq!(parse_duration("1.5h"), Some(5_400_000_000_000));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(normalize_port("80"), Some("80/tcp".into()));
        assert_eq!(normalize_port("53/UDP"), Some("53/udp".into()));
        assert_eq!(normalize_port("x"), None);
    }
}
