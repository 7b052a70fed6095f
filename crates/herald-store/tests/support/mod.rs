//! PostgreSQL for the storage tests: a fresh database per test, dropped after it,
//! skipped in one line without a server (and failing under CI).

use std::io::Write;
use std::sync::Once;
use std::time::Duration;

/// Where the tests find a server when `HERALD_TEST_POSTGRES_URL` is not set.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database created for one test; dropped (best effort) when the guard is.
pub struct TestDatabase {
    admin_url: String,
    name: String,
    /// The URL of the new database.
    pub url: String,
}

impl TestDatabase {
    /// Creates an empty database, or returns `None` after saying (once) why
    /// the PostgreSQL tests are skipped. Under CI a missing server fails the test.
    pub async fn create() -> Option<TestDatabase> {
        let admin_url = std::env::var("HERALD_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
        let admin = match admin_connect(&admin_url).await {
            Ok(client) => client,
            Err(e) => {
                if std::env::var_os("CI").is_some() {
                    panic!(
                        "PostgreSQL tests must run in CI, but there is no server at {admin_url}: {e}"
                    );
                }
                static SKIPPED: Once = Once::new();
                SKIPPED.call_once(|| {
                    // Written to the stream itself: the test harness captures
                    // eprintln! and would hide the line.
                    let _ = writeln!(
                        std::io::stderr(),
                        "skipped: PostgreSQL tests (no server at {admin_url})"
                    );
                });
                return None;
            }
        };
        let name = format!("herald_test_{}", uuid::Uuid::now_v7().simple());
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        Some(TestDatabase {
            url: with_database(&admin_url, &name),
            admin_url,
            name,
        })
    }
}

impl TestDatabase {
    /// Makes the database refuse writes (`read_only`) or take them again, as
    /// a full disk would: new sessions start read-only, and the store's open
    /// connections are ended so that it reconnects into such sessions.
    #[allow(dead_code)] // used by the conformance suite, not by every test binary
    pub async fn set_read_only(&self, read_only: bool) {
        let admin = admin_connect(&self.admin_url).await.unwrap();
        let change = if read_only {
            "SET default_transaction_read_only = on"
        } else {
            "RESET default_transaction_read_only"
        };
        admin
            .batch_execute(&format!("ALTER DATABASE {} {change}", self.name))
            .await
            .unwrap();
        admin
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                &[&self.name],
            )
            .await
            .unwrap();
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop cannot await, and the test's runtime may be shutting down, so
        // the database is dropped from a thread with a runtime of its own.
        // FORCE ends the connections the store's pool still holds.
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                if let Ok(admin) = admin_connect(&admin_url).await {
                    let _ = admin
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

pub async fn admin_connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config: tokio_postgres::Config = url.parse()?;
    config.connect_timeout(Duration::from_secs(5));
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// The URL with its database name replaced.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority..].find('/') {
        Some(slash) => &base[..authority + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}
