//! A PostgreSQL database of its own for each test, created on the server at
//! `HERALD_TEST_POSTGRES_URL` and dropped when the test ends, also after a panic.

use std::time::Duration;

use crate::require::{Dependency, current_test, report, skip};

/// Where the tests find a server when `HERALD_TEST_POSTGRES_URL` is not set.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// How long dropping a test's database keeps trying (a server out of
/// connection slots while many tests run refuses the connection for a while).
const DROP_DEADLINE: Duration = Duration::from_secs(30);

/// The server the tests use: `HERALD_TEST_POSTGRES_URL`, or [`DEFAULT_POSTGRES_URL`].
pub fn server_url() -> String {
    std::env::var("HERALD_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned())
}

/// A database `herald_test_<random>` created for one test and dropped (`WITH
/// (FORCE)`, ending the connections still open on it) when this is dropped,
/// which also happens while a panicking test unwinds. Keep it alive for as long
/// as anything uses the database: declare it before the stores and nodes on it.
pub struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDatabase {
    /// Creates an empty database. When no server answers, the test is skipped
    /// ([`crate::skip`]) and this returns `None`; the caller returns too.
    pub async fn create() -> Option<TestDatabase> {
        let admin_url = server_url();
        let admin = match connect(&admin_url).await {
            Ok(admin) => admin,
            Err(error) => {
                skip(
                    Dependency::Postgres,
                    format!("PostgreSQL is not reachable at {admin_url} ({error})"),
                );
                return None;
            }
        };
        let name = format!("herald_test_{}", uuid::Uuid::now_v7().simple());
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|error| panic!("creating the test database {name}: {error}"));
        // The database is ours from here on: dropped with the guard.
        let database = TestDatabase {
            url: with_database(&admin_url, &name),
            admin_url,
            name,
        };
        // Says whose database it is, should one ever be left behind (the test
        // process killed before its destructors ran).
        let owner = format!(
            "herald-testkit: {} (pid {})",
            current_test().unwrap_or_else(|| "a test".into()),
            std::process::id()
        );
        admin
            .batch_execute(&format!(
                "COMMENT ON DATABASE {} IS '{}'",
                database.name,
                owner.replace('\'', "''")
            ))
            .await
            .unwrap_or_else(|error| panic!("commenting the test database: {error}"));
        Some(database)
    }

    /// The URL of the database, for a store or a node.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Its name, `herald_test_<random>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A client connected to the database, to look at what the code under test wrote.
    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url)
            .await
            .unwrap_or_else(|error| panic!("connecting to {}: {error}", self.name))
    }

    /// Makes the database refuse writes (`read_only`) or take them again, as
    /// a full disk would: new sessions start read-only, and the sessions open
    /// on it are ended so that their owners reconnect into such sessions.
    pub async fn set_read_only(&self, read_only: bool) {
        let admin = connect(&self.admin_url).await.unwrap();
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
        // Drop cannot await; it may run inside the test's runtime (where
        // blocking on another runtime panics) or after it shut down, so the
        // database is dropped from a thread with a small runtime of its own,
        // and this waits for it: the test process may exit right after.
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let dropping = std::thread::Builder::new()
            .name(format!("drop {name}"))
            .spawn(move || drop_database(&admin_url, &name));
        let outcome = match dropping {
            Ok(thread) => thread
                .join()
                .unwrap_or_else(|_| Err("the dropping thread panicked".into())),
            Err(error) => Err(format!("no thread to drop it: {error}")),
        };
        if let Err(error) = outcome {
            let line = format!("the test database {} was not dropped: {error}", self.name);
            // A second panic while the test unwinds would abort the process.
            if std::thread::panicking() {
                report(&line);
            } else {
                panic!("{line}");
            }
        }
    }
}

/// Drops the database, trying again until [`DROP_DEADLINE`].
fn drop_database(admin_url: &str, name: &str) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("no runtime: {error}"))?;
    runtime.block_on(async {
        let deadline = tokio::time::Instant::now() + DROP_DEADLINE;
        loop {
            let dropped = async {
                let admin = connect(admin_url).await?;
                admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
            };
            match dropped.await {
                Ok(()) => return Ok(()),
                Err(error) if tokio::time::Instant::now() >= deadline => {
                    return Err(error.to_string());
                }
                // A retry's pause, not a wait for an event: nothing signals a free slot.
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    })
}

/// A client for `url`, its connection driven by a task on the current runtime.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config: tokio_postgres::Config = url.parse()?;
    config.connect_timeout(Duration::from_secs(5));
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// The URL with its database name replaced (a query string kept).
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

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_name_replaces_the_servers_and_keeps_the_query() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "t"),
            "postgres://postgres@127.0.0.1:5432/t"
        );
        assert_eq!(
            with_database("postgres://u:p@h/postgres?sslmode=disable", "t"),
            "postgres://u:p@h/t?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "t"), "postgres://h/t");
    }
}
