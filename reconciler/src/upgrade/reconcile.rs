//! The upgrade-with-rollback state machine of one app (DESIGN.md, "state machine").
//!
//! ```text
//! stateless: deploy target -> gate -> ok: last_good := target
//!                                  -> fail: deploy last_good -> gate -> alert(rolled-back)
//! stateful:  undeploy -> snapshot -> deploy target -> gate -> ok: last_good := target
//!            -> fail: undeploy -> verify snapshot -> restore -> deploy last_good -> gate -> alert
//! ```
//!
//! Every step that changes the deployment is journaled in `state.json` first, so a killed run is
//! rolled back by the next one. All side effects go through [`Platform`], which keeps this file
//! a pure decision procedure that unit tests drive with an in-memory platform.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context;

use crate::platform::exit;
use crate::upgrade::alert::{self, Kind, NewAlert};
use crate::upgrade::gate::{self, GatePolicy, HoldKind, Release};
use crate::upgrade::health::HealthError;
use crate::upgrade::state::{AppState, Failure, Intent, RunRecord, Step, Stopped};
use crate::upgrade::version::Version;

/// The outcome of health-gating a deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Healthy,
    Unhealthy(String),
}

/// What a snapshot verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    Ok,
    Missing,
    Corrupt(Vec<String>),
}

/// Every side effect the state machine needs, for one app.
pub trait Platform {
    /// Fetches the recipe and returns its releases with their notes. Failing is an error for
    /// this run, never "no new version".
    fn releases(&mut self) -> anyhow::Result<Vec<Release>>;
    fn deploy(&mut self, version: &Version) -> anyhow::Result<()>;
    /// Removes the deployment and waits until no container holds its volumes.
    fn undeploy(&mut self) -> anyhow::Result<()>;
    fn health(&mut self, version: &Version) -> anyhow::Result<Health>;
    /// Snapshots the volumes holding `version`'s data (minus what backup-bot's labels in that
    /// version's compose files exclude).
    fn take_snapshot(&mut self, version: &Version) -> anyhow::Result<()>;
    fn verify_snapshot(&mut self) -> anyhow::Result<Verified>;
    fn restore_snapshot(&mut self) -> anyhow::Result<()>;
    /// Canonicals: whether a quick run left the volumes different from the known-good snapshot.
    fn drifted(&mut self) -> anyhow::Result<bool> {
        Ok(false)
    }
    /// Canonicals: the volumes equal the known-good snapshot again (it was just restored).
    fn drift_cleared(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// The app-level facts the state machine needs besides the platform.
#[derive(Debug, Clone)]
pub struct AppSpec {
    pub name: String,
    pub recipe: String,
    pub stateful: bool,
    /// `Some` pins the app to one version (a canonical tracking its registry).
    pub pinned: Option<Version>,
    pub initial_version: Option<Version>,
    pub approved: BTreeSet<Version>,
    /// Whether pre-release tags may be chosen (config `allow_prerelease`).
    pub allow_prerelease: bool,
    pub manual_migration_phrases: Vec<String>,
    pub on_alert: Option<Vec<String>>,
    /// A canonical: it rests undeployed, its snapshot is its known-good, restored over drifted
    /// volumes before an upgrade and refreshed after one (journaled steps like the others); a
    /// rollback ends with the known-good restored and the canonical undeployed.
    pub canonical: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    NoOp {
        version: Version,
    },
    Bootstrapped {
        version: Version,
    },
    Upgraded {
        from: Version,
        to: Version,
    },
    /// Nothing newer passes the gate; one or more versions are held.
    Held {
        version: Option<Version>,
    },
    RolledBack {
        attempted: Version,
        to: Version,
    },
    /// The run found an unfinished intent and rolled back.
    Interrupted {
        recovered: bool,
    },
    NotRecovered {
        reason: String,
    },
    /// The upgrade could not start (the undeploy before the snapshot, or the snapshot, failed);
    /// the old version is serving again on its untouched data.
    Aborted {
        reason: String,
    },
    /// A canonical passed its gate on `version`, but its known-good could not be refreshed;
    /// the step stays journaled and the next run finishes it.
    RefreshFailed {
        version: Version,
        reason: String,
    },
}

impl Outcome {
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::NoOp { .. }
            | Outcome::Bootstrapped { .. }
            | Outcome::Upgraded { .. }
            | Outcome::Held { .. } => exit::OK,
            Outcome::RolledBack { .. } | Outcome::Interrupted { recovered: true } => {
                exit::ROLLED_BACK
            }
            Outcome::Interrupted { recovered: false } | Outcome::NotRecovered { .. } => {
                exit::NOT_RECOVERED
            }
            Outcome::Aborted { .. } | Outcome::RefreshFailed { .. } => exit::FAILURE,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Outcome::NoOp { .. } => "no-op",
            Outcome::Bootstrapped { .. } => "bootstrapped",
            Outcome::Upgraded { .. } => "upgraded",
            Outcome::Held { .. } => "held",
            Outcome::RolledBack { .. } => "rolled-back",
            Outcome::Interrupted { .. } => "interrupted",
            Outcome::NotRecovered { .. } => "not-recovered",
            Outcome::Aborted { .. } => "aborted",
            Outcome::RefreshFailed { .. } => "refresh-failed",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::NoOp { version } => write!(f, "no-op: {version} is current"),
            Outcome::Bootstrapped { version } => write!(f, "bootstrapped on {version}"),
            Outcome::Upgraded { from, to } => write!(f, "upgraded {from} -> {to}"),
            Outcome::Held { version: Some(v) } => write!(f, "held; stays on {v}"),
            Outcome::Held { version: None } => write!(f, "held; nothing deployable"),
            Outcome::RolledBack { attempted, to } => {
                write!(
                    f,
                    "{attempted} failed its gate; rolled back to {to} with its data"
                )
            }
            Outcome::Interrupted { recovered } => write!(
                f,
                "an interrupted run was rolled back ({})",
                if *recovered {
                    "recovered"
                } else {
                    "NOT recovered"
                }
            ),
            Outcome::NotRecovered { reason } => write!(f, "NOT recovered: {reason}"),
            Outcome::Aborted { reason } => write!(f, "upgrade aborted: {reason}"),
            Outcome::RefreshFailed { version, reason } => write!(
                f,
                "{version} passed its gate, but refreshing the known-good failed (the previous one \
                 is kept; the next run retries): {reason}"
            ),
        }
    }
}

/// One reconcile of one app. The caller holds the app's lock.
pub struct Reconciler<'a, P: Platform> {
    pub spec: &'a AppSpec,
    pub state_dir: &'a Path,
    pub app_dir: PathBuf,
    pub platform: &'a mut P,
    pub state: AppState,
}

impl<'a, P: Platform> Reconciler<'a, P> {
    pub fn new(
        spec: &'a AppSpec,
        state_dir: &'a Path,
        platform: &'a mut P,
    ) -> anyhow::Result<Self> {
        let app_dir = state_dir.join(&spec.name);
        let state = AppState::load(&app_dir)?;
        Ok(Reconciler {
            spec,
            state_dir,
            app_dir,
            platform,
            state,
        })
    }

    pub fn run(mut self) -> anyhow::Result<Outcome> {
        let outcome = match self.state.intent.clone() {
            Some(Intent {
                stopped: Some(stop),
                ..
            }) if stop.needs_operator => self.leave_alone(&stop),
            Some(intent) => self.recover_interrupted(intent)?,
            None => self.reconcile()?,
        };
        self.state.last_run = Some(RunRecord {
            at: now(),
            outcome: outcome.name().to_owned(),
            detail: outcome.to_string(),
        });
        self.save()?;
        Ok(outcome)
    }

    fn reconcile(&mut self) -> anyhow::Result<Outcome> {
        let releases = self
            .platform
            .releases()
            .with_context(|| format!("fetching the releases of recipe {}", self.spec.recipe))?;
        let policy = self.policy();
        let last_good = self.state.last_good.clone();
        let decision = match &self.spec.pinned {
            Some(wanted) => gate::decide_pinned(last_good.as_ref(), wanted, &releases, &policy),
            None => gate::decide(last_good.as_ref(), &releases, &policy),
        };
        if let Some(why) = &decision.refused {
            tracing::warn!(app = %self.spec.name, "the wanted version is refused: {why}");
        }
        for v in &decision.skipped_prerelease {
            tracing::info!(app = %self.spec.name, version = %v, "skipping a pre-release (set allow_prerelease to take it)");
        }
        self.state.skipped_prerelease = decision
            .skipped_prerelease
            .iter()
            .map(ToString::to_string)
            .collect();
        for v in &decision.skipped_failed {
            tracing::info!(app = %self.spec.name, version = %v, "skipping a version that failed its gate before (approve it to retry)");
        }
        for hold in &decision.holds {
            if self.state.alerted_holds.insert(hold.key()) {
                let kind = match hold.kind {
                    HoldKind::Major => Kind::HeldMajor,
                    HoldKind::ManualMigration => Kind::HeldManualMigration,
                };
                self.alert(
                    kind,
                    NewAlert {
                        message: format!(
                            "{} {} is held ({}); run `ci-warm approve {} {}` to release it",
                            self.spec.name,
                            hold.version,
                            hold.reason(),
                            self.spec.name,
                            hold.version
                        ),
                        attempted: Some(hold.version.to_string()),
                        recovered: true,
                        notes: hold.notes(),
                        ..NewAlert::default()
                    },
                )?;
                self.save()?;
            }
        }
        match (last_good, decision.target) {
            (None, target) => {
                let target = self.spec.initial_version.clone().or(target);
                match target {
                    Some(t) => self.bootstrap(t),
                    None => Ok(Outcome::Held { version: None }),
                }
            }
            (Some(current), Some(target)) if target != current => self.upgrade(current, target),
            (Some(current), _) if decision.holds.is_empty() => {
                Ok(Outcome::NoOp { version: current })
            }
            (Some(current), _) => Ok(Outcome::Held {
                version: Some(current),
            }),
        }
    }

    fn policy(&self) -> GatePolicy {
        let mut approved = self.spec.approved.clone();
        approved.extend(self.state.approvals.iter().filter_map(|v| v.parse().ok()));
        GatePolicy {
            manual_migration_phrases: self.spec.manual_migration_phrases.clone(),
            approved,
            failed: self
                .state
                .failed
                .keys()
                .filter_map(|v| v.parse().ok())
                .collect(),
            allow_prerelease: self.spec.allow_prerelease,
        }
    }

    fn bootstrap(&mut self, target: Version) -> anyhow::Result<Outcome> {
        tracing::info!(app = %self.spec.name, version = %target, "bootstrapping");
        self.journal(Step::Deploy, None, &target, true)?;
        let health = self
            .platform
            .deploy(&target)
            .and_then(|()| self.platform.health(&target));
        match health {
            Ok(Health::Healthy) => {
                self.state.last_good = Some(target.clone());
                self.state.deployed = Some(target.to_string());
                if self.spec.canonical {
                    let done = Outcome::Bootstrapped {
                        version: target.clone(),
                    };
                    return self.refresh_known_good(None, &target, done, None);
                }
                self.state.intent = None;
                self.save()?;
                Ok(Outcome::Bootstrapped { version: target })
            }
            Err(e) if gate_unknown(&e) => self.stop_gate_unknown(e, None, &target),
            other => {
                let reason = failure_reason(other);
                self.record_failure(&target, &reason);
                self.state.intent = None;
                self.save()?;
                self.alert(
                    Kind::BootstrapFailed,
                    NewAlert {
                        message: format!(
                            "first deployment of {} {target} failed its gate: {reason}",
                            self.spec.name
                        ),
                        attempted: Some(target.to_string()),
                        recovered: false,
                        error: vec![reason.clone()],
                        ..NewAlert::default()
                    },
                )?;
                Ok(Outcome::NotRecovered { reason })
            }
        }
    }

    fn upgrade(&mut self, from: Version, to: Version) -> anyhow::Result<Outcome> {
        tracing::info!(app = %self.spec.name, %from, %to, stateful = self.spec.stateful, "upgrading");
        if self.spec.canonical
            && self
                .platform
                .drifted()
                .context("reading whether a quick run left the volumes drifted")?
            && let Some(stopped) = self.restore_known_good(&from, &to, None)?
        {
            return Ok(stopped);
        }
        if self.spec.stateful {
            self.journal(Step::Undeploy, Some(&from), &to, false)?;
            if let Err(e) = self.platform.undeploy() {
                // The volumes are untouched (nothing was snapshotted, the target never ran), but
                // the undeploy may have removed the services already: bring the old version back
                // now rather than leave the app down until the next tick.
                let reason = format!(
                    "undeploying {} before its snapshot failed: {e:#}",
                    self.spec.name
                );
                tracing::error!(app = %self.spec.name, "{reason}");
                return self.abort_before_snapshot(&from, &to, Kind::UndeployFailed, reason);
            }
            self.journal(Step::Snapshot, Some(&from), &to, false)?;
            if let Err(e) = self.platform.take_snapshot(&from) {
                // The volumes are untouched: bring the old version back and stop here.
                let reason = format!("the snapshot failed: {e:#}");
                tracing::error!(app = %self.spec.name, "{reason}");
                return self.abort_before_snapshot(&from, &to, Kind::SnapshotFailed, reason);
            }
        }
        self.journal(Step::Deploy, Some(&from), &to, true)?;
        let health = self.platform.deploy(&to).and_then(|()| {
            self.journal(Step::Gate, Some(&from), &to, true)?;
            self.platform.health(&to)
        });
        match health {
            Ok(Health::Healthy) => {
                self.state.last_good = Some(to.clone());
                self.state.deployed = Some(to.to_string());
                tracing::info!(app = %self.spec.name, %from, %to, "upgraded");
                if self.spec.canonical {
                    let done = Outcome::Upgraded {
                        from: from.clone(),
                        to: to.clone(),
                    };
                    return self.refresh_known_good(Some(&from), &to, done, None);
                }
                self.state.intent = None;
                self.save()?;
                Ok(Outcome::Upgraded { from, to })
            }
            Err(e) if gate_unknown(&e) => self.stop_gate_unknown(e, Some(&from), &to),
            other => {
                let reason = failure_reason(other);
                tracing::warn!(app = %self.spec.name, version = %to, "gate failed: {reason}");
                self.record_failure(&to, &reason);
                self.save()?;
                self.roll_back(&from, &to, Kind::RolledBack, reason, true)
            }
        }
    }

    /// Brings `from` back with its data; `data_touched` says whether the volumes need the
    /// snapshot restored first.
    fn roll_back(
        &mut self,
        from: &Version,
        attempted: &Version,
        kind: Kind,
        reason: String,
        data_touched: bool,
    ) -> anyhow::Result<Outcome> {
        let result = self.try_roll_back(from, attempted, data_touched);
        if let Err(e) = &result
            && let Some(corrupt) = e.downcast_ref::<SnapshotCorrupt>()
        {
            let problems = corrupt.0.clone();
            return self.halt_on_corrupt_snapshot(from, attempted, reason, problems);
        }
        let (recovered, detail) = match &result {
            Ok(Health::Healthy) => (true, None),
            Ok(Health::Unhealthy(why)) => (
                false,
                Some(format!("{from} is not healthy after the rollback: {why}")),
            ),
            Err(e) => (false, Some(format!("{e:#}"))),
        };
        if recovered {
            self.state.deployed = (!self.spec.canonical).then(|| from.to_string());
            self.state.intent = None;
        }
        self.save()?;
        let kind = match recovered {
            true => kind,
            false if kind == Kind::Interrupted => Kind::Interrupted,
            false => Kind::RollbackFailed,
        };
        let mut error = vec![reason.clone()];
        error.extend(detail.clone());
        let message = if recovered {
            format!(
                "{} {attempted}: {reason}; rolled back to {from}{}{}",
                self.spec.name,
                if data_touched && self.spec.stateful {
                    " with its data restored"
                } else {
                    ""
                },
                if self.spec.canonical {
                    "; the canonical rests undeployed with its known-good"
                } else {
                    ""
                }
            )
        } else {
            format!(
                "{} {attempted}: {reason}; rollback to {from} FAILED: {}",
                self.spec.name,
                detail.clone().unwrap_or_default()
            )
        };
        self.alert(
            kind,
            NewAlert {
                message,
                attempted: Some(attempted.to_string()),
                recovered,
                error,
                ..NewAlert::default()
            },
        )?;
        if kind == Kind::Interrupted {
            return Ok(Outcome::Interrupted { recovered });
        }
        Ok(if recovered {
            Outcome::RolledBack {
                attempted: attempted.clone(),
                to: from.clone(),
            }
        } else {
            Outcome::NotRecovered {
                reason: detail.unwrap_or(reason),
            }
        })
    }

    fn try_roll_back(
        &mut self,
        from: &Version,
        attempted: &Version,
        data_touched: bool,
    ) -> anyhow::Result<Health> {
        if self.spec.stateful {
            self.journal(Step::RollbackUndeploy, Some(from), attempted, data_touched)?;
            self.platform
                .undeploy()
                .context("undeploying the failed version")?;
            if data_touched {
                self.verify_snapshot()?;
                self.journal(Step::RollbackRestore, Some(from), attempted, true)?;
                self.platform
                    .restore_snapshot()
                    .context("restoring the snapshot")?;
                if self.spec.canonical {
                    self.platform.drift_cleared()?;
                }
            }
            if self.spec.canonical {
                // A canonical rests undeployed: its rollback ends with the known-good on the
                // volumes, not with a redeploy.
                return Ok(Health::Healthy);
            }
        }
        self.journal(Step::RollbackDeploy, Some(from), attempted, false)?;
        self.platform
            .deploy(from)
            .with_context(|| format!("redeploying {from}"))?;
        self.journal(Step::RollbackGate, Some(from), attempted, false)?;
        self.platform.health(from)
    }

    /// A missing or corrupt snapshot is a typed [`SnapshotCorrupt`] error: never restored.
    fn verify_snapshot(&mut self) -> anyhow::Result<()> {
        match self
            .platform
            .verify_snapshot()
            .context("verifying the snapshot")?
        {
            Verified::Ok => Ok(()),
            Verified::Missing => Err(SnapshotCorrupt(vec!["no snapshot to restore".into()]).into()),
            Verified::Corrupt(problems) => Err(SnapshotCorrupt(problems).into()),
        }
    }

    /// A canonical's volumes were left drifted by a quick run: put the known-good back before
    /// the upgrade, so its protective snapshot never captures a PR's data. `None`: done, go on.
    /// `recovering`: an unfinished step found by this run (its reason, and whether a failure
    /// of it was alerted already).
    fn restore_known_good(
        &mut self,
        from: &Version,
        to: &Version,
        recovering: Option<(&str, bool)>,
    ) -> anyhow::Result<Option<Outcome>> {
        tracing::info!(app = %self.spec.name, "a quick run left the volumes drifted; restoring the known-good");
        self.journal(Step::RestoreKnownGood, Some(from), to, true)?;
        let result = self
            .platform
            .undeploy()
            .context("undeploying before restoring the known-good")
            .and_then(|()| self.verify_snapshot())
            .and_then(|()| {
                self.platform
                    .restore_snapshot()
                    .context("restoring the known-good")
            })
            .and_then(|()| self.platform.drift_cleared());
        let what = "restoring the known-good over volumes a quick run left drifted";
        let e = match result {
            Ok(()) => {
                self.state.deployed = None;
                self.state.intent = None;
                self.save()?;
                return match recovering {
                    None => Ok(None),
                    Some((reason, _)) => {
                        self.known_good_recovered(to, reason, "the known-good is restored")?;
                        Ok(Some(Outcome::Interrupted { recovered: true }))
                    }
                };
            }
            Err(e) => e,
        };
        if let Some(corrupt) = e.downcast_ref::<SnapshotCorrupt>() {
            let problems = corrupt.0.clone();
            return self
                .halt_on_corrupt_snapshot(from, to, what.to_owned(), problems)
                .map(Some);
        }
        let reason = format!("{what} failed: {e:#}");
        let outcome =
            self.stop_known_good(Kind::CanonicalRestoreFailed, to, &reason, recovering)?;
        Ok(Some(outcome.unwrap_or(Outcome::Aborted { reason })))
    }

    /// A canonical passed its gate on `to` (state says so already): undeploy it and snapshot
    /// the volumes as the new known-good. `done` is the outcome when that works.
    fn refresh_known_good(
        &mut self,
        from: Option<&Version>,
        to: &Version,
        done: Outcome,
        recovering: Option<(&str, bool)>,
    ) -> anyhow::Result<Outcome> {
        self.journal(Step::RefreshKnownGood, from, to, true)?;
        let result = self
            .platform
            .undeploy()
            .context("undeploying to snapshot the known-good")
            .and_then(|()| {
                self.platform
                    .take_snapshot(to)
                    .context("snapshotting the known-good")
            })
            .and_then(|()| self.platform.drift_cleared());
        match result {
            Ok(()) => {
                self.state.deployed = None;
                self.state.intent = None;
                self.save()?;
                match recovering {
                    None => Ok(done),
                    Some((reason, _)) => {
                        self.known_good_recovered(
                            to,
                            reason,
                            "the known-good refresh is finished",
                        )?;
                        Ok(Outcome::Interrupted { recovered: true })
                    }
                }
            }
            Err(e) => {
                let reason = format!("refreshing the known-good to {to} failed: {e:#}");
                let outcome =
                    self.stop_known_good(Kind::CanonicalRefreshFailed, to, &reason, recovering)?;
                Ok(outcome.unwrap_or(Outcome::RefreshFailed {
                    version: to.clone(),
                    reason,
                }))
            }
        }
    }

    /// A canonical step failed: it stays journaled (the next run retries it), alerted once
    /// (`kind`, or `interrupted` when finishing a killed run's step). `Some` when recovering.
    fn stop_known_good(
        &mut self,
        kind: Kind,
        to: &Version,
        reason: &str,
        recovering: Option<(&str, bool)>,
    ) -> anyhow::Result<Option<Outcome>> {
        tracing::error!(app = %self.spec.name, "{reason}");
        self.stop(reason, false)?;
        let (kind, message, error, alerted) = match recovering {
            None => (
                kind,
                format!(
                    "{}: {reason}; the step stays journaled and the next run retries it",
                    self.spec.name
                ),
                vec![reason.to_owned()],
                false,
            ),
            Some((why, alerted)) => (
                Kind::Interrupted,
                format!(
                    "{}: {why}; finishing it failed: {reason}; the next run retries it",
                    self.spec.name
                ),
                vec![why.to_owned(), reason.to_owned()],
                alerted,
            ),
        };
        if !alerted {
            self.alert(
                kind,
                NewAlert {
                    message,
                    attempted: Some(to.to_string()),
                    recovered: false,
                    error,
                    ..NewAlert::default()
                },
            )?;
        }
        Ok(recovering.map(|_| Outcome::Interrupted { recovered: false }))
    }

    fn known_good_recovered(&self, to: &Version, why: &str, done: &str) -> anyhow::Result<()> {
        self.alert(
            Kind::Interrupted,
            NewAlert {
                message: format!(
                    "{}: {why}; {done} and the canonical rests undeployed",
                    self.spec.name
                ),
                attempted: Some(to.to_string()),
                recovered: true,
                error: vec![why.to_owned()],
                ..NewAlert::default()
            },
        )
    }

    /// The upgrade stopped before a snapshot was taken (the undeploy or the snapshot failed;
    /// `reason` says which): the volumes still hold `from`'s data untouched, so `from` is
    /// redeployed without a restore, the intent is cleared (the next tick tries again), and one
    /// `kind` alert says whether `from` came back healthy.
    fn abort_before_snapshot(
        &mut self,
        from: &Version,
        to: &Version,
        kind: Kind,
        reason: String,
    ) -> anyhow::Result<Outcome> {
        // A canonical rests undeployed: its volumes are untouched, nothing to bring back.
        let health = match self.spec.canonical {
            true => Ok(Health::Healthy),
            false => self
                .platform
                .deploy(from)
                .and_then(|()| self.platform.health(from)),
        };
        let recovered = matches!(health, Ok(Health::Healthy));
        self.state.intent = None;
        self.save()?;
        let back = match (&health, self.spec.canonical) {
            (_, true) => "the canonical rests undeployed on its known-good".to_owned(),
            (Ok(Health::Healthy), false) => format!("{from} is redeployed and healthy"),
            (Ok(Health::Unhealthy(why)), false) => {
                format!("redeploying {from} did NOT come back healthy: {why}")
            }
            (Err(e), false) => format!("redeploying {from} FAILED: {e:#}"),
        };
        let mut error = vec![reason.clone()];
        if !recovered {
            error.push(back.clone());
        }
        self.alert(
            kind,
            NewAlert {
                message: format!(
                    "{}: upgrade to {to} not attempted, {reason}; {back}; the next run tries again",
                    self.spec.name
                ),
                attempted: Some(to.to_string()),
                recovered,
                error,
                ..NewAlert::default()
            },
        )?;
        Ok(if recovered {
            Outcome::Aborted {
                reason: format!("{reason}; {back}"),
            }
        } else {
            Outcome::NotRecovered {
                reason: format!("{reason}; {back}"),
            }
        })
    }

    fn recover_interrupted(&mut self, intent: Intent) -> anyhow::Result<Outcome> {
        tracing::warn!(app = %self.spec.name, step = ?intent.step, to = %intent.to, "found an unfinished run; rolling back");
        let reason = match &intent.stopped {
            Some(stop) => format!(
                "a run (pid {}) stopped during step {:?} of the upgrade to {}: {}",
                intent.pid, intent.step, intent.to, stop.reason
            ),
            None => format!(
                "a run (pid {}) was interrupted during step {:?} of the upgrade to {}",
                intent.pid, intent.step, intent.to
            ),
        };
        let alerted = intent.stopped.is_some();
        match (intent.step, intent.from.clone()) {
            (Step::RefreshKnownGood, from) => {
                let done = Outcome::Interrupted { recovered: true };
                return self.refresh_known_good(
                    from.as_ref(),
                    &intent.to,
                    done,
                    Some((&reason, alerted)),
                );
            }
            (Step::RestoreKnownGood, Some(from)) => {
                let outcome =
                    self.restore_known_good(&from, &intent.to, Some((&reason, alerted)))?;
                return Ok(outcome.unwrap_or(Outcome::Interrupted { recovered: true }));
            }
            _ => {}
        }
        match intent.from.clone().or_else(|| self.state.last_good.clone()) {
            Some(from) => {
                let touched = intent.data_touched
                    || matches!(
                        intent.step,
                        Step::RollbackRestore | Step::RollbackDeploy | Step::RollbackGate
                    );
                self.roll_back(&from, &intent.to, Kind::Interrupted, reason, touched)
            }
            None => {
                self.state.intent = None;
                self.save()?;
                self.alert(
                    Kind::Interrupted,
                    NewAlert {
                        message: format!(
                            "{}: {reason}; there is no last good version to return to",
                            self.spec.name
                        ),
                        attempted: Some(intent.to.to_string()),
                        recovered: false,
                        error: vec![reason],
                        ..NewAlert::default()
                    },
                )?;
                Ok(Outcome::Interrupted { recovered: false })
            }
        }
    }

    /// The health gate could not observe the deployment (Docker unreachable until its
    /// deadline): whether `to` is healthy is unknown, so it is *not* recorded as failed, and a
    /// rollback now would fail the same way. The intent stays journaled with the reason, so the
    /// next run rolls back to `from` (restoring the data where the target touched it) and its
    /// `interrupted` alert says that Docker was unreachable; `to` may be attempted again later.
    fn stop_gate_unknown(
        &mut self,
        e: anyhow::Error,
        from: Option<&Version>,
        to: &Version,
    ) -> anyhow::Result<Outcome> {
        let reason = format!("{e:#}");
        tracing::error!(app = %self.spec.name, version = %to, "the health gate's outcome is unknown: {reason}");
        self.stop(&reason, false)?;
        let next = match from {
            Some(from) => format!("the next run rolls back to {from}"),
            None => "the next run reports it (there is no last good version)".to_owned(),
        };
        Err(e.context(format!(
            "the health gate of {} {to} could not tell whether it is healthy; {to} is not recorded as failed, the step stays journaled and {next}",
            self.spec.name
        )))
    }

    /// The snapshot needed for a rollback failed verification: it is never restored, the app
    /// stays undeployed, and one `snapshot-corrupt` alert says so. The intent stays journaled
    /// and marked, so later runs leave the app alone without alerting again until an operator
    /// acts (docs/operations.md).
    fn halt_on_corrupt_snapshot(
        &mut self,
        from: &Version,
        attempted: &Version,
        reason: String,
        problems: Vec<String>,
    ) -> anyhow::Result<Outcome> {
        let what = format!(
            "the snapshot of {} {from} failed verification and was NOT restored ({})",
            self.spec.name,
            problems.join("; ")
        );
        self.stop(&what, true)?;
        self.alert(
            Kind::SnapshotCorrupt,
            NewAlert {
                message: format!(
                    "{what}; {} is left undeployed and ci-warm leaves it alone until an operator acts (docs/operations.md, \"A corrupt snapshot\"); the rollback from {attempted} was needed because: {reason}",
                    self.spec.name
                ),
                attempted: Some(attempted.to_string()),
                recovered: false,
                error: vec![what.clone(), reason],
                ..NewAlert::default()
            },
        )?;
        Ok(Outcome::NotRecovered { reason: what })
    }

    /// Marks the journaled intent as left unfinished on purpose, and saves.
    fn stop(&mut self, reason: &str, needs_operator: bool) -> anyhow::Result<()> {
        if let Some(intent) = self.state.intent.as_mut() {
            intent.stopped = Some(Stopped {
                at: now(),
                reason: reason.to_owned(),
                needs_operator,
            });
        }
        self.save()
    }

    /// A run after a corrupt snapshot: nothing is touched and nothing alerted (that happened
    /// once); the app waits, undeployed, for an operator.
    fn leave_alone(&self, stop: &Stopped) -> Outcome {
        tracing::warn!(app = %self.spec.name, since = %stop.at, "left alone until an operator acts: {}", stop.reason);
        Outcome::NotRecovered {
            reason: format!(
                "left undeployed since {}, waiting for an operator (docs/operations.md): {}",
                stop.at, stop.reason
            ),
        }
    }

    fn record_failure(&mut self, version: &Version, reason: &str) {
        self.state.failed.insert(
            version.to_string(),
            Failure {
                at: now(),
                reason: reason.to_owned(),
            },
        );
    }

    fn journal(
        &mut self,
        step: Step,
        from: Option<&Version>,
        to: &Version,
        data_touched: bool,
    ) -> anyhow::Result<()> {
        let touched = data_touched
            || self
                .state
                .intent
                .as_ref()
                .is_some_and(|i| i.data_touched && i.to == *to);
        self.state.intent = Some(Intent {
            step,
            from: from.cloned(),
            to: to.clone(),
            data_touched: touched && self.spec.stateful,
            started_at: now(),
            pid: std::process::id(),
            stopped: None,
        });
        self.save()
    }

    fn save(&self) -> anyhow::Result<()> {
        self.state
            .save(&self.app_dir)
            .with_context(|| format!("saving the state of app {}", self.spec.name))
    }

    fn alert(&self, kind: Kind, mut new: NewAlert) -> anyhow::Result<()> {
        new.app = self.spec.name.clone();
        new.recipe = Some(self.spec.recipe.clone());
        new.last_good = self.state.last_good.as_ref().map(ToString::to_string);
        let (_, path) = alert::publish(self.state_dir, kind, new)?;
        alert::run_hook(self.spec.on_alert.as_deref(), &path);
        Ok(())
    }
}

/// A snapshot that failed verification: never restored.
#[derive(Debug, thiserror::Error)]
#[error("the snapshot failed verification and was not restored: {}", .0.join("; "))]
pub struct SnapshotCorrupt(pub Vec<String>);

/// Whether a health error means the gate could not tell (Docker unreachable), as opposed to
/// the deployment failing.
fn gate_unknown(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<HealthError>(),
        Some(HealthError::Unobservable { .. })
    )
}

fn failure_reason(health: anyhow::Result<Health>) -> String {
    match health {
        Ok(Health::Healthy) => "healthy".to_owned(),
        Ok(Health::Unhealthy(why)) => why,
        Err(e) => format!("{e:#}"),
    }
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests;
