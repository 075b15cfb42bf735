//! Snapshots (insta) of what users read: build progress in each
//! non-terminal mode (plain, json, quiet), every class of diagnostic (spec
//! and Dockerfile errors with their help and did-you-mean, warnings, usage
//! errors, a failed step), and `history`, `images`, `inspect`. Each snapshot
//! is a transcript: the command, its exit status, stdout and stderr.
//!
//! Inputs are fixed and SOURCE_DATE_EPOCH is set, so the output is the same
//! on every run; what still varies is normalised (see [`Norm`]): the
//! scratch directory, image IDs and digests (numbered by first appearance,
//! so which ID is which stays checked), "N years ago" and step timings.
//! Review a change with `cargo insta review`, or rewrite with
//! `INSTA_UPDATE=always cargo test --test it -- cli_output::`.
//!
//! The terminal view (`--progress=tty`) redraws on a timer, so its byte
//! stream differs run to run; what a user sees does not. Its snapshot is
//! the screen a terminal (the `vt100` emulator) shows once the build has
//! ended, the build run under a pseudo-terminal by `script(1)`.

use std::path::Path;

use regex::{Captures, Regex};

use crate::util::{TestEnv, busybox_base};

const EPOCH: &str = "1700000000";

/// Rewrites what differs between runs and machines, consistently within one
/// snapshot.
struct Norm {
    /// The scratch directory of the test (as given and canonical).
    roots: Vec<String>,
    /// 12-hex prefixes of the IDs and digests seen, in order.
    ids: Vec<String>,
}

impl Norm {
    fn new(env: &TestEnv) -> Self {
        let mut roots = vec![env.path().display().to_string()];
        if let Ok(c) = env.path().canonicalize() {
            roots.push(c.display().to_string());
        }
        roots.sort_by_key(|r| std::cmp::Reverse(r.len()));
        Norm {
            roots,
            ids: Vec::new(),
        }
    }

    fn id(&mut self, hex: &str) -> usize {
        let prefix = &hex[..12];
        match self.ids.iter().position(|p| p == prefix) {
            Some(i) => i + 1,
            None => {
                self.ids.push(prefix.to_string());
                self.ids.len()
            }
        }
    }

    fn apply(&mut self, text: &str) -> String {
        let mut t = text.to_string();
        for r in &self.roots {
            t = t.replace(r.as_str(), "[TMP]");
        }
        // Full digests first (`<DIGEST 3>`), then short IDs (`<ID00000003>`:
        // twelve characters, as wide as the ID, so tables keep their shape).
        let full = Regex::new(r"\b[0-9a-f]{64}\b").unwrap();
        let t = full
            .replace_all(&t, |c: &Captures| format!("<DIGEST {}>", self.id(&c[0])))
            .into_owned();
        let short = Regex::new(r"\b[0-9a-f]{12}\b").unwrap();
        let t = short
            .replace_all(&t, |c: &Captures| format!("<ID{:0>8}>", self.id(&c[0])))
            .into_owned();
        // "3 years ago" and the padding after it: same width, so columns
        // stay put whatever the date.
        let since = Regex::new(
            r"(?:\d+|About an?|Less than a) (?:second|minute|hour|day|week|month|year)s? ago( *)",
        )
        .unwrap();
        let t = since
            .replace_all(&t, |c: &Captures| {
                let width = c[0].len();
                if c[1].is_empty() {
                    "[SINCE]".to_string()
                } else {
                    format!("{:<width$}", "[SINCE]")
                }
            })
            .into_owned();
        let seconds = Regex::new(r#""seconds":[0-9.e-]+"#).unwrap();
        seconds
            .replace_all(&t, r#""seconds":"[SECONDS]""#)
            .into_owned()
    }
}

/// A transcript of one run: the command, exit status, stdout, stderr.
fn transcript(env: &TestEnv, norm: &mut Norm, cwd: &Path, args: &[&str]) -> String {
    let mut c = env.cmd_in(cwd, args);
    c.env("SOURCE_DATE_EPOCH", EPOCH);
    let mut out = c.output().expect("run imgbuild");
    if args.contains(&"--progress=json") {
        out.stderr = in_step_order(&String::from_utf8_lossy(&out.stderr)).into_bytes();
    }
    let mut s = format!("$ imgbuild {}\n", args.join(" "));
    s.push_str(&format!("exit status: {:?}\n", out.status.code()));
    for (name, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        if bytes.is_empty() {
            s.push_str(&format!("--- {name}: (empty)\n"));
        } else {
            s.push_str(&format!("--- {name}\n{}", String::from_utf8_lossy(bytes)));
            if !bytes.ends_with(b"\n") {
                s.push_str("\n[no newline at the end]\n");
            }
        }
    }
    norm.apply(&s)
}

/// JSON progress with the events of each step together, steps in order.
///
/// A step's events come in order (started, cached or miss, output, done),
/// but a layer is written while later steps start, so how two steps'
/// events interleave depends on timing. The order within each step is
/// asserted; across steps it is put in step order, keeping the run's own
/// order within a step (a stable sort by index). Lines before the first
/// step event and after the last stay where they are.
fn in_step_order(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().collect();
    let index = |l: &str| -> Option<u64> {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        v.get("index")?.as_u64()
    };
    let Some(first) = lines.iter().position(|l| index(l).is_some()) else {
        return stderr.to_string();
    };
    let last = lines.iter().rposition(|l| index(l).is_some()).unwrap();
    let mut steps: Vec<&str> = lines[first..=last].to_vec();
    assert!(
        steps.iter().all(|l| index(l).is_some()),
        "an event without a step amid the steps:\n{stderr}"
    );
    steps.sort_by_key(|l| index(l));
    // Per step: started first, done last, nothing after done.
    let event = |l: &str| -> String {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        v["event"].as_str().unwrap_or_default().to_string()
    };
    for group in steps.chunk_by(|a, b| index(a) == index(b)) {
        let kinds: Vec<String> = group.iter().map(|l| event(l)).collect();
        assert_eq!(
            kinds.first().map(String::as_str),
            Some("step_started"),
            "{group:?}"
        );
        let done = kinds.iter().filter(|k| *k == "step_done").count();
        assert!(
            done == 0 || (done == 1 && kinds.last().map(String::as_str) == Some("step_done")),
            "events after step_done: {group:?}"
        );
    }
    let mut out: Vec<&str> = lines[..first].to_vec();
    out.extend(steps);
    out.extend(&lines[last + 1..]);
    let mut text = out.join("\n");
    if stderr.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// Several runs, one after the other, as one snapshot's text.
fn session(env: &TestEnv, cwd: &Path, runs: &[&[&str]]) -> String {
    let mut norm = Norm::new(env);
    runs.iter()
        .map(|args| transcript(env, &mut norm, cwd, args))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A two-stage Dockerfile on scratch: COPY, a copy from the first stage,
/// config steps.
fn scratch_ctx(env: &TestEnv) -> std::path::PathBuf {
    env.write("ctx/a.txt", "a\n");
    env.write("ctx/b.txt", "b\n");
    env.write(
        "ctx/Dockerfile",
        "FROM scratch AS build\nCOPY a.txt /a.txt\n\
         FROM scratch\nARG VERSION=1\nCOPY --from=build /a.txt /from-build.txt\nCOPY b.txt /b.txt\n\
         ENV A=1\nLABEL version=$VERSION\nWORKDIR /w\nCMD [\"/b\"]\n\
         LABEL description=\"a label long enough for history to truncate what created it\"\n",
    );
    env.path().join("ctx")
}

/// Plain output, Docker-classic: misses and why, cache hits, a changed
/// file, --no-cache, an archive written, an unused build arg.
fn progress(mode: &str) -> String {
    let env = TestEnv::new();
    let ctx = scratch_ctx(&env);
    let p = format!("--progress={mode}");
    let mut norm = Norm::new(&env);
    let mut out = Vec::new();
    let mut run = |args: &[&str]| out.push(transcript(&env, &mut norm, &ctx, args));
    run(&["build", &p, "-j", "1", "-t", "demo:1", "."]);
    run(&["build", &p, "-j", "1", "-t", "demo:1", "."]);
    std::fs::write(ctx.join("b.txt"), "changed\n").unwrap();
    run(&[
        "build",
        &p,
        "-j",
        "1",
        "--build-arg",
        "UNUSED=1",
        "-t",
        "demo:2",
        "-o",
        "demo.tar",
        ".",
    ]);
    run(&["build", &p, "-j", "1", "--no-cache", "-o", "demo.tar", "."]);
    out.join("\n")
}

crate::it_test!(progress_plain);
fn progress_plain() {
    let text = progress("plain");
    // What users rely on, besides the snapshot.
    assert!(text.contains(" ---> Using cache"), "{text}");
    assert!(text.contains("Cache miss: /b.txt changed"), "{text}");
    insta::assert_snapshot!("progress_plain", text);
}

crate::it_test!(progress_tty);
/// The terminal view's final screen: a cold build (every step and why it
/// missed), a warm one (cache hits), and one after a file changed.
fn progress_tty() {
    let env = TestEnv::new();
    let ctx = scratch_ctx(&env);
    let mut norm = Norm::new(&env);
    let mut screens = Vec::new();
    let mut run = |label: &str| {
        // A fixed terminal size: the view fits its lines to the width.
        let inner = format!(
            "stty cols 160 rows 60; cd {} && IMGBUILD_STORE={} SOURCE_DATE_EPOCH={EPOCH} {} build -j 1 -t demo:1 .",
            ctx.display(),
            env.store().display(),
            env!("CARGO_BIN_EXE_imgbuild"),
        );
        let out = std::process::Command::new("script")
            .args(["-qec", &inner, "/dev/null"])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("script (util-linux)");
        assert!(out.status.success(), "{out:?}");
        let cols = std::num::NonZero::new(160).unwrap();
        let rows = std::num::NonZero::new(60).unwrap();
        let mut term = vt100::Parser::new(rows, cols, 0);
        term.process(&out.stdout);
        // Row by row, as the terminal shows them (a line that fills the
        // width continues on the next row).
        let rows: Vec<String> = term
            .screen()
            .rows(0, cols.get())
            .map(|r| r.trim_end().to_string())
            .collect();
        let text = rows.join("\n").trim_end().to_string();
        screens.push(format!(
            "$ imgbuild build -j 1 -t demo:1 .   # {label}\n{}\n",
            norm.apply(&text)
        ));
    };
    run("cold");
    run("warm");
    std::fs::write(ctx.join("b.txt"), "changed\n").unwrap();
    run("b.txt changed");
    // Step timings are the one thing that still varies.
    let timing = Regex::new(r"\b\d+(?:\.\d+)?(?:ms|s)\b").unwrap();
    let text = timing.replace_all(&screens.join("\n"), "[T]").into_owned();
    assert!(text.contains("cache miss: /b.txt changed"), "{text}");
    insta::assert_snapshot!("progress_tty", text);
}

crate::it_test!(progress_json);
fn progress_json() {
    let text = progress("json");
    for line in text.lines().filter(|l| l.starts_with('{')) {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
    insta::assert_snapshot!("progress_json", text);
}

crate::it_test!(progress_quiet);
fn progress_quiet() {
    let text = progress("quiet");
    insta::assert_snapshot!("progress_quiet", text);
}

crate::it_test!(progress_of_run_steps);
/// A RUN's output in plain and json progress, and a RUN that fails (exit 1,
/// the step quoted) on the busybox base.
fn progress_of_run_steps() {
    let env = TestEnv::new();
    let base = busybox_base(&env);
    env.write(
        "ctx/Dockerfile",
        format!("FROM {base}\nRUN echo hello && echo to-stderr >&2\nENV X=1\n"),
    );
    env.write(
        "bad/Dockerfile",
        format!("FROM {base}\nRUN echo before; exit 3\n"),
    );
    let text = session(
        &env,
        env.path(),
        &[
            &["build", "--progress=plain", "-t", "r:1", "ctx"],
            &["build", "--progress=json", "--no-cache", "-t", "r:1", "ctx"],
            &["build", "--progress=plain", "bad"],
        ],
    );
    insta::assert_snapshot!("progress_of_run_steps", text);
}

crate::it_test!(diagnostics_dockerfile);
/// Dockerfile diagnostics: errors with help and did-you-mean, several at
/// once; warnings alone (exit 0); a failed step (exit 1).
fn diagnostics_dockerfile() {
    let env = TestEnv::new();
    // Lowering errors: every one at once.
    env.write(
        "errors/Dockerfile",
        "FROM scratch AS builder\nCPOY a /a\nCOPY --form=builder / /\nFROM buidler\n",
    );
    // A syntax error (ENV without a value) after a lowering error.
    env.write("syntax/Dockerfile", "FROM scratch\nCPOY a /a\nENV PATH\n");
    env.write(
        "warnings/Dockerfile",
        "FROM scratch AS unused\nFROM scratch\nLABEL x=$NOPE\n",
    );
    env.write("failing/Dockerfile", "FROM scratch\nRUN echo hi\n");
    env.write("missing/Dockerfile", "FROM scratch\nCOPY nothere.txt /\n");
    let text = session(
        &env,
        env.path(),
        &[
            &["check", "errors/Dockerfile"],
            &["check", "syntax/Dockerfile"],
            &["check", "warnings/Dockerfile"],
            &["build", "-t", "w:1", "warnings"],
            &["build", "missing"],
            &["build", "failing"],
        ],
    );
    insta::assert_snapshot!("diagnostics_dockerfile", text);
}

crate::it_test!(diagnostics_spec);
/// Spec diagnostics: TOML syntax, unknown keys with did-you-mean, wrong
/// types, a missing source, an unknown stage.
fn diagnostics_spec() {
    let env = TestEnv::new();
    env.write("syntax/spec.toml", "[image.app\nfrom = \"scratch\"\n");
    env.write(
        "many/spec.toml",
        "[image.app]\nfrom = \"scratch\"\ntgas = [\"app:1\"]\nenv = \"A=1\"\n\
         [[image.app.step]]\ncopy = [{ src = \"nothere.txt\", dest = \"/\" }]\n\
         [image.web]\nfrom = \"ap\"\n",
    );
    let text = session(
        &env,
        env.path(),
        &[
            &["check", "syntax/spec.toml"],
            &["check", "many/spec.toml"],
            &["build", "many/spec.toml"],
        ],
    );
    insta::assert_snapshot!("diagnostics_spec", text);
}

crate::it_test!(diagnostics_usage);
/// Usage errors (exit 2): the command line (clap's own did-you-mean), an
/// unknown stage, an unknown image, a bad template.
fn diagnostics_usage() {
    let env = TestEnv::new();
    let ctx = scratch_ctx(&env);
    let text = session(
        &env,
        &ctx,
        &[
            &["build", "--progres=plain", "."],
            &["biuld", "."],
            &["build", "--target", "buidl", "."],
            &["build", "--build-arg", "A=1", "spec.toml"],
            &["inspect", "nosuch:1"],
            &["history", "nosuch:1"],
        ],
    );
    insta::assert_snapshot!("diagnostics_usage", text);
}

crate::it_test!(history_images_inspect);
/// `history` (truncated and not), `images` (table, quiet, all, json) and
/// `inspect` (json and a template) of two built images.
fn history_images_inspect() {
    let env = TestEnv::new();
    let ctx = scratch_ctx(&env);
    let text = session(
        &env,
        &ctx,
        &[
            &["build", "-q", "-t", "demo:1", "-t", "demo:latest", "."],
            &["build", "-q", "--target", "build", "-t", "builder:1", "."],
            &["history", "demo:1"],
            &["history", "--no-trunc", "demo:1"],
            &["images"],
            &["images", "-q"],
            &["images", "-a"],
            &["images", "--format", "json"],
            &["images", "--format", "{{.Repository}}\t{{.Nope}}"],
            &["inspect", "demo:1"],
            &[
                "inspect",
                "-f",
                "{{.Id}} {{.RepoTags}} {{.Config.Env}} {{.Config.WorkingDir}}",
                "demo:1",
                "builder:1",
            ],
        ],
    );
    insta::assert_snapshot!("history_images_inspect", text);
}

crate::it_test!(normalising_keeps_ids_apart_and_columns_aligned);
/// The normaliser itself: the same ID in short and full form gets one
/// number, different IDs different ones; "ago" keeps its column's width.
fn normalising_keeps_ids_apart_and_columns_aligned() {
    let env = TestEnv::new();
    let mut n = Norm::new(&env);
    let a = "a".repeat(64);
    let b = format!("{}{}", "b".repeat(12), "c".repeat(52));
    let text = format!(
        "{} sha256:{a} {} {b}\nx   3 years ago      y\nz 2 days ago\n{}/f\n",
        &a[..12],
        &b[..12],
        env.path().display()
    );
    assert_eq!(
        n.apply(&text),
        "<ID00000001> sha256:<DIGEST 1> <ID00000002> <DIGEST 2>\n\
         x   [SINCE]          y\nz [SINCE]\n[TMP]/f\n"
    );
}
