//! Robustness run for the Dockerfile parser and word expansion: feeds N
//! generated inputs (default 1,000,000) and fails loudly, with the input, if
//! anything panics.
//!
//!     cargo run --release --example parser_fuzz -- 1000000 [SEED]

#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "../tests/support/dockerfile_gen.rs"]
mod dockerfile_gen;

use imgbuild::diag::SourceFile;
use imgbuild::frontend::dockerfile::expand::{Lexer, NoEnv};
use imgbuild::frontend::dockerfile::{dump, parse};

fn exercise(text: &str) {
    let file = SourceFile::new("Dockerfile", text);
    if let Ok(ast) = parse(&file) {
        let _ = dump(&ast);
        for n in &ast.nodes {
            for escape in ['\\', '`'] {
                for (raw_quotes, raw_escapes, skip_unset_env) in [
                    (false, false, false),
                    (true, true, true),
                    (false, true, false),
                ] {
                    let l = Lexer {
                        raw_quotes,
                        raw_escapes,
                        skip_unset_env,
                        ..Lexer::new(escape)
                    };
                    for a in &n.args {
                        let _ = l.word(&a.value, &NoEnv);
                        let _ = l.words(&a.value, &NoEnv);
                    }
                }
            }
        }
    } else {
        // Errors must render too (caret under a span that may sit anywhere).
        if let Err(d) = parse(&file) {
            let _ = d.to_string();
        }
    }
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let mut rng = dockerfile_gen::Rng::new(seed);
    let mut bytes = 0usize;
    let started = std::time::Instant::now();
    for i in 0..n {
        let input = dockerfile_gen::dockerfile(&mut rng);
        bytes += input.len();
        if std::panic::catch_unwind(|| exercise(&input)).is_err() {
            eprintln!("panic on input #{i} (seed {seed}):\n{input:?}");
            std::process::exit(1);
        }
    }
    println!(
        "parser_fuzz: {n} inputs ({bytes} bytes) from seed {seed}, no panic, {:.1}s",
        started.elapsed().as_secs_f64()
    );
}
