//! Live progress on a terminal: an overall bar over one line per running step
//! (bytes archived for COPY, elapsed time for everything), and a line per
//! finished step printed above the bars.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{Event, Sink};

/// The terminal renderer.
pub struct Tty {
    state: Mutex<TtyState>,
}

struct TtyState {
    multi: MultiProgress,
    overall: Option<ProgressBar>,
    running: HashMap<(String, usize), Running>,
}

/// A step on screen.
struct Running {
    bar: ProgressBar,
    text: String,
    cached: bool,
    /// Why it missed the cache, once known.
    reason: Option<String>,
}

impl Tty {
    /// Draws on standard error.
    pub fn new() -> Self {
        Tty {
            state: Mutex::new(TtyState {
                multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                overall: None,
                running: HashMap::new(),
            }),
        }
    }
}

impl Default for Tty {
    fn default() -> Self {
        Tty::new()
    }
}

fn step_style() -> ProgressStyle {
    ProgressStyle::with_template("  {spinner} {prefix} {wide_msg} {elapsed:>4}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

impl Sink for Tty {
    fn event(&self, e: Event) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        match e {
            Event::Plan { steps, .. } => {
                let bar = st.multi.add(ProgressBar::new(steps as u64));
                bar.set_style(
                    ProgressStyle::with_template("[{bar:30}] {pos}/{len} steps {elapsed}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                );
                st.overall = Some(bar);
            }
            Event::StepStarted {
                stage,
                index,
                total,
                text,
            } => {
                let bar = st.multi.add(ProgressBar::new_spinner());
                bar.set_style(step_style());
                bar.set_prefix(format!("[{stage}] {index}/{total}"));
                bar.set_message(text.clone());
                bar.enable_steady_tick(Duration::from_millis(120));
                st.running.insert(
                    (stage, index),
                    Running {
                        bar,
                        text,
                        cached: false,
                        reason: None,
                    },
                );
            }
            Event::StepCached { stage, index } => {
                if let Some(r) = st.running.get_mut(&(stage, index)) {
                    r.cached = true;
                }
            }
            Event::StepBytes {
                stage,
                index,
                bytes,
            } => {
                if let Some(r) = st.running.get(&(stage, index)) {
                    r.bar
                        .set_message(format!("{}  {}", r.text, HumanBytes(bytes)));
                }
            }
            Event::StepOutput { stage, index, line } => {
                if let Some(r) = st.running.get(&(stage, index)) {
                    let line: String = line.chars().take(60).collect();
                    r.bar.set_message(format!("{}  │ {line}", r.text));
                }
            }
            Event::StepDone {
                stage,
                index,
                image,
                seconds,
            } => {
                if let Some(r) = st.running.remove(&(stage.clone(), index)) {
                    r.bar.finish_and_clear();
                    st.multi.remove(&r.bar);
                    let how = if r.cached {
                        "cached".to_string()
                    } else {
                        format!("{seconds:.1}s")
                    };
                    let image = if image.is_empty() {
                        String::new()
                    } else {
                        format!("  {image}")
                    };
                    // As plain output's " ---> Cache miss: REASON".
                    let why = match (&r.reason, r.cached) {
                        (Some(reason), false) => format!("\n    cache miss: {reason}"),
                        _ => String::new(),
                    };
                    let _ = st
                        .multi
                        .println(format!("✓ [{stage}] {index} {}  {how}{image}{why}", r.text));
                }
                if let Some(o) = &st.overall {
                    o.inc(1);
                }
            }
            Event::StepMiss {
                stage,
                index,
                reason,
            } => {
                if let Some(r) = st.running.get_mut(&(stage, index)) {
                    r.reason = Some(reason);
                }
            }
            Event::Warning { message } => {
                let _ = st.multi.println(format!("WARNING: {message}"));
            }
            Event::Built { image } => {
                if let Some(o) = st.overall.take() {
                    o.finish_and_clear();
                }
                let _ = st.multi.println(format!("Successfully built {image}"));
            }
            Event::Tagged { name } => {
                let _ = st.multi.println(format!("Successfully tagged {name}"));
            }
            Event::Pull { .. } => {}
            Event::Wrote { path, unchanged } => {
                let verb = if unchanged { "Unchanged" } else { "Wrote" };
                let _ = st.multi.println(format!("{verb} {path}"));
            }
        }
    }
}
