//! Export and import of a snapshot as one tar stream, and import of the Python prototype's
//! layout (`<app>/snapshot/{meta.json, volumes/<volume>.tar}` + `<app>/last_good`).
//!
//! The stream starts with `manifest.json`; tar headers carry structure (type, link targets,
//! content) and the manifest carries the exact metadata (nanosecond mtimes, xattrs, owners), so
//! an import is rebuilt from the manifest and then verified before it is published: a damaged
//! or hostile archive can never replace a good snapshot.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use crate::cache::Verified;
use crate::error::{Error, Result, io};
use crate::manifest::{self, Entry, Kind, Manifest, VOLUMES};
use crate::publish;
use crate::space::Reserve;
use crate::take::{TakeRequest, apply_all, mknod, take};
use crate::verify::check;

/// Writes the snapshot `dir` to `out` as a tar stream.
pub fn export(dir: &Path, out: impl Write) -> Result<()> {
    let m = Manifest::load(dir)?;
    let mut b = tar::Builder::new(out);
    let werr = |p: &Path| {
        let p = p.to_owned();
        move |e| Error::Io {
            op: "writing the archive entry for",
            path: p,
            source: e,
        }
    };
    let mbytes =
        std::fs::read(dir.join(manifest::FILE)).map_err(io("reading", dir.join(manifest::FILE)))?;
    let mut h = header(tar::EntryType::Regular, 0o644, mbytes.len() as u64);
    b.append_data(&mut h, manifest::FILE, mbytes.as_slice())
        .map_err(werr(&dir.join(manifest::FILE)))?;
    for v in &m.volumes {
        let root = Path::new(VOLUMES).join(&v.name);
        for e in &v.entries {
            let rel = root.join(e.rel());
            let src = dir.join(&rel);
            match (e.kind, e.link_of) {
                (Kind::File, Some(first)) => {
                    let mut h = header(tar::EntryType::Link, e.mode, 0);
                    b.append_link(&mut h, &rel, root.join(v.entries[first].rel()))
                        .map_err(werr(&src))?;
                }
                (Kind::File, None) => {
                    let f = std::fs::File::open(&src).map_err(io("opening", &src))?;
                    let mut h = header(tar::EntryType::Regular, e.mode, e.size);
                    b.append_data(&mut h, &rel, f).map_err(werr(&src))?;
                }
                (Kind::Dir, _) => {
                    let mut h = header(tar::EntryType::Directory, e.mode, 0);
                    b.append_data(&mut h, &rel, std::io::empty())
                        .map_err(werr(&src))?;
                }
                (Kind::Symlink, _) => {
                    let t = e.target.as_ref().map(|t| t.to_bytes()).unwrap_or_default();
                    let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                    b.append_link(&mut h, &rel, manifest::os(&t))
                        .map_err(werr(&src))?;
                }
                (Kind::Fifo | Kind::Chardev | Kind::Blockdev, _) => {
                    let t = match e.kind {
                        Kind::Fifo => tar::EntryType::Fifo,
                        Kind::Chardev => tar::EntryType::Char,
                        _ => tar::EntryType::Block,
                    };
                    let mut h = header(t, e.mode, 0);
                    b.append_data(&mut h, &rel, std::io::empty())
                        .map_err(werr(&src))?;
                }
            }
        }
    }
    b.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(werr(dir))?;
    Ok(())
}

fn header(t: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(t);
    h.set_mode(mode);
    h.set_size(size);
    h
}

/// A relative path inside the archive that stays inside the import directory.
fn safe_rel(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// Reads a tar stream written by [`export`] and publishes it as `<parent>/snapshot` — only
/// after it verified clean against its own manifest.
pub fn import(parent: &Path, input: impl Read) -> Result<()> {
    std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
    publish::sweep_stale(parent)?;
    let tmp = publish::tmp_dir(parent);
    let result = unpack(&tmp, input).and_then(|()| {
        let m = Manifest::load(&tmp)?;
        let mut known = Verified::default();
        let report = check(&tmp, &m, None, &mut known)?;
        if !report.problems.is_empty() {
            return Err(Error::Corrupt {
                dir: tmp.clone(),
                problems: report.problems,
            });
        }
        publish::syncfs(&tmp)?;
        publish::publish(parent, &tmp, &crate::progress::NoProgress)?;
        Ok(m)
    });
    if result.is_err() {
        let _ = publish::remove_tree(&tmp);
    }
    let m = result?;
    let published = parent.join(publish::SNAPSHOT);
    // Every file was just hashed clean by `check`.
    Verified::record_all(&published, &m, |_, _| true).save(&published);
    Ok(())
}

fn unpack(tmp: &Path, input: impl Read) -> Result<()> {
    std::fs::create_dir_all(tmp).map_err(io("creating", tmp))?;
    let bad = |why: String| Error::Manifest {
        path: tmp.join(manifest::FILE),
        why,
    };
    let mut archive = tar::Archive::new(input);
    let mut manifest: Option<Manifest> = None;
    let mut by_path: HashMap<PathBuf, Entry> = HashMap::new();
    for entry in archive
        .entries()
        .map_err(io("reading the archive into", tmp))?
    {
        let mut entry = entry.map_err(io("reading the archive into", tmp))?;
        let raw = entry
            .path()
            .map_err(io("reading an entry name in", tmp))?
            .into_owned();
        let rel = safe_rel(&raw)
            .ok_or_else(|| bad(format!("unsafe path in archive: {}", raw.display())))?;
        let dst = tmp.join(&rel);
        if rel == Path::new(manifest::FILE) {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(io("reading", &dst))?;
            let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
            for v in &m.volumes {
                manifest::check_name(&v.name)?;
                for e in &v.entries {
                    by_path.insert(Path::new(VOLUMES).join(&v.name).join(e.rel()), e.clone());
                }
            }
            std::fs::write(&dst, &bytes).map_err(io("writing", &dst))?;
            manifest = Some(m);
            continue;
        }
        let Some(e) = by_path.get(&rel) else {
            return Err(bad(format!(
                "{} is not in the manifest (or comes before it)",
                rel.display()
            )));
        };
        let t = entry.header().entry_type();
        if t.is_dir() {
            std::fs::create_dir_all(&dst).map_err(io("creating", &dst))?;
        } else if t.is_file() {
            let mut f = std::fs::File::create(&dst).map_err(io("creating", &dst))?;
            std::io::copy(&mut entry, &mut f).map_err(io("writing", &dst))?;
        } else if t.is_hard_link() {
            let target = entry
                .link_name()
                .map_err(io("reading a link in", tmp))?
                .and_then(|l| safe_rel(&l))
                .ok_or_else(|| bad(format!("bad hardlink target for {}", rel.display())))?;
            std::fs::hard_link(tmp.join(target), &dst).map_err(io("linking", &dst))?;
        } else if t.is_symlink() {
            let target = entry
                .link_name_bytes()
                .map(|b| b.into_owned())
                .ok_or_else(|| bad(format!("symlink {} has no target", rel.display())))?;
            std::os::unix::fs::symlink(manifest::os(&target), &dst)
                .map_err(io("creating symlink", &dst))?;
        } else if matches!(e.kind, Kind::Fifo | Kind::Chardev | Kind::Blockdev) {
            mknod(&dst, e)?;
        } else {
            return Err(bad(format!("unsupported entry type for {}", rel.display())));
        }
    }
    let m = manifest.ok_or_else(|| bad("the archive has no manifest.json".to_owned()))?;
    for v in &m.volumes {
        let root = tmp.join(VOLUMES).join(&v.name);
        std::fs::create_dir_all(&root).map_err(io("creating", &root))?;
        apply_all(&root, &v.entries, &[])?;
    }
    Ok(())
}

/// What the prototype left beside its snapshot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LegacyImport {
    /// The content of `<app>/last_good`, trimmed.
    pub last_good: Option<String>,
    pub volumes: Vec<String>,
    /// Where the prototype's snapshot was kept (moved aside, never deleted).
    pub kept_at: PathBuf,
    /// The prototype's `meta.json`, parsed (`None` when it is not JSON; the bytes are kept
    /// as `legacy-meta.json` in the new snapshot either way).
    pub meta: Option<serde_json::Value>,
}

/// Converts the prototype's `<app>/snapshot/{meta.json, volumes/<volume>.tar}` into a snapshot
/// of this format at `<app>/snapshot`. The old directory is moved to `<app>/legacy-snapshot` and
/// kept; its `meta.json` is also copied into the new snapshot as `legacy-meta.json`.
pub fn import_legacy(app_dir: &Path) -> Result<LegacyImport> {
    let old = app_dir.join(publish::SNAPSHOT);
    let kept = app_dir.join("legacy-snapshot");
    if !old.join("meta.json").exists() {
        return Err(Error::Manifest {
            path: old.join("meta.json"),
            why: "no prototype snapshot here (meta.json missing)".to_owned(),
        });
    }
    if kept.exists() {
        return Err(Error::Manifest {
            path: kept,
            why: "a previous legacy import left this; move it away first".to_owned(),
        });
    }
    std::fs::rename(&old, &kept).map_err(io("moving the prototype snapshot aside", &old))?;
    let staging = app_dir.join(format!(".legacy-staging-{}", std::process::id()));
    let result = (|| {
        let mut sources = Vec::new();
        let vols = kept.join(VOLUMES);
        let mut names: Vec<PathBuf> = std::fs::read_dir(&vols)
            .map_err(io("listing", &vols))?
            .map(|d| d.map(|d| d.path()))
            .collect::<std::io::Result<_>>()
            .map_err(io("listing", &vols))?;
        names.sort();
        for tarball in names {
            let Some(name) = tarball
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".tar"))
                .map(str::to_owned)
            else {
                continue;
            };
            manifest::check_name(&name)?;
            let dst = staging.join(&name);
            std::fs::create_dir_all(&dst).map_err(io("creating", &dst))?;
            let f = std::fs::File::open(&tarball).map_err(io("opening", &tarball))?;
            let mut a = tar::Archive::new(f);
            a.set_preserve_permissions(true);
            a.set_preserve_ownerships(true);
            a.set_preserve_mtime(true);
            a.set_unpack_xattrs(true);
            // `unpack` refuses entries that would land outside `dst`.
            a.unpack(&dst).map_err(io("unpacking", &tarball))?;
            sources.push((name, dst));
        }
        take(&TakeRequest {
            parent: app_dir.to_owned(),
            sources: sources.clone(),
            reserve: Reserve::default(),
        })?;
        let meta = kept.join("meta.json");
        let copy = app_dir.join(publish::SNAPSHOT).join("legacy-meta.json");
        std::fs::copy(&meta, &copy).map_err(io("copying", &meta))?;
        let last_good = std::fs::read(app_dir.join("last_good"))
            .ok()
            .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
            .filter(|s| !s.is_empty());
        let meta = std::fs::read(&meta)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        Ok(LegacyImport {
            meta,
            last_good,
            volumes: sources.into_iter().map(|(n, _)| n).collect(),
            kept_at: kept.clone(),
        })
    })();
    let _ = publish::remove_tree(&staging);
    if result.is_err() && !app_dir.join(publish::SNAPSHOT).exists() {
        // Put the prototype's snapshot back where the operator expects it.
        let _ = std::fs::rename(&kept, &old);
    }
    result
}
