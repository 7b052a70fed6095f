//! PostgreSQL connections: a pool, the mapping of database errors to store
//! errors, and migrations that several nodes may start at the same moment.

pub(crate) use herald_core::timestamp::now_ms;
use std::time::Duration;

use deadpool_postgres::{
    GenericClient, Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime,
};
use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;

use crate::{Cause, Result, StoreError};

/// The schema, one migration per entry, applied in order and recorded in `herald_migrations`.
const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_initial", include_str!("0001_initial.sql")),
    (
        "0002_next_due_index",
        include_str!("0002_next_due_index.sql"),
    ),
    (
        "0003_console_sign_in",
        include_str!("0003_console_sign_in.sql"),
    ),
    (
        "0004_operator_tokens",
        include_str!("0004_operator_tokens.sql"),
    ),
    (
        "0005_allow_plaintext_auth",
        include_str!("0005_allow_plaintext_auth.sql"),
    ),
    (
        "0006_queued_recipients",
        include_str!("0006_queued_recipients.sql"),
    ),
    (
        "0007_lease_incarnation",
        include_str!("0007_lease_incarnation.sql"),
    ),
    ("0008_fair_claims", include_str!("0008_fair_claims.sql")),
    ("0009_smtp_ingress", include_str!("0009_smtp_ingress.sql")),
    ("0010_webhooks", include_str!("0010_webhooks.sql")),
    (
        "0011_templates_and_schedules",
        include_str!("0011_templates_and_schedules.sql"),
    ),
    ("0012_gateways", include_str!("0012_gateways.sql")),
    (
        "0013_gateway_pinning",
        include_str!("0013_gateway_pinning.sql"),
    ),
    (
        "0014_gateway_incarnations",
        include_str!("0014_gateway_incarnations.sql"),
    ),
    (
        "0015_gateway_minutes",
        include_str!("0015_gateway_minutes.sql"),
    ),
    (
        "0016_access_changes",
        include_str!("0016_access_changes.sql"),
    ),
    (
        "0017_sole_recipients",
        include_str!("0017_sole_recipients.sql"),
    ),
    (
        "0018_outbox_without_foreign_key",
        include_str!("0018_outbox_without_foreign_key.sql"),
    ),
];

/// The advisory lock every node takes while it migrates: "herald" in ASCII.
/// Nodes that start together wait for each other here instead of racing to
/// create the same tables.
const MIGRATION_LOCK: i64 = 0x6865_7261_6c64;

/// Connections one node keeps open at most. Beyond it, callers wait for a free
/// connection, which bounds the load one node can put on the server.
const MAX_CONNECTIONS: usize = 16;

/// How long opening a connection may take when the URL does not say.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a caller waits for a free connection before the database counts
/// as unavailable: long enough for a burst, short enough that a request whose
/// connections are all stuck gets an answer.
const WAIT_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string().into())
}

/// Describes a database error. tokio-postgres prints only "db error" for
/// errors the server reports, so the server's code and message are added; its
/// detail is left out because it repeats the values of the row.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

/// Any database error the caller cannot do anything about, but for a
/// foreign-key violation, which is a conflict ([`crate::REFERENCE_CONFLICT`]),
/// as on SQLite.
pub(crate) fn pg(e: tokio_postgres::Error) -> StoreError {
    if e.code() == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION) {
        return StoreError::Conflict(crate::REFERENCE_CONFLICT.to_owned());
    }
    StoreError::Unavailable(describe(&e).into())
}

/// Maps a unique or primary key violation to a conflict that says what is
/// taken, as the SQLite store does for the same statements; anything else
/// as [`pg`] does.
pub(crate) fn unique(what: impl std::fmt::Display) -> impl Fn(tokio_postgres::Error) -> StoreError {
    move |e| match e.code() {
        Some(code) if *code == tokio_postgres::error::SqlState::UNIQUE_VIOLATION => {
            StoreError::Conflict(what.to_string())
        }
        _ => pg(e),
    }
}

/// A connection from the pool.
pub(crate) async fn client(pool: &Pool) -> Result<Object> {
    pool.get().await.map_err(|e| match e {
        deadpool_postgres::PoolError::Backend(e) => pg(e),
        other => unavailable(other),
    })
}

/// A read-only transaction over one snapshot, for reads that must agree with each other.
pub(crate) async fn snapshot(c: &mut Object) -> Result<deadpool_postgres::Transaction<'_>> {
    c.build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(pg)
}

/// Runs a statement (prepared once per connection) and returns its rows.
pub(crate) async fn query(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<tokio_postgres::Row>> {
    let statement = c.prepare_cached(sql).await.map_err(pg)?;
    c.query(&statement, params).await.map_err(pg)
}

/// Runs a statement (prepared once per connection) and maps each of its
/// rows with `map`: every row's value, or the first failure.
pub(crate) async fn query_map<T>(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    map: impl Fn(&tokio_postgres::Row) -> Result<T>,
) -> Result<Vec<T>> {
    query(c, sql, params).await?.iter().map(map).collect()
}

/// Runs a statement (prepared once per connection) and returns its row, if any.
pub(crate) async fn query_opt(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<tokio_postgres::Row>> {
    let statement = c.prepare_cached(sql).await.map_err(pg)?;
    c.query_opt(&statement, params).await.map_err(pg)
}

/// Runs a statement (prepared once per connection) and maps its row with
/// `map`; not found when there is none.
pub(crate) async fn query_found<T>(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    map: impl FnOnce(&tokio_postgres::Row) -> Result<T>,
) -> Result<T> {
    let row = query_opt(c, sql, params)
        .await?
        .ok_or(StoreError::NotFound)?;
    map(&row)
}

/// Runs a statement (prepared once per connection) that writes a row and
/// returns it, and maps that row with `map`: not found when it wrote none,
/// a conflict that says `taken` when a unique key refused it.
pub(crate) async fn write_found<T>(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    taken: impl std::fmt::Display,
    map: impl FnOnce(&tokio_postgres::Row) -> Result<T>,
) -> Result<T> {
    let statement = c.prepare_cached(sql).await.map_err(pg)?;
    let row = c
        .query_opt(&statement, params)
        .await
        .map_err(unique(taken))?
        .ok_or(StoreError::NotFound)?;
    map(&row)
}

/// Runs a statement (prepared once per connection) and returns how many rows it changed.
pub(crate) async fn execute(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> std::result::Result<u64, tokio_postgres::Error> {
    let statement = c.prepare_cached(sql).await?;
    c.execute(&statement, params).await
}

/// The connection settings `url` gives, with Herald's connect timeout and
/// `application_name` where it gives none.
pub(crate) fn config(url: &str, application_name: &str) -> Result<tokio_postgres::Config> {
    let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
        StoreError::Unavailable(Cause::from(format!("the database url is not valid: {e}")))
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name(application_name);
    }
    Ok(config)
}

/// Opens the pool's connections, as deadpool's own connector does, but logs
/// a connection that ends in failure in the server's words (the driver's
/// display of its error alone is "db error"): a restarted server, or one
/// that ended the connection, says so.
struct Connector;

/// A connection being opened: its client, and the task that drives it.
type Connecting<'a> = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = std::result::Result<
                    (tokio_postgres::Client, tokio::task::JoinHandle<()>),
                    tokio_postgres::Error,
                >,
            > + Send
            + 'a,
    >,
>;

impl deadpool_postgres::Connect for Connector {
    fn connect(&self, config: &tokio_postgres::Config) -> Connecting<'_> {
        let config = config.clone();
        Box::pin(async move {
            // No TLS to the database for now: nodes reach PostgreSQL on a
            // trusted network. Supporting TLS means a rustls connector here
            // and an sslmode in the URL.
            let (client, connection) = config.connect(NoTls).await?;
            let driver = tokio::spawn(async move {
                if let Err(e) = connection.await {
                    let error = describe(&e);
                    tracing::warn!(%error, "a database connection of the pool failed; the pool opens another when it needs one");
                }
            });
            Ok((client, driver))
        })
    }
}

/// Opens a pool on the database at `url` and brings its schema up to date.
pub(crate) async fn open(url: &str) -> Result<Pool> {
    let config = config(url, "herald")?;
    // Fast recycling only checks that the connection is still open: checking
    // it with a query would cost a round trip on every use, and a connection
    // the server dropped fails its next query and is then discarded.
    let manager = Manager::from_connect(
        config,
        Connector,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(MAX_CONNECTIONS)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(WAIT_TIMEOUT))
        .build()
        .map_err(unavailable)?;
    migrate(&pool).await?;
    Ok(pool)
}

/// Applies the migrations this database lacks, all in one transaction under an
/// advisory lock, so that one node migrates and the others find it done.
async fn migrate(pool: &Pool) -> Result<()> {
    let mut conn = client(pool).await?;
    let tx = conn.transaction().await.map_err(pg)?;
    // The transaction-level lock is released by the commit or the rollback,
    // so a node that dies while migrating does not block the others.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS herald_migrations (
             version INTEGER PRIMARY KEY,
             name TEXT NOT NULL,
             applied_at BIGINT NOT NULL
         )",
    )
    .await
    .map_err(pg)?;
    let applied: Vec<i32> = tx
        .query("SELECT version FROM herald_migrations", &[])
        .await
        .map_err(pg)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if let Some(newest) = applied.iter().max() {
        if *newest as usize > MIGRATIONS.len() {
            // A newer node has migrated the database further. The older schema
            // version is a subset, so this node can run during a rolling upgrade.
            tracing::warn!(
                database = newest,
                known = MIGRATIONS.len(),
                "the database schema is newer than this node"
            );
        }
    }
    for (i, (name, sql)) in MIGRATIONS.iter().enumerate() {
        let version = i as i32 + 1;
        if applied.contains(&version) {
            continue;
        }
        tx.batch_execute(sql).await.map_err(pg)?;
        tx.execute(
            "INSERT INTO herald_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            &[&version, name, &now_ms()],
        )
        .await
        .map_err(pg)?;
        tracing::info!(migration = version, name, "applied database migration");
    }
    tx.commit().await.map_err(pg)
}
