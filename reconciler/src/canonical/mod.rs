//! Canonical deployments: the registry, cold-only promotion, the canonical lifecycle (here), the
//! quick lane, rewarm, the nightly sweep and run results. May import: `live`, `config`, `upgrade`, `platform`.
//!
//! A recipe's canonical deployment (`warm-<recipe>`): which version it is kept on, and how its
//! known-good data is kept honest around upgrades.
//!
//! The target is the registry's version once a green cold run promoted one, else the config's
//! `canonicals.<recipe>.version`; with neither the canonical waits for its first promotion.
//!
//! The known-good snapshot (`<app>/snapshot`) is the canonical's data *at its last good version*:
//! the quick lane restores it before every run and never changes it. So a canonical upgrade
//! (1) first restores the known-good when a quick run left the volumes drifted (otherwise the
//! upgrade's protective snapshot would capture a PR's data), (2) runs the usual health-gated,
//! snapshot-protected state machine, and (3) after a successful upgrade or bootstrap undeploys
//! and snapshots again, so the known-good moves to the new version. (1) and (3) are journaled
//! steps of that state machine (`AppSpec::canonical`; this module only tells it about the drift
//! marker), so they are alerted on failure and finished after a kill. A canonical then rests
//! undeployed, also after a failed upgrade; a quick run deploys it for the run's duration.

pub mod promote;
pub mod quick;
pub mod registry;
pub mod results;
pub mod rewarm;
pub mod sweep;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::canonical::registry::{Entry, Registry};
use crate::config::spec::{self, AppPlan};
use crate::config::{self, Config};
use crate::live::LivePlatform;
use crate::platform::exit;
use crate::platform::lock;
use crate::upgrade::reconcile::{Outcome, Platform, Reconciler, Verified};
use crate::upgrade::state::AppState;
use crate::upgrade::version::Version;

/// Written before a quick run touches the volumes; removed once they equal the known-good again.
pub const DRIFT_FILE: &str = "drift.json";

/// Where a canonical's target version comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Registry,
    Config,
}

/// The version a canonical should be on, and why.
pub fn target(
    config: &Config,
    recipe: &str,
    registry: &Registry,
) -> anyhow::Result<Option<(Version, Source)>> {
    if let Some(entry) = registry.get(recipe) {
        let v = entry.version.parse::<Version>().with_context(|| {
            format!(
                "the canonical registry's version {:?} of recipe {recipe} is not a version",
                entry.version
            )
        })?;
        return Ok(Some((v, Source::Registry)));
    }
    let configured = config
        .canonicals
        .get(recipe)
        .and_then(|c| c.version.as_deref());
    // The config was validated on load.
    Ok(configured
        .and_then(|v| v.parse().ok())
        .map(|v| (v, Source::Config)))
}

/// The canonical's own gate holds its target: it stays on its last good version (what its
/// known-good holds, and what `base resolve` answers) until the hold is approved.
pub use crate::upgrade::state::PinnedHold as Hold;

/// The hold of `recipe`'s canonical on its current target, if its gate holds it (reads the
/// registry's target and the canonical's state; no lock, no Docker).
pub fn hold(config: &Config, recipe: &str, registry: &Registry) -> anyhow::Result<Option<Hold>> {
    let Some((target, _)) = target(config, recipe, registry)? else {
        return Ok(None);
    };
    let app = config::canonical_app_name(recipe);
    let state = AppState::load(&config.state_dir.join(&app))
        .with_context(|| format!("reading the state of canonical {app}"))?;
    Ok(state.pinned_hold(&target, &approved(config, recipe)))
}

/// The versions the config approves for `recipe`'s canonical.
fn approved(config: &Config, recipe: &str) -> BTreeSet<Version> {
    config
        .canonicals
        .get(recipe)
        .map(|c| c.approved.iter().filter_map(|v| v.parse().ok()).collect())
        .unwrap_or_default()
}

/// Why the volumes drifted from the known-good.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Drift {
    pub at: String,
    /// The ref a quick run deployed on the volumes.
    pub r#ref: String,
    pub run: Option<String>,
    /// Whether the run that drifted the volumes finished (passed and undeployed). An
    /// unfinished drift found under the lock means that run died mid-way, possibly leaving the
    /// ref deployed: the next reconcile restores the known-good. (Absent in older files: unfinished,
    /// which only costs one restore.)
    #[serde(default)]
    pub finished: bool,
    /// A failure to restore the known-good was already alerted: later reconciles keep retrying
    /// the restore but do not repeat the alert.
    #[serde(default)]
    pub alerted: bool,
}

pub fn mark_drift(app_dir: &Path, drift: &Drift) -> anyhow::Result<()> {
    let path = app_dir.join(DRIFT_FILE);
    crate::platform::atomic::write_json(&path, drift, 0o640)
        .with_context(|| format!("recording that the volumes drift ({})", path.display()))
}

pub fn drift(app_dir: &Path) -> anyhow::Result<Option<Drift>> {
    let path = app_dir.join(DRIFT_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
            format!("{} is corrupt; remove it by hand", path.display())
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Records that a failed restore was alerted, so retries stay quiet until one succeeds.
pub fn drift_alerted(app_dir: &Path) {
    let marked = drift(app_dir).and_then(|d| match d {
        Some(mut d) => {
            d.alerted = true;
            mark_drift(app_dir, &d)
        }
        None => Ok(()),
    });
    if let Err(e) = marked {
        tracing::warn!(app_dir = %app_dir.display(), "cannot record the alert in the drift marker: {e:#}");
    }
}

/// Marks the drift as left by a run that finished (the volumes stay drifted, nothing deployed).
pub fn finish_drift(app_dir: &Path) -> anyhow::Result<()> {
    if let Some(mut d) = drift(app_dir)? {
        d.finished = true;
        mark_drift(app_dir, &d)?;
    }
    Ok(())
}

pub fn clear_drift(app_dir: &Path) -> anyhow::Result<()> {
    let path = app_dir.join(DRIFT_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => crate::platform::atomic::sync_dir(app_dir)
            .with_context(|| format!("syncing {}", app_dir.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

/// Undeploys, verifies the known-good and restores it onto the volumes. A corrupt snapshot is
/// never restored.
pub fn restore_known_good(platform: &mut LivePlatform) -> anyhow::Result<()> {
    let app = platform.plan.spec.name.clone();
    platform
        .undeploy()
        .with_context(|| format!("undeploying {app} before restoring its known-good"))?;
    match platform.verify_snapshot()? {
        Verified::Ok => {}
        Verified::Missing => bail!("{app} has no known-good snapshot to restore"),
        // Typed, so callers tell a corrupt known-good from a failed restore without parsing text.
        Verified::Corrupt(problems) => {
            return Err(
                anyhow::Error::new(crate::upgrade::reconcile::SnapshotCorrupt(problems))
                    .context(format!("the known-good snapshot of {app}")),
            );
        }
    }
    platform
        .restore_snapshot()
        .with_context(|| format!("restoring the known-good of {app}"))?;
    clear_drift(platform.app_dir())
}

/// Undeploys and snapshots the volumes as the new known-good; the canonical rests undeployed.
pub fn refresh_known_good(platform: &mut LivePlatform, version: &Version) -> anyhow::Result<()> {
    let app = platform.plan.spec.name.clone();
    platform
        .undeploy()
        .with_context(|| format!("undeploying {app} to snapshot its known-good"))?;
    let app_dir = platform.app_dir().to_owned();
    let mut state = AppState::load(&app_dir)?;
    platform
        .take_snapshot(version)
        .with_context(|| format!("snapshotting the known-good of {app}"))?;
    clear_drift(&app_dir)?;
    state.deployed = None;
    state
        .save(&app_dir)
        .with_context(|| format!("saving the state of app {app}"))
}

/// What `reconcile` did to one canonical: (outcome name, detail, exit code).
pub type Report = (String, String, u8);

/// Reconciles one canonical (the caller resolved its plan; this takes the app lock).
pub fn reconcile(
    config: &Config,
    mut plan: AppPlan,
    wait: bool,
    snapshot: &mut Option<ci_warm_snapshot::Summary>,
) -> anyhow::Result<Report> {
    let recipe = plan.canonical_of.clone().context("not a canonical app")?;
    let app = plan.spec.name.clone();
    let app_dir = config.state_dir.join(&app);
    let _lock = lock::acquire(&app_dir, &app, wait)?;
    let registry = Registry::load(&config.state_dir)?;
    let Some((version, source)) = target(config, &recipe, &registry)? else {
        return Ok((
            "unseeded".to_owned(),
            format!(
                "{app}: no canonical version yet; the first green cold run (`ci-warm canonical promote`) seeds it"
            ),
            exit::OK,
        ));
    };
    tracing::info!(app = %app, %version, source = ?source, "canonical target");
    plan.spec.pinned = Some(version.clone());
    plan.spec.initial_version = Some(version.clone());
    let spec = plan.spec.clone();
    let state = AppState::load(&app_dir)?;
    let mut platform = LivePlatform::new(config, plan)?;
    if let Some(d) = drift(&app_dir)?
        && !d.finished
    {
        if has_known_good(&app_dir) {
            return Ok(recover_interrupted(
                config,
                &recipe,
                &state,
                &mut platform,
                &d,
            ));
        }
        // Only a rewarm of a canonical that never had a known-good gets here: there is nothing
        // to return to, so the usual reconcile (bootstrap) takes over.
        tracing::warn!(app = %app, r#ref = %d.r#ref, "an interrupted run left no known-good to restore; reconciling as usual");
        clear_drift(&app_dir)?;
    }
    let outcome = Reconciler::new(&spec, &config.state_dir, &mut Canonical(&mut platform))?.run();
    // The last snapshot taken is the known-good when the run refreshed it.
    *snapshot = platform.last_snapshot.take();
    let outcome = outcome?;
    Ok((
        outcome.name().to_owned(),
        outcome.to_string(),
        outcome.exit_code(),
    ))
}

/// The live platform of a canonical, with its drift marker (`drift.json`) for the state machine.
struct Canonical<'a>(&'a mut LivePlatform);

impl Platform for Canonical<'_> {
    fn releases(&mut self) -> anyhow::Result<Vec<crate::upgrade::gate::Release>> {
        self.0.releases()
    }
    fn deploy(&mut self, version: &Version) -> anyhow::Result<()> {
        self.0.deploy(version)
    }
    fn undeploy(&mut self) -> anyhow::Result<()> {
        self.0.undeploy()
    }
    fn health(&mut self, version: &Version) -> anyhow::Result<crate::upgrade::reconcile::Health> {
        self.0.health(version)
    }
    fn take_snapshot(&mut self, version: &Version) -> anyhow::Result<()> {
        self.0.take_snapshot(version)
    }
    fn verify_snapshot(&mut self) -> anyhow::Result<Verified> {
        self.0.verify_snapshot()
    }
    fn restore_snapshot(&mut self) -> anyhow::Result<()> {
        self.0.restore_snapshot()
    }
    fn drifted(&mut self) -> anyhow::Result<bool> {
        Ok(drift(self.0.app_dir())?.is_some())
    }
    fn drift_cleared(&mut self) -> anyhow::Result<()> {
        clear_drift(self.0.app_dir())
    }
}

/// A quick run (or rewarm) died mid-way: the volumes may hold a PR's data and its ref may still
/// be deployed at the canonical's domain. Put the known-good back, leave it undeployed, and
/// alert `interrupted` (a failed restore only once: later reconciles retry it quietly).
fn recover_interrupted(
    config: &Config,
    recipe: &str,
    state: &AppState,
    platform: &mut LivePlatform,
    d: &Drift,
) -> Report {
    let app = platform.plan.spec.name.clone();
    let app_dir = platform.app_dir().to_owned();
    let run = d.run.as_deref().unwrap_or("-");
    tracing::warn!(app = %app, r#ref = %d.r#ref, run, "an interrupted run left the volumes drifted; restoring the known-good");
    let restored = restore_known_good(platform).and_then(|()| {
        let mut s = AppState::load(&app_dir)?;
        s.deployed = None;
        s.save(&app_dir)
            .with_context(|| format!("saving the state of app {app}"))
    });
    let what = format!(
        "a run on {} (run {run}, started {}) did not finish",
        d.r#ref, d.at
    );
    let (message, error) = match &restored {
        Ok(()) => (
            format!("{app}: {what}; the known-good is restored and the canonical undeployed"),
            Vec::new(),
        ),
        Err(e) => (
            format!("{app}: {what}; restoring the known-good FAILED: {e:#}"),
            vec![format!("{e:#}")],
        ),
    };
    let new = crate::upgrade::alert::NewAlert {
        app: app.clone(),
        recipe: Some(recipe.to_owned()),
        message: message.clone(),
        last_good: state.last_good.as_ref().map(ToString::to_string),
        attempted: Some(d.r#ref.clone()),
        recovered: restored.is_ok(),
        error,
        ..crate::upgrade::alert::NewAlert::default()
    };
    if restored.is_ok() || !d.alerted {
        match crate::upgrade::alert::publish(
            &config.state_dir,
            crate::upgrade::alert::Kind::Interrupted,
            new,
        ) {
            Ok((_, path)) => {
                crate::upgrade::alert::run_hook(config.alerts.on_alert.as_deref(), &path);
                if restored.is_err() {
                    drift_alerted(&app_dir);
                }
            }
            Err(e) => tracing::error!(app = %app, "cannot write the alert: {e:#}"),
        }
    }
    let outcome = Outcome::Interrupted {
        recovered: restored.is_ok(),
    };
    (outcome.name().to_owned(), message, outcome.exit_code())
}

/// One line of `canonical list`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Row {
    pub recipe: String,
    pub app: String,
    /// Whether the config enrolls the recipe (a registry entry may outlive its enrollment).
    pub enrolled: bool,
    pub domain: Option<String>,
    pub stack: Option<String>,
    pub registry: Option<Entry>,
    pub config_version: Option<String>,
    /// The version the canonical's reconcile aims at.
    pub target: Option<String>,
    pub target_source: Option<Source>,
    pub last_good: Option<String>,
    pub deployed: Option<String>,
    /// Whether a known-good snapshot exists.
    pub known_good: bool,
    /// The quick run that left the volumes different from the known-good, if any.
    pub drift: Option<Drift>,
    /// Set when the canonical's own gate holds `target`: it stays on `last_good`.
    pub hold: Option<Hold>,
}

/// Every enrolled recipe and every registry entry.
pub fn list(config: &Config) -> anyhow::Result<Vec<Row>> {
    let registry = Registry::load(&config.state_dir)?;
    let mut recipes: Vec<String> = config.canonicals.keys().cloned().collect();
    for r in registry.canonicals.keys() {
        if !recipes.contains(r) {
            recipes.push(r.clone());
        }
    }
    recipes.sort();
    let plans = spec::plans(config);
    recipes
        .into_iter()
        .map(|recipe| {
            let app = config::canonical_app_name(&recipe);
            let app_dir = config.state_dir.join(&app);
            let plan = plans
                .iter()
                .find(|p| p.canonical_of.as_deref() == Some(recipe.as_str()));
            let state = AppState::load(&app_dir)?;
            let target = target(config, &recipe, &registry)?;
            let hold = target
                .as_ref()
                .and_then(|(v, _)| state.pinned_hold(v, &approved(config, &recipe)));
            Ok(Row {
                hold,
                enrolled: config.canonicals.contains_key(&recipe),
                domain: plan.map(|p| p.domain.clone()),
                stack: plan.map(|p| p.stack.clone()),
                registry: registry.get(&recipe).cloned(),
                config_version: config
                    .canonicals
                    .get(&recipe)
                    .and_then(|c| c.version.clone()),
                target: target.as_ref().map(|(v, _)| v.to_string()),
                target_source: target.map(|(_, s)| s),
                last_good: state.last_good.as_ref().map(ToString::to_string),
                deployed: state.deployed.clone(),
                known_good: known_good_path(&app_dir).exists(),
                drift: drift(&app_dir)?,
                recipe,
                app,
            })
        })
        .collect()
}

fn known_good_path(app_dir: &Path) -> PathBuf {
    crate::live::snap::snapshot_dir(app_dir).join("manifest.json")
}

/// Whether the app has a published known-good snapshot.
pub fn has_known_good(app_dir: &Path) -> bool {
    known_good_path(app_dir).exists()
}

/// RFC 3339 UTC, seconds.
pub fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(state_dir: &Path, version: Option<&str>) -> Config {
        let json = serde_json::json!({
            "state_dir": state_dir,
            "ci_domain": "ci.example.org",
            "canonicals": {"demo": {"version": version}, "other": {}},
        });
        Config::parse(Path::new("test.json"), &json.to_string()).unwrap()
    }

    fn entry(v: &str) -> Entry {
        Entry {
            version: v.into(),
            commit: "abcdef0".into(),
            promoted_at: "2026-11-23T00:00:00Z".into(),
            run: Some("7".into()),
            mode: "cold".into(),
        }
    }

    #[test]
    fn registry_wins_over_config_and_nothing_means_unseeded() {
        let d = tempfile::tempdir().unwrap();
        let c = config(d.path(), Some("1.0.0+1.0.0"));
        let mut r = Registry::default();
        let (v, s) = target(&c, "demo", &r).unwrap().unwrap();
        assert_eq!((v.to_string().as_str(), s), ("1.0.0+1.0.0", Source::Config));
        assert!(target(&c, "other", &r).unwrap().is_none());
        r.canonicals.insert("demo".into(), entry("1.1.0+1.0.0"));
        let (v, s) = target(&c, "demo", &r).unwrap().unwrap();
        assert_eq!(
            (v.to_string().as_str(), s),
            ("1.1.0+1.0.0", Source::Registry)
        );
    }

    #[test]
    fn list_shows_enrolled_and_orphaned_entries() {
        let d = tempfile::tempdir().unwrap();
        let c = config(d.path(), None);
        let mut r = Registry::default();
        r.canonicals.insert("demo".into(), entry("1.1.0+1.0.0"));
        r.canonicals.insert("gone".into(), entry("2.0.0+2.0.0"));
        r.save(d.path()).unwrap();
        let rows = list(&c).unwrap();
        let names: Vec<(&str, bool)> = rows
            .iter()
            .map(|r| (r.recipe.as_str(), r.enrolled))
            .collect();
        assert_eq!(names, [("demo", true), ("gone", false), ("other", true)]);
        assert_eq!(rows[0].target.as_deref(), Some("1.1.0+1.0.0"));
        assert_eq!(rows[0].domain.as_deref(), Some("warm-demo.ci.example.org"));
        assert_eq!(rows[2].target, None);
        assert!(!rows[0].known_good);
    }

    #[test]
    fn an_unseeded_canonical_is_left_alone() {
        let d = tempfile::tempdir().unwrap();
        let c = config(d.path(), None);
        let plan = spec::plan(&c, "warm-other").unwrap();
        let (outcome, detail, code) = reconcile(&c, plan, false, &mut None).unwrap();
        assert_eq!((outcome.as_str(), code), ("unseeded", exit::OK));
        assert!(detail.contains("canonical promote"), "{detail}");
        assert!(!d.path().join("warm-other/state.json").exists());
    }

    #[test]
    fn drift_marker_round_trips_and_clears() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(drift(d.path()).unwrap(), None);
        let mut m = Drift {
            at: now(),
            r#ref: "feature".into(),
            run: Some("9".into()),
            finished: false,
            alerted: false,
        };
        mark_drift(d.path(), &m).unwrap();
        assert_eq!(drift(d.path()).unwrap(), Some(m.clone()));
        finish_drift(d.path()).unwrap();
        m.finished = true;
        assert_eq!(drift(d.path()).unwrap(), Some(m));
        // A marker without the field (older files) reads as unfinished: the safe side.
        std::fs::write(
            d.path().join(DRIFT_FILE),
            r#"{"at":"2026-11-23T00:00:00Z","ref":"x","run":null}"#,
        )
        .unwrap();
        assert!(!drift(d.path()).unwrap().unwrap().finished);
        clear_drift(d.path()).unwrap();
        clear_drift(d.path()).unwrap();
        assert_eq!(drift(d.path()).unwrap(), None);
    }
}
