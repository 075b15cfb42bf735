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
//! This module imports nothing from the crate.

use std::io::Write;
use std::sync::Mutex;

use serde::Serialize;

/// Something worth telling the user about a build.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
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
pub struct Plain {
    out: Mutex<Box<dyn Write + Send>>,
    show_reasons: bool,
}

impl Plain {
    /// Plain output to `out`; with `show_reasons`, cache misses say why.
    pub fn new(out: Box<dyn Write + Send>, show_reasons: bool) -> Self {
        Plain {
            out: Mutex::new(out),
            show_reasons,
        }
    }
}

impl Sink for Plain {
    fn event(&self, e: Event) {
        let line = match e {
            Event::StepStarted {
                index, total, text, ..
            } => format!("Step {index}/{total} : {text}"),
            Event::StepCached { .. } => " ---> Using cache".to_string(),
            Event::StepMiss { reason, .. } if self.show_reasons => {
                format!(" ---> Cache miss: {reason}")
            }
            Event::StepMiss { .. } | Event::StepBytes { .. } => return,
            Event::StepDone { image, .. } => format!(" ---> {image}"),
            Event::Warning { message } => format!("WARNING: {message}"),
            Event::Built { image } => format!("Successfully built {image}"),
            Event::Tagged { name } => format!("Successfully tagged {name}"),
            Event::Wrote { path, unchanged } => {
                if unchanged {
                    format!("Unchanged {path}")
                } else {
                    format!("Wrote {path}")
                }
            }
        };
        if let Ok(mut out) = self.out.lock() {
            // A closed pipe must not fail the build; the CLI notices it later.
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }
}

/// Only the final image ID (`--progress=quiet`, like `docker build -q`).
pub struct Quiet {
    out: Mutex<Box<dyn Write + Send>>,
}

impl Quiet {
    /// Quiet output to `out`.
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Quiet {
            out: Mutex::new(out),
        }
    }
}

impl Sink for Quiet {
    fn event(&self, e: Event) {
        if let Event::Built { image } = e
            && let Ok(mut out) = self.out.lock()
        {
            let _ = writeln!(out, "{image}");
        }
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
        if let Ok(line) = serde_json::to_string(&e)
            && let Ok(mut out) = self.out.lock()
        {
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
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
