//! Verification: every hash recomputed, every entry's metadata compared with the manifest,
//! every unexpected entry reported; all mismatches, by path, not just the first.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crate::copy;
use crate::error::{Result, io};
use crate::manifest::{self, Kind, Manifest, VOLUMES};
use crate::meta;

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

/// Verifies the snapshot directory `dir` (holding `manifest.json` and `volumes/`).
pub fn verify(dir: &Path) -> Result<VerifyReport> {
    let started = Instant::now();
    let m = Manifest::load(dir)?;
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
    let mut hash_jobs: Vec<(PathBuf, String, String, u64)> = Vec::new();
    for v in &m.volumes {
        let root = dir.join(VOLUMES).join(&v.name);
        let mut expected: HashSet<PathBuf> = HashSet::new();
        for e in &v.entries {
            let rel = e.rel();
            let label = format!("{}/{}", v.name, rel.display());
            expected.insert(rel.clone());
            report.entries += 1;
            let path = root.join(&rel);
            match meta::differences(&path, e) {
                Ok(diffs) => {
                    for d in diffs {
                        push(label.clone(), d);
                    }
                }
                Err(err) => {
                    push(label.clone(), err.to_string());
                    continue;
                }
            }
            if e.kind == Kind::File && e.link_of.is_none() {
                hash_jobs.push((path, label, e.sha256.clone().unwrap_or_default(), e.size));
            }
        }
        // Anything in the tree the manifest does not list.
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            let path = root.join(&rel);
            let md = match std::fs::symlink_metadata(&path) {
                Ok(md) => md,
                Err(_) => continue,
            };
            if !expected.contains(&rel) {
                push(
                    format!("{}/{}", v.name, rel.display()),
                    "not in the manifest".to_owned(),
                );
                continue;
            }
            if md.is_dir() {
                for d in std::fs::read_dir(&path).map_err(io("listing", &path))? {
                    let d = d.map_err(io("listing", &path))?;
                    stack.push(rel.join(d.file_name()));
                }
            }
        }
    }
    let next = AtomicUsize::new(0);
    let hashed = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 4);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((path, label, want, size)) = hash_jobs.get(i) else {
                        break;
                    };
                    match copy::hash_path(path) {
                        Ok(h) if &h == want => {}
                        Ok(h) => push(
                            label.clone(),
                            format!("sha256 mismatch: {h}, expected {want}"),
                        ),
                        Err(e) => push(label.clone(), e.to_string()),
                    }
                    hashed.fetch_add(*size as usize, Ordering::Relaxed);
                }
            });
        }
    });
    report
        .problems
        .extend(problems.into_inner().unwrap_or_default());
    report.bytes_hashed = hashed.into_inner() as u64;
    report.millis = started.elapsed().as_millis() as u64;
    Ok(report)
}
