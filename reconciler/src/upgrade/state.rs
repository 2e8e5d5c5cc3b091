//! `<state_dir>/<app>/state.json`: what ci-warm knows about one app, and its journal.
//!
//! The intent of every step that changes the deployment is written here *before* the step
//! runs, so a run killed mid-upgrade is found and rolled back by the next one. A state file that
//! cannot be parsed is an error, never silently reset: that would forget `last_good`.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::platform::atomic;
use crate::upgrade::version::Version;

pub const STATE_SCHEMA: u32 = 1;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AppState {
    pub schema: u32,
    /// The version that last passed its health gate; its data is the snapshot.
    pub last_good: Option<Version>,
    /// What ci-warm last deployed (a version, or a ref for the quick lane).
    pub deployed: Option<String>,
    /// Versions that failed their gate: not attempted again until approved.
    #[serde(default)]
    pub failed: BTreeMap<String, Failure>,
    /// Hold keys (`held-major:<v>`) already alerted, so a hold alerts once.
    #[serde(default)]
    pub alerted_holds: BTreeSet<String>,
    /// Versions released by `ci-warm approve`.
    #[serde(default)]
    pub approvals: BTreeSet<String>,
    /// Pre-releases newer than what runs that the last reconcile skipped (the app does not
    /// allow pre-releases): shown by `status` as skipped, never alerted as held.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub skipped_prerelease: BTreeSet<String>,
    /// The step in progress; `Some` after a crash.
    pub intent: Option<Intent>,
    pub last_run: Option<RunRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Failure {
    pub at: String,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    Undeploy,
    Snapshot,
    Deploy,
    Gate,
    RollbackUndeploy,
    RollbackRestore,
    RollbackDeploy,
    RollbackGate,
    /// A canonical: the known-good is restored over volumes a quick run left drifted, before
    /// its upgrade (undeploy, verify, restore). Recovered by finishing it.
    RestoreKnownGood,
    /// A canonical: after its upgrade (or bootstrap) passed the gate, it is undeployed and
    /// snapshotted as the new known-good. Recovered by finishing it.
    RefreshKnownGood,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Intent {
    pub step: Step,
    pub from: Option<Version>,
    pub to: Version,
    /// Whether the volumes may differ from the snapshot (the target has run on them).
    pub data_touched: bool,
    pub started_at: String,
    pub pid: u32,
    /// Set when the run that wrote this intent stopped on purpose instead of finishing it
    /// (absent: the run was killed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<Stopped>,
}

/// Why a run left its intent unfinished on purpose.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Stopped {
    pub at: String,
    pub reason: String,
    /// `true`: the runs after it leave the app alone (no rollback attempt, no alert) until an
    /// operator acts (docs/operations.md); `false`: the next run rolls back as after a kill.
    #[serde(default)]
    pub needs_operator: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunRecord {
    pub at: String,
    pub outcome: String,
    pub detail: String,
}

/// A hold the gate alerted that still stands: above `last_good` and not approved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandingHold {
    pub version: Version,
    /// `held-major` or `held-manual-migration` (the alert kind).
    pub kind: String,
    /// The hold's key in `alerted_holds` (`<kind>:<version>`).
    pub key: String,
}

impl StandingHold {
    /// Why it is held, from what the state knows (the alert's message says more while it is on
    /// disk): a major bump names the version it is a major bump from, when that is `last_good`.
    pub fn reason(&self, last_good: Option<&Version>) -> String {
        match (self.kind.as_str(), last_good) {
            ("held-major", Some(lg)) if crate::upgrade::version::is_major(lg, &self.version) => {
                format!("{} is a major bump from {lg}", self.version)
            }
            ("held-major", _) => format!("{} is a major bump", self.version),
            _ => format!(
                "release notes up to {} ask for a manual migration",
                self.version
            ),
        }
    }
}

/// An app pinned to one version (a canonical tracking its registry entry) whose own gate holds
/// that version (a major bump, or release notes asking for a manual migration, from the version
/// it is on): it stays on its last good version until the hold is approved
/// (`ci-warm approve <app> <target>`, or the config's `approved`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PinnedHold {
    /// The version it is pinned to (a canonical: the registry's, or unseeded the config's).
    pub target: String,
    /// The version it really holds: its last good.
    pub holds: String,
    /// `held-major` or `held-manual-migration` (the kind of the one alert it wrote).
    pub kind: String,
    /// Why, for a person.
    pub reason: String,
}

impl AppState {
    /// Whether the gate holds `target`, the version this app is pinned to: a reconcile alerted
    /// a hold of exactly that version, and it still stands.
    pub fn pinned_hold(
        &self,
        target: &Version,
        config_approved: &BTreeSet<Version>,
    ) -> Option<PinnedHold> {
        let last_good = self.last_good.as_ref()?;
        let h = self
            .standing_holds(config_approved)
            .into_iter()
            .find(|h| &h.version == target)?;
        Some(PinnedHold {
            target: target.to_string(),
            holds: last_good.to_string(),
            reason: h.reason(Some(last_good)),
            kind: h.kind,
        })
    }

    /// The alerted holds that still stand: newer than `last_good`, and approved neither by
    /// `ci-warm approve` nor by the config (`config_approved`). A hold that was approved, or
    /// that an upgrade went past, is over.
    pub fn standing_holds(&self, config_approved: &BTreeSet<Version>) -> Vec<StandingHold> {
        self.alerted_holds
            .iter()
            .filter_map(|key| {
                let (kind, version) = key.split_once(':')?;
                let v = version.parse::<Version>().ok()?;
                let superseded = self.last_good.as_ref().is_some_and(|lg| v <= *lg);
                let approved = self.approvals.contains(version) || config_approved.contains(&v);
                (!superseded && !approved).then(|| StandingHold {
                    version: v,
                    kind: kind.to_owned(),
                    key: key.clone(),
                })
            })
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read state {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("state {path} is corrupt ({source}); fix or move it by hand, ci-warm will not guess")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "state {path} has schema {found}, but this ci-warm reads schema {STATE_SCHEMA} only (was \
         it written by a newer ci-warm?); refusing to read or overwrite it: run the ci-warm that \
         wrote it, or move the file aside by hand"
    )]
    UnknownSchema { path: PathBuf, found: String },
    #[error(transparent)]
    Write(#[from] atomic::AtomicWriteError),
}

pub fn path(app_dir: &Path) -> PathBuf {
    app_dir.join("state.json")
}

impl AppState {
    /// Loads the app's state; a missing file is a fresh app.
    /// A file of another schema (a newer ci-warm's) is refused: read with this version's
    /// fields it could lose what it holds, and the next save would overwrite it.
    pub fn load(app_dir: &Path) -> Result<AppState, StateError> {
        let file = path(app_dir);
        match atomic::read_json::<serde_json::Value>(&file) {
            Ok(Some(value)) => {
                let schema = value.get("schema");
                if let Some(found) = schema
                    && found.as_u64() != Some(u64::from(STATE_SCHEMA))
                {
                    return Err(StateError::UnknownSchema {
                        path: file,
                        found: crate::platform::text::bounded(&found.to_string(), 40),
                    });
                }
                serde_json::from_value(value)
                    .map_err(|source| StateError::Corrupt { path: file, source })
            }
            Ok(None) => Ok(AppState {
                schema: STATE_SCHEMA,
                ..AppState::default()
            }),
            Err(atomic::ReadJsonError::Read { path, source }) => {
                Err(StateError::Read { path, source })
            }
            Err(atomic::ReadJsonError::Corrupt { path, source }) => {
                Err(StateError::Corrupt { path, source })
            }
        }
    }

    pub fn save(&self, app_dir: &Path) -> Result<(), StateError> {
        std::fs::create_dir_all(app_dir).map_err(|source| StateError::Read {
            path: app_dir.to_owned(),
            source,
        })?;
        atomic::write_json(&path(app_dir), self, 0o640)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_is_fresh_and_round_trips() {
        let d = tempfile::tempdir().unwrap();
        let mut s = AppState::load(d.path()).unwrap();
        assert_eq!(s.schema, STATE_SCHEMA);
        assert!(s.last_good.is_none());
        s.last_good = Some("1.0.0+1.0.0".parse().unwrap());
        s.intent = Some(Intent {
            stopped: None,
            step: Step::Deploy,
            from: s.last_good.clone(),
            to: "1.1.0+1.0.0".parse().unwrap(),
            data_touched: true,
            started_at: "2026-11-22T00:00:00Z".into(),
            pid: 1,
        });
        s.save(d.path()).unwrap();
        assert_eq!(AppState::load(d.path()).unwrap(), s);
    }

    #[test]
    fn newer_schema_is_refused_and_never_overwritten() {
        let d = tempfile::tempdir().unwrap();
        let text = "{\"schema\": 2, \"last_good\": \"1.0.0+1.0.0\", \"deployed\": null, \
                    \"intent\": null, \"last_run\": null}";
        std::fs::write(path(d.path()), text).unwrap();
        let e = AppState::load(d.path()).unwrap_err();
        assert!(matches!(e, StateError::UnknownSchema { .. }), "{e}");
        let e = e.to_string();
        assert!(e.contains("schema 2") && e.contains("state.json"), "{e}");
        assert_eq!(std::fs::read_to_string(path(d.path())).unwrap(), text);
        // A newer schema with fields this version does not know says "schema", not "corrupt".
        std::fs::write(path(d.path()), "{\"schema\": 3, \"new_field\": 1}").unwrap();
        let e = AppState::load(d.path()).unwrap_err().to_string();
        assert!(e.contains("schema 3"), "{e}");
    }

    #[test]
    fn corrupt_state_is_an_error_not_a_reset() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(path(d.path()), b"{\"schema\": 1, \"last_good\": ").unwrap();
        let e = AppState::load(d.path()).unwrap_err().to_string();
        assert!(e.contains("corrupt") && e.contains("state.json"), "{e}");
    }
}
