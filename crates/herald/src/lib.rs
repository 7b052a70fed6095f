//! The Herald node: configuration, start-up and graceful shutdown, shared by the
//! `herald` binary and the integration tests.

pub mod config;
mod keys;
pub mod node;

use anyhow::Context;

use config::{Cli, Command};

/// Runs a parsed command line to completion.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let settings = args.resolve().context("invalid configuration")?;
            let node = node::start(settings).await?;
            node.wait_for_signal().await;
            node.shutdown().await;
            Ok(())
        }
    }
}
