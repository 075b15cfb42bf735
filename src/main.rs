//! The `imgbuild` binary: everything lives in the library; see `imgbuild::cli`.

fn main() -> std::process::ExitCode {
    imgbuild::cli::main()
}
