//! The per-app lock: one reconcile, quick run, rewarm, restore or promote per app at a time.
//!
//! `flock(2)` on `<state_dir>/<app>/lock`: the kernel drops it when the holder dies, so a killed
//! run never leaves a stale lock behind, and a second run learns at once that it is busy.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("app {app} is busy: another ci-warm run holds {path}")]
    Busy { app: String, path: PathBuf },
    #[error("cannot lock app {app} ({path}): {source}")]
    Io {
        app: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Held until dropped.
#[derive(Debug)]
pub struct AppLock {
    _flock: Flock<File>,
    pub path: PathBuf,
}

/// Takes the app's lock; with `wait`, blocks until it is free, else fails with `Busy` at once.
pub fn acquire(app_dir: &Path, app: &str, wait: bool) -> Result<AppLock, LockError> {
    let path = app_dir.join("lock");
    let io_err = |source| LockError::Io {
        app: app.to_owned(),
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(app_dir).map_err(io_err)?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err)?;
    let arg = if wait {
        FlockArg::LockExclusive
    } else {
        FlockArg::LockExclusiveNonblock
    };
    match Flock::lock(file, arg) {
        Ok(flock) => Ok(AppLock {
            _flock: flock,
            path,
        }),
        Err((_, Errno::EWOULDBLOCK)) => Err(LockError::Busy {
            app: app.to_owned(),
            path,
        }),
        Err((_, errno)) => Err(io_err(io::Error::from(errno))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_busy_until_first_drops() {
        let d = tempfile::tempdir().unwrap();
        let first = acquire(d.path(), "demo", false).unwrap();
        match acquire(d.path(), "demo", false) {
            Err(LockError::Busy { app, .. }) => assert_eq!(app, "demo"),
            other => panic!("expected busy, got {other:?}"),
        }
        drop(first);
        acquire(d.path(), "demo", false).unwrap();
    }
}
