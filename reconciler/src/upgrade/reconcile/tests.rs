//! The state machine against an in-memory platform: every path of DESIGN.md's diagram.

use super::*;
use crate::upgrade::alert::Alert;

fn v(s: &str) -> Version {
    s.parse().unwrap()
}

/// A deployment with one volume, modelled as a string.
#[derive(Default)]
struct Fake {
    releases: Vec<(String, Option<String>)>,
    /// Versions that never become healthy; deploying them writes junk into the volume.
    broken: BTreeSet<String>,
    deployed: Option<Version>,
    volume: String,
    snapshot: Option<String>,
    corrupt_snapshot: bool,
    fail_fetch: bool,
    fail_snapshot: bool,
    /// The undeploy removes the services but the volumes never become free (a container keeps
    /// one), as `wait_until_gone` reports it.
    fail_undeploy: bool,
    /// The health gate cannot observe anything (Docker unreachable until its deadline).
    docker_down: bool,
    verifies: usize,
    /// A canonical's drift marker: a quick run left the volumes different from the known-good.
    drift: bool,
    fail_restore: bool,
    log: Vec<String>,
}

impl Platform for Fake {
    fn releases(&mut self) -> anyhow::Result<Vec<Release>> {
        if self.fail_fetch {
            anyhow::bail!("git fetch: could not resolve host");
        }
        Ok(self
            .releases
            .iter()
            .map(|(ver, notes)| Release {
                version: v(ver),
                notes: notes.clone(),
            })
            .collect())
    }
    fn deploy(&mut self, version: &Version) -> anyhow::Result<()> {
        self.log.push(format!("deploy {version}"));
        if self.broken.contains(&version.to_string()) {
            self.volume = format!("junk from {version}");
        } else if self.volume.is_empty() {
            self.volume = format!("marker by {version}");
        }
        self.deployed = Some(version.clone());
        Ok(())
    }
    fn undeploy(&mut self) -> anyhow::Result<()> {
        self.log.push("undeploy".into());
        self.deployed = None;
        if self.fail_undeploy {
            anyhow::bail!(
                "stack demo of app demo still not gone after 120s: volumes held: demo_data <- backup (running)"
            );
        }
        Ok(())
    }
    fn health(&mut self, version: &Version) -> anyhow::Result<Health> {
        if self.docker_down {
            return Err(crate::upgrade::health::HealthError::Unobservable {
                stack: "demo".into(),
                timeout: std::time::Duration::from_secs(300),
                unreachable_for: std::time::Duration::from_secs(290),
                error: "Docker unreachable at unix:///var/run/docker.sock: connection refused"
                    .into(),
            })
            .context("health-gating app demo");
        }
        Ok(match &self.deployed {
            Some(d) if d == version && !self.broken.contains(&d.to_string()) => Health::Healthy,
            Some(d) if d == version => {
                Health::Unhealthy("probe http://app/health: status 503, expected 200".into())
            }
            _ => Health::Unhealthy("not deployed".into()),
        })
    }
    fn take_snapshot(&mut self, _: &Version) -> anyhow::Result<()> {
        self.log.push("snapshot".into());
        if self.fail_snapshot {
            anyhow::bail!("not enough space for the snapshot");
        }
        self.snapshot = Some(self.volume.clone());
        Ok(())
    }
    fn verify_snapshot(&mut self) -> anyhow::Result<Verified> {
        self.verifies += 1;
        Ok(match (&self.snapshot, self.corrupt_snapshot) {
            (None, _) => Verified::Missing,
            (Some(_), true) => {
                Verified::Corrupt(vec!["volumes/data/marker: sha256 mismatch".into()])
            }
            (Some(_), false) => Verified::Ok,
        })
    }
    fn restore_snapshot(&mut self) -> anyhow::Result<()> {
        self.log.push("restore".into());
        if self.fail_restore {
            anyhow::bail!("restoring volume data: permission denied");
        }
        self.volume = self.snapshot.clone().unwrap_or_default();
        Ok(())
    }
    fn drifted(&mut self) -> anyhow::Result<bool> {
        Ok(self.drift)
    }
    fn drift_cleared(&mut self) -> anyhow::Result<()> {
        self.drift = false;
        Ok(())
    }
}

fn catalogue() -> Vec<(String, Option<String>)> {
    [
        ("1.0.0+1.0.0", None),
        ("1.1.0+1.0.0", None),
        ("1.2.0+1.0.0", None),
        (
            "1.3.0+1.1.0",
            Some("Manual migration required: run demo-app migrate"),
        ),
        ("2.0.0+2.0.0", None),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_owned(), b.map(str::to_owned)))
    .collect()
}

fn spec(stateful: bool) -> AppSpec {
    AppSpec {
        allow_prerelease: false,
        name: "demo".into(),
        recipe: "demo".into(),
        stateful,
        pinned: None,
        initial_version: Some(v("1.0.0+1.0.0")),
        approved: BTreeSet::new(),
        manual_migration_phrases: gate::default_phrases(),
        on_alert: None,
        canonical: false,
    }
}

struct World {
    dir: tempfile::TempDir,
    fake: Fake,
}

impl World {
    fn new(upto: usize) -> World {
        World {
            dir: tempfile::tempdir().unwrap(),
            fake: Fake {
                releases: catalogue().into_iter().take(upto).collect(),
                ..Fake::default()
            },
        }
    }
    fn run(&mut self, spec: &AppSpec) -> Outcome {
        Reconciler::new(spec, self.dir.path(), &mut self.fake)
            .unwrap()
            .run()
            .unwrap()
    }
    fn state(&self) -> AppState {
        AppState::load(&self.dir.path().join("demo")).unwrap()
    }
    fn alerts(&self) -> Vec<Alert> {
        let dir = self.dir.path().join("alerts");
        let mut names: Vec<_> = match std::fs::read_dir(&dir) {
            Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
            Err(_) => return vec![],
        };
        names.sort();
        names
            .iter()
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect()
    }
    fn kinds(&self) -> Vec<Kind> {
        self.alerts().iter().map(|a| a.kind).collect()
    }
}

#[test]
fn bootstrap_then_noop() {
    let mut w = World::new(1);
    let s = spec(true);
    assert_eq!(
        w.run(&s),
        Outcome::Bootstrapped {
            version: v("1.0.0+1.0.0")
        }
    );
    assert_eq!(w.state().last_good, Some(v("1.0.0+1.0.0")));
    assert_eq!(
        w.run(&s),
        Outcome::NoOp {
            version: v("1.0.0+1.0.0")
        }
    );
    assert_eq!(w.fake.log, vec!["deploy 1.0.0+1.0.0"]);
    assert!(w.alerts().is_empty());
}

#[test]
fn stateful_upgrade_snapshots_while_undeployed() {
    let mut w = World::new(1);
    let s = spec(true);
    w.run(&s);
    w.fake.releases = catalogue().into_iter().take(2).collect();
    let out = w.run(&s);
    assert_eq!(
        out,
        Outcome::Upgraded {
            from: v("1.0.0+1.0.0"),
            to: v("1.1.0+1.0.0")
        }
    );
    assert_eq!(out.exit_code(), 0);
    assert_eq!(
        w.fake.log[1..],
        ["undeploy", "snapshot", "deploy 1.1.0+1.0.0"]
    );
    assert_eq!(w.fake.volume, "marker by 1.0.0+1.0.0");
    let st = w.state();
    assert_eq!(st.last_good, Some(v("1.1.0+1.0.0")));
    assert!(st.intent.is_none());
}

#[test]
fn stateful_rollback_restores_data_and_is_not_retried() {
    let mut w = World::new(2);
    let s = spec(true);
    w.run(&s); // bootstrap 1.0.0
    w.run(&s); // 1.1.0
    w.fake.releases = catalogue().into_iter().take(3).collect();
    w.fake.broken.insert("1.2.0+1.0.0".into());
    w.fake.log.clear();
    let out = w.run(&s);
    assert_eq!(
        out,
        Outcome::RolledBack {
            attempted: v("1.2.0+1.0.0"),
            to: v("1.1.0+1.0.0")
        }
    );
    assert_eq!(out.exit_code(), exit::ROLLED_BACK);
    assert_eq!(
        w.fake.log,
        [
            "undeploy",
            "snapshot",
            "deploy 1.2.0+1.0.0",
            "undeploy",
            "restore",
            "deploy 1.1.0+1.0.0"
        ]
    );
    assert_eq!(w.fake.volume, "marker by 1.0.0+1.0.0", "data restored");
    let alerts = w.alerts();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].kind, Kind::RolledBack);
    assert!(alerts[0].recovered);
    assert_eq!(alerts[0].attempted.as_deref(), Some("1.2.0+1.0.0"));
    assert_eq!(alerts[0].last_good.as_deref(), Some("1.1.0+1.0.0"));
    assert!(
        alerts[0].error[0].contains("probe"),
        "{:?}",
        alerts[0].error
    );

    // Next tick: the failed version is not attempted again, and no second alert.
    w.fake.log.clear();
    assert_eq!(
        w.run(&s),
        Outcome::NoOp {
            version: v("1.1.0+1.0.0")
        }
    );
    assert!(w.fake.log.is_empty(), "{:?}", w.fake.log);
    assert_eq!(w.alerts().len(), 1);

    // A newer safe version moves on.
    w.fake.releases.push(("1.2.1+1.0.0".into(), None));
    assert_eq!(
        w.run(&s),
        Outcome::Upgraded {
            from: v("1.1.0+1.0.0"),
            to: v("1.2.1+1.0.0")
        }
    );
}

#[test]
fn approve_retries_a_failed_version() {
    let mut w = World::new(3);
    let mut s = spec(true);
    s.initial_version = Some(v("1.1.0+1.0.0"));
    w.fake.broken.insert("1.2.0+1.0.0".into());
    w.run(&s);
    assert!(matches!(w.run(&s), Outcome::RolledBack { .. }));
    w.fake.broken.clear();
    let mut st = w.state();
    st.approvals.insert("1.2.0+1.0.0".into());
    st.save(&w.dir.path().join("demo")).unwrap();
    assert!(matches!(w.run(&s), Outcome::Upgraded { .. }));
}

#[test]
fn stateless_rollback_redeploys_without_touching_data() {
    let mut w = World::new(2);
    let s = spec(false);
    w.run(&s);
    w.run(&s);
    w.fake.releases = catalogue().into_iter().take(3).collect();
    w.fake.broken.insert("1.2.0+1.0.0".into());
    w.fake.log.clear();
    let out = w.run(&s);
    assert!(matches!(out, Outcome::RolledBack { .. }), "{out:?}");
    assert_eq!(w.fake.log, ["deploy 1.2.0+1.0.0", "deploy 1.1.0+1.0.0"]);
    assert_eq!(w.kinds(), [Kind::RolledBack]);
}

/// An app on 1.1.0 whose next release never gets healthy and whose snapshot is corrupt.
fn on_1_1_with_a_broken_1_2_and_a_corrupt_snapshot() -> (World, AppSpec) {
    let mut w = World::new(2);
    let s = spec(true);
    w.run(&s); // bootstrap 1.0.0
    w.run(&s); // upgrade to 1.1.0
    w.fake.releases = catalogue().into_iter().take(3).collect();
    w.fake.broken.insert("1.2.0+1.0.0".into());
    w.fake.corrupt_snapshot = true;
    (w, s)
}

#[test]
fn corrupt_snapshot_is_never_restored() {
    let (mut w, s) = on_1_1_with_a_broken_1_2_and_a_corrupt_snapshot();
    w.fake.log.clear();
    let out = w.run(&s);
    assert!(matches!(out, Outcome::NotRecovered { .. }), "{out:?}");
    assert_eq!(out.exit_code(), exit::NOT_RECOVERED);
    let alerts = w.alerts();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].kind, Kind::SnapshotCorrupt);
    assert!(!alerts[0].recovered);
    assert!(
        alerts[0]
            .error
            .iter()
            .any(|e| e.contains("sha256 mismatch")),
        "{:?}",
        alerts[0].error
    );
    assert!(
        !w.fake.log.contains(&"restore".to_owned()),
        "{:?}",
        w.fake.log
    );
    assert_eq!(w.fake.deployed, None, "left undeployed");
}

#[test]
fn major_and_manual_migration_are_held_once_while_safe_minor_is_taken() {
    let mut w = World::new(5);
    let mut s = spec(true);
    s.initial_version = Some(v("1.1.0+1.0.0"));
    w.run(&s);
    // 1.2.0 is safe, 1.3.0 asks for a manual migration, 2.0.0 is major.
    let out = w.run(&s);
    assert_eq!(
        out,
        Outcome::Upgraded {
            from: v("1.1.0+1.0.0"),
            to: v("1.2.0+1.0.0")
        }
    );
    let kinds = w.kinds();
    assert!(
        kinds.contains(&Kind::HeldMajor) && kinds.contains(&Kind::HeldManualMigration),
        "{kinds:?}"
    );
    let manual = w
        .alerts()
        .into_iter()
        .find(|a| a.kind == Kind::HeldManualMigration)
        .unwrap();
    assert!(
        manual
            .notes
            .unwrap_or_default()
            .contains("Manual migration required")
    );
    let n = w.alerts().len();
    assert_eq!(
        w.run(&s),
        Outcome::Held {
            version: Some(v("1.2.0+1.0.0"))
        }
    );
    assert_eq!(w.alerts().len(), n, "a hold alerts once");
}

#[test]
fn interrupted_upgrade_rolls_back_with_data() {
    let mut w = World::new(2);
    let s = spec(true);
    w.run(&s);
    w.run(&s); // on 1.1.0
    // Simulate a run killed after deploying a new version that wrote junk.
    w.fake.snapshot = Some(w.fake.volume.clone());
    w.fake.volume = "junk".into();
    let mut st = w.state();
    st.intent = Some(Intent {
        stopped: None,
        step: Step::Gate,
        from: Some(v("1.1.0+1.0.0")),
        to: v("1.2.0+1.0.0"),
        data_touched: true,
        started_at: "t".into(),
        pid: 4242,
    });
    st.save(&w.dir.path().join("demo")).unwrap();
    let out = w.run(&s);
    assert_eq!(out, Outcome::Interrupted { recovered: true });
    assert_eq!(w.fake.volume, "marker by 1.0.0+1.0.0");
    assert_eq!(w.fake.deployed, Some(v("1.1.0+1.0.0")));
    assert_eq!(w.kinds(), [Kind::Interrupted]);
    assert!(w.alerts()[0].recovered);
    assert!(w.state().intent.is_none());
}

#[test]
fn interrupted_before_deploy_does_not_restore() {
    let mut w = World::new(1);
    let s = spec(true);
    w.run(&s);
    w.fake.volume = "live data".into();
    let mut st = w.state();
    st.intent = Some(Intent {
        stopped: None,
        step: Step::Snapshot,
        from: Some(v("1.0.0+1.0.0")),
        to: v("1.1.0+1.0.0"),
        data_touched: false,
        started_at: "t".into(),
        pid: 1,
    });
    st.save(&w.dir.path().join("demo")).unwrap();
    w.fake.log.clear();
    assert_eq!(w.run(&s), Outcome::Interrupted { recovered: true });
    assert_eq!(w.fake.log, ["undeploy", "deploy 1.0.0+1.0.0"]);
    assert_eq!(w.fake.volume, "live data");
}

#[test]
fn fetch_failure_is_an_error_not_a_noop() {
    let mut w = World::new(1);
    let s = spec(true);
    w.run(&s);
    w.fake.fail_fetch = true;
    let err = Reconciler::new(&s, w.dir.path(), &mut w.fake)
        .unwrap()
        .run()
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("fetching the releases of recipe demo"),
        "{err:#}"
    );
}

#[test]
fn snapshot_failure_aborts_and_redeploys() {
    let mut w = World::new(1);
    let s = spec(true);
    w.run(&s);
    w.fake.releases = catalogue().into_iter().take(2).collect();
    w.fake.fail_snapshot = true;
    let out = w.run(&s);
    assert!(matches!(out, Outcome::Aborted { .. }), "{out:?}");
    assert_eq!(w.fake.deployed, Some(v("1.0.0+1.0.0")));
    assert_eq!(w.kinds(), [Kind::SnapshotFailed]);
    assert_eq!(w.state().last_good, Some(v("1.0.0+1.0.0")));
}

/// An undeploy that fails before the snapshot (the services are gone, a volume is still held):
/// nothing was snapshotted and the target never ran, so the old version comes back on its
/// untouched data, no version is recorded as failed, one alert names the undeploy, and the
/// next tick (the volume free again) upgrades as usual.
#[test]
fn an_undeploy_failing_before_the_snapshot_redeploys_the_old_version() {
    let mut w = World::new(1);
    let s = spec(true);
    w.run(&s);
    let data = w.fake.volume.clone();
    w.fake.releases = catalogue().into_iter().take(2).collect();
    w.fake.fail_undeploy = true;
    w.fake.log.clear();
    let out = w.run(&s);
    let Outcome::Aborted { reason } = &out else {
        panic!("{out:?}")
    };
    assert!(
        reason.contains("undeploying demo before its snapshot failed")
            && reason.contains("volumes held"),
        "{reason}"
    );
    assert_eq!(out.exit_code(), exit::FAILURE);
    assert_eq!(
        w.fake.log,
        ["undeploy", "deploy 1.0.0+1.0.0"],
        "no snapshot, no target"
    );
    assert_eq!(w.fake.deployed, Some(v("1.0.0+1.0.0")));
    assert_eq!(w.fake.volume, data, "data untouched");
    let st = w.state();
    assert_eq!(st.last_good, Some(v("1.0.0+1.0.0")));
    assert_eq!(st.intent, None);
    assert!(
        st.failed.is_empty(),
        "not the version's fault: {:?}",
        st.failed
    );
    let run = st.last_run.unwrap();
    assert_eq!(run.outcome, "aborted");
    assert!(run.detail.contains("undeploying demo"), "{}", run.detail);
    assert_eq!(w.kinds(), [Kind::UndeployFailed]);
    let alert = &w.alerts()[0];
    assert!(alert.recovered, "{alert:?}");
    assert_eq!(alert.attempted.as_deref(), Some("1.1.0+1.0.0"));
    assert!(
        alert
            .message
            .contains("undeploying demo before its snapshot failed"),
        "{}",
        alert.message
    );
    // The volume is free again: the next tick upgrades, and alerts nothing.
    w.fake.fail_undeploy = false;
    assert_eq!(
        w.run(&s),
        Outcome::Upgraded {
            from: v("1.0.0+1.0.0"),
            to: v("1.1.0+1.0.0")
        }
    );
    assert_eq!(w.kinds(), [Kind::UndeployFailed]);
}

#[test]
fn bootstrap_failure_alerts_and_is_not_recovered() {
    let mut w = World::new(1);
    w.fake.broken.insert("1.0.0+1.0.0".into());
    let out = w.run(&spec(true));
    assert!(matches!(out, Outcome::NotRecovered { .. }));
    assert_eq!(out.exit_code(), exit::NOT_RECOVERED);
    assert_eq!(w.kinds(), [Kind::BootstrapFailed]);
}

#[test]
fn a_docker_outage_during_the_gate_is_not_recorded_as_the_version_failing() {
    let mut w = World::new(1);
    let s = spec(true);
    w.run(&s); // bootstrap 1.0.0
    w.fake.releases = catalogue().into_iter().take(2).collect();
    w.fake.docker_down = true;
    let err = Reconciler::new(&s, w.dir.path(), &mut w.fake)
        .unwrap()
        .run()
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("Docker was unreachable"), "{text}");
    assert!(text.contains("not recorded as failed"), "{text}");
    let st = w.state();
    assert!(st.failed.is_empty(), "{:?}", st.failed);
    let intent = st.intent.expect("the step stays journaled");
    assert_eq!(intent.step, Step::Gate);
    let stop = intent.stopped.expect("with the reason");
    assert!(stop.reason.contains("Docker was unreachable") && !stop.needs_operator);
    assert!(w.alerts().is_empty(), "no verdict, no alert yet");

    // Docker is back: the next run rolls back (data restored) and says why, naming Docker.
    w.fake.docker_down = false;
    assert_eq!(w.run(&s), Outcome::Interrupted { recovered: true });
    assert_eq!(w.fake.volume, "marker by 1.0.0+1.0.0");
    let alerts = w.alerts();
    assert_eq!(w.kinds(), [Kind::Interrupted]);
    assert!(
        alerts[0].message.contains("Docker was unreachable"),
        "{}",
        alerts[0].message
    );
    assert!(alerts[0].recovered);
    assert!(w.state().failed.is_empty());
    // And the version that may well be fine is attempted again.
    assert_eq!(
        w.run(&s),
        Outcome::Upgraded {
            from: v("1.0.0+1.0.0"),
            to: v("1.1.0+1.0.0")
        }
    );
}

#[test]
fn a_corrupt_snapshot_alerts_once_and_later_ticks_leave_the_app_alone() {
    let (mut w, s) = on_1_1_with_a_broken_1_2_and_a_corrupt_snapshot();
    let out = w.run(&s);
    assert!(matches!(out, Outcome::NotRecovered { .. }), "{out:?}");
    assert_eq!(w.kinds(), [Kind::SnapshotCorrupt]);
    let alert = &w.alerts()[0];
    assert!(!alert.recovered);
    assert!(
        alert.message.contains("failed verification")
            && alert.message.contains("left undeployed")
            && !alert.message.contains("interrupted"),
        "{}",
        alert.message
    );
    assert_eq!(w.fake.deployed, None);

    // Later timer ticks: nothing touched, nothing alerted, nothing called interrupted.
    w.fake.log.clear();
    let verifies = w.fake.verifies;
    for _ in 0..3 {
        let out = w.run(&s);
        assert_eq!(out.exit_code(), exit::NOT_RECOVERED);
        assert_eq!(out.name(), "not-recovered");
        assert!(!out.to_string().contains("interrupted"), "{out}");
        assert!(out.to_string().contains("operator"), "{out}");
    }
    assert!(w.fake.log.is_empty(), "{:?}", w.fake.log);
    assert_eq!(w.fake.verifies, verifies, "not even re-verified");
    assert_eq!(w.kinds(), [Kind::SnapshotCorrupt], "alerted once");
    assert_eq!(w.fake.deployed, None, "still undeployed");

    // The operator brings a good snapshot back (`snapshot import`) and removes
    // `intent.stopped`: the next run finishes the rollback with the data.
    w.fake.corrupt_snapshot = false;
    let mut st = w.state();
    st.intent.as_mut().unwrap().stopped = None;
    st.save(&w.dir.path().join("demo")).unwrap();
    assert_eq!(w.run(&s), Outcome::Interrupted { recovered: true });
    assert_eq!(w.fake.deployed, Some(v("1.1.0+1.0.0")));
    assert_eq!(w.fake.volume, "marker by 1.0.0+1.0.0");
    assert!(w.state().intent.is_none());
}

#[test]
fn a_pre_release_is_skipped_not_held_unless_allowed() {
    let mut w = World::new(1);
    let s = spec(true);
    w.run(&s);
    w.fake.releases.push(("1.1.0+1.1.0-rc1".into(), None));
    assert_eq!(
        w.run(&s),
        Outcome::NoOp {
            version: v("1.0.0+1.0.0")
        }
    );
    let st = w.state();
    assert_eq!(
        st.skipped_prerelease.iter().collect::<Vec<_>>(),
        ["1.1.0+1.1.0-rc1"]
    );
    assert!(st.alerted_holds.is_empty());
    assert!(w.alerts().is_empty(), "{:?}", w.kinds());
    let allowed = AppSpec {
        allow_prerelease: true,
        ..spec(true)
    };
    assert_eq!(
        w.run(&allowed),
        Outcome::Upgraded {
            from: v("1.0.0+1.0.0"),
            to: v("1.1.0+1.1.0-rc1")
        }
    );
    assert!(w.state().skipped_prerelease.is_empty());
}

/// A canonical pinned to `version` (its registry entry).
fn canonical(version: &str) -> AppSpec {
    AppSpec {
        pinned: Some(v(version)),
        initial_version: Some(v(version)),
        canonical: true,
        ..spec(true)
    }
}

/// A canonical bootstrapped on 1.0.0 (known-good = its data), then drifted by a quick run.
fn drifted_canonical() -> World {
    let mut w = World::new(3);
    let out = w.run(&canonical("1.0.0+1.0.0"));
    assert_eq!(
        out,
        Outcome::Bootstrapped {
            version: v("1.0.0+1.0.0")
        }
    );
    assert_eq!(w.fake.log, ["deploy 1.0.0+1.0.0", "undeploy", "snapshot"]);
    assert_eq!(w.fake.deployed, None, "a canonical rests undeployed");
    assert_eq!(w.state().deployed, None);
    w.fake.volume = "pr data".into();
    w.fake.drift = true;
    w.fake.log.clear();
    w
}

fn journal(w: &World, step: Step, from: Option<&str>, to: &str, last_good: &str) {
    let mut st = w.state();
    st.last_good = Some(v(last_good));
    st.intent = Some(Intent {
        step,
        from: from.map(v),
        to: v(to),
        data_touched: true,
        started_at: "2026-11-22T00:00:00Z".into(),
        pid: 4242,
        stopped: None,
    });
    st.save(&w.dir.path().join("demo")).unwrap();
}

#[test]
fn a_canonical_upgrade_restores_the_drift_then_refreshes_the_known_good() {
    let mut w = drifted_canonical();
    let out = w.run(&canonical("1.1.0+1.0.0"));
    assert_eq!(
        out,
        Outcome::Upgraded {
            from: v("1.0.0+1.0.0"),
            to: v("1.1.0+1.0.0")
        }
    );
    assert_eq!(
        w.fake.log,
        [
            "undeploy",
            "restore",
            "undeploy",
            "snapshot",
            "deploy 1.1.0+1.0.0",
            "undeploy",
            "snapshot"
        ]
    );
    assert!(!w.fake.drift);
    assert_eq!(w.fake.deployed, None);
    assert_eq!(w.fake.snapshot.as_deref(), Some("marker by 1.0.0+1.0.0"));
    let st = w.state();
    assert_eq!((st.deployed, st.intent), (None, None));
    assert!(w.alerts().is_empty());
}

#[test]
fn a_failed_canonical_upgrade_ends_undeployed_with_its_known_good() {
    let mut w = drifted_canonical();
    w.fake.broken.insert("1.1.0+1.0.0".into());
    let out = w.run(&canonical("1.1.0+1.0.0"));
    assert_eq!(
        out,
        Outcome::RolledBack {
            attempted: v("1.1.0+1.0.0"),
            to: v("1.0.0+1.0.0")
        }
    );
    assert_eq!(
        w.fake.log[4..],
        ["deploy 1.1.0+1.0.0", "undeploy", "restore"]
    );
    assert_eq!(w.fake.deployed, None, "not redeployed");
    assert_eq!(w.fake.volume, "marker by 1.0.0+1.0.0");
    assert_eq!(w.fake.snapshot.as_deref(), Some("marker by 1.0.0+1.0.0"));
    let st = w.state();
    assert_eq!(st.deployed, None);
    assert_eq!(st.last_good, Some(v("1.0.0+1.0.0")));
    assert_eq!(w.kinds(), [Kind::RolledBack]);
    assert!(w.alerts()[0].message.contains("rests undeployed"));
}

#[test]
fn a_failed_drift_restore_alerts_once_and_is_retried() {
    let mut w = drifted_canonical();
    w.fake.fail_restore = true;
    let c = canonical("1.1.0+1.0.0");
    let out = w.run(&c);
    assert!(matches!(out, Outcome::Aborted { .. }), "{out:?}");
    assert_eq!(out.exit_code(), exit::FAILURE);
    assert!(!w.fake.log.iter().any(|l| l.starts_with("deploy")));
    assert_eq!(w.kinds(), [Kind::CanonicalRestoreFailed]);
    assert!(!w.alerts()[0].recovered);
    let intent = w.state().intent.unwrap();
    assert_eq!(intent.step, Step::RestoreKnownGood);
    assert!(intent.stopped.is_some());
    // Still failing: retried quietly.
    assert_eq!(w.run(&c), Outcome::Interrupted { recovered: false });
    assert_eq!(w.kinds().len(), 1);
    // Fixed: the next run finishes it and says so; the one after upgrades.
    w.fake.fail_restore = false;
    assert_eq!(w.run(&c), Outcome::Interrupted { recovered: true });
    assert_eq!(w.kinds(), [Kind::CanonicalRestoreFailed, Kind::Interrupted]);
    assert!(w.alerts()[1].recovered);
    assert!(!w.fake.drift);
    assert_eq!(w.fake.volume, "marker by 1.0.0+1.0.0");
    assert!(matches!(w.run(&c), Outcome::Upgraded { .. }));
}

#[test]
fn a_failed_known_good_refresh_alerts_and_the_next_run_finishes_it() {
    let mut w = drifted_canonical();
    w.fake.drift = false;
    w.fake.volume = "marker by 1.0.0+1.0.0".into();
    w.fake.fail_snapshot = true;
    let c = canonical("1.1.0+1.0.0");
    // The protective snapshot fails first: the upgrade is not attempted, nothing redeployed.
    let out = w.run(&c);
    assert!(matches!(out, Outcome::Aborted { .. }), "{out:?}");
    assert_eq!(w.fake.deployed, None);
    assert_eq!(w.kinds(), [Kind::SnapshotFailed]);
    // Now the protective snapshot works, the refresh's does not.
    w.fake.fail_snapshot = false;
    w.fake.broken.clear();
    struct FailSecond<'a>(&'a mut Fake, usize);
    impl Platform for FailSecond<'_> {
        fn releases(&mut self) -> anyhow::Result<Vec<Release>> {
            self.0.releases()
        }
        fn deploy(&mut self, v: &Version) -> anyhow::Result<()> {
            self.0.deploy(v)
        }
        fn undeploy(&mut self) -> anyhow::Result<()> {
            self.0.undeploy()
        }
        fn health(&mut self, v: &Version) -> anyhow::Result<Health> {
            self.0.health(v)
        }
        fn take_snapshot(&mut self, v: &Version) -> anyhow::Result<()> {
            self.1 += 1;
            self.0.fail_snapshot = self.1 == 2;
            self.0.take_snapshot(v)
        }
        fn verify_snapshot(&mut self) -> anyhow::Result<Verified> {
            self.0.verify_snapshot()
        }
        fn restore_snapshot(&mut self) -> anyhow::Result<()> {
            self.0.restore_snapshot()
        }
    }
    let out = Reconciler::new(&c, w.dir.path(), &mut FailSecond(&mut w.fake, 0))
        .unwrap()
        .run()
        .unwrap();
    assert!(matches!(out, Outcome::RefreshFailed { .. }), "{out:?}");
    assert_eq!(out.exit_code(), exit::FAILURE);
    assert_eq!(w.kinds()[1..], [Kind::CanonicalRefreshFailed]);
    let st = w.state();
    assert_eq!(st.last_good, Some(v("1.1.0+1.0.0")), "the upgrade passed");
    assert_eq!(st.intent.as_ref().unwrap().step, Step::RefreshKnownGood);
    // Still failing: quiet. Then fixed: finished, alerted `interrupted`, recovered.
    w.fake.fail_snapshot = true;
    assert_eq!(w.run(&c), Outcome::Interrupted { recovered: false });
    assert_eq!(w.kinds().len(), 2);
    w.fake.fail_snapshot = false;
    w.fake.volume = "marker by 1.1.0".into();
    assert_eq!(w.run(&c), Outcome::Interrupted { recovered: true });
    assert_eq!(w.fake.snapshot.as_deref(), Some("marker by 1.1.0"));
    assert_eq!(w.kinds()[2], Kind::Interrupted);
    let st = w.state();
    assert_eq!((st.deployed, st.intent), (None, None));
    assert_eq!(
        w.run(&c),
        Outcome::NoOp {
            version: v("1.1.0+1.0.0")
        }
    );
}

#[test]
fn a_kill_during_the_known_good_refresh_is_finished_not_rolled_back() {
    let mut w = drifted_canonical();
    w.fake.drift = false;
    // Killed after the gate passed on 1.1.0 and the undeploy, before the snapshot.
    w.fake.volume = "data of 1.1.0".into();
    journal(
        &w,
        Step::RefreshKnownGood,
        Some("1.0.0+1.0.0"),
        "1.1.0+1.0.0",
        "1.1.0+1.0.0",
    );
    let out = w.run(&canonical("1.1.0+1.0.0"));
    assert_eq!(out, Outcome::Interrupted { recovered: true });
    assert_eq!(w.fake.log, ["undeploy", "snapshot"]);
    assert_eq!(w.fake.snapshot.as_deref(), Some("data of 1.1.0"));
    assert_eq!(w.fake.volume, "data of 1.1.0");
    let st = w.state();
    assert_eq!(st.last_good, Some(v("1.1.0+1.0.0")));
    assert_eq!((st.deployed, st.intent), (None, None));
    assert_eq!(w.kinds(), [Kind::Interrupted]);
    assert!(w.alerts()[0].recovered);
}

#[test]
fn a_kill_during_the_drift_restore_is_finished_on_the_next_run() {
    let mut w = drifted_canonical();
    journal(
        &w,
        Step::RestoreKnownGood,
        Some("1.0.0+1.0.0"),
        "1.1.0+1.0.0",
        "1.0.0+1.0.0",
    );
    let out = w.run(&canonical("1.1.0+1.0.0"));
    assert_eq!(out, Outcome::Interrupted { recovered: true });
    assert_eq!(w.fake.log, ["undeploy", "restore"]);
    assert_eq!(w.fake.volume, "marker by 1.0.0+1.0.0");
    assert!(!w.fake.drift);
    assert_eq!(w.fake.deployed, None);
    assert_eq!(w.kinds(), [Kind::Interrupted]);
    assert!(w.state().intent.is_none());
}
