//! The per-app lock: one reconcile, quick run, rewarm, restore or promote per app at a time.
//!
//! `flock(2)`, so the kernel drops it when the holder dies: a killed run never leaves a stale
//! lock behind, and a second run learns at once that it is busy. A lock must not be split by a
//! deletion: a `flock` on `<app>/lock` alone is held on an inode, and once somebody deletes the
//! file the next run creates a fresh one and locks *that* — two holders. So the app's lock is
//! taken on the app directory itself (which cannot be removed while it holds the app's state)
//! and then on `<app>/lock` (which other tools, e.g. `flock(1)`, may know). Every lock here is
//! taken with [`flock_verified`]: once locked, the path must still name the locked inode, else
//! the lock is on an orphan and is taken again.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
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

/// How many times [`flock_verified`] retries when the path keeps being replaced under it.
const MAX_RETRIES: u32 = 100;

/// Opens `path` (with `open`) and `flock`s it exclusively; `Ok(None)` when `wait` is false and
/// another holder has it. After the lock is taken the path is looked at again: if it no longer
/// names the inode that was locked (deleted or replaced between the open and the lock), that
/// lock protects nothing, so it is dropped and the whole sequence is repeated on the path's new
/// file. The returned lock is therefore always on the inode the path names.
pub fn flock_verified(
    path: &Path,
    wait: bool,
    open: impl Fn(&Path) -> io::Result<File>,
) -> io::Result<Option<Flock<File>>> {
    let arg = if wait {
        FlockArg::LockExclusive
    } else {
        FlockArg::LockExclusiveNonblock
    };
    for _ in 0..MAX_RETRIES {
        let file = open(path)?;
        let lock = match Flock::lock(file, arg) {
            Ok(lock) => lock,
            Err((_, Errno::EWOULDBLOCK)) => return Ok(None),
            Err((_, errno)) => return Err(io::Error::from(errno)),
        };
        let held = lock.metadata()?;
        match std::fs::symlink_metadata(path) {
            Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => return Ok(Some(lock)),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        tracing::debug!(path = %path.display(), "the locked file was replaced; locking again");
    }
    Err(io::Error::other(format!(
        "{} was replaced {MAX_RETRIES} times while being locked",
        path.display()
    )))
}

/// [`flock_verified`] on a lock file (created if needed), waiting for the holder to finish.
pub fn lock_file_wait(path: &Path) -> io::Result<Flock<File>> {
    flock_verified(path, true, open_lock_file)?
        .ok_or_else(|| io::Error::other("a blocking flock reported busy"))
}

/// Opens (creating it 0644 if needed) a lock file, never through a symlink.
pub fn open_lock_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o644)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
}

/// Opens a directory for locking, never through a symlink.
fn open_dir(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_DIRECTORY)
        .open(path)
}

/// Held until dropped.
#[derive(Debug)]
pub struct AppLock {
    _dir: Flock<File>,
    _file: Flock<File>,
    pub path: PathBuf,
}

/// Takes the app's lock; with `wait`, blocks until it is free, else fails with `Busy` at once.
pub fn acquire(app_dir: &Path, app: &str, wait: bool) -> Result<AppLock, LockError> {
    let path = app_dir.join("lock");
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| LockError::Io {
            app: app.to_owned(),
            path,
            source,
        }
    };
    let busy = |path: &Path| LockError::Busy {
        app: app.to_owned(),
        path: path.to_owned(),
    };
    std::fs::create_dir_all(app_dir).map_err(io_err(app_dir))?;
    // The directory first, always in this order: two runs never deadlock on the pair.
    let dir = flock_verified(app_dir, wait, open_dir)
        .map_err(io_err(app_dir))?
        .ok_or_else(|| busy(app_dir))?;
    let file = flock_verified(&path, wait, open_lock_file)
        .map_err(io_err(&path))?
        .ok_or_else(|| busy(&path))?;
    Ok(AppLock {
        _dir: dir,
        _file: file,
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

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

    #[test]
    fn deleting_the_lock_file_mid_run_does_not_let_a_second_run_in() {
        let d = tempfile::tempdir().unwrap();
        let first = acquire(d.path(), "demo", false).unwrap();
        std::fs::remove_file(d.path().join("lock")).unwrap();
        match acquire(d.path(), "demo", false) {
            Err(LockError::Busy { app, .. }) => assert_eq!(app, "demo"),
            other => panic!("a second holder beside the first: {other:?}"),
        }
        drop(first);
        acquire(d.path(), "demo", false).unwrap();
    }

    #[test]
    fn a_lock_taken_on_a_file_replaced_meanwhile_is_retaken_on_the_new_one() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("x.lock");
        let opens = Cell::new(0);
        // The first open races with a deleter: the file it opened is unlinked and a new one
        // created before the flock is taken.
        let lock = flock_verified(&path, false, |p| {
            let f = open_lock_file(p)?;
            opens.set(opens.get() + 1);
            if opens.get() == 1 {
                std::fs::remove_file(p)?;
                open_lock_file(p)?;
            }
            Ok(f)
        })
        .unwrap()
        .expect("free");
        assert_eq!(opens.get(), 2, "the orphan's lock was dropped and retaken");
        let on_disk = std::fs::metadata(&path).unwrap();
        assert_eq!(lock.metadata().unwrap().ino(), on_disk.ino());
        // And it really excludes a second holder of the path.
        assert!(
            flock_verified(&path, false, open_lock_file)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_symlinked_app_dir_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let elsewhere = d.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, d.path().join("demo")).unwrap();
        let e = acquire(&d.path().join("demo"), "demo", false).unwrap_err();
        assert!(matches!(e, LockError::Io { .. }), "{e}");
        assert!(!elsewhere.join("lock").exists());
    }
}
