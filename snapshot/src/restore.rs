//! Restore: make a target directory identical to one volume of a verified snapshot.
//!
//! Extra entries are removed, changed ones rewritten, and files whose content is known to be
//! the snapshot's are left alone: same size, same hardlink count, and the identity (dev, ino,
//! size, mtime, ctime) the previous restore recorded for that content (see `cache`). A file
//! rewritten with its mtime put back has another ctime, so it is caught where rsync's quick
//! check would miss it. Metadata is compared everywhere and rewritten where it differs. Nothing in the target is ever followed: a
//! symlink where the snapshot has a directory is replaced, not entered.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::cache::{TargetState, Verified};
use crate::copy;
use crate::error::{Error, Result, io};
use crate::manifest::{Entry, Kind, Manifest, SourceId, VOLUMES};
use crate::meta::{self, source_id};
use crate::pool;
use crate::progress::{NoProgress, Progress};
use crate::publish;
use crate::take::{Summary, mknod};
use crate::verify::check;

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
    restore_with_progress(dir, name, target, &NoProgress)
}

/// [`restore`], reporting files and bytes as they are written or found unchanged.
pub fn restore_with_progress(
    dir: &Path,
    name: &str,
    target: &Path,
    progress: &dyn Progress,
) -> Result<Summary> {
    let started = Instant::now();
    let m = Manifest::load(dir)?;
    let vol = m.volume(name).ok_or_else(|| Error::NoVolume {
        dir: dir.to_owned(),
        name: name.to_owned(),
    })?;
    // Only this volume's files are rehashed, and only those whose identity moved since they
    // were last hashed clean (see `cache`); the metadata of every entry is compared.
    let mut known = Verified::load(dir, &m);
    let report = check(dir, &m, Some(name), &mut known)?;
    if !report.problems.is_empty() {
        return Err(Error::Corrupt {
            dir: dir.to_owned(),
            problems: report.problems,
        });
    }
    if report.bytes_hashed > 0 {
        known.save(dir);
    }
    let src_root = dir.join(VOLUMES).join(name);
    match std::fs::symlink_metadata(target) {
        Ok(md) if md.is_dir() => {}
        Ok(_) => {
            return Err(io("restoring into", target)(std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                "the target is not a directory (a symlink is never followed)",
            )));
        }
        Err(_) => std::fs::create_dir_all(target).map_err(io("creating", target))?,
    }
    let total: u64 = vol.entries.iter().map(|e| e.size).sum();
    progress.planned(vol.entries.len() as u64, total);
    let by_path: HashMap<PathBuf, &Entry> = vol.entries.iter().map(|e| (e.rel(), e)).collect();
    let mut names_of: HashMap<usize, u64> = HashMap::new();
    for e in &vol.entries {
        if let Some(first) = e.link_of {
            *names_of.entry(first).or_insert(1) += 1;
        }
    }
    let state = TargetState::load(dir, target);
    let mut summary = Summary::default();
    let mut copies = Vec::new();
    let mut further_names = Vec::new();

    remove_extras(target, &by_path)?;

    for (i, e) in vol.entries.iter().enumerate() {
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
                if e.link_of.is_some() {
                    // Linked once the first name's content is in place.
                    further_names.push(i);
                    continue;
                }
                let sha = e.sha256.as_deref().unwrap_or_default();
                let names = names_of.get(&i).copied().unwrap_or(1);
                let unchanged = have.as_ref().is_some_and(|h| {
                    h.is_file()
                        && h.size() == e.size
                        && h.nlink() == names
                        && (state.holds(&rel, h, sha)
                            // No record (first restore here, or a new snapshot): same size
                            // and mtime is only a hint, so the content is read and hashed.
                            || ((h.mtime(), h.mtime_nsec()) == (e.mtime_sec, e.mtime_nsec)
                                && copy::hash_path(&dst).is_ok_and(|h| h == sha)))
                });
                if unchanged {
                    summary.files_reused += 1;
                    summary.bytes_reused += e.size;
                    progress.advanced(1, e.size);
                } else {
                    publish::remove_tree(&dst)?;
                    copies.push(i);
                    summary.files_copied += 1;
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
    pool::for_each(&copies, |&i| {
        let rel = vol.entries[i].rel();
        copy::copy_content(&src_root.join(&rel), &target.join(&rel))?;
        progress.advanced(1, vol.entries[i].size);
        Ok(())
    })?;
    for i in further_names {
        let e = &vol.entries[i];
        let dst = target.join(e.rel());
        let first = target.join(vol.entries[e.link_of.unwrap_or_default()].rel());
        let same = match (
            std::fs::symlink_metadata(&dst),
            std::fs::symlink_metadata(&first),
        ) {
            (Ok(h), Ok(f)) => h.ino() == f.ino() && h.dev() == f.dev(),
            _ => false,
        };
        if !same {
            publish::remove_tree(&dst)?;
            std::fs::hard_link(&first, &dst).map_err(io("linking", &dst))?;
        }
    }
    let ids = apply_changed(target, &vol.entries)?;
    // What the target now holds, for the next restore's quick check; nothing else.
    let mut state = TargetState::default();
    for (i, id) in ids {
        let e = &vol.entries[i];
        state.insert(&e.rel(), id, e.sha256.clone().unwrap_or_default());
    }
    publish::syncfs(target)?;
    state.save(dir, target);
    summary.millis = started.elapsed().as_millis() as u64;
    tracing::info!(volume = name, target = %target.display(), copied = summary.bytes_copied, kept = summary.bytes_reused, millis = summary.millis, "restored");
    Ok(summary)
}

/// Metadata of every entry where it differs; directories deepest first and last, since
/// creating or removing their children moved their mtimes.
/// Returns the final identity of every regular file, by entry index.
fn apply_changed(root: &Path, entries: &[Entry]) -> Result<HashMap<usize, SourceId>> {
    let apply = |e: &Entry| {
        let p = root.join(e.rel());
        let md = std::fs::symlink_metadata(&p).map_err(io("lstat", &p))?;
        if meta::apply_if_needed(&p, e, &md)? {
            return std::fs::symlink_metadata(&p).map_err(io("lstat", &p));
        }
        Ok(md)
    };
    let mut ids = HashMap::new();
    for (i, e) in entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.kind != Kind::Dir)
    {
        let md = apply(e)?;
        if e.kind == Kind::File {
            ids.insert(i, source_id(&md));
        }
    }
    let mut dirs: Vec<&Entry> = entries.iter().filter(|e| e.kind == Kind::Dir).collect();
    dirs.sort_by_key(|e| std::cmp::Reverse(e.rel().components().count()));
    for e in dirs {
        apply(e)?;
    }
    Ok(ids)
}

/// Removes everything in `target` that the snapshot does not have, or has as another type.
fn remove_extras(target: &Path, by_path: &HashMap<PathBuf, &Entry>) -> Result<()> {
    // The root was checked to be a directory; below it, types come from the directory
    // entries, which spares an lstat per entry.
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let path = target.join(&rel);
        for d in std::fs::read_dir(&path).map_err(io("listing", &path))? {
            let d = d.map_err(io("listing", &path))?;
            let child = rel.join(d.file_name());
            let kind = d
                .file_type()
                .map_err(io("lstat", d.path()))
                .map(meta::kind_of_type)?;
            let keep = by_path.get(&child).is_some_and(|e| kind == Some(e.kind));
            if !keep {
                publish::remove_tree(&d.path())?;
            } else if kind == Some(Kind::Dir) {
                stack.push(child);
            }
        }
    }
    Ok(())
}
