//! A parallel walk of a directory tree: every directory listed and every entry inspected by
//! `pool::io_threads()` workers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

use crate::error::{Result, io};

/// Lists every directory below `src` and inspects every entry, on `pool::io_threads()`
/// workers: a cold walk is bound by the disk's latency (one inode read per lstat), which
/// more requests in flight hide. Returns each directory's children, names sorted (`None`
/// for a socket).
pub fn walk<T: Send + IsDir>(
    src: &Path,
    inspect: &(dyn Fn(&Path) -> Result<Option<T>> + Sync),
) -> Result<HashMap<PathBuf, Vec<Option<T>>>> {
    struct Queue {
        dirs: Vec<PathBuf>,
        busy: usize,
        failed: Option<crate::error::Error>,
    }
    let queue = Mutex::new(Queue {
        dirs: vec![PathBuf::new()],
        busy: 0,
        failed: None,
    });
    let wake = Condvar::new();
    let out = Mutex::new(HashMap::new());
    let list = |rel: &Path| -> Result<(Vec<Option<T>>, Vec<PathBuf>)> {
        let path = src.join(rel);
        let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(&path)
            .map_err(io("listing", &path))?
            .map(|d| d.map(|d| d.file_name()))
            .collect::<std::io::Result<_>>()
            .map_err(io("listing", &path))?;
        names.sort();
        let mut kids = Vec::with_capacity(names.len());
        let mut dirs = Vec::new();
        for n in names {
            let child = rel.join(n);
            let found = inspect(&child)?;
            if found.as_ref().is_some_and(IsDir::is_dir) {
                dirs.push(child);
            }
            kids.push(found);
        }
        Ok((kids, dirs))
    };
    std::thread::scope(|s| {
        for _ in 0..crate::pool::io_threads() {
            s.spawn(|| {
                let Ok(mut q) = queue.lock() else { return };
                loop {
                    if q.failed.is_some() {
                        break;
                    }
                    let Some(rel) = q.dirs.pop() else {
                        if q.busy == 0 {
                            break;
                        }
                        match wake.wait(q) {
                            Ok(g) => q = g,
                            Err(_) => return,
                        }
                        continue;
                    };
                    q.busy += 1;
                    drop(q);
                    let r = list(&rel);
                    q = match queue.lock() {
                        Ok(g) => g,
                        Err(_) => return,
                    };
                    q.busy -= 1;
                    match r {
                        Ok((kids, dirs)) => {
                            q.dirs.extend(dirs);
                            if let Ok(mut o) = out.lock() {
                                o.insert(rel, kids);
                            }
                        }
                        Err(e) => {
                            q.failed.get_or_insert(e);
                        }
                    }
                    wake.notify_all();
                }
                wake.notify_all();
            });
        }
    });
    let q = queue
        .into_inner()
        .map_err(|_| io("walking", src)(std::io::Error::other("a walker panicked")))?;
    if let Some(e) = q.failed {
        return Err(e);
    }
    out.into_inner()
        .map_err(|_| io("walking", src)(std::io::Error::other("a walker panicked")))
}

/// What the walk needs to know to descend.
pub trait IsDir {
    fn is_dir(&self) -> bool;
}
