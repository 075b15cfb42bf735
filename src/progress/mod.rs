//! Progress events and their renderers. Other modules send [`Event`]s to a
//! [`Sink`]; only the renderers here (and the CLI) write to the terminal.
//!
//! Plain output follows Docker's classic builder:
//!
//! ```text
//! Step 1/3 : FROM base:latest
//!  ---> df5de72bdb3b
//! Step 2/3 : COPY foo.txt /foo.txt
//!  ---> Using cache
//!  ---> 4932aede6a15
//! Successfully built 4932aede6a15
//! Successfully tagged demo:latest
//! ```
//!
//! This module imports nothing from the crate. On a terminal, [`Tty`] draws
//! live bars instead (indicatif).

mod tty;

use std::io::Write;
use std::sync::Mutex;

pub use tty::Tty;

use serde::Serialize;

/// Something worth telling the user about a build.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The build is about to start.
    Plan {
        /// Steps in the build (each stage's FROM counts as one).
        steps: usize,
        /// Whether independent stages may run at the same time.
        parallel: bool,
    },
    /// A step begins. `index` counts from 1 across every stage of the build.
    StepStarted {
        /// Stage name.
        stage: String,
        /// 1-based step number across the build.
        index: usize,
        /// Number of steps in the build.
        total: usize,
        /// Dockerfile-syntax text of the step.
        text: String,
    },
    /// The step's result came from the cache.
    StepCached {
        /// Stage name.
        stage: String,
        /// Step number.
        index: usize,
    },
    /// The step will run: says why the cache could not be used.
    StepMiss {
        /// Stage name.
        stage: String,
        /// Step number.
        index: usize,
        /// Why (e.g. "no cache entry", "--no-cache").
        reason: String,
    },
    /// Bytes processed so far by a running step.
    StepBytes {
        /// Stage name.
        stage: String,
        /// Step number.
        index: usize,
        /// Bytes so far.
        bytes: u64,
    },
    /// A line of a running command's output (stdout and stderr together).
    StepOutput {
        /// Stage name.
        stage: String,
        /// Step number.
        index: usize,
        /// The line, without its newline.
        line: String,
    },
    /// The step finished; its image ID (12 hex digits).
    StepDone {
        /// Stage name.
        stage: String,
        /// Step number.
        index: usize,
        /// Short image ID.
        image: String,
        /// Seconds it took.
        seconds: f64,
    },
    /// A non-fatal problem.
    Warning {
        /// What.
        message: String,
    },
    /// A registry's progress line: docker's pull lines and retry notices.
    /// The build's own views leave them out; [`PullLines`] prints them.
    Pull {
        /// The line, without its newline.
        line: String,
    },
    /// An image was built (short ID).
    Built {
        /// Short image ID.
        image: String,
    },
    /// An image was tagged.
    Tagged {
        /// The tag as the user wrote it.
        name: String,
    },
    /// An archive was written.
    Wrote {
        /// Path of the archive.
        path: String,
        /// Whether the file was left alone because its content was unchanged.
        unchanged: bool,
    },
}

/// Receives events; implementations must tolerate calls from several threads.
pub trait Sink: Send + Sync {
    /// Handles one event.
    fn event(&self, e: Event);
}

/// Docker-classic plain lines.
///
/// Steps of one stage are printed in order even when their work overlaps (a
/// step's lines wait until the steps before it are done); once two stages
/// run at the same time, every line is prefixed with `[stage] `.
pub struct Plain {
    out: Mutex<PlainState>,
    show_reasons: bool,
}

struct Slot {
    index: usize,
    header: String,
    header_printed: bool,
    lines: Vec<String>,
    done: bool,
}

struct PlainState {
    out: Box<dyn Write + Send>,
    stages: Vec<(String, std::collections::VecDeque<Slot>)>,
    prefix: bool,
}

impl PlainState {
    fn queue(&mut self, stage: &str) -> &mut std::collections::VecDeque<Slot> {
        let i = match self.stages.iter().position(|(s, _)| s == stage) {
            Some(i) => i,
            None => {
                self.stages.push((stage.to_string(), Default::default()));
                self.stages.len() - 1
            }
        };
        &mut self.stages[i].1
    }

    fn print(&mut self, stage: &str, line: &str) {
        // A closed pipe must not fail the build; the CLI notices it later.
        let _ = if self.prefix {
            writeln!(self.out, "[{stage}] {line}")
        } else {
            writeln!(self.out, "{line}")
        };
    }

    /// Prints what is printable for `stage`: the front slots in order.
    fn flush(&mut self, stage: &str) {
        // Another stage still has a step in progress: stages interleave.
        let busy_elsewhere = self
            .stages
            .iter()
            .any(|(s, q)| s != stage && q.iter().any(|slot| !slot.done));
        if busy_elsewhere {
            self.prefix = true;
        }
        let mut lines = Vec::new();
        let queue = self.queue(stage);
        while let Some(front) = queue.front_mut() {
            if !front.header_printed {
                front.header_printed = true;
                lines.push(front.header.clone());
            }
            lines.append(&mut front.lines);
            if front.done {
                queue.pop_front();
            } else {
                break;
            }
        }
        for l in lines {
            self.print(stage, &l);
        }
        let _ = self.out.flush();
    }

    fn attach(&mut self, stage: &str, index: usize, line: Option<String>, done: bool) {
        if let Some(slot) = self.queue(stage).iter_mut().find(|s| s.index == index) {
            if let Some(l) = line {
                slot.lines.push(l);
            }
            slot.done |= done;
        } else if let Some(l) = line {
            self.print(stage, &l);
        }
        self.flush(stage);
    }
}

impl Plain {
    /// Plain output to `out`; with `show_reasons`, cache misses say why.
    pub fn new(out: Box<dyn Write + Send>, show_reasons: bool) -> Self {
        Plain {
            out: Mutex::new(PlainState {
                out,
                stages: Vec::new(),
                prefix: false,
            }),
            show_reasons,
        }
    }
}

impl Sink for Plain {
    fn event(&self, e: Event) {
        let Ok(mut st) = self.out.lock() else { return };
        match e {
            Event::Plan { parallel, .. } => st.prefix = parallel,
            Event::StepStarted {
                stage,
                index,
                total,
                text,
            } => {
                st.queue(&stage).push_back(Slot {
                    index,
                    header: format!("Step {index}/{total} : {text}"),
                    header_printed: false,
                    lines: Vec::new(),
                    done: false,
                });
                st.flush(&stage);
            }
            Event::StepCached { stage, index } => {
                st.attach(&stage, index, Some(" ---> Using cache".into()), false);
            }
            Event::StepMiss {
                stage,
                index,
                reason,
            } => {
                let line = self
                    .show_reasons
                    .then(|| format!(" ---> Cache miss: {reason}"));
                st.attach(&stage, index, line, false);
            }
            Event::StepBytes { .. } => {}
            Event::StepOutput { stage, index, line } => {
                st.attach(&stage, index, Some(line), false);
            }
            Event::StepDone {
                stage,
                index,
                image,
                ..
            } => {
                let line = (!image.is_empty()).then(|| format!(" ---> {image}"));
                st.attach(&stage, index, line, true);
            }
            Event::Warning { message } => {
                let _ = writeln!(st.out, "WARNING: {message}");
            }
            Event::Pull { .. } => {}
            Event::Built { image } => {
                let _ = writeln!(st.out, "Successfully built {image}");
            }
            Event::Tagged { name } => {
                let _ = writeln!(st.out, "Successfully tagged {name}");
            }
            Event::Wrote { path, unchanged } => {
                let verb = if unchanged { "Unchanged" } else { "Wrote" };
                let _ = writeln!(st.out, "{verb} {path}");
            }
        }
        let _ = st.out.flush();
    }
}

/// One JSON object per line (`--progress=json`).
pub struct Json {
    out: Mutex<Box<dyn Write + Send>>,
}

impl Json {
    /// JSON lines to `out`.
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Json {
            out: Mutex::new(out),
        }
    }
}

impl Sink for Json {
    fn event(&self, e: Event) {
        if matches!(e, Event::Pull { .. }) {
            return;
        }
        if let Ok(line) = serde_json::to_string(&e)
            && let Ok(mut out) = self.out.lock()
        {
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }
}

/// Reports a warning on `sink`.
pub fn warn(sink: &dyn Sink, message: String) {
    sink.event(Event::Warning { message });
}

/// Prints [`Event::Pull`] lines to `out` as they come, and hands every
/// event on to `inner` (the build's view, which leaves them out).
pub struct PullLines {
    inner: std::sync::Arc<dyn Sink>,
    out: Mutex<Box<dyn Write + Send>>,
}

impl PullLines {
    /// Pull lines to `out`, everything to `inner`.
    pub fn new(inner: std::sync::Arc<dyn Sink>, out: Box<dyn Write + Send>) -> Self {
        PullLines {
            inner,
            out: Mutex::new(out),
        }
    }
}

impl Sink for PullLines {
    fn event(&self, e: Event) {
        if let Event::Pull { line } = &e
            && let Ok(mut out) = self.out.lock()
        {
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
        self.inner.event(e);
    }
}

/// Discards everything (library callers, tests).
pub struct Null;

impl Sink for Null {
    fn event(&self, _: Event) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn plain_reads_like_docker() {
        let buf = Buf::default();
        let p = Plain::new(Box::new(buf.clone()), false);
        p.event(Event::StepStarted {
            stage: "s".into(),
            index: 2,
            total: 3,
            text: "COPY foo.txt /foo.txt".into(),
        });
        p.event(Event::StepCached {
            stage: "s".into(),
            index: 2,
        });
        p.event(Event::StepDone {
            stage: "s".into(),
            index: 2,
            image: "4932aede6a15".into(),
            seconds: 0.0,
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "Step 2/3 : COPY foo.txt /foo.txt\n ---> Using cache\n ---> 4932aede6a15\n"
        );
    }
}
