//! `<state_dir>/registry.json`: the canonical registry, recipe -> the version a green cold run
//! proved. Only `canonical promote` advances it (see `promote`); everything else only reads it.
//!
//! Writers hold `<state_dir>/registry.lock` around load-modify-save so two promotions of different
//! recipes never lose each other's entry; the file itself is replaced atomically, so readers need
//! no lock. A registry that cannot be parsed is an error, never silently reset.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::platform::atomic;

pub const REGISTRY_SCHEMA: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Registry {
    pub schema: u32,
    #[serde(default)]
    pub canonicals: BTreeMap<String, Entry>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            schema: REGISTRY_SCHEMA,
            canonicals: BTreeMap::new(),
        }
    }
}

/// What one green cold run proved about a recipe.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// The recipe version (tag) the cold run tested, e.g. `1.1.0+1.0.0`.
    pub version: String,
    /// The recipe commit the cold run tested.
    pub commit: String,
    /// RFC 3339, UTC.
    pub promoted_at: String,
    /// The CI run that proved it, when given.
    pub run: Option<String>,
    /// Always `cold` today; recorded so a reader never has to assume.
    pub mode: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot read the canonical registry {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the canonical registry {path} is corrupt (fix or restore it by hand; it is never reset): {source}"
    )]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Write(#[from] atomic::AtomicWriteError),
    #[error("cannot lock the canonical registry ({path}): {source}")]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Held while a writer loads, modifies and saves the registry; released on drop.
#[derive(Debug)]
pub struct RegistryLock {
    _flock: nix::fcntl::Flock<std::fs::File>,
}

/// Takes `<state_dir>/registry.lock`, waiting for another writer to finish (a promotion holds it
/// for milliseconds, so waiting is always right here).
pub fn lock(state_dir: &Path) -> Result<RegistryLock, RegistryError> {
    let path = state_dir.join("registry.lock");
    let err = |source| RegistryError::Lock {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(state_dir).map_err(err)?;
    let flock = crate::platform::lock::lock_file_wait(&path).map_err(err)?;
    Ok(RegistryLock { _flock: flock })
}

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("registry.json")
}

impl Registry {
    /// Loads the registry; a missing file is an empty registry.
    pub fn load(state_dir: &Path) -> Result<Registry, RegistryError> {
        match atomic::read_json(&path(state_dir)) {
            Ok(r) => Ok(r.unwrap_or_default()),
            Err(atomic::ReadJsonError::Read { path, source }) => {
                Err(RegistryError::Read { path, source })
            }
            Err(atomic::ReadJsonError::Corrupt { path, source }) => {
                Err(RegistryError::Corrupt { path, source })
            }
        }
    }

    /// Replaces the file atomically (0644: CI runs read it to resolve their upgrade base).
    pub fn save(&self, state_dir: &Path) -> Result<(), RegistryError> {
        std::fs::create_dir_all(state_dir).map_err(|source| RegistryError::Read {
            path: state_dir.to_owned(),
            source,
        })?;
        atomic::write_json(&path(state_dir), self, 0o644)?;
        Ok(())
    }

    pub fn get(&self, recipe: &str) -> Option<&Entry> {
        self.canonicals.get(recipe)
    }

    /// Load-modify-save under the registry lock; `change` returns whether to save.
    pub fn update<T>(
        state_dir: &Path,
        change: impl FnOnce(&mut Registry) -> (bool, T),
    ) -> Result<T, RegistryError> {
        let _lock = lock(state_dir)?;
        let mut registry = Registry::load(state_dir)?;
        let (save, out) = change(&mut registry);
        if save {
            registry.save(state_dir)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_is_empty_and_round_trips() {
        let d = tempfile::tempdir().unwrap();
        let mut r = Registry::load(d.path()).unwrap();
        assert!(r.canonicals.is_empty());
        r.canonicals.insert(
            "demo".into(),
            Entry {
                version: "1.1.0+1.0.0".into(),
                commit: "abc123".into(),
                promoted_at: "2026-11-23T00:00:00Z".into(),
                run: Some("42".into()),
                mode: "cold".into(),
            },
        );
        r.save(d.path()).unwrap();
        assert_eq!(Registry::load(d.path()).unwrap(), r);
        assert_eq!(
            r.get("demo").map(|e| e.version.as_str()),
            Some("1.1.0+1.0.0")
        );
    }

    #[test]
    fn concurrent_updates_keep_every_entry() {
        let d = tempfile::tempdir().unwrap();
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let dir = d.path().to_owned();
                std::thread::spawn(move || {
                    Registry::update(&dir, |r| {
                        r.canonicals.insert(
                            format!("r{i}"),
                            Entry {
                                version: "1.0.0+1.0.0".into(),
                                commit: "abcdef0".into(),
                                promoted_at: "2026-11-23T00:00:00Z".into(),
                                run: None,
                                mode: "cold".into(),
                            },
                        );
                        (true, ())
                    })
                    .unwrap()
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(Registry::load(d.path()).unwrap().canonicals.len(), 8);
    }

    #[test]
    fn corrupt_registry_is_an_error_not_a_reset() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(path(d.path()), b"{\"schema\": 1, \"canonicals\": {").unwrap();
        let e = Registry::load(d.path()).unwrap_err().to_string();
        assert!(e.contains("corrupt") && e.contains("registry.json"), "{e}");
    }
}
