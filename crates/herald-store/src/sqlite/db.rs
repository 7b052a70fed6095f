//! SQLite connections: one writer thread that commits many jobs per transaction
//! (group commit), and a pool of reader connections beside it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot};

use crate::{Result, StoreError};

/// The schema, one migration per entry, applied in order; `PRAGMA user_version` counts them.
const MIGRATIONS: &[&str] = &[
    include_str!("0001_initial.sql"),
    include_str!("0002_delivery_limits_and_oauth2.sql"),
    include_str!("0003_people_and_audit.sql"),
    include_str!("0004_admin_flows.sql"),
    include_str!("0005_next_due_index.sql"),
    include_str!("0006_console_sign_in.sql"),
    include_str!("0007_operator_tokens.sql"),
    include_str!("0008_allow_plaintext_auth.sql"),
    include_str!("0009_queued_recipients.sql"),
    include_str!("0010_lease_incarnation.sql"),
    include_str!("0011_fair_claims.sql"),
    include_str!("0012_smtp_ingress.sql"),
    include_str!("0013_webhooks.sql"),
    include_str!("0014_templates_and_schedules.sql"),
    include_str!("0015_gateways.sql"),
    include_str!("0016_gateway_pinning.sql"),
];

/// How many queued write jobs one transaction takes at most.
const MAX_GROUP: usize = 512;

/// How often the checkpointer looks at the write-ahead log's size (see
/// [`checkpoint_loop`]).
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// What a write job hands back to the writer: a function that delivers the
/// job's result once the transaction's fate is known.
type Finish = Box<dyn FnOnce(Option<&StoreError>) + Send>;
/// A write job runs on the connection, or is told why the transaction could not begin.
type WriteJob = Box<dyn FnOnce(std::result::Result<&Connection, &StoreError>) -> Finish + Send>;

pub(crate) struct Db {
    writer: mpsc::UnboundedSender<WriteJob>,
    readers: Arc<Mutex<Vec<Connection>>>,
    path: PathBuf,
    /// Whether the latest write failed because the database could not take it.
    pub(crate) writes: Arc<crate::WriteHealth>,
    /// Held while the store is open: the checkpointer stops once it is gone.
    _open: Arc<()>,
}

pub(crate) fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string().into())
}

fn open(path: &Path, read_only: bool) -> rusqlite::Result<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // Room for every statement the store runs, so that none is prepared
    // again (rusqlite keeps 16 by default, fewer than the writer's hot ones).
    conn.set_prepared_statement_cache_capacity(256);
    // FULL makes each commit durable in the WAL before it returns: a 202 is never
    // answered for a message a power cut could lose.
    // secure_delete zeroes what an update or delete frees, so a replaced secret
    // does not linger in free space of the file.
    // temp_store keeps each job's savepoint journal in memory: it only serves
    // rolling back a job within the open transaction, never recovery.
    conn.execute_batch(
        "PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL; PRAGMA secure_delete = ON; \
         PRAGMA temp_store = MEMORY;",
    )?;
    Ok(conn)
}

impl Db {
    /// Opens (creating when needed) the database, applies migrations and starts the writer thread.
    pub(crate) fn open(path: &Path) -> Result<Db> {
        let mut conn = open(path, false).map_err(unavailable)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(unavailable)?;
        migrate(&mut conn)?;
        // The writer never checkpoints: a commit that did would wait for the
        // database file's own fsync, and every job behind it with it.
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(unavailable)?;
        let checkpointer = open(path, false).map_err(unavailable)?;
        let store_open = Arc::new(());
        let alive = Arc::downgrade(&store_open);
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let wal = PathBuf::from(wal);
        std::thread::Builder::new()
            .name("herald-sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpointer, wal, alive))
            .map_err(unavailable)?;
        let (writer, jobs) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("herald-sqlite-writer".into())
            .spawn(move || write_loop(conn, jobs))
            .map_err(unavailable)?;
        Ok(Db {
            writer,
            readers: Arc::new(Mutex::new(Vec::new())),
            path: path.to_owned(),
            writes: Arc::default(),
            _open: store_open,
        })
    }

    /// Runs `f` inside the writer's current transaction, in a savepoint of its
    /// own, and answers once the transaction is committed. An error from `f`
    /// rolls back only its own savepoint.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        // The result is noted on the writer thread, in the order of the
        // commits, so the latest write's result is the one that stays.
        let writes = self.writes.clone();
        let job: WriteJob = Box::new(move |conn: std::result::Result<&Connection, &StoreError>| {
            let result = conn
                .map_err(Clone::clone)
                .and_then(|conn| savepoint(conn, f));
            Box::new(move |commit_error: Option<&StoreError>| {
                let result = match commit_error {
                    Some(e) => Err(e.clone()),
                    None => result,
                };
                writes.note(&result);
                let _ = tx.send(result);
            })
        });
        let stopped = || StoreError::Unavailable("the database writer has stopped".into());
        if self.writer.send(job).is_err() {
            let result = Err(stopped());
            self.writes.note(&result);
            return result;
        }
        rx.await.map_err(|_| stopped())?
    }

    /// Copies the write-ahead log into the database file and empties it, so
    /// that old versions of rewritten rows are gone from disk.
    pub(crate) async fn checkpoint(&self) -> Result<()> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let conn = open(&path, false).map_err(unavailable)?;
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .map_err(unavailable)
        })
        .await
        .map_err(unavailable)?
    }

    /// Runs `f`, a lookup of a row or two by an index, on a reader
    /// connection on the calling thread: shorter than the hop to the
    /// blocking pool and back that [`Db::read`] makes. Every API request
    /// makes two (its token, its tenant).
    pub(crate) fn read_here<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        with_reader(&self.readers, &self.path, f)
    }

    /// Runs `f` on a reader connection on the blocking pool.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let readers = self.readers.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || with_reader(&readers, &path, f))
            .await
            .map_err(unavailable)?
    }
}

/// Runs `f` on a connection of the reader pool, opening one when none is free.
fn with_reader<T>(
    readers: &Mutex<Vec<Connection>>,
    path: &Path,
    f: impl FnOnce(&Connection) -> Result<T>,
) -> Result<T> {
    let pooled = readers.lock().expect("reader pool lock").pop();
    let conn = match pooled {
        Some(conn) => conn,
        None => open(path, true).map_err(unavailable)?,
    };
    let result = f(&conn);
    readers.lock().expect("reader pool lock").push(conn);
    result
}

/// Runs one job in a savepoint of its own. A job that panics is rolled back
/// and fails like one the database refused: the writer thread goes on with
/// the other jobs, which every write of the node depends on.
fn savepoint<T>(conn: &Connection, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    // Prepared once: a job costs no parsing of its own savepoint.
    let run = |statement: &str| {
        conn.prepare_cached(statement)
            .and_then(|mut s| s.execute([]))
            .map_err(unavailable)
    };
    run("SAVEPOINT job")?;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(conn)))
        .unwrap_or_else(|panic| {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(panic = %why, "a database write failed unexpectedly and was rolled back");
            Err(StoreError::Unavailable(
                "a database write failed unexpectedly and was rolled back".into(),
            ))
        });
    if result.is_err() {
        run("ROLLBACK TO job")?;
    }
    run("RELEASE job")?;
    result
}

/// How large the write-ahead log may grow before the checkpointer copies
/// it into the database file: SQLite's own default, 1,000 pages of 4 KiB.
const CHECKPOINT_AT_BYTES: u64 = 4 * 1024 * 1024;

/// Copies what the write-ahead log holds into the database file once the
/// log has grown past [`CHECKPOINT_AT_BYTES`], beside the writer rather than
/// in one of its commits: PASSIVE never waits for the writer or a reader,
/// and takes what they do not need, so a submission never waits for the
/// database file's fsync. Once a checkpoint has taken the whole log, the
/// writer starts it afresh. Looks every [`CHECKPOINT_EVERY`]; ends when the
/// store is closed.
fn checkpoint_loop(conn: Connection, wal: PathBuf, open: std::sync::Weak<()>) {
    while open.strong_count() > 0 {
        std::thread::sleep(CHECKPOINT_EVERY);
        let grown = std::fs::metadata(&wal).is_ok_and(|m| m.len() >= CHECKPOINT_AT_BYTES);
        if !grown {
            continue;
        }
        if let Err(error) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(%error, "could not copy the write-ahead log into the database file");
        }
    }
}

/// Takes every job waiting (up to [`MAX_GROUP`]) into one transaction and one fsync.
fn write_loop(conn: Connection, mut jobs: mpsc::UnboundedReceiver<WriteJob>) {
    while let Some(first) = jobs.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            let error = unavailable(e);
            for job in batch {
                job(Err(&error))(None);
            }
            continue;
        }
        let finishers: Vec<Finish> = batch.into_iter().map(|job| job(Ok(&conn))).collect();
        let outcome = conn.execute_batch("COMMIT").map_err(unavailable);
        if outcome.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for finish in finishers {
            finish(outcome.as_ref().err());
        }
    }
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let version: usize = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(unavailable)?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction().map_err(unavailable)?;
        tx.execute_batch(sql).map_err(unavailable)?;
        tx.pragma_update(None, "user_version", i + 1)
            .map_err(unavailable)?;
        tx.commit().map_err(unavailable)?;
        tracing::info!(migration = i + 1, "applied database migration");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_write_fails_alone_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("herald.db")).unwrap();
        db.write(|c| {
            c.execute_batch("CREATE TABLE t (v INTEGER)")
                .map_err(unavailable)
        })
        .await
        .unwrap();
        let panicked = db
            .write(|c| -> Result<()> {
                c.execute_batch("INSERT INTO t VALUES (1)")
                    .map_err(unavailable)?;
                panic!("a bug in a write job")
            })
            .await;
        assert!(
            matches!(panicked, Err(StoreError::Unavailable(_))),
            "{panicked:?}"
        );
        db.write(|c| {
            c.execute_batch("INSERT INTO t VALUES (2)")
                .map_err(unavailable)
        })
        .await
        .unwrap();
        let values = db
            .read(|c| {
                let mut stmt = c
                    .prepare("SELECT v FROM t ORDER BY v")
                    .map_err(unavailable)?;
                let rows = stmt
                    .query_map([], |r| r.get::<_, i64>(0))
                    .map_err(unavailable)?;
                rows.collect::<rusqlite::Result<Vec<i64>>>()
                    .map_err(unavailable)
            })
            .await
            .unwrap();
        assert_eq!(values, [2], "the panicking job's insert was rolled back");
    }

    /// SQLite numbers `$n` parameters in order of first appearance and binds
    /// positional values by that number, so a shared statement must name
    /// `$1`, `$2`, … first in that order, or its values would land in the wrong columns.
    #[test]
    fn every_shared_statement_numbers_its_parameters_in_order() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        for statement in crate::sql::ALL {
            let prepared = conn
                .prepare(statement)
                .unwrap_or_else(|e| panic!("{statement}: {e}"));
            for i in 1..=prepared.parameter_count() {
                assert_eq!(
                    prepared.parameter_name(i),
                    Some(format!("${i}").as_str()),
                    "{statement}"
                );
            }
        }
    }
}
