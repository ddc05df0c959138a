//! What a private PostgreSQL cluster stands on: the server binaries, a data directory owned by
//! the account that runs it, and a postmaster already running on that directory (adopted rather
//! than started twice).

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{
    EmbeddedError, RunAs, check_traversable, chown_tree, find_on_path, io_err, is_executable,
    pid_alive,
};

/// Directory holding `initdb` and `postgres`: from PATH (symlinks resolved,
/// so the server finds its share/lib dirs), `pg_config --bindir`, or the
/// highest version under /usr/lib/postgresql/*/bin.
pub fn find_bin_dir() -> Result<PathBuf, EmbeddedError> {
    let complete = |dir: &Path| {
        ["initdb", "postgres"]
            .iter()
            .all(|b| is_executable(&dir.join(b)))
    };
    if let Some(found) = find_on_path("postgres") {
        let real = std::fs::canonicalize(&found).ok();
        let dirs = [real.as_deref(), Some(found.as_path())].map(|p| p.and_then(Path::parent));
        if let Some(dir) = dirs.into_iter().flatten().find(|d| complete(d)) {
            return Ok(dir.to_path_buf());
        }
    }
    let pg_config = std::process::Command::new("pg_config")
        .arg("--bindir")
        .output();
    if let Ok(out) = pg_config
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if complete(&dir) {
            return Ok(dir);
        }
    }
    // Debian-style layout; version directories are "15", "16", ...
    let versions = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten();
    versions
        .filter_map(|e| {
            Some((
                e.file_name().to_str()?.parse::<u32>().ok()?,
                e.path().join("bin"),
            ))
        })
        .filter(|(_, dir)| complete(dir))
        .max_by_key(|(version, _)| *version)
        .map(|(_, dir)| dir)
        .ok_or(EmbeddedError::NoPostgres)
}

/// Creates the data dir (mode 0700, as initdb wants) and hands it to the
/// server's user, after checking that user can reach it at all.
pub(crate) fn prepare_data_dir(
    data_dir: &Path,
    run_as: Option<&RunAs>,
) -> Result<(), EmbeddedError> {
    let parent = data_dir.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(parent).map_err(io_err("create", parent))?;
    if let Some(user) = run_as {
        check_traversable(parent, user)?;
    }
    let created = !data_dir.exists();
    if created {
        let mut builder = std::fs::DirBuilder::new();
        builder
            .mode(0o700)
            .create(data_dir)
            .map_err(io_err("create", data_dir))?;
    }
    if let Some(user) = run_as {
        let owner = std::fs::metadata(data_dir)
            .map_err(io_err("inspect", data_dir))?
            .uid();
        if created || owner != user.uid {
            let (dir, name) = (data_dir.display(), &user.name);
            tracing::info!(data_dir = %dir, user = %name, "handing data dir to the PostgreSQL user");
            chown_tree(data_dir, user)?;
        }
    }
    Ok(())
}

/// (pid, port) of a live postmaster recorded in postmaster.pid. A stale file
/// (dead pid, or a pid reused by some other program) is removed, so that it
/// cannot make a new postmaster refuse to start.
pub(crate) async fn running_postmaster(data_dir: &Path) -> Option<(i32, u16)> {
    let pid_file = data_dir.join("postmaster.pid");
    // A postmaster that is starting may not have written its port line yet.
    for _ in 0..50 {
        let text = std::fs::read_to_string(&pid_file).ok()?;
        let mut lines = text.lines().map(str::trim);
        let pid: i32 = lines.next()?.parse().ok()?;
        if !pid_alive(pid) || !looks_like_postgres(pid) {
            tracing::info!(pid, file = %pid_file.display(), "removing stale postmaster.pid");
            let _ = std::fs::remove_file(&pid_file);
            return None;
        }
        if let Some(Ok(port)) = lines.nth(2).map(str::parse) {
            return Some((pid, port));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

fn looks_like_postgres(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(comm) => comm.starts_with("postgres") || comm.starts_with("postmaster"),
        // No procfs: trust the pid.
        Err(_) => true,
    }
}
