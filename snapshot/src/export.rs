//! Export and import of a snapshot as one tar stream, and import of the Python prototype's
//! layout (`<app>/snapshot/{meta.json, volumes/<volume>.tar}` + `<app>/last_good`).
//!
//! The stream starts with `manifest.json`; tar headers carry structure (type, link targets,
//! content) and the manifest carries the exact metadata (nanosecond mtimes, xattrs, owners), so
//! an import is rebuilt from the manifest and then verified before it is published: a damaged
//! or hostile archive can never replace a good snapshot.

use std::collections::HashMap;
use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::cache::{Record, Verified};
use crate::copy;
use crate::error::{Error, Result, io};
use crate::fsat::{self, Walker};
use crate::manifest::{self, Entry, Kind, Manifest, VOLUMES};
use crate::meta::At;
use crate::publish;
use crate::space::Reserve;
use crate::take::{TakeRequest, take};
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

/// Reads a tar stream written by [`export`] and publishes it as `<parent>/snapshot`.
///
/// The archive is untrusted. It is extracted into a fresh directory this call creates (mode
/// 0700), entry by entry through directory fds opened `O_NOFOLLOW` (see `fsat`), and only
/// entries its manifest lists, of the listed type, under a listed directory, are accepted:
/// an unsafe path, an entry below a symlink, a hardlink to anything but an already extracted
/// file of the manifest, or content that does not hash to the manifest's is an error naming
/// the entry, before any owner, mode or xattr is applied. Metadata is applied only after
/// everything was extracted and checked; the result is verified once more in full and only
/// then published.
pub fn import(parent: &Path, input: impl Read) -> Result<()> {
    std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
    publish::sweep_stale(parent)?;
    let tmp = publish::tmp_dir(parent);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&tmp)
        .map_err(io("creating", &tmp))?;
    let result = unpack(parent, &tmp, input).and_then(|m| {
        // Every file's content was hashed while it was written; this compares the metadata
        // just applied, and the tree's shape, once more.
        let mut known = Verified::record_all(&tmp, &m, |_, _| Record::Lstat);
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
    // Every file was hashed clean on the way in.
    Verified::record_all(&published, &m, |_, _| Record::Lstat).save(&published);
    Ok(())
}

/// `volumes/<name>[/<rel>]`: where export puts an entry in the archive.
fn archive_path(volume: &str, rel: &[u8]) -> Vec<u8> {
    let mut p = format!("{VOLUMES}/{volume}").into_bytes();
    if !rel.is_empty() {
        p.push(b'/');
        p.extend_from_slice(rel);
    }
    p
}

fn unpack(parent: &Path, tmp: &Path, input: impl Read) -> Result<Manifest> {
    let archive = PathBuf::from(format!("archive imported into {}", parent.display()));
    let bad = |path: &[u8], why: String| Error::Archive {
        archive: archive.clone(),
        path: String::from_utf8_lossy(path).into_owned(),
        why,
    };
    let rerr = |e: std::io::Error| io("reading the archive imported into", parent)(e);
    let tmp_fd = fsat::open_root(tmp)?;
    let mut tar = tar::Archive::new(input);
    let mut entries = tar.entries().map_err(rerr)?;

    // The manifest comes first; nothing else is written before it is checked.
    let mpath = tmp.join(manifest::FILE);
    let mut first = entries
        .next()
        .ok_or_else(|| bad(b"", "the archive is empty".to_owned()))?
        .map_err(rerr)?;
    let raw = first.path_bytes().into_owned();
    manifest::check_path(&raw).map_err(|why| bad(&raw, format!("unsafe path: {why}")))?;
    if raw != manifest::FILE.as_bytes() || !first.header().entry_type().is_file() {
        return Err(bad(
            &raw,
            format!("the archive must start with {}", manifest::FILE),
        ));
    }
    let mut bytes = Vec::new();
    first.read_to_end(&mut bytes).map_err(rerr)?;
    let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| Error::Manifest {
        path: mpath.clone(),
        why: e.to_string(),
    })?;
    m.check_format(&mpath)?;
    m.check_paths(&mpath)?;
    if manifest::digest(&m.volumes) != m.digest {
        return Err(Error::Manifest {
            path: mpath,
            why: "digest mismatch: the manifest was altered or truncated".to_owned(),
        });
    }
    let mut index: HashMap<Vec<u8>, (usize, usize)> = HashMap::new();
    for (slot, v) in m.volumes.iter().enumerate() {
        let (problems, _) = manifest::structure(v);
        if let Some((path, why)) = problems.into_iter().next() {
            return Err(Error::UnsafePath {
                manifest: mpath,
                path,
                why,
            });
        }
        for (i, e) in v.entries.iter().enumerate() {
            if index
                .insert(archive_path(&v.name, &e.rel_bytes()), (slot, i))
                .is_some()
            {
                return Err(bad(v.name.as_bytes(), "volume listed twice".to_owned()));
            }
        }
    }
    let mut f = fsat::create_at(tmp_fd.as_fd(), c"manifest.json", &mpath)?;
    f.write_all(&bytes).map_err(io("writing", &mpath))?;
    drop(f);
    let vols = tmp.join(VOLUMES);
    fsat::mkdir_at(tmp_fd.as_fd(), c"volumes", &vols)?;
    let vols_fd = fsat::open_root(&vols)?;
    let mut roots = Vec::new();
    for v in &m.volumes {
        let path = vols.join(&v.name);
        let name =
            CString::new(v.name.as_str()).map_err(|e| bad(v.name.as_bytes(), e.to_string()))?;
        fsat::mkdir_at(vols_fd.as_fd(), &name, &path)?;
        roots.push((fsat::open_root(&path)?, path));
    }
    let mut walkers: Vec<Walker> = roots
        .iter()
        .map(|(fd, p)| Walker::new(fd.as_fd(), p))
        .collect();
    let mut first_walkers: Vec<Walker> = roots
        .iter()
        .map(|(fd, p)| Walker::new(fd.as_fd(), p))
        .collect();
    let mut extracted: Vec<Vec<bool>> = m
        .volumes
        .iter()
        .map(|v| vec![false; v.entries.len()])
        .collect();

    for entry in entries {
        let mut entry = entry.map_err(rerr)?;
        let t = entry.header().entry_type();
        let mut raw = entry.path_bytes().into_owned();
        if t.is_dir() && raw.len() > 1 && raw.ends_with(b"/") {
            raw.pop();
        }
        manifest::check_path(&raw).map_err(|why| bad(&raw, format!("unsafe path: {why}")))?;
        let Some(&(slot, i)) = index.get(&raw) else {
            return Err(bad(
                &raw,
                "not in the manifest (only the manifest's entries, by their exact path, are accepted)"
                    .to_owned(),
            ));
        };
        if extracted[slot][i] {
            return Err(bad(&raw, "appears twice in the archive".to_owned()));
        }
        let v = &m.volumes[slot];
        let e = &v.entries[i];
        let rel = e.rel_bytes();
        let link = entry.link_name_bytes().map(|l| l.into_owned());
        let fits = match (e.kind, e.link_of) {
            (Kind::Dir, _) => t.is_dir(),
            (Kind::File, None) => t.is_file(),
            (Kind::File, Some(_)) => t.is_hard_link(),
            (Kind::Symlink, _) => t.is_symlink(),
            (Kind::Fifo, _) => t.is_fifo(),
            (Kind::Chardev, _) => t.is_character_special(),
            (Kind::Blockdev, _) => t.is_block_special(),
        };
        if !fits {
            return Err(bad(
                &raw,
                format!(
                    "is a {t:?} in the archive, but the manifest lists a {:?}",
                    e.kind
                ),
            ));
        }
        let walker = &mut walkers[slot];
        let label = walker.label(&rel);
        match e.kind {
            Kind::Dir if rel.is_empty() => {}
            Kind::Dir => {
                let (d, nm) = walker.parent(&rel)?;
                fsat::mkdir_at(d, &nm, &label)?;
            }
            Kind::File => match e.link_of {
                None => {
                    let (d, nm) = walker.parent(&rel)?;
                    let mut f = fsat::create_at(d, &nm, &label)?;
                    let (sha, size) = match &e.data {
                        Some(data) => copy::write_and_hash_as(&mut entry, &f, &label, data)?,
                        None => copy::write_and_hash(&mut entry, &mut f, &label)?,
                    };
                    let want = e.sha256.as_deref().unwrap_or_default();
                    if sha != want || size != e.size {
                        return Err(bad(
                            &raw,
                            format!(
                                "content does not match the manifest: {size} bytes of sha256 {sha}, expected {} bytes of sha256 {want}",
                                e.size
                            ),
                        ));
                    }
                }
                Some(first) => {
                    // Only to the manifest's first name of this file, already extracted
                    // (so a regular file in this tree, reached without following anything).
                    let first_rel = v.entries[first].rel_bytes();
                    let want = archive_path(&v.name, &first_rel);
                    if link.as_deref() != Some(want.as_slice()) || !extracted[slot][first] {
                        return Err(bad(
                            &raw,
                            format!(
                                "hardlink to {:?}; the manifest says it is a further name of {:?}, which must come before it",
                                String::from_utf8_lossy(link.as_deref().unwrap_or_default()),
                                String::from_utf8_lossy(&want)
                            ),
                        ));
                    }
                    let first_walker = &mut first_walkers[slot];
                    let (fd, fnm) = first_walker.parent(&first_rel)?;
                    let (d, nm) = walker.parent(&rel)?;
                    fsat::link_at(fd, &fnm, d, &nm, &label)?;
                }
            },
            Kind::Symlink => {
                let want = e.target.as_ref().map(|t| t.to_bytes()).unwrap_or_default();
                if link.as_deref() != Some(want.as_slice()) {
                    return Err(bad(
                        &raw,
                        "symlink target differs from the manifest's".to_owned(),
                    ));
                }
                let (d, nm) = walker.parent(&rel)?;
                fsat::symlink_at(&want, d, &nm, &label)?;
            }
            Kind::Fifo | Kind::Chardev | Kind::Blockdev => {
                let (d, nm) = walker.parent(&rel)?;
                fsat::mknod_at(d, &nm, e.kind, e.rdev.unwrap_or(0), &label)?;
            }
        }
        extracted[slot][i] = true;
    }
    for (slot, v) in m.volumes.iter().enumerate() {
        if let Some(i) = extracted[slot].iter().position(|x| !x) {
            return Err(bad(
                &archive_path(&v.name, &v.entries[i].rel_bytes()),
                "listed in the manifest but missing from the archive".to_owned(),
            ));
        }
    }
    // Everything is in place and its content checked: only now owners, modes (setuid
    // included) and xattrs.
    for (slot, v) in m.volumes.iter().enumerate() {
        let metas: Vec<(Vec<u8>, &Entry)> = v
            .entries
            .iter()
            .filter(|e| e.link_of.is_none())
            .map(|e| (e.rel_bytes(), e))
            .collect();
        apply_all_at(&mut walkers[slot], &metas)?;
    }
    Ok(m)
}

/// Applies the metadata of every entry, fd-relative; directories deepest first and last,
/// since creating their children changed their mtimes.
fn apply_all_at(walker: &mut Walker, entries: &[(Vec<u8>, &Entry)]) -> Result<()> {
    let depth =
        |rel: &[u8]| rel.iter().filter(|b| **b == b'/').count() + usize::from(!rel.is_empty());
    let mut dirs: Vec<&(Vec<u8>, &Entry)> = entries
        .iter()
        .filter(|(_, e)| e.kind == Kind::Dir)
        .collect();
    dirs.sort_by_key(|(rel, _)| std::cmp::Reverse(depth(rel)));
    let others = entries.iter().filter(|(_, e)| e.kind != Kind::Dir);
    for (rel, e) in others.chain(dirs) {
        let label = walker.label(rel);
        let (dir, name) = walker.parent(rel)?;
        At {
            dir,
            name: &name,
            label: &label,
        }
        .apply(e)?;
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
        // A directory only this call writes to (a killed run's leftover is dropped first).
        publish::remove_tree(&staging)?;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&staging)
            .map_err(io("creating", &staging))?;
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
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&dst)
                .map_err(io("creating", &dst))?;
            extract_legacy(&tarball, &dst)?;
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

/// A prototype tar path, made relative to the volume root: `./` prefixes and a directory's
/// trailing `/` are dropped (GNU tar writes `./`, `./sub/`), `.` is the root; the rest must
/// pass `manifest::check_path`, or the archive is refused.
fn legacy_rel(raw: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let mut p = raw;
    while let Some(rest) = p.strip_prefix(b"./") {
        p = rest;
    }
    if p == b"." {
        p = b"";
    }
    let p = p.strip_suffix(b"/").unwrap_or(p);
    manifest::check_path(p)?;
    Ok(p.to_vec())
}

/// Extracts one prototype tarball into `dst` (a fresh directory this import created), through
/// directory fds opened `O_NOFOLLOW`: every entry must have a safe path (`..` is an error,
/// never skipped), sit under a directory extracted before it (never under a symlink), appear
/// once, and a hardlink must name a regular file extracted before it. Owners, modes, xattrs
/// and mtimes from the headers are applied only once everything is extracted.
fn extract_legacy(tarball: &Path, dst: &Path) -> Result<()> {
    let bad = |path: &[u8], why: String| Error::Archive {
        archive: tarball.to_owned(),
        path: String::from_utf8_lossy(path).into_owned(),
        why,
    };
    let rerr = io("reading", tarball);
    let root = fsat::open_root(dst)?;
    let mut walker = Walker::new(root.as_fd(), dst);
    let mut first_walker = Walker::new(root.as_fd(), dst);
    let f = std::fs::File::open(tarball).map_err(io("opening", tarball))?;
    let mut tar = tar::Archive::new(f);
    let mut kinds: HashMap<Vec<u8>, Kind> = HashMap::new();
    kinds.insert(Vec::new(), Kind::Dir);
    let mut metas: Vec<(Vec<u8>, Entry)> = Vec::new();
    for entry in tar.entries().map_err(rerr)? {
        let mut entry = entry.map_err(io("reading", tarball))?;
        let raw = entry.path_bytes().into_owned();
        let rel = legacy_rel(&raw).map_err(|why| bad(&raw, format!("unsafe path: {why}")))?;
        let t = entry.header().entry_type();
        let kind = if t.is_dir() {
            Kind::Dir
        } else if t.is_file() || t == tar::EntryType::Continuous || t.is_hard_link() {
            Kind::File
        } else if t.is_symlink() {
            Kind::Symlink
        } else if t.is_fifo() {
            Kind::Fifo
        } else if t.is_character_special() {
            Kind::Chardev
        } else if t.is_block_special() {
            Kind::Blockdev
        } else {
            return Err(bad(&raw, format!("unsupported entry type {t:?}")));
        };
        let h = entry.header();
        let num = |r: std::io::Result<u64>| r.map_err(io("reading a header in", tarball));
        let mut e = Entry {
            path: None,
            path_hex: None,
            kind,
            mode: (num(h.mode().map(u64::from))? & 0o7777) as u32,
            uid: num(h.uid())? as u32,
            gid: num(h.gid())? as u32,
            size: 0,
            mtime_sec: num(h.mtime())? as i64,
            mtime_nsec: 0,
            xattrs: Default::default(),
            target: None,
            rdev: None,
            link_of: None,
            sha256: None,
            data: None,
            src: None,
        };
        if matches!(kind, Kind::Chardev | Kind::Blockdev) {
            let major = h.device_major().ok().flatten().unwrap_or(0);
            let minor = h.device_minor().ok().flatten().unwrap_or(0);
            e.rdev = Some(libc::makedev(major, minor));
        }
        if let Some(pax) = entry
            .pax_extensions()
            .map_err(io("reading a header in", tarball))?
        {
            for ext in pax.flatten() {
                let key = ext.key_bytes();
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    e.xattrs.insert(
                        manifest::xattr_key(name),
                        manifest::Bytes::from_bytes(ext.value_bytes()),
                    );
                } else if key == b"mtime"
                    && let Some(frac) = std::str::from_utf8(ext.value_bytes())
                        .ok()
                        .and_then(|v| v.split_once('.'))
                        .map(|(_, f)| f)
                {
                    let digits: String = frac.chars().take(9).collect();
                    e.mtime_nsec = format!("{digits:0<9}").parse().unwrap_or(0);
                }
            }
        }
        if rel.is_empty() {
            if kind != Kind::Dir {
                return Err(bad(&raw, "the volume root must be a directory".to_owned()));
            }
            metas.push((rel, e));
            continue;
        }
        if kinds.contains_key(&rel) {
            return Err(bad(&raw, "appears twice in the archive".to_owned()));
        }
        let parent = &rel[..rel.iter().rposition(|b| *b == b'/').unwrap_or(0)];
        if kinds.get(parent) != Some(&Kind::Dir) {
            return Err(bad(
                &raw,
                format!(
                    "its parent {:?} is not a directory extracted before it (a symlink is never followed)",
                    String::from_utf8_lossy(parent)
                ),
            ));
        }
        let label = walker.label(&rel);
        let link = entry.link_name_bytes().map(|l| l.into_owned());
        let (d, nm) = walker.parent(&rel)?;
        if t.is_hard_link() {
            let target = link
                .as_deref()
                .ok_or_else(|| bad(&raw, "hardlink without a target".to_owned()))
                .and_then(|l| {
                    legacy_rel(l).map_err(|why| bad(&raw, format!("unsafe hardlink target: {why}")))
                })?;
            if kinds.get(&target) != Some(&Kind::File) {
                return Err(bad(
                    &raw,
                    format!(
                        "hardlink to {:?}, which is not a regular file extracted before it",
                        String::from_utf8_lossy(&target)
                    ),
                ));
            }
            let (fd, fnm) = first_walker.parent(&target)?;
            fsat::link_at(fd, &fnm, d, &nm, &label)?;
            kinds.insert(rel, Kind::File);
            // Same inode as its first name, whose metadata is applied.
            continue;
        }
        match kind {
            Kind::Dir => fsat::mkdir_at(d, &nm, &label)?,
            Kind::File => {
                let mut f = fsat::create_at(d, &nm, &label)?;
                std::io::copy(&mut entry, &mut f).map_err(io("writing", &label))?;
            }
            Kind::Symlink => {
                let target =
                    link.ok_or_else(|| bad(&raw, "symlink without a target".to_owned()))?;
                fsat::symlink_at(&target, d, &nm, &label)?;
            }
            Kind::Fifo | Kind::Chardev | Kind::Blockdev => {
                fsat::mknod_at(d, &nm, kind, e.rdev.unwrap_or(0), &label)?;
            }
        }
        kinds.insert(rel.clone(), kind);
        metas.push((rel, e));
    }
    let metas: Vec<(Vec<u8>, &Entry)> = metas.iter().map(|(r, e)| (r.clone(), e)).collect();
    apply_all_at(&mut walker, &metas)
}
