//! The parsers never crash: deep nesting, huge cycles and long lines give located errors.
//!
//! Each crash of issue 10 is run through the real binary (an abort would
//! take the test process with it, and the CLI is what a user runs): a
//! located error and exit status 2, in bounded time and memory. Then a short
//! deterministic fuzz run per target and the replay of the regression corpus
//! under `tests/fixtures/fuzz/<target>/`.

#[path = "../../support/fuzz.rs"]
mod fuzz;

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::{TestEnv, stderr};

/// Runs `imgbuild ARGS` in `env`, killing it after `limit`: a baseline that
/// takes minutes fails here instead of hanging the suite.
fn run_limited(env: &TestEnv, args: &[&str], limit: Duration) -> Output {
    let mut child = env
        .cmd_in(env.path(), args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run imgbuild");
    let started = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "`imgbuild {}` still running after {limit:?}\nstderr:\n{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts a clean refusal: exit 2 (a definition error), no panic or abort,
/// and the first diagnostic located at `at` saying `what`.
fn assert_located(out: &Output, at: &str, what: &str) {
    let err = stderr(out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "want exit 2, got {:?}:\n{err}",
        out.status
    );
    assert!(
        !err.contains("panicked") && !err.contains("overflow"),
        "{err}"
    );
    let first = err.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(at),
        "want the error at {at}, got: {first}"
    );
    assert!(first.contains(what), "want `{what}` in: {first}");
}

crate::it_test!(issue_10_deep_substitution_nesting_is_a_located_error);
fn issue_10_deep_substitution_nesting_is_a_located_error() {
    // `${A:-` 100,000 deep, spread over continuation lines (each under the
    // 65,535-byte line limit): the old lexer recursed once per level.
    let env = TestEnv::new();
    let mut df = String::from("FROM scratch\nENV X=\\\n");
    for _ in 0..10 {
        df.push_str(&"${A:-".repeat(10_000));
        df.push_str("\\\n");
    }
    df.push_str("x\\\n");
    for _ in 0..10 {
        df.push_str(&"}".repeat(10_000));
        df.push_str("\\\n");
    }
    df.push_str("  Y=1\n");
    env.write("ctx/Dockerfile", &df);
    let out = run_limited(&env, &["check", "ctx"], Duration::from_secs(60));
    assert_located(
        &out,
        "ctx/Dockerfile:2:7: error:",
        "nested deeper than 64 levels",
    );
    // The message quotes the start of the word, not all 600 KB of it.
    assert!(
        stderr(&out).len() < 4_000,
        "{} bytes of stderr",
        stderr(&out).len()
    );
}

crate::it_test!(issue_10_copy_from_cycle_of_20000_stages_is_reported);
fn issue_10_copy_from_cycle_of_20000_stages_is_reported() {
    let env = TestEnv::new();
    let n = 20_000;
    let mut df = String::new();
    for i in 0..n {
        let _ = write!(
            df,
            "FROM scratch AS s{i}\nCOPY --from=s{} /x /x\n",
            (i + 1) % n
        );
    }
    env.write("ctx/Dockerfile", &df);
    let started = Instant::now();
    let out = run_limited(&env, &["check", "ctx"], Duration::from_secs(60));
    // Reported where the walk closed the cycle: the last stage's COPY --from.
    assert_located(
        &out,
        "ctx/Dockerfile:39999:6: error:",
        "stages depend on each other in a cycle: s0 → s1 → s2 → s3 → … (19992 more) → s19996 → s19997 → s19998 → s19999 → s0",
    );
    assert!(
        stderr(&out).contains("20000 stages in this cycle"),
        "{}",
        stderr(&out)
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

crate::it_test!(issue_10_toml_from_cycle_of_20000_stages_is_reported);
fn issue_10_toml_from_cycle_of_20000_stages_is_reported() {
    let env = TestEnv::new();
    let n = 20_000;
    let mut spec = String::new();
    for i in 0..n {
        let _ = write!(spec, "[stage.s{i}]\nfrom = \"s{}\"\n\n", (i + 1) % n);
    }
    spec.push_str("[image.out]\nfrom = \"s0\"\n");
    env.write("spec.toml", &spec);
    let out = run_limited(&env, &["check", "spec.toml"], Duration::from_secs(60));
    assert_located(
        &out,
        "spec.toml:59999:8: error:",
        "stages depend on each other in a cycle: s0 → s1 → s2 → s3 → … (19992 more)",
    );
}

crate::it_test!(issue_10_caret_past_column_65535_is_rendered);
fn issue_10_caret_past_column_65535_is_rendered() {
    let env = TestEnv::new();
    env.write(
        "spec.toml",
        format!(
            "[image.app]\nfrom = \"scratch\"\n{}bogus = 1\n",
            " ".repeat(70_000)
        ),
    );
    let out = run_limited(&env, &["check", "spec.toml"], Duration::from_secs(30));
    assert_located(&out, "spec.toml:3:70001: error:", "unknown key `bogus`");
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    // The line is cut to a window around the caret, and the caret sits
    // under the key.
    assert!(lines[2].chars().count() < 200, "{}", lines[2]);
    let shown = lines[2].split_once(" | ").unwrap().1;
    let caret = lines[3].split_once(" | ").unwrap().1;
    let col = caret.find('^').unwrap();
    assert_eq!(
        &shown[shown.char_indices().nth(col).unwrap().0..][..5],
        "bogus",
        "{err}"
    );
}

crate::it_test!(issue_10_caret_after_tabs_and_control_bytes_in_a_dockerfile);
fn issue_10_caret_after_tabs_and_control_bytes_in_a_dockerfile() {
    // 20,000 tabs (80,000 columns once expanded) before an unknown flag, NUL
    // and ESC bytes and invalid UTF-8 on the same line.
    let env = TestEnv::new();
    let mut df = b"FROM scratch\nCOPY".to_vec();
    df.extend(std::iter::repeat_n(b'\t', 20_000));
    df.extend_from_slice(b"--bogus=1 a\0\x1b[2J\xff\xfe b /\n");
    env.write("ctx/Dockerfile", &df);
    let out = run_limited(&env, &["check", "ctx"], Duration::from_secs(30));
    assert_located(
        &out,
        "ctx/Dockerfile:2:20005: error:",
        "unknown flag for COPY: --bogus",
    );
    let err = stderr(&out);
    assert!(
        !err.contains('\u{1b}') && !err.contains('\0'),
        "control bytes reach the terminal"
    );
}

/// Peak resident memory of `imgbuild ARGS`, in KiB, measured by the kernel
/// (`VmHWM` of the process, read by GNU time as its maximum RSS).
fn peak_rss_kib(env: &TestEnv, args: &[&str]) -> u64 {
    let out_file = env.path().join("time.out");
    let started = Instant::now();
    let mut child = Command::new("/usr/bin/time")
        .arg("-o")
        .arg(&out_file)
        .args(["-f", "%M"])
        .arg(env!("CARGO_BIN_EXE_imgbuild"))
        .args(args)
        .current_dir(env.path())
        .env("IMGBUILD_STORE", env.store())
        .env("IMGBUILD_PULL", "never")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run /usr/bin/time (the `time` package; .ci/run installs it)");
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("`imgbuild {}` still running after 120 s", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "`imgbuild {}` failed: {}",
        args.join(" "),
        stderr(&out)
    );
    let text = std::fs::read_to_string(&out_file).unwrap();
    text.lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("time said {text:?}"))
}

crate::it_test!(issue_10_200000_line_env_dockerfiles_parse_and_check_in_under_100_mib);
fn issue_10_200000_line_env_dockerfiles_parse_and_check_in_under_100_mib() {
    let env = TestEnv::new();
    // 200,000 ENV instructions, and one ENV continued over 200,000 lines.
    let mut many = String::from("FROM scratch\n");
    let mut one = String::from("FROM scratch\nENV \\\n");
    for i in 0..200_000 {
        let _ = writeln!(many, "ENV V{i}=value{i}");
        let _ = writeln!(one, "  V{i}=value{i} \\");
    }
    one.push_str("  LAST=1\n");
    env.write("many/Dockerfile", &many);
    env.write("one/Dockerfile", &one);
    let limit = 100 * 1024;
    for ctx in ["many", "one"] {
        let df = format!("{ctx}/Dockerfile");
        for args in [vec!["parse", "--dump", df.as_str()], vec!["check", ctx]] {
            let kib = peak_rss_kib(&env, &args);
            assert!(
                kib < limit,
                "`imgbuild {}`: peak RSS {kib} KiB, over {limit} KiB",
                args.join(" ")
            );
        }
    }
}

fn scratch_base(name: &str) -> tempfile::TempDir {
    // A tmpfs when there is one: tar extraction writes many small files.
    let shm = Path::new("/dev/shm");
    let parent = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    tempfile::Builder::new()
        .prefix(name)
        .tempdir_in(parent)
        .unwrap()
}

/// A short deterministic run of one target: every input must run without a
/// panic (an abort would end the test binary) or, for tar, an escape.
fn short_run(target: &str, count: u64) {
    let base = scratch_base(&format!("imgbuild-fuzz-{target}-"));
    let started = Instant::now();
    let (st, failures) = fuzz::run_range(target, 20_260_101, 0, count, base.path());
    assert!(
        failures.is_empty(),
        "{target}: {} failing inputs:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(st.inputs, count);
    // The inputs reach deep: some are accepted, and many kinds and error
    // classes are reached (random bytes rejected at once would not).
    assert!(st.ok > 0, "{target}: nothing accepted\n{}", st.to_lines());
    assert!(
        st.errors.len() >= 3,
        "{target}: few error classes\n{}",
        st.to_lines()
    );
    // Keep the run short: a few seconds per target in a debug build.
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "{target}: {:?}",
        started.elapsed()
    );
}

crate::it_test!(fuzz_short_run_dockerfile);
fn fuzz_short_run_dockerfile() {
    short_run("dockerfile", 400);
}

crate::it_test!(fuzz_short_run_expand);
fn fuzz_short_run_expand() {
    short_run("expand", 3_000);
}

crate::it_test!(fuzz_short_run_spec);
fn fuzz_short_run_spec() {
    short_run("spec", 600);
}

crate::it_test!(fuzz_short_run_tar);
fn fuzz_short_run_tar() {
    short_run("tar", 400);
}

/// Replays every file of `tests/fixtures/fuzz/<target>/` (found by listing
/// the directory): each must run cleanly.
fn replay(target: &str) {
    let files = fuzz::corpus(target);
    assert!(!files.is_empty(), "no corpus for {target}");
    let base = scratch_base(&format!("imgbuild-replay-{target}-"));
    let tar_box = fuzz::make_box(base.path());
    let mut failed = Vec::new();
    for f in &files {
        let input = std::fs::read(f).unwrap();
        let mut st = fuzz::Stats::default();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            fuzz::run_one(target, &input, &tar_box, &mut st)
        }));
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed.push(format!("{}: {e:?}", f.display())),
            Err(_) => failed.push(format!("{}: panic", f.display())),
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

crate::it_test!(fuzz_corpus_dockerfile);
fn fuzz_corpus_dockerfile() {
    replay("dockerfile");
}

crate::it_test!(fuzz_corpus_expand);
fn fuzz_corpus_expand() {
    replay("expand");
}

crate::it_test!(fuzz_corpus_spec);
fn fuzz_corpus_spec() {
    replay("spec");
}

crate::it_test!(fuzz_corpus_tar);
fn fuzz_corpus_tar() {
    replay("tar");
}
