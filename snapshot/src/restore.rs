//! Restore: make a target directory identical to one volume of a verified snapshot.
//!
//! Extra entries are removed, changed ones rewritten, and files whose type, size and mtime
//! already match are left alone (rsync's quick check), so restoring onto a barely changed volume
//! is fast. Metadata is reapplied to everything. Nothing in the target is ever followed: a
//! symlink where the snapshot has a directory is replaced, not entered.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::copy;
use crate::error::{Error, Result, io};
use crate::manifest::{Entry, Kind, Manifest, VOLUMES};
use crate::meta;
use crate::publish;
use crate::take::{Summary, apply_all, mknod};
use crate::verify::verify;

/// The volume names a snapshot holds.
pub fn volume_names(dir: &Path) -> Result<Vec<String>> {
    Ok(Manifest::load(dir)?
        .volumes
        .into_iter()
        .map(|v| v.name)
        .collect())
}

/// Verifies `dir`, then makes `target` identical to its volume `name`.
pub fn restore(dir: &Path, name: &str, target: &Path) -> Result<Summary> {
    let started = Instant::now();
    let report = verify(dir)?;
    if !report.problems.is_empty() {
        return Err(Error::Corrupt {
            dir: dir.to_owned(),
            problems: report.problems,
        });
    }
    let m = Manifest::load(dir)?;
    let vol = m.volume(name).ok_or_else(|| Error::NoVolume {
        dir: dir.to_owned(),
        name: name.to_owned(),
    })?;
    let src_root = dir.join(VOLUMES).join(name);
    std::fs::create_dir_all(target).map_err(io("creating", target))?;
    let by_path: HashMap<PathBuf, &Entry> = vol.entries.iter().map(|e| (e.rel(), e)).collect();
    let mut summary = Summary::default();

    remove_extras(target, &by_path)?;

    for e in &vol.entries {
        let rel = e.rel();
        let dst = target.join(&rel);
        let have = std::fs::symlink_metadata(&dst).ok();
        match e.kind {
            Kind::Dir => {
                summary.dirs += 1;
                if have.is_none() {
                    std::fs::create_dir(&dst).map_err(io("creating", &dst))?;
                }
            }
            Kind::File => {
                summary.files += 1;
                if let Some(first) = e.link_of {
                    let first = target.join(vol.entries[first].rel());
                    let same = match (&have, std::fs::symlink_metadata(&first)) {
                        (Some(h), Ok(f)) => h.ino() == f.ino() && h.dev() == f.dev(),
                        _ => false,
                    };
                    if !same {
                        publish::remove_tree(&dst)?;
                        std::fs::hard_link(&first, &dst).map_err(io("linking", &dst))?;
                    }
                    continue;
                }
                let unchanged = have.as_ref().is_some_and(|h| {
                    h.is_file()
                        && h.size() == e.size
                        && (h.mtime(), h.mtime_nsec()) == (e.mtime_sec, e.mtime_nsec)
                        && h.nlink() == 1
                });
                if unchanged {
                    summary.bytes_reused += e.size;
                } else {
                    publish::remove_tree(&dst)?;
                    copy::copy_content(&src_root.join(&rel), &dst)?;
                    summary.bytes_copied += e.size;
                }
            }
            Kind::Symlink => {
                summary.other += 1;
                let want = e.target.as_ref().map(|t| t.to_bytes()).unwrap_or_default();
                let same = have.as_ref().is_some_and(|h| h.file_type().is_symlink())
                    && std::fs::read_link(&dst).is_ok_and(|t| {
                        std::os::unix::ffi::OsStrExt::as_bytes(t.as_os_str()) == want.as_slice()
                    });
                if !same {
                    publish::remove_tree(&dst)?;
                    std::os::unix::fs::symlink(crate::manifest::os(&want), &dst)
                        .map_err(io("creating symlink", &dst))?;
                }
            }
            Kind::Fifo | Kind::Chardev | Kind::Blockdev => {
                summary.other += 1;
                let same = have.as_ref().is_some_and(|h| {
                    meta::kind_of(h) == Some(e.kind) && e.rdev.is_none_or(|r| r == h.rdev())
                });
                if !same {
                    publish::remove_tree(&dst)?;
                    mknod(&dst, e)?;
                }
            }
        }
    }
    apply_all(target, &vol.entries, &[])?;
    publish::syncfs(target)?;
    summary.millis = started.elapsed().as_millis() as u64;
    tracing::info!(volume = name, target = %target.display(), copied = summary.bytes_copied, kept = summary.bytes_reused, millis = summary.millis, "restored");
    Ok(summary)
}

/// Removes everything in `target` that the snapshot does not have, or has as another type.
fn remove_extras(target: &Path, by_path: &HashMap<PathBuf, &Entry>) -> Result<()> {
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let path = target.join(&rel);
        let Ok(md) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let keep = by_path
            .get(&rel)
            .is_some_and(|e| meta::kind_of(&md) == Some(e.kind));
        if !keep {
            if rel.as_os_str().is_empty() {
                // The mountpoint itself stays; only its type could differ, which a volume's
                // root never does.
                continue;
            }
            publish::remove_tree(&path)?;
            continue;
        }
        if md.is_dir() {
            for d in std::fs::read_dir(&path).map_err(io("listing", &path))? {
                let d = d.map_err(io("listing", &path))?;
                stack.push(rel.join(d.file_name()));
            }
        }
    }
    Ok(())
}
