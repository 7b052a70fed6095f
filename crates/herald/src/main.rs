//! The `herald` command: parse the command line, set up logging, run the chosen subcommand.

use std::process::ExitCode;

use clap::Parser;
use herald::cli::LogFormat;

fn main() -> ExitCode {
    let cli = herald::cli::Cli::parse();
    // A renderer process runs no runtime and logs nothing: its address
    // space limit is for the templates it renders.
    if matches!(cli.command, herald::cli::Command::RenderWorker) {
        return match herald::render_worker::run() {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("{}", herald::error_report(&error));
                ExitCode::FAILURE
            }
        };
    }
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HERALD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        // Logs go to standard error; standard output carries only what a
        // person or a script reads: the one-time operator token and the address.
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        // Each line one object; the fields of the spans it happened in (the
        // `deliver` span's tenant and message id) are in `spans`, the
        // innermost in `span`.
        LogFormat::Json => logs.json().init(),
    }
    let outcome = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(herald::run(cli)));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{}", herald::error_report(&error));
            ExitCode::FAILURE
        }
    }
}
