//! Where each phase's data lives — a fresh SQLite file in a temporary directory,
//! or a fresh PostgreSQL database created next to the one `--database-url`
//! names — and how nodes are started on it in this process.

use std::path::Path;

use anyhow::Context;
use herald::config::{Database, ServeArgs, Settings};
use herald::node::Node;
use herald_core::Secret;
use tempfile::TempDir;
use tokio_postgres::NoTls;

/// The operator token every benchmark node accepts from its first start.
pub const OPERATOR: &str = "hrld_bench_operator_token_0123456789abcdef";

/// A fresh store for one phase, removed again by [`Place::remove`].
pub struct Place {
    /// The data directory: the SQLite file, and the master key file every node
    /// of the phase shares (so they can all open what another sealed).
    pub dir: TempDir,
    /// The PostgreSQL database made for the phase: `(admin URL, name, URL)`.
    postgres: Option<(String, String, String)>,
}

/// How a node of a phase is started.
pub struct NodeSpec<'a> {
    pub name: &'a str,
    /// Whether the node delivers; an API-only node only queues.
    pub worker: bool,
    /// Messages the node's worker delivers at once.
    pub concurrency: usize,
}

impl Place {
    /// A fresh place: SQLite without `admin_url`; with it, a new database named
    /// after the phase, created through the administrative URL.
    pub async fn fresh(admin_url: Option<&str>, phase: &str) -> anyhow::Result<Place> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("herald-bench-{phase}-"))
            .tempdir()
            .context("creating a temporary directory")?;
        let postgres = match admin_url {
            None => None,
            Some(admin) => {
                let name = format!("herald_bench_{phase}_{}", unique());
                let client = connect(admin).await?;
                client
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .await
                    .with_context(|| format!("creating the database {name}"))?;
                let (base, _) = admin
                    .rsplit_once('/')
                    .context("--database-url must end with a database name")?;
                Some((admin.to_owned(), name.clone(), format!("{base}/{name}")))
            }
        };
        Ok(Place { dir, postgres })
    }

    /// The database URL nodes and stores use.
    pub fn database_url(&self) -> String {
        match &self.postgres {
            Some((_, _, url)) => url.clone(),
            None => format!("sqlite://{}", self.dir.path().join("herald.db").display()),
        }
    }

    /// The settings of a node on this place: port 0, loopback SMTP servers
    /// allowed, a lease far longer than any phase, and the bootstrap token.
    pub fn settings(&self, spec: &NodeSpec<'_>) -> anyhow::Result<Settings> {
        let args = ServeArgs {
            http: Some("127.0.0.1:0".parse().expect("a valid address")),
            data_dir: Some(self.dir.path().to_owned()),
            database_url: Some(self.database_url()),
            node_name: Some(spec.name.to_owned()),
            lease: Some("10m".into()),
            smtp_timeout: Some("30s".into()),
            // The sink listens on loopback, which tenants' servers may not use by default.
            egress_allow: Some("127.0.0.0/8".into()),
            roles: Some(if spec.worker { "api,worker" } else { "api" }.into()),
            concurrency: Some(spec.concurrency),
            ..ServeArgs::default()
        };
        let mut settings = args.resolve()?;
        settings.bootstrap_token = Some(Secret::new(OPERATOR));
        // The key is the file in the shared data directory, whatever the environment says.
        settings.master_key = None;
        Ok(settings)
    }

    /// Starts a node on this place in this process.
    pub async fn start(&self, spec: &NodeSpec<'_>) -> anyhow::Result<Node> {
        herald::node::start(self.settings(spec)?).await
    }

    /// Opens the store directly, for the claim measurement.
    pub async fn open_store(&self) -> anyhow::Result<std::sync::Arc<dyn herald_store::Store>> {
        Database::parse(&self.database_url())?.open().await
    }

    /// Size of the SQLite files in MiB (0 on PostgreSQL).
    pub fn sqlite_mib(&self) -> f64 {
        if self.postgres.is_some() {
            return 0.0;
        }
        dir_bytes(self.dir.path()) as f64 / (1024.0 * 1024.0)
    }

    /// Removes the directory and drops the PostgreSQL database.
    pub async fn remove(self) {
        if let Some((admin, name, _)) = &self.postgres {
            match connect(admin).await {
                Ok(client) => {
                    if let Err(error) = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await
                    {
                        eprintln!("could not drop the benchmark database {name}: {error}");
                    }
                }
                Err(error) => eprintln!("could not drop the benchmark database {name}: {error}"),
            }
        }
    }
}

/// Places whose PostgreSQL databases are dropped only at the end of the run.
///
/// A `PgStore` keeps its LISTEN task (one per store, for the life of the
/// process) reconnecting after its database is gone, and warns each time; the
/// databases are dropped together just before the run ends to keep those
/// warnings out of the phases. SQLite places go at once.
#[derive(Default)]
pub struct Leftovers(Vec<Place>);

impl Leftovers {
    /// Removes an SQLite place now, or keeps a PostgreSQL one for [`Leftovers::remove_all`].
    pub async fn retire(&mut self, place: Place) {
        if place.postgres.is_some() {
            self.0.push(place);
        } else {
            place.remove().await;
        }
    }

    /// Drops every database kept.
    pub async fn remove_all(self) {
        for place in self.0 {
            place.remove().await;
        }
    }
}

/// Connects to PostgreSQL without TLS (the benchmark stays on this machine).
async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .context("connecting to PostgreSQL with --database-url")?;
    tokio::spawn(connection);
    Ok(client)
}

/// A name part no earlier run used: the time and the process id.
fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos:x}_{}", std::process::id())
}

fn dir_bytes(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
