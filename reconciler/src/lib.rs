//! ci-warm: keeps a CI host's warm Co-op Cloud deployments current without losing their data.

pub mod gate;
pub mod recipe;
pub mod version;
