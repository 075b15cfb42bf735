//! Exit codes and error reporting: 0 success, 1 build failed, 2 usage or spec
//! error. An error is printed once, here, with its chain of causes.

use std::process::ExitCode;

use crate::diag::Diagnostic;

/// Success.
pub const OK: u8 = 0;
/// The build (or another operation) failed.
pub const FAILED: u8 = 1;
/// Bad usage or an invalid spec: nothing was done.
pub const USAGE: u8 = 2;

/// How a command failed.
#[derive(Debug)]
pub enum Failure {
    /// Spec or usage problems, already rendered as diagnostics.
    Diagnostics(Vec<Diagnostic>),
    /// Bad usage, with a message.
    Usage(anyhow::Error),
    /// The operation failed.
    Failed(anyhow::Error),
    /// Exit with this status; everything was already said.
    Quiet(u8),
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Failed(e.into())
    }
}

/// Prints a failure and maps it to an exit code.
#[allow(clippy::print_stderr)]
pub fn report(result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::from(OK),
        Err(Failure::Diagnostics(diags)) => {
            let errors = diags.iter().filter(|d| d.is_error()).count();
            for d in &diags {
                eprintln!("{d}\n");
            }
            if errors > 0 {
                eprintln!(
                    "error: {errors} problem{} found; nothing was built",
                    if errors == 1 { "" } else { "s" }
                );
                ExitCode::from(USAGE)
            } else {
                ExitCode::from(OK)
            }
        }
        Err(Failure::Usage(e)) => {
            print_chain(&e);
            ExitCode::from(USAGE)
        }
        Err(Failure::Quiet(code)) => ExitCode::from(code),
        Err(Failure::Failed(e)) => {
            if is_broken_pipe(&e) {
                return ExitCode::from(OK);
            }
            print_chain(&e);
            ExitCode::from(FAILED)
        }
    }
}

#[allow(clippy::print_stderr)]
fn print_chain(e: &anyhow::Error) {
    let mut shown = e.to_string();
    eprintln!("error: {shown}");
    for cause in e.chain().skip(1) {
        // Some messages already quote their cause; say it once.
        let text = cause.to_string();
        if !shown.contains(&text) {
            eprintln!("  caused by: {text}");
        }
        shown = text;
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
