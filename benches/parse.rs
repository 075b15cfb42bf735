//! Dockerfile parser throughput: a generated 10,000-instruction Dockerfile
//! (a realistic mix: multi-line RUNs with comments inside continuations,
//! COPY/ADD with flags, ENV/LABEL/ARG, JSON forms, heredocs), parsed
//! repeatedly. Prints MB/s of Dockerfile text; the target is ≥ 50 MB/s on the
//! 2-core build machine.
//!
//!     cargo bench --bench parse
// Not the library: std::fs is fine here (clippy.toml holds src/ to fs_err).
#![allow(clippy::disallowed_methods)]
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::fmt::Write as _;
use std::time::Instant;

use imgbuild::diag::SourceFile;
use imgbuild::frontend::dockerfile::parse;

// The binary uses mimalloc; measure what it does.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn dockerfile(instructions: usize) -> String {
    let mut s = String::from("# syntax=docker/dockerfile:1\nARG BASE=debian:bookworm\n");
    let mut n = 1;
    let mut i = 0;
    while n < instructions {
        i += 1;
        let _ = match i % 10 {
            0 => writeln!(s, "FROM ${{BASE}} AS stage{i}"),
            1 => writeln!(
                s,
                "RUN set -eux; \\\n    apt-get update; \\\n    # install build deps\n    apt-get install -y --no-install-recommends ca-certificates curl gnupg{i}; \\\n    rm -rf /var/lib/apt/lists/*"
            ),
            2 => writeln!(
                s,
                "COPY --from=stage{} --chown=1000:1000 --chmod=755 /src/bin{i} /usr/local/bin/",
                i - 2
            ),
            3 => writeln!(
                s,
                "ENV PATH=/usr/local/bin:$PATH LANG=C.UTF-8 VERSION_{i}=\"1.{i}.0\""
            ),
            4 => writeln!(
                s,
                "LABEL org.opencontainers.image.version=\"{i}\" maintainer=\"team <team@example.com>\""
            ),
            5 => writeln!(
                s,
                "RUN --mount=type=cache,target=/root/.cache <<EOF\nset -e\necho building {i}\nmake -j\"$(nproc)\"\nEOF"
            ),
            6 => writeln!(
                s,
                "CMD [\"/usr/local/bin/app{i}\", \"--serve\", \"--port\", \"8080\"]"
            ),
            7 => writeln!(s, "WORKDIR /app/{i}"),
            8 => writeln!(s, "ADD [\"https://example.com/file{i}.tar.gz\", \"/tmp/\"]"),
            _ => writeln!(s, "EXPOSE 80{}/tcp 443/tcp", i % 10),
        };
        n += 1;
    }
    s
}

fn main() {
    let text = dockerfile(10_000);
    let file = SourceFile::new("Dockerfile", text.clone());
    let ast = parse(&file).expect("generated Dockerfile parses");
    assert_eq!(ast.nodes.len(), 10_000);
    // Best and median of several batches: the build machines are noisy, and
    // noise only ever makes a batch slower.
    let rounds = 10;
    let batches = 9;
    for _ in 0..3 {
        let _ = parse(&file);
    }
    let mut rates: Vec<f64> = (0..batches)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..rounds {
                let ast = parse(&file).expect("parses");
                std::hint::black_box(ast);
            }
            (text.len() * rounds) as f64 / 1e6 / started.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    #[allow(clippy::print_stdout)]
    {
        println!(
            "parse: {} instructions, {:.2} MB per file: best {:.1} MB/s, median {:.1} MB/s over {batches} batches of {rounds}",
            ast.nodes.len(),
            text.len() as f64 / 1e6,
            rates[batches - 1],
            rates[batches / 2],
        );
    }
}
