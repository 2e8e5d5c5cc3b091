//! The operator's surface: the alert relay, status, metrics, disk watch and prune. May import:
//! `live`, `config`, `upgrade`, `platform`.

pub mod disk;
pub mod metrics;
pub mod prune;
pub mod relay;
pub mod status;
