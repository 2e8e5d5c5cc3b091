//! ci-warm: keeps a CI host's warm Co-op Cloud deployments current without losing their data.

pub mod alert;
pub mod atomic;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod deploy;
pub mod docker;
pub mod exit;
pub mod gate;
pub mod health;
pub mod live;
pub mod lock;
pub mod names;
pub mod recipe;
pub mod reconcile;
pub mod snap;
pub mod spec;
pub mod state;
pub mod version;
