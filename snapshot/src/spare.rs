//! The snapshot a take replaced, kept as the next take's workspace: `snapshot/.cache/spare`.
//!
//! A published take shares nearly every inode with the snapshot it replaced (unchanged files
//! are hardlinked). Removing that tree costs an unlink per name, and building the next take
//! from nothing costs a mkdir per directory and a link per file: for a take where 1% of the
//! files changed, that is most of its time. So the replaced tree is kept instead, after
//! unlinking every name the new snapshot does not share (it pins no data of its own), and the
//! next take starts from it: it removes what differs from its plan and creates what is
//! missing, which is about the work rsync's update does.
//!
//! The spare is a cache like the rest of `.cache`: never read as a snapshot, trusted for
//! nothing. Every name in it is checked against the plan, fd-relative and without following
//! a symlink: a directory is kept only where the plan has one (its metadata is applied again
//! by the build), a regular file only while it has the very identity the verify cache vouches
//! for (which makes it the published snapshot's own inode), and everything else is removed.
//! Nothing in it is ever written, only unlinked: its files are the published snapshot's
//! inodes. A take killed while using it leaves a `.tmp-*` tree that the next take sweeps;
//! a missing or unusable spare only means building from nothing.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{Result, io, nix_io};
use crate::fsat;
use crate::manifest::{Entry, Kind, SourceId, VOLUMES};
use crate::meta;
use crate::progress::{Phase, Progress};
use crate::publish::remove_tree;
use crate::walk::{IsDir, walk};

const CACHE: &std::ffi::CStr = c".cache";
const SPARE: &std::ffi::CStr = c"spare";

/// Moves the spare out of the published snapshot `snap` to `to`, a fresh `.tmp-*` name (from
/// here on, a killed take leaves something `sweep_stale` removes). `false` when there is
/// none, or it cannot be used.
pub fn claim(snap: &Path, to: &Path) -> bool {
    let label = snap.join(".cache/spare");
    let r = (|| -> Result<bool> {
        let root = fsat::open_root(snap)?;
        let Ok(cache) = fsat::open_dir_at(root.as_fd(), CACHE, &label) else {
            return Ok(false);
        };
        match fsat::try_lstat_at(cache.as_fd(), SPARE, &label)? {
            Some(md) if md.is_dir() => {}
            Some(_) => {
                fsat::remove_at(cache.as_fd(), SPARE, &label)?;
                return Ok(false);
            }
            None => return Ok(false),
        }
        nix::fcntl::renameat(cache.as_fd(), SPARE, nix::fcntl::AT_FDCWD, to)
            .map_err(nix_io("moving", &label))?;
        Ok(true)
    })();
    r.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "the spare tree of the previous take is not usable: building from nothing");
        false
    })
}

/// One volume of a plan, as the workspace is checked against it.
pub struct Want<'a> {
    pub name: &'a str,
    pub entries: &'a [Entry],
    /// Per entry: the identity a regular file must have to be kept (the previous snapshot's
    /// inode that the plan reuses, as the verify cache vouches for it).
    pub vouched: Vec<Option<SourceId>>,
}

/// What the walk of the workspace found at one name.
struct Seen {
    dir: bool,
    kept: Option<usize>,
}

impl IsDir for Seen {
    fn is_dir(&self) -> bool {
        self.dir
    }
}

/// Makes the claimed spare `ws` ready to be built into for `want`: only what the plan has, as
/// it has it, is left (see the module's comment). Returns, per volume and entry, whether the
/// entry is already there.
pub fn reconcile(ws: &Path, want: &[Want]) -> Result<Vec<Vec<bool>>> {
    // Only `volumes/` stays at the top: the old manifest and caches describe another take.
    keep_only(ws, &[VOLUMES])?;
    let vols = ws.join(VOLUMES);
    if std::fs::symlink_metadata(&vols).is_err() {
        std::fs::create_dir(&vols).map_err(io("creating", &vols))?;
    }
    let names: Vec<&str> = want.iter().map(|w| w.name).collect();
    keep_only(&vols, &names)?;
    let mut out = Vec::with_capacity(want.len());
    for w in want {
        let root = vols.join(w.name);
        let mut kept = vec![false; w.entries.len()];
        if std::fs::symlink_metadata(&root).is_ok() {
            for i in volume(&root, w)? {
                kept[i] = true;
            }
        }
        out.push(kept);
    }
    Ok(out)
}

/// Removes every name in `dir` not in `keep`, and any of those that is not a directory.
fn keep_only(dir: &Path, keep: &[&str]) -> Result<()> {
    for d in std::fs::read_dir(dir).map_err(io("listing", dir))? {
        let d = d.map_err(io("listing", dir))?;
        let p = d.path();
        let wanted = keep
            .iter()
            .any(|k| d.file_name().as_bytes() == k.as_bytes());
        let is_dir = std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir());
        if !wanted || !is_dir {
            remove_tree(&p)?;
        }
    }
    Ok(())
}

/// The entries of one volume root `root` (a real directory) that can stay.
fn volume(root: &Path, w: &Want) -> Result<Vec<usize>> {
    let index: HashMap<Vec<u8>, usize> = w
        .entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.rel_bytes(), i))
        .collect();
    // Descends only into what the lstat just found to be a real directory: a symlink in
    // a directory's place is removed, never followed.
    let inspect = |rel: &Path| -> Result<Option<Seen>> {
        let path = root.join(rel);
        let md = match std::fs::symlink_metadata(&path) {
            Ok(md) => md,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Some(Seen {
                    dir: false,
                    kept: None,
                }));
            }
            Err(e) => return Err(io("lstat", &path)(e)),
        };
        let i = index.get(rel.as_os_str().as_bytes()).copied();
        let keep = i.filter(|&i| {
            let e = &w.entries[i];
            match e.kind {
                Kind::Dir => md.is_dir(),
                Kind::File => {
                    e.link_of.is_none()
                        && md.is_file()
                        && w.vouched[i].is_some_and(|v| v == meta::source_id(&md))
                }
                _ => false,
            }
        });
        if keep.is_none() {
            remove_tree(&path)?;
        }
        Ok(Some(Seen {
            dir: keep.is_some() && md.is_dir(),
            kept: keep,
        }))
    };
    let found = walk(root, &inspect)?;
    let mut kept: Vec<usize> = found
        .values()
        .flatten()
        .flatten()
        .filter_map(|s| s.kept)
        .collect();
    // The root itself (its own entry, "").
    kept.extend(index.get(&b""[..]).copied());
    Ok(kept)
}

/// After the exchange: the replaced snapshot `old` (now a `.tmp-*` beside `snap`) becomes
/// `snap`'s spare. Every name in it the new snapshot does not share is removed first (`drop`,
/// per volume, relative paths in the old manifest's walk order), and so are its manifest,
/// its caches and volumes the new snapshot has not. Each removal is reported as
/// [`Phase::RemovingPrevious`]. On failure, the caller removes `old` whole.
pub fn stash(
    snap: &Path,
    old: &Path,
    drop: &[(String, Vec<Vec<u8>>)],
    progress: &dyn Progress,
) -> Result<()> {
    let vols: Vec<&str> = drop.iter().map(|(n, _)| n.as_str()).collect();
    keep_only(old, &[VOLUMES])?;
    keep_only(&old.join(VOLUMES), &vols)?;
    // Its manifest and caches are gone: the first part.
    let parts = drop.iter().map(|(_, r)| r.len() as u64).sum::<u64>() + 2;
    let mut removed = 1u64;
    progress.phase(Phase::RemovingPrevious { removed, parts });
    // A volume the replaced snapshot did not have has nothing to remove (and no root).
    for (name, rels) in drop.iter().filter(|(_, rels)| !rels.is_empty()) {
        let root_path = old.join(VOLUMES).join(name);
        let root = fsat::open_root(&root_path)?;
        let mut walker = fsat::Walker::new(root.as_fd(), &root_path);
        // Children before their parents, so a directory is empty of what goes with it.
        for rel in rels.iter().rev() {
            let label = walker.label(rel);
            let (dir, leaf) = walker.parent(rel)?;
            fsat::remove_at(dir, &leaf, &label)?;
            removed += 1;
            progress.phase(Phase::RemovingPrevious { removed, parts });
        }
    }
    put(snap, old)?;
    removed += 1;
    progress.phase(Phase::RemovingPrevious { removed, parts });
    Ok(())
}

/// Moves `tree` to `snap`'s `.cache/spare` (replacing one that is there), reaching it through
/// directory fds opened `O_NOFOLLOW`.
fn put(snap: &Path, tree: &Path) -> Result<()> {
    let root = fsat::open_root(snap)?;
    let label = snap.join(".cache/spare");
    match nix::sys::stat::mkdirat(
        root.as_fd(),
        CACHE,
        nix::sys::stat::Mode::from_bits_truncate(0o755),
    ) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
        Err(e) => return Err(nix_io("creating", snap.join(".cache"))(e)),
    }
    let cache = fsat::open_dir_at(root.as_fd(), CACHE, &label)?;
    fsat::remove_at(cache.as_fd(), SPARE, &label)?;
    let c = CString::new(tree.as_os_str().as_bytes()).map_err(|e| {
        io("naming", tree)(std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
    })?;
    nix::fcntl::renameat(nix::fcntl::AT_FDCWD, c.as_c_str(), cache.as_fd(), SPARE)
        .map_err(nix_io("keeping as the spare", tree))
}

/// After a failed take: the claimed spare `ws` goes back into the published snapshot `snap`,
/// without anything that take wrote. Every regular file that is not a name of the published
/// snapshot's inode at the same path (a copy the attempt made) is removed, and so are the
/// attempt's manifest and caches; what else differs from the next plan, the next take removes.
pub fn give_back(snap: &Path, ws: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    keep_only(ws, &[VOLUMES])?;
    let vols = ws.join(VOLUMES);
    if let Ok(rd) = std::fs::read_dir(&vols) {
        for d in rd {
            let d = d.map_err(io("listing", &vols))?;
            let root = d.path();
            if !std::fs::symlink_metadata(&root).is_ok_and(|m| m.is_dir()) {
                remove_tree(&root)?;
                continue;
            }
            let published = snap.join(VOLUMES).join(d.file_name());
            let inspect = |rel: &Path| -> Result<Option<Seen>> {
                let path = root.join(rel);
                let md = std::fs::symlink_metadata(&path).map_err(io("lstat", &path))?;
                if md.is_file() {
                    let shared = std::fs::symlink_metadata(published.join(rel))
                        .is_ok_and(|p| (p.dev(), p.ino()) == (md.dev(), md.ino()));
                    if !shared {
                        remove_tree(&path)?;
                    }
                }
                Ok(Some(Seen {
                    dir: md.is_dir(),
                    kept: None,
                }))
            };
            walk(&root, &inspect)?;
        }
    }
    put(snap, ws)
}

/// Directories of a spare made from nothing are private (0700) until the next take gives them
/// their entries' metadata: the files' names are no one else's business meanwhile.
fn private_dir() -> std::fs::DirBuilder {
    use std::os::unix::fs::DirBuilderExt;
    let mut b = std::fs::DirBuilder::new();
    b.mode(0o700);
    b
}

/// After a first take (nothing was replaced): makes `snap`'s spare from the snapshot itself,
/// its directories and a further name of each file, so that the next take already starts
/// from a workspace. While this take's inodes are still cached, a link costs less than the
/// next take would pay for it on a cold tree. The caller records the verify cache afterwards
/// (the links moved the files' ctimes). On failure the partial spare is left for the next
/// take to check or remove, like any spare.
pub fn prepare(snap: &Path, volumes: &[crate::manifest::Volume]) -> Result<()> {
    let cache = snap.join(".cache");
    match std::fs::create_dir(&cache) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io("creating", &cache)(e)),
    }
    let spare = cache.join("spare");
    remove_tree(&spare)?;
    let files: Vec<(std::path::PathBuf, std::path::PathBuf)> = {
        let mut files = Vec::new();
        for v in volumes {
            let from = snap.join(VOLUMES).join(&v.name);
            let to = spare.join(VOLUMES).join(&v.name);
            private_dir()
                .recursive(true)
                .create(to.parent().unwrap_or(&spare))
                .map_err(io("creating", &to))?;
            for e in &v.entries {
                let rel = e.rel();
                match e.kind {
                    Kind::Dir => {
                        let d = to.join(&rel);
                        private_dir().create(&d).map_err(io("creating", &d))?;
                    }
                    Kind::File if e.link_of.is_none() => {
                        files.push((from.join(&rel), to.join(&rel)))
                    }
                    _ => {}
                }
            }
        }
        files
    };
    crate::pool::for_each_with(
        &files,
        || (),
        |(), (from, to)| std::fs::hard_link(from, to).map_err(io("linking", to)),
    )
}
