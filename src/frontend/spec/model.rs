//! The spec model: what a TOML spec says, typed, with the span of every value.
//! Built from the span-preserving TOML tree by [`parse`], which reports every
//! unknown key and wrong type it finds.

use std::sync::Arc;

use toml::de::{DeTable, DeValue};

use super::decode::{Decoder, S, V, get};
use crate::diag::{Diagnostic, SourceFile, Span};
use crate::graph::Chmod;

/// A command in shell form (a string) or exec form (an array).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandSpec {
    /// `run = "make all"`.
    Shell(String),
    /// `run = ["make", "all"]`.
    Exec(Vec<String>),
}

/// Config keys shared by stages, images and config steps.
#[derive(Debug, Clone, Default)]
pub struct ConfigKeys {
    /// `env = { K = "v" }`.
    pub env: Vec<(S<String>, S<String>)>,
    /// `labels = { k = "v" }`.
    pub labels: Vec<(S<String>, S<String>)>,
    /// `workdir = "/app"`.
    pub workdir: Option<S<String>>,
    /// `user = "65532:65532"`.
    pub user: Option<S<String>>,
    /// `ports = ["8080/tcp", 53]`.
    pub ports: Vec<S<String>>,
    /// `volumes = ["/data"]`.
    pub volumes: Vec<S<String>>,
    /// `stop_signal = "SIGTERM"`.
    pub stop_signal: Option<S<String>>,
    /// `shell = ["/bin/bash", "-c"]`.
    pub shell: Option<S<Vec<String>>>,
    /// `entrypoint = ["/hello"]`.
    pub entrypoint: Option<S<CommandSpec>>,
    /// `cmd = ["--serve"]`.
    pub cmd: Option<S<CommandSpec>>,
}

impl ConfigKeys {
    /// The keys, as accepted in TOML.
    pub const KEYS: &'static [&'static str] = &[
        "env",
        "labels",
        "workdir",
        "user",
        "ports",
        "volumes",
        "stop_signal",
        "shell",
        "entrypoint",
        "cmd",
    ];

    fn is_empty(&self) -> bool {
        self.env.is_empty()
            && self.labels.is_empty()
            && self.workdir.is_none()
            && self.user.is_none()
            && self.ports.is_empty()
            && self.volumes.is_empty()
            && self.stop_signal.is_none()
            && self.shell.is_none()
            && self.entrypoint.is_none()
            && self.cmd.is_none()
    }
}

/// One copy: sources to a destination.
#[derive(Debug, Clone)]
pub struct CopySpec {
    /// `src`: one or more paths or globs.
    pub src: Vec<S<String>>,
    /// `dest`.
    pub dest: S<String>,
    /// `from`: a stage or image to copy from (the context otherwise).
    pub from: Option<S<String>>,
    /// `mode`: octal or symbolic permissions.
    pub mode: Option<S<Chmod>>,
    /// `owner`: `user[:group]`.
    pub owner: Option<S<String>>,
    /// `exclude`: patterns.
    pub exclude: Vec<S<String>>,
    /// `parents`: keep source directories.
    pub parents: bool,
    /// The whole inline table.
    pub span: Span,
}

/// One file fetched from a URL (a Dockerfile's `ADD URL DEST`), or a git
/// repository's tree (`ADD GIT-URL#REF:SUBDIR DEST`).
#[derive(Debug, Clone)]
pub struct FetchSpec {
    /// What is fetched.
    pub source: FetchSource,
    /// `dest`: a path, or a directory ending in `/` (the file then takes
    /// the URL's last path segment as its name).
    pub dest: S<String>,
    /// `checksum`: `sha256:HEX`, verified; the cache key needs no request.
    pub checksum: Option<S<String>>,
    /// `mode`: octal or symbolic permissions (0600 otherwise).
    pub mode: Option<S<Chmod>>,
    /// `owner`: `user[:group]`.
    pub owner: Option<S<String>>,
    /// The whole inline table.
    pub span: Span,
}

/// Where a fetch's content comes from.
#[derive(Debug, Clone)]
pub enum FetchSource {
    /// `url`: an `http://` or `https://` URL.
    Url(S<String>),
    /// `git`: a repository (`URL[#REF[:SUBDIR]]`), with `ref`, `subdir`
    /// and `keep_git_dir` beside it.
    Git {
        /// `git`.
        url: S<String>,
        /// `ref`: a branch, tag or commit.
        reference: Option<S<String>>,
        /// `subdir`: a directory of the tree.
        subdir: Option<S<String>>,
        /// `keep_git_dir`.
        keep_git_dir: bool,
    },
}

/// The body of a step.
#[derive(Debug, Clone)]
pub enum StepBody {
    /// `copy = [...]`: one layer.
    Copy(Vec<CopySpec>),
    /// `fetch = [...]`: files from URLs, one layer.
    Fetch(Vec<FetchSpec>),
    /// `run = ...`: one layer.
    Run {
        /// The command.
        command: S<CommandSpec>,
        /// Environment for this command only.
        env: Vec<(S<String>, S<String>)>,
        /// Working directory for this command only.
        workdir: Option<S<String>>,
        /// User for this command only.
        user: Option<S<String>>,
        /// `host` or `none`.
        network: Option<S<String>>,
        /// Cache mount targets.
        cache: Vec<S<String>>,
    },
    /// Config keys only: changes the image, no layer.
    Config(ConfigKeys),
}

/// One `[[stage.X.step]]` / `[[image.X.step]]`.
#[derive(Debug, Clone)]
pub struct StepSpec {
    /// Display name.
    pub name: Option<S<String>>,
    /// What it does.
    pub body: StepBody,
    /// The step's table.
    pub span: Span,
}

/// Whether a target is written out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// `[stage.X]`: built only as needed by others.
    Stage,
    /// `[image.X]`: an output image.
    Image,
}

/// A `[stage.X]` or `[image.X]` table.
#[derive(Debug, Clone)]
pub struct TargetSpec {
    /// Stage or image.
    pub kind: TargetKind,
    /// Its name (the table key).
    pub name: S<String>,
    /// `from`.
    pub from: Option<S<String>>,
    /// Final config.
    pub config: ConfigKeys,
    /// Steps, in order.
    pub steps: Vec<StepSpec>,
    /// `tags` (images only).
    pub tags: Vec<S<String>>,
    /// `output` (images only).
    pub output: Option<S<String>>,
    /// `format` (images only).
    pub format: Option<S<String>>,
    /// `platform`: the one platform this stage is built for (may name a
    /// variable: `"${BUILDPLATFORM}"`).
    pub platform: Option<S<String>>,
    /// `platforms` (images only): the platforms to build it for, instead
    /// of `[build].platforms`.
    pub platforms: Vec<S<String>>,
}

/// The `[build]` table.
#[derive(Debug, Clone, Default)]
pub struct BuildSpec {
    /// `context`, relative to the spec file.
    pub context: Option<S<String>>,
    /// `source_date_epoch`.
    pub source_date_epoch: Option<S<i64>>,
    /// `exclude`: context-wide patterns.
    pub exclude: Vec<S<String>>,
    /// `platforms`: what every image is built for unless it says otherwise.
    pub platforms: Vec<S<String>>,
}

/// A whole spec.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    /// `[build]`.
    pub build: BuildSpec,
    /// Stages and images, in file order.
    pub targets: Vec<TargetSpec>,
}

const TOP_KEYS: &[&str] = &["build", "stage", "image"];
const BUILD_KEYS: &[&str] = &["context", "source_date_epoch", "exclude", "platforms"];
const STAGE_ONLY_KEYS: &[&str] = &["from", "step", "platform"];
const IMAGE_ONLY_KEYS: &[&str] = &["tags", "output", "format", "platforms"];
const COPY_KEYS: &[&str] = &["src", "dest", "from", "mode", "owner", "exclude", "parents"];
const FETCH_KEYS: &[&str] = &[
    "url",
    "git",
    "ref",
    "subdir",
    "keep_git_dir",
    "dest",
    "checksum",
    "mode",
    "owner",
];
const RUN_KEYS: &[&str] = &["name", "run", "env", "workdir", "user", "network", "cache"];

/// Parses spec text into a [`Spec`], collecting every problem. The spec comes
/// back with what could be read, beside the diagnostics for the rest.
///
/// # Errors
/// TOML syntax errors: nothing can be read then.
pub fn parse(file: &Arc<SourceFile>) -> Result<(Spec, Vec<Diagnostic>), Vec<Diagnostic>> {
    let (root, errors) = DeTable::parse_recoverable(file.text());
    // Only the first syntax error: the ones after it are mostly the parser
    // recovering from the first.
    if let Some(e) = errors.first() {
        let span = e.span().unwrap_or(0..0);
        return Err(vec![Diagnostic::error(
            file,
            span,
            format!("invalid TOML: {}", e.message().trim()),
        )]);
    }
    let mut d = Decoder::new(Arc::clone(file));
    let root = root.get_ref();
    d.check_keys(root, TOP_KEYS, "the spec");
    let mut spec = Spec::default();
    if let Some(b) = get(root, "build") {
        spec.build = parse_build(&mut d, b);
    }
    for (key, kind) in [("stage", TargetKind::Stage), ("image", TargetKind::Image)] {
        let Some(v) = get(root, key) else { continue };
        let Some(t) = d.table(v, key) else { continue };
        for (name, body) in t.iter() {
            let name = S::new(name.get_ref().to_string(), name.span());
            if let Some(target) = parse_target(&mut d, kind, name, body) {
                spec.targets.push(target);
            }
        }
    }
    if spec.targets.iter().all(|t| t.kind != TargetKind::Image) {
        d.error(0..0, "the spec defines no image").help =
            Some("add an `[image.NAME]` table: it is what the build writes out".into());
    }
    Ok((spec, d.diags))
}

fn parse_build(d: &mut Decoder, v: &V<'_>) -> BuildSpec {
    let mut b = BuildSpec::default();
    let Some(t) = d.table(v, "build") else {
        return b;
    };
    d.check_keys(t, BUILD_KEYS, "[build]");
    if let Some(v) = get(t, "context") {
        b.context = d.string(v, "context");
    }
    if let Some(v) = get(t, "source_date_epoch") {
        b.source_date_epoch = d.integer(v, "source_date_epoch");
        if let Some(e) = &b.source_date_epoch
            && e.value < 0
        {
            d.error(e.span, "`source_date_epoch` must not be negative");
        }
    }
    if let Some(v) = get(t, "exclude") {
        b.exclude = d.string_array(v, "exclude").unwrap_or_default();
    }
    if let Some(v) = get(t, "platforms") {
        b.platforms = parse_platforms(d, v);
    }
    b
}

/// `platforms = ["linux/amd64", …]` (or one string), each a platform.
fn parse_platforms(d: &mut Decoder, v: &V<'_>) -> Vec<S<String>> {
    let list = d.one_or_many(v, "platforms").unwrap_or_default();
    for p in &list {
        if let Err(e) = crate::platform::Platform::parse(&p.value) {
            d.error(p.span, e.to_string()).help =
                Some("write os/arch[/variant], e.g. \"linux/arm64\"".into());
        }
    }
    list
}

fn parse_target(
    d: &mut Decoder,
    kind: TargetKind,
    name: S<String>,
    v: &V<'_>,
) -> Option<TargetSpec> {
    let what = match kind {
        TargetKind::Stage => format!("[stage.{}]", name.value),
        TargetKind::Image => format!("[image.{}]", name.value),
    };
    let t = d.table(v, &what)?;
    let mut allowed: Vec<&str> = STAGE_ONLY_KEYS.to_vec();
    allowed.extend_from_slice(ConfigKeys::KEYS);
    if kind == TargetKind::Image {
        allowed.extend_from_slice(IMAGE_ONLY_KEYS);
    }
    d.check_keys(t, &allowed, &what);
    if kind == TargetKind::Stage {
        for k in IMAGE_ONLY_KEYS {
            if let Some((key, _)) = t.iter().find(|(key, _)| key.get_ref().as_ref() == *k) {
                // check_keys already reported it; add why.
                if let Some(last) = d.diags.iter_mut().rev().find(|x| {
                    x.at.as_ref()
                        .is_some_and(|a| a.span == Span::from(key.span()))
                }) {
                    last.help = Some(format!(
                        "`{k}` belongs to images; declare `[image.{}]` to write this stage out",
                        name.value
                    ));
                }
            }
        }
    }
    let valid_name = name
        .value
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !valid_name {
        d.error(name.span, format!("invalid name `{}`", name.value))
            .help = Some(
            "names start with a letter or digit and use only letters, digits, `_`, `-` and `.`"
                .into(),
        );
    }
    let from = get(t, "from").and_then(|v| d.string(v, "from"));
    if from.is_none() && get(t, "from").is_none() {
        d.error(name.span, format!("{what} has no `from`")).help =
            Some("start from an image, another stage, or \"scratch\": from = \"scratch\"".into());
    }
    let config = parse_config(d, t);
    let mut steps = Vec::new();
    if let Some(v) = get(t, "step")
        && let Some(tables) = d.tables(v, "step")
    {
        for (st, span) in tables {
            if let Some(s) = parse_step(d, st, span) {
                steps.push(s);
            }
        }
    }
    let mut target = TargetSpec {
        kind,
        name,
        from,
        config,
        steps,
        tags: Vec::new(),
        output: None,
        format: None,
        platform: get(t, "platform").and_then(|v| d.string(v, "platform")),
        platforms: Vec::new(),
    };
    if kind == TargetKind::Image {
        if let Some(v) = get(t, "tags") {
            target.tags = d.one_or_many(v, "tags").unwrap_or_default();
        }
        if let Some(v) = get(t, "output") {
            target.output = d.string(v, "output");
        }
        if let Some(v) = get(t, "platforms") {
            target.platforms = parse_platforms(d, v);
        }
        if let Some(v) = get(t, "format") {
            target.format = d.string(v, "format");
            if let Some(f) = &target.format
                && f.value != "oci"
                && f.value != "docker"
            {
                d.error(f.span, format!("unknown archive format `{}`", f.value))
                    .help = Some("use \"oci\" or \"docker\"".into());
            }
        }
    }
    Some(target)
}

fn parse_config(d: &mut Decoder, t: &DeTable<'_>) -> ConfigKeys {
    let mut c = ConfigKeys::default();
    if let Some(v) = get(t, "env") {
        c.env = d.string_map(v, "env").unwrap_or_default();
    }
    if let Some(v) = get(t, "labels") {
        c.labels = d.string_map(v, "labels").unwrap_or_default();
    }
    if let Some(v) = get(t, "workdir") {
        c.workdir = d.string(v, "workdir");
    }
    if let Some(v) = get(t, "user") {
        c.user = d.string(v, "user");
    }
    if let Some(v) = get(t, "ports") {
        c.ports = parse_ports(d, v);
    }
    if let Some(v) = get(t, "volumes") {
        c.volumes = d.one_or_many(v, "volumes").unwrap_or_default();
    }
    if let Some(v) = get(t, "stop_signal") {
        c.stop_signal = d.string(v, "stop_signal");
    }
    if let Some(v) = get(t, "shell") {
        c.shell = d
            .string_array(v, "shell")
            .map(|a| S::new(a.into_iter().map(|s| s.value).collect(), v.span()));
    }
    if let Some(v) = get(t, "entrypoint") {
        c.entrypoint = parse_command(d, v, "entrypoint");
    }
    if let Some(v) = get(t, "cmd") {
        c.cmd = parse_command(d, v, "cmd");
    }
    c
}

fn parse_ports(d: &mut Decoder, v: &V<'_>) -> Vec<S<String>> {
    let items: Vec<&V<'_>> = match v.get_ref() {
        DeValue::Array(a) => a.iter().collect(),
        _ => vec![v],
    };
    let mut out = Vec::new();
    for item in items {
        match item.get_ref() {
            DeValue::Integer(_) => {
                if let Some(n) = d.integer(item, "ports") {
                    out.push(S::new(n.value.to_string(), n.span));
                }
            }
            DeValue::String(_) => {
                if let Some(s) = d.string(item, "ports") {
                    out.push(s);
                }
            }
            _ => {
                d.error(
                    item.span(),
                    "`ports` entries must be port numbers or strings like \"8080/tcp\"",
                );
            }
        }
    }
    out
}

fn parse_command(d: &mut Decoder, v: &V<'_>, key: &str) -> Option<S<CommandSpec>> {
    match v.get_ref() {
        DeValue::String(s) => Some(S::new(CommandSpec::Shell(s.to_string()), v.span())),
        DeValue::Array(_) => d.string_array(v, key).map(|a| {
            S::new(
                CommandSpec::Exec(a.into_iter().map(|s| s.value).collect()),
                v.span(),
            )
        }),
        _ => {
            d.error(
                v.span(),
                format!("`{key}` must be a string (shell form) or an array of strings (exec form)"),
            );
            None
        }
    }
}

fn parse_step(d: &mut Decoder, t: &DeTable<'_>, span: Span) -> Option<StepSpec> {
    let has = |k: &str| get(t, k).is_some();
    let name = get(t, "name").and_then(|v| d.string(v, "name"));
    let bodies: Vec<&str> = ["copy", "fetch", "run"]
        .into_iter()
        .filter(|k| has(k))
        .collect();
    if let [a, b, ..] = bodies.as_slice() {
        d.error(span, format!("a step is either `{a}` or `{b}`, not both"))
            .help = Some("split it into two steps: each makes its own layer".into());
        return None;
    }
    if let Some(v) = get(t, "fetch") {
        d.check_keys(t, &["name", "fetch"], "a fetch step");
        let items = d.tables(v, "fetch")?;
        if items.is_empty() {
            d.error(v.span(), "`fetch` lists no URLs");
        }
        let fetches = items
            .into_iter()
            .filter_map(|(ft, fspan)| parse_fetch(d, ft, fspan))
            .collect();
        return Some(StepSpec {
            name,
            body: StepBody::Fetch(fetches),
            span,
        });
    }
    if let Some(v) = get(t, "copy") {
        d.check_keys(t, &["name", "copy"], "a copy step");
        let items = d.tables(v, "copy")?;
        if items.is_empty() {
            d.error(v.span(), "`copy` lists no files");
        }
        let copies = items
            .into_iter()
            .filter_map(|(ct, cspan)| parse_copy(d, ct, cspan))
            .collect();
        return Some(StepSpec {
            name,
            body: StepBody::Copy(copies),
            span,
        });
    }
    if let Some(v) = get(t, "run") {
        d.check_keys(t, RUN_KEYS, "a run step");
        let command = parse_command(d, v, "run")?;
        let env = get(t, "env")
            .and_then(|v| d.string_map(v, "env"))
            .unwrap_or_default();
        let workdir = get(t, "workdir").and_then(|v| d.string(v, "workdir"));
        let user = get(t, "user").and_then(|v| d.string(v, "user"));
        let network = get(t, "network").and_then(|v| d.string(v, "network"));
        if let Some(n) = &network
            && n.value != "host"
            && n.value != "none"
        {
            d.error(n.span, format!("unknown network mode `{}`", n.value))
                .help = Some("use \"host\" (the default) or \"none\"".into());
        }
        let cache = get(t, "cache")
            .and_then(|v| d.one_or_many(v, "cache"))
            .unwrap_or_default();
        return Some(StepSpec {
            name,
            body: StepBody::Run {
                command,
                env,
                workdir,
                user,
                network,
                cache,
            },
            span,
        });
    }
    let mut allowed = vec!["name"];
    allowed.extend_from_slice(ConfigKeys::KEYS);
    allowed.extend_from_slice(&["copy", "fetch", "run"]);
    d.check_keys(t, &allowed, "a step");
    let config = parse_config(d, t);
    if config.is_empty() {
        d.error(span, "this step does nothing").help =
            Some("a step has `copy = [...]`, `fetch = [...]`, `run = \"...\"`, or config keys such as `env`".into());
        return None;
    }
    Some(StepSpec {
        name,
        body: StepBody::Config(config),
        span,
    })
}

fn parse_copy(d: &mut Decoder, t: &DeTable<'_>, span: Span) -> Option<CopySpec> {
    d.check_keys(t, COPY_KEYS, "a copy");
    let src = match get(t, "src") {
        Some(v) => d.one_or_many(v, "src")?,
        None => {
            d.error(span, "a copy needs `src`").label = Some("missing `src`".into());
            return None;
        }
    };
    if src.is_empty() {
        d.error(span, "`src` lists no files");
    }
    let dest = match get(t, "dest") {
        Some(v) => d.string(v, "dest")?,
        None => {
            d.error(span, "a copy needs `dest`").label = Some("missing `dest`".into());
            return None;
        }
    };
    let from = get(t, "from").and_then(|v| d.string(v, "from"));
    let mode = get(t, "mode").and_then(|v| parse_mode(d, v));
    let owner = get(t, "owner").and_then(|v| d.string(v, "owner"));
    let exclude = get(t, "exclude")
        .and_then(|v| d.one_or_many(v, "exclude"))
        .unwrap_or_default();
    let parents = get(t, "parents")
        .and_then(|v| d.boolean(v, "parents"))
        .unwrap_or(false);
    Some(CopySpec {
        src,
        dest,
        from,
        mode,
        owner,
        exclude,
        parents,
        span,
    })
}

fn parse_fetch(d: &mut Decoder, t: &DeTable<'_>, span: Span) -> Option<FetchSpec> {
    d.check_keys(t, FETCH_KEYS, "a fetch");
    let need = |d: &mut Decoder, key: &str| match get(t, key) {
        Some(v) => d.string(v, key),
        None => {
            d.error(span, format!("a fetch needs `{key}`")).label =
                Some(format!("missing `{key}`"));
            None
        }
    };
    let source = match (get(t, "url"), get(t, "git")) {
        (Some(_), Some(g)) => {
            d.error(g.span(), "a fetch has `url` or `git`, not both")
                .label = Some("second source".into());
            None
        }
        (None, Some(g)) => {
            let url = d.string(g, "git");
            let reference = get(t, "ref").and_then(|v| d.string(v, "ref"));
            let subdir = get(t, "subdir").and_then(|v| d.string(v, "subdir"));
            let keep_git_dir = get(t, "keep_git_dir")
                .and_then(|v| d.boolean(v, "keep_git_dir"))
                .unwrap_or(false);
            url.map(|url| FetchSource::Git {
                url,
                reference,
                subdir,
                keep_git_dir,
            })
        }
        (Some(_), None) | (None, None) => {
            let url = need(d, "url").map(FetchSource::Url);
            for key in ["ref", "subdir", "keep_git_dir"] {
                if let Some(v) = get(t, key) {
                    d.error(v.span(), format!("`{key}` applies to a `git` fetch"))
                        .label = Some("no `git` in this fetch".into());
                }
            }
            url
        }
    };
    let dest = need(d, "dest");
    let checksum = get(t, "checksum").and_then(|v| d.string(v, "checksum"));
    let mode = get(t, "mode").and_then(|v| parse_mode(d, v));
    let owner = get(t, "owner").and_then(|v| d.string(v, "owner"));
    Some(FetchSpec {
        source: source?,
        dest: dest?,
        checksum,
        mode,
        owner,
        span,
    })
}

/// `mode = "0644"` / `"a=rX,u+w"` (as chmod takes them) or `mode = 0o644`.
fn parse_mode(d: &mut Decoder, v: &V<'_>) -> Option<S<Chmod>> {
    let bad = |d: &mut Decoder, span| {
        d.error(
            span,
            "`mode` must be octal bits or a symbolic mode, e.g. \"0644\", 0o755 or \"a=rX,u+w\"",
        )
        .label = Some("not a mode".into());
    };
    match v.get_ref() {
        DeValue::String(s) => match Chmod::parse(s) {
            Some(m) => Some(S::new(m, v.span())),
            None => {
                bad(d, v.span());
                None
            }
        },
        DeValue::Integer(i) => {
            if i.radix() != 8 {
                d.error(
                    v.span(),
                    "`mode` as a number must be written in octal, e.g. 0o644",
                )
                .help = Some(format!(
                    "decimal {0} is probably not what you meant; write \"0{0}\" or 0o{0}",
                    i.as_str()
                ));
                return None;
            }
            let n = d.integer(v, "mode")?;
            match u32::try_from(n.value) {
                Ok(m) if m <= 0o7777 => Some(S::new(Chmod::Octal(m), v.span())),
                _ => {
                    bad(d, v.span());
                    None
                }
            }
        }
        _ => {
            bad(d, v.span());
            None
        }
    }
}
