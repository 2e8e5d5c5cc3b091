//! The Prometheus textfile-collector file, rewritten atomically after every reconcile.
//!
//! Every app has its own systemd unit, so each reconcile renders the file for *all* apps from
//! the state dir, not just for the app it ran. Counters must survive between processes: each
//! run adds to `<state_dir>/<app>/counters.json` under a host-wide lock, and the file is
//! rendered from those. Names follow the Prometheus conventions (`ci_warm_` prefix, base units,
//! `_total` for counters, `_seconds`, `_bytes`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::ops::disk;
use crate::ops::status::{self, Status};
use crate::platform::atomic;
use crate::platform::host_lock;

pub const COUNTERS_SCHEMA: u32 = 1;
const COUNTERS_FILE: &str = "counters.json";

/// What ci-warm's own runs of one app add up to; `<state_dir>/<app>/counters.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Counters {
    pub schema: u32,
    /// Reconcile runs by outcome (`upgraded`, `rolled-back`, `held`, `error`, ...).
    #[serde(default)]
    pub runs: BTreeMap<String, u64>,
    #[serde(default)]
    pub upgrades: u64,
    /// Rollbacks to last_good: after a failed gate, or of an interrupted run.
    #[serde(default)]
    pub rollbacks: u64,
    pub last: Option<LastRun>,
    pub snapshot: Option<SnapshotRun>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LastRun {
    /// Unix seconds.
    pub at: u64,
    pub outcome: String,
    pub exit: u8,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRun {
    pub at: u64,
    pub millis: u64,
    pub bytes_copied: u64,
    pub bytes_reused: u64,
}

/// One finished reconcile of one app, as the command saw it.
#[derive(Debug, Clone)]
pub struct RunFact {
    pub app: String,
    pub outcome: String,
    pub exit: u8,
    pub snapshot: Option<ci_warm_snapshot::Summary>,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn lock_path(state_dir: &Path) -> PathBuf {
    state_dir.join("metrics.lock")
}

pub fn load_counters(app_dir: &Path) -> anyhow::Result<Counters> {
    let path = app_dir.join(COUNTERS_FILE);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .with_context(|| format!("parsing the run counters {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Counters {
            schema: COUNTERS_SCHEMA,
            ..Counters::default()
        }),
        Err(e) => Err(e).with_context(|| format!("reading the run counters {}", path.display())),
    }
}

/// Adds one run to the app's counters. A busy run did nothing and is not counted.
pub fn record_run(state_dir: &Path, fact: &RunFact) -> anyhow::Result<()> {
    if fact.outcome == "busy" {
        return Ok(());
    }
    let _lock = host_lock::acquire(&lock_path(state_dir))?;
    let app_dir = state_dir.join(&fact.app);
    let mut c = load_counters(&app_dir)?;
    c.schema = COUNTERS_SCHEMA;
    *c.runs.entry(fact.outcome.clone()).or_default() += 1;
    match fact.outcome.as_str() {
        "upgraded" => c.upgrades += 1,
        "rolled-back" | "interrupted" => c.rollbacks += 1,
        _ => {}
    }
    let at = now_unix();
    c.last = Some(LastRun {
        at,
        outcome: fact.outcome.clone(),
        exit: fact.exit,
    });
    if let Some(s) = &fact.snapshot {
        c.snapshot = Some(SnapshotRun {
            at,
            millis: s.millis,
            bytes_copied: s.bytes_copied,
            bytes_reused: s.bytes_reused,
        });
    }
    std::fs::create_dir_all(&app_dir).with_context(|| format!("creating {}", app_dir.display()))?;
    atomic::write_json(&app_dir.join(COUNTERS_FILE), &c, 0o640)?;
    Ok(())
}

/// Records the runs and rewrites the metrics file (`override_path`, else the config's), if
/// any. Metrics are an observer: a failure here is logged and never changes a run's result.
pub fn after_reconcile(config: &Config, override_path: Option<&Path>, facts: &[RunFact]) {
    for f in facts {
        if let Err(e) = record_run(&config.state_dir, f) {
            tracing::warn!(app = %f.app, "cannot record the run for the metrics: {e:#}");
        }
    }
    if let Some(path) = override_path.or(config.metrics_file.as_deref())
        && let Err(e) = write(config, path)
    {
        tracing::warn!(path = %path.display(), "cannot write the metrics file: {e:#}");
    }
}

/// Renders the metrics of every app and writes them atomically to `path` (mode 0644: the
/// node exporter reads it).
pub fn write(config: &Config, path: &Path) -> anyhow::Result<()> {
    let _lock = host_lock::acquire(&lock_path(&config.state_dir))?;
    let status = status::collect(config, status::Options::default())?;
    let mut counters = BTreeMap::new();
    for a in &status.apps {
        counters.insert(
            a.app.clone(),
            load_counters(&config.state_dir.join(&a.app)).unwrap_or_else(|e| {
                tracing::warn!(app = %a.app, "{e:#}");
                Counters::default()
            }),
        );
    }
    let filesystems = disk::observe(config).unwrap_or_else(|e| {
        tracing::warn!("cannot observe free disk space: {e:#}");
        Vec::new()
    });
    let text = render(&status, &counters, &filesystems);
    atomic::write(path, text.as_bytes(), 0o644)
        .with_context(|| format!("writing the metrics file {}", path.display()))?;
    Ok(())
}

/// Escapes a label value per the text exposition format.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    samples: Vec<(String, f64)>,
}

impl Family {
    fn new(name: &'static str, kind: &'static str, help: &'static str) -> Family {
        Family {
            name,
            kind,
            help,
            samples: Vec::new(),
        }
    }
    fn add(&mut self, labels: &[(&str, &str)], value: f64) {
        let l: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", label(v)))
            .collect();
        self.samples.push((l.join(","), value));
    }
}

fn rfc3339_unix(s: &str) -> Option<u64> {
    humantime::parse_rfc3339_weak(s)
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
}

/// The text exposition format for the given state.
pub fn render(
    status: &Status,
    counters: &BTreeMap<String, Counters>,
    filesystems: &[disk::Filesystem],
) -> String {
    let mut info = Family::new(
        "ci_warm_app_info",
        "gauge",
        "Always 1; labels carry the app's recipe, last good and deployed version.",
    );
    let mut last_ts = Family::new(
        "ci_warm_last_run_timestamp_seconds",
        "gauge",
        "Unix time of the app's last reconcile.",
    );
    let mut last_ok = Family::new(
        "ci_warm_last_run_success",
        "gauge",
        "1 when the app's last reconcile exited 0 (no-op, upgrade, bootstrap or hold), else 0.",
    );
    let mut last_exit = Family::new(
        "ci_warm_last_run_exit_code",
        "gauge",
        "Exit code of the app's last reconcile (docs/cli.md).",
    );
    let mut last_outcome = Family::new(
        "ci_warm_last_run_outcome",
        "gauge",
        "1 for the outcome of the app's last reconcile.",
    );
    let mut runs = Family::new(
        "ci_warm_runs_total",
        "counter",
        "Reconcile runs by outcome.",
    );
    let mut upgrades = Family::new(
        "ci_warm_upgrades_total",
        "counter",
        "Upgrades that passed their health gate.",
    );
    let mut rollbacks = Family::new(
        "ci_warm_rollbacks_total",
        "counter",
        "Rollbacks to the last good version (failed gate or interrupted run).",
    );
    let mut held = Family::new(
        "ci_warm_held_versions",
        "gauge",
        "Versions held by the safety gate, waiting for approval.",
    );
    let mut failed = Family::new(
        "ci_warm_failed_versions",
        "gauge",
        "Versions that failed their gate and are skipped until approved.",
    );
    let mut interrupted = Family::new(
        "ci_warm_interrupted",
        "gauge",
        "1 while the app's journal holds an unfinished step.",
    );
    let mut snap_bytes = Family::new(
        "ci_warm_snapshot_size_bytes",
        "gauge",
        "Content bytes of the app's snapshot.",
    );
    let mut snap_ts = Family::new(
        "ci_warm_snapshot_timestamp_seconds",
        "gauge",
        "Unix time the app's snapshot was taken.",
    );
    let mut snap_ok = Family::new(
        "ci_warm_snapshot_manifest_ok",
        "gauge",
        "1 when the snapshot's manifest is intact (digest and volume trees), else 0.",
    );
    let mut snap_dur = Family::new(
        "ci_warm_snapshot_duration_seconds",
        "gauge",
        "How long the app's last snapshot by reconcile took.",
    );
    let mut snap_copied = Family::new(
        "ci_warm_snapshot_copied_bytes",
        "gauge",
        "Bytes the app's last snapshot copied (the rest was reused from the previous one).",
    );
    let mut pending = Family::new(
        "ci_warm_pending_alerts",
        "gauge",
        "New (unacknowledged) alerts, by app; `host` for host-wide ones.",
    );
    let mut fs_free = Family::new(
        "ci_warm_filesystem_free_bytes",
        "gauge",
        "Bytes available to unprivileged users on the filesystem of a watched path.",
    );
    let mut fs_size = Family::new(
        "ci_warm_filesystem_size_bytes",
        "gauge",
        "Size of the filesystem of a watched path.",
    );

    let mut pending_by_app: BTreeMap<&str, usize> = BTreeMap::new();
    for a in &status.apps {
        let app = a.app.as_str();
        info.add(
            &[
                ("app", app),
                ("recipe", a.recipe.as_deref().unwrap_or("")),
                ("last_good", a.last_good.as_deref().unwrap_or("")),
                ("deployed", a.deployed.as_deref().unwrap_or("")),
                ("configured", if a.configured { "true" } else { "false" }),
            ],
            1.0,
        );
        let c = counters.get(app).cloned().unwrap_or_default();
        let last = c.last.clone().or_else(|| {
            a.last_run.as_ref().and_then(|r| {
                Some(LastRun {
                    at: rfc3339_unix(&r.at)?,
                    outcome: r.outcome.clone(),
                    exit: u8::from(!matches!(
                        r.outcome.as_str(),
                        "no-op" | "bootstrapped" | "upgraded" | "held"
                    )),
                })
            })
        });
        if let Some(l) = &last {
            last_ts.add(&[("app", app)], l.at as f64);
            last_ok.add(&[("app", app)], f64::from(u8::from(l.exit == 0)));
            last_exit.add(&[("app", app)], f64::from(l.exit));
            last_outcome.add(&[("app", app), ("outcome", &l.outcome)], 1.0);
        }
        for (outcome, n) in &c.runs {
            runs.add(&[("app", app), ("outcome", outcome)], *n as f64);
        }
        upgrades.add(&[("app", app)], c.upgrades as f64);
        rollbacks.add(&[("app", app)], c.rollbacks as f64);
        held.add(&[("app", app)], a.held.len() as f64);
        failed.add(&[("app", app)], a.failed.len() as f64);
        interrupted.add(&[("app", app)], f64::from(u8::from(a.intent.is_some())));
        if let Some(s) = &a.snapshot {
            snap_bytes.add(&[("app", app)], s.bytes as f64);
            if let Some(t) = s.created {
                snap_ts.add(&[("app", app)], t as f64);
            }
            snap_ok.add(&[("app", app)], f64::from(u8::from(s.verified.ok)));
        }
        if let Some(s) = &c.snapshot {
            snap_dur.add(&[("app", app)], s.millis as f64 / 1000.0);
            snap_copied.add(&[("app", app)], s.bytes_copied as f64);
        }
        pending_by_app.insert(app, a.pending_alerts.len());
    }
    let per_app: usize = pending_by_app.values().sum();
    pending_by_app.insert("host", status.pending_alerts.saturating_sub(per_app));
    for (app, n) in pending_by_app {
        pending.add(&[("app", app)], n as f64);
    }
    for f in filesystems {
        for p in &f.paths {
            let p = p.to_string_lossy();
            fs_free.add(&[("path", &p)], f.free_bytes as f64);
            fs_size.add(&[("path", &p)], f.size_bytes as f64);
        }
    }

    let mut out = String::new();
    for fam in [
        info,
        last_ts,
        last_ok,
        last_exit,
        last_outcome,
        runs,
        upgrades,
        rollbacks,
        held,
        failed,
        interrupted,
        snap_bytes,
        snap_ts,
        snap_ok,
        snap_dur,
        snap_copied,
        pending,
        fs_free,
        fs_size,
    ] {
        if fam.samples.is_empty() {
            continue;
        }
        let _ = writeln!(out, "# HELP {} {}", fam.name, fam.help);
        let _ = writeln!(out, "# TYPE {} {}", fam.name, fam.kind);
        for (labels, v) in fam.samples {
            let _ = writeln!(out, "{}{{{labels}}} {v}", fam.name);
        }
    }
    out
}
