//! Dockerfile parser conformance against BuildKit's own test data (copied
//! into tests/fixtures/buildkit-parser with its license; see its README).

use imgbuild::diag::SourceFile;
use imgbuild::frontend::dockerfile::expand::Lexer;
use imgbuild::frontend::dockerfile::{dump, parse};

use crate::util::{TestEnv, every_case, fixtures};

fn conformance() -> std::path::PathBuf {
    fixtures().join("buildkit-parser")
}

crate::it_test!(every_testfile_dumps_byte_for_byte);
fn every_testfile_dumps_byte_for_byte() {
    let env = TestEnv::new();
    every_case(
        &conformance().join("testfiles"),
        &["Dockerfile", "result"],
        &[],
        |_, case| {
            let out = env.run(&["parse", "--dump", case.join("Dockerfile").to_str().unwrap()]);
            let want = std::fs::read(case.join("result")).unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                case.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&want),
                "dump of {}",
                case.display()
            );
        },
    );
}

crate::it_test!(every_negative_case_is_an_error);
fn every_negative_case_is_an_error() {
    let env = TestEnv::new();
    every_case(
        &conformance().join("testfiles-negative"),
        &["Dockerfile"],
        &[],
        |_, case| {
            let out = env.run(&["parse", "--dump", case.join("Dockerfile").to_str().unwrap()]);
            assert_eq!(out.status.code(), Some(2), "{} should fail", case.display());
            assert!(out.stdout.is_empty());
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("error:"), "{}: {err}", case.display());
        },
    );
}

crate::it_test!(line_numbers_match_the_reference);
fn line_numbers_match_the_reference() {
    let dir = conformance().join("testfile-line");
    let text = std::fs::read_to_string(dir.join("Dockerfile")).unwrap();
    let ast = parse(&SourceFile::new("Dockerfile", text)).unwrap();
    let want: Vec<(usize, usize, usize)> = std::fs::read_to_string(dir.join("expected_lines"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let v: Vec<usize> = l.split_whitespace().map(|x| x.parse().unwrap()).collect();
            (v[0], v[1], v[2])
        })
        .collect();
    let got: Vec<(usize, usize, usize)> = ast
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (i, n.start_line, n.end_line))
        .collect();
    assert_eq!(got, want);
}

crate::it_test!(derived_heredoc_cases);
fn derived_heredoc_cases() {
    every_case(
        &conformance().join("derived"),
        &["Dockerfile", "result", "heredocs.json"],
        &[],
        |_, case| {
            let text = std::fs::read_to_string(case.join("Dockerfile")).unwrap();
            let ast = parse(&SourceFile::new("Dockerfile", text)).unwrap();
            assert_eq!(
                dump(&ast),
                std::fs::read_to_string(case.join("result")).unwrap(),
                "{}",
                case.display()
            );
            let want: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(case.join("heredocs.json")).unwrap())
                    .unwrap();
            let mut got = Vec::new();
            for (i, n) in ast.nodes.iter().enumerate() {
                for h in &n.heredocs {
                    got.push(serde_json::json!({
                        "instruction": i, "start_line": n.start_line, "end_line": n.end_line,
                        "name": h.name, "fd": h.fd, "expand": h.expand, "chomp": h.chomp, "content": h.content,
                    }));
                }
            }
            assert_eq!(serde_json::Value::Array(got), want, "{}", case.display());
        },
    );
}

fn shell_env(name: &str) -> Option<String> {
    match name {
        "PWD" => Some("/home".into()),
        "SHELL" => Some("bash".into()),
        "KOREAN" => Some("한국어".into()),
        "NULL" => Some(String::new()),
        _ => None,
    }
}

crate::it_test!(env_var_test_unix_lines);
fn env_var_test_unix_lines() {
    let text = std::fs::read_to_string(conformance().join("shell/envVarTest")).unwrap();
    let lex = Lexer::new('\\');
    let mut checked = 0;
    let mut failures = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split('|').map(str::trim).collect();
        if f.len() != 3 {
            failures.push(format!("{line}: not `kind | input | expected`"));
            continue;
        }
        if f[0] == "W" {
            continue;
        }
        let got = lex.word(f[1], &shell_env);
        match f[2] {
            "error" if got.is_err() => {}
            "error" => failures.push(format!("{line}: expected an error, got {got:?}")),
            want if got.as_deref() == Ok(want) => {}
            want => failures.push(format!("{line}: got {got:?}, want {want:?}")),
        }
        checked += 1;
    }
    assert!(checked > 0, "no case in envVarTest");
    assert!(
        failures.is_empty(),
        "{} of {checked} envVarTest lines failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

crate::it_test!(words_test);
fn words_test() {
    let text = std::fs::read_to_string(conformance().join("shell/wordsTest")).unwrap();
    let lex = Lexer::new('\\');
    let mut env: Vec<(String, String)> = Vec::new();
    let mut checked = 0;
    let mut failures = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if let Some(e) = line.strip_prefix("ENV ") {
            let (k, v) = e.trim_start().split_once('=').unwrap();
            env.push((k.to_string(), v.to_string()));
            continue;
        }
        let Some((input, expected)) = line.split_once('|') else {
            failures.push(format!("{line}: not `input | expected`"));
            continue;
        };
        let expected: Vec<&str> = expected.trim_start().split(',').collect();
        let lookup = |n: &str| {
            env.iter()
                .rev()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
        };
        let got = match lex.words(input.trim(), &lookup) {
            Ok(w) => w,
            Err(_) => vec!["error".to_string()],
        };
        if got != expected {
            failures.push(format!("{line}: got {got:?}, want {expected:?}"));
        }
        checked += 1;
    }
    assert!(checked > 0, "no case in wordsTest");
    assert!(
        failures.is_empty(),
        "{} of {checked} wordsTest lines failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

crate::it_test!(real_world_dockerfiles_parse_with_the_right_instruction_counts);
fn real_world_dockerfiles_parse_with_the_right_instruction_counts() {
    let dir = fixtures().join("dockerfile-corpus");
    every_case(&dir, &["Dockerfile", "count"], &[], |_, case| {
        let bytes = std::fs::read(case.join("Dockerfile")).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        let want: usize = std::fs::read_to_string(case.join("count"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        match parse(&SourceFile::new("Dockerfile", text)) {
            Ok(ast) => {
                let d = dump(&ast);
                assert!(
                    ast.nodes.len() == want && d.lines().count() == want,
                    "{}: {} instructions, want {want}",
                    case.display(),
                    ast.nodes.len()
                );
            }
            Err(e) => panic!("{}: {e}", case.display()),
        }
    });
    let checked = crate::util::case_dirs(&dir).len();
    assert!(checked >= 50, "only {checked} cases");
}

#[path = "../support/dockerfile_gen.rs"]
mod dockerfile_gen;

crate::it_test!(generated_inputs_never_panic);
/// A short version of `cargo run --release --example parser_fuzz` (which runs
/// a million inputs): generated Dockerfile-like text never panics the parser,
/// the dump, or word expansion.
fn generated_inputs_never_panic() {
    let mut rng = dockerfile_gen::Rng::new(42);
    for _ in 0..20_000 {
        let input = dockerfile_gen::dockerfile(&mut rng);
        let file = SourceFile::new("Dockerfile", input.clone());
        let result = std::panic::catch_unwind(|| match parse(&file) {
            Ok(ast) => {
                let _ = dump(&ast);
                for n in &ast.nodes {
                    for a in &n.args {
                        let _ = Lexer::new('\\')
                            .words(&a.value, &imgbuild::frontend::dockerfile::expand::NoEnv);
                    }
                }
            }
            Err(d) => {
                let _ = d.to_string();
            }
        });
        assert!(result.is_ok(), "panic on {input:?}");
    }
}
