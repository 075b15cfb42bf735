//! Typed instructions: each [`Node`] checked and turned into an
//! [`Instruction`] with its flags parsed, its argument shape validated, and
//! every word keeping its span. Nothing is expanded here.

use std::sync::Arc;

use super::parser::{Heredoc, Node, Word, kind_of};
use crate::diag::{Diagnostic, SourceFile, Span, did_you_mean};

/// Shell form (one string for the stage's shell) or exec form (an array).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShellOrExec {
    /// `RUN make all`.
    Shell(Word),
    /// `RUN ["make", "all"]`.
    Exec(Vec<Word>),
}

/// COPY / ADD arguments and flags.
#[derive(Debug, Clone)]
pub struct CopyArgs {
    /// Sources (heredoc markers included as written, e.g. `<<EOF`).
    pub sources: Vec<Word>,
    /// Destination.
    pub dest: Word,
    /// `--from`.
    pub from: Option<Word>,
    /// `--chown`.
    pub chown: Option<Word>,
    /// `--chmod`.
    pub chmod: Option<Word>,
    /// `--link`.
    pub link: bool,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude`, repeatable.
    pub excludes: Vec<Word>,
    /// ADD `--checksum`.
    pub checksum: Option<Word>,
    /// ADD `--keep-git-dir`.
    pub keep_git_dir: bool,
    /// ADD `--unpack` (BuildKit 1.17): force or disable archive extraction.
    pub unpack: Option<bool>,
    /// Heredoc sources.
    pub heredocs: Vec<Heredoc>,
}

/// HEALTHCHECK.
#[derive(Debug, Clone)]
pub enum Health {
    /// `HEALTHCHECK NONE`: disable an inherited check.
    None,
    /// `HEALTHCHECK [flags] CMD …`.
    Cmd(Box<HealthCmd>),
}

/// `HEALTHCHECK [flags] CMD …`.
#[derive(Debug, Clone)]
pub struct HealthCmd {
    /// The test command.
    pub test: ShellOrExec,
    /// `--interval`.
    pub interval: Option<Word>,
    /// `--timeout`.
    pub timeout: Option<Word>,
    /// `--start-period`.
    pub start_period: Option<Word>,
    /// `--start-interval`.
    pub start_interval: Option<Word>,
    /// `--retries`.
    pub retries: Option<Word>,
}

/// What an instruction does, with typed payloads.
#[derive(Debug, Clone)]
pub enum Kind {
    /// `FROM [--platform=P] image [AS name]`.
    From {
        /// The base image (or stage) as written.
        image: Word,
        /// `AS name`.
        alias: Option<Word>,
        /// `--platform`.
        platform: Option<Word>,
    },
    /// `RUN [--mount=…] [--network=…] [--security=…] cmd`.
    Run {
        /// The command.
        cmd: ShellOrExec,
        /// `--mount` values, as written.
        mounts: Vec<Word>,
        /// `--network`.
        network: Option<Word>,
        /// `--security`.
        security: Option<Word>,
        /// Heredocs.
        heredocs: Vec<Heredoc>,
    },
    /// `CMD`.
    Cmd(ShellOrExec),
    /// `ENTRYPOINT`.
    Entrypoint(ShellOrExec),
    /// `SHELL ["bash", "-c"]`.
    Shell(Vec<Word>),
    /// `LABEL k=v …`.
    Label(Vec<(Word, Word)>),
    /// `MAINTAINER name`.
    Maintainer(Word),
    /// `EXPOSE 80/tcp …`.
    Expose(Vec<Word>),
    /// `ENV k=v …`.
    Env(Vec<(Word, Word)>),
    /// `ADD`.
    Add(CopyArgs),
    /// `COPY`.
    Copy(CopyArgs),
    /// `VOLUME`.
    Volume(Vec<Word>),
    /// `USER`.
    User(Word),
    /// `WORKDIR`.
    Workdir(Word),
    /// `ARG name[=default] …`.
    Arg(Vec<(Word, Option<Word>)>),
    /// `ONBUILD INSTRUCTION`: the trigger, checked, plus its text as stored in
    /// the image config.
    OnBuild(Box<Instruction>, String),
    /// `STOPSIGNAL`.
    StopSignal(Word),
    /// `HEALTHCHECK`.
    Healthcheck(Health),
}

/// One checked instruction.
#[derive(Debug, Clone)]
pub struct Instruction {
    /// What it does.
    pub kind: Kind,
    /// The whole instruction.
    pub span: Span,
    /// The keyword.
    pub keyword: Word,
}

const KEYWORDS: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// Parsed flags of one instruction.
struct Flags<'a> {
    file: &'a Arc<SourceFile>,
    instr: &'static str,
    items: Vec<(String, Option<String>, Span)>,
    used: Vec<bool>,
}

impl<'a> Flags<'a> {
    fn new(file: &'a Arc<SourceFile>, instr: &'static str, node: &Node) -> Self {
        let items: Vec<(String, Option<String>, Span)> = node
            .flags
            .iter()
            .map(|f| {
                let body = f.value.trim_start_matches("--");
                match body.split_once('=') {
                    Some((k, v)) => (k.to_ascii_lowercase(), Some(v.to_string()), f.span),
                    None => (body.to_ascii_lowercase(), None, f.span),
                }
            })
            .collect();
        let used = vec![false; items.len()];
        Flags {
            file,
            instr,
            items,
            used,
        }
    }

    fn word(&self, i: usize) -> Word {
        let (_, v, span) = &self.items[i];
        Word {
            value: v.clone().unwrap_or_default(),
            span: *span,
        }
    }

    /// A string flag given at most once.
    fn string(&mut self, name: &str) -> Result<Option<Word>, Diagnostic> {
        let hits: Vec<usize> = (0..self.items.len())
            .filter(|&i| self.items[i].0 == name)
            .collect();
        for &i in &hits {
            self.used[i] = true;
        }
        match hits.as_slice() {
            [] => Ok(None),
            [i] => {
                if self.items[*i].1.is_none() {
                    return Err(Diagnostic::error(
                        self.file,
                        self.items[*i].2,
                        format!("missing a value on flag: --{name}"),
                    )
                    .with_help(format!("write --{name}=VALUE")));
                }
                Ok(Some(self.word(*i)))
            }
            [_, second, ..] => Err(Diagnostic::error(
                self.file,
                self.items[*second].2,
                format!("duplicate flag specified: --{name}"),
            )),
        }
    }

    /// A repeatable string flag.
    fn list(&mut self, name: &str) -> Result<Vec<Word>, Diagnostic> {
        let mut out = Vec::new();
        for i in 0..self.items.len() {
            if self.items[i].0 == name {
                self.used[i] = true;
                if self.items[i].1.is_none() {
                    return Err(Diagnostic::error(
                        self.file,
                        self.items[i].2,
                        format!("missing a value on flag: --{name}"),
                    ));
                }
                out.push(self.word(i));
            }
        }
        Ok(out)
    }

    /// A boolean flag: `--link`, `--link=true`, `--link=false`.
    fn boolean(&mut self, name: &str) -> Result<Option<bool>, Diagnostic> {
        let Some(i) = (0..self.items.len()).find(|&i| self.items[i].0 == name) else {
            return Ok(None);
        };
        self.used[i] = true;
        match self.items[i]
            .1
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(other) => Err(Diagnostic::error(
                self.file,
                self.items[i].2,
                format!("expecting boolean value for flag --{name}, not: {other}"),
            )),
        }
    }

    /// Errors on any flag not consumed.
    fn finish(self, known: &[&str]) -> Result<(), Diagnostic> {
        for (i, (name, _, span)) in self.items.iter().enumerate() {
            if !self.used[i] {
                let mut d = Diagnostic::error(
                    self.file,
                    *span,
                    format!("unknown flag for {}: --{name}", self.instr),
                )
                .with_label("unknown flag");
                d = match did_you_mean(name, known.iter().copied()) {
                    Some(s) => d.with_help(format!("did you mean --{s}?")),
                    None if known.is_empty() => {
                        d.with_help(format!("{} takes no flags", self.instr))
                    }
                    None => d.with_help(format!(
                        "{} accepts: {}",
                        self.instr,
                        known
                            .iter()
                            .map(|k| format!("--{k}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                };
                return Err(d);
            }
        }
        Ok(())
    }
}

fn need_args(
    file: &Arc<SourceFile>,
    node: &Node,
    instr: &str,
    min: usize,
    usage: &str,
) -> Result<(), Diagnostic> {
    if node.args.len() < min {
        return Err(Diagnostic::error(
            file,
            node.span,
            format!(
                "{instr} requires at least {min} argument{}",
                if min == 1 { "" } else { "s" }
            ),
        )
        .with_help(format!("usage: {usage}")));
    }
    Ok(())
}

fn shell_or_exec(node: &Node) -> ShellOrExec {
    if node.json {
        ShellOrExec::Exec(node.args.clone())
    } else {
        ShellOrExec::Shell(node.args.first().cloned().unwrap_or_else(|| Word {
            value: String::new(),
            span: node.rest_span,
        }))
    }
}

fn pairs(args: &[Word]) -> Vec<(Word, Word)> {
    args.chunks(3)
        .filter(|c| c.len() >= 2)
        .map(|c| (c[0].clone(), c[1].clone()))
        .collect()
}

/// [`instruction`] for a node the caller is done with: ENV and LABEL words
/// are moved into the instruction, not copied (an ENV continued over 200,000
/// lines is then held once, not twice).
///
/// # Errors
/// As [`instruction`].
pub fn into_instruction(file: &Arc<SourceFile>, mut node: Node) -> Result<Instruction, Diagnostic> {
    if matches!(kind_of(&node.keyword.value), "env" | "label") && node.args.len() >= 2 {
        // The checks need only see that there is a pair; the words follow.
        let args = std::mem::take(&mut node.args);
        node.args = args[..2].to_vec();
        let mut i = instruction(file, &node)?;
        if let Kind::Env(p) | Kind::Label(p) = &mut i.kind {
            *p = pairs_owned(args);
        }
        return Ok(i);
    }
    instruction(file, &node)
}

fn pairs_owned(args: Vec<Word>) -> Vec<(Word, Word)> {
    let mut out = Vec::with_capacity(args.len() / 3 + 1);
    let mut it = args.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
        // The third word of each triple is the separator.
        it.next();
    }
    out
}

/// Checks a node and types it.
///
/// # Errors
/// Unknown instructions (with a "did you mean"), unknown or repeated flags,
/// missing arguments, malformed `FROM … AS …`.
pub fn instruction(file: &Arc<SourceFile>, node: &Node) -> Result<Instruction, Diagnostic> {
    let kw = kind_of(&node.keyword.value);
    let upper = kw.to_ascii_uppercase();
    let instr: &'static str = KEYWORDS
        .iter()
        .find(|k| **k == upper)
        .copied()
        .unwrap_or("");
    if instr.is_empty() {
        let mut d = Diagnostic::error(
            file,
            node.keyword.span,
            format!("unknown instruction: {}", node.keyword.value),
        )
        .with_label("not a Dockerfile instruction");
        if let Some(s) = did_you_mean(
            &node.keyword.value.to_ascii_uppercase(),
            KEYWORDS.iter().copied(),
        ) {
            d = d.with_help(format!("did you mean {s}?"));
        }
        return Err(d);
    }
    let mut flags = Flags::new(file, instr, node);
    let kind = match kw {
        "from" => {
            let platform = flags.string("platform")?;
            flags.finish(&["platform"])?;
            need_args(
                file,
                node,
                "FROM",
                1,
                "FROM [--platform=PLATFORM] IMAGE [AS NAME]",
            )?;
            let alias = match node.args.len() {
                1 => None,
                3 if node.args[1].value.eq_ignore_ascii_case("as") => Some(node.args[2].clone()),
                _ => {
                    return Err(Diagnostic::error(
                        file,
                        node.rest_span,
                        "FROM requires either one or three arguments",
                    )
                    .with_help("write FROM IMAGE or FROM IMAGE AS NAME"));
                }
            };
            if let Some(a) = &alias
                && !valid_stage_name(&a.value)
            {
                return Err(Diagnostic::error(
                    file,
                    a.span,
                    format!("invalid stage name `{}`", a.value),
                )
                .with_help(
                    "stage names start with a letter and use letters, digits, `_`, `-` and `.`",
                ));
            }
            Kind::From {
                image: node.args[0].clone(),
                alias,
                platform,
            }
        }
        "run" => {
            let mounts = flags.list("mount")?;
            let network = flags.string("network")?;
            let security = flags.string("security")?;
            flags.finish(&["mount", "network", "security"])?;
            need_args(
                file,
                node,
                "RUN",
                1,
                "RUN COMMAND or RUN [\"EXECUTABLE\", \"ARG\"…]",
            )?;
            Kind::Run {
                cmd: shell_or_exec(node),
                mounts,
                network,
                security,
                heredocs: node.heredocs.clone(),
            }
        }
        "cmd" | "entrypoint" => {
            flags.finish(&[])?;
            // `CMD` with nothing is allowed by the parser; it clears the command.
            let v = if node.args.is_empty() && !node.json {
                ShellOrExec::Exec(Vec::new())
            } else {
                shell_or_exec(node)
            };
            if kw == "cmd" {
                Kind::Cmd(v)
            } else {
                Kind::Entrypoint(v)
            }
        }
        "shell" => {
            flags.finish(&[])?;
            if !node.json {
                return Err(Diagnostic::error(
                    file,
                    node.rest_span,
                    "SHELL requires the arguments to be in JSON form",
                )
                .with_help("write SHELL [\"/bin/bash\", \"-c\"]"));
            }
            need_args(
                file,
                node,
                "SHELL",
                1,
                "SHELL [\"EXECUTABLE\", \"PARAMETERS\"…]",
            )?;
            Kind::Shell(node.args.clone())
        }
        "label" | "env" => {
            flags.finish(&[])?;
            need_args(file, node, instr, 2, &format!("{instr} KEY=VALUE …"))?;
            let p = pairs(&node.args);
            if kw == "env" {
                Kind::Env(p)
            } else {
                Kind::Label(p)
            }
        }
        "maintainer" | "user" | "workdir" | "stopsignal" => {
            flags.finish(&[])?;
            need_args(file, node, instr, 1, &format!("{instr} VALUE"))?;
            let w = node.args[0].clone();
            match kw {
                "maintainer" => Kind::Maintainer(w),
                "user" => Kind::User(w),
                "workdir" => Kind::Workdir(w),
                _ => Kind::StopSignal(w),
            }
        }
        "expose" | "volume" => {
            flags.finish(&[])?;
            need_args(file, node, instr, 1, &format!("{instr} VALUE …"))?;
            if kw == "expose" {
                Kind::Expose(node.args.clone())
            } else {
                Kind::Volume(node.args.clone())
            }
        }
        "arg" => {
            flags.finish(&[])?;
            need_args(file, node, "ARG", 1, "ARG NAME[=DEFAULT] …")?;
            let mut out = Vec::new();
            for a in &node.args {
                let (name, default) = match a.value.split_once('=') {
                    Some((n, d)) => (
                        Word {
                            value: n.to_string(),
                            span: Span::new(a.span.start, (a.span.start + n.len()).min(a.span.end)),
                        },
                        Some(Word {
                            value: d.to_string(),
                            span: Span::new(
                                (a.span.start + n.len() + 1).min(a.span.end),
                                a.span.end,
                            ),
                        }),
                    ),
                    None => (a.clone(), None),
                };
                if name.value.is_empty() || name.value.contains(char::is_whitespace) {
                    return Err(Diagnostic::error(
                        file,
                        a.span,
                        format!("invalid ARG name `{}`", name.value),
                    ));
                }
                out.push((name, default));
            }
            Kind::Arg(out)
        }
        "add" | "copy" => {
            let from = if kw == "copy" {
                flags.string("from")?
            } else {
                None
            };
            let chown = flags.string("chown")?;
            let chmod = flags.string("chmod")?;
            let link = flags.boolean("link")?.unwrap_or(false);
            let excludes = flags.list("exclude")?;
            let (parents, checksum, keep_git_dir, unpack) = if kw == "copy" {
                (
                    flags.boolean("parents")?.unwrap_or(false),
                    None,
                    false,
                    None,
                )
            } else {
                (
                    false,
                    flags.string("checksum")?,
                    flags.boolean("keep-git-dir")?.unwrap_or(false),
                    flags.boolean("unpack")?,
                )
            };
            let known: &[&str] = if kw == "copy" {
                &["from", "chown", "chmod", "link", "parents", "exclude"]
            } else {
                &[
                    "chown",
                    "chmod",
                    "link",
                    "exclude",
                    "checksum",
                    "keep-git-dir",
                    "unpack",
                ]
            };
            flags.finish(known)?;
            need_args(
                file,
                node,
                instr,
                2,
                &format!("{instr} [flags] SOURCE… DEST"),
            )?;
            let (dest, sources) = match node.args.split_last() {
                Some((d, s)) => (d.clone(), s.to_vec()),
                None => unreachable_dest(file, node)?,
            };
            let args = CopyArgs {
                sources,
                dest,
                from,
                chown,
                chmod,
                link,
                parents,
                excludes,
                checksum,
                keep_git_dir,
                unpack,
                heredocs: node.heredocs.clone(),
            };
            if kw == "copy" {
                Kind::Copy(args)
            } else {
                Kind::Add(args)
            }
        }
        "onbuild" => {
            flags.finish(&[])?;
            let Some(inner) = &node.inner else {
                return Err(Diagnostic::error(
                    file,
                    node.span,
                    "ONBUILD requires at least one argument",
                )
                .with_help("write ONBUILD INSTRUCTION, e.g. ONBUILD COPY . /app"));
            };
            let inner_kw = kind_of(&inner.keyword.value);
            if matches!(inner_kw, "onbuild" | "from" | "maintainer") {
                return Err(Diagnostic::error(
                    file,
                    inner.keyword.span,
                    format!(
                        "{} isn't allowed as an ONBUILD trigger",
                        inner.keyword.value.to_ascii_uppercase()
                    ),
                ));
            }
            let trigger = instruction(file, inner)?;
            let text = file_text(file, inner.span);
            Kind::OnBuild(Box::new(trigger), text)
        }
        "healthcheck" => {
            let interval = flags.string("interval")?;
            let timeout = flags.string("timeout")?;
            let start_period = flags.string("start-period")?;
            let start_interval = flags.string("start-interval")?;
            let retries = flags.string("retries")?;
            flags.finish(&[
                "interval",
                "timeout",
                "start-period",
                "start-interval",
                "retries",
            ])?;
            need_args(
                file,
                node,
                "HEALTHCHECK",
                1,
                "HEALTHCHECK [flags] CMD COMMAND, or HEALTHCHECK NONE",
            )?;
            let typ = node.args[0].value.to_ascii_uppercase();
            match typ.as_str() {
                "NONE" => {
                    if node.args.len() > 1 {
                        return Err(Diagnostic::error(
                            file,
                            node.rest_span,
                            "HEALTHCHECK NONE takes no arguments",
                        ));
                    }
                    Kind::Healthcheck(Health::None)
                }
                "CMD" => {
                    if node.args.len() < 2 {
                        return Err(Diagnostic::error(
                            file,
                            node.span,
                            "missing command after HEALTHCHECK CMD",
                        ));
                    }
                    let test = if node.json {
                        ShellOrExec::Exec(node.args[1..].to_vec())
                    } else {
                        ShellOrExec::Shell(node.args[1].clone())
                    };
                    Kind::Healthcheck(Health::Cmd(Box::new(HealthCmd {
                        test,
                        interval,
                        timeout,
                        start_period,
                        start_interval,
                        retries,
                    })))
                }
                _ => {
                    return Err(Diagnostic::error(
                        file,
                        node.args[0].span,
                        format!("unknown type for HEALTHCHECK: {}", node.args[0].value),
                    )
                    .with_help("use CMD or NONE"));
                }
            }
        }
        _ => unreachable_keyword(file, node)?,
    };
    Ok(Instruction {
        kind,
        span: node.span,
        keyword: node.keyword.clone(),
    })
}

/// The text of a span in the file, for ONBUILD triggers (stored as written).
fn file_text(file: &Arc<SourceFile>, span: Span) -> String {
    let t = file.text();
    let end = span.end.min(t.len());
    let start = span.start.min(end);
    t.get(start..end).unwrap_or_default().to_string()
}

// The keyword table and the match above cover the same names; these keep the
// impossible arms from becoming panics.
fn unreachable_keyword<T>(file: &Arc<SourceFile>, node: &Node) -> Result<T, Diagnostic> {
    Err(Diagnostic::error(
        file,
        node.keyword.span,
        format!("unknown instruction: {}", node.keyword.value),
    ))
}

fn unreachable_dest<T>(file: &Arc<SourceFile>, node: &Node) -> Result<T, Diagnostic> {
    Err(Diagnostic::error(file, node.span, "missing destination"))
}

/// BuildKit's stage name rule: `^[a-z][a-z0-9-_.]*$` (case-insensitive).
pub fn valid_stage_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic())
        && c.all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::dockerfile::parse;

    fn one(text: &str) -> Result<Instruction, Diagnostic> {
        let file = SourceFile::new("Dockerfile", text);
        let ast = parse(&file).unwrap();
        instruction(&file, &ast.nodes[0])
    }

    #[test]
    fn typed_from_and_copy() {
        match one("FROM --platform=linux/amd64 golang:1.22 AS build")
            .unwrap()
            .kind
        {
            Kind::From {
                image,
                alias,
                platform,
            } => {
                assert_eq!(image.value, "golang:1.22");
                assert_eq!(alias.unwrap().value, "build");
                assert_eq!(platform.unwrap().value, "linux/amd64");
            }
            k => panic!("{k:?}"),
        }
        match one("COPY --from=build --chmod=755 --exclude=*.md --exclude=x a b /d/")
            .unwrap()
            .kind
        {
            Kind::Copy(c) => {
                assert_eq!(c.sources.len(), 2);
                assert_eq!(c.dest.value, "/d/");
                assert_eq!(c.excludes.len(), 2);
                assert_eq!(c.from.unwrap().value, "build");
            }
            k => panic!("{k:?}"),
        }
    }

    #[test]
    fn errors_point_at_the_problem() {
        let e = one("FORM alpine").unwrap_err();
        assert!(e.to_string().contains("did you mean FROM?"), "{e}");
        let e = one("COPY --form=x a b").unwrap_err();
        assert!(e.to_string().contains("did you mean --from?"), "{e}");
        let e = one("COPY --chown=a --chown=b a b").unwrap_err();
        assert!(e.to_string().contains("duplicate flag"), "{e}");
        assert!(one("FROM a AS").is_err());
        assert!(one("SHELL bash -c").is_err());
        assert!(one("ONBUILD FROM x").is_err());
        assert!(one("HEALTHCHECK BOGUS x").is_err());
        assert!(one("ADD --from=x a b").is_err());
    }

    #[test]
    fn onbuild_keeps_the_trigger_text() {
        match one("ONBUILD COPY . /app").unwrap().kind {
            Kind::OnBuild(inner, text) => {
                assert!(matches!(inner.kind, Kind::Copy(_)));
                assert_eq!(text, "COPY . /app");
            }
            k => panic!("{k:?}"),
        }
    }
}
