//! Malformed specs: each exits 2 before any work, names file:line:col, quotes
//! the line with a caret (the golden `stderr` of each case), writes nothing.

use std::path::Path;

use crate::util::{TestEnv, contains_every_line, every_case, fixtures, golden, stderr};

/// One case folder: `spec.toml`, the golden `stderr`, and optionally
/// `stderr.contains`, lines that stderr must contain (what a user looks for
/// in it, so a re-bless cannot quietly drop them).
fn case(name: &str, dir: &Path) {
    let env = TestEnv::new();
    let work = env.path().join("case");
    crate::util::copy_tree(dir, &work);
    for extra in ["stderr", "stderr.contains"] {
        std::fs::remove_file(work.join(extra)).ok();
    }
    for cmd in ["check", "build"] {
        let out = env.run_in(&work, &[cmd, "spec.toml"]);
        assert_eq!(out.status.code(), Some(2), "{cmd} {name}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{cmd} {name} printed to stdout");
        golden(&dir.join("stderr"), &stderr(&out));
        contains_every_line(&dir.join("stderr.contains"), &stderr(&out));
        let leftovers: Vec<_> = std::fs::read_dir(&work)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "spec.toml")
            .collect();
        assert!(leftovers.is_empty(), "{cmd} {name} wrote {leftovers:?}");
    }
    // Nothing reached the store either.
    let images = env.store().join("images");
    assert!(!images.exists() || std::fs::read_dir(images).unwrap().next().is_none());
}

// Every folder under tests/fixtures/spec-invalid/ is a case (toml-syntax,
// unknown-key, wrong-type, missing-source, undefined-stage, cycle,
// many-problems: every problem is reported at once, ...).
crate::it_test!(every_invalid_spec_folder);
fn every_invalid_spec_folder() {
    every_case(
        &fixtures().join("spec-invalid"),
        &["spec.toml"],
        &["stderr"],
        case,
    );
}

crate::it_test!(valid_spec_checks_clean);
fn valid_spec_checks_clean() {
    let env = TestEnv::new();
    env.write("ctx/foo.txt", "hi");
    env.write(
        "ctx/spec.toml",
        "[image.app]\nfrom = \"scratch\"\n[[image.app.step]]\ncopy = [{ src = \"foo.txt\", dest = \"/\" }]\n",
    );
    let out = env.run_in(&env.path().join("ctx"), &["check", "spec.toml"]);
    crate::util::assert_success(&out, &["check"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "spec.toml: OK (1 stage, 1 image)\n"
    );
}
