//! The command line: `herald` and its subcommands, each with the flags it takes.

use clap::{Parser, Subcommand};

use crate::config::{KeysCommand, MigrateArgs, OperatorCommand, ServeArgs};
use crate::gateway::GatewayArgs;
use crate::smtp_check::SmtpCheckArgs;

/// Herald, a multi-tenant notification mail gateway.
#[derive(Parser, Debug)]
#[command(version, about)]
pub struct Cli {
    /// How log lines are written to standard error: text for people, json
    /// (one object per line) for log shippers.
    #[arg(long, global = true, env = "HERALD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// The format of log lines.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One line of text per event, with its spans' fields.
    Text,
    /// One JSON object per line: timestamp, level, target, fields, and the spans with their fields.
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a node: the REST API and the delivery worker.
    Serve(Box<ServeArgs>),
    /// Diagnose an SMTP server step by step (DNS, TCP, TLS, EHLO, AUTH, MAIL, RCPT) without queueing anything.
    SmtpCheck(Box<SmtpCheckArgs>),
    /// Print the ready server and provider templates for common setups.
    Presets,
    /// Manage the master keys that seal stored secrets.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Copy an embedded installation's data into an empty PostgreSQL database, in one transaction (stop the node first).
    MigrateStore(Box<MigrateArgs>),
    /// Manage the operators who sign in to the web console.
    #[command(subcommand)]
    Operator(OperatorCommand),
    /// Run a gateway inside a tenant's network: fetch the tenant's mail pinned
    /// to it from a node over HTTPS (outbound only) and deliver it there.
    Gateway(Box<GatewayArgs>),
    /// The renderer process a node starts to render tenants' templates in:
    /// reads jobs on standard input, answers on standard output.
    #[command(hide = true)]
    RenderWorker,
}
