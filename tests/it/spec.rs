//! Malformed specs: each exits 2 before any work, names file:line:col, quotes
//! the line with a caret (the golden `stderr` of each case), writes nothing.

use crate::util::{TestEnv, fixtures, golden, stderr};

fn case(name: &str) {
    let env = TestEnv::new();
    let dir = fixtures().join("spec-invalid").join(name);
    let work = env.path().join("case");
    crate::util::copy_tree(&dir, &work);
    std::fs::remove_file(work.join("stderr")).ok();
    for cmd in ["check", "build"] {
        let out = env.run_in(&work, &[cmd, "spec.toml"]);
        assert_eq!(out.status.code(), Some(2), "{cmd} {name}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{cmd} {name} printed to stdout");
        golden(&dir.join("stderr"), &stderr(&out));
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

crate::it_test!(toml_syntax_error);
fn toml_syntax_error() {
    case("toml-syntax");
}

crate::it_test!(unknown_key);
fn unknown_key() {
    case("unknown-key");
}

crate::it_test!(wrong_type);
fn wrong_type() {
    case("wrong-type");
}

crate::it_test!(missing_source_file);
fn missing_source_file() {
    case("missing-source");
}

crate::it_test!(undefined_stage);
fn undefined_stage() {
    case("undefined-stage");
}

crate::it_test!(cycle);
fn cycle() {
    case("cycle");
}

crate::it_test!(every_problem_is_reported_at_once);
fn every_problem_is_reported_at_once() {
    case("many-problems");
    let text =
        std::fs::read_to_string(fixtures().join("spec-invalid/many-problems/stderr")).unwrap();
    for needle in [
        "`contxt`",
        "missing.txt",
        "`buildr`",
        "App:1",
        "99999",
        "octal",
        "6 problems",
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
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
