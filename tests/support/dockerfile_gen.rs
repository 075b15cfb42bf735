//! A generator of Dockerfile-like text for robustness testing: keywords,
//! flags, quotes, escapes, JSON brackets, heredoc markers, variables,
//! continuations, CRs, BOMs, directives and odd Unicode, in random order.
//! Deterministic for a given seed, so a failure can be reproduced.

#![allow(dead_code)]

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const KEYWORDS: &[&str] = &[
    "FROM",
    "RUN",
    "COPY",
    "ADD",
    "ENV",
    "LABEL",
    "ARG",
    "CMD",
    "ENTRYPOINT",
    "ONBUILD",
    "HEALTHCHECK",
    "SHELL",
    "USER",
    "WORKDIR",
    "EXPOSE",
    "VOLUME",
    "STOPSIGNAL",
    "MAINTAINER",
    "from",
    "rUn",
    "onbuild",
    "FOO",
    "#",
    "",
];

const TOKENS: &[&str] = &[
    " ",
    " ",
    " ",
    "\t",
    "a",
    "b=c",
    "x",
    "/dest",
    ".",
    "--from=build",
    "--chown=1:2",
    "--mount=type=cache,target=/x",
    "--",
    "--x",
    "\"",
    "'",
    "\\",
    "`",
    "[",
    "]",
    "\"s\"",
    ",",
    "[\"a\", \"b\"]",
    "[1]",
    "<<EOF",
    "<<-EOF",
    "<<'E'",
    "3<<X",
    "<<",
    "$V",
    "${V}",
    "${V:-d}",
    "${V%%*.}",
    "${V/a/b}",
    "${",
    "}",
    "=",
    "#",
    "\\\n",
    "`\n",
    "\r",
    "é",
    "♥",
    "\u{a0}",
    "\u{85}",
    "\u{200b}",
    "😀",
    "\u{feff}",
    "\\\\",
    "\\ ",
    "\"a b\"",
    "'c d'",
    "k=\"v w\"",
    "CMD",
    "RUN",
    "AS",
    "--platform=$P",
    "{",
    "$",
    "\u{0}",
    "\u{7f}",
];

const LINES: &[&str] = &[
    "# escape=`\n",
    "# syntax=docker/dockerfile:1\n",
    "#escape=\\\n",
    "# check=skip=all\n",
    "\n",
    "  \n",
    "# comment\n",
    "EOF\n",
    "\tEOF\n",
    "X\n",
    "E\n",
    "\\\n",
    "`\n",
];

/// One random input.
pub fn dockerfile(rng: &mut Rng) -> String {
    let mut s = String::new();
    if rng.below(10) == 0 {
        s.push('\u{feff}');
    }
    let lines = 1 + rng.below(12);
    for _ in 0..lines {
        if rng.below(4) == 0 {
            s.push_str(rng.pick(LINES));
            continue;
        }
        s.push_str(rng.pick(KEYWORDS));
        let words = rng.below(10);
        for _ in 0..words {
            s.push_str(rng.pick(TOKENS));
        }
        match rng.below(6) {
            0 => s.push_str("\r\n"),
            1 => {}
            _ => s.push('\n'),
        }
    }
    if rng.below(20) == 0 {
        // Raw noise, kept valid UTF-8.
        let n = rng.below(64);
        let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
        s.push_str(&String::from_utf8_lossy(&bytes));
    }
    s
}
