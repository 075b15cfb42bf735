//! Spec → BuildGraph. Validates values (ports, signals, paths, references,
//! patterns) and emits steps in a fixed order: a target's steps as written,
//! then its config keys, one config step each, in the order of
//! [`ConfigKeys::KEYS`]' documentation (env, labels, workdir, user, ports,
//! volumes, stop_signal, shell, entrypoint, cmd).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::decode::S;
use super::model::{
    CommandSpec, ConfigKeys, CopySpec, FetchSource, FetchSpec, Spec, StepBody, TargetKind,
    TargetSpec,
};
use super::vars::Vars;
use crate::diag::{Diagnostic, SourceFile, SourceRef, Span};
use crate::graph::builder::{PendingBase, PendingRef};
use crate::graph::{
    BuildGraph, Command, ConfigChange, CopyFrom, CopyItem, CopyStep, FetchItem, FetchStep,
    GitSource, GraphBuilder, HttpSource, ImageSource, ImageSourceError, Mount, Network, Output,
    Owner, Remote, RunStep, Settings, StageId, StepKind, UrlError,
};
use crate::pattern::{PatternSet, clean_path};
use crate::platform::Platform;
use crate::reference::Reference;

struct Lowerer<'a> {
    file: &'a Arc<SourceFile>,
    context: PathBuf,
    diags: Vec<Diagnostic>,
    target: &'a Target,
}

/// The platform one lowering is for.
pub(super) struct Target {
    /// `TARGETPLATFORM` and the other variables.
    pub vars: Vars,
    /// The platform built for.
    pub platform: Platform,
    /// Whether the build names its platforms (outputs then say theirs, and
    /// an image with its own `platforms` is made only for those).
    pub named: bool,
}

/// Lowers a (possibly partial) spec for one platform; returns the graph
/// and every problem found.
pub(super) fn lower(
    file: &Arc<SourceFile>,
    spec: &Spec,
    spec_dir: &Path,
    target: &Target,
) -> (BuildGraph, Vec<Diagnostic>) {
    let context = match &spec.build.context {
        Some(c) => join_clean(spec_dir, &c.value),
        None => spec_dir.to_path_buf(),
    };
    let mut l = Lowerer {
        file,
        context: context.clone(),
        diags: Vec::new(),
        target,
    };
    let excludes: Vec<String> = spec.build.exclude.iter().map(|e| e.value.clone()).collect();
    for e in &spec.build.exclude {
        l.check_pattern(e);
    }
    let settings = Settings {
        context,
        source_date_epoch: spec.build.source_date_epoch.as_ref().map(|e| e.value),
        context_excludes: excludes,
        inputs: vec![file.path().to_path_buf()],
    };
    let mut g = GraphBuilder::new(settings);
    let mut seen: HashMap<&str, &S<String>> = HashMap::new();
    for t in &spec.targets {
        if let Some(prev) = seen.get(t.name.value.as_str()) {
            let (line, _) = file.line_col(prev.span.start);
            l.diags.push(
                Diagnostic::error(
                    file,
                    t.name.span,
                    format!("`{}` is defined twice", t.name.value),
                )
                .with_help(format!(
                    "stages and images share one namespace; the first is on line {line}"
                )),
            );
            continue;
        }
        seen.insert(&t.name.value, &t.name);
        l.target(&mut g, t);
    }
    let (graph, more) = g.finish();
    l.diags.extend(more);
    (graph, l.diags)
}

/// `base/rel`, cleaned lexically (`..` resolved), absolute when `base` is.
fn join_clean(base: &Path, rel: &str) -> PathBuf {
    let joined = if rel.starts_with('/') {
        PathBuf::from(rel)
    } else {
        base.join(rel)
    };
    PathBuf::from(clean_path(&joined.to_string_lossy()))
}

impl Lowerer<'_> {
    fn at(&self, span: Span) -> SourceRef {
        SourceRef {
            file: Arc::clone(self.file),
            span,
        }
    }

    fn error(&mut self, span: Span, msg: impl Into<String>, help: Option<&str>) {
        let mut d = Diagnostic::error(self.file, span, msg);
        if let Some(h) = help {
            d = d.with_help(h);
        }
        self.diags.push(d);
    }

    /// `s` with its variables expanded ([`Vars::expand`]; `strict` except
    /// in `run`); `None` (reported at `s`) on a problem, so that nothing
    /// else is said about a value that is not known.
    fn var(&mut self, s: &S<String>, strict: bool) -> Option<S<String>> {
        match self.target.vars.expand(&s.value, strict) {
            Ok(v) => Some(S::new(v, s.span)),
            Err(e) => {
                let help = format!("the variables: {}", self.target.vars.names().join(", "));
                self.error(s.span, e.to_string(), Some(&help));
                None
            }
        }
    }

    /// A `run` command's text with the spec's variables expanded (the rest
    /// is the shell's, so this cannot fail).
    fn run_var(&mut self, s: &str, span: Span) -> String {
        self.var(&S::new(s.to_string(), span), false)
            .map_or_else(|| s.to_string(), |v| v.value)
    }

    fn check_pattern(&mut self, p: &S<String>) {
        if let Err(e) = PatternSet::new(std::slice::from_ref(&p.value)) {
            self.error(p.span, e.to_string(), None);
        }
    }

    fn target(&mut self, g: &mut GraphBuilder, t: &TargetSpec) {
        let from_span = t.from.as_ref().map_or(t.name.span, |f| f.span);
        let (base, base_text) = match &t.from {
            Some(f) => match self.var(f, true) {
                Some(f) => (self.base(&f), f.value.clone()),
                None => (PendingBase::Scratch, f.value.clone()),
            },
            None => (PendingBase::Scratch, "scratch".to_string()),
        };
        let stage = g.add_stage(&t.name.value, base, &base_text, self.at(from_span));
        let explicit = t.platform.as_ref().and_then(|p| {
            let v = self.var(p, true)?;
            match Platform::parse(&v.value) {
                Ok(pl) => Some(pl),
                Err(e) => {
                    self.error(
                        p.span,
                        e.to_string(),
                        Some("write os/arch[/variant] or \"${BUILDPLATFORM}\""),
                    );
                    None
                }
            }
        });
        let platform = explicit
            .clone()
            .unwrap_or_else(|| self.target.platform.clone());
        g.set_platform(stage, platform, explicit.is_some());
        for step in &t.steps {
            let name = step.name.as_ref().map(|n| n.value.clone());
            match &step.body {
                StepBody::Copy(items) => self.copy(g, stage, items, name, step.span),
                StepBody::Fetch(items) => self.fetch(g, stage, items, name, step.span),
                StepBody::Run {
                    command,
                    env,
                    workdir,
                    user,
                    network,
                    cache,
                } => {
                    let mut mounts = Vec::new();
                    for c in cache {
                        if !c.value.starts_with('/') {
                            self.error(c.span, "cache mount targets must be absolute paths", None);
                        }
                        mounts.push(Mount::Cache {
                            target: c.value.clone(),
                            id: c.value.clone(),
                        });
                    }
                    let command = match &command.value {
                        CommandSpec::Shell(s) => Command::Shell(self.run_var(s, command.span)),
                        CommandSpec::Exec(a) => {
                            Command::Exec(a.iter().map(|x| self.run_var(x, command.span)).collect())
                        }
                    };
                    let run = RunStep {
                        command,
                        heredocs: Vec::new(),
                        env: self.env_pairs(env),
                        env_wins: Vec::new(),
                        workdir: workdir.as_ref().map(|w| w.value.clone()),
                        user: user.as_ref().map(|u| {
                            self.check_user(u);
                            u.value.clone()
                        }),
                        network: match network.as_ref().map(|n| n.value.as_str()) {
                            Some("none") => Network::None,
                            _ => Network::Host,
                        },
                        mounts,
                    };
                    g.add_step(
                        stage,
                        StepKind::Run(Box::new(run)),
                        self.at(step.span),
                        Vec::new(),
                        Vec::new(),
                    );
                }
                StepBody::Config(keys) => self.config(g, stage, keys, step.span),
            }
        }
        self.config(g, stage, &t.config, t.name.span);
        // An image with its own platforms is made for those only.
        let for_this = !self.target.named
            || t.platforms.is_empty()
            || t.platforms
                .iter()
                .any(|p| Platform::parse(&p.value).is_ok_and(|p| p == self.target.platform));
        if t.kind == TargetKind::Image && for_this {
            let mut tags = Vec::new();
            for tag in &t.tags {
                match Reference::parse(&tag.value) {
                    Ok(r) if r.digest().is_some() => self.error(
                        tag.span,
                        format!(
                            "tag `{}` has a digest; tags name, digests identify",
                            tag.value
                        ),
                        Some("drop the `@sha256:…` part"),
                    ),
                    Ok(r) => tags.push(r),
                    Err(e) => self.error(tag.span, e.to_string(), None),
                }
            }
            g.add_output(Output {
                stage,
                tags,
                path: t
                    .output
                    .as_ref()
                    .map(|o| join_clean(&self.context, &o.value)),
                platform: None,
                docker_archive: t.format.as_ref().is_some_and(|f| f.value == "docker"),
            });
        }
    }

    fn base(&mut self, f: &S<String>) -> PendingBase {
        let v = f.value.as_str();
        if v == "scratch" {
            return PendingBase::Scratch;
        }
        if let Some(img) = self.transport(f) {
            return PendingBase::Image(img);
        }
        PendingBase::Ref(self.pending_ref(f))
    }

    /// `oci-archive:`, `oci:`, `docker-archive:` references; paths relative to
    /// the context.
    fn transport(&mut self, f: &S<String>) -> Option<ImageSource> {
        let (transport, _) = f.value.split_once(':')?;
        if !matches!(transport, "oci-archive" | "oci" | "docker-archive") {
            return None;
        }
        match ImageSource::parse(&f.value, &self.context) {
            Ok(src) => Some(src),
            Err(e) => {
                let help = matches!(e, ImageSourceError::NoPath(_))
                    .then_some("write e.g. \"oci-archive:vendor/base.tar\"");
                self.error(f.span, e.to_string(), help);
                None
            }
        }
    }

    fn pending_ref(&mut self, f: &S<String>) -> PendingRef {
        let v = f.value.as_str();
        // A bare name (no tag, digest or registry) always means a stage: images
        // are pinned with a tag (`alpine:3.20`), so a typo in a stage name is an
        // error here rather than a pull of `docker.io/library/<typo>:latest`.
        // An image ID (prefix) is never a stage's name.
        let bare = !v.contains([':', '/', '@']) && !ImageSource::is_id(v);
        let image = if bare {
            None
        } else {
            ImageSource::parse(v, &self.context).ok()
        };
        PendingRef {
            name: v.to_string(),
            image,
            at: self.at(f.span),
        }
    }

    fn copy(
        &mut self,
        g: &mut GraphBuilder,
        stage: StageId,
        specs: &[CopySpec],
        name: Option<String>,
        span: Span,
    ) {
        let mut items = Vec::new();
        let mut froms = Vec::new();
        let mut args = Vec::new();
        for c in specs {
            // A copy with a value that is not known is left out (reported).
            let src: Vec<Option<S<String>>> = c.src.iter().map(|s| self.var(s, true)).collect();
            let dest = self.var(&c.dest, true);
            let from = c.from.as_ref().map(|f| self.var(f, true));
            let (Some(src), Some(dest), Some(from)) = (
                src.into_iter().collect::<Option<Vec<_>>>(),
                dest,
                from.map_or(Some(None), |f| f.map(Some)),
            ) else {
                continue;
            };
            let expanded = CopySpec {
                src,
                dest,
                from,
                ..c.clone()
            };
            let c = &expanded;
            if c.dest.value.is_empty() {
                self.error(
                    c.dest.span,
                    "`dest` is empty",
                    Some("write an absolute path such as \"/app/\""),
                );
            }
            let multi = c.src.len() > 1
                || c.src
                    .iter()
                    .any(|s| crate::pattern::has_wildcards(&s.value));
            if multi && !c.dest.value.ends_with('/') {
                self.error(
                    c.dest.span,
                    "with several sources or a glob, `dest` must be a directory ending in `/`",
                    Some(&format!("write \"{}/\"", c.dest.value)),
                );
            }
            for s in &c.src {
                if s.value.is_empty() {
                    self.error(s.span, "empty source path", None);
                }
                if let Err(e) = crate::pattern::Glob::new(&s.value) {
                    self.error(s.span, e.to_string(), None);
                }
                args.push(self.at(s.span));
            }
            for e in &c.exclude {
                self.check_pattern(e);
            }
            let owner = c.owner.as_ref().and_then(|o| match Owner::parse(&o.value) {
                Some(owner) => Some(owner),
                None => {
                    self.error(
                        o.span,
                        format!("invalid owner `{}`", o.value),
                        Some("write \"user\", \"user:group\", \"uid\" or \"uid:gid\""),
                    );
                    None
                }
            });
            froms.push(c.from.as_ref().map(|f| self.pending_ref(f)));
            items.push(CopyItem {
                from: CopyFrom::Context,
                sources: c.src.iter().map(|s| s.value.clone()).collect(),
                dest: c.dest.value.clone(),
                mode: c.mode.as_ref().map(|m| m.value.clone()),
                owner,
                excludes: c.exclude.iter().map(|e| e.value.clone()).collect(),
                parents: c.parents,
                follow_links: true,
            });
        }
        let step = CopyStep {
            items,
            name,
            add: false,
            link: false,
        };
        g.add_step(stage, StepKind::Copy(step), self.at(span), froms, args);
    }

    /// `fetch = [...]`: one layer of files from URLs, each table one file
    /// (the Dockerfile's `ADD URL DEST`).
    fn fetch(
        &mut self,
        g: &mut GraphBuilder,
        stage: StageId,
        specs: &[FetchSpec],
        name: Option<String>,
        span: Span,
    ) {
        let mut items = Vec::new();
        let mut args = Vec::new();
        for f in specs {
            let dest = self.var(&f.dest, true);
            let checksum = f.checksum.as_ref().map(|c| self.var(c, true));
            let Some(checksum) = checksum.map_or(Some(None), |c| c.map(Some)) else {
                continue;
            };
            let Some(dest) = dest else {
                continue;
            };
            if dest.value.is_empty() {
                self.error(
                    dest.span,
                    "`dest` is empty",
                    Some("write an absolute path such as \"/opt/\""),
                );
            }
            let (source, at) = match &f.source {
                FetchSource::Url(url) => {
                    let Some(url) = self.var(url, true) else {
                        continue;
                    };
                    let parsed =
                        HttpSource::parse(&url.value, checksum.as_ref().map(|c| c.value.as_str()));
                    match parsed {
                        Ok(h) => (Remote::Http(h), url.span),
                        Err(e @ UrlError::Checksum(_)) => {
                            let at = checksum.as_ref().map_or(url.span, |c| c.span);
                            self.error(at, e.to_string(), None);
                            continue;
                        }
                        Err(e) => {
                            self.error(url.span, e.to_string(), None);
                            continue;
                        }
                    }
                }
                FetchSource::Git {
                    url,
                    reference,
                    subdir,
                    keep_git_dir,
                } => {
                    if let Some(c) = &checksum {
                        self.error(
                            c.span,
                            "`checksum` applies to a `url` fetch; pin a git source by its commit",
                            Some("write the commit hash as `ref`"),
                        );
                        continue;
                    }
                    let Some(url) = self.var(url, true) else {
                        continue;
                    };
                    let reference = match reference.as_ref().map(|r| self.var(r, true)) {
                        Some(None) => continue,
                        r => r.flatten(),
                    };
                    let subdir = match subdir.as_ref().map(|r| self.var(r, true)) {
                        Some(None) => continue,
                        r => r.flatten(),
                    };
                    let parsed = if reference.is_none() && subdir.is_none() {
                        GitSource::parse(&url.value, *keep_git_dir)
                    } else if url.value.contains('#') {
                        let at = reference
                            .as_ref()
                            .or(subdir.as_ref())
                            .map_or(url.span, |r| r.span);
                        self.error(
                            at,
                            "`git` already has a #fragment: write REF and SUBDIR there or in `ref` and `subdir`, not both",
                            None,
                        );
                        continue;
                    } else {
                        GitSource::new(
                            &url.value,
                            reference.as_ref().map(|r| r.value.as_str()),
                            subdir.as_ref().map(|r| r.value.as_str()),
                            *keep_git_dir,
                        )
                    };
                    match parsed {
                        Ok(g) => (Remote::Git(g), url.span),
                        Err(e @ (UrlError::BadRef(_) | UrlError::SubdirEscapes(_))) => {
                            let at = match &e {
                                UrlError::BadRef(_) => reference.as_ref(),
                                _ => subdir.as_ref(),
                            }
                            .map_or(url.span, |r| r.span);
                            self.error(at, e.to_string(), None);
                            continue;
                        }
                        Err(e) => {
                            self.error(url.span, e.to_string(), None);
                            continue;
                        }
                    }
                }
            };
            let owner = f.owner.as_ref().and_then(|o| match Owner::parse(&o.value) {
                Some(owner) => Some(owner),
                None => {
                    self.error(
                        o.span,
                        format!("invalid owner `{}`", o.value),
                        Some("write \"user\", \"user:group\", \"uid\" or \"uid:gid\""),
                    );
                    None
                }
            });
            args.push(self.at(at));
            items.push(FetchItem {
                sources: vec![source],
                dest: dest.value,
                mode: f.mode.as_ref().map(|m| m.value.clone()),
                owner,
            });
        }
        let step = FetchStep {
            items,
            name,
            link: false,
        };
        g.add_step(
            stage,
            StepKind::Fetch(step),
            self.at(span),
            Vec::new(),
            args,
        );
    }

    fn env_pairs(&mut self, kv: &[(S<String>, S<String>)]) -> Vec<(String, String)> {
        kv.iter()
            .map(|(k, v)| {
                if k.value.is_empty() || k.value.contains('=') {
                    self.error(k.span, format!("invalid variable name `{}`", k.value), None);
                }
                (k.value.clone(), v.value.clone())
            })
            .collect()
    }

    fn check_user(&mut self, u: &S<String>) {
        if u.value.is_empty()
            || u.value.chars().any(char::is_whitespace)
            || Owner::parse(&u.value).is_none()
        {
            self.error(
                u.span,
                format!("invalid user `{}`", u.value),
                Some("write \"name\", \"uid\", \"name:group\" or \"uid:gid\""),
            );
        }
    }

    fn config(&mut self, g: &mut GraphBuilder, stage: StageId, c: &ConfigKeys, span: Span) {
        let mut changes: Vec<(ConfigChange, Span)> = Vec::new();
        if !c.env.is_empty() {
            let s = c.env[0].0.span;
            changes.push((ConfigChange::Env(self.env_pairs(&c.env)), s));
        }
        if !c.labels.is_empty() {
            for (k, _) in &c.labels {
                if k.value.is_empty() {
                    self.error(k.span, "empty label key", None);
                }
            }
            let kv = c
                .labels
                .iter()
                .map(|(k, v)| (k.value.clone(), v.value.clone()))
                .collect();
            changes.push((ConfigChange::Label(kv), c.labels[0].0.span));
        }
        if let Some(w) = &c.workdir {
            if !w.value.starts_with('/') {
                self.error(
                    w.span,
                    "`workdir` must be an absolute path",
                    Some(&format!("write \"/{}\"", w.value)),
                );
            }
            changes.push((ConfigChange::Workdir(clean_path(&w.value)), w.span));
        }
        if let Some(u) = &c.user {
            self.check_user(u);
            changes.push((ConfigChange::User(u.value.clone()), u.span));
        }
        if !c.ports.is_empty() {
            let ports = c.ports.iter().filter_map(|p| self.port(p)).collect();
            changes.push((ConfigChange::Expose(ports), c.ports[0].span));
        }
        if !c.volumes.is_empty() {
            for v in &c.volumes {
                if !v.value.starts_with('/') {
                    self.error(v.span, "volumes must be absolute paths", None);
                }
            }
            let vols = c.volumes.iter().map(|v| v.value.clone()).collect();
            changes.push((ConfigChange::Volume(vols), c.volumes[0].span));
        }
        if let Some(s) = &c.stop_signal {
            if !valid_signal(&s.value) {
                self.error(
                    s.span,
                    format!("unknown signal `{}`", s.value),
                    Some("write a name such as \"SIGTERM\" or a number"),
                );
            }
            changes.push((ConfigChange::StopSignal(s.value.clone()), s.span));
        }
        if let Some(sh) = &c.shell {
            if sh.value.is_empty() {
                self.error(
                    sh.span,
                    "`shell` needs at least the shell's path",
                    Some("e.g. [\"/bin/bash\", \"-c\"]"),
                );
            }
            changes.push((ConfigChange::Shell(sh.value.clone()), sh.span));
        }
        if let Some(e) = &c.entrypoint {
            changes.push((ConfigChange::Entrypoint(command_of(&e.value)), e.span));
        }
        if let Some(cmd) = &c.cmd {
            changes.push((ConfigChange::Cmd(command_of(&cmd.value)), cmd.span));
        }
        let _ = span;
        for (change, s) in changes {
            g.add_step(
                stage,
                StepKind::Config(change),
                self.at(s),
                Vec::new(),
                Vec::new(),
            );
        }
    }

    /// `8080`, `8080/tcp`, `53/udp`, `8000-8010/tcp` → normalized with a protocol.
    fn port(&mut self, p: &S<String>) -> Option<String> {
        let (range, proto) = match p.value.split_once('/') {
            Some((r, proto)) => (r, proto.to_ascii_lowercase()),
            None => (p.value.as_str(), "tcp".to_string()),
        };
        let valid_num = |s: &str| s.parse::<u16>().is_ok_and(|n| n > 0);
        let ok_range = match range.split_once('-') {
            Some((a, b)) => valid_num(a) && valid_num(b),
            None => valid_num(range),
        };
        if !ok_range || !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
            self.error(
                p.span,
                format!("invalid port `{}`", p.value),
                Some("write a port 1-65535, optionally with /tcp, /udp or /sctp"),
            );
            return None;
        }
        Some(format!("{range}/{proto}"))
    }
}

fn command_of(c: &CommandSpec) -> Command {
    match c {
        CommandSpec::Shell(s) => Command::Shell(s.clone()),
        CommandSpec::Exec(a) => Command::Exec(a.clone()),
    }
}

const SIGNALS: &[&str] = &[
    "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "IOT", "BUS", "FPE", "KILL", "USR1", "SEGV",
    "USR2", "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU",
    "URG", "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "POLL", "PWR", "SYS", "RTMIN", "RTMAX",
];

fn valid_signal(s: &str) -> bool {
    if s.parse::<u8>().is_ok_and(|n| (1..=64).contains(&n)) {
        return true;
    }
    let name = s.strip_prefix("SIG").unwrap_or(s);
    let base = name.split_once(['+', '-']).map_or(name, |(b, _)| b);
    SIGNALS.contains(&base)
        && (base == name
            || (base.starts_with("RT") && name[base.len() + 1..].parse::<u8>().is_ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals() {
        assert!(valid_signal("SIGTERM"));
        assert!(valid_signal("TERM"));
        assert!(valid_signal("9"));
        assert!(valid_signal("SIGRTMIN+3"));
        assert!(!valid_signal("SIGFOO"));
        assert!(!valid_signal("SIGTERM+1"));
    }

    #[test]
    fn join_is_lexical() {
        assert_eq!(join_clean(Path::new("/a/specs"), ".."), PathBuf::from("/a"));
        assert_eq!(
            join_clean(Path::new("/a"), "/abs/x"),
            PathBuf::from("/abs/x")
        );
    }
}
