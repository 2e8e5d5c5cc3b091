//! Faithful, atomic, incremental and verified snapshots of directory trees (Docker volumes).
//!
//! A snapshot directory holds `manifest.json` and `volumes/<name>/`, a faithful copy of each
//! source tree: regular files (holes kept), directories, symlinks (never followed), hardlinks,
//! fifos and device nodes, with owner, full mode, nanosecond mtime and every xattr (POSIX ACLs
//! included). See DESIGN.md, "Snapshots".

mod cache;
mod content;
mod copy;
mod error;
mod export;
mod fsat;
pub mod manifest;
mod meta;
mod pool;
mod progress;
mod publish;
mod restore;
mod space;
mod spare;
mod take;
mod verify;
mod walk;

pub use error::{Error, Result};
pub use export::{LegacyImport, export, import, import_legacy};
pub use manifest::Manifest;
pub use progress::{NoProgress, Phase, Progress};
pub use publish::{SNAPSHOT, TMP_PREFIX, sweep_stale};
pub use restore::{restore, restore_with_progress, volume_names};
pub use space::{Reserve, free_and_total};
pub use take::{Summary, TakeRequest, take, take_with_progress};
pub use verify::{Problem, VerifyReport, verify};
