//! Identity caches: what is already known about an inode whose identity (dev, ino, size, mtime,
//! ctime) has not changed since.
//!
//! The kernel moves ctime on every write, chmod, chown, xattr change, link and unlink, and user
//! space cannot set it, so an unchanged identity means an unchanged file. Two caches use this:
//!
//! - `<snapshot dir>/.cache/verified.json`: for each manifest entry, the identity it had when
//!   it was last known to match its manifest entry: a regular file's content hashed to the
//!   manifest's sha256, any entry's metadata compared equal (written by take and by a clean
//!   verify). Restore's verification rehashes only files whose identity moved; a take reuses
//!   (hardlinks) a file of the previous snapshot only while its identity is the one recorded
//!   here (the manifest says what the file was, only this says it still is), and publishes
//!   nothing when every entry of the snapshot still has its recorded identity and the source
//!   still matches the manifest (a directory's ctime moves whenever a name in it is added,
//!   removed or renamed, so its identity also vouches for its listing).
//! - `<snapshot dir>/.cache/restore-<sha256 of the target path>.json`: for each file a
//!   restore wrote or checked in a target, its identity and sha256, so the next restore can
//!   tell "same content" without reading it (same size and mtime are not enough: a file can be
//!   rewritten and its mtime put back).
//!
//! `.cache` is the only thing ever written into a published snapshot: it is outside `volumes/`
//! and not the manifest, so neither verify nor export look at it, and each file in it is
//! replaced by a rename. A missing, stale or unreadable cache only costs rereading.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::manifest::{Manifest, SourceId, VOLUMES, hex, xattr_key};
use crate::meta::source_id;

/// How [`Verified::record_all`] records a regular file.
pub enum Record {
    /// Its content is not known to match its hash: nothing is recorded.
    Unknown,
    /// Known good: its identity is its lstat now.
    Lstat,
    /// Known good, and untouched since it had this identity (no lstat needed).
    As(SourceId),
}

/// Known-good identities of a snapshot's files, valid only for the manifest of `digest`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Verified {
    pub digest: String,
    /// Per volume, aligned with the manifest's entries.
    pub volumes: BTreeMap<String, Vec<Option<SourceId>>>,
}

const DIR: &str = ".cache";

impl Verified {
    pub fn path(dir: &Path) -> Option<PathBuf> {
        Some(dir.join(DIR).join("verified.json"))
    }

    /// The cache for `m`, or an empty one when there is none that matches.
    pub fn load(dir: &Path, m: &Manifest) -> Verified {
        let cached = Self::path(dir)
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice::<Verified>(&b).ok())
            .filter(|v| v.digest == m.digest);
        cached.unwrap_or_else(|| Verified {
            digest: m.digest.clone(),
            volumes: BTreeMap::new(),
        })
    }

    pub fn get(&self, volume: &str, index: usize) -> Option<&SourceId> {
        self.volumes.get(volume)?.get(index)?.as_ref()
    }

    pub fn set(&mut self, volume: &str, len: usize, index: usize, id: SourceId) {
        let v = self
            .volumes
            .entry(volume.to_owned())
            .or_insert_with(|| vec![None; len]);
        v.resize(len, None);
        v[index] = Some(id);
    }

    /// Records the identity of every entry of `m` found in `dir`: every directory, symlink
    /// and special file (the caller just made or checked them) by its lstat, and each regular
    /// file as `file(volume, index)` says.
    pub fn record_all(
        dir: &Path,
        m: &Manifest,
        file: impl Fn(&str, usize) -> Record + Sync,
    ) -> Verified {
        let mut out = Verified {
            digest: m.digest.clone(),
            volumes: BTreeMap::new(),
        };
        for v in &m.volumes {
            let root = dir.join(VOLUMES).join(&v.name);
            // Tens of thousands of lstats, each waiting on an inode read when it is cold.
            let ids = crate::pool::map(v.entries.len(), |i| {
                let e = &v.entries[i];
                let lstat = || {
                    std::fs::symlink_metadata(root.join(e.rel()))
                        .ok()
                        .map(|md| source_id(&md))
                };
                if e.kind != crate::manifest::Kind::File {
                    return lstat();
                }
                match file(&v.name, i) {
                    Record::Unknown => None,
                    Record::Lstat => lstat(),
                    Record::As(id) => Some(id),
                }
            });
            out.volumes.insert(v.name.clone(), ids);
        }
        out
    }

    pub fn save(&self, dir: &Path) {
        if let Some(p) = Self::path(dir) {
            save_json(&p, self);
        }
    }
}

/// What a restore left in a target: per file (path key as in `xattr_key`), identity and sha256.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct TargetState {
    pub target: String,
    pub files: HashMap<String, (SourceId, String)>,
}

impl TargetState {
    fn path(dir: &Path, target: &Path) -> Option<PathBuf> {
        let abs = std::path::absolute(target).ok()?;
        let key = hex(&Sha256::digest(abs.as_os_str().as_bytes()));
        Some(dir.join(DIR).join(format!("restore-{key}.json")))
    }

    pub fn load(dir: &Path, target: &Path) -> TargetState {
        Self::path(dir, target)
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Whether `rel` in the target still holds content of `sha256`, judged by identity alone.
    pub fn holds(&self, rel: &Path, md: &std::fs::Metadata, sha256: &str) -> bool {
        self.files
            .get(&xattr_key(rel.as_os_str().as_bytes()))
            .is_some_and(|(id, sha)| sha == sha256 && *id == source_id(md))
    }

    pub fn insert(&mut self, rel: &Path, id: SourceId, sha256: String) {
        self.files
            .insert(xattr_key(rel.as_os_str().as_bytes()), (id, sha256));
    }

    pub fn save(&mut self, dir: &Path, target: &Path) {
        let Some(p) = Self::path(dir, target) else {
            return;
        };
        self.target = target.to_string_lossy().into_owned();
        save_json(&p, self);
    }
}

/// Hands the previous snapshot's restore records to the new one being built in `tmp`: they
/// describe targets, not snapshots, and stay true until a target changes.
pub fn carry_restore_state(prev: &Path, tmp: &Path) {
    let Ok(rd) = std::fs::read_dir(prev.join(DIR)) else {
        return;
    };
    for d in rd.flatten() {
        let name = d.file_name();
        if !name.as_bytes().starts_with(b"restore-") || !name.as_bytes().ends_with(b".json") {
            continue;
        }
        let to = tmp.join(DIR).join(&name);
        let r = std::fs::create_dir_all(tmp.join(DIR)).and_then(|()| std::fs::copy(d.path(), &to));
        if let Err(e) = r {
            tracing::warn!(path = %to.display(), error = %e, "cannot carry a restore record over");
        }
    }
}

/// Write-then-rename, so a reader never sees half a cache; a failure is only logged.
fn save_json(path: &Path, value: &impl Serialize) {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let r = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| serde_json::to_vec(value).map_err(std::io::Error::other))
        .and_then(|b| std::fs::write(&tmp, b))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = r {
        let _ = std::fs::remove_file(&tmp);
        tracing::warn!(path = %path.display(), error = %e, "cannot write a cache");
    }
}
