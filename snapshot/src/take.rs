//! Taking a snapshot: walk each source tree, copy it into a temporary directory beside the
//! published snapshot (reusing unchanged files of the previous snapshot by hardlink), write the
//! manifest last, flush, and swap it in.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crate::cache::Verified;
use crate::copy::{self, Method};
use crate::error::{Error, Result, io, nix_io};
use crate::manifest::{self, Entry, Kind, Manifest, SourceId, VOLUMES, Volume};
use crate::meta;
use crate::progress::{NoProgress, Phase, Progress};
use crate::publish;
use crate::space::{self, Reserve};

/// Per-entry overhead assumed by the space estimate (inode, directory entry, metadata blocks).
const ENTRY_OVERHEAD: u64 = 4096;

#[derive(Debug, Clone)]
pub struct TakeRequest {
    /// The app directory: the snapshot is `<parent>/snapshot`.
    pub parent: PathBuf,
    /// (volume name, source directory) pairs.
    pub sources: Vec<(String, PathBuf)>,
    pub reserve: Reserve,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// Regular files (each hardlinked name counts).
    pub files: u64,
    pub dirs: u64,
    /// Symlinks, fifos and device nodes.
    pub other: u64,
    /// Files whose content was written (take: copied from the source; restore: rewritten).
    pub files_copied: u64,
    /// Bytes written by copying.
    pub bytes_copied: u64,
    /// Take: files hardlinked from the previous snapshot; restore: left alone as unchanged.
    pub files_reused: u64,
    /// Bytes of the files counted in `files_reused`.
    pub bytes_reused: u64,
    /// Take: files whose extents were shared by reflink (FICLONE), not copied.
    pub files_reflinked: u64,
    pub bytes_reflinked: u64,
    pub sockets_skipped: u64,
    pub millis: u64,
}

/// Where a file of the new snapshot comes from.
enum Source {
    /// Copied (and hashed) from the source tree.
    Tree(PathBuf),
    /// Unchanged since the previous snapshot: hardlinked to its inode there (`prev`), which
    /// already carries the right metadata, as long as that inode still has the identity
    /// (`vouched`) the previous snapshot's verify cache recorded when its content last hashed
    /// clean; copied from `tree` otherwise.
    Previous {
        prev: PathBuf,
        vouched: SourceId,
        tree: PathBuf,
    },
}

enum Done {
    Copied(String, Method),
    /// Linked to a previous-snapshot inode that still had its vouched identity.
    Linked,
}

struct Job {
    src: Source,
    dst: PathBuf,
    index: usize,
    size: u64,
}

/// Takes a snapshot of `req.sources` and publishes it atomically as `<parent>/snapshot`.
pub fn take(req: &TakeRequest) -> Result<Summary> {
    take_with_progress(req, &NoProgress)
}

/// [`take`], reporting files and bytes as they are copied or reused.
pub fn take_with_progress(req: &TakeRequest, progress: &dyn Progress) -> Result<Summary> {
    let started = Instant::now();
    for (name, _) in &req.sources {
        manifest::check_name(name)?;
    }
    std::fs::create_dir_all(&req.parent).map_err(io("creating", &req.parent))?;
    publish::sweep_stale(&req.parent)?;
    let prev_dir = req.parent.join(publish::SNAPSHOT);
    let previous = Manifest::load(&prev_dir).ok();
    let prev_known = previous
        .as_ref()
        .map(|m| Verified::load(&prev_dir, m))
        .unwrap_or_default();

    // Plan first (metadata only) so the space check happens before anything is written.
    let mut plans = Vec::new();
    let mut needed = 0u64;
    let mut entries = 0u64;
    let mut summary = Summary::default();
    for (name, src) in &req.sources {
        let prev = previous.as_ref().and_then(|m| m.volume(name));
        let plan = plan_volume(name, src, prev, &prev_dir, &prev_known)?;
        needed += plan.needed;
        // New inodes only: further hardlink names and reused files take none.
        entries += plan
            .entries
            .iter()
            .zip(&plan.reuse)
            .filter(|(e, r)| e.link_of.is_none() && r.is_none())
            .count() as u64;
        summary.sockets_skipped += plan.sockets;
        plans.push(plan);
    }
    space::check(&req.parent, needed, entries, req.reserve)?;
    let (files, bytes) = plans
        .iter()
        .flat_map(|p| &p.entries)
        .filter(|e| e.kind == Kind::File && e.link_of.is_none())
        .fold((0, 0), |(n, b), e| (n + 1, b + e.size));
    progress.planned(files, bytes);

    let tmp = publish::tmp_dir(&req.parent);
    let result = build(&tmp, &mut plans, &mut summary, progress).and_then(|()| {
        progress.phase(Phase::TreeBuilt);
        let volumes: Vec<Volume> = plans
            .iter_mut()
            .map(|p| Volume {
                name: p.name.clone(),
                entries: std::mem::take(&mut p.entries),
            })
            .collect();
        let m = Manifest::new(now(), volumes);
        let bytes = serde_json::to_vec(&m).map_err(|e| Error::Manifest {
            path: tmp.join(manifest::FILE),
            why: e.to_string(),
        })?;
        let mpath = tmp.join(manifest::FILE);
        std::fs::write(&mpath, bytes).map_err(io("writing", &mpath))?;
        progress.phase(Phase::ManifestWritten);
        crate::cache::carry_restore_state(&prev_dir, &tmp);
        publish::syncfs(&tmp)?;
        publish::sync_dir(&tmp)?;
        progress.phase(Phase::Flushed);
        publish::publish(&req.parent, &tmp, progress)?;
        progress.phase(Phase::Published);
        Ok(m)
    });
    if result.is_err() {
        // Nothing of the failed attempt may linger (a full disk stays full otherwise).
        let _ = publish::remove_tree(&tmp);
    }
    let m = result?;
    // Every hash was computed from the very bytes written; identities are recorded only now,
    // after the old snapshot's removal moved the ctimes of the inodes both shared.
    let published = req.parent.join(publish::SNAPSHOT);
    let known: HashMap<&str, &[bool]> = plans
        .iter()
        .map(|p| (p.name.as_str(), p.hash_known.as_slice()))
        .collect();
    Verified::record_all(&published, &m, |vol, i| {
        known
            .get(vol)
            .and_then(|k| k.get(i))
            .copied()
            .unwrap_or(false)
    })
    .save(&published);
    summary.millis = started.elapsed().as_millis() as u64;
    tracing::info!(parent = %req.parent.display(), files = summary.files, copied = summary.bytes_copied, reused = summary.bytes_reused, millis = summary.millis, "snapshot published");
    Ok(summary)
}

struct Plan {
    name: String,
    src: PathBuf,
    entries: Vec<Entry>,
    /// For each entry: reuse this file of the previous snapshot instead of copying, if it
    /// still has this identity.
    reuse: Vec<Option<(PathBuf, SourceId)>>,
    /// Per entry: the content is known to match its hash (copied and hashed now, or linked
    /// to a previous-snapshot inode that was itself known good), for the verify cache.
    hash_known: Vec<bool>,
    needed: u64,
    sockets: u64,
}

fn plan_volume(
    name: &str,
    src: &Path,
    prev: Option<&Volume>,
    prev_dir: &Path,
    prev_known: &Verified,
) -> Result<Plan> {
    let prev_by_path: HashMap<PathBuf, (usize, &Entry)> = prev
        .map(|v| {
            v.entries
                .iter()
                .enumerate()
                .map(|(i, e)| (e.rel(), (i, e)))
                .collect()
        })
        .unwrap_or_default();
    let mut entries = Vec::new();
    let mut reuse = Vec::new();
    let mut needed = 0u64;
    let mut sockets = 0u64;
    let mut first_by_inode: HashMap<(u64, u64), usize> = HashMap::new();
    // Iterative walk: no recursion depth limit.
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let path = src.join(&rel);
        let Some((mut e, md)) = meta::entry_of(&path, &rel)? else {
            tracing::warn!(path = %path.display(), "skipping a socket");
            sockets += 1;
            continue;
        };
        needed += ENTRY_OVERHEAD;
        let mut reused = None;
        if e.kind == Kind::File {
            use std::os::unix::fs::MetadataExt;
            if md.nlink() > 1 {
                let key = (md.dev(), md.ino());
                if let Some(first) = first_by_inode.get(&key) {
                    e.link_of = Some(*first);
                    e.src = None;
                    entries.push(e);
                    reuse.push(None);
                    continue;
                }
                first_by_inode.insert(key, entries.len());
            }
            // The manifest only says what the previous file was when it was taken; its inode
            // may have been altered since (a user, tampering, a bad disk write). Only the verify
            // cache's identity, unchanged since its content last hashed clean, vouches that it
            // still is that (the kernel moves ctime on any change). Anything else is copied
            // afresh, and counted as such by the space check.
            let prev_file = prev_dir.join(VOLUMES).join(name).join(&rel);
            if let Some(&(prev_index, p)) = prev_by_path.get(&rel)
                && p.kind == Kind::File
                && p.link_of.is_none()
                && p.src.is_some()
                && p.src == e.src
                && p.sha256.is_some()
                && let Some(&vouched) = prev_known.get(name, prev_index)
                && std::fs::symlink_metadata(&prev_file)
                    .is_ok_and(|md| meta::source_id(&md) == vouched)
            {
                e.sha256 = p.sha256.clone();
                reused = Some((prev_file, vouched));
            } else {
                needed += md.blocks() * 512;
            }
        }
        if e.kind == Kind::Dir {
            let mut children: Vec<PathBuf> = std::fs::read_dir(&path)
                .map_err(io("listing", &path))?
                .map(|d| d.map(|d| rel.join(d.file_name())))
                .collect::<std::io::Result<_>>()
                .map_err(io("listing", &path))?;
            // Reverse-sorted onto the stack so entries come out in name order.
            children.sort();
            stack.extend(children.into_iter().rev());
        }
        entries.push(e);
        reuse.push(reused);
    }
    Ok(Plan {
        name: name.to_owned(),
        src: src.to_owned(),
        entries,
        reuse,
        hash_known: Vec::new(),
        needed,
        sockets,
    })
}

fn build(
    tmp: &Path,
    plans: &mut [Plan],
    summary: &mut Summary,
    progress: &dyn Progress,
) -> Result<()> {
    std::fs::create_dir_all(tmp.join(VOLUMES)).map_err(io("creating", tmp))?;
    for plan in plans.iter_mut() {
        let root = tmp.join(VOLUMES).join(&plan.name);
        let mut jobs = Vec::new();
        // Directories, links and special files first (parents before children: walk order).
        for (i, e) in plan.entries.iter().enumerate() {
            let dst = root.join(e.rel());
            match e.kind {
                Kind::Dir => {
                    std::fs::create_dir(&dst).map_err(io("creating", &dst))?;
                    summary.dirs += 1;
                }
                Kind::Symlink => {
                    let target = e.target.as_ref().map(|t| t.to_bytes()).unwrap_or_default();
                    std::os::unix::fs::symlink(manifest::os(&target), &dst)
                        .map_err(io("creating symlink", &dst))?;
                    summary.other += 1;
                }
                Kind::Fifo | Kind::Chardev | Kind::Blockdev => {
                    mknod(&dst, e)?;
                    summary.other += 1;
                }
                Kind::File if e.link_of.is_some() => {}
                Kind::File => {
                    summary.files += 1;
                    jobs.push(Job {
                        src: match &plan.reuse[i] {
                            Some((prev, vouched)) => Source::Previous {
                                prev: prev.clone(),
                                vouched: *vouched,
                                tree: plan.src.join(e.rel()),
                            },
                            None => Source::Tree(plan.src.join(e.rel())),
                        },
                        dst,
                        index: i,
                        size: e.size,
                    });
                }
            }
        }
        let results = copy_parallel(&jobs, &plan.entries, progress)?;
        let mut has_meta = vec![false; plan.entries.len()];
        plan.hash_known = vec![false; plan.entries.len()];
        for (job, done) in jobs.iter().zip(results) {
            has_meta[job.index] = true;
            let e = &mut plan.entries[job.index];
            plan.hash_known[job.index] = true;
            let (sha, method) = match done {
                Done::Linked => {
                    summary.bytes_reused += e.size;
                    summary.files_reused += 1;
                    continue;
                }
                Done::Copied(sha, method) => (sha, method),
            };
            e.sha256 = Some(sha);
            match method {
                Method::Reflink => {
                    summary.bytes_reflinked += e.size;
                    summary.files_reflinked += 1;
                }
                Method::Copy => {
                    summary.bytes_copied += e.size;
                    summary.files_copied += 1;
                }
            }
        }
        // Second and later names of hardlinked files.
        for e in plan.entries.iter().filter(|e| e.link_of.is_some()) {
            let first = &plan.entries[e.link_of.unwrap_or_default()];
            let dst = root.join(e.rel());
            std::fs::hard_link(root.join(first.rel()), &dst).map_err(io("linking", &dst))?;
        }
        let shas: Vec<Option<String>> = plan
            .entries
            .iter()
            .map(|e| {
                e.link_of
                    .map_or(e.sha256.clone(), |f| plan.entries[f].sha256.clone())
            })
            .collect();
        for (e, sha) in plan.entries.iter_mut().zip(shas) {
            e.sha256 = sha;
        }
        apply_all(&root, &plan.entries, &has_meta)?;
    }
    Ok(())
}

/// Metadata of every entry but those flagged in `has_meta` (and their further names);
/// directories deepest first and last, since creating their children changed their mtimes.
pub(crate) fn apply_all(root: &Path, entries: &[Entry], has_meta: &[bool]) -> Result<()> {
    for (i, e) in entries.iter().enumerate() {
        // A reused file is the previous snapshot's inode, which already carries this metadata;
        // so is a further name of a reused file. Touching it (chown clears setuid until chmod
        // restores it) would alter the published snapshot, and a crash there would corrupt it.
        // A copied file got its metadata right after its content.
        let done = |i: usize| has_meta.get(i).copied().unwrap_or(false);
        if e.kind == Kind::Dir || done(i) || e.link_of.is_some_and(done) {
            continue;
        }
        meta::apply(&root.join(e.rel()), e)?;
    }
    let mut dirs: Vec<&Entry> = entries.iter().filter(|e| e.kind == Kind::Dir).collect();
    dirs.sort_by_key(|e| std::cmp::Reverse(e.rel().components().count()));
    for e in dirs {
        meta::apply(&root.join(e.rel()), e)?;
    }
    Ok(())
}

pub(crate) fn mknod(dst: &Path, e: &Entry) -> Result<()> {
    use nix::sys::stat::{Mode, SFlag, mknod};
    let kind = match e.kind {
        Kind::Fifo => SFlag::S_IFIFO,
        Kind::Chardev => SFlag::S_IFCHR,
        _ => SFlag::S_IFBLK,
    };
    mknod(
        dst,
        kind,
        Mode::from_bits_truncate(0o600),
        e.rdev.unwrap_or(0) as libc::dev_t,
    )
    .map_err(nix_io("mknod", dst))
}

type CopyResult = Result<Done>;

/// Copies and hashes, or links, files on every core; a copied file gets its metadata right
/// away (after its content, so the mtime sticks), which spreads those syscalls too.
fn copy_parallel(jobs: &[Job], entries: &[Entry], progress: &dyn Progress) -> Result<Vec<Done>> {
    // Cold source files are read at the disk's latency: see `pool::io_threads`.
    let threads = crate::pool::io_threads();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<CopyResult>>> =
        Mutex::new((0..jobs.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else { break };
                    let copy = |src: &Path| {
                        copy::copy_and_hash(src, &job.dst).and_then(|(sha, method)| {
                            meta::apply(&job.dst, &entries[job.index])?;
                            Ok(Done::Copied(sha, method))
                        })
                    };
                    let r = match &job.src {
                        // Checked again right before linking: the plan's check may be long
                        // past on a big tree.
                        Source::Previous {
                            prev,
                            vouched,
                            tree,
                        } => match std::fs::symlink_metadata(prev) {
                            Ok(md) if meta::source_id(&md) == *vouched => {
                                std::fs::hard_link(prev, &job.dst)
                                    .map(|()| Done::Linked)
                                    .map_err(io("linking", &job.dst))
                            }
                            _ => copy(tree),
                        },
                        Source::Tree(src) => copy(src),
                    };
                    let failed = r.is_err();
                    if r.is_ok() {
                        progress.advanced(1, job.size);
                    }
                    if let Ok(mut all) = results.lock() {
                        all[i] = Some(r);
                    }
                    if failed {
                        // Stop the others early: the snapshot is abandoned anyway.
                        next.store(jobs.len(), Ordering::Relaxed);
                        break;
                    }
                }
            });
        }
    });
    let all = results.into_inner().unwrap_or_default();
    if all.iter().any(|r| matches!(r, Some(Err(_)))) {
        // Report the real failure, not a job that was merely skipped because of it.
        if let Some(Some(Err(e))) = all.into_iter().find(|r| matches!(r, Some(Err(_)))) {
            return Err(e);
        }
        return Err(io("copying", "snapshot")(std::io::Error::other(
            "a copy failed",
        )));
    }
    let mut out = Vec::with_capacity(jobs.len());
    for (i, r) in all.into_iter().enumerate() {
        match r {
            Some(r) => out.push(r?),
            None => {
                return Err(io("copying", &jobs[i].dst)(std::io::Error::other(
                    "the copy worker stopped",
                )));
            }
        }
    }
    Ok(out)
}

fn now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    format!("{secs}")
}
