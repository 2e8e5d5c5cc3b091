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

pub const FORMAT: u32 = 1;
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
        if m.format != FORMAT {
            return Err(Error::Manifest {
                path,
                why: format!("format {} is not supported (expected {FORMAT})", m.format),
            });
        }
        Ok(m)
    }

    pub fn volume(&self, name: &str) -> Option<&Volume> {
        self.volumes.iter().find(|v| v.name == name)
    }
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
