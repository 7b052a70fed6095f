//! File permissions of what Herald writes: the data directory is the user's
//! alone (0700), and so is every file in it (0600): the database holds sealed
//! secrets, token hashes and every message, the key file the key that opens them.

use std::path::Path;

use anyhow::Context;

/// Makes every file and directory this process creates from now on private
/// to its user (umask 077), whatever the shell's umask was: SQLite creates
/// the database's -wal and -shm files itself, as do the commands that copy
/// and rotate.
pub fn private_umask() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// Creates the data directory (and its parents) with mode 0700 when missing.
/// An existing directory is left as it is, but a warning says when others can
/// read it.
pub fn create_data_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    create_private_dir(dir)?;
    let mode = std::fs::metadata(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %dir.display(),
            mode = format!("{:o}", mode & 0o777),
            "the data directory can be read by other users; chmod 700 it"
        );
    }
    Ok(())
}

/// Creates `dir` (and its parents) with mode 0700 when missing.
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating the directory {}", dir.display()))
}

/// Creates the SQLite database file with mode 0600 when it does not exist
/// yet. SQLite gives its -wal and -shm files the database file's mode, so
/// they are private too; an empty file is a new database to SQLite. An
/// existing database (and its -wal and -shm) that others could read, as
/// earlier versions left it, is made 0600.
pub fn create_database_file(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // The data directory was created (and its mode judged) by the caller;
        // a database elsewhere gets a private directory of its own.
        create_private_dir(dir)?;
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        make_private(Path::new(&name))?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

/// Takes away other users' access to an existing file.
fn make_private(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(metadata) = std::fs::metadata(path) else {
        return Ok(());
    };
    let mode = metadata.permissions().mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("making {} private (chmod 600)", path.display()))?;
        tracing::info!(path = %path.display(), was = format!("{:o}", mode & 0o777), "made the file readable only by its owner");
    }
    Ok(())
}

/// Takes the embedded database's lock file (`herald.lock` beside the database
/// file, in the data directory by default) for as long as the returned file is
/// held, or fails at once when another process holds it. Two nodes on one
/// SQLite database would each take the other's leases for those of a crashed
/// process and give them back: only one may run. The lock is the kernel's
/// (`flock`, through rustix: `std::fs::File::try_lock` is newer than the
/// supported Rust), so it ends with the process however the process ends; the file
/// itself stays.
pub fn lock_database(database: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = database
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let path = dir.join("herald.lock");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("opening the lock file {}", path.display()))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(rustix::io::Errno::WOULDBLOCK) => anyhow::bail!(
            "another herald is running on the data directory {} (it holds {}); stop it first, or give this node a data directory of its own",
            dir.display(),
            path.display()
        ),
        Err(e) => {
            Err(std::io::Error::from(e)).with_context(|| format!("locking {}", path.display()))
        }
    }
}
