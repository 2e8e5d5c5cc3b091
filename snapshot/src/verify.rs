//! Verification: every hash recomputed, every entry's metadata compared with the manifest,
//! every unexpected entry reported; all mismatches, by path, not just the first.

use std::collections::HashSet;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use crate::cache::Verified;
use crate::content;
use crate::error::{Result, io};
use crate::fsat::{self, Walker};
use crate::manifest::{self, Kind, Manifest, SourceId, VOLUMES};
use crate::meta::{At, source_id};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Problem {
    /// `<volume>/<path inside the volume>`, or `manifest.json`.
    pub path: String,
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.what)
    }
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct VerifyReport {
    pub problems: Vec<Problem>,
    pub entries: u64,
    pub bytes_hashed: u64,
    pub millis: u64,
}

/// Verifies the snapshot directory `dir` (holding `manifest.json` and `volumes/`): every file
/// is rehashed.
pub fn verify(dir: &Path) -> Result<VerifyReport> {
    let m = Manifest::load(dir)?;
    let mut known = Verified::load(dir, &m);
    known.volumes.clear();
    let report = check(dir, &m, None, &mut known)?;
    if report.problems.is_empty() {
        known.save(dir);
    }
    Ok(report)
}

/// Verifies the volumes of `dir` (all, or only `only`) against `m`. Metadata is always
/// compared; a file whose identity is in `known` is not rehashed (see `cache`), and files
/// hashed clean are added to it.
pub(crate) fn check(
    dir: &Path,
    m: &Manifest,
    only: Option<&str>,
    known: &mut Verified,
) -> Result<VerifyReport> {
    let started = Instant::now();
    let mut report = VerifyReport::default();
    if manifest::digest(&m.volumes) != m.digest {
        report.problems.push(Problem {
            path: manifest::FILE.to_owned(),
            what: "digest mismatch: the manifest was altered or truncated".to_owned(),
        });
    }
    let problems = Mutex::new(Vec::new());
    let push = |path: String, what: String| {
        if let Ok(mut p) = problems.lock() {
            p.push(Problem { path, what });
        }
    };
    let mut hash_jobs: Vec<HashJob> = Vec::new();
    let volumes: Vec<&manifest::Volume> = m
        .volumes
        .iter()
        .filter(|v| only.is_none_or(|n| n == v.name))
        .collect();
    // Every volume is reached from an fd of its root, and nothing below it is ever followed
    // (see `fsat`): a symlink where the manifest has a directory is a type mismatch, not a
    // way out of the snapshot.
    let mut roots: Vec<Option<(OwnedFd, PathBuf)>> = Vec::new();
    for v in &volumes {
        let path = dir.join(VOLUMES).join(&v.name);
        match fsat::open_root(&path) {
            Ok(fd) => roots.push(Some((fd, path))),
            Err(e) => {
                push(v.name.clone(), e.to_string());
                roots.push(None);
            }
        }
    }
    for (slot, v) in volumes.iter().enumerate() {
        let (structural, usable) = manifest::structure(v);
        for (path, what) in structural {
            push(path, what);
        }
        report.entries += v.entries.len() as u64;
        let Some((root, root_path)) = &roots[slot] else {
            continue;
        };
        let mut walker = Walker::new(root.as_fd(), root_path);
        let mut expected: HashSet<Vec<u8>> = HashSet::new();
        for (index, e) in v.entries.iter().enumerate() {
            if !usable[index] {
                continue;
            }
            let rel = e.rel_bytes();
            let label = format!("{}/{}", v.name, String::from_utf8_lossy(&rel));
            expected.insert(rel.clone());
            let path = walker.label(&rel);
            let md = match walker.parent(&rel).and_then(|(d, name)| {
                At {
                    dir: d,
                    name: &name,
                    label: &path,
                }
                .differences(e)
            }) {
                Ok((diffs, md)) => {
                    if diffs.is_empty() && e.kind != Kind::File {
                        // Recorded, and saved only if the whole check is clean (see `cache`).
                        // The identity is taken before this directory's listing is checked,
                        // so a name added after that check moves it.
                        known.set(&v.name, v.entries.len(), index, source_id(&md));
                    }
                    for d in diffs {
                        push(label.clone(), d);
                    }
                    md
                }
                Err(err) => {
                    push(label.clone(), err.to_string());
                    continue;
                }
            };
            if e.kind == Kind::File && e.link_of.is_none() && md.is_file() {
                let id = source_id(&md);
                if known.get(&v.name, index) == Some(&id) {
                    continue;
                }
                hash_jobs.push(HashJob {
                    slot,
                    rel,
                    label,
                    want: e.sha256.clone().unwrap_or_default(),
                    size: e.size,
                    data: e.data.as_deref(),
                    pieces: e.data.as_deref().map(content::pieces).unwrap_or_default(),
                    volume: &v.name,
                    len: v.entries.len(),
                    index,
                    id,
                });
            }
        }
        // Anything in the tree the manifest does not list.
        // Types come from the directory entries: no second lstat of every entry.
        let mut stack = vec![Vec::new()];
        while let Some(rel) = stack.pop() {
            let path = walker.label(&rel);
            let Ok(fd) = walker.dir(&rel) else {
                // Already reported: a listed directory is not one.
                continue;
            };
            for (name, kind) in fsat::list(fd, &path)? {
                let mut child = rel.clone();
                if !child.is_empty() {
                    child.push(b'/');
                }
                child.extend_from_slice(name.to_bytes());
                if !expected.contains(&child) {
                    push(
                        format!("{}/{}", v.name, String::from_utf8_lossy(&child)),
                        "not in the manifest".to_owned(),
                    );
                    continue;
                }
                let is_dir = match kind {
                    Some(k) => k == Kind::Dir,
                    None => fsat::lstat_at(fd, &name).is_ok_and(|md| md.is_dir()),
                };
                if is_dir {
                    stack.push(child);
                }
            }
        }
    }
    // A file with `data` is hashed piece by piece, each piece a job of its own (plus one for
    // its holes), so one big file is hashed on every core; the rest whole, one job each.
    let mut parts: Vec<(usize, Part)> = Vec::new();
    for (i, j) in hash_jobs.iter().enumerate() {
        if j.data.is_some() {
            parts.extend((0..j.pieces.len()).map(|p| (i, Part::Piece(p))));
            parts.push((i, Part::Holes));
        } else {
            parts.push((i, Part::Whole));
        }
    }
    // Largest first, so one big piece does not end up alone on one core at the very end.
    parts.sort_by_key(|&(i, p)| std::cmp::Reverse(part_size(&hash_jobs[i], p)));
    let next = AtomicUsize::new(0);
    let hashed = AtomicU64::new(0);
    let results: Vec<Mutex<Outcome>> = hash_jobs
        .iter()
        .map(|j| {
            Mutex::new(Outcome {
                pieces: vec![None; j.pieces.len()],
                ..Outcome::default()
            })
        })
        .collect();
    // Cold small files are bound by I/O latency, not by the hash: more readers than cores
    // keep the disk's queue full (8 readers read a cold 20,000-file tree 1.7x faster than 2).
    let threads = crate::pool::io_threads();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut walkers: Vec<Option<Walker>> = roots
                    .iter()
                    .map(|r| r.as_ref().map(|(fd, p)| Walker::new(fd.as_fd(), p)))
                    .collect();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(i, part)) = parts.get(n) else {
                        break;
                    };
                    let job = &hash_jobs[i];
                    let Some(Some(walker)) = walkers.get_mut(job.slot) else {
                        break;
                    };
                    let r = hash_part(walker, job, part);
                    if let Ok(mut o) = results[i].lock() {
                        match r {
                            Ok(Done::Whole(h)) => o.whole = Some(h),
                            Ok(Done::Piece(h)) => {
                                if let Part::Piece(p) = part {
                                    o.pieces[p] = Some(h);
                                }
                            }
                            Ok(Done::Holes(clean)) => o.holes = Some(clean),
                            Err(e) => o.error = o.error.take().or(Some(e.to_string())),
                        }
                    }
                    hashed.fetch_add(part_size(job, part), Ordering::Relaxed);
                }
            });
        }
    });
    let mut clean = Vec::new();
    for (i, (job, o)) in hash_jobs.iter().zip(results).enumerate() {
        let o = o.into_inner().unwrap_or_default();
        let got = match (&o.error, job.data) {
            (Some(e), _) => Err(e.clone()),
            (None, None) => o.whole.ok_or_else(|| "not hashed".to_owned()),
            (None, Some(_)) => match (
                o.holes,
                o.pieces.iter().copied().collect::<Option<Vec<_>>>(),
            ) {
                (Some(false), _) => Ok(content::HOLE_NOT_EMPTY.to_owned()),
                (Some(true), Some(ps)) => Ok(content::combine(job.size, &job.pieces, &ps)),
                _ => Err("not hashed".to_owned()),
            },
        };
        match got {
            Ok(h) if h == job.want => clean.push(i),
            Ok(h) if h == content::HOLE_NOT_EMPTY => push(
                job.label.clone(),
                "content mismatch: data where the manifest has a hole".to_owned(),
            ),
            Ok(h) => push(
                job.label.clone(),
                format!("sha256 mismatch: {h}, expected {}", job.want),
            ),
            Err(e) => push(job.label.clone(), e),
        }
    }
    for i in clean {
        let j = &hash_jobs[i];
        known.set(j.volume, j.len, j.index, j.id);
    }
    report
        .problems
        .extend(problems.into_inner().unwrap_or_default());
    report.problems.sort_by(|a, b| a.path.cmp(&b.path));
    report.bytes_hashed = hashed.into_inner();
    report.millis = started.elapsed().as_millis() as u64;
    Ok(report)
}

#[derive(Debug, Clone, Copy)]
enum Part {
    Whole,
    Piece(usize),
    Holes,
}

enum Done {
    Whole(String),
    Piece([u8; 32]),
    Holes(bool),
}

#[derive(Default)]
struct Outcome {
    whole: Option<String>,
    pieces: Vec<Option<[u8; 32]>>,
    holes: Option<bool>,
    error: Option<String>,
}

fn part_size(job: &HashJob, part: Part) -> u64 {
    match part {
        Part::Whole => job.size,
        Part::Piece(p) => job.pieces.get(p).map_or(0, |&(_, len)| len),
        Part::Holes => 0,
    }
}

/// Hashes one part of the file of `job`, opened without following anything; a file that is
/// no longer the inode that was just compared is reported, not hashed.
fn hash_part(walker: &mut Walker, job: &HashJob, part: Part) -> Result<Done> {
    let path = walker.label(&job.rel);
    let (dir, name) = walker.parent(&job.rel)?;
    let f = fsat::open_read_at(dir, &name, &path)?;
    let md = f.metadata().map_err(io("stat", &path))?;
    if (md.dev(), md.ino()) != (job.id.dev, job.id.ino) {
        return Err(io("hashing", &path)(std::io::Error::other(
            "it was replaced while being verified",
        )));
    }
    Ok(match part {
        Part::Whole => Done::Whole(content::hash_whole(&f, md.len(), &path)?),
        Part::Piece(p) => {
            let (off, len) = job.pieces[p];
            Done::Piece(content::hash_range(&f, off, len, &path)?)
        }
        Part::Holes => Done::Holes(content::holes_are_clean(
            &f,
            md.len(),
            job.data.unwrap_or_default(),
            &path,
        )?),
    })
}

struct HashJob<'a> {
    /// Index into the opened volume roots.
    slot: usize,
    rel: Vec<u8>,
    label: String,
    want: String,
    size: u64,
    /// The entry's data segments, when it is hashed by pieces, and those pieces.
    data: Option<&'a [[u64; 2]]>,
    pieces: Vec<(u64, u64)>,
    volume: &'a str,
    len: usize,
    index: usize,
    id: SourceId,
}
