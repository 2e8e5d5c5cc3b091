//! Deciding and carrying out one app's upgrade: versions, the safety gate, recipes, the journaled
//! state machine, the health gate, state and alerts. May import: `platform`.

pub mod alert;
pub mod compose_version;
pub mod gate;
pub mod health;
pub mod probe;
pub mod recipe;
pub mod reconcile;
pub mod state;
pub mod version;
