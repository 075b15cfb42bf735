//! The command line: argument parsing, dispatch, printing and exit codes.
//!
//! The only module that reads the environment (once: [`env`]) or the clock,
//! prints, or uses `anyhow`. Flags become options in one pure step
//! ([`options`]); each subcommand lives in [`commands`] and only
//! orchestrates; this file only routes.

pub mod args;
mod commands;
mod context;
mod env;
mod exit;
mod options;
mod template;
mod util;

use std::process::ExitCode;

use clap::Parser;

pub use exit::Failure;

/// Runs imgbuild with the process arguments and returns its exit status.
pub fn main() -> ExitCode {
    let raw: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // The sandbox re-executes this binary for its first stage (see `exec`);
    // it is internal, so it bypasses the argument parser.
    if let (Some(stage), Some(dir)) = (raw.get(1), raw.get(2))
        && stage == crate::exec::STAGE1_ARG
    {
        return exit_status(crate::exec::stage1_main(std::path::Path::new(dir)));
    }
    if raw
        .get(1)
        .is_some_and(|a| a == crate::exec::network::HOLDER_ARG)
    {
        let mapping = raw.get(2).and_then(|m| m.to_str());
        return exit_status(crate::exec::network::holder_main(mapping));
    }
    // The one read of the environment: commands get this snapshot.
    let env = env::Env::read();
    let argv = args::with_default_subcommand(raw);
    let cli = match args::Cli::try_parse_from(argv) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let result = match &cli.command {
        args::Command::Build(a) => commands::build::run(&cli, &env, a),
        args::Command::Check(a) => commands::check::run(&cli, &env, a),
        args::Command::Load(a) => commands::load::run(&cli, &env, a),
        args::Command::Images(a) => commands::images::run(&cli, &env, a),
        args::Command::Inspect(a) => commands::inspect::run(&cli, &env, a),
        args::Command::History(a) => commands::history::run(&cli, &env, a),
        args::Command::Tag(a) => commands::tag::run(&cli, &env, a),
        args::Command::Export(a) => commands::export::run(&cli, &env, a),
        args::Command::Parse(a) => commands::parse::run(a),
        args::Command::Rmi(a) => commands::rmi::run(&cli, &env, a),
        args::Command::Prune(a) => commands::prune::run(&cli, &env, a),
        args::Command::Run(a) => commands::run::run(&cli, &env, a),
        args::Command::Pull(a) => commands::registry::pull(&cli, &env, a),
        args::Command::Push(a) => commands::registry::push(&cli, &env, a),
        args::Command::Login(a) => commands::registry::login(&env, a),
        args::Command::Logout(a) => commands::registry::logout(&env, a),
        args::Command::Store(a) => commands::store::run(&cli, &env, a),
        args::Command::Platforms(a) => commands::platforms::run(&env, a),
    };
    exit::report(result)
}

/// A child's exit status as ours (statuses above 255 cannot be passed on).
fn exit_status(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(255))
}
