//! The Herald node: configuration, start-up and graceful shutdown, shared by the
//! `herald` binary and the integration tests.

pub mod config;
mod keys;
pub mod node;
pub mod smtp_check;

use anyhow::Context;

use config::{Cli, Command, KeysCommand};

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
        Command::SmtpCheck(args) => smtp_check::run(*args).await,
        Command::Presets => {
            println!(
                "{}",
                serde_json::to_string_pretty(&herald_core::presets::all())?
            );
            Ok(())
        }
        Command::Keys(KeysCommand::Generate) => {
            println!("{}", keys::generate());
            Ok(())
        }
        Command::Keys(KeysCommand::Rotate(args)) => {
            let settings = args.resolve().context("invalid configuration")?;
            let store = settings.database.open().await?;
            let key_file = config::key_file(&settings.data_dir);
            let summary = keys::rotate(&*store, settings.master_key.as_ref(), &key_file).await?;
            println!("{summary}");
            Ok(())
        }
    }
}
