use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use ci_warm_snapshot as snapshot;
use clap::Subcommand;

use super::Global;
use crate::config::Config;
use crate::config::spec;
use crate::live::LivePlatform;
use crate::live::snap;
use crate::platform::exit::{self, Exit};
use crate::platform::lock;

pub fn run(global: &Global, cmd: SnapshotCmd) -> anyhow::Result<u8> {
    match cmd {
        SnapshotCmd::Dir(d) => dir(global, d),
        SnapshotCmd::Take { app } => with_app(global, &app, |p, cfg| {
            // The data on the volumes is the last good version's: its compose files say what
            // backup-bot excludes.
            let last_good = crate::upgrade::state::AppState::load(p.app_dir())?.last_good;
            let volumes = p.snapshot_volumes(last_good.as_ref())?;
            if volumes.is_empty() {
                bail!("app {app} has no volumes to snapshot (is the stack name right?)");
            }
            p.ensure_unused(&volumes)?;
            let reserve = snap::Reserve {
                bytes: cfg.snapshot.reserve_bytes,
                percent: cfg.snapshot.reserve_percent,
            };
            let summary = snap::take(p.app_dir(), &volumes, reserve)?;
            print(global, &summary, &format!("snapshot of {app} taken"))
        }),
        SnapshotCmd::Verify { app } => {
            let config = Config::load(&global.config)?;
            spec::plan(&config, &app).map_err(|e| Exit::new(exit::USAGE, e.to_string()))?;
            verify_dir(global, &snap::snapshot_dir(&config.state_dir.join(&app)))
        }
        SnapshotCmd::Export { app, output } => {
            let config = Config::load(&global.config)?;
            spec::plan(&config, &app).map_err(|e| Exit::new(exit::USAGE, e.to_string()))?;
            let dir = snap::snapshot_dir(&config.state_dir.join(&app));
            match output {
                Some(path) => {
                    let f = std::fs::File::create(&path)
                        .with_context(|| format!("creating {}", path.display()))?;
                    snapshot::export(&dir, std::io::BufWriter::new(f))?;
                    tracing::info!(app = %app, path = %path.display(), "exported");
                }
                None => snapshot::export(&dir, std::io::BufWriter::new(std::io::stdout().lock()))?,
            }
            Ok(exit::OK)
        }
        SnapshotCmd::Import { app, input, legacy } => {
            let config = Config::load(&global.config)?;
            spec::plan(&config, &app).map_err(|e| Exit::new(exit::USAGE, e.to_string()))?;
            let app_dir = config.state_dir.join(&app);
            let _lock = lock::acquire(&app_dir, &app, false)?;
            if legacy {
                let r = snapshot::import_legacy(&app_dir)
                    .with_context(|| format!("importing the prototype snapshot of app {app}"))?;
                let mut state = crate::upgrade::state::AppState::load(&app_dir)?;
                if state.last_good.is_none()
                    && let Some(v) = r.last_good.as_deref().and_then(|v| v.parse().ok())
                {
                    state.last_good = Some(v);
                    state.save(&app_dir)?;
                }
                return print(global, &r, &format!("prototype snapshot of {app} imported"));
            }
            match input {
                Some(path) => {
                    let f = std::fs::File::open(&path)
                        .with_context(|| format!("opening {}", path.display()))?;
                    snapshot::import(&app_dir, std::io::BufReader::new(f))?;
                }
                None => snapshot::import(&app_dir, std::io::stdin().lock())?,
            }
            print(
                global,
                &serde_json::json!({"app": app, "imported": true}),
                &format!("snapshot of {app} imported"),
            )
        }
        SnapshotCmd::Restore { app } => with_app(global, &app, |p, _| {
            let volumes = p.volumes()?;
            p.ensure_unused(&volumes)?;
            snap::restore(p.app_dir(), &volumes)?;
            print(
                global,
                &serde_json::json!({"app": app, "restored": true}),
                &format!("volumes of {app} restored"),
            )
        }),
    }
}

/// Takes the app's lock and builds its live platform (Docker connection included).
fn with_app(
    global: &Global,
    app: &str,
    f: impl FnOnce(&mut LivePlatform, &Config) -> anyhow::Result<u8>,
) -> anyhow::Result<u8> {
    let config = Config::load(&global.config)?;
    let plan = spec::plan(&config, app).map_err(|e| Exit::new(exit::USAGE, e.to_string()))?;
    let _lock = lock::acquire(&config.state_dir.join(app), app, false)?;
    let mut platform = LivePlatform::for_snapshots(&config, plan)?;
    f(&mut platform, &config)
}

fn dir(global: &Global, cmd: DirCmd) -> anyhow::Result<u8> {
    match cmd {
        DirCmd::Take {
            src,
            dest,
            name,
            reserve_bytes,
        } => {
            let request = snapshot::TakeRequest {
                parent: dest.clone(),
                sources: vec![(name, src)],
                reserve: snapshot::Reserve {
                    bytes: reserve_bytes,
                    percent: 0,
                },
            };
            let progress = crate::platform::progress::for_stderr("snapshot");
            let summary = snapshot::take_with_progress(&request, progress.as_ref())
                .with_context(|| format!("taking a snapshot into {}", dest.display()))?;
            print(
                global,
                &summary,
                &format!(
                    "snapshot published at {}",
                    dest.join(snapshot::SNAPSHOT).display()
                ),
            )
        }
        DirCmd::Verify { dest } => verify_dir(global, &snapshot_of(&dest)),
        DirCmd::Restore { dest, target, name } => {
            let dir = snapshot_of(&dest);
            let progress = crate::platform::progress::for_stderr("restore");
            let summary = snapshot::restore_with_progress(&dir, &name, &target, progress.as_ref())
                .with_context(|| {
                    format!("restoring {} onto {}", dir.display(), target.display())
                })?;
            print(
                global,
                &summary,
                &format!("{} restored onto {}", dir.display(), target.display()),
            )
        }
    }
}

/// Accepts the snapshot directory itself or the directory holding `snapshot/`.
fn snapshot_of(dest: &Path) -> PathBuf {
    if dest.join(snapshot::manifest::FILE).exists() {
        dest.to_owned()
    } else {
        dest.join(snapshot::SNAPSHOT)
    }
}

fn verify_dir(global: &Global, dir: &Path) -> anyhow::Result<u8> {
    let report = snapshot::verify(dir).with_context(|| format!("verifying {}", dir.display()))?;
    if global.json {
        super::print_json(&report)?;
    } else {
        for p in &report.problems {
            println!("{p}");
        }
        let gbps = report.bytes_hashed as f64 / (report.millis.max(1) as f64 / 1000.0) / 1e9;
        println!(
            "{}: {} entries, {} bytes hashed in {} ms ({gbps:.2} GB/s): {}",
            dir.display(),
            report.entries,
            report.bytes_hashed,
            report.millis,
            if report.problems.is_empty() {
                "ok".to_owned()
            } else {
                format!("{} problem(s)", report.problems.len())
            }
        );
    }
    Ok(if report.problems.is_empty() {
        exit::OK
    } else {
        exit::NOT_RECOVERED
    })
}

fn print<T: serde::Serialize>(global: &Global, value: &T, text: &str) -> anyhow::Result<u8> {
    if global.json {
        super::print_json(value)?;
    } else {
        println!("{text}");
        println!("{}", serde_json::to_string(value).unwrap_or_default());
    }
    Ok(exit::OK)
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCmd {
    /// Plain directories (tests, the benchmark, operators).
    #[command(subcommand)]
    Dir(DirCmd),
    /// Snapshot the app's volumes now (refused while any container uses them).
    Take { app: String },
    /// Recompute every hash of the app's snapshot and compare all metadata; exit 5 on a mismatch.
    Verify { app: String },
    /// Verify, then make the app's volumes identical to its snapshot (refused while in use).
    Restore { app: String },
    /// Stream the app's snapshot as a tar archive (to a file, or stdout).
    Export {
        app: String,
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Replace the app's snapshot with an exported archive (verified before it is published),
    /// or with `--legacy` convert the Python prototype's `<app>/snapshot/{meta.json,volumes/*.tar}`.
    Import {
        app: String,
        /// The archive (default: stdin).
        #[arg(long, short, conflicts_with = "legacy")]
        input: Option<PathBuf>,
        #[arg(long)]
        legacy: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DirCmd {
    /// Snapshot SRC into DEST/snapshot (atomically; incremental against the previous one).
    Take {
        src: PathBuf,
        dest: PathBuf,
        /// The volume name inside the snapshot.
        #[arg(long, default_value = "data")]
        name: String,
        /// Free bytes that must remain on DEST's filesystem.
        #[arg(long, default_value_t = 0)]
        reserve_bytes: u64,
    },
    /// Verify DEST/snapshot (or DEST itself when it holds manifest.json).
    Verify { dest: PathBuf },
    /// Verify, then make TARGET identical to the snapshot's volume.
    Restore {
        dest: PathBuf,
        target: PathBuf,
        #[arg(long, default_value = "data")]
        name: String,
    },
}
