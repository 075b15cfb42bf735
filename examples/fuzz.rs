//! Structure-aware fuzzing of the Dockerfile parser, word expansion, the
//! TOML spec and tar extraction (stable Rust: grammars driven by
//! `arbitrary::Unstructured`; the generators are in
//! `tests/support/fuzz.rs`).
//!
//!     cargo run --release --example fuzz -- TARGET --count N --seed S
//!         [--start I] [--timeout SECS] [--dir TMPFS] [--crashes DIR]
//!     cargo run --release --example fuzz -- TARGET --replay FILE
//!
//! TARGET is dockerfile, expand, spec or tar. The inputs run in a worker
//! process (this program again, `--worker`) that says which input it starts
//! before each one; a panic is caught and reported, while an abort (a stack
//! overflow), a signal or an input that uses more than `--timeout` seconds of
//! CPU time (or makes no progress for ten times as long) kills the
//! worker: the supervisor saves that input and starts a new worker after
//! it. Every failing input is saved under `--crashes` (default
//! `target/fuzz-crashes/TARGET/`). Tar inputs are extracted into a box under
//! `--dir` (default /dev/shm; use a tmpfs) and the run checks after each
//! input that nothing outside the extraction root changed.
//!
//! Prints inputs/s, the share of inputs the target accepted, and which
//! instruction kinds and error classes were reached. Exits 1 if any input
//! failed.
// Not the library: std::fs is fine here (clippy.toml holds src/ to fs_err).
#![allow(clippy::disallowed_methods)]
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]

#[path = "../tests/support/fuzz.rs"]
mod fuzz;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

static PANIC_MSG: Mutex<String> = Mutex::new(String::new());

struct Args {
    target: String,
    count: u64,
    seed: u64,
    start: u64,
    timeout: u64,
    dir: PathBuf,
    crashes: PathBuf,
    worker: bool,
    replay: Option<PathBuf>,
}

fn args() -> Args {
    let mut a = Args {
        target: String::new(),
        count: 100_000,
        seed: 1,
        start: 0,
        timeout: 20,
        dir: PathBuf::from("/dev/shm"),
        crashes: PathBuf::new(),
        worker: false,
        replay: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        let mut val = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{x} needs a value")))
        };
        match x.as_str() {
            "--count" => {
                a.count = val()
                    .replace('_', "")
                    .parse()
                    .unwrap_or_else(|_| usage("--count"))
            }
            "--seed" => a.seed = val().parse().unwrap_or_else(|_| usage("--seed")),
            "--start" => a.start = val().parse().unwrap_or_else(|_| usage("--start")),
            "--timeout" => a.timeout = val().parse().unwrap_or_else(|_| usage("--timeout")),
            "--dir" => a.dir = PathBuf::from(val()),
            "--crashes" => a.crashes = PathBuf::from(val()),
            "--replay" => a.replay = Some(PathBuf::from(val())),
            "--worker" => a.worker = true,
            t if !t.starts_with('-') && a.target.is_empty() => a.target = t.to_string(),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    if !fuzz::TARGETS.contains(&a.target.as_str()) {
        usage("say which target: dockerfile, expand, spec or tar");
    }
    if a.crashes.as_os_str().is_empty() {
        a.crashes = PathBuf::from("target/fuzz-crashes").join(&a.target);
    }
    a
}

fn usage(why: &str) -> ! {
    eprintln!(
        "fuzz: {why}\nusage: fuzz TARGET --count N --seed S [--start I] [--timeout SECS] [--dir TMPFS] [--crashes DIR] | fuzz TARGET --replay FILE"
    );
    std::process::exit(2);
}

fn main() {
    let a = args();
    if a.worker || a.replay.is_some() {
        // Caught panics are reported as failures, with this message.
        std::panic::set_hook(Box::new(|info| {
            if let Ok(mut m) = PANIC_MSG.lock() {
                *m = info.to_string();
            }
        }));
    }
    if let Some(file) = &a.replay {
        let input = std::fs::read(file).expect("read the input");
        let base = a
            .dir
            .join(format!("imgbuild-fuzz-replay-{}", std::process::id()));
        let tar_box = fuzz::make_box(&base);
        let mut st = fuzz::Stats::default();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            fuzz::run_one(&a.target, &input, &tar_box, &mut st)
        }));
        let _ = std::fs::remove_dir_all(&base);
        match r {
            Ok(Ok(())) => println!("ok\n{}", st.to_lines()),
            Ok(Err(e)) => {
                println!("FAILED: {e:?}");
                std::process::exit(1);
            }
            Err(_) => {
                println!(
                    "PANIC: {}",
                    PANIC_MSG.lock().map(|m| m.clone()).unwrap_or_default()
                );
                std::process::exit(1);
            }
        }
        return;
    }
    if a.worker {
        worker(&a);
    } else {
        supervise(&a);
    }
}

/// Runs the inputs, saying `s I` before input I; `p I MSG` after a caught
/// panic, `e I MSG` after an escape; the statistics at the end.
fn worker(a: &Args) {
    let base = a
        .dir
        .join(format!("imgbuild-fuzz-{}-{}", a.target, std::process::id()));
    let tar_box = fuzz::make_box(&base);
    let mut st = fuzz::Stats::default();
    let out = std::io::stdout();
    let mut out = out.lock();
    for i in a.start..a.start + a.count {
        let _ = writeln!(out, "s {i}");
        let _ = out.flush();
        let input = fuzz::generate(&a.target, a.seed, i);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            fuzz::run_one(&a.target, &input, &tar_box, &mut st)
        }));
        match r {
            Ok(Ok(())) => {}
            Ok(Err(fuzz::Failure::Escape(m))) => {
                let _ = writeln!(out, "e {i} {}", m.replace('\n', " "));
            }
            Err(_) => {
                let m = PANIC_MSG.lock().map(|m| m.clone()).unwrap_or_default();
                let _ = writeln!(out, "p {i} {}", m.replace('\n', " "));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&base);
    let _ = write!(out, "stats\n{}end\n", st.to_lines());
    let _ = out.flush();
}

/// CPU time the process has used, in nanoseconds (the first field of
/// `/proc/PID/schedstat`); 0 when it cannot be read.
fn cpu_ns(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn save(a: &Args, kind: &str, i: u64, why: &str) -> PathBuf {
    std::fs::create_dir_all(&a.crashes).expect("create the crash directory");
    let p = a.crashes.join(format!("{kind}-seed{}-{i}", a.seed));
    std::fs::write(&p, fuzz::generate(&a.target, a.seed, i)).expect("save the input");
    std::fs::write(p.with_extension("why"), why).expect("save the reason");
    p
}

fn supervise(a: &Args) {
    let started = Instant::now();
    let end = a.start + a.count;
    let mut next = a.start;
    let mut total = fuzz::Stats::default();
    let mut failures: Vec<String> = Vec::new();
    let mut last_report = Instant::now();
    let exe = std::env::current_exe().expect("own path");
    while next < end {
        let mut child = Command::new(&exe)
            .arg(&a.target)
            .args([
                "--worker",
                "--seed",
                &a.seed.to_string(),
                "--start",
                &next.to_string(),
            ])
            .args(["--count", &(end - next).to_string(), "--dir"])
            .arg(&a.dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start a worker");
        let stdout = child.stdout.take().expect("worker stdout");
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut current: Option<u64> = None;
        let mut in_stats = false;
        let mut stats_text = String::new();
        let mut finished = false;
        // An input times out on the worker's CPU time, not the wall clock:
        // on a busy machine a niced worker can wait for a core far longer
        // than an input takes. A worker that makes no progress without
        // using the CPU (blocked) times out after ten times as long.
        let pid = child.id();
        let mut input_cpu = cpu_ns(pid);
        let mut input_wall = Instant::now();
        loop {
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(line) => {
                    if in_stats {
                        if line == "end" {
                            total.merge(&fuzz::Stats::from_lines(&stats_text));
                            finished = true;
                        } else {
                            stats_text.push_str(&line);
                            stats_text.push('\n');
                        }
                        continue;
                    }
                    let (tag, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
                    match tag {
                        "s" => {
                            current = rest.parse().ok();
                            input_cpu = cpu_ns(pid);
                            input_wall = Instant::now();
                            if last_report.elapsed() > Duration::from_secs(30) {
                                last_report = Instant::now();
                                let done = current.unwrap_or(next) - a.start;
                                eprintln!(
                                    "fuzz {}: {done} inputs, {:.0}/s, {} failures",
                                    a.target,
                                    done as f64 / started.elapsed().as_secs_f64(),
                                    failures.len()
                                );
                            }
                        }
                        "p" | "e" => {
                            let (i, msg) = rest.split_once(' ').unwrap_or((rest, ""));
                            let i: u64 = i.parse().unwrap_or(0);
                            let kind = if tag == "p" { "panic" } else { "escape" };
                            let p = save(a, kind, i, msg);
                            failures.push(format!(
                                "{kind} at input {i}: {msg} (saved {})",
                                p.display()
                            ));
                        }
                        "stats" => in_stats = true,
                        _ => {}
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let cpu = cpu_ns(pid).saturating_sub(input_cpu);
                    let wall = input_wall.elapsed();
                    let why = if cpu > a.timeout * 1_000_000_000 {
                        format!("no progress in {} s of CPU time", a.timeout)
                    } else if wall > Duration::from_secs(10 * a.timeout) {
                        format!("no progress for {} s", wall.as_secs())
                    } else {
                        continue;
                    };
                    let _ = child.kill();
                    let _ = child.wait();
                    let i = current.unwrap_or(next);
                    let p = save(a, "timeout", i, &why);
                    failures.push(format!(
                        "timeout at input {i}: {why} (saved {})",
                        p.display()
                    ));
                    next = i + 1;
                    total.inputs += i - next.min(i);
                    break;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().expect("wait for the worker");
                    if finished && status.success() {
                        next = end;
                    } else {
                        let i = current.unwrap_or(next);
                        let why = format!("worker died: {status}");
                        let p = save(a, "crash", i, &why);
                        failures.push(format!("crash at input {i}: {why} (saved {})", p.display()));
                        next = i + 1;
                    }
                    break;
                }
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!("target {}", a.target);
    println!("seed {} inputs {}..{}", a.seed, a.start, end);
    println!(
        "inputs {} ({} MB) in {secs:.0} s: {:.0} inputs/s",
        a.count,
        total.bytes / 1_000_000,
        a.count as f64 / secs
    );
    println!(
        "accepted {} ({:.1}%)",
        total.ok,
        100.0 * total.ok as f64 / total.inputs.max(1) as f64
    );
    println!("kinds reached ({}):", total.kinds.len());
    for (k, v) in &total.kinds {
        println!("  {k}: {v}");
    }
    println!("error classes reached ({}):", total.errors.len());
    for (k, v) in &total.errors {
        println!("  {k}: {v}");
    }
    println!("failures: {}", failures.len());
    for f in &failures {
        println!("  {f}");
    }
    if !failures.is_empty() {
        std::process::exit(1);
    }
}
