//! Side effects with no knowledge of apps or versions: Docker, the deployers, child processes,
//! locks, atomic writes, progress output, exit codes. May import: nothing of this crate.

pub mod atomic;
pub mod child;
pub mod deploy;
pub mod docker;
pub mod exit;
pub mod host_lock;
pub mod lock;
pub mod progress;
