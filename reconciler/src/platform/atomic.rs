//! Crash-safe file replacement: every file another process may read (state, alerts, registry,
//! metrics) is written under a temporary name in the same directory, fsynced, and renamed into
//! place, then the directory is fsynced. A kill -9 at any instant leaves the old or the new
//! version, never a torn one, and readers never see the temporary name as a real file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Prefix of in-progress files; readers and pollers skip names that start with it.
pub const TMP_PREFIX: &str = ".tmp-";

#[derive(Debug, thiserror::Error)]
#[error("cannot write {path} atomically: {op}: {source}")]
pub struct AtomicWriteError {
    pub path: PathBuf,
    pub op: &'static str,
    #[source]
    pub source: io::Error,
}

/// Replaces `path` with `bytes`, created with `mode` (e.g. 0o640).
pub fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), AtomicWriteError> {
    let err = |op| {
        let path = path.to_owned();
        move |source| AtomicWriteError { path, op, source }
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))
        .map_err(err("naming the temporary file"))?;
    let tmp = dir.join(format!(
        "{TMP_PREFIX}{}.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        // A leftover of a killed writer with our pid would keep its own mode (and a planted
        // symlink would be followed): start from nothing and create exclusively.
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(err("removing a leftover temporary file")(e));
            }
            _ => {}
        }
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(err("creating the temporary file"))?;
        f.write_all(bytes).map_err(err("writing"))?;
        f.sync_all().map_err(err("fsyncing the file"))?;
        fs::rename(&tmp, path).map_err(err("renaming into place"))?;
        sync_dir(dir).map_err(err("fsyncing the directory"))
    })();
    if result.is_err() {
        // Best effort: a leftover temp file is harmless (skipped by readers), but tidy is better.
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Serializes `value` as pretty JSON and writes it atomically.
pub fn write_json<T: serde::Serialize>(
    path: &Path,
    value: &T,
    mode: u32,
) -> Result<(), AtomicWriteError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| AtomicWriteError {
        path: path.to_owned(),
        op: "serializing",
        source: io::Error::other(e),
    })?;
    bytes.push(b'\n');
    write(path, &bytes, mode)
}

/// Why a JSON file written by [`write_json`] could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum ReadJsonError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// Reads a JSON file written by [`write_json`]; `Ok(None)` when there is none yet. A file that
/// does not parse is an error, never treated as missing: callers must not reset what it held.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, ReadJsonError> {
    match fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| ReadJsonError::Corrupt {
                    path: path.to_owned(),
                    source,
                })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ReadJsonError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Makes a rename or unlink in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_leaves_no_temporary() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.json");
        write(&p, b"one", 0o640).unwrap();
        write(&p, b"two", 0o640).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o640
        );
    }

    #[test]
    fn a_leftover_temporary_never_lends_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("alert.json");
        let leftover = d
            .path()
            .join(format!("{TMP_PREFIX}alert.json.{}", std::process::id()));
        fs::write(&leftover, b"old").unwrap();
        fs::set_permissions(&leftover, fs::Permissions::from_mode(0o666)).unwrap();
        write(&p, b"new", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!leftover.exists());
    }

    #[test]
    fn error_names_the_path() {
        let e = write(Path::new("/nonexistent-dir/x.json"), b"x", 0o600).unwrap_err();
        assert!(e.to_string().contains("/nonexistent-dir/x.json"), "{e}");
    }
}
