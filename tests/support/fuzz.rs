//! Structure-aware fuzzing of imgbuild's parsers and tar extraction: the
//! generators, and the code that runs one input against the real library.
//!
//! Shared by `examples/fuzz.rs` (the long runs and their supervisor) and the
//! tests (a short deterministic run, the corpus replay). Each input is made
//! from a seed and its index only, so any input can be made again.
//!
//! The generators are grammars driven by `arbitrary::Unstructured` over
//! random bytes: every choice (which instruction, which flag, how deep, how
//! many) is a draw, so the inputs are *mostly valid structure* with the
//! hostile parts inside it: `${` nested thousands deep in an ENV value, NUL
//! bytes and invalid UTF-8 inside quoted words, 70,000-column lines, 20,000
//! stages that copy from each other in a cycle, tar entries whose names climb
//! with `..`, PAX records and GNU long names that say something else than the
//! header, sizes that do not fit, streams cut short.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arbitrary::Unstructured;

use imgbuild::diag::{Diagnostic, SourceFile};
use imgbuild::frontend::dockerfile::expand::Lexer;
use imgbuild::frontend::dockerfile::lower::{Options, lower};
use imgbuild::frontend::dockerfile::parser::kind_of;
use imgbuild::frontend::dockerfile::{dump, parse};

/// The four targets.
pub const TARGETS: &[&str] = &["dockerfile", "expand", "spec", "tar"];

// ---------------------------------------------------------------------------
// Randomness: a fast deterministic generator feeds `Unstructured`.

/// xorshift64*, seeded from (seed, index) through splitmix64.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64, index: u64) -> Self {
        let mut z = seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// The bytes that drive input `index` of `seed`: mostly a few KiB, sometimes
/// 64 KiB (the draws of a big input).
pub fn entropy(seed: u64, index: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed, index);
    let len = match rng.next() % 100 {
        0..=59 => 512,
        60..=94 => 4096,
        _ => 65536,
    };
    let mut buf = vec![0u8; len];
    rng.fill(&mut buf);
    buf
}

/// Generates input `index` of `seed` for `target`.
pub fn generate(target: &str, seed: u64, index: u64) -> Vec<u8> {
    let data = entropy(seed, index);
    let mut u = Unstructured::new(&data);
    // One input in a hundred is big: huge counts, 70,000-column lines,
    // nesting thousands deep. The rest stay small, so a run is fast.
    // (Every 64th input is big too, so even a short run has some.)
    let big = data[0] < 3 || index % 64 == 1;
    let mut g = Gen {
        u: &mut u,
        out: Vec::new(),
        big,
    };
    match target {
        "dockerfile" => g.dockerfile(),
        "expand" => g.expand_case(),
        "spec" => g.spec(),
        "tar" => g.tar(),
        _ => panic!("unknown target {target}"),
    }
    g.out
}

// ---------------------------------------------------------------------------
// Generators.

struct Gen<'a, 'b> {
    u: &'a mut Unstructured<'b>,
    out: Vec<u8>,
    /// This input may be huge.
    big: bool,
}

const IDENT: &[&str] = &[
    "A", "B", "PATH", "HOME", "x_1", "é", "1", "@", "#", "?", "EOF",
];
const IMAGES: &[&str] = &[
    "scratch",
    "busybox",
    "alpine:3.20",
    "docker.io/library/debian:12",
    "oci-archive:base.tar",
    "oci:layout:tag",
    "docker-archive:x.tar",
    "sha256:0123456789abcdef0123",
    "$BASE",
    "${BASE:-scratch}",
    "stage0",
    "s1",
    "UPPER",
    "a@sha256:xyz",
    "",
];

impl Gen<'_, '_> {
    fn n(&mut self, max: u32) -> u32 {
        self.u.int_in_range(0..=max).unwrap_or(0)
    }
    fn chance(&mut self, in_: u32) -> bool {
        self.n(in_.saturating_sub(1)) == 0
    }
    fn pick<'s>(&mut self, items: &[&'s str]) -> &'s str {
        items[self.n(items.len() as u32 - 1) as usize]
    }
    fn push(&mut self, s: &str) {
        self.out.extend_from_slice(s.as_bytes());
    }
    /// A count: small mostly, now and then a huge one.
    fn count(&mut self, small: u32, huge: u32) -> u32 {
        if self.big && self.chance(4) {
            self.n(huge)
        } else {
            self.n(small)
        }
    }
    /// A rare hostile choice: common in big inputs, rare in the others.
    fn rare(&mut self) -> bool {
        if self.big {
            self.chance(3)
        } else {
            self.chance(400)
        }
    }

    /// Hostile bytes that may sit inside a word: NUL, invalid UTF-8,
    /// control characters, wide and combining characters, odd spaces.
    fn odd_bytes(&mut self) {
        let v: &[&[u8]] = &[
            b"\0",
            b"\xff",
            b"\xc3",
            b"\xed\xa0\x80",
            b"\x1b[31m",
            b"\r",
            b"\t",
            "日本".as_bytes(),
            "e\u{301}".as_bytes(),
            "\u{a0}".as_bytes(),
            "\u{85}".as_bytes(),
            "\u{200b}".as_bytes(),
            "\u{feff}".as_bytes(),
            "😀".as_bytes(),
            b"\x7f",
        ];
        let b = v[self.n(v.len() as u32 - 1) as usize];
        self.out.extend_from_slice(b);
    }

    /// A shell word with quotes, escapes and substitutions, nested up to
    /// `depth` (which is sometimes thousands).
    fn word(&mut self, depth: u32) {
        let parts = 1 + self.n(6);
        for _ in 0..parts {
            match self.n(15) {
                0..=4 => {
                    let s = self.pick(&["a", "b/c", ".", "x.tar.gz", "-", "=", ",", ":", "*", "?"]);
                    self.push(s);
                }
                5 if self.chance(3) => self.odd_bytes(),
                6 => {
                    self.push("$");
                    let s = self.pick(IDENT);
                    self.push(s);
                }
                7 | 8 if depth > 0 => {
                    self.push("${");
                    let s = self.pick(IDENT);
                    self.push(s);
                    let m = self.pick(&[
                        "}", ":-", "-", ":+", "+", ":?", "?", "#", "##", "%", "%%", "/", "//",
                        ":x", "",
                    ]);
                    self.push(m);
                    if m != "}" {
                        self.word(depth - 1);
                        if m.starts_with('/') {
                            self.push("/");
                            self.word(depth - 1);
                        }
                        if !self.chance(20) {
                            self.push("}");
                        }
                    }
                }
                9 => {
                    self.push("\"");
                    if depth > 0 {
                        self.word(depth - 1);
                    }
                    if !self.chance(20) {
                        self.push("\"");
                    }
                }
                10 => {
                    self.push("'");
                    self.push("lit $A \\ \"");
                    if !self.chance(20) {
                        self.push("'");
                    }
                }
                11 => {
                    let s = self.pick(&["\\", "\\\\", "\\$", "`", "\\ ", "\\\""]);
                    self.push(s);
                }
                12 => {
                    // A long run: sometimes past 65,535 columns.
                    let len = if self.rare() {
                        70_000
                    } else {
                        self.n(40) as usize
                    };
                    let c = self.pick(&["a", "\t", "日", "$", " "]);
                    self.push(&c.repeat(len / c.len().max(1)));
                }
                13 => {
                    // Deep nesting in one go: `${A:-` × n.
                    let n = if self.rare() { 5_000 } else { self.n(80) } as usize;
                    let q = self.chance(2);
                    let open = if q { "\"${A:-" } else { "${A:-" };
                    let close = if q { "}\"" } else { "}" };
                    self.push(&open.repeat(n));
                    self.push("x");
                    if !self.chance(10) {
                        self.push(&close.repeat(n));
                    }
                }
                _ => {
                    let s = self.pick(&[" ", "  ", "\t"]);
                    self.push(s);
                }
            }
        }
    }

    fn eol(&mut self) {
        match self.n(20) {
            0 => self.push("\r\n"),
            1 => self.push(" \\\n"),
            2 => self.push(" \\\n# comment inside\n"),
            3 => self.push(" \\\n\n"),
            _ => self.push("\n"),
        }
    }

    fn flags(&mut self, names: &[&str]) {
        let n = self.count(3, 2000);
        for _ in 0..n {
            let f = self.pick(names);
            self.push(" --");
            self.push(f);
            if !self.chance(8) {
                self.push("=");
                self.word(2);
            }
        }
    }

    fn json_array(&mut self) {
        self.push("[");
        let n = self.count(4, 5000);
        for i in 0..n {
            if i > 0 {
                self.push(",");
            }
            match self.n(12) {
                0 => self.push("1"),
                1 => self.push("[\"nested\"]"),
                2 => self.push("\"\\u0000\\ud83d\\ude00\\ud800\""),
                _ => {
                    self.push("\"");
                    self.word(1);
                    self.push("\"");
                }
            }
        }
        if !self.chance(15) {
            self.push("]");
        }
    }

    fn heredoc(&mut self) {
        let name = self.pick(&["EOF", "E", "'Q'", "\"D\"", "-T"]);
        self.push(" <<");
        self.push(name);
        self.push(" ");
        self.word(1);
        self.push("\n");
        let lines = self.count(3, 20_000);
        for _ in 0..lines {
            self.push("echo ");
            self.word(3);
            self.push("\n");
        }
        if !self.chance(15) {
            self.push(name.trim_matches(['\'', '"', '-']));
            self.push("\n");
        }
    }

    fn instruction(&mut self, stage_names: u32, onbuild_depth: u32) {
        let kw = self.pick(&[
            "FROM",
            "RUN",
            "COPY",
            "ADD",
            "ENV",
            "LABEL",
            "ARG",
            "CMD",
            "ENTRYPOINT",
            "SHELL",
            "HEALTHCHECK",
            "USER",
            "WORKDIR",
            "EXPOSE",
            "VOLUME",
            "STOPSIGNAL",
            "MAINTAINER",
            "ONBUILD",
            "from",
            "rUn",
            "RUN",
            "COPY",
            "ENV",
            "COPPY",
        ]);
        self.push(kw);
        match kw.to_ascii_lowercase().as_str() {
            "from" => {
                if self.chance(4) {
                    self.flags(&["platform", "x"]);
                }
                self.push(" ");
                let img = self.pick(IMAGES);
                self.push(img);
                if self.chance(2) {
                    let v = self.n(stage_names);
                    let _ = write!(self, " AS s{}", v);
                }
            }
            "run" => {
                self.flags(&["mount", "network", "security", "x"]);
                match self.n(3) {
                    0 => {
                        self.push(" ");
                        self.json_array();
                    }
                    1 => {
                        self.heredoc();
                        return;
                    }
                    _ => {
                        self.push(" ");
                        self.word(4);
                    }
                }
            }
            "copy" | "add" => {
                self.flags(&[
                    "from", "chown", "chmod", "link", "exclude", "parents", "checksum",
                ]);
                if self.chance(3) {
                    let v = self.n(stage_names);
                    let _ = write!(self, " --from=s{}", v);
                }
                if self.chance(6) {
                    self.heredoc();
                    return;
                }
                if self.chance(5) {
                    self.push(" ");
                    self.json_array();
                } else {
                    let n = 1 + self.count(3, 5000);
                    for _ in 0..n {
                        self.push(" ");
                        self.word(3);
                    }
                }
            }
            "env" | "label" | "arg" => {
                let n = 1 + self.count(3, 20_000);
                for _ in 0..n {
                    self.push(" ");
                    self.word(1);
                    if !self.chance(10) {
                        self.push("=");
                    } else {
                        self.push(" ");
                    }
                    self.word(5);
                    if self.chance(30) {
                        self.push(" \\\n ");
                    }
                }
            }
            "cmd" | "entrypoint" | "shell" | "volume" => {
                self.push(" ");
                if self.chance(2) {
                    self.json_array();
                } else {
                    self.word(3);
                }
            }
            "healthcheck" => {
                self.flags(&[
                    "interval",
                    "timeout",
                    "start-period",
                    "start-interval",
                    "retries",
                ]);
                let c = self.pick(&[" NONE", " CMD ", " CMD", " X "]);
                self.push(c);
                self.word(2);
            }
            "onbuild" => {
                self.push(" ");
                let nest = if self.rare() { 20 } else { 0 };
                for _ in 0..nest {
                    self.push("ONBUILD ");
                }
                if onbuild_depth > 0 {
                    self.instruction(stage_names, onbuild_depth - 1);
                    return;
                }
            }
            _ => {
                let n = self.count(2, 1000);
                for _ in 0..n {
                    self.push(" ");
                    self.word(3);
                }
            }
        }
        self.eol();
    }

    fn dockerfile(&mut self) {
        if self.chance(15) {
            self.push("\u{feff}");
        }
        let directives = self.n(3);
        for _ in 0..directives {
            let d = self.pick(&[
                "# escape=`\n",
                "# escape=\\\n",
                "# syntax=docker/dockerfile:1\n",
                "# check=skip=all\n",
                "# escape=x\n",
            ]);
            self.push(d);
        }
        let stage_names = 1 + self.count(5, 20_000);
        if self.rare() {
            // A huge cycle: every stage copies from the next, the last from the first.
            let n = stage_names.max(2);
            for i in 0..n {
                let _ = write!(
                    self,
                    "FROM scratch AS s{i}\nCOPY --from=s{} /x /x\n",
                    (i + 1) % n
                );
            }
            return;
        }
        if self.rare() {
            // Many ENV lines (and variables that grow on each line).
            self.push("FROM scratch\n");
            let n = self.count(500, 200_000);
            let grow = self.chance(2);
            for i in 0..n {
                if grow {
                    self.push("ENV A=$A$A\n");
                } else {
                    let _ = writeln!(self, "ENV V{i}=value{i}");
                }
            }
        }
        self.push("FROM ");
        let img = self.pick(IMAGES);
        self.push(img);
        self.push(" AS s0\n");
        let n = self.count(12, 5000);
        for _ in 0..n {
            if self.chance(12) {
                let s = self.pick(&["\n", "# comment\n", "  \t\n", "EOF\n", "\\\n"]);
                self.push(s);
            }
            self.instruction(stage_names, 3);
        }
    }

    fn expand_case(&mut self) {
        // Header line: lexer switches and escape; then NAME=VALUE lines; a
        // line `--`; then the word (the rest of the input).
        let flags = self.n(15);
        let esc = if self.chance(3) { '`' } else { '\\' };
        let _ = writeln!(self, "{flags} {esc}");
        let vars = self.count(4, 2000);
        let mut one_big = self.big;
        for _ in 0..vars {
            let name = self.pick(IDENT);
            self.push(name);
            self.push("=");
            let start = self.out.len();
            if one_big && self.chance(10) {
                // One value of 1 MiB: words that repeat it hit the limit.
                one_big = false;
                self.push(&"y".repeat(1 << 20));
            } else {
                self.word(2);
            }
            // Values are single lines.
            for b in &mut self.out[start..] {
                if *b == b'\n' {
                    *b = b' ';
                }
            }
            self.push("\n");
        }
        self.push("--\n");
        let depth = if self.big { 200 } else { 6 };
        self.word(depth);
    }

    fn toml_string(&mut self) {
        match self.n(8) {
            0 => {
                self.push("'");
                self.word(1);
                self.push("'");
            }
            1 if self.rare() => self.push("\"\\u0000\\uD800\\U0010FFFF\\x\""),
            1 => self.push("\"\\u0000\\u00e9\\U0001F600\\t\""),
            2 => self.push("\"\"\"multi\nline\"\"\""),
            3 => {
                let n = if self.rare() { 70_000 } else { 20 };
                self.push("\"");
                self.push(&"w".repeat(n));
                self.push("\"");
            }
            _ => {
                self.push("\"");
                let start = self.out.len();
                self.word(2);
                for b in &mut self.out[start..] {
                    if matches!(*b, b'"' | b'\\' | b'\n') {
                        *b = b'_';
                    }
                }
                self.push("\"");
            }
        }
    }

    fn toml_value(&mut self, depth: u32) {
        match self.n(9) {
            0 => self.push("1"),
            1 => self.push("true"),
            2 => self.push("1979-05-27T07:32:00Z"),
            3 => self.push("99999999999999999999"),
            4 if depth > 0 => {
                self.push("[");
                let n = self.count(3, 3000);
                for i in 0..n {
                    if i > 0 {
                        self.push(", ");
                    }
                    self.toml_value(depth - 1);
                }
                self.push("]");
            }
            5 if depth > 0 => {
                self.push("{ ");
                let n = self.count(3, 1000);
                for i in 0..n {
                    if i > 0 {
                        self.push(", ");
                    }
                    let k = self.pick(&[
                        "src", "dest", "from", "mode", "owner", "exclude", "parents", "k",
                    ]);
                    self.push(k);
                    self.push(" = ");
                    self.toml_value(depth - 1);
                }
                self.push(" }");
            }
            6 => {
                let n = if self.rare() { 3000 } else { self.n(50) } as usize;
                self.push(&"[".repeat(n));
                self.push(&"]".repeat(n));
            }
            _ => self.toml_string(),
        }
    }

    fn spec(&mut self) {
        if self.chance(3) {
            self.push("[build]\ncontext = ");
            self.toml_string();
            self.push("\nexclude = [");
            self.toml_string();
            self.push("]\nsource_date_epoch = 1\n");
        }
        let stages = 1 + self.count(5, 20_000);
        let cycle = self.rare();
        for i in 0..stages {
            let last = i + 1 == stages;
            let kind = if last || self.chance(2) {
                "image"
            } else {
                "stage"
            };
            let _ = writeln!(self, "[{kind}.s{i}]");
            if cycle {
                let _ = writeln!(self, "from = \"s{}\"", (i + 1) % stages);
                continue;
            }
            let mut used = Vec::new();
            if !self.chance(8) {
                used.push("from");
                // Mostly an earlier stage, so most specs are acyclic.
                let v = self.n(i);
                if v == i {
                    self.push("from = \"scratch\"\n");
                } else {
                    let _ = writeln!(self, "from = \"s{v}\"");
                }
            }
            let keys = self.n(6);
            for _ in 0..keys {
                let k = self.pick(&[
                    "from",
                    "tags",
                    "output",
                    "format",
                    "env",
                    "labels",
                    "workdir",
                    "user",
                    "ports",
                    "volumes",
                    "stop_signal",
                    "shell",
                    "entrypoint",
                    "cmd",
                    "from",
                ]);
                let k = if self.rare() { "bogus" } else { k };
                if used.contains(&k) && !self.rare() {
                    continue;
                }
                used.push(k);
                self.push(k);
                self.push(" = ");
                let good = match k {
                    "tags" => "[\"x:1\"]",
                    "output" => "\"out.tar\"",
                    "format" => "\"oci\"",
                    "workdir" => "\"/app\"",
                    "user" => "\"1000:1000\"",
                    "ports" => "[\"80\", \"53/udp\"]",
                    "volumes" => "[\"/data\"]",
                    "stop_signal" => "\"SIGTERM\"",
                    "shell" => "[\"/bin/sh\", \"-c\"]",
                    "entrypoint" | "cmd" => "[\"/app\", \"--x\"]",
                    _ => "",
                };
                if !good.is_empty() && !self.rare() && !self.chance(8) {
                    self.push(good);
                } else if k == "from" && !self.chance(8) {
                    let v = self.n(stages);
                    if self.chance(4) {
                        self.push("\"scratch\"");
                    } else {
                        let _ = write!(self, "\"s{}\"", v);
                    }
                } else if matches!(k, "env" | "labels") && self.chance(2) {
                    self.push("{ A = ");
                    self.toml_string();
                    self.push(" }");
                } else {
                    self.toml_value(3);
                }
                self.push("\n");
            }
            let steps = self.count(3, 2000);
            for _ in 0..steps {
                let _ = writeln!(self, "[[{kind}.s{i}.step]]");
                match self.n(3) {
                    0 => {
                        self.push("copy = [{ src = ");
                        self.toml_value(1);
                        self.push(", dest = ");
                        self.toml_string();
                        if self.chance(2) {
                            let v = self.n(stages);
                            let _ = write!(self, ", from = \"s{}\"", v);
                        }
                        self.push(" }]\n");
                    }
                    1 => {
                        self.push("run = ");
                        self.toml_value(1);
                        self.push("\n");
                        if self.chance(3) {
                            self.push("cache = ");
                            self.toml_value(1);
                            self.push("\n");
                        }
                    }
                    2 => {
                        self.push("env = { K = ");
                        self.toml_string();
                        self.push(" }\n");
                    }
                    _ => {
                        self.push("x = ");
                        self.toml_value(2);
                        self.push("\n");
                    }
                }
            }
        }
    }

    // -- tar ----------------------------------------------------------------

    /// A path component list that, however it is resolved (confined or
    /// not), lands under the fuzz box: `..` climbs at most as far as the
    /// padding above the box, absolute names name the box's own directories.
    fn tar_name(&mut self) -> Vec<u8> {
        let mut name = Vec::new();
        match self.n(9) {
            0 => {
                name.extend_from_slice(BOX_TOKEN);
                name.extend_from_slice(b"/outside/");
            }
            1 => name.extend_from_slice(b"../outside/"),
            2 => {
                let ups = self.n(PADDING);
                for _ in 0..ups {
                    name.extend_from_slice(b"../");
                }
            }
            3 => name.extend_from_slice(b"./"),
            4 => name.push(b'/'),
            _ => {}
        }
        let parts = 1 + self.count(3, 300);
        for i in 0..parts {
            if i > 0 {
                name.push(b'/');
            }
            let c: &[u8] = match self.n(14) {
                0 => b"..",
                1 => b".",
                2 => b"",
                3 => b".wh.a",
                4 => b".wh..wh..opq",
                5 => b"\xff\xfe",
                6 => b"keep",
                7 => b"l",
                8 => b"d",
                9 => "日本".as_bytes(),
                10 => b"a\x01b",
                11 => b"outside",
                _ => b"a",
            };
            name.extend_from_slice(c);
            if self.rare() {
                name.extend(std::iter::repeat_n(b'n', 300));
            }
        }
        name
    }

    fn tar(&mut self) {
        let entries = 1 + self.count(6, 3000);
        for _ in 0..entries {
            let name = self.tar_name();
            let typ = *self
                .u
                .choose(&[
                    b'0', b'0', b'5', b'2', b'1', b'3', b'4', b'6', b'x', b'g', b'L', b'K', b'S',
                    b'7', b'Z', 0,
                ])
                .unwrap_or(&b'0');
            let link = self.tar_name();
            let body_len = match self.n(6) {
                0 => 0,
                1 => self.n(600) as usize,
                _ => self.n(64) as usize,
            };
            let mut body = vec![0u8; body_len];
            for b in body.iter_mut() {
                *b = self.u.arbitrary::<u8>().unwrap_or(b'x');
            }
            match typ {
                b'x' | b'g' => {
                    // PAX records: some well-formed, some lying.
                    body.clear();
                    let n = 1 + self.n(4);
                    for _ in 0..n {
                        let (k, v): (&str, Vec<u8>) = match self.n(7) {
                            0 => ("path", self.tar_name()),
                            1 => ("linkpath", self.tar_name()),
                            2 => ("size", b"99999999999999999999".to_vec()),
                            3 => ("GNU.sparse.map", b"0,1,4096,1,999999999999,1".to_vec()),
                            4 => ("SCHILY.xattr.trusted.x", b"y".to_vec()),
                            5 => ("uid", b"-1".to_vec()),
                            _ => ("mtime", b"1e400".to_vec()),
                        };
                        let rec_len = k.len() + v.len() + 3;
                        let digits = rec_len.to_string().len();
                        let mut total = rec_len + digits;
                        if total.to_string().len() != digits {
                            total += 1;
                        }
                        let lie = if self.chance(8) { 7 } else { 0 };
                        body.extend_from_slice(format!("{} {k}=", total + lie).as_bytes());
                        body.extend_from_slice(&v);
                        body.push(b'\n');
                    }
                }
                b'L' | b'K' => {
                    body = self.tar_name();
                    body.push(0);
                }
                _ => {}
            }
            let size_field = match self.n(20) {
                0 => Size::Huge,
                1 => Size::Base256,
                2 => Size::Garbage,
                _ => Size::Exact,
            };
            let mode = *self
                .u
                .choose(&[0o644u32, 0o755, 0o4755, 0o2755, 0o1777, 0o000, 0o7777])
                .unwrap_or(&0o644);
            self.tar_header(&name, &link, typ, mode, body.len(), size_field);
            self.out.extend_from_slice(&body);
            let pad = (512 - body.len() % 512) % 512;
            self.out.extend(std::iter::repeat_n(0u8, pad));
        }
        if !self.chance(10) {
            self.out.extend(std::iter::repeat_n(0u8, 1024));
        }
        if self.chance(8) {
            // Cut the stream anywhere.
            let keep = self.n(self.out.len() as u32) as usize;
            self.out.truncate(keep);
        }
    }

    fn tar_header(&mut self, name: &[u8], link: &[u8], typ: u8, mode: u32, size: usize, sz: Size) {
        let mut h = [0u8; 512];
        let n = name.len().min(100);
        h[..n].copy_from_slice(&name[..n]);
        if name.len() > 100 && self.chance(2) {
            // ustar prefix field.
            let rest = &name[100..];
            let m = rest.len().min(155);
            h[345..345 + m].copy_from_slice(&rest[..m]);
        }
        octal(&mut h[100..108], u64::from(mode));
        octal(&mut h[108..116], if self.chance(5) { 65_534 } else { 0 });
        octal(&mut h[116..124], 0);
        match sz {
            Size::Exact => octal(&mut h[124..136], size as u64),
            Size::Huge => octal(&mut h[124..136], 0o77_777_777_777),
            Size::Base256 => {
                h[124] = 0x80;
                h[128..136].copy_from_slice(&u64::MAX.to_be_bytes());
            }
            Size::Garbage => h[124..136].copy_from_slice(b"12x\xff 9999 \0\0"),
        }
        octal(&mut h[136..148], 1_700_000_000);
        h[156] = typ;
        let l = link.len().min(100);
        h[157..157 + l].copy_from_slice(&link[..l]);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        if typ == b'S' {
            // GNU sparse: old-style map in the header, a real size that lies.
            h[257..265].copy_from_slice(b"ustar  \0");
            octal(&mut h[386..398], 0);
            octal(&mut h[398..410], size as u64);
            octal(
                &mut h[483..495],
                if self.chance(2) { 1 << 40 } else { size as u64 },
            );
            h[482] = u8::from(self.chance(4));
        }
        if matches!(typ, b'3' | b'4') {
            octal(&mut h[329..337], 1);
            octal(&mut h[337..345], 3);
        }
        // Checksum: right, mostly.
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        let sum = if self.chance(30) { sum + 1 } else { sum };
        octal(&mut h[148..155], u64::from(sum));
        h[155] = b' ';
        self.out.extend_from_slice(&h);
    }
}

#[derive(Clone, Copy)]
enum Size {
    Exact,
    Huge,
    Base256,
    Garbage,
}

fn octal(field: &mut [u8], v: u64) {
    let s = format!("{v:0w$o}", w = field.len() - 1);
    let b = s.as_bytes();
    let b = &b[b.len().saturating_sub(field.len() - 1)..];
    field[..b.len()].copy_from_slice(b);
    field[field.len() - 1] = 0;
}

impl std::fmt::Write for Gen<'_, '_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.push(s);
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Running one input.

/// What the runs reached, summed over inputs.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub inputs: u64,
    pub bytes: u64,
    /// Inputs the target accepted (parsed, expanded, lowered without error,
    /// extracted).
    pub ok: u64,
    /// Instruction (or step) kinds seen in accepted structure.
    pub kinds: BTreeMap<String, u64>,
    /// Error classes reached.
    pub errors: BTreeMap<String, u64>,
}

impl Stats {
    pub fn merge(&mut self, o: &Stats) {
        self.inputs += o.inputs;
        self.bytes += o.bytes;
        self.ok += o.ok;
        for (k, v) in &o.kinds {
            *self.kinds.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
    }
    fn kind(&mut self, k: &str) {
        *self.kinds.entry(k.to_string()).or_default() += 1;
    }
    fn error(&mut self, k: &str) {
        *self.errors.entry(k.to_string()).or_default() += 1;
    }
    /// One line per counter, `kind NAME COUNT` / `error NAME COUNT`.
    pub fn to_lines(&self) -> String {
        let mut s = format!(
            "inputs {}\nbytes {}\nok {}\n",
            self.inputs, self.bytes, self.ok
        );
        for (k, v) in &self.kinds {
            let _ = writeln!(s, "kind {k}\t{v}");
        }
        for (k, v) in &self.errors {
            let _ = writeln!(s, "error {k}\t{v}");
        }
        s
    }
    pub fn from_lines(text: &str) -> Stats {
        let mut st = Stats::default();
        for l in text.lines() {
            let (tag, rest) = l.split_once(' ').unwrap_or((l, ""));
            let (name, n) = rest.rsplit_once(['\t', ' ']).unwrap_or((rest, "0"));
            let n: u64 = n.parse().unwrap_or(0);
            match tag {
                "inputs" => st.inputs = rest.parse().unwrap_or(0),
                "bytes" => st.bytes = rest.parse().unwrap_or(0),
                "ok" => st.ok = rest.parse().unwrap_or(0),
                "kind" => *st.kinds.entry(name.to_string()).or_default() += n,
                "error" => *st.errors.entry(name.to_string()).or_default() += n,
                _ => {}
            }
        }
        st
    }
}

/// A diagnostic's class for statistics: its message up to the first value
/// (quote, backtick, digit or colon). Only for counting what was reached.
pub fn diag_class(d: &Diagnostic) -> String {
    let mut out = String::new();
    let mut quote: Option<char> = None;
    for c in d.message.chars() {
        match quote {
            Some(q) if c == q => {
                out.push('…');
                out.push(c);
                quote = None;
            }
            Some(_) => {}
            None if matches!(c, '`' | '"') => {
                out.push(c);
                quote = Some(c);
            }
            None if c.is_ascii_digit() => {
                if !out.ends_with('N') {
                    out.push('N');
                }
            }
            None => out.push(c),
        }
        if out.chars().count() >= 70 {
            break;
        }
    }
    out
}

/// Why an input failed the run.
#[derive(Debug)]
pub enum Failure {
    /// Something was written outside the extraction root.
    Escape(String),
}

/// Runs one input of `target` against the real code; `Err` for an escape
/// (panics propagate to the caller, who catches them).
pub fn run_one(target: &str, input: &[u8], tar_box: &Path, st: &mut Stats) -> Result<(), Failure> {
    st.inputs += 1;
    st.bytes += input.len() as u64;
    match target {
        "dockerfile" => dockerfile(input, st),
        "expand" => expand(input, st),
        "spec" => spec(input, st),
        "tar" => return tar(input, tar_box, st),
        _ => panic!("unknown target {target}"),
    }
    Ok(())
}

fn lossy(input: &[u8]) -> String {
    String::from_utf8_lossy(input).into_owned()
}

fn dockerfile(input: &[u8], st: &mut Stats) {
    let file = SourceFile::new("Dockerfile", lossy(input));
    match parse(&file) {
        Ok(ast) => {
            st.kind("(parsed)");
            let _ = dump(&ast);
            for n in &ast.nodes {
                let k = kind_of(&n.keyword.value);
                st.kind(if k.is_empty() { "unknown" } else { k });
            }
            let opts = Options {
                context: PathBuf::from("/nonexistent-fuzz-context"),
                inputs: Vec::new(),
                excludes: Vec::new(),
                build_args: vec![("A".into(), "x".into())],
                target: None,
                platform: imgbuild::platform::host(),
                build_platform: imgbuild::platform::host(),
                resolver: &FuzzBases,
                warn_unused_stages: true,
                named_contexts: &Default::default(),
            };
            let (graph, diags) = lower(&file, &ast, &opts);
            // The same definition for a second platform, merged as a
            // multi-platform build merges it.
            if diags.iter().all(|d| !d.is_error()) {
                let arm = imgbuild::platform::Platform::new("linux", "arm64", "");
                let other = Options {
                    platform: arm.clone(),
                    warn_unused_stages: false,
                    ..opts
                };
                let (second, _) = lower(&file, &ast, &other);
                let merged = imgbuild::graph::merge(vec![
                    (imgbuild::platform::host(), graph.clone()),
                    (arm, second),
                ]);
                let targets: Vec<_> = merged.outputs.iter().map(|o| o.stage).collect();
                let _ = merged.unused_stages(&targets);
            }
            let _ = graph.build_order(
                &(0..graph.stages.len())
                    .map(imgbuild::graph::StageId)
                    .collect::<Vec<_>>(),
            );
            for s in 0..graph.steps.len() {
                let _ = graph.created_by(imgbuild::graph::StepId(s));
            }
            let mut errors = 0;
            for d in &diags {
                let _ = d.to_string();
                if d.is_error() {
                    errors += 1;
                    st.error(&format!("lower: {}", diag_class(d)));
                }
            }
            if errors == 0 {
                st.ok += 1;
            }
        }
        Err(d) => {
            let _ = d.to_string();
            st.error(&format!("parse: {}", diag_class(&d)));
        }
    }
}

/// Base images for lowering: any named image exists, with an environment
/// and (for names with "onbuild") ONBUILD triggers, some of them invalid.
struct FuzzBases;

impl imgbuild::graph::BaseResolver for FuzzBases {
    fn resolve(
        &self,
        image: &imgbuild::graph::ImageSource,
        _: &imgbuild::platform::Platform,
    ) -> Result<imgbuild::graph::BaseInfo, String> {
        let name = image.to_string();
        if name.contains("sha256") {
            return Err("no such image".into());
        }
        Ok(imgbuild::graph::BaseInfo {
            env: vec![
                "PATH=/usr/bin:/bin".into(),
                "BASE=scratch".into(),
                "NOEQ".into(),
            ],
            workdir: Some("/srv".into()),
            onbuild: if name.contains("alpine") {
                vec![
                    "RUN echo $PATH".into(),
                    "COPY --from=s0 /a /b".into(),
                    "ONBUILD RUN x".into(),
                ]
            } else {
                Vec::new()
            },
        })
    }
}

fn expand(input: &[u8], st: &mut Stats) {
    let text = lossy(input);
    let (head, rest) = text.split_once('\n').unwrap_or((&text, ""));
    let (flags, esc) = head.split_once(' ').unwrap_or(("0", "\\"));
    let flags: u32 = flags.parse().unwrap_or(0);
    let mut env = std::collections::HashMap::new();
    let mut word = "";
    let mut lines = rest.split_inclusive('\n');
    let mut consumed = 0;
    for l in lines.by_ref() {
        consumed += l.len();
        let l = l.trim_end_matches('\n');
        if l == "--" {
            word = &rest[consumed..];
            break;
        }
        if let Some((k, v)) = l.split_once('=') {
            env.insert(k.to_string(), v.to_string());
        }
    }
    let lexer = Lexer {
        raw_quotes: flags & 1 != 0,
        raw_escapes: flags & 2 != 0,
        skip_process_quotes: flags & 4 != 0,
        skip_unset_env: flags & 8 != 0,
        ..Lexer::new(if esc.starts_with('`') { '`' } else { '\\' })
    };
    let get = |n: &str| env.get(n).cloned();
    let r1 = lexer.word(word, &get);
    let r2 = lexer.words(word, &get);
    let r3 = lexer.word_with_names(word, &get);
    match (&r1, &r2, &r3) {
        (Ok(_), Ok(ws), Ok(_)) => {
            st.ok += 1;
            st.kind(if ws.len() > 1 { "words>1" } else { "word" });
        }
        _ => {
            for e in [r1.err(), r2.err(), r3.err()].into_iter().flatten() {
                st.error(e.class());
            }
        }
    }
    for op in [":-", ":+", ":?", "##", "%%", "//", "/", "#", "%"] {
        if word.contains(op) {
            st.kind(&format!("op {op}"));
        }
    }
}

fn spec(input: &[u8], st: &mut Stats) {
    let file: Arc<SourceFile> = SourceFile::new("spec.toml", lossy(input));
    let (graph, diags) =
        imgbuild::frontend::spec::load_all(&file, Path::new("/nonexistent-fuzz-spec"), &[]);
    // And as a two-platform build (lowered twice, merged).
    let two = [
        imgbuild::platform::host(),
        imgbuild::platform::Platform::new("linux", "arm64", ""),
    ];
    let _ = imgbuild::frontend::spec::load_all(&file, Path::new("/nonexistent-fuzz-spec"), &two);
    let mut errors = 0;
    for d in &diags {
        let _ = d.to_string();
        if d.is_error() {
            errors += 1;
            st.error(&diag_class(d));
        }
    }
    if let Some(g) = graph {
        let _ = g.build_order(
            &(0..g.stages.len())
                .map(imgbuild::graph::StageId)
                .collect::<Vec<_>>(),
        );
        for s in &g.steps {
            st.kind(match &s.kind {
                imgbuild::graph::StepKind::Copy(_) => "copy",
                imgbuild::graph::StepKind::Run(_) => "run",
                imgbuild::graph::StepKind::Config(_) => "config",
                imgbuild::graph::StepKind::Fetch(_) => "fetch",
            });
        }
        if errors == 0 {
            st.ok += 1;
        }
    }
}

/// Stands for the box's absolute path in generated tar names, so inputs (and
/// the corpus) do not depend on where the box is: [`tar`] replaces it with the
/// box's path padded to the same length with `/.`, which names the same
/// directory, so PAX record lengths stay right.
pub const BOX_TOKEN: &[u8] = b"/@BOX@__________________________________________________________________________________________________________________________";

fn with_box(input: &[u8], tar_box: &Path) -> Vec<u8> {
    let b = tar_box.as_os_str().as_encoded_bytes();
    assert!(b.len() + 1 < BOX_TOKEN.len(), "box path too long");
    let mut pad = b.to_vec();
    if (BOX_TOKEN.len() - pad.len()) % 2 == 1 {
        pad.push(b'/');
    }
    while pad.len() < BOX_TOKEN.len() {
        pad.extend_from_slice(b"/.");
    }
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i..].starts_with(BOX_TOKEN) {
            out.extend_from_slice(&pad);
            i += BOX_TOKEN.len();
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    out
}

/// How many directories sit between the fuzz base and the box: generated
/// names climb at most this far, so even an unconfined extraction would land
/// inside the base (where the check sees it), never elsewhere on the host.
pub const PADDING: u32 = 12;

/// Makes the box for tar extraction under `base` (a tmpfs): padding
/// directories, then `box/root` (extracted into) and `box/outside` (must stay
/// as it is). Returns the box.
pub fn make_box(base: &Path) -> PathBuf {
    let mut b = base.to_path_buf();
    for i in 0..PADDING {
        b.push(format!("p{i}"));
    }
    b.push("box");
    std::fs::create_dir_all(b.join("root")).unwrap();
    std::fs::create_dir_all(b.join("outside/dir")).unwrap();
    std::fs::write(b.join("outside/keep"), "keep\n").unwrap();
    b
}

/// Lists everything under `dir` except `skip`, as (path, kind, mode, size, nlink).
fn snapshot(dir: &Path, skip: &Path, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        out.push(format!("unreadable {}", dir.display()));
        return;
    };
    let mut names: Vec<_> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    names.sort();
    for p in names {
        if p == skip {
            continue;
        }
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        out.push(format!(
            "{} {:o} {} {} {}",
            p.display(),
            m.mode(),
            m.len(),
            m.nlink(),
            m.uid()
        ));
        if m.is_dir() {
            snapshot(&p, skip, out);
        }
    }
}

/// The state outside the root that extraction must leave alone.
pub fn outside_state(tar_box: &Path) -> Vec<String> {
    let mut base = tar_box.to_path_buf();
    for _ in 0..=PADDING {
        base.pop();
    }
    let mut out = Vec::new();
    snapshot(&base, &tar_box.join("root"), &mut out);
    if let Ok(k) = std::fs::read(tar_box.join("outside/keep")) {
        out.push(format!("keep {:?}", String::from_utf8_lossy(&k)));
    }
    out
}

fn tar(input: &[u8], tar_box: &Path, st: &mut Stats) -> Result<(), Failure> {
    let root = tar_box.join("root");
    let before = outside_state(tar_box);
    let input = with_box(input, tar_box);
    let r = imgbuild::layer::extract::extract_layer(&root, &input[..]);
    match &r {
        Ok(rep) => {
            st.ok += 1;
            st.kind(if rep.entries > 0 {
                "extracted entries"
            } else {
                "empty layer"
            });
        }
        Err(e) => {
            let dbg = format!("{e:?}");
            let variant = dbg
                .split(|c: char| !c.is_alphanumeric())
                .next()
                .unwrap_or("?");
            let kind = std::error::Error::source(e)
                .and_then(|s| s.downcast_ref::<std::io::Error>())
                .map(|io| format!("{:?}", io.kind()))
                .unwrap_or_default();
            st.error(format!("{variant} {kind}").trim());
        }
    }
    let after = outside_state(tar_box);
    // Fresh root for the next input (symlinks are removed, never followed).
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    if before != after {
        let diff: Vec<&String> = after.iter().filter(|l| !before.contains(l)).collect();
        let gone: Vec<&String> = before.iter().filter(|l| !after.contains(l)).collect();
        return Err(Failure::Escape(format!(
            "new or changed: {diff:?}; gone: {gone:?}"
        )));
    }
    Ok(())
}

/// The fixture files of a target's corpus, sorted (discovered, not listed).
pub fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fuzz")
        .join(target);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    v.retain(|p| p.file_name().is_some_and(|n| n != "README.md"));
    v.sort();
    v
}

/// Runs inputs `start..start + count` of `seed` in this process, catching
/// panics; returns the statistics and one line per failing input (panic or
/// escape). `base` is a scratch directory for the tar box.
pub fn run_range(
    target: &str,
    seed: u64,
    start: u64,
    count: u64,
    base: &Path,
) -> (Stats, Vec<String>) {
    let tar_box = make_box(base);
    let mut st = Stats::default();
    let mut failures = Vec::new();
    for i in start..start + count {
        let input = generate(target, seed, i);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_one(target, &input, &tar_box, &mut st)
        }));
        match r {
            Ok(Ok(())) => {}
            Ok(Err(Failure::Escape(m))) => failures.push(format!("input {i}: escape: {m}")),
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(format!("input {i}: panic: {msg}"));
            }
        }
    }
    (st, failures)
}
