//! What a CI run calls: the upgrade-base resolver, the `previous/` guard, per-run Keycloak realms.
//! May import: `config`, `upgrade`, `platform`.

pub mod base;
pub mod previous;
pub mod realm;
