//! Restore: make a target directory identical to one volume of a verified snapshot.
//!
//! Extra entries are removed, changed ones rewritten, and files whose content is known to be
//! the snapshot's are left alone: same size, same hardlink count, and the identity (dev, ino,
//! size, mtime, ctime) the previous restore recorded for that content (see `cache`). A file
//! rewritten with its mtime put back has another ctime, so it is caught where rsync's quick
//! check would miss it. Metadata is compared everywhere and rewritten where it differs. Nothing in the target is ever followed: a
//! symlink where the snapshot has a directory is replaced, not entered.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Instant;

use crate::cache::{TargetState, Verified};
use crate::content;
use crate::copy;
use crate::error::{Error, Result, io};
use crate::fsat::{self, Walker};
use crate::manifest::{Entry, Kind, Manifest, SourceId, VOLUMES};
use crate::meta::{self, At, source_id};
use crate::pool;
use crate::progress::{NoProgress, Progress};
use crate::publish;
use crate::take::Summary;
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
    let src_path = dir.join(VOLUMES).join(name);
    let src_root = fsat::open_root(&src_path)?;
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
    // From here on the target is only reached through this fd (opened O_NOFOLLOW, so a
    // symlink swapped in since the check above is refused) and fd-relative calls.
    let troot = fsat::open_root(target)?;
    let total: u64 = vol.entries.iter().map(|e| e.size).sum();
    progress.planned(vol.entries.len() as u64, total);
    let by_path: HashMap<Vec<u8>, &Entry> =
        vol.entries.iter().map(|e| (e.rel_bytes(), e)).collect();
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

    remove_extras(troot.as_fd(), target, &by_path)?;

    let mut walker = Walker::new(troot.as_fd(), target);
    for (i, e) in vol.entries.iter().enumerate() {
        let raw = e.rel_bytes();
        let rel = e.rel();
        let label = walker.label(&raw);
        let (d, nm) = walker.parent(&raw)?;
        let have = fsat::try_lstat_at(d, &nm, &label)?;
        match e.kind {
            Kind::Dir => {
                summary.dirs += 1;
                match &have {
                    Some(h) if h.is_dir() => {}
                    // Never entered: whatever is there instead (a symlink swapped in since
                    // the extras were removed) is replaced.
                    Some(_) => {
                        fsat::remove_at(d, &nm, &label)?;
                        fsat::mkdir_at(d, &nm, &label)?;
                    }
                    None => fsat::mkdir_at(d, &nm, &label)?,
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
                                && fsat::open_read_at(d, &nm, &label)
                                    .and_then(|f| {
                                        content::hash_as(&f, e.size, e.data.as_deref(), &label)
                                    })
                                    .is_ok_and(|h| h == sha)))
                });
                if unchanged {
                    summary.files_reused += 1;
                    summary.bytes_reused += e.size;
                    progress.advanced(1, e.size);
                } else {
                    fsat::remove_at(d, &nm, &label)?;
                    copies.push(i);
                    summary.files_copied += 1;
                    summary.bytes_copied += e.size;
                }
            }
            Kind::Symlink => {
                summary.other += 1;
                let want = e.target.as_ref().map(|t| t.to_bytes()).unwrap_or_default();
                let same = have.as_ref().is_some_and(|h| h.file_type().is_symlink())
                    && fsat::readlink_at(d, &nm, &label).is_ok_and(|t| t == want);
                if !same {
                    fsat::remove_at(d, &nm, &label)?;
                    fsat::symlink_at(&want, d, &nm, &label)?;
                }
            }
            Kind::Fifo | Kind::Chardev | Kind::Blockdev => {
                summary.other += 1;
                let same = have.as_ref().is_some_and(|h| {
                    meta::kind_of(h) == Some(e.kind) && e.rdev.is_none_or(|r| r == h.rdev())
                });
                if !same {
                    fsat::remove_at(d, &nm, &label)?;
                    fsat::mknod_at(d, &nm, e.kind, e.rdev.unwrap_or(0), &label)?;
                }
            }
        }
    }
    drop(walker);
    pool::for_each_with(
        &copies,
        || {
            (
                Walker::new(troot.as_fd(), target),
                Walker::new(src_root.as_fd(), &src_path),
            )
        },
        |(to_walker, from_walker), &i| {
            let raw = vol.entries[i].rel_bytes();
            let (src, dst) = (from_walker.label(&raw), to_walker.label(&raw));
            let (sd, sn) = from_walker.parent(&raw)?;
            let from = fsat::open_read_at(sd, &sn, &src)?;
            let (td, tn) = to_walker.parent(&raw)?;
            let to = fsat::create_at(td, &tn, &dst)?;
            copy::copy_content(&from, &to, &src, &dst)?;
            progress.advanced(1, vol.entries[i].size);
            Ok(())
        },
    )?;
    let mut walker = Walker::new(troot.as_fd(), target);
    let mut first_walker = Walker::new(troot.as_fd(), target);
    for i in further_names {
        let e = &vol.entries[i];
        let raw = e.rel_bytes();
        let first_raw = vol.entries[e.link_of.unwrap_or_default()].rel_bytes();
        let label = walker.label(&raw);
        let first_label = first_walker.label(&first_raw);
        let (d, nm) = walker.parent(&raw)?;
        let (fd, fnm) = first_walker.parent(&first_raw)?;
        let same = match (fsat::lstat_at(d, &nm), fsat::lstat_at(fd, &fnm)) {
            (Ok(h), Ok(f)) => h.ino() == f.ino() && h.dev() == f.dev(),
            _ => false,
        };
        if !same {
            fsat::remove_at(d, &nm, &label)?;
            fsat::link_at(fd, &fnm, d, &nm, &label).map_err(|e| match e {
                Error::Io { op, source, .. } => Error::Io {
                    op,
                    path: label.clone(),
                    source: std::io::Error::new(
                        source.kind(),
                        format!("to {}: {source}", first_label.display()),
                    ),
                },
                other => other,
            })?;
        }
    }
    drop((walker, first_walker));
    let ids = apply_changed(troot.as_fd(), target, &vol.entries)?;
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
/// creating or removing their children moved their mtimes. An entry that is not of the
/// snapshot's type any more (swapped while restoring) is an error, not chmodded.
/// Returns the final identity of every regular file, by entry index.
fn apply_changed(
    root: BorrowedFd<'_>,
    target: &Path,
    entries: &[Entry],
) -> Result<HashMap<usize, SourceId>> {
    let mut walker = Walker::new(root, target);
    let mut apply = |e: &Entry| {
        let raw = e.rel_bytes();
        let label = walker.label(&raw);
        let (dir, name) = walker.parent(&raw)?;
        let at = At {
            dir,
            name: &name,
            label: &label,
        };
        let md = at.lstat()?;
        if meta::kind_of(&md) != Some(e.kind) {
            return Err(io("restoring the metadata of", &label)(
                std::io::Error::other(format!(
                    "it is a {:?} now, expected {:?} (changed during the restore)",
                    meta::kind_of(&md),
                    e.kind
                )),
            ));
        }
        if at.apply_if_needed(e, &md)? {
            return at.lstat();
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
    dirs.sort_by_key(|e| {
        std::cmp::Reverse(
            e.rel_bytes().iter().filter(|b| **b == b'/').count()
                + usize::from(!e.rel_bytes().is_empty()),
        )
    });
    for e in dirs {
        apply(e)?;
    }
    Ok(ids)
}

/// Removes everything in the target that the snapshot does not have, or has as another
/// type; directories are entered only through `O_NOFOLLOW` fds.
fn remove_extras(
    root: BorrowedFd<'_>,
    target: &Path,
    by_path: &HashMap<Vec<u8>, &Entry>,
) -> Result<()> {
    let mut walker = Walker::new(root, target);
    let mut stack = vec![Vec::new()];
    while let Some(rel) = stack.pop() {
        let label = walker.label(&rel);
        let fd = walker.dir(&rel)?;
        // Types come from the directory entries, which spares an lstat per entry.
        for (name, kind) in fsat::list(fd, &label)? {
            let mut child = rel.clone();
            if !child.is_empty() {
                child.push(b'/');
            }
            child.extend_from_slice(name.to_bytes());
            let kind = match kind {
                Some(k) => Some(k),
                None => fsat::lstat_at(fd, &name)
                    .ok()
                    .and_then(|md| meta::kind_of(&md)),
            };
            let keep = by_path.get(&child).is_some_and(|e| kind == Some(e.kind));
            if !keep {
                fsat::remove_at(fd, &name, &target.join(crate::manifest::os(&child)))?;
            } else if kind == Some(Kind::Dir) {
                stack.push(child);
            }
        }
    }
    Ok(())
}
