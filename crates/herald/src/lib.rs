//! The Herald node: configuration, start-up and graceful shutdown, shared by the
//! `herald` binary and the integration tests.

pub mod cli;
pub mod config;
pub mod files;
pub mod gateway;
pub mod http;
mod keys;
pub mod metrics;
pub mod node;
mod operator_tokens;
pub mod render_worker;
pub mod smtp_check;

use anyhow::Context;

use cli::{Cli, Command};
use config::{Database, KeysCommand, OperatorCommand};

/// An error that ends a command, as its user reads it on standard error: the
/// message and each cause on a line of its own, and never a backtrace. The
/// errors that reach here are expected ones (a busy port, a database that
/// refuses the connection, a bad flag), for which a backtrace is noise, and
/// anyhow would print one whenever `RUST_BACKTRACE` is set; a bug panics,
/// and a panic still prints its backtrace.
pub fn error_report(error: &anyhow::Error) -> String {
    let mut report = format!("error: {error}");
    for cause in error.chain().skip(1) {
        report.push_str(&format!("\n  caused by: {cause}"));
    }
    report
}

/// Runs a parsed command line to completion.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    // Whatever a command writes (the data directory, the database, the key
    // file, a copy) is its user's alone.
    files::private_umask();
    match cli.command {
        Command::Serve(args) => {
            let mut settings = args.resolve().context("invalid configuration")?;
            settings.render_exe = Some(std::env::current_exe().context("finding this executable")?);
            let node = node::start(settings).await?;
            node.wait_for_signal().await;
            node.shutdown().await;
            Ok(())
        }
        Command::SmtpCheck(args) => smtp_check::run(*args).await,
        // Its limits are for a process of its own, started without a
        // runtime: `main` runs it before this.
        Command::RenderWorker => {
            anyhow::bail!("render-worker runs as a process of its own, from main")
        }
        Command::Gateway(args) => gateway::run(*args).await,
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
        Command::Operator(OperatorCommand::SetPassword(args)) => set_operator_password(*args).await,
        Command::Operator(OperatorCommand::Token(command)) => operator_tokens::run(command).await,
        Command::MigrateStore(args) => {
            let (from, to) = args.endpoints()?;
            let (source, target) = (
                Database::Sqlite(from.clone()),
                Database::Postgres(to.clone()),
            );
            let report = herald_store::migrate::copy_sqlite_to_postgres(&from, &to)
                .await
                .with_context(|| format!("copying {source} to {target}"))?;
            print_copy_report(&report, &source, &target);
            Ok(())
        }
    }
}

/// Says what `herald migrate-store` copied, and what the PostgreSQL nodes need.
fn print_copy_report(
    report: &herald_store::migrate::CopyReport,
    source: &Database,
    target: &Database,
) {
    println!("copied {source} to {target} in one transaction:");
    let width = report
        .tables
        .iter()
        .map(|(t, _)| t.len())
        .max()
        .unwrap_or(0)
        .max("table".len());
    println!("  {:<width$}  {:>10}", "table", "rows");
    for (table, rows) in &report.tables {
        println!("  {table:<width$}  {rows:>10}");
    }
    println!("  {:<width$}  {:>10}", "total", report.total());
    for table in herald_store::migrate::NOT_COPIED {
        println!(
            "  {table:<width$}  {:>10}  (per-run state: each node reports itself when it starts)",
            "-"
        );
    }
    if report.nul_replaced > 0 {
        println!(
            "{} text values held NUL characters, which PostgreSQL cannot store; each became U+FFFD",
            report.nul_replaced
        );
    }
    // Without the key the nodes would start, but every stored SMTP password
    // and client secret would fail to open at the first send.
    println!(
        "Sealed SMTP secrets were copied as they are: give the PostgreSQL nodes the same master key \
         as the embedded node (HERALD_MASTER_KEY, or a copy of its key file, master.key in its data directory)."
    );
}

/// `herald operator set-password`: hashes the password (argon2id) and stores
/// only the hash; the operator signs in to the console with it.
async fn set_operator_password(args: config::SetPasswordArgs) -> anyhow::Result<()> {
    let email = herald_core::EmailAddress::parse(args.email.trim())
        .map_err(|e| anyhow::anyhow!("--email {e}"))?;
    let settings = args.store.resolve().context("invalid configuration")?;
    let typed = match std::env::var("HERALD_OPERATOR_PASSWORD") {
        Ok(password) => password,
        Err(_) => {
            // rpassword reads from the controlling terminal; a service manager,
            // a container or a pipe has none.
            let prompt = |text: &str| {
                rpassword::prompt_password(text).map_err(|e| {
                    anyhow::anyhow!(
                        "cannot read the password from a terminal ({e}); without one, \
                         give it in HERALD_OPERATOR_PASSWORD"
                    )
                })
            };
            let first = prompt("new console password: ")?;
            let again = prompt("the same again: ")?;
            anyhow::ensure!(
                first == again,
                "the two passwords differ; nothing was changed"
            );
            first
        }
    };
    let password =
        herald_api::password::parse(&typed).map_err(|e| anyhow::anyhow!("the password {e}"))?;
    let hash = herald_api::password::hash(&password);
    if let Database::Sqlite(path) = &settings.database {
        files::create_database_file(path)?;
    }
    let store = settings.database.open().await?;
    store
        .set_operator_password(email.clone(), hash)
        .await
        .context("storing the password")?;
    println!(
        "{email} can sign in to the console at http://{}/ as an operator",
        settings.http
    );
    Ok(())
}
