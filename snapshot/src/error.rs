use std::io;
use std::path::PathBuf;

/// Every error names the operation and the path it failed on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid volume name {0:?}: use [A-Za-z0-9._-], not starting with '.'")]
    BadName(String),
    #[error("manifest {path} is unreadable: {why}")]
    Manifest { path: PathBuf, why: String },
    #[error("{manifest}: unsafe entry path {path:?}: {why}")]
    UnsafePath {
        /// The manifest (or archive) that holds it.
        manifest: PathBuf,
        /// `<volume>/<path>` (lossy UTF-8).
        path: String,
        why: String,
    },
    #[error("{archive}: entry {path:?}: {why}")]
    Archive {
        archive: PathBuf,
        /// The entry's path as stored in the archive (lossy UTF-8).
        path: String,
        why: String,
    },
    #[error(
        "not enough space on {fs} for a snapshot: about {needed} bytes needed, {free} free, and {reserve} must stay free"
    )]
    NoSpace {
        fs: PathBuf,
        needed: u64,
        free: u64,
        reserve: u64,
    },
    #[error("not enough inodes on {fs} for a snapshot: about {needed} needed, {free} free")]
    NoInodes { fs: PathBuf, needed: u64, free: u64 },
    #[error("snapshot {dir} failed verification ({} problem(s)): {}", problems.len(), problems.iter().take(5).map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Corrupt {
        dir: PathBuf,
        problems: Vec<crate::verify::Problem>,
    },
    #[error("snapshot {dir} has no volume {name}")]
    NoVolume { dir: PathBuf, name: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// Wraps an io::Error with its operation and path.
pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { op, path, source }
}

pub(crate) fn nix_io(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(nix::errno::Errno) -> Error {
    let path = path.into();
    move |e| Error::Io {
        op,
        path,
        source: io::Error::from(e),
    }
}
