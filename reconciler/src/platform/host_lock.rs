//! Host-wide locks for the few files that runs of *different* apps rewrite (the metrics file,
//! the run counters, the disk levels). Per-app work uses [`crate::platform::lock`] instead.
//!
//! `flock(2)` on a lock file beside the guarded one: released by the kernel when the holder
//! dies, so a killed run never blocks the next. Taken with [`lock::flock_verified`], so a lock
//! file deleted or replaced while a process was opening it is never half-held. (These locks are
//! held for one small file write; a lock file deleted *during* that write could let a second
//! writer in, costing at most one metrics/counter update, which the next run rewrites.)

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use nix::fcntl::Flock;

use crate::platform::lock;

#[derive(Debug, thiserror::Error)]
#[error("cannot lock {path}: {source}")]
pub struct HostLockError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// Held until dropped.
#[derive(Debug)]
pub struct HostLock {
    _flock: Flock<File>,
}

/// Blocks until `path` is locked; these locks are only held for a file write, so waiting is
/// short and always right.
pub fn acquire(path: &Path) -> Result<HostLock, HostLockError> {
    let err = |source| HostLockError {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    lock::lock_file_wait(path)
        .map(|f| HostLock { _flock: f })
        .map_err(err)
}
