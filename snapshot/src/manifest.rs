//! `manifest.json`: every entry of every volume with its metadata and content hash, plus a
//! digest of the entries so a tampered or truncated manifest is caught by verify.
//!
//! Paths, link targets and xattr values are raw bytes; they are stored as a UTF-8 string when
//! they are valid UTF-8 (`path`) and as hex otherwise (`path_hex`), which is lossless.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The format this code writes. Format 2 added `data` (see `content`): an entry without it
/// hashes exactly as in format 1, so a format-1 manifest is read, verified and restored as it
/// is.
pub const FORMAT: u32 = 2;
/// Every format this code reads.
pub const FORMATS: [u32; 2] = [1, 2];
pub const FILE: &str = "manifest.json";
/// Where the trees live inside a snapshot directory.
pub const VOLUMES: &str = "volumes";

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Chardev,
    Blockdev,
}

/// Raw bytes, stored readably when they are UTF-8.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Bytes {
    Text { text: String },
    Hex { hex: String },
}

impl Bytes {
    pub fn from_bytes(b: &[u8]) -> Bytes {
        match std::str::from_utf8(b) {
            Ok(s) => Bytes::Text { text: s.to_owned() },
            Err(_) => Bytes::Hex { hex: hex(b) },
        }
    }
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Bytes::Text { text } => text.as_bytes().to_vec(),
            Bytes::Hex { hex } => unhex(hex),
        }
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

/// The source's identity, for incremental reuse.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct SourceId {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the volume root; empty for the root itself.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub path_hex: Option<String>,
    pub kind: Kind,
    /// Full st_mode permission bits, setuid/setgid/sticky included.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: i64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub xattrs: BTreeMap<String, Bytes>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub target: Option<Bytes>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rdev: Option<u64>,
    /// For the second and later names of a hardlinked file: the first name's index.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub link_of: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sha256: Option<String>,
    /// Format 2, regular files with holes or bigger than `content::PIECE`: the data segments,
    /// `[offset, length]`, that `sha256` covers piece by piece; the rest of the file is holes
    /// (zeros). Absent: `sha256` is of the whole content.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub data: Option<Vec<[u64; 2]>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub src: Option<SourceId>,
}

impl Entry {
    pub fn rel(&self) -> PathBuf {
        match (&self.path, &self.path_hex) {
            (Some(p), _) => PathBuf::from(p),
            (None, Some(h)) => PathBuf::from(OsString::from_vec(unhex(h))),
            (None, None) => PathBuf::new(),
        }
    }

    /// The raw path bytes (before any normalisation, so [`check_path`] sees what was stored).
    pub fn rel_bytes(&self) -> Vec<u8> {
        match (&self.path, &self.path_hex) {
            (Some(p), _) => p.as_bytes().to_vec(),
            (None, Some(h)) => unhex(h),
            (None, None) => Vec::new(),
        }
    }

    pub fn set_rel(&mut self, rel: &Path) {
        let b = rel.as_os_str().as_bytes();
        match std::str::from_utf8(b) {
            Ok(s) => {
                self.path = Some(s.to_owned());
                self.path_hex = None;
            }
            Err(_) => {
                self.path = None;
                self.path_hex = Some(hex(b));
            }
        }
    }

    /// xattr name (raw bytes) to value.
    pub fn xattr_map(&self) -> BTreeMap<Vec<u8>, Vec<u8>> {
        self.xattrs
            .iter()
            .map(|(k, v)| (xattr_key_bytes(k), v.to_bytes()))
            .collect()
    }
}

/// xattr names are almost always UTF-8; the rare other ones are stored as `hex:<hex>`.
pub fn xattr_key(name: &[u8]) -> String {
    match std::str::from_utf8(name) {
        Ok(s) if !s.starts_with("hex:") => s.to_owned(),
        _ => format!("hex:{}", hex(name)),
    }
}

fn xattr_key_bytes(k: &str) -> Vec<u8> {
    match k.strip_prefix("hex:") {
        Some(h) => unhex(h),
        None => k.as_bytes().to_vec(),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Volume {
    pub name: String,
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub format: u32,
    pub created: String,
    pub volumes: Vec<Volume>,
    /// sha256 of the JSON of `volumes`.
    pub digest: String,
}

pub fn digest(volumes: &[Volume]) -> String {
    let bytes = serde_json::to_vec(volumes).unwrap_or_default();
    hex(&Sha256::digest(&bytes))
}

impl Manifest {
    pub fn new(created: String, volumes: Vec<Volume>) -> Manifest {
        let digest = digest(&volumes);
        Manifest {
            format: FORMAT,
            created,
            volumes,
            digest,
        }
    }

    pub fn load(dir: &Path) -> Result<Manifest> {
        let path = dir.join(FILE);
        let bytes = std::fs::read(&path).map_err(crate::error::io("reading", &path))?;
        let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| Error::Manifest {
            path: path.clone(),
            why: e.to_string(),
        })?;
        m.check_format(&path)?;
        m.check_paths(&path)?;
        Ok(m)
    }

    /// Refuses a format this code cannot read, and format-2 fields in a format-1 manifest
    /// (which would be hashed in a way its writer never meant).
    pub fn check_format(&self, manifest: &Path) -> Result<()> {
        let why = if !FORMATS.contains(&self.format) {
            format!(
                "format {} is not supported (this version reads {FORMATS:?})",
                self.format
            )
        } else if self.format == 1
            && self
                .volumes
                .iter()
                .any(|v| v.entries.iter().any(|e| e.data.is_some()))
        {
            "a format-1 manifest with format-2 data segments".to_owned()
        } else {
            return Ok(());
        };
        Err(Error::Manifest {
            path: manifest.to_owned(),
            why,
        })
    }

    /// Refuses a manifest with an invalid volume name or entry path (see [`check_path`]),
    /// naming the first one: nothing may ever be written, chmodded or chowned at such a path.
    pub fn check_paths(&self, manifest: &Path) -> Result<()> {
        for v in &self.volumes {
            check_name(&v.name)?;
            for e in &v.entries {
                let raw = e.rel_bytes();
                if let Err(why) = check_path(&raw) {
                    return Err(Error::UnsafePath {
                        manifest: manifest.to_owned(),
                        path: format!("{}/{}", v.name, String::from_utf8_lossy(&raw)),
                        why,
                    });
                }
            }
        }
        Ok(())
    }

    pub fn volume(&self, name: &str) -> Option<&Volume> {
        self.volumes.iter().find(|v| v.name == name)
    }
}

/// The one check of an entry path (raw bytes, relative to its volume root), used by manifest
/// load, verify, restore and import: empty (the volume root itself), or `/`-separated
/// components that are neither empty, `.` nor `..`; never absolute, never a NUL byte. A
/// `path_hex` that is not valid hex decodes short and fails here too (odd length).
pub fn check_path(raw: &[u8]) -> std::result::Result<(), String> {
    if raw.is_empty() {
        return Ok(());
    }
    if raw.contains(&0) {
        return Err("contains a NUL byte".to_owned());
    }
    if raw.starts_with(b"/") {
        return Err("is absolute".to_owned());
    }
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" => return Err("has an empty component (// or a trailing /)".to_owned()),
            b"." => return Err("has a '.' component".to_owned()),
            b".." => return Err("has a '..' component".to_owned()),
            _ => {}
        }
    }
    Ok(())
}

/// What is structurally wrong with a volume's entry list, by `<volume>/<path>`: invalid paths
/// ([`check_path`]), a missing or misplaced root, duplicates, an entry whose parent is not a
/// directory of the manifest (in particular one below the snapshot's own symlink: reaching it
/// would mean following that symlink) and hardlinks that point nowhere sensible. Returns
/// the problems and, per entry, whether its path may be used at all.
pub fn structure(v: &Volume) -> (Vec<(String, String)>, Vec<bool>) {
    use std::collections::HashMap;
    let label = |raw: &[u8]| format!("{}/{}", v.name, String::from_utf8_lossy(raw));
    let mut out = Vec::new();
    let mut usable = vec![true; v.entries.len()];
    let mut index: HashMap<Vec<u8>, usize> = HashMap::new();
    for (i, e) in v.entries.iter().enumerate() {
        let raw = e.rel_bytes();
        if let Err(why) = check_path(&raw) {
            out.push((label(&raw), format!("unsafe path: {why}")));
            usable[i] = false;
            continue;
        }
        if raw.is_empty() && (i != 0 || e.kind != Kind::Dir) {
            out.push((
                label(&raw),
                "the volume root must be the first entry, a directory".to_owned(),
            ));
            usable[i] = false;
            continue;
        }
        if index.insert(raw.clone(), i).is_some() {
            out.push((label(&raw), "listed twice".to_owned()));
            usable[i] = false;
        }
    }
    if v.entries.first().is_none_or(|e| !e.rel_bytes().is_empty()) {
        out.push((
            label(b""),
            "the volume root is not the first entry".to_owned(),
        ));
    }
    // Shallowest first, so a parent's verdict is known before its children's.
    let mut order: Vec<usize> = (0..v.entries.len()).filter(|&i| usable[i]).collect();
    order.sort_by_key(|&i| {
        v.entries[i]
            .rel_bytes()
            .iter()
            .filter(|b| **b == b'/')
            .count()
    });
    for i in order {
        let e = &v.entries[i];
        let raw = e.rel_bytes();
        if let Some(cut) = raw
            .iter()
            .rposition(|b| *b == b'/')
            .or((!raw.is_empty()).then_some(0))
        {
            let parent = &raw[..cut];
            let why = match index.get(parent).map(|&p| (p, &v.entries[p])) {
                Some((p, pe)) if pe.kind == Kind::Dir && usable[p] => None,
                Some((_, pe)) if pe.kind == Kind::Dir => {
                    Some(format!("its parent {} is itself unusable", label(parent)))
                }
                Some((_, pe)) if pe.kind == Kind::Symlink => Some(format!(
                    "sits below the snapshot's own symlink {} (never followed)",
                    label(parent)
                )),
                Some((_, pe)) => Some(format!(
                    "its parent {} is a {:?}, not a directory",
                    label(parent),
                    pe.kind
                )),
                None => Some(format!(
                    "its parent directory {} is not in the manifest",
                    label(parent)
                )),
            };
            if let Some(why) = why {
                out.push((label(&raw), why));
                usable[i] = false;
                continue;
            }
        }
        if let Some(data) = &e.data {
            let why = if e.kind != Kind::File || e.link_of.is_some() {
                Some("data segments on an entry that is not a first-named regular file".to_owned())
            } else {
                crate::content::check_layout(data, e.size).err()
            };
            if let Some(why) = why {
                out.push((label(&raw), why));
                usable[i] = false;
                continue;
            }
        }
        if let Some(first) = e.link_of {
            let ok = e.kind == Kind::File
                && first != i
                && v.entries
                    .get(first)
                    .is_some_and(|f| f.kind == Kind::File && f.link_of.is_none());
            if !ok {
                out.push((
                    label(&raw),
                    format!("hardlink to entry {first}, which is not a first-named regular file"),
                ));
                usable[i] = false;
            }
        }
    }
    (out, usable)
}

/// Volume names become directory names.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::BadName(name.to_owned()))
    }
}

pub fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}
