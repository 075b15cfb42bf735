//! The differential filesystem-semantics suite (issue 11): every case under
//! `tests/fixtures/semantics/` is built with imgbuild on the shared base and
//! its listing (flattened filesystem as a delta against the base, plus the
//! config's runtime fields) must equal `expected.txt`, which
//! `scripts/semantics-expected.sh` generated from BuildKit with the case's
//! `override.txt` applied. BuildKit is not needed here. Every case runs;
//! the test fails at the end with a diff per failing case.

#[path = "../support/fslist.rs"]
mod fslist;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use crate::util::{TestEnv, assert_success, copy_tree, fixtures};

/// The base's SOURCE_DATE_EPOCH, as in scripts/semantics-expected.sh.
const EPOCH: &str = "1700000000";

/// Every case folder (a `Dockerfile`, not starting with `_`), sorted.
fn cases() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(fixtures().join("semantics"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            !p.file_name().unwrap().to_string_lossy().starts_with('_')
                && p.join("Dockerfile").is_file()
        })
        .collect();
    v.sort();
    v
}

/// Sets every mode to what git keeps (0644, 0755 if executable, dirs
/// 0755), whatever the checkout's umask, as the script does.
fn git_modes(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let m = std::fs::symlink_metadata(&p).unwrap();
        let mode = if m.is_dir() {
            git_modes(&p);
            0o755
        } else if m.permissions().mode() & 0o100 != 0 {
            0o755
        } else {
            0o644
        };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

/// A scratch copy of a case (or `_base`) at `to`, with setup.sh run in its
/// context directory.
fn prepare(case: &Path, to: &Path) {
    copy_tree(case, to);
    let context = to.join("context");
    std::fs::create_dir_all(&context).unwrap();
    git_modes(&context);
    if to.join("setup.sh").is_file() {
        let out = Command::new("sh")
            .arg("../setup.sh")
            .current_dir(&context)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: setup.sh failed:\n{}",
            case.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Builds the shared base archive from `_base/` (tagged `base:latest`).
fn build_base(env: &TestEnv) -> PathBuf {
    let dir = env.path().join("base");
    prepare(&fixtures().join("semantics/_base"), &dir);
    let archive = env.path().join("base.tar");
    let (dockerfile, context) = (dir.join("Dockerfile"), dir.join("context"));
    let args = [
        "build",
        "-q",
        "-t",
        "base:latest",
        "-o",
        archive.to_str().unwrap(),
        "-f",
        dockerfile.to_str().unwrap(),
        context.to_str().unwrap(),
    ];
    let mut c = env.cmd_in(env.path(), &args);
    c.env("SOURCE_DATE_EPOCH", EPOCH);
    let out = c.output().unwrap();
    assert_success(&out, &["build the semantics base"]);
    archive
}

/// The last lines of a build's error output, indented.
fn tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(8);
    lines[from..].iter().map(|l| format!("    {l}\n")).collect()
}

/// Builds one case and compares its listing; `Err` says how it differs.
fn check(base: &Path, case: &Path) -> Result<(), String> {
    let env = TestEnv::new();
    let work = env.path().join("case");
    prepare(case, &work);
    assert_success(&env.run(&["load", base.to_str().unwrap()]), &["load base"]);
    let out_tar = env.path().join("out.tar");
    let (dockerfile, context) = (work.join("Dockerfile"), work.join("context"));
    let args = [
        "build",
        "-q",
        "-o",
        out_tar.to_str().unwrap(),
        "-f",
        dockerfile.to_str().unwrap(),
        context.to_str().unwrap(),
    ];
    let out = env.run_in(&work, &args);
    let mut note = String::new();
    // `error` is a failed build: exit 1 when found while building, 2 when
    // found before any work (imgbuild's exit-code contract; a Dockerfile
    // problem such as a missing source can be seen either way). A crash or a
    // signal is not a failed build.
    let actual = match out.status.code() {
        Some(0) => fslist::listing(base, &out_tar).map_err(|e| format!("listing: {e}"))?,
        Some(1 | 2) => {
            note = format!("  imgbuild failed:\n{}", tail(&out.stderr));
            "error\n".to_string()
        }
        code => {
            note = format!("  imgbuild failed:\n{}", tail(&out.stderr));
            format!("error (exit status {code:?}, not 1 or 2)\n")
        }
    };
    let expected = std::fs::read_to_string(case.join("expected.txt"))
        .map_err(|e| format!("no expected.txt ({e}): run scripts/semantics-expected.sh"))?;
    let d = fslist::diff(
        &fslist::content_lines(&expected),
        &fslist::content_lines(&actual),
    );
    if d.is_empty() {
        return Ok(());
    }
    Err(format!("{d}{note}"))
}

crate::it_test!(imgbuild_gives_buildkits_filesystems);
fn imgbuild_gives_buildkits_filesystems() {
    let env = TestEnv::new();
    let base = build_base(&env);
    let cases = cases();
    assert!(cases.len() >= 60, "only {} semantics cases", cases.len());
    let queue = Mutex::new(cases.iter());
    let failures = Mutex::new(Vec::new());
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 4);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let Some(case) = queue.lock().unwrap().next() else {
                        break;
                    };
                    let name = case.file_name().unwrap().to_string_lossy().into_owned();
                    let result = std::panic::catch_unwind(|| check(&base, case))
                        .unwrap_or_else(|_| Err("panicked (see above)".to_string()));
                    if let Err(e) = result {
                        failures.lock().unwrap().push((name, e));
                    }
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap();
    failures.sort();
    if !failures.is_empty() {
        let mut report = format!(
            "{} of {} semantics cases differ from tests/fixtures/semantics/CASE/expected.txt \
             (- expected, + imgbuild):\n",
            failures.len(),
            cases.len()
        );
        for (name, e) in &failures {
            report.push_str(&format!("\n=== {name}\n{e}"));
        }
        panic!("{report}");
    }
}

// The listing tool's own pieces (tests/support/fslist.rs).
crate::it_test!(escaping_round_trips);
fn escaping_round_trips() {
    let raw = b"a b\\c\xff\td\xc3\xa9\xe2\x80\xa8";
    let e = fslist::escape(raw);
    assert_eq!(e, "a\\x20b\\\\c\\xff\\x09d\u{e9}\\u{2028}");
    assert_eq!(fslist::unescape(&e), raw);
}

crate::it_test!(overrides_replace_by_key);
fn overrides_replace_by_key() {
    let listing = "/a file 0644 0:0 1 x - -\n/b dir 0755 0:0 - - - -\nconfig.User \"\"\n";
    let o = "# reason: test\n/a file 4755 0:0 1 x - -\nremove /b\ndeleted /c\n";
    assert_eq!(
        fslist::apply_override(listing, o).unwrap(),
        "/a file 4755 0:0 1 x - -\ndeleted /c\nconfig.User \"\"\n"
    );
    assert_eq!(
        fslist::apply_override(listing, "# reason: x\nerror\n").unwrap(),
        "error\n"
    );
    assert!(fslist::apply_override(listing, "error\n").is_err());
}

crate::it_test!(diff_shows_changes_with_context);
fn diff_shows_changes_with_context() {
    let d = fslist::diff(
        &["a", "b", "c", "d", "e", "f"],
        &["a", "b", "C", "d", "e", "f"],
    );
    assert_eq!(d, " a\n b\n-c\n+C\n d\n e\n");
}
