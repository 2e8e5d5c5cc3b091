//! Taking a snapshot: walk each source tree, copy it into a temporary directory beside the
//! published snapshot (reusing unchanged files of the previous snapshot by hardlink), write the
//! manifest last, flush, and swap it in. When the walk finds every entry exactly as the
//! published snapshot has it, and that snapshot's every inode still has the identity it had
//! when it was last known to match its manifest, the snapshot is already exact: nothing is
//! written or published.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crate::cache::{Record, Verified};
use crate::content;
use crate::copy::{self, Method, PROBES, Split};
use crate::error::{Error, Result, io, nix_io};
use crate::manifest::{self, Entry, Kind, Manifest, SourceId, VOLUMES, Volume};
use crate::meta;
use crate::progress::{NoProgress, Phase, Progress};
use crate::publish;
use crate::space::{self, Reserve};
use crate::spare;
use crate::walk::{IsDir, walk};

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
    /// Take: every entry of the source was found exactly as the published snapshot has it,
    /// so nothing was written (the snapshot, its manifest and its caches are untouched).
    #[serde(default)]
    pub unchanged: bool,
}

/// Where a file of the new snapshot comes from.
enum Source {
    /// Copied (and hashed) from the source tree.
    Tree(PathBuf),
    /// One piece of a big file of the source tree, copied (unless reflinked) and hashed on
    /// its own: `splits[split]`, piece `piece`.
    Piece { split: usize, piece: usize },
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
    Copied(copy::Copied),
    /// Linked to a previous-snapshot inode that still had its vouched identity.
    Linked,
    Piece([u8; 32]),
}

/// A big file copied as pieces (see `copy::split`).
struct SplitFile {
    index: usize,
    src: PathBuf,
    dst: PathBuf,
    split: Split,
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
    // A manifest whose entries do not hash to its digest was altered: nothing it says is
    // reused (its verify cache is keyed by that digest, so it would vouch for the alteration).
    let previous = Manifest::load(&prev_dir)
        .ok()
        .filter(|m| manifest::digest(&m.volumes) == m.digest);
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
    let (files, bytes) = plans
        .iter()
        .flat_map(|p| &p.entries)
        .filter(|e| e.kind == Kind::File && e.link_of.is_none())
        .fold((0, 0), |(n, b), e| (n + 1, b + e.size));
    if let Some(prev) = &previous
        && unchanged(&plans, prev)
    {
        // Nothing to write, so nothing can be torn: the published snapshot, its manifest
        // and its verify cache stay byte for byte what they were, and still describe the
        // source exactly.
        progress.planned(files, bytes);
        progress.advanced(files, bytes);
        for e in plans.iter().flat_map(|p| &p.entries) {
            match e.kind {
                // Counted as a full take counts them: one per inode.
                Kind::File if e.link_of.is_some() => {}
                Kind::File => summary.files += 1,
                Kind::Dir => summary.dirs += 1,
                _ => summary.other += 1,
            }
        }
        summary.files_reused = files;
        summary.bytes_reused = bytes;
        summary.unchanged = true;
        summary.millis = started.elapsed().as_millis() as u64;
        tracing::info!(parent = %req.parent.display(), files = summary.files, millis = summary.millis, "snapshot unchanged: the published one is exact");
        return Ok(summary);
    }
    space::check(&req.parent, needed, entries, req.reserve)?;
    progress.planned(files, bytes);

    let tmp = publish::tmp_dir(&req.parent);
    let claimed = previous.is_some() && spare::claim(&prev_dir, &tmp);
    let result = build(&tmp, claimed, &mut plans, &mut summary, progress).and_then(|()| {
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
        let replaced = publish::exchange(&req.parent, &tmp)?;
        if !replaced {
            let snap = req.parent.join(publish::SNAPSHOT);
            if let Err(e) = spare::prepare(&snap, &m.volumes) {
                tracing::warn!(path = %snap.display(), error = %e, "cannot prepare the next take's workspace");
            }
            // The links moved every file's ctime: identities are read again.
            for p in plans.iter_mut() {
                p.ids.iter_mut().for_each(|id| *id = None);
            }
        } else {
            progress.phase(Phase::Exchanged);
            // `tmp` now holds the replaced snapshot. The new one is published whatever
            // happens here; a leftover is a `.tmp-*` like any other and the next take
            // sweeps it.
            let shared: Vec<&[bool]> = plans.iter().map(|p| p.shared.as_slice()).collect();
            let drop = previous
                .as_ref()
                .map(|prev| unshared(prev, &m.volumes, &shared))
                .unwrap_or_default();
            if let Err(e) = spare::stash(&prev_dir, &tmp, &drop, progress) {
                tracing::warn!(path = %tmp.display(), error = %e, "cannot keep the replaced snapshot as the next take's workspace: removing it");
                if let Err(e) = publish::remove_tree_parallel(&tmp, progress) {
                    tracing::warn!(path = %tmp.display(), error = %e, "cannot remove the previous snapshot yet");
                }
            }
        }
        progress.phase(Phase::Published);
        Ok(m)
    });
    if result.is_err() {
        // Nothing of the failed attempt may linger (a full disk stays full otherwise). A
        // claimed spare goes back without what the attempt wrote: removing it whole would
        // unlink a name of nearly every published file, which moves their ctimes, and the
        // next take and restore would trust none of them.
        let back = claimed
            && spare::give_back(&prev_dir, &tmp)
                .inspect_err(|e| tracing::warn!(path = %tmp.display(), error = %e, "cannot keep the workspace of the failed take"))
                .is_ok();
        if !back {
            let _ = publish::remove_tree(&tmp);
        }
    }
    let m = result?;
    // Every hash was computed from the very bytes written; identities are recorded only now,
    // after the replaced snapshot's names were unlinked (which moved the ctimes of inodes
    // both shared). A file kept from the workspace was not touched by this take, nor a file
    // copied since its metadata was applied, unless a further name was linked to it: the
    // identity known then still holds.
    let published = req.parent.join(publish::SNAPSHOT);
    let by_name: HashMap<&str, &Plan> = plans.iter().map(|p| (p.name.as_str(), p)).collect();
    let linked_to: HashMap<&str, std::collections::HashSet<usize>> = m
        .volumes
        .iter()
        .map(|v| {
            let firsts = v.entries.iter().filter_map(|e| e.link_of).collect();
            (v.name.as_str(), firsts)
        })
        .collect();
    Verified::record_all(&published, &m, |vol, i| {
        let Some(plan) = by_name.get(vol) else {
            return Record::Unknown;
        };
        let linked = linked_to.get(vol).is_some_and(|f| f.contains(&i));
        match (plan.kept.get(i), plan.reuse.get(i), plan.hash_known.get(i)) {
            (Some(true), Some(Some((_, vouched))), _) if !linked => Record::As(*vouched),
            (_, _, Some(true)) => match plan.ids.get(i) {
                Some(Some(id)) if !linked => Record::As(*id),
                _ => Record::Lstat,
            },
            _ => Record::Unknown,
        }
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
    /// Per entry: the published snapshot has this very entry (same manifest entry at the same
    /// index) and its inode there still has the identity recorded when it last matched.
    same: Vec<bool>,
    /// Per entry: the new snapshot holds the previous snapshot's very inode at this path
    /// (kept in the workspace, or linked to it).
    shared: Vec<bool>,
    /// Per entry: already right in the workspace (see `spare`), left untouched.
    kept: Vec<bool>,
    /// Per entry: the identity a file copied now had once its metadata was applied.
    ids: Vec<Option<SourceId>>,
    /// Per entry: the content is known to match its hash (copied and hashed now, or linked
    /// to a previous-snapshot inode that was itself known good), for the verify cache.
    hash_known: Vec<bool>,
    needed: u64,
    sockets: u64,
}

/// Whether the walk found the published snapshot `prev` exact: same volumes, every entry
/// equal to its manifest entry (source identities included, so no content changed), and
/// every inode of the snapshot vouched unchanged since it last matched.
fn unchanged(plans: &[Plan], prev: &Manifest) -> bool {
    plans.len() == prev.volumes.len()
        && plans.iter().zip(&prev.volumes).all(|(p, v)| {
            p.name == v.name
                && p.entries.len() == v.entries.len()
                && p.same.iter().all(|s| *s)
                && p.entries == v.entries
        })
}

/// One entry found by the walk.
struct Found {
    entry: Entry,
    dev_ino: (u64, u64),
    nlink: u64,
    blocks: u64,
    reuse: Option<(PathBuf, SourceId)>,
}

fn plan_volume(
    name: &str,
    src: &Path,
    prev: Option<&Volume>,
    prev_dir: &Path,
    prev_known: &Verified,
) -> Result<Plan> {
    let prev_by_path: HashMap<Vec<u8>, usize> = prev
        .map(|v| {
            v.entries
                .iter()
                .enumerate()
                .map(|(i, e)| (e.rel_bytes(), i))
                .collect()
        })
        .unwrap_or_default();
    let snap_root = prev_dir.join(VOLUMES).join(name);
    let inspect = |rel: &Path| -> Result<Option<Found>> {
        use std::os::unix::fs::MetadataExt;
        let path = src.join(rel);
        let Some((mut e, md)) = meta::entry_of(&path, rel)? else {
            tracing::warn!(path = %path.display(), "skipping a socket");
            return Ok(None);
        };
        let mut reuse = None;
        if let Some(v) = prev
            && let Some(&i) = prev_by_path.get(rel.as_os_str().as_bytes())
        {
            let p = &v.entries[i];
            // The manifest only says what the previous entry was when it was taken; its inode
            // may have been altered since (a user, tampering, a bad disk write). Only the
            // verify cache's identity, unchanged since the entry last matched (its content
            // hashed clean, its metadata compared), vouches that it still is that (the kernel
            // moves ctime on any change, a directory's on any change to its names). Whoever
            // uses the inode checks that identity right before (the workspace, the link
            // job, the no-op check); a plan never trusts it on its own.
            if let Some(&vouched) = prev_known.get(name, i)
                && e.kind == Kind::File
                && p.kind == Kind::File
                && p.link_of.is_none()
                && p.src.is_some()
                && p.src == e.src
                && p.sha256.is_some()
            {
                e.sha256 = p.sha256.clone();
                e.data = p.data.clone();
                reuse = Some((snap_root.join(rel), vouched));
            }
        }
        Ok(Some(Found {
            entry: e,
            dev_ino: (md.dev(), md.ino()),
            nlink: md.nlink(),
            blocks: md.blocks(),
            reuse,
        }))
    };
    let Some(root) = inspect(Path::new(""))? else {
        return Err(io("snapshotting", src)(std::io::Error::other(
            "the volume root is a socket",
        )));
    };
    let mut children = if root.entry.kind == Kind::Dir {
        walk(src, &inspect)?
    } else {
        HashMap::new()
    };

    // Assembled in walk order (depth first, names sorted), which the manifest keeps.
    let mut entries = Vec::new();
    let mut reuse = Vec::new();
    let mut needed = 0u64;
    let mut sockets = 0u64;
    let mut first_by_inode: HashMap<(u64, u64), usize> = HashMap::new();
    let mut stack = vec![Some(root)];
    while let Some(found) = stack.pop() {
        let Some(mut f) = found else {
            sockets += 1;
            continue;
        };
        needed += ENTRY_OVERHEAD;
        if f.entry.kind == Kind::Dir
            && let Some(kids) = children.remove(&f.entry.rel())
        {
            stack.extend(kids.into_iter().rev());
        }
        if f.entry.kind == Kind::File {
            if f.nlink > 1 {
                if let Some(&first) = first_by_inode.get(&f.dev_ino) {
                    f.entry.link_of = Some(first);
                    f.entry.src = None;
                    f.entry.data = None;
                    // The first name's hash, as the manifest lists it for every name.
                    f.entry.sha256 = entries.get(first).and_then(|e: &Entry| e.sha256.clone());
                    entries.push(f.entry);
                    reuse.push(None);
                    continue;
                }
                first_by_inode.insert(f.dev_ino, entries.len());
            }
            if f.reuse.is_none() {
                needed += f.blocks * 512;
            }
        }
        entries.push(f.entry);
        reuse.push(f.reuse);
    }
    // Only a source found exactly as the manifest has it can make a no-op take; only then
    // is every inode of the published snapshot checked (one lstat each).
    let same = match prev {
        Some(v) if v.entries == entries => still_vouched(name, v, &snap_root, prev_known),
        _ => vec![false; entries.len()],
    };
    Ok(Plan {
        name: name.to_owned(),
        src: src.to_owned(),
        entries,
        reuse,
        same,
        shared: Vec::new(),
        kept: Vec::new(),
        ids: Vec::new(),
        hash_known: Vec::new(),
        needed,
        sockets,
    })
}

/// Per entry of the published volume `v` (at `root`): its inode still has the identity the
/// verify cache recorded when it last matched (a further name of a hardlinked file: its
/// first name's inode). Checked on every worker: a cold lstat waits on the disk.
fn still_vouched(name: &str, v: &Volume, root: &Path, known: &Verified) -> Vec<bool> {
    crate::pool::map(v.entries.len(), |i| {
        let e = &v.entries[i];
        known.get(name, e.link_of.unwrap_or(i)).is_some_and(|id| {
            std::fs::symlink_metadata(root.join(e.rel()))
                .is_ok_and(|md| meta::source_id(&md) == *id)
        })
    })
}

impl IsDir for Found {
    fn is_dir(&self) -> bool {
        self.entry.kind == Kind::Dir
    }
}

/// Builds the new tree in `tmp`: from nothing, or from the previous take's spare (`claimed`:
/// moved to `tmp`), which keeps what it already has right.
fn build(
    tmp: &Path,
    claimed: bool,
    plans: &mut [Plan],
    summary: &mut Summary,
    progress: &dyn Progress,
) -> Result<()> {
    let kept = if claimed {
        let want: Vec<spare::Want> = plans
            .iter()
            .map(|p| spare::Want {
                name: &p.name,
                entries: &p.entries,
                vouched: p
                    .reuse
                    .iter()
                    .map(|r| r.as_ref().map(|(_, v)| *v))
                    .collect(),
            })
            .collect();
        spare::reconcile(tmp, &want)?
    } else {
        std::fs::create_dir_all(tmp.join(VOLUMES)).map_err(io("creating", tmp))?;
        plans.iter().map(|p| vec![false; p.entries.len()]).collect()
    };
    for (plan, kept) in plans.iter_mut().zip(kept) {
        plan.kept = kept;
        let kept = &plan.kept;
        let root = tmp.join(VOLUMES).join(&plan.name);
        let mut jobs = Vec::new();
        let mut splits: Vec<SplitFile> = Vec::new();
        let n = plan.entries.len();
        let mut has_meta = vec![false; n];
        plan.hash_known = vec![false; n];
        plan.shared = vec![false; n];
        plan.ids = vec![None; n];
        // Directories, links and special files first (parents before children: walk order).
        for (i, e) in plan.entries.iter().enumerate() {
            let dst = root.join(e.rel());
            match e.kind {
                Kind::Dir => {
                    if !kept[i] {
                        std::fs::create_dir(&dst).map_err(io("creating", &dst))?;
                    }
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
                // Already the previous snapshot's inode, which has the content, hash and
                // metadata.
                Kind::File if kept[i] => {
                    summary.files += 1;
                    summary.files_reused += 1;
                    summary.bytes_reused += e.size;
                    has_meta[i] = true;
                    plan.hash_known[i] = true;
                    plan.shared[i] = true;
                    progress.advanced(1, e.size);
                }
                Kind::File => {
                    summary.files += 1;
                    let tree = plan.src.join(e.rel());
                    let src = match &plan.reuse[i] {
                        Some((prev, vouched)) => Source::Previous {
                            prev: prev.clone(),
                            vouched: *vouched,
                            tree,
                        },
                        // A big file is cut into pieces that are copied and hashed as jobs
                        // of their own, so it is spread over every core.
                        None if e.size > content::PIECE => {
                            match copy::split(&tree, &dst, &PROBES)? {
                                Some(split) => {
                                    let n = splits.len();
                                    for (piece, &(_, len)) in split.pieces.iter().enumerate() {
                                        jobs.push(Job {
                                            src: Source::Piece { split: n, piece },
                                            dst: dst.clone(),
                                            index: i,
                                            size: len,
                                        });
                                    }
                                    splits.push(SplitFile {
                                        index: i,
                                        src: tree,
                                        dst,
                                        split,
                                    });
                                    continue;
                                }
                                None => Source::Tree(tree),
                            }
                        }
                        None => Source::Tree(tree),
                    };
                    jobs.push(Job {
                        src,
                        dst,
                        index: i,
                        size: e.size,
                    });
                }
            }
        }
        // Biggest first, so no big piece is left alone on one core at the end.
        jobs.sort_by_key(|j| std::cmp::Reverse(j.size));
        let results = copy_parallel(&jobs, &splits, &plan.entries, progress)?;
        let mut pieces: Vec<Vec<[u8; 32]>> = splits
            .iter()
            .map(|s| vec![[0; 32]; s.split.pieces.len()])
            .collect();
        for (job, done) in jobs.iter().zip(results) {
            has_meta[job.index] = true;
            let e = &mut plan.entries[job.index];
            plan.hash_known[job.index] = true;
            let c = match done {
                Done::Linked => {
                    plan.shared[job.index] = true;
                    summary.bytes_reused += e.size;
                    summary.files_reused += 1;
                    continue;
                }
                Done::Piece(h) => {
                    if let Source::Piece { split, piece } = job.src {
                        pieces[split][piece] = h;
                    }
                    continue;
                }
                Done::Copied(c) => c,
            };
            plan.ids[job.index] = c.id;
            e.sha256 = Some(c.sha256);
            e.data = c.data;
            count(summary, c.method, e.size);
        }
        for (sf, hashes) in splits.iter().zip(pieces) {
            let e = &mut plan.entries[sf.index];
            e.sha256 = Some(content::combine(sf.split.size, &sf.split.pieces, &hashes));
            e.data = Some(sf.split.data.clone());
            count(summary, sf.split.method, e.size);
            // After the content, so the mtime sticks.
            meta::apply(&sf.dst, e)?;
            let data: u64 = sf.split.pieces.iter().map(|&(_, len)| len).sum();
            progress.advanced(1, e.size.saturating_sub(data));
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

/// Per volume of the new snapshot, the names of the replaced one (`prev`) that it does not
/// share, in `prev`'s walk order: regular files whose inode the new snapshot does not hold at
/// the same path, and directories it does not have. (Symlinks and special files stay: the
/// next take recreates them anyway.)
fn unshared(prev: &Manifest, new: &[Volume], shared: &[&[bool]]) -> Vec<(String, Vec<Vec<u8>>)> {
    new.iter()
        .zip(shared)
        .map(|(v, shared)| {
            let now: HashMap<Vec<u8>, (Kind, bool)> = v
                .entries
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let first = e.kind == Kind::File && e.link_of.is_none();
                    let kept = first && shared.get(i).copied().unwrap_or(false);
                    (e.rel_bytes(), (e.kind, kept))
                })
                .collect();
            let gone = prev
                .volume(&v.name)
                .map(|old| {
                    old.entries
                        .iter()
                        .filter(|e| {
                            let rel = e.rel_bytes();
                            match (e.kind, now.get(&rel)) {
                                (Kind::File, Some((Kind::File, true))) => false,
                                (Kind::File, _) => true,
                                (Kind::Dir, Some((Kind::Dir, _))) => false,
                                (Kind::Dir, _) => !rel.is_empty(),
                                _ => false,
                            }
                        })
                        .map(Entry::rel_bytes)
                        .collect()
                })
                .unwrap_or_default();
            (v.name.clone(), gone)
        })
        .collect()
}

fn count(summary: &mut Summary, method: Method, size: u64) {
    match method {
        Method::Reflink => {
            summary.bytes_reflinked += size;
            summary.files_reflinked += 1;
        }
        Method::Copy => {
            summary.bytes_copied += size;
            summary.files_copied += 1;
        }
    }
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

/// Copies and hashes, or links, files and pieces of big files on every core; a whole copied
/// file gets its metadata right away (after its content, so the mtime sticks), which spreads
/// those syscalls too.
fn copy_parallel(
    jobs: &[Job],
    splits: &[SplitFile],
    entries: &[Entry],
    progress: &dyn Progress,
) -> Result<Vec<Done>> {
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
                        copy::copy_and_hash(src, &job.dst, &PROBES, Some(&entries[job.index]))
                            .map(Done::Copied)
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
                        Source::Piece { split, piece } => {
                            let sf = &splits[*split];
                            let (off, len) = sf.split.pieces[*piece];
                            copy::split_piece(&sf.src, &sf.dst, off, len, sf.split.method)
                                .map(Done::Piece)
                        }
                    };
                    let failed = r.is_err();
                    if r.is_ok() {
                        match job.src {
                            // The file is counted once all its pieces are in (see `build`).
                            Source::Piece { .. } => progress.advanced(0, job.size),
                            _ => progress.advanced(1, job.size),
                        }
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
