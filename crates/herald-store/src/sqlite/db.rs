//! SQLite connections: one writer thread that commits many jobs per transaction
//! (group commit), and a pool of reader connections beside it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
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
    include_str!("0017_equality_predicates.sql"),
    include_str!("0018_gateway_incarnations.sql"),
    include_str!("0019_gateway_minutes.sql"),
    include_str!("0020_sole_recipients.sql"),
    include_str!("0021_access_changes.sql"),
];

/// How many queued write jobs one transaction takes at most.
const MAX_GROUP: usize = 512;

/// How often the checkpointer looks at the write-ahead log's size (see
/// [`checkpoint_loop`]).
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// A job of the writer thread.
trait WriteJob: Send {
    /// True for a job that changes nothing but the database (no state of its
    /// own, no side effect), so that it may run twice: first in one
    /// savepoint with the repeatable jobs beside it, and, should one of them
    /// fail after changing rows, again in a savepoint of its own. A page that
    /// many jobs change is then copied into the savepoint journal once, not
    /// once per job. Any other job runs once, in a savepoint of its own.
    fn repeatable(&self) -> bool;
    /// Runs the job and keeps its result in place of any earlier run's;
    /// true when it succeeded.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Keeps `error` as the job's result: it could not run.
    fn refuse(&mut self, error: &StoreError);
    /// Delivers the kept result once the transaction's fate is known.
    fn finish(self: Box<Self>, commit_error: Option<&StoreError>);
}

/// A write job's function, its latest result, and where that goes.
struct Job<T, F> {
    f: F,
    repeatable: bool,
    result: Option<Result<T>>,
    answer: oneshot::Sender<Result<T>>,
    /// The result is noted on the writer thread, in the order of the
    /// commits, so the latest write's result is the one that stays.
    writes: Arc<crate::WriteHealth>,
}

impl<T, F> WriteJob for Job<T, F>
where
    T: Send,
    F: FnMut(&Connection) -> Result<T> + Send,
{
    fn repeatable(&self) -> bool {
        self.repeatable
    }

    fn run(&mut self, conn: &Connection) -> bool {
        let result = guarded(|| (self.f)(conn));
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn refuse(&mut self, error: &StoreError) {
        self.result = Some(Err(error.clone()));
    }

    fn finish(self: Box<Self>, commit_error: Option<&StoreError>) {
        let result = match (commit_error, self.result) {
            (Some(e), _) => Err(e.clone()),
            (None, Some(result)) => result,
            (None, None) => Err(unavailable("the write was never run")),
        };
        self.writes.note(&result);
        let _ = self.answer.send(result);
    }
}

pub(crate) struct Db {
    writer: mpsc::UnboundedSender<Box<dyn WriteJob>>,
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
        Db::open_with(path, WalLimits::default())
    }

    /// [`Db::open`] with the checkpointer's `limits`.
    pub(crate) fn open_with(path: &Path, limits: WalLimits) -> Result<Db> {
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
        let restart = Arc::new(AtomicBool::new(false));
        let alive = Arc::downgrade(&store_open);
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let wal = PathBuf::from(wal);
        std::thread::Builder::new()
            .name("herald-sqlite-checkpoint".into())
            .spawn({
                let restart = restart.clone();
                move || checkpoint_loop(checkpointer, wal, alive, limits, restart)
            })
            .map_err(unavailable)?;
        let (writer, jobs) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("herald-sqlite-writer".into())
            .spawn(move || write_loop(conn, jobs, restart))
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
        let mut f = Some(f);
        self.send(false, move |conn: &Connection| {
            f.take().expect("a job that is not repeatable runs once")(conn)
        })
        .await
    }

    /// Like [`Db::write`], for a job that changes nothing but the database
    /// (no state of its own, no side effect): `f` may run twice, see
    /// [`WriteJob::repeatable`]. The hot writes (submissions, outcomes)
    /// are such jobs.
    pub(crate) async fn write_repeatable<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> Result<T> + Send + 'static,
    {
        self.send(true, f).await
    }

    async fn send<T, F>(&self, repeatable: bool, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> Result<T> + Send + 'static,
    {
        let (answer, rx) = oneshot::channel();
        let job = Job {
            f,
            repeatable,
            result: None,
            answer,
            writes: self.writes.clone(),
        };
        let stopped = || StoreError::Unavailable("the database writer has stopped".into());
        if self.writer.send(Box::new(job)).is_err() {
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
    /// makes one: the count of access changes, and the token and the tenant
    /// when they are not kept (see `crate::access`).
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

/// Runs `f` between `SAVEPOINT` and `RELEASE`, rolled back first when it
/// says it failed; answers what it said.
fn savepoint(conn: &Connection, f: impl FnOnce(&Connection) -> bool) -> Result<bool> {
    // Prepared once: a job costs no parsing of its own savepoint.
    let run = |statement: &str| {
        conn.prepare_cached(statement)
            .and_then(|mut s| s.execute([]))
            .map_err(unavailable)
    };
    run("SAVEPOINT job")?;
    let ok = f(conn);
    if !ok {
        run("ROLLBACK TO job")?;
    }
    run("RELEASE job")?;
    Ok(ok)
}

/// Runs a job's function. A job that panics fails like one the database
/// refused (its savepoint is rolled back): the writer thread goes on with
/// the other jobs, which every write of the node depends on.
fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!(panic = %why, "a database write failed unexpectedly and was rolled back");
        Err(StoreError::Unavailable(
            "a database write failed unexpectedly and was rolled back".into(),
        ))
    })
}

/// Runs repeatable jobs in one savepoint; should one fail after changing
/// rows, that savepoint is rolled back and each job runs again in a
/// savepoint of its own, so that only a failing job's own work is undone. A
/// job that fails having changed no row (a refusal checked before writing,
/// as a tenant's queue limit is) leaves nothing to undo, and the others go
/// on: a tenant refused at every message costs the others nothing.
fn run_together(conn: &Connection, jobs: &mut [Box<dyn WriteJob>]) {
    match savepoint(conn, |conn| all_stand(conn, jobs)) {
        Ok(true) => {}
        Ok(false) => each_alone(conn, jobs),
        // The savepoint itself failed: nothing can be said of the jobs' work.
        Err(e) => {
            for job in jobs {
                job.refuse(&e);
            }
        }
    }
}

/// Runs `jobs` one after the other: true when each succeeded or failed
/// having changed no row (stopping at the first that did not).
fn all_stand(conn: &Connection, jobs: &mut [Box<dyn WriteJob>]) -> bool {
    jobs.iter_mut().all(|job| {
        let before = conn.total_changes();
        job.run(conn) || conn.total_changes() == before
    })
}

/// Runs each job in a savepoint of its own: a failing one undoes only its own work.
fn each_alone(conn: &Connection, jobs: &mut [Box<dyn WriteJob>]) {
    for job in jobs {
        if let Err(e) = savepoint(conn, |conn| job.run(conn)) {
            job.refuse(&e);
        }
    }
}

/// Runs repeatable jobs that open their transaction, as [`run_together`]
/// does but without a savepoint: nothing else is in the transaction yet, so
/// should one fail after changing rows, the whole transaction is rolled back
/// and begun again, and each job runs again in a savepoint of its own. A
/// savepoint costs a copy of every page the jobs change (SQLite keeps the
/// page as it was, to roll back to), about a tenth of the writer's time
/// under load. An error says the transaction could not be begun again.
fn run_first_together(conn: &Connection, jobs: &mut [Box<dyn WriteJob>]) -> Result<()> {
    // A write the database failed hard (a full disk) may have rolled the
    // transaction back itself.
    if all_stand(conn, jobs) && !conn.is_autocommit() {
        return Ok(());
    }
    if !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let error = unavailable(e);
        for job in jobs {
            job.refuse(&error);
        }
        return Err(error);
    }
    each_alone(conn, jobs);
    Ok(())
}

/// When the checkpointer copies the write-ahead log into the database file,
/// and when it has the log start afresh (see [`checkpoint_loop`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct WalLimits {
    /// How often the checkpointer looks at the log.
    pub every: std::time::Duration,
    /// How large the log file may grow before it is copied: SQLite's own
    /// default, 1,000 pages of 4 KiB.
    pub copy_at_bytes: u64,
    /// How many frames (pages) the log may hold before it is made to start
    /// afresh: 4,096, 16 MiB of 4 KiB pages.
    pub restart_at_frames: i64,
}

impl Default for WalLimits {
    fn default() -> Self {
        WalLimits {
            every: CHECKPOINT_EVERY,
            copy_at_bytes: 4 * 1024 * 1024,
            restart_at_frames: 4 * 1024,
        }
    }
}

/// Copies what the write-ahead log holds into the database file once the
/// log has grown past [`WalLimits::copy_at_bytes`], beside the writer
/// rather than in one of its commits: PASSIVE never waits for the writer or
/// a reader, and takes what they do not need, so a submission never waits
/// for the database file's fsync. Looks every [`WalLimits::every`]; ends
/// when the store is closed.
///
/// SQLite syncs the database file only after a checkpoint that copied the
/// whole log, which under a steady stream of commits only the writer's
/// restart (below) does: the pages every earlier copy wrote would all wait
/// for that one fsync, in the writer's thread, holding up every commit
/// behind it for as long as the disk takes to write them (5.6 ms at the
/// median a restart in the benchmark's end to end; 0.7 ms with the syncs
/// below). So after each copy the checkpointer
/// syncs the database file itself ([`sync_database`]): the writer's sync
/// then finds little left to write.
///
/// The log starts afresh only when a write begins with all of it copied,
/// which under a steady stream of commits does not happen by chance: the
/// log would grow for as long as the load lasts (a gigabyte in ten seconds
/// of the benchmark), each frame written to new space of the file and each
/// page looked up through a longer index. So once the log holds
/// [`WalLimits::restart_at_frames`], a second pass copies what the writer
/// committed during the first, and the writer is asked (`restart`) to copy
/// the little left between two of its transactions: the next one starts the
/// log afresh, over the same space of the file.
fn checkpoint_loop(
    conn: Connection,
    wal: PathBuf,
    open: std::sync::Weak<()>,
    limits: WalLimits,
    restart: Arc<AtomicBool>,
) {
    let copy = || {
        let frames = copy_log(&conn)?;
        if let Err(error) = sync_database(&conn) {
            tracing::warn!(%error, "could not sync the database file after copying the log");
        }
        Ok::<_, rusqlite::Error>(frames)
    };
    while open.strong_count() > 0 {
        std::thread::sleep(limits.every);
        let grown = std::fs::metadata(&wal).is_ok_and(|m| m.len() >= limits.copy_at_bytes);
        if !grown {
            continue;
        }
        if copy().is_ok_and(|frames| frames >= limits.restart_at_frames) && copy().is_ok() {
            restart.store(true, Ordering::Relaxed);
        }
    }
}

/// A PASSIVE checkpoint on `conn`: answers how many frames the log holds
/// (a failure is logged).
fn copy_log(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
        .inspect_err(|error| {
            tracing::warn!(%error, "could not copy the write-ahead log into the database file");
        })
}

/// Syncs the database file `conn` has open, through SQLite's own handle on
/// it. A second descriptor of the file would not do: closing it would drop
/// every POSIX lock SQLite holds on the file in this process.
fn sync_database(conn: &Connection) -> std::result::Result<(), String> {
    use rusqlite::ffi;
    let mut file: *mut ffi::sqlite3_file = std::ptr::null_mut();
    // SAFETY: `conn` is open and only this thread uses it. FILE_POINTER
    // writes into `file` the main database's file object, which the
    // connection owns and keeps open while it is open.
    let rc = unsafe {
        ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_FILE_POINTER,
            (&raw mut file).cast(),
        )
    };
    if rc != ffi::SQLITE_OK || file.is_null() {
        return Err(format!("SQLite gave no database file (code {rc})"));
    }
    // SAFETY: `file` is that open file object; its methods take it, as
    // SQLite's pager calls them, and no statement of `conn` runs meanwhile.
    let sync = unsafe { (*file).pMethods.as_ref() }.and_then(|m| m.xSync);
    let Some(sync) = sync else {
        return Err("the database file cannot be synced".into());
    };
    // SAFETY: as above.
    match unsafe { sync(file, ffi::SQLITE_SYNC_NORMAL) } {
        ffi::SQLITE_OK => Ok(()),
        rc => Err(format!("syncing the database file failed (code {rc})")),
    }
}

/// Takes every job waiting (up to [`MAX_GROUP`]) into one transaction and one fsync.
fn write_loop(
    conn: Connection,
    mut jobs: mpsc::UnboundedReceiver<Box<dyn WriteJob>>,
    restart: Arc<AtomicBool>,
) {
    while let Some(first) = jobs.blocking_recv() {
        // What the checkpointer left of a long log (see `checkpoint_loop`):
        // the transaction below then starts the log afresh.
        if restart.swap(false, Ordering::Relaxed) {
            let _ = copy_log(&conn);
        }
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
                job.finish(Some(&error));
            }
            continue;
        }
        let mut done: Vec<Box<dyn WriteJob>> = Vec::with_capacity(batch.len());
        let mut jobs = batch.into_iter().peekable();
        // Set when the transaction was lost and could not be begun again.
        let mut lost = None;
        while let Some(first) = jobs.next() {
            let mut together = vec![first];
            if together[0].repeatable() {
                while let Some(job) = jobs.next_if(|job| job.repeatable()) {
                    together.push(job);
                }
                if done.is_empty() {
                    lost = run_first_together(&conn, &mut together).err();
                } else {
                    run_together(&conn, &mut together);
                }
            } else {
                let job = &mut together[0];
                if let Err(e) = savepoint(&conn, |conn| job.run(conn)) {
                    job.refuse(&e);
                }
            }
            done.append(&mut together);
            if lost.is_some() {
                done.extend(jobs.by_ref());
            }
        }
        let outcome = match lost {
            Some(error) => Err(error),
            None => conn.execute_batch("COMMIT").map_err(unavailable),
        };
        if outcome.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for job in done {
            job.finish(outcome.as_ref().err());
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

    /// A database of its own with a table `t` of values, and its directory.
    async fn db_with_t() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("herald.db")).unwrap();
        db.write(|c| {
            c.execute_batch("CREATE TABLE t (v INTEGER)")
                .map_err(unavailable)
        })
        .await
        .unwrap();
        (dir, db)
    }

    /// The values of the tests' table `t`, in order.
    async fn values_of_t(db: &Db) -> Vec<i64> {
        db.read(|c| {
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
        .unwrap()
    }

    /// The checkpointer syncs the database file through its connection's
    /// own file object; an in-memory database has none to sync.
    #[test]
    fn the_database_file_is_synced_through_the_connection() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir.path().join("herald.db"), false).unwrap();
        conn.execute_batch("CREATE TABLE t (v INTEGER); INSERT INTO t VALUES (1)")
            .unwrap();
        assert_eq!(sync_database(&conn), Ok(()));
        let memory = Connection::open_in_memory().unwrap();
        assert!(sync_database(&memory).is_err());
    }

    #[tokio::test]
    async fn a_panicking_write_fails_alone_and_the_writer_goes_on() {
        let (_dir, db) = db_with_t().await;
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
        let values = values_of_t(&db).await;
        assert_eq!(values, [2], "the panicking job's insert was rolled back");
    }

    #[tokio::test]
    async fn a_failing_repeatable_write_is_undone_alone_and_its_neighbours_run_again() {
        // The group opens its transaction (no savepoint around it), or
        // follows another job's write (in a savepoint).
        for opened_by_another in [false, true] {
            let (_dir, db) = db_with_t().await;
            let (runs, results) = three_in_one_group(&db, true, opened_by_another).await;
            assert_eq!(results[0].as_ref().unwrap(), &1);
            assert!(
                matches!(results[1], Err(StoreError::Conflict(_))),
                "{results:?}"
            );
            assert_eq!(results[2].as_ref().unwrap(), &3);
            // The first ran beside the failing one and again alone; the second
            // failed together and alone; the third ran alone only.
            assert_eq!(runs, [2, 2, 1]);
            let values = values_of_t(&db).await;
            let expected: &[i64] = if opened_by_another {
                &[0, 1, 3, 4]
            } else {
                &[1, 3, 4]
            };
            assert_eq!(
                values, expected,
                "only the failing job's insert was undone, once, and the jobs around it stand"
            );
        }
    }

    #[tokio::test]
    async fn a_repeatable_write_refused_before_writing_costs_its_neighbours_nothing() {
        for opened_by_another in [false, true] {
            let (_dir, db) = db_with_t().await;
            let (runs, results) = three_in_one_group(&db, false, opened_by_another).await;
            assert!(
                matches!(results[1], Err(StoreError::Conflict(_))),
                "{results:?}"
            );
            assert_eq!(runs, [1, 1, 1], "nothing ran twice");
            let expected: &[i64] = if opened_by_another {
                &[0, 1, 3, 4]
            } else {
                &[1, 3, 4]
            };
            assert_eq!(values_of_t(&db).await, expected);
        }
    }

    /// Runs three repeatable jobs in one group, each inserting its value
    /// into `t` (1, 2, 3), followed in their transaction by a job that is
    /// not repeatable (inserting 4), and preceded by another (inserting 0)
    /// when `opened_by_another`. The second fails, after its insert when
    /// `fails_after_writing`, else before it. Answers how often each of the
    /// three ran, and their results.
    async fn three_in_one_group(
        db: &Db,
        fails_after_writing: bool,
        opened_by_another: bool,
    ) -> (Vec<usize>, Vec<Result<i64>>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let job = |v: i64, runs: Arc<AtomicUsize>| {
            move |c: &Connection| -> Result<i64> {
                runs.fetch_add(1, Ordering::SeqCst);
                let refused = || Err(StoreError::Conflict("refused".to_owned()));
                if v == 2 && !fails_after_writing {
                    return refused();
                }
                c.execute("INSERT INTO t VALUES (?1)", [v])
                    .map_err(unavailable)?;
                if v == 2 {
                    return refused();
                }
                Ok(v)
            }
        };
        let runs: Vec<Arc<AtomicUsize>> = (0..3).map(|_| Arc::default()).collect();
        // The writer is held inside a job until all three are queued, so
        // that they run in one transaction, one after another.
        let (started, is_started) = std::sync::mpsc::channel();
        let (go, wait_for_go) = std::sync::mpsc::channel::<()>();
        let hold = db.write(move |_| {
            started.send(()).unwrap();
            wait_for_go.recv().unwrap();
            Ok(())
        });
        let queued = async {
            tokio::task::spawn_blocking(move || is_started.recv())
                .await
                .unwrap()
                .unwrap();
            let insert = |v: i64| {
                move |c: &Connection| {
                    c.execute("INSERT INTO t VALUES (?1)", [v])
                        .map_err(unavailable)
                }
            };
            tokio::join!(
                async {
                    if opened_by_another {
                        db.write(insert(0)).await.unwrap();
                    }
                },
                db.write_repeatable(job(1, runs[0].clone())),
                db.write_repeatable(job(2, runs[1].clone())),
                db.write_repeatable(job(3, runs[2].clone())),
                db.write(insert(4)),
                async { go.send(()).unwrap() },
            )
        };
        let (held, ((), first, second, third, after, ())) = tokio::join!(hold, queued);
        held.unwrap();
        after.unwrap();
        let counts = runs.iter().map(|r| r.load(Ordering::SeqCst)).collect();
        (counts, vec![first, second, third])
    }

    /// SQLite numbers `$n` parameters in order of first appearance and binds
    /// positional values by that number, so a shared statement must name
    /// `$1`, `$2`, … first in that order, or its values would land in the wrong columns.
    /// Under writes that never pause, the write-ahead log still starts
    /// afresh: far more goes through it than its file ever holds (without a
    /// restart the file holds everything written since the start).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_log_starts_afresh_under_writes_that_never_pause() {
        use std::time::{Duration, Instant};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.db");
        let limits = WalLimits {
            every: Duration::from_millis(5),
            copy_at_bytes: 256 * 1024,
            restart_at_frames: 128,
        };
        let db = Arc::new(Db::open_with(&path, limits).unwrap());
        db.write(|c| {
            c.execute_batch("CREATE TABLE b (v BLOB)")
                .map_err(unavailable)
        })
        .await
        .unwrap();
        let wal = dir.path().join("herald.db-wal");
        const BLOB: u64 = 64 * 1024;
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut written = 0;
        let mut in_flight = tokio::task::JoinSet::new();
        loop {
            // Four writes waiting at all times: the writer never runs dry.
            while in_flight.len() < 4 {
                let db = db.clone();
                in_flight.spawn(async move {
                    db.write(|c| {
                        c.execute_batch(
                            "INSERT INTO b VALUES (zeroblob(65536)); \
                             DELETE FROM b WHERE rowid < last_insert_rowid() - 16;",
                        )
                        .map_err(unavailable)
                    })
                    .await
                });
            }
            in_flight.join_next().await.unwrap().unwrap().unwrap();
            written += BLOB;
            let log = std::fs::metadata(&wal).unwrap().len();
            if written >= 16 * 1024 * 1024 && written > 4 * log {
                break;
            }
            assert!(
                Instant::now() < deadline && log < 256 * 1024 * 1024,
                "the log never started afresh: {written} bytes written, its file holds {log}"
            );
        }
        while let Some(write) = in_flight.join_next().await {
            write.unwrap().unwrap();
        }
        let rows: i64 = db
            .read(|c| {
                c.query_row("SELECT count(*) FROM b", [], |r| r.get(0))
                    .map_err(unavailable)
            })
            .await
            .unwrap();
        assert_eq!(rows, 17, "the newest rows stand after the restarts");
    }

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
