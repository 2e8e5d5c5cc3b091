//! `disk prune`: removes what nothing will ever read again — stale `.tmp-*` leftovers of killed
//! runs, acknowledged alerts older than `disk.prune_seen_alerts_days`, and the snapshots of apps
//! no longer in the config. The snapshot of a configured app is never a candidate: it is the
//! only copy of that app's known-good data.
//!
//! The same [`plan`] serves `--dry-run` and the real run, so a dry run lists exactly what the
//! real one removes. App directories are only touched under the app's lock (a busy app is
//! skipped and reported), which makes every `.tmp-*` directory in them (a snapshot in progress)
//! stale by definition; a `.tmp-*` file, there or elsewhere, counts as stale after an hour
//! (those are single-file writes lasting milliseconds, not all under the app's lock).
//!
//! Nothing under the state dir is followed through a symlink: an app directory, `alerts/` or
//! `alerts/seen/` that is a symlink is skipped with a warning (it could point anywhere on the
//! host), and every removal re-checks that no directory between the state dir and the item has
//! become a symlink since it was planned.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use serde::Serialize;

use crate::config::spec;
use crate::config::{Config, canonical_app_name};
use crate::ops::relay;
use crate::platform::atomic;
use crate::platform::lock::{self, AppLock, LockError};

/// Age after which a `.tmp-*` outside app directories is stale.
pub const TMP_GRACE: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum What {
    StaleTmp,
    SeenAlert,
    UnconfiguredSnapshot,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Item {
    pub path: PathBuf,
    pub what: What,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Skipped {
    pub app: String,
    pub why: String,
}

#[derive(Debug, Serialize)]
pub struct Plan {
    pub items: Vec<Item>,
    pub skipped: Vec<Skipped>,
    #[serde(skip)]
    _locks: Vec<AppLock>,
}

fn is_tmp(name: &std::ffi::OsStr) -> bool {
    name.to_string_lossy().starts_with(atomic::TMP_PREFIX)
}

fn older_than(p: &Path, age: Duration, now: SystemTime) -> bool {
    std::fs::symlink_metadata(p)
        .and_then(|m| m.modified())
        .is_ok_and(|t| now.duration_since(t).is_ok_and(|d| d >= age))
}

/// Bytes under `p`, each inode counted once.
fn size_of(p: &Path) -> u64 {
    let mut seen = BTreeSet::new();
    let mut total = 0;
    let mut stack = vec![p.to_owned()];
    while let Some(p) = stack.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if m.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.filter_map(|e| e.ok().map(|e| e.path())));
            }
        } else if seen.insert((m.dev(), m.ino())) {
            total += m.len();
        }
    }
    total
}

fn entries(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    match std::fs::read_dir(dir) {
        Ok(rd) => {
            let mut v = Vec::new();
            for e in rd {
                v.push(
                    e.with_context(|| format!("listing {}", dir.display()))?
                        .path(),
                );
            }
            Ok(v)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("listing {}", dir.display())),
    }
}

/// Whether `dir` is a real directory (not a symlink to one); a symlink is reported in
/// `skipped` (as `what`) and logged, never followed.
fn real_dir(dir: &Path, what: &str, skipped: &mut Vec<Skipped>) -> bool {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() => {
            let target = std::fs::read_link(dir)
                .map(|t| t.display().to_string())
                .unwrap_or_else(|e| format!("unreadable: {e}"));
            tracing::warn!(path = %dir.display(), %target,
                "not pruning under a symlink: ci-warm never follows a symlink under the state dir");
            skipped.push(Skipped {
                app: what.to_owned(),
                why: format!(
                    "{} is a symlink (to {target}); ci-warm never follows a symlink under the state dir",
                    dir.display()
                ),
            });
            false
        }
        Ok(m) => m.is_dir(),
        Err(_) => false,
    }
}

/// Whether every directory between `state_dir` and `p` (exclusive) is still a real directory.
fn no_symlink_between(state_dir: &Path, p: &Path) -> bool {
    let Ok(rel) = p.strip_prefix(state_dir) else {
        return false;
    };
    let mut dir = state_dir.to_owned();
    let parts: Vec<_> = rel.components().collect();
    for c in parts.iter().take(parts.len().saturating_sub(1)) {
        dir.push(c);
        if !std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
            return false;
        }
    }
    true
}

/// Everything `prune` would remove now. The returned plan holds the locks of the app
/// directories it looked into until it is dropped.
pub fn plan(config: &Config) -> anyhow::Result<Plan> {
    let state_dir = &config.state_dir;
    let now = SystemTime::now();
    let plans = spec::plans(config);
    // Straight from the config, not only from the plans: a canonical's snapshot lives under
    // `warm-<recipe>`, and an app must count as configured even if its plan could not be made.
    let mut configured: BTreeSet<String> = plans.iter().map(|p| p.spec.name.clone()).collect();
    configured.extend(config.apps.keys().cloned());
    configured.extend(config.canonicals.keys().map(|r| canonical_app_name(r)));
    let mut items = Vec::new();
    let mut skipped = Vec::new();
    let mut locks = Vec::new();
    let mut add = |path: PathBuf, what| {
        let bytes = size_of(&path);
        items.push(Item { path, what, bytes });
    };

    // Single-file writes: the state dir itself, alerts/, alerts/seen/.
    let alerts = crate::upgrade::alert::alerts_dir(state_dir);
    let seen = relay::seen_dir(state_dir);
    let alerts_real = real_dir(&alerts, "alerts", &mut skipped);
    let seen_real = alerts_real && real_dir(&seen, "alerts/seen", &mut skipped);
    for (dir, real) in [
        (state_dir.as_path(), true),
        (alerts.as_path(), alerts_real),
        (seen.as_path(), seen_real),
    ] {
        if !real {
            continue;
        }
        for p in entries(dir)? {
            if p.file_name().is_some_and(is_tmp) && older_than(&p, TMP_GRACE, now) {
                add(p, What::StaleTmp);
            }
        }
    }
    let seen_age = Duration::from_secs(u64::from(config.disk.prune_seen_alerts_days) * 86400);
    for p in entries(&seen)?.into_iter().filter(|_| seen_real) {
        let is_alert = p.extension().is_some_and(|e| e == "json")
            && !p.file_name().is_some_and(is_tmp)
            && p.is_file();
        if is_alert && older_than(&p, seen_age, now) {
            add(p, What::SeenAlert);
        }
    }

    // App directories: a configured one, or any other that holds app state.
    let mut apps: Vec<String> = configured.iter().cloned().collect();
    apps.extend(
        crate::ops::status::unconfigured_app_dirs(state_dir, &plans)?
            .into_iter()
            .filter(|a| !configured.contains(a)),
    );
    for app in apps {
        let app_dir = state_dir.join(&app);
        if !real_dir(&app_dir, &app, &mut skipped) {
            continue;
        }
        match lock::acquire(&app_dir, &app, false) {
            Ok(l) => locks.push(l),
            Err(LockError::Busy { .. }) => {
                skipped.push(Skipped {
                    app,
                    why: "busy: a run holds its lock".to_owned(),
                });
                continue;
            }
            Err(e) => return Err(e.into()),
        }
        for p in entries(&app_dir)? {
            // Directories (snapshots in progress) are written under the app's lock, which
            // prune holds; a single file may not be (`counters.json` is written under the
            // metrics lock), so it gets the grace period.
            let stale = p.file_name().is_some_and(is_tmp)
                && (std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir())
                    || older_than(&p, TMP_GRACE, now));
            if stale {
                add(p, What::StaleTmp);
            }
        }
        if !configured.contains(app.as_str()) {
            for name in ["snapshot", "legacy-snapshot"] {
                let p = app_dir.join(name);
                if p.exists() {
                    add(p, What::UnconfiguredSnapshot);
                }
            }
        }
    }
    items.sort();
    Ok(Plan {
        items,
        skipped,
        _locks: locks,
    })
}

/// Removes one item. A directory is first renamed to a `.tmp-` name, so a prune killed halfway
/// leaves a leftover the next prune sweeps, never a half-deleted `snapshot/` that looks real.
fn remove(item: &Item) -> anyhow::Result<()> {
    let p = &item.path;
    let meta = match std::fs::symlink_metadata(p) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("stat {}", p.display())),
    };
    if !meta.is_dir() {
        return std::fs::remove_file(p).with_context(|| format!("removing {}", p.display()));
    }
    let target = if p.file_name().is_some_and(is_tmp) {
        p.clone()
    } else {
        let parent = p.parent().unwrap_or(Path::new("/"));
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
        let t = parent.join(format!(
            "{}pruned-{}.{}",
            atomic::TMP_PREFIX,
            name.unwrap_or_default(),
            std::process::id()
        ));
        std::fs::rename(p, &t).with_context(|| format!("moving {} aside", p.display()))?;
        atomic::sync_dir(parent).with_context(|| format!("fsyncing {}", parent.display()))?;
        t
    };
    std::fs::remove_dir_all(&target).with_context(|| format!("removing {}", target.display()))
}

/// Removes what [`plan`] lists (nothing with `dry_run`); returns the plan.
pub fn prune(config: &Config, dry_run: bool) -> anyhow::Result<Plan> {
    let plan = plan(config)?;
    if !dry_run {
        for item in &plan.items {
            if !no_symlink_between(&config.state_dir, &item.path) {
                tracing::warn!(path = %item.path.display(),
                    "not removed: a directory on its path became a symlink since it was planned");
                continue;
            }
            remove(item)?;
            tracing::info!(path = %item.path.display(), what = ?item.what, "pruned");
        }
    }
    Ok(plan)
}
