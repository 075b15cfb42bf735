//! Dockerfile instructions → BuildGraph, with BuildKit's dispatch semantics:
//! stages and `AS` names, ARG scoping (global ARGs before the first FROM,
//! re-declared per stage, `--build-arg`, the predefined platform args), ENV,
//! and which words of which instruction are expanded.
//!
//! Expansion needs each base image's environment; lowering asks a
//! [`BaseResolver`] for it, as BuildKit resolves base images before it
//! dispatches. Each instruction family lowers in its own file.

mod copy;
mod meta;
mod run;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use super::ast::{self, Instruction, Kind};
use super::expand::Lexer;
use super::parser::{Ast, Word};
use crate::diag::{Diagnostic, SourceFile, SourceRef, Span, did_you_mean};
use crate::graph::builder::{PendingBase, PendingRef};
use crate::graph::{
    BaseInfo, BaseResolver, BuildGraph, CopyFrom, CopyItem, CopyStep, GraphBuilder, ImageSource,
    NamedContext, NamedContexts, Output, Settings, StageId, StepKind, context_name,
};
use crate::pattern::clean_path;
use crate::platform::Platform;

/// What lowering needs besides the file.
pub struct Options<'a> {
    /// The build context (absolute).
    pub context: PathBuf,
    /// Files read to define the build (the Dockerfile, the ignore file).
    pub inputs: Vec<PathBuf>,
    /// `.dockerignore` patterns.
    pub excludes: Vec<String>,
    /// `--build-arg` values.
    pub build_args: Vec<(String, String)>,
    /// `--target`.
    pub target: Option<String>,
    /// The platform built for (`TARGETPLATFORM`).
    pub platform: Platform,
    /// The platform building (`BUILDPLATFORM`): the host's.
    pub build_platform: Platform,
    /// Looks up base images (their environment and ONBUILD triggers).
    pub resolver: &'a dyn BaseResolver,
    /// Warn about stages the target does not need (off when the caller
    /// lowers once per platform and warns on the merged graph).
    pub warn_unused_stages: bool,
    /// `--build-context NAME=…`: what NAME means wherever the Dockerfile
    /// names it (a base, `COPY --from`, a stage's own name).
    pub named_contexts: &'a NamedContexts,
}

/// Build args usable without an ARG instruction (docker's predefined proxy
/// args); they reach RUN but are not expanded in other instructions.
const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Variables in scope for expansion: ENV wins over ARG, as docker documents.
///
/// Hash maps, not lists: a Dockerfile with 200,000 ENV or ARG lines must not
/// cost a scan per lookup. The environment is shared (copy on write) between
/// a stage and the stages built `FROM` it.
#[derive(Debug, Clone, Default)]
pub(super) struct Scope {
    /// Image config environment.
    env: Arc<HashMap<String, String>>,
    /// Bytes of names and values in `env`, charged when a stage copies it.
    env_bytes: usize,
    /// Declared build args: declaration order (a re-declaration moves the
    /// name to the end, as docker's list does) and value, or `None` when
    /// declared without one.
    args: HashMap<String, (u64, Option<String>)>,
    /// The next declaration's place.
    next_arg: u64,
    /// Args with a value declared after the latest ENV of the same name:
    /// their value wins over the ENV's (BuildKit adds an ARG's value to
    /// the build state's environment, so the later of the two wins) in
    /// expansions and RUN's environment; the image's config keeps the ENV.
    args_over_env: HashSet<String>,
}

impl Scope {
    fn get(&self, name: &str) -> Option<String> {
        let arg = self.args.get(name).and_then(|(_, v)| v.clone());
        if self.args_over_env.contains(name) && arg.is_some() {
            return arg;
        }
        if let Some(v) = self.env.get(name) {
            return Some(v.clone());
        }
        arg
    }

    /// The args whose value wins over an ENV of the same name.
    pub(super) fn args_over_env(&self) -> Vec<String> {
        let mut v: Vec<String> = self.args_over_env.iter().cloned().collect();
        v.sort_unstable();
        v
    }

    fn knows(&self, name: &str) -> bool {
        self.env.contains_key(name) || self.args.contains_key(name)
    }

    pub(super) fn set_env(&mut self, k: &str, v: &str) {
        self.args_over_env.remove(k);
        let env = Arc::make_mut(&mut self.env);
        match env.get_mut(k) {
            Some(old) => {
                self.env_bytes = self.env_bytes - old.len() + v.len();
                v.clone_into(old);
            }
            None => {
                self.env_bytes += k.len() + v.len();
                env.insert(k.to_string(), v.to_string());
            }
        }
    }

    /// Declares (or re-declares) a build arg.
    fn declare_arg(&mut self, name: &str, value: Option<String>) {
        if value.is_some() && self.env.contains_key(name) {
            self.args_over_env.insert(name.to_string());
        } else {
            self.args_over_env.remove(name);
        }
        self.args.insert(name.to_string(), (self.next_arg, value));
        self.next_arg += 1;
    }

    /// The build args with a value, in declaration order.
    pub(super) fn arg_values(&self) -> Vec<(String, String)> {
        let mut v: Vec<(u64, &String, &String)> = self
            .args
            .iter()
            .filter_map(|(k, (seq, v))| v.as_ref().map(|v| (*seq, k, v)))
            .collect();
        v.sort_unstable_by_key(|(seq, _, _)| *seq);
        v.into_iter()
            .map(|(_, k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The environment only (what a stage leaves to stages built from it).
    fn env_only(&self) -> Scope {
        Scope {
            env: Arc::clone(&self.env),
            env_bytes: self.env_bytes,
            ..Scope::default()
        }
    }
}

/// The most text lowering may produce beyond the Dockerfile itself: expanded
/// words, environments copied into stages and RUN steps. `ENV A=$A$A` doubles
/// a value per line and `FROM prev` copies every variable into each stage; a
/// few kilobytes of Dockerfile could otherwise ask for terabytes.
pub const MAX_PRODUCED: usize = 256 << 20;

/// Per-stage lowering state.
pub(super) struct Stage {
    pub id: StageId,
    pub scope: Scope,
    pub workdir: String,
    /// A named context replaces the stage (`--build-context NAME=…` for
    /// its `AS NAME`, as BuildKit does): its instructions are not lowered.
    pub replaced: bool,
}

pub(super) struct Lowerer<'a> {
    pub file: &'a Arc<SourceFile>,
    pub opts: &'a Options<'a>,
    pub lexer: Lexer,
    pub diags: Vec<Diagnostic>,
    /// The stages so far, for `FROM <stage>` and index lookups.
    pub stages: Vec<StageInfo>,
    /// Build args used by some ARG, to warn about unused `--build-arg`s.
    pub used_build_args: BTreeSet<String>,
    /// Stage names (first of each) → index in `stages`.
    pub stage_index: HashMap<String, usize>,
    /// Text produced so far, against [`MAX_PRODUCED`].
    pub produced: usize,
    /// Set once [`MAX_PRODUCED`] is exceeded (reported once; lowering stops).
    pub exhausted: bool,
}

/// Lowers a parsed Dockerfile. Returns the graph (for further checks even
/// when there are errors) and every diagnostic.
pub fn lower(
    file: &Arc<SourceFile>,
    ast: &Ast,
    opts: &Options<'_>,
) -> (BuildGraph, Vec<Diagnostic>) {
    let instructions = ast.nodes.iter().map(|n| ast::instruction(file, n));
    let (graph, mut diags) = lower_instructions(file, ast.directives.escape, instructions, opts);
    diags.extend(ast.warnings.iter().cloned());
    (graph, diags)
}

/// Parses and lowers a Dockerfile in one pass: each node is typed and
/// lowered as the parser forms it, so the parse tree is never held whole (a
/// 200,000-line Dockerfile checks in a fraction of the memory [`parse`] then
/// [`lower`] take). The result is the same as theirs.
///
/// # Errors
/// The first syntax error, as [`parse`] reports it (lowering's diagnostics
/// are dropped then, as they would not have been made).
///
/// [`parse`]: super::parse
pub fn parse_and_lower(
    file: &Arc<SourceFile>,
    opts: &Options<'_>,
) -> Result<(BuildGraph, Vec<Diagnostic>), Diagnostic> {
    let mut nodes = super::parser::nodes(file)?;
    let escape = nodes.directives.escape;
    let mut fatal = None;
    let mut count = 0usize;
    let instructions = std::iter::from_fn(|| match nodes.next()? {
        Ok(n) => {
            count += 1;
            Some(ast::into_instruction(file, n))
        }
        Err(d) => {
            fatal = Some(d);
            None
        }
    });
    let (graph, mut diags) = lower_instructions(file, escape, instructions, opts);
    if let Some(d) = fatal {
        return Err(d);
    }
    if count == 0 {
        return Err(nodes.no_instructions());
    }
    diags.append(&mut nodes.warnings);
    Ok((graph, diags))
}

fn lower_instructions(
    file: &Arc<SourceFile>,
    escape: char,
    instructions: impl Iterator<Item = Result<Instruction, Diagnostic>>,
    opts: &Options<'_>,
) -> (BuildGraph, Vec<Diagnostic>) {
    let mut l = Lowerer {
        file,
        opts,
        lexer: Lexer::new(escape),
        diags: Vec::new(),
        stages: Vec::new(),
        used_build_args: BTreeSet::new(),
        stage_index: HashMap::new(),
        produced: 0,
        exhausted: false,
    };
    let settings = Settings {
        context: opts.context.clone(),
        source_date_epoch: None,
        context_excludes: opts.excludes.clone(),
        inputs: opts.inputs.clone(),
    };
    let mut g = GraphBuilder::new(settings);
    // At most one step per instruction, and at most one instruction per
    // line not continued from the line before: reserved once, the step list
    // is never copied while it grows.
    let continued = |l: &str| l.trim_end().ends_with(escape);
    let mut starts = 0usize;
    let mut prev_continues = false;
    for line in file.text().split('\n') {
        if !prev_continues {
            starts += 1;
        }
        prev_continues = continued(line);
    }
    g.reserve_steps(starts);

    // Typing errors are reported and the instruction skipped.
    let diags = std::cell::RefCell::new(Vec::new());
    let instructions = instructions.filter_map(|r| match r {
        Ok(i) => Some(i),
        Err(d) => {
            diags.borrow_mut().push(d);
            None
        }
    });

    // Global scope: ARGs before the first FROM, plus the predefined args.
    let mut meta = l.predefined();
    let mut iter = instructions.peekable();
    while let Some(i) = iter.peek() {
        match &i.kind {
            Kind::From { .. } => break,
            Kind::Arg(args) => {
                l.declare_args(&mut meta, args, true);
                iter.next();
            }
            _ => {
                l.diags.push(
                    Diagnostic::error(
                        file,
                        i.keyword.span,
                        format!(
                            "{} before the first FROM",
                            i.keyword.value.to_ascii_uppercase()
                        ),
                    )
                    .with_help("only ARG may come before FROM; start the stage with FROM IMAGE"),
                );
                iter.next();
            }
        }
    }
    let global = meta;

    let mut current: Option<Stage> = None;
    for i in iter {
        if let Kind::From {
            image,
            alias,
            platform,
        } = &i.kind
        {
            if let Some(st) = current.take() {
                l.finish_stage(st);
            }
            current = Some(l.start_stage(
                &mut g,
                &global,
                &i,
                image,
                alias.as_ref(),
                platform.as_ref(),
            ));
            if l.exhausted {
                break;
            }
            continue;
        }
        let Some(st) = current.as_mut() else { continue };
        if st.replaced {
            continue;
        }
        l.instruction(&mut g, st, &global, &i);
        if l.exhausted {
            break;
        }
    }
    if let Some(st) = current.take() {
        l.finish_stage(st);
    }
    l.diags.append(&mut diags.borrow_mut());
    if l.stages.is_empty() && !l.diags.iter().any(Diagnostic::is_error) {
        l.diags.push(Diagnostic::error(
            file,
            Span::new(0, 0),
            "the Dockerfile has no FROM instruction",
        ));
    }

    // The output: --target, or the last stage.
    let target = match &opts.target {
        Some(t) => {
            let names: Vec<&str> = l.stages.iter().map(|s| s.name.as_str()).collect();
            match crate::graph::select_target(&names, t) {
                Ok(i) => Some(StageId(i)),
                Err(d) => {
                    l.diags.push(d);
                    None
                }
            }
        }
        None => l.stages.len().checked_sub(1).map(StageId),
    };
    for (k, _) in &opts.build_args {
        if !l.used_build_args.contains(k) && !PROXY_ARGS.contains(&k.as_str()) {
            l.diags.push(Diagnostic::warning(
                file,
                Span::new(0, 0),
                format!("--build-arg {k} is not used: no ARG {k} in the stages built"),
            ));
        }
    }
    if let Some(t) = target {
        g.add_output(Output {
            stage: t,
            tags: Vec::new(),
            path: None,
            platform: None,
            docker_archive: false,
        });
    }
    let (graph, more) = g.finish();
    l.diags.extend(more);
    if let Some(t) = target
        && opts.warn_unused_stages
    {
        l.diags.extend(graph.unused_stages(&[t]));
    }
    (graph, l.diags)
}

impl<'a> Lowerer<'a> {
    pub(super) fn at(&self, span: Span) -> SourceRef {
        SourceRef {
            file: Arc::clone(self.file),
            span,
        }
    }

    pub(super) fn error(&mut self, span: Span, msg: impl Into<String>) -> &mut Diagnostic {
        self.diags.push(Diagnostic::error(self.file, span, msg));
        let n = self.diags.len() - 1;
        &mut self.diags[n]
    }

    fn predefined(&self) -> Scope {
        let b = &self.opts.build_platform;
        let build = b.to_string();
        let p = &self.opts.platform;
        let full = p.to_string();
        let mut s = Scope::default();
        for (k, v) in [
            ("BUILDPLATFORM", build.as_str()),
            ("BUILDOS", b.os.as_str()),
            ("BUILDARCH", b.arch.as_str()),
            ("BUILDVARIANT", b.variant.as_str()),
            ("TARGETPLATFORM", full.as_str()),
            ("TARGETOS", p.os.as_str()),
            ("TARGETARCH", p.arch.as_str()),
            ("TARGETVARIANT", p.variant.as_str()),
        ] {
            s.declare_arg(k, Some(v.to_string()));
        }
        s
    }

    /// Counts `bytes` of produced text against [`MAX_PRODUCED`]; false (and
    /// one error at `span`) once the limit is passed.
    pub(super) fn charge(&mut self, bytes: usize, span: Span) -> bool {
        if self.exhausted {
            return false;
        }
        self.produced = self.produced.saturating_add(bytes);
        if self.produced > MAX_PRODUCED {
            self.exhausted = true;
            self.error(
                span,
                format!(
                    "the Dockerfile expands to more than {} MiB of text; lowering stopped here",
                    MAX_PRODUCED >> 20
                ),
            )
            .help = Some(
                "variables that grow on every line (ENV A=$A$A) or stages that copy a huge \
                 environment are the usual cause"
                    .into(),
            );
            return false;
        }
        true
    }

    /// Expands one word against `scope`; undeclared variables are warned about.
    pub(super) fn expand(&mut self, w: &Word, scope: &Scope) -> Option<String> {
        if self.exhausted {
            return None;
        }
        let env = |n: &str| scope.get(n);
        match self.lexer.word_with_names(&w.value, &env) {
            Ok((v, names)) => {
                if !self.charge(v.len(), w.span) {
                    return None;
                }
                for n in names {
                    if !scope.knows(&n) && !n.chars().all(|c| c.is_ascii_digit()) {
                        self.diags.push(
                            Diagnostic::warning(
                                self.file,
                                w.span,
                                format!("`${n}` is not declared; it expands to an empty string"),
                            )
                            .with_help(format!(
                                "declare it with ARG {n}[=DEFAULT] or ENV {n}=VALUE"
                            )),
                        );
                    }
                }
                Some(v)
            }
            Err(e) => {
                self.error(
                    w.span,
                    format!("cannot expand `{}`: {e}", excerpt(&w.value)),
                );
                None
            }
        }
    }

    /// Expands and splits one word into words (EXPOSE, VOLUME shell form).
    pub(super) fn expand_words(&mut self, w: &Word, scope: &Scope) -> Vec<String> {
        if self.exhausted {
            return Vec::new();
        }
        let env = |n: &str| scope.get(n);
        match self.lexer.words(&w.value, &env) {
            Ok(v) => {
                let bytes = v.iter().map(String::len).sum();
                if !self.charge(bytes, w.span) {
                    return Vec::new();
                }
                v
            }
            Err(e) => {
                self.error(
                    w.span,
                    format!("cannot expand `{}`: {e}", excerpt(&w.value)),
                );
                Vec::new()
            }
        }
    }

    fn declare_args(&mut self, scope: &mut Scope, args: &[(Word, Option<Word>)], global: bool) {
        self.declare_args_with(scope, args, global, &Scope::default());
    }

    /// ARG: a `--build-arg` value wins, then (in a stage, for a name declared
    /// globally without a stage default) the global value, then the default.
    fn declare_args_with(
        &mut self,
        scope: &mut Scope,
        args: &[(Word, Option<Word>)],
        global: bool,
        globals: &Scope,
    ) {
        for (name, default) in args {
            let n = &name.value;
            let from_cli = self
                .opts
                .build_args
                .iter()
                .rev()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone());
            if from_cli.is_some() {
                self.used_build_args.insert(n.clone());
            }
            let value = match (from_cli, default) {
                (Some(v), _) => Some(v),
                (None, Some(d)) => self.expand(d, scope),
                (None, None) if !global => globals.get(n),
                (None, None) => None,
            };
            scope.declare_arg(n, value);
        }
    }

    fn start_stage(
        &mut self,
        g: &mut GraphBuilder,
        global: &Scope,
        i: &Instruction,
        image: &Word,
        alias: Option<&Word>,
        platform: Option<&Word>,
    ) -> Stage {
        let index = self.stages.len();
        let name = alias.map_or_else(|| index.to_string(), |a| a.value.to_ascii_lowercase());
        if let Some(a) = alias
            && self.stage_index.contains_key(&name)
        {
            self.error(a.span, format!("duplicate stage name `{}`", a.value));
        }
        // `FROM --platform=…` (expanded in the global scope, so
        // $BUILDPLATFORM works); else a stage of a stage is built for that
        // stage's platform, as in BuildKit; else the target's.
        let mut explicit = None;
        if let Some(p) = platform
            && let Some(v) = self.expand(p, global)
            && !v.is_empty()
        {
            match Platform::parse(&v) {
                Ok(pl) => explicit = Some(pl),
                Err(e) => {
                    self.error(p.span, format!("FROM --platform: {e}")).help =
                        Some("write os/arch[/variant], e.g. linux/arm64 or $BUILDPLATFORM".into());
                }
            }
        }
        let base_text = self.expand(image, global).unwrap_or_default();
        if base_text.is_empty() {
            self.error(
                image.span,
                format!("base name ({}) should not be blank", image.value),
            );
        }
        let at = self.at(image.span);
        if explicit.is_none()
            && let Some(&i) = self.stage_index.get(&base_text.to_ascii_lowercase())
        {
            explicit = self.stages.get(i).and_then(|s| s.platform.clone());
        }
        let stage_platform = explicit
            .clone()
            .unwrap_or_else(|| self.opts.platform.clone());
        // A named context for the stage's own name replaces the stage.
        let replacing = alias.and_then(|_| self.named_context(&name));
        let replaced = replacing.is_some();
        let (base, info, local) = match replacing {
            Some(nc) => self.context_base(&name, nc, image.span, &stage_platform),
            None => self.base(&base_text, image.span, &stage_platform),
        };
        let id = g.add_stage(&name, base, &base_text, at);
        if let Some((cname, path)) = local {
            // A directory as a base: its files, as one layer.
            let item = CopyItem {
                from: CopyFrom::Local { name: cname, path },
                ..CopyItem::from_context(&["."], "/")
            };
            let step = CopyStep {
                items: vec![item],
                name: None,
                add: false,
                link: false,
            };
            let at = self.at(image.span);
            g.add_step(id, StepKind::Copy(step), at.clone(), vec![None], vec![at]);
        }
        g.set_platform(id, stage_platform, explicit.is_some());
        let mut scope = Scope::default();
        let mut workdir = "/".to_string();
        let mut triggers = Vec::new();
        match info {
            BaseLookup::Image(info) => {
                for e in &info.env {
                    let (k, v) = e.split_once('=').unwrap_or((e.as_str(), ""));
                    scope.set_env(k, v);
                }
                if let Some(w) = info.workdir.filter(|w| !w.is_empty()) {
                    workdir = w;
                }
                triggers = info.onbuild;
            }
            BaseLookup::Stage(s) => {
                if let Some(info) = self.stages.get(s) {
                    // Shared until the new stage changes it, but counted as a
                    // copy: ENV in every stage of a `FROM prev` chain copies it.
                    scope = info.scope.env_only();
                    workdir = info.workdir.clone();
                    triggers = info.onbuild.clone();
                }
                self.charge(scope.env_bytes, image.span);
            }
            BaseLookup::None => {}
        }
        self.stage_index.entry(name.clone()).or_insert(index);
        self.stages.push(StageInfo {
            name,
            scope: Scope::default(),
            workdir: workdir.clone(),
            onbuild: Vec::new(),
            platform: explicit,
        });
        let mut st = Stage {
            id,
            scope,
            workdir,
            replaced,
        };
        // ONBUILD triggers of the base run first, as if written after FROM.
        for t in triggers {
            self.trigger(g, &mut st, global, &t, i.span);
        }
        st
    }

    fn finish_stage(&mut self, st: Stage) {
        if let Some(slot) = self.stages.get_mut(st.id.0) {
            slot.scope = st.scope.env_only();
            slot.workdir = st.workdir;
        }
    }

    /// The named context NAME stands for, if `--build-context` gave one.
    pub(super) fn named_context(&self, name: &str) -> Option<&'a NamedContext> {
        if self.opts.named_contexts.is_empty() {
            return None;
        }
        self.opts.named_contexts.get(&context_name(name))
    }

    /// A stage's base from a named context: an image (looked up for its
    /// environment), or a directory (scratch and a copy of it).
    fn context_base(
        &mut self,
        name: &str,
        nc: &NamedContext,
        span: Span,
        platform: &Platform,
    ) -> (PendingBase, BaseLookup, Option<(String, PathBuf)>) {
        match nc {
            NamedContext::Image(src) => {
                let (base, info) = self.image_base(src.clone(), name, span, platform);
                (base, info, None)
            }
            NamedContext::Local(path) => (
                PendingBase::Scratch,
                BaseLookup::None,
                Some((name.to_string(), path.clone())),
            ),
        }
    }

    /// What a FROM names: a stage, scratch, a named context, or an image
    /// (looked up for its environment).
    fn base(
        &mut self,
        text: &str,
        span: Span,
        platform: &Platform,
    ) -> (PendingBase, BaseLookup, Option<(String, PathBuf)>) {
        if text.eq_ignore_ascii_case("scratch") {
            return (PendingBase::Scratch, BaseLookup::None, None);
        }
        let lower = text.to_ascii_lowercase();
        if let Some(&i) = self.stage_index.get(&lower) {
            return (
                PendingBase::Ref(PendingRef {
                    name: lower,
                    image: None,
                    at: self.at(span),
                }),
                BaseLookup::Stage(i),
                None,
            );
        }
        if let Some(nc) = self.named_context(text) {
            return self.context_base(text, nc, span, platform);
        }
        let Some(src) = self.image_source(text, span) else {
            return (PendingBase::Scratch, BaseLookup::None, None);
        };
        let (base, info) = self.image_base(src, text, span, platform);
        (base, info, None)
    }

    /// An image as a base, looked up for its environment.
    fn image_base(
        &mut self,
        src: ImageSource,
        text: &str,
        span: Span,
        platform: &Platform,
    ) -> (PendingBase, BaseLookup) {
        let lower = text.to_ascii_lowercase();
        let info = match self.opts.resolver.resolve(&src, platform) {
            Ok(info) => BaseLookup::Image(info),
            Err(why) => {
                let hint = did_you_mean(&lower, self.stages.iter().map(|s| s.name.as_str()))
                    .map(str::to_string);
                let d = self.error(span, format!("base image {text}: {why}"));
                if let Some(h) = hint {
                    d.help = Some(format!("did you mean the stage `{h}`?"));
                }
                BaseLookup::None
            }
        };
        (PendingBase::Image(src), info)
    }

    /// An image reference: a transport (`oci-archive:` etc., paths relative to
    /// the context), an ID, or a name.
    pub(super) fn image_source(&mut self, text: &str, span: Span) -> Option<ImageSource> {
        match ImageSource::parse(text, &self.opts.context) {
            Ok(src) => Some(src),
            Err(e) => {
                self.error(span, e.to_string());
                None
            }
        }
    }

    /// A stage name, an index, a named context or an image, for `COPY
    /// --from`.
    pub(super) fn copy_source_ref(&mut self, text: &str, span: Span) -> Option<CopyRef> {
        let lower = text.to_ascii_lowercase();
        let name = match text.parse::<usize>() {
            Ok(i) if i < self.stages.len() => self.stages[i].name.clone(),
            Ok(i) => {
                self.error(
                    span,
                    format!("invalid from flag value {text}: stage index {i} does not exist yet"),
                );
                return None;
            }
            Err(_) => lower.clone(),
        };
        // A named context first: a stage of that name is replaced by it
        // anyway, and a directory is read directly, not through a stage.
        let named = self.named_context(&name);
        if named.is_none() && self.stage_index.contains_key(&name) {
            return Some(CopyRef::Pending(PendingRef {
                name,
                image: None,
                at: self.at(span),
            }));
        }
        let image = match named {
            Some(NamedContext::Local(path)) => {
                return Some(CopyRef::Local(CopyFrom::Local {
                    name: text.to_string(),
                    path: path.clone(),
                }));
            }
            Some(NamedContext::Image(src)) => src.clone(),
            None => self.image_source(text, span)?,
        };
        Some(CopyRef::Pending(PendingRef {
            name: text.to_string(),
            image: Some(image),
            at: self.at(span),
        }))
    }

    fn trigger(
        &mut self,
        g: &mut GraphBuilder,
        st: &mut Stage,
        global: &Scope,
        text: &str,
        span: Span,
    ) {
        // Triggers are parsed on their own; errors point at the FROM.
        let tf = SourceFile::new("ONBUILD trigger", text.to_string());
        match super::parse(&tf).and_then(|a| {
            a.nodes
                .first()
                .ok_or_else(|| Diagnostic::error(&tf, Span::new(0, 0), "empty trigger"))
                .and_then(|n| ast::instruction(&tf, n))
        }) {
            Ok(mut i) => {
                // Re-home spans on the FROM so diagnostics land in the Dockerfile.
                i.span = span;
                i.keyword.span = span;
                self.instruction(g, st, global, &i);
            }
            Err(d) => {
                self.error(
                    span,
                    format!(
                        "ONBUILD trigger of the base image is invalid: {}",
                        d.message
                    ),
                );
            }
        }
    }

    fn instruction(
        &mut self,
        g: &mut GraphBuilder,
        st: &mut Stage,
        global: &Scope,
        i: &Instruction,
    ) {
        // The scope is lent out for the instruction (never copied: with
        // 200,000 variables, a copy per instruction is quadratic).
        let mut scope = std::mem::take(&mut st.scope);
        match &i.kind {
            Kind::From { .. } => {}
            Kind::Arg(args) => self.declare_args_with(&mut scope, args, false, global),
            Kind::Copy(c) => self.copy(g, st, &scope, i, c, false),
            Kind::Add(c) => self.copy(g, st, &scope, i, c, true),
            Kind::Run {
                cmd,
                mounts,
                network,
                security,
                heredocs,
            } => {
                self.run(
                    g,
                    st,
                    &scope,
                    i,
                    cmd,
                    mounts,
                    network.as_ref(),
                    security.as_ref(),
                    heredocs,
                );
            }
            _ => self.meta(g, st, &mut scope, i),
        }
        st.scope = scope;
    }

    pub(super) fn step(&mut self, g: &mut GraphBuilder, st: &Stage, kind: StepKind, span: Span) {
        g.add_step(st.id, kind, self.at(span), Vec::new(), Vec::new());
    }
}

/// What later stages need to know about a stage.
pub(super) struct StageInfo {
    /// Name (lowercase alias, or index).
    pub name: String,
    /// Its final environment.
    pub scope: Scope,
    /// Its final working directory.
    pub workdir: String,
    /// Its own ONBUILD triggers: they run in stages built `FROM` it.
    pub onbuild: Vec<String>,
    /// Its `FROM --platform` (or its base stage's), inherited by stages
    /// built `FROM` it.
    pub platform: Option<Platform>,
}

/// What `COPY --from=NAME` reads: resolved with the graph (a stage, else
/// an image), or a named local context.
pub(super) enum CopyRef {
    Pending(PendingRef),
    Local(CopyFrom),
}

enum BaseLookup {
    None,
    Image(BaseInfo),
    Stage(usize),
}

/// A word as quoted in a message: whole when short, else its start.
fn excerpt(s: &str) -> String {
    const MAX: usize = 60;
    match s.char_indices().nth(MAX) {
        None => s.to_string(),
        Some((i, _)) => format!("{}…", &s[..i]),
    }
}

/// Joins a possibly relative path to a working directory, cleaned.
pub(super) fn join_workdir(workdir: &str, p: &str) -> String {
    if p.starts_with('/') {
        clean_path(p)
    } else {
        clean_path(&format!("{}/{p}", workdir.trim_end_matches('/')))
    }
}
