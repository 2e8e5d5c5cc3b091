//! ci-warm: keeps a CI host's warm Co-op Cloud deployments current without losing their data.
//!
//! Folders depend downward only: `cmd` -> `canonical`, `ops`, `ci` -> `live` -> `config` ->
//! `upgrade` -> `platform` (each folder's `mod.rs` says what it may import).

pub mod canonical;
pub mod ci;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod live;
pub mod ops;
pub mod platform;
pub mod upgrade;
