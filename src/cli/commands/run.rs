//! `imgbuild run IMAGE [CMD…]`: flags to [`runner::Options`], the caller's
//! terminal in raw mode around the command, its status as ours. The
//! container itself is [`crate::runner`]'s.

use crate::cli::args::{Cli, RunArgs};
use crate::cli::env::Env;
use crate::cli::exit::Failure;
use crate::cli::options::{ArgError, HiRun, VolumeArg};
use crate::cli::util::open_store;
use crate::runner;

/// A `-v` host path resolved (it must exist): what the sandbox binds.
fn volume(v: &VolumeArg) -> Result<runner::Volume, Failure> {
    #[allow(clippy::disallowed_methods)] // the error names the path already
    let source = std::fs::canonicalize(&v.host).map_err(|e| {
        ArgError::Volume {
            spec: v.spec.clone(),
            why: format!("{}: {e}", v.host.display()),
        }
        .into_failure()
    })?;
    Ok(runner::Volume {
        source,
        target: v.target.clone(),
        readonly: v.readonly,
    })
}

/// Our terminal in raw mode until dropped.
struct RawTerminal {
    saved: rustix::termios::Termios,
}

impl RawTerminal {
    /// Puts stdin's terminal in raw mode; docker's error when stdin is not
    /// a terminal.
    fn enter() -> Result<Self, Failure> {
        use rustix::termios::{OptionalActions, tcgetattr, tcsetattr};
        let stdin = rustix::stdio::stdin();
        // docker's words and status (1).
        let saved = tcgetattr(stdin).map_err(|_| {
            Failure::Failed(anyhow::anyhow!(
                "the input device is not a TTY (-t with -i needs a terminal on stdin; drop -t)"
            ))
        })?;
        let mut raw = saved.clone();
        raw.make_raw();
        tcsetattr(stdin, OptionalActions::Now, &raw)
            .map_err(|e| anyhow::anyhow!("setting the terminal to raw mode: {e}"))?;
        Ok(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            rustix::stdio::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}

/// What `run` shows of the runner's events: its warnings, on stderr.
struct Warnings;

impl crate::progress::Sink for Warnings {
    #[allow(clippy::print_stderr)]
    fn event(&self, e: crate::progress::Event) {
        if let crate::progress::Event::Warning { message } = e {
            eprintln!("warning: {message}");
        }
    }
}

/// Docker's status for "the container could not be started".
const CANNOT_START: u8 = 125;

/// How a runner error is reported: usage (2), failure (1), or the line
/// docker prints when the container cannot start (125).
#[allow(clippy::print_stderr)]
fn failure(e: runner::Error) -> Failure {
    use crate::store::Error as StoreError;
    match e {
        runner::Error::Resolve(
            e @ (StoreError::NoSuchImage(_)
            | StoreError::Ambiguous(_)
            | StoreError::NoSuchPlatform { .. }),
        ) => Failure::Usage(e.into()),
        // The build's words for a RUN it cannot execute.
        e @ runner::Error::Emulation { .. } => {
            eprintln!("error: {e}");
            Failure::Quiet(CANNOT_START)
        }
        e @ runner::Error::NoCommand { .. } => Failure::Usage(e.into()),
        runner::Error::Isolation { image, source } => {
            eprintln!("error: {image}: {}", crate::builder::error_chain(&source));
            Failure::Quiet(CANNOT_START)
        }
        runner::Error::Sandbox { image, source } => {
            eprintln!("error: {image}: {source}");
            Failure::Quiet(CANNOT_START)
        }
        other => Failure::Failed(other.into()),
    }
}

/// Runs the command and exits with its status.
#[allow(clippy::print_stderr)]
pub fn run(cli: &Cli, env: &Env, a: &RunArgs) -> Result<(), Failure> {
    let hi = HiRun::from_low_args(a, env).map_err(ArgError::into_failure)?;
    let volumes = hi.volumes.iter().map(volume).collect::<Result<_, _>>()?;
    let store = open_store(cli, env)?;
    let warn = Warnings;
    let opts = runner::Options {
        image: hi.image,
        platform: hi.platform,
        entrypoint: hi.entrypoint,
        command: hi.command,
        env: hi.env,
        workdir: hi.workdir,
        user: hi.user,
        tty: hi.tty,
        stdin: hi.interactive,
        volumes,
        network: hi.network,
        limits: hi.limits,
        sandbox: hi.sandbox,
        host: hi.host,
    };
    let container = runner::prepare(&store, opts, &warn).map_err(failure)?;
    // -it: our terminal in raw mode while the command runs (its own
    // terminal in the sandbox does the line editing and the signals),
    // restored however the run ends.
    let raw = (hi.tty && hi.interactive)
        .then(RawTerminal::enter)
        .transpose()?;
    match container.run(raw, &warn).map_err(failure)? {
        0 => Ok(()),
        code => Err(Failure::Quiet(u8::try_from(code).unwrap_or(255))),
    }
}
