//! The unprivileged account PostgreSQL runs as when Paddock runs as root (PostgreSQL refuses
//! root), and the file-system checks and ownership changes that account needs.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::{EmbeddedError, io_err};

/// The unprivileged account a server runs as when we are root.
#[derive(Debug, Clone)]
pub(crate) struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// Who runs servers that refuse root (PostgreSQL): None when we are not root
/// (run as ourselves), else the `postgres` system user, else `nobody`.
pub(crate) fn run_as_user() -> Result<Option<RunAs>, EmbeddedError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    ["postgres", "nobody"]
        .into_iter()
        .find_map(|name| {
            let user = nix::unistd::User::from_name(name).ok()??;
            let (uid, gid) = (user.uid.as_raw(), user.gid.as_raw());
            Some(RunAs {
                name: name.into(),
                uid,
                gid,
            })
        })
        .map(Some)
        .ok_or(EmbeddedError::NoUnprivilegedUser)
}

/// Every ancestor of `dir` (itself included) must grant search (x) to the
/// user. Supplementary groups do not count: dropping to the user with
/// Command::uid clears them.
pub(crate) fn check_traversable(dir: &Path, user: &RunAs) -> Result<(), EmbeddedError> {
    for ancestor in dir.ancestors() {
        let meta = std::fs::metadata(ancestor).map_err(io_err("inspect", ancestor))?;
        let bit = if meta.uid() == user.uid {
            0o100
        } else if meta.gid() == user.gid {
            0o010
        } else {
            0o001
        };
        if meta.mode() & bit == 0 {
            let (dir, user) = (ancestor.to_path_buf(), user.name.clone());
            return Err(EmbeddedError::NotTraversable { dir, user });
        }
    }
    Ok(())
}

/// Recursive lchown; symlinks themselves are re-owned but never followed.
pub(crate) fn chown_tree(path: &Path, user: &RunAs) -> Result<(), EmbeddedError> {
    std::os::unix::fs::lchown(path, Some(user.uid), Some(user.gid))
        .map_err(io_err("chown", path))?;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        for entry in std::fs::read_dir(path).map_err(io_err("list", path))? {
            chown_tree(&entry.map_err(io_err("list", path))?.path(), user)?;
        }
    }
    Ok(())
}
