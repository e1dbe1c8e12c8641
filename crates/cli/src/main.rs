//! The `latentdb` command-line tool.

mod cli;
mod commands;
mod malloc;
mod output;
mod telemetry;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    if matches!(args.command, cli::Command::Tune(_)) {
        // Before anything is allocated: see the module docs.
        malloc::keep_freed_memory();
    }
    let telemetry = match telemetry::Telemetry::init(args.global.otlp_endpoint.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            return ExitCode::FAILURE;
        }
    };
    let code = match commands::run(args) {
        Ok(code) => code,
        Err(e) => {
            // One line that says what was wrong.
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    };
    telemetry.shutdown();
    code
}
