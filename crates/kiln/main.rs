//! `kiln`: the command-line front end, and the only part of kiln that prints for humans.
//!
//! Each subcommand lives in `commands/`; `render` turns engine events and errors into text.

mod cli;
mod commands;
mod progress;
mod render;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // When kiln re-executes itself as a sandbox's init, nothing else may run first.
    kiln_sandbox::maybe_run_init();
    // Likewise when it re-executed itself as a container's supervisor.
    kiln_runtime::maybe_run_supervisor();
    // Likewise when an ordinary user's kiln re-executed itself to enter a user namespace.
    if let Err(err) = kiln_sandbox::rootless::maybe_join_user_namespace() {
        eprintln!("kiln: {err}");
        return ExitCode::from(kiln_sandbox::rootless::SETUP_FAILED);
    }
    let cli = cli::Cli::parse_from(cli::build_history_words(std::env::args_os()));
    match commands::dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            render::print_error(&err);
            ExitCode::FAILURE
        }
    }
}
