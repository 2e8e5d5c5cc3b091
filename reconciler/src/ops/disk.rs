//! Disk watch: free space of the state dir's and Docker's filesystems against the configured
//! thresholds, alerting `disk-low` once per crossing.
//!
//! "Once per crossing" needs memory across runs: the level each watched path was last seen at
//! is kept in `<state_dir>/disk.json`. An alert is written only when a filesystem's level rises
//! above the level remembered for its paths; when space comes back the level drops, so the
//! next crossing alerts again.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::platform::atomic;
use crate::platform::host_lock;
use crate::upgrade::alert::{self, DiskAlert, Kind, NewAlert};

pub const LEVELS_SCHEMA: u32 = 1;
const LEVELS_FILE: &str = "disk.json";

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Default)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    #[default]
    Ok,
    Warn,
    Critical,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Critical => "critical",
        }
    }
}

/// One filesystem and the watched paths on it.
#[derive(Debug, Clone, Serialize)]
pub struct Filesystem {
    pub paths: Vec<PathBuf>,
    pub free_bytes: u64,
    pub size_bytes: u64,
    pub free_percent: f64,
    #[serde(skip)]
    dev: u64,
}

/// The paths `disk check` watches: the state dir and Docker's root.
pub fn watched(config: &Config) -> Vec<PathBuf> {
    let mut v = vec![config.state_dir.clone(), config.disk.docker_root.clone()];
    v.dedup();
    v
}

/// A path that does not exist yet will live on the filesystem of its nearest existing ancestor.
fn existing_ancestor(p: &Path) -> &Path {
    p.ancestors().find(|a| a.exists()).unwrap_or(Path::new("/"))
}

/// statvfs of every watched path, grouped by filesystem.
pub fn observe(config: &Config) -> anyhow::Result<Vec<Filesystem>> {
    let mut out: Vec<Filesystem> = Vec::new();
    for p in watched(config) {
        let at = existing_ancestor(&p);
        let dev = std::fs::metadata(at)
            .with_context(|| format!("stat {}", at.display()))?
            .dev();
        if let Some(f) = out.iter_mut().find(|f| f.dev == dev) {
            f.paths.push(p);
            continue;
        }
        let (free, total) = ci_warm_snapshot::free_and_total(at)
            .with_context(|| format!("statvfs of {} (for {})", at.display(), p.display()))?;
        let free_percent = if total == 0 {
            100.0
        } else {
            free as f64 * 100.0 / total as f64
        };
        out.push(Filesystem {
            paths: vec![p],
            free_bytes: free,
            size_bytes: total,
            free_percent,
            dev,
        });
    }
    Ok(out)
}

pub fn level_of(config: &Config, free_percent: f64) -> Level {
    if free_percent < f64::from(config.disk.critical_free_percent) {
        Level::Critical
    } else if free_percent < f64::from(config.disk.warn_free_percent) {
        Level::Warn
    } else {
        Level::Ok
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Levels {
    schema: u32,
    /// Watched path -> the level it was last seen at.
    levels: BTreeMap<String, Level>,
}

/// What `disk check` found for one filesystem.
#[derive(Debug, Clone, Serialize)]
pub struct Checked {
    #[serde(flatten)]
    pub fs: Filesystem,
    pub level: Level,
    /// The level remembered from the previous check.
    pub previous: Level,
    /// The `disk-low` alert written by this check, if it crossed a threshold.
    pub alert: Option<String>,
}

/// Checks every watched filesystem and alerts each new crossing once.
pub fn check(config: &Config) -> anyhow::Result<Vec<Checked>> {
    let state_dir = &config.state_dir;
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("creating the state dir {}", state_dir.display()))?;
    let _lock = host_lock::acquire(&state_dir.join("disk.lock"))?;
    let path = state_dir.join(LEVELS_FILE);
    let mut levels: Levels = match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .with_context(|| format!("parsing the disk levels {}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Levels::default(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut out = Vec::new();
    for fs in observe(config)? {
        let level = level_of(config, fs.free_percent);
        let previous = fs
            .paths
            .iter()
            .filter_map(|p| levels.levels.get(&p.to_string_lossy().into_owned()))
            .copied()
            .max()
            .unwrap_or_default();
        let mut alert_id = None;
        if level > previous {
            let threshold = match level {
                Level::Critical => config.disk.critical_free_percent,
                _ => config.disk.warn_free_percent,
            };
            let paths: Vec<String> = fs
                .paths
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            let message = format!(
                "{}: {:.1}% free ({} of {}), under the {} threshold of {threshold}%",
                paths.join(", "),
                fs.free_percent,
                crate::ops::status::short_bytes(fs.free_bytes),
                crate::ops::status::short_bytes(fs.size_bytes),
                level.as_str(),
            );
            let (a, apath) = alert::publish(
                state_dir,
                Kind::DiskLow,
                NewAlert {
                    app: "host".to_owned(),
                    message,
                    recovered: true,
                    disk: Some(DiskAlert {
                        level: level.as_str().to_owned(),
                        paths,
                        free_bytes: fs.free_bytes,
                        size_bytes: fs.size_bytes,
                        free_percent: (fs.free_percent * 100.0).round() / 100.0,
                        threshold_percent: threshold,
                    }),
                    ..NewAlert::default()
                },
            )?;
            alert::run_hook(config.alerts.on_alert.as_deref(), &apath);
            alert_id = Some(a.id);
        } else if level < previous {
            tracing::info!(paths = ?fs.paths, level = level.as_str(), "free space is back above a threshold");
        }
        for p in &fs.paths {
            levels
                .levels
                .insert(p.to_string_lossy().into_owned(), level);
        }
        out.push(Checked {
            fs,
            level,
            previous,
            alert: alert_id,
        });
    }
    levels.schema = LEVELS_SCHEMA;
    atomic::write_json(&path, &levels, 0o640)?;
    Ok(out)
}
