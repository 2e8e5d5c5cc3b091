//! Side effects with no knowledge of apps or versions: Docker, the deployers, child processes,
//! locks, atomic writes, progress output, exit codes, overflow-proof deadlines, and the quoting and
//! redaction of outside text in messages. May import: nothing of this crate.

pub mod atomic;
pub mod backupbot;
pub mod child;
pub mod deadline;
pub mod deploy;
pub mod docker;
pub mod exit;
pub mod host_lock;
pub mod lock;
pub mod progress;
pub mod text;
