//! Copies an embedded installation's data from SQLite into PostgreSQL (`herald migrate-store`).
//!
//! Every table except `nodes` is copied row by row with the same values, in an
//! order that satisfies the foreign keys, inside one PostgreSQL transaction:
//! the target ends up with everything or with nothing. The source is read in
//! one SQLite read transaction, so the copy is one consistent snapshot.
//!
//! The columns are listed here explicitly, each with how its value is carried
//! across (`Kind`). Before anything is copied, both databases' schemas are
//! compared with these lists, so a column added by a later migration and
//! forgotten here stops the copy instead of being silently dropped.
//!
//! Sealed secrets are copied as they are: the PostgreSQL nodes need the same
//! master key to open them.

use std::collections::BTreeMap;
use std::path::Path;
use std::pin::pin;
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::mpsc;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{Json, ToSql, Type};
use tokio_postgres::{NoTls, Transaction};

use crate::postgres::db::{self, describe, unavailable};
use crate::{Cause, PgStore, Result, StoreError};

/// How a column's value is carried from SQLite to PostgreSQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// TEXT on both sides.
    Text,
    /// INTEGER on SQLite, BIGINT on PostgreSQL.
    BigInt,
    /// INTEGER on SQLite, INTEGER (32 bits) on PostgreSQL.
    Int,
    /// INTEGER 0 or 1 on SQLite, BOOLEAN on PostgreSQL.
    Bool,
    /// JSON text on SQLite, JSONB on PostgreSQL.
    Jsonb,
    /// BLOB on SQLite, BYTEA on PostgreSQL.
    Bytes,
}

use Kind::{BigInt, Bool, Bytes, Int, Jsonb, Text};

impl Kind {
    /// The column's declared type in the SQLite schema.
    fn sqlite_type(self) -> &'static str {
        match self {
            Text | Jsonb => "TEXT",
            BigInt | Int | Bool => "INTEGER",
            Bytes => "BLOB",
        }
    }

    /// The column's type as PostgreSQL's information_schema names it.
    fn postgres_type(self) -> &'static str {
        match self {
            Text => "text",
            BigInt => "bigint",
            Int => "integer",
            Bool => "boolean",
            Jsonb => "jsonb",
            Bytes => "bytea",
        }
    }

    /// The type the binary COPY writes.
    fn wire_type(self) -> Type {
        match self {
            Text => Type::TEXT,
            BigInt => Type::INT8,
            Int => Type::INT4,
            Bool => Type::BOOL,
            Jsonb => Type::JSONB,
            Bytes => Type::BYTEA,
        }
    }
}

/// A table that is copied, with every one of its columns. The first column is
/// the row's id, which errors name.
struct Table {
    name: &'static str,
    columns: &'static [(&'static str, Kind)],
}

/// Every table that is copied, in an order that satisfies the foreign keys:
/// each table comes after the tables it refers to.
const TABLES: &[Table] = &[
    Table {
        name: "tenants",
        columns: &[
            ("id", Text),
            ("slug", Text),
            ("name", Text),
            ("credential_storage", Bool),
            ("notification_provider_id", Text),
            ("previous_provider_id", Text),
            ("properties_effective_from", BigInt),
            ("created_at", BigInt),
            ("queued_recipients", BigInt),
        ],
    },
    Table {
        name: "persons",
        columns: &[
            ("id", Text),
            ("tenant_id", Text),
            ("name", Text),
            ("email", Text),
            ("role", Text),
            ("created_at", BigInt),
            ("password_hash", Text),
        ],
    },
    Table {
        name: "operators",
        columns: &[
            ("id", Text),
            ("email", Text),
            ("password_hash", Text),
            ("updated_at", BigInt),
        ],
    },
    Table {
        name: "tokens",
        columns: &[
            ("id", Text),
            ("tenant_id", Text),
            ("name", Text),
            ("role", Text),
            ("hash", Text),
            ("created_at", BigInt),
            ("last_used_at", BigInt),
            ("person_id", Text),
            ("bootstrap", Bool),
            ("revoked_at", BigInt),
        ],
    },
    // Before the servers, which may name a gateway.
    Table {
        name: "gateways",
        columns: &[
            ("id", Text),
            ("tenant_id", Text),
            ("name", Text),
            ("token_hash", Text),
            ("token_created_at", BigInt),
            ("created_at", BigInt),
        ],
    },
    Table {
        name: "gateway_instances",
        columns: &[
            ("gateway_id", Text),
            ("name", Text),
            ("version", Text),
            ("address", Text),
            ("first_seen_at", BigInt),
            ("last_seen_at", BigInt),
            ("incarnation", Text),
            ("previous_incarnation", Text),
            ("previous_seen_at", BigInt),
        ],
    },
    Table {
        name: "gateway_instance_minutes",
        columns: &[
            ("gateway_id", Text),
            ("name", Text),
            ("minute", BigInt),
            ("delivered", BigInt),
            ("failed", BigInt),
        ],
    },
    Table {
        name: "smtp_servers",
        columns: &[
            ("id", Text),
            ("tenant_id", Text),
            ("name", Text),
            ("host", Text),
            ("port", Int),
            ("security", Text),
            ("requires_auth", Bool),
            ("tls_verify", Bool),
            ("tls_ca_pem", Text),
            ("tls_server_name", Text),
            ("helo_name", Text),
            ("max_connections", BigInt),
            ("max_messages_per_connection", BigInt),
            ("idle_timeout_secs", BigInt),
            ("rate_limit_per_minute", BigInt),
            ("command_timeout_secs", BigInt),
            ("created_at", BigInt),
            ("updated_at", BigInt),
            ("allow_plaintext_auth", Bool),
            ("gateway_id", Text),
        ],
    },
    Table {
        name: "smtp_accounts",
        columns: &[
            ("id", Text),
            ("tenant_id", Text),
            ("server_id", Text),
            ("username", Text),
            ("mechanism", Text),
            ("sealed_secret", Text),
            ("created_at", BigInt),
            ("oauth2_token_url", Text),
            ("oauth2_client_id", Text),
            ("oauth2_scope", Text),
            ("person_id", Text),
        ],
    },
    Table {
        name: "providers",
        columns: &[
            ("id", Text),
            ("tenant_id", Text),
            ("name", Text),
            ("smtp_server_id", Text),
            ("account_id", Text),
            ("from_address", Text),
            ("from_name", Text),
            ("reply_to", Text),
            ("fallback_recipient", Text),
            ("sender_policy", Text),
            ("created_at", BigInt),
            ("updated_at", BigInt),
        ],
    },
    Table {
        name: "messages",
        columns: &[
            ("id", Text),
            ("tenant_id", Text),
            ("idempotency_key", Text),
            ("subject", Text),
            ("text_body", Text),
            ("html_body", Text),
            ("reply_to", Text),
            ("headers", Jsonb),
            ("header_to", Jsonb),
            ("header_cc", Jsonb),
            ("used_fallback", Bool),
            ("created_at", BigInt),
            ("test_provider_id", Text),
            ("on_behalf_name", Text),
            ("on_behalf_email", Text),
            ("source", Text),
            ("smtp_credential_id", Text),
            ("smtp_connector_id", Text),
            ("client_addr", Text),
            ("raw", Bytes),
            // JSON, but TEXT on PostgreSQL too, as the store reads it.
            ("attachments", Text),
            ("send_at", BigInt),
            ("template_id", Text),
            ("template_version", Int),
        ],
    },
    Table {
        name: "recipients",
        columns: &[
            ("id", Text),
            ("message_id", Text),
            ("tenant_id", Text),
            ("address", Text),
            ("kind", Text),
            ("position", Int),
            ("status", Text),
            ("due_at", BigInt),
            ("attempts", Int),
            ("lease_owner", Text),
            ("lease_token", BigInt),
            ("priority", Int),
            ("lease_incarnation", Text),
            ("gateway_id", Text),
            ("sole", Bool),
        ],
    },
    Table {
        name: "attempts",
        columns: &[
            ("id", BigInt),
            ("recipient_id", Text),
            ("at", BigInt),
            ("node", Text),
            ("server", Text),
            ("outcome", Text),
            ("step", Text),
            ("code", Int),
            ("enhanced_code", Text),
            ("response", Text),
            ("duration_ms", BigInt),
            ("remote_addr", Text),
            ("tls_version", Text),
            ("tls_cipher", Text),
            ("provider_id", Text),
            ("config_version", BigInt),
            ("sender_policy", Text),
            // JSON, but TEXT on PostgreSQL too: it must read back exactly as written.
            ("diagnosis", Text),
        ],
    },
    Table {
        name: "captured",
        columns: &[
            ("id", BigInt),
            ("message_id", Text),
            ("tenant_id", Text),
            ("envelope_from", Text),
            ("recipients", Jsonb),
            ("content", Bytes),
            ("at", BigInt),
        ],
    },
    Table {
        name: "smtp_credentials",
        columns: &[
            ("id", Text),
            ("tenant_id", Text),
            ("name", Text),
            ("username", Text),
            ("password_hash", Text),
            ("rate_limit_per_minute", Int),
            ("created_at", BigInt),
            ("last_used_at", BigInt),
        ],
    },
    Table {
        name: "smtp_connectors",
        columns: &[
            ("id", Text),
            ("tenant_id", Text),
            ("name", Text),
            // A JSON list, TEXT on PostgreSQL too, as the store reads it.
            ("cidrs", Text),
            ("rate_limit_per_minute", Int),
            ("created_at", BigInt),
        ],
    },
    Table {
        name: "audit",
        columns: &[
            ("id", BigInt),
            ("tenant_id", Text),
            ("at", BigInt),
            ("actor", Text),
            ("token_id", Text),
            ("remote_addr", Text),
            ("action", Text),
            ("object_id", Text),
            // JSON, but TEXT on PostgreSQL too: it must read back exactly as written.
            ("details", Text),
        ],
    },
    Table {
        name: "webhooks",
        columns: &[
            ("id", Text),
            ("tenant_id", Text),
            ("url", Text),
            ("events", BigInt),
            ("enabled", Bool),
            ("sealed_secret", Text),
            ("previous_sealed_secret", Text),
            ("previous_secret_until", BigInt),
            ("disabled_reason", Text),
            ("failing_since", BigInt),
            ("created_at", BigInt),
            ("updated_at", BigInt),
        ],
    },
    Table {
        name: "webhook_outbox",
        columns: &[
            // Its id, an identity column like the attempts' id: the copied
            // values keep each message's events in order.
            ("seq", BigInt),
            ("webhook_id", Text),
            ("tenant_id", Text),
            ("event_id", Text),
            ("event_type", Text),
            ("message_id", Text),
            ("payload", Text),
            ("status", Text),
            ("due_at", BigInt),
            ("lease_until", BigInt),
            ("lease_token", BigInt),
            ("lease_owner", Text),
            ("lease_incarnation", Text),
            ("attempts", Int),
            ("created_at", BigInt),
            ("last_attempt_at", BigInt),
            ("response_status", Int),
            ("error", Text),
            ("duration_ms", BigInt),
        ],
    },
    Table {
        name: "templates",
        columns: &[
            ("id", Text),
            ("tenant_id", Text),
            ("name", Text),
            ("description", Text),
            ("version", Int),
            ("created_at", BigInt),
            ("updated_at", BigInt),
        ],
    },
    Table {
        name: "template_versions",
        columns: &[
            ("template_id", Text),
            ("version", Int),
            ("name", Text),
            ("description", Text),
            ("subject", Text),
            ("text_body", Text),
            ("html_body", Text),
            ("created_at", BigInt),
        ],
    },
    Table {
        name: "schedules",
        columns: &[
            ("id", Text),
            ("tenant_id", Text),
            ("name", Text),
            ("cron", Text),
            ("timezone", Text),
            ("template_id", Text),
            ("data", Jsonb),
            ("header_to", Jsonb),
            ("header_cc", Jsonb),
            ("bcc", Jsonb),
            ("enabled", Bool),
            ("next_run_at", BigInt),
            ("last_run_at", BigInt),
            ("created_at", BigInt),
            ("updated_at", BigInt),
        ],
    },
    Table {
        name: "schedule_runs",
        columns: &[
            ("id", Text),
            ("schedule_id", Text),
            ("tenant_id", Text),
            ("cause", Text),
            ("fire_at", BigInt),
            ("missed", Int),
            ("message_id", Text),
            ("error", Text),
            ("node", Text),
            ("created_at", BigInt),
        ],
    },
];

/// Herald's tables that are deliberately not copied: `nodes` holds per-run
/// state, which every node reports afresh when it starts; `sessions` are
/// console sign-ins, and people sign in again on the new database.
pub const NOT_COPIED: &[&str] = &["nodes", "sessions"];

/// Tables of one backend that are not data to copy: each database's own
/// migrations; SQLite's `access_changes`, its count of changes to tokens,
/// people and tenants for the nodes' lookups (PostgreSQL announces them
/// instead); and PostgreSQL's `tenant_queue_shards`, changes to the count
/// of queued recipients whose base (`tenants.queued_recipients`) is copied.
const SQLITE_BOOKKEEPING: &[&str] = &["access_changes"];
const POSTGRES_BOOKKEEPING: &[&str] = &["herald_migrations", "tenant_queue_shards"];

/// Rows in flight between the SQLite reader and the PostgreSQL writer: enough
/// to keep both busy, few enough that large captured messages do not pile up.
const ROWS_IN_FLIGHT: usize = 256;

/// What a copy moved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// Rows copied per table, in the order the tables were copied.
    pub tables: Vec<(&'static str, u64)>,
    /// Text values that held NUL characters. PostgreSQL cannot store NUL in
    /// text, so each became U+FFFD, as the PostgreSQL store does with what it writes.
    pub nul_replaced: u64,
}

impl CopyReport {
    /// The rows copied into one table, or `None` for a table that is not copied.
    pub fn rows(&self, table: &str) -> Option<u64> {
        self.tables
            .iter()
            .find(|(name, _)| *name == table)
            .map(|(_, rows)| *rows)
    }

    /// The rows copied into all tables.
    pub fn total(&self) -> u64 {
        self.tables.iter().map(|(_, rows)| rows).sum()
    }
}

/// Copies every row of the embedded database at `sqlite_path` into the
/// PostgreSQL database at `postgres_url`, all in one transaction.
///
/// The target's schema is created (or brought up to date) by the store's own
/// migrations. A target that already holds Herald data is refused, so nothing
/// is ever merged or overwritten. The source's schema is brought up to date as
/// a node starting on it would; otherwise the source is only read. Stop the
/// embedded node first: mail it accepts after the copy has begun is not copied.
pub async fn copy_sqlite_to_postgres(sqlite_path: &Path, postgres_url: &str) -> Result<CopyReport> {
    let path = sqlite_path.to_owned();
    tokio::task::spawn_blocking(move || prepare_source(&path))
        .await
        .map_err(unavailable)??;

    // The schema comes from the store's own migrations, so it is exactly what
    // the nodes will expect; the store itself is not needed after that.
    drop(PgStore::connect(postgres_url).await?);
    let mut client = connect(postgres_url).await?;
    let tx = client.transaction().await.map_err(pg)?;

    // Writers wait until the copy ends, and a second copy started at the same
    // time finds this one's rows once it gets the locks, and is refused.
    let names: Vec<&str> = TABLES.iter().map(|t| t.name).collect();
    tx.batch_execute(&format!(
        "LOCK TABLE {} IN EXCLUSIVE MODE",
        names.join(", ")
    ))
    .await
    .map_err(pg)?;
    check_schema(
        "the PostgreSQL database",
        &postgres_schema(&tx).await?,
        POSTGRES_BOOKKEEPING,
        Kind::postgres_type,
    )?;
    refuse_unless_empty(&tx).await?;

    let (rows_out, mut rows) = mpsc::channel(ROWS_IN_FLIGHT);
    let path = sqlite_path.to_owned();
    let reader = tokio::task::spawn_blocking(move || read_source(&path, &rows_out));

    let mut report = CopyReport::default();
    for table in TABLES {
        let (copied, nul_replaced) = copy_table(&tx, table, &mut rows).await?;
        report.tables.push((table.name, copied));
        report.nul_replaced += nul_replaced;
    }
    reader.await.map_err(unavailable)?;
    reset_sequences(&tx).await?;
    tx.commit().await.map_err(pg)?;
    Ok(report)
}

/// What the SQLite reader hands the PostgreSQL writer, table after table.
enum Item {
    /// One row of the current table, its values converted.
    Row(Vec<Cell>),
    /// The current table is done; the next rows belong to the next table.
    EndOfTable { nul_replaced: u64 },
    /// The reader stopped; nothing follows.
    Failed(StoreError),
}

/// One value, typed for its PostgreSQL column.
enum Cell {
    Text(Option<String>),
    BigInt(Option<i64>),
    Int(Option<i32>),
    Bool(Option<bool>),
    Json(Option<Json<serde_json::Value>>),
    Bytes(Option<Vec<u8>>),
}

impl Cell {
    fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Cell::Text(v) => v,
            Cell::BigInt(v) => v,
            Cell::Int(v) => v,
            Cell::Bool(v) => v,
            Cell::Json(v) => v,
            Cell::Bytes(v) => v,
        }
    }
}

fn pg(e: tokio_postgres::Error) -> StoreError {
    StoreError::Unavailable(describe(&e).into())
}

fn open_source(path: &Path) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(unavailable)?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(unavailable)?;
    Ok(conn)
}

/// Checks that the file is a Herald database and brings its schema up to
/// date, as a node starting on it would, so that every column the copy
/// expects exists.
fn prepare_source(path: &Path) -> Result<()> {
    // Opening a store creates a missing file: a mistyped path must not leave an empty database behind.
    if !path.is_file() {
        return Err(StoreError::Unavailable(Cause::from(format!(
            "there is no database file at {}",
            path.display()
        ))));
    }
    let version: i64 = open_source(path)?
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(unavailable)?;
    // Herald's migrations count themselves in user_version; another program's
    // database must not get Herald's tables added to it.
    if version == 0 {
        return Err(StoreError::Conflict(format!(
            "{} is not a Herald database",
            path.display()
        )));
    }
    drop(crate::SqliteStore::open(path)?);
    Ok(())
}

/// Columns of each table, with each column's type as the database names it.
type Schema = BTreeMap<String, BTreeMap<String, String>>;

fn sqlite_schema(conn: &Connection) -> Result<Schema> {
    let mut statement = conn
        .prepare(
            "SELECT m.name, c.name, c.type FROM sqlite_master m, pragma_table_info(m.name) c \
             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'",
        )
        .map_err(unavailable)?;
    let mut rows = statement.query([]).map_err(unavailable)?;
    let mut schema = Schema::new();
    while let Some(row) = rows.next().map_err(unavailable)? {
        let (table, column, kind): (String, String, String) = (
            row.get(0).map_err(unavailable)?,
            row.get(1).map_err(unavailable)?,
            row.get(2).map_err(unavailable)?,
        );
        schema.entry(table).or_default().insert(column, kind);
    }
    Ok(schema)
}

async fn postgres_schema(tx: &Transaction<'_>) -> Result<Schema> {
    let rows = tx
        .query(
            "SELECT table_name::text, column_name::text, data_type::text \
             FROM information_schema.columns WHERE table_schema = current_schema()",
            &[],
        )
        .await
        .map_err(pg)?;
    let mut schema = Schema::new();
    for row in rows {
        schema
            .entry(row.get(0))
            .or_default()
            .insert(row.get(1), row.get(2));
    }
    Ok(schema)
}

/// Compares a database's schema with the copy's column lists. Any difference
/// stops the copy: a table or column the lists lack would otherwise be lost.
fn check_schema(
    which: &str,
    found: &Schema,
    bookkeeping: &[&str],
    type_name: fn(Kind) -> &'static str,
) -> Result<()> {
    let mismatch = |what: String| {
        StoreError::Conflict(format!(
            "{which} {what}; both databases must have the schema of this version of Herald"
        ))
    };
    for table in TABLES {
        let Some(columns) = found.get(table.name) else {
            return Err(mismatch(format!("has no table {}", table.name)));
        };
        for &(column, kind) in table.columns {
            match columns.get(column) {
                None => {
                    return Err(mismatch(format!("has no column {}.{column}", table.name)));
                }
                Some(found) if !found.eq_ignore_ascii_case(type_name(kind)) => {
                    return Err(mismatch(format!(
                        "has {}.{column} as {found}, not {}",
                        table.name,
                        type_name(kind)
                    )));
                }
                Some(_) => {}
            }
        }
        if let Some(extra) = columns
            .keys()
            .find(|c| !table.columns.iter().any(|(known, _)| known == c))
        {
            return Err(mismatch(format!(
                "has a column {}.{extra} that the copy does not know",
                table.name
            )));
        }
    }
    if let Some(extra) = found.keys().find(|t| {
        !TABLES.iter().any(|known| known.name == t.as_str())
            && !NOT_COPIED.contains(&t.as_str())
            && !bookkeeping.contains(&t.as_str())
    }) {
        return Err(mismatch(format!(
            "has a table {extra} that the copy does not know"
        )));
    }
    Ok(())
}

/// Refuses a target that holds any Herald data: a copy into it would merge two
/// installations, or fail on the first id they share.
async fn refuse_unless_empty(tx: &Transaction<'_>) -> Result<()> {
    let mut held = Vec::new();
    for table in TABLES {
        let row = tx
            .query_one(&format!("SELECT count(*) FROM {}", table.name), &[])
            .await
            .map_err(pg)?;
        let rows: i64 = row.get(0);
        if rows > 0 {
            held.push(format!("{rows} in {}", table.name));
        }
    }
    if held.is_empty() {
        Ok(())
    } else {
        Err(StoreError::Conflict(format!(
            "the target database already holds Herald data (rows: {}); \
             migrate-store copies only into a database without any, so that nothing is merged or overwritten",
            held.join(", ")
        )))
    }
}

async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    let config = db::config(url, "herald migrate-store")?;
    let (client, connection) = config.connect(NoTls).await.map_err(pg)?;
    // The connection's own errors also fail the statement that is waiting on it, which reports them.
    tokio::spawn(connection);
    Ok(client)
}

/// Runs on a blocking thread: reads every table in order and hands its rows
/// over; a failure is handed over too, and ends the copy.
fn read_source(path: &Path, out: &mpsc::Sender<Item>) {
    if let Err(e) = stream_source(path, out) {
        let _ = out.blocking_send(Item::Failed(e));
    }
}

fn stream_source(path: &Path, out: &mpsc::Sender<Item>) -> Result<()> {
    let conn = open_source(path)?;
    // One read transaction: every table is read from the same snapshot, so the
    // copy is consistent even if something writes to the file meanwhile.
    conn.execute_batch("BEGIN").map_err(unavailable)?;
    check_schema(
        "the embedded database",
        &sqlite_schema(&conn)?,
        SQLITE_BOOKKEEPING,
        Kind::sqlite_type,
    )?;
    for table in TABLES {
        let columns: Vec<&str> = table.columns.iter().map(|(c, _)| *c).collect();
        // In rowid order, which is the order the rows were written in.
        let mut statement = conn
            .prepare(&format!(
                "SELECT {} FROM {} ORDER BY rowid",
                columns.join(", "),
                table.name
            ))
            .map_err(unavailable)?;
        let mut rows = statement.query([]).map_err(unavailable)?;
        let mut nul_replaced = 0;
        while let Some(row) = rows.next().map_err(unavailable)? {
            let mut cells = Vec::with_capacity(table.columns.len());
            for (i, &(column, kind)) in table.columns.iter().enumerate() {
                let value = row.get_ref(i).map_err(unavailable)?;
                let cell = convert(kind, value, &mut nul_replaced).map_err(|e| {
                    StoreError::Corrupt(format!(
                        "{}.{column} of the row with id {}: {e}",
                        table.name,
                        row_id(row)
                    ))
                })?;
                cells.push(cell);
            }
            // A closed channel means the copy stopped on its side, and it says why.
            if out.blocking_send(Item::Row(cells)).is_err() {
                return Ok(());
            }
        }
        if out
            .blocking_send(Item::EndOfTable { nul_replaced })
            .is_err()
        {
            return Ok(());
        }
    }
    Ok(())
}

/// The row's id (its first column), for errors.
fn row_id(row: &rusqlite::Row<'_>) -> String {
    match row.get_ref(0) {
        Ok(ValueRef::Text(t)) => String::from_utf8_lossy(t).into_owned(),
        Ok(ValueRef::Integer(i)) => i.to_string(),
        _ => "unknown".into(),
    }
}

/// Converts one SQLite value for its PostgreSQL column. SQLite does not
/// enforce declared types, so a value of another type is refused here
/// rather than turned into something else.
fn convert(
    kind: Kind,
    value: ValueRef<'_>,
    nul_replaced: &mut u64,
) -> std::result::Result<Cell, String> {
    Ok(match (kind, value) {
        (Text, ValueRef::Null) => Cell::Text(None),
        (Text, ValueRef::Text(bytes)) => Cell::Text(Some(text(bytes, nul_replaced)?)),
        (BigInt, ValueRef::Null) => Cell::BigInt(None),
        (BigInt, ValueRef::Integer(i)) => Cell::BigInt(Some(i)),
        (Int, ValueRef::Null) => Cell::Int(None),
        (Int, ValueRef::Integer(i)) => {
            Cell::Int(Some(i32::try_from(i).map_err(|_| {
                format!("{i} does not fit in a PostgreSQL integer")
            })?))
        }
        (Bool, ValueRef::Null) => Cell::Bool(None),
        // Herald writes 0 and 1; any other number reads as true on SQLite, so it is true here too.
        (Bool, ValueRef::Integer(i)) => Cell::Bool(Some(i != 0)),
        (Jsonb, ValueRef::Null) => Cell::Json(None),
        (Jsonb, ValueRef::Text(bytes)) => Cell::Json(Some(Json(
            serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?,
        ))),
        (Bytes, ValueRef::Null) => Cell::Bytes(None),
        (Bytes, ValueRef::Blob(bytes)) => Cell::Bytes(Some(bytes.to_vec())),
        (_, other) => {
            return Err(format!(
                "holds a value of type {} where {} was expected",
                other.data_type(),
                kind.sqlite_type()
            ));
        }
    })
}

/// Text for PostgreSQL, which cannot store NUL in text: each NUL becomes
/// U+FFFD, as the PostgreSQL store does with a remote server's reply.
fn text(bytes: &[u8], nul_replaced: &mut u64) -> std::result::Result<String, String> {
    let s = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    if s.contains('\0') {
        *nul_replaced += 1;
        Ok(s.replace('\0', "\u{fffd}"))
    } else {
        Ok(s.to_owned())
    }
}

/// Copies one table's rows, as the reader hands them over, with a binary COPY;
/// returns the rows copied and the text values whose NULs were replaced.
async fn copy_table(
    tx: &Transaction<'_>,
    table: &Table,
    rows: &mut mpsc::Receiver<Item>,
) -> Result<(u64, u64)> {
    let failed = |e: tokio_postgres::Error| {
        StoreError::Unavailable(Cause::from(format!(
            "copying {}: {}",
            table.name,
            describe(&e)
        )))
    };
    let columns: Vec<&str> = table.columns.iter().map(|(c, _)| *c).collect();
    let types: Vec<Type> = table.columns.iter().map(|(_, k)| k.wire_type()).collect();
    // COPY writes the given values into identity columns too, so ids are kept.
    let sink = tx
        .copy_in(&format!(
            "COPY {} ({}) FROM STDIN (FORMAT binary)",
            table.name,
            columns.join(", ")
        ))
        .await
        .map_err(failed)?;
    let mut writer = pin!(BinaryCopyInWriter::new(sink, &types));
    let mut sent = 0;
    let nul_replaced = loop {
        match rows.recv().await {
            Some(Item::Row(cells)) => {
                let values: Vec<&(dyn ToSql + Sync)> = cells.iter().map(Cell::as_sql).collect();
                writer.as_mut().write(&values).await.map_err(failed)?;
                sent += 1;
            }
            Some(Item::EndOfTable { nul_replaced }) => break nul_replaced,
            Some(Item::Failed(e)) => return Err(e),
            None => {
                return Err(StoreError::Unavailable(
                    "the reader of the embedded database stopped unexpectedly".into(),
                ));
            }
        }
    };
    let copied = writer.as_mut().finish().await.map_err(failed)?;
    if copied != sent {
        return Err(StoreError::Unavailable(Cause::from(format!(
            "copying {}: {sent} rows were sent but {copied} arrived",
            table.name
        ))));
    }
    Ok((copied, nul_replaced))
}

/// Moves every identity or serial column's sequence past the copied ids, so
/// that the next row a node inserts gets max(id) + 1 and no id is used twice.
async fn reset_sequences(tx: &Transaction<'_>) -> Result<()> {
    let names: Vec<&str> = TABLES.iter().map(|t| t.name).collect();
    let generated = tx
        .query(
            "SELECT table_name::text, column_name::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name::text = ANY($1::text[]) \
             AND (is_identity = 'YES' OR column_default LIKE 'nextval(%')",
            &[&names],
        )
        .await
        .map_err(pg)?;
    for row in generated {
        let (table, column): (String, String) = (row.get(0), row.get(1));
        // Not called: the next value is exactly max(id) + 1, or 1 for an empty table.
        tx.query_one(
            &format!(
                "SELECT setval(pg_get_serial_sequence($1, $2), COALESCE(MAX(\"{column}\"), 0) + 1, false) \
                 FROM \"{table}\""
            ),
            &[&table, &column],
        )
        .await
        .map_err(pg)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The column lists cover the SQLite schema after all its migrations,
    /// with the declared types; this runs without a PostgreSQL server.
    #[test]
    fn the_column_lists_match_the_sqlite_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.db");
        drop(crate::SqliteStore::open(&path).unwrap());
        let schema = sqlite_schema(&open_source(&path).unwrap()).unwrap();
        check_schema(
            "the embedded database",
            &schema,
            SQLITE_BOOKKEEPING,
            Kind::sqlite_type,
        )
        .unwrap();
    }

    #[test]
    fn every_table_starts_with_its_id() {
        for table in TABLES {
            let id = match table.name {
                "webhook_outbox" => "seq",
                // Keyed by its template and version.
                "template_versions" => "template_id",
                // Keyed by its gateway and name.
                "gateway_instances" | "gateway_instance_minutes" => "gateway_id",
                _ => "id",
            };
            assert_eq!(table.columns[0].0, id, "{}", table.name);
        }
    }

    #[test]
    fn values_are_converted_or_refused() {
        let mut nul = 0;
        assert!(matches!(
            convert(Bool, ValueRef::Integer(1), &mut nul),
            Ok(Cell::Bool(Some(true)))
        ));
        assert!(matches!(
            convert(Text, ValueRef::Text(b"a\0b"), &mut nul),
            Ok(Cell::Text(Some(s))) if s == "a\u{fffd}b"
        ));
        assert_eq!(nul, 1);
        assert!(convert(Int, ValueRef::Integer(i64::MAX), &mut nul).is_err());
        assert!(convert(Jsonb, ValueRef::Text(b"{"), &mut nul).is_err());
        assert!(convert(BigInt, ValueRef::Text(b"1"), &mut nul).is_err());
        assert!(convert(Bytes, ValueRef::Real(1.0), &mut nul).is_err());
    }
}
