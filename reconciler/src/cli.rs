//! The command line, declared with clap's derive API; `main.rs` dispatches on it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::DEFAULT_CONFIG_PATH;

#[derive(Debug, Parser)]
#[command(
    name = "ci-warm",
    version,
    about = "Keeps a CI host's warm Co-op Cloud deployments current without losing their data",
    long_about = None,
    after_help = "Exit codes: 0 ok/no-op, 1 error, 2 usage or config error, 4 rolled back and recovered, \
                  5 not recovered, 69 no canonical for `quick` (run cold), 75 busy (another run holds the app's lock)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// The JSON config file.
    #[arg(long, global = true, env = "CI_WARM_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// Print machine-readable JSON on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// More log output on stderr (-v debug, -vv trace); `CI_WARM_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Inspect the config file.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Bring apps to their newest safe version through the health gate, rolling back on failure.
    Reconcile(ReconcileArgs),
    /// Snapshots of an app's volumes, or of plain directories.
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
    /// Release a held (or earlier failed) version of an app through the safety gate.
    Approve(ApproveArgs),
    /// Canonical deployments: list them, promote a cold run into the registry, rewarm one.
    #[command(subcommand)]
    Canonical(crate::cmd::canonical::CanonicalCmd),
    /// The quick lane: upgrade the canonical's known-good data to a ref and run a test command.
    Quick(crate::cmd::quick::QuickArgs),
    /// The nightly cold sweep: test enrolled recipes from scratch, promoting green runs.
    Sweep(crate::cmd::sweep::SweepArgs),
    /// Alert files: list, acknowledge, or poll them for the CI's builder loop.
    #[command(subcommand)]
    Alerts(crate::cmd::alerts::AlertsCmd),
    /// Per app: versions, health now, holds, last run, snapshot and pending alerts.
    Status(crate::cmd::status::StatusArgs),
    /// Free-space watch (`disk-low` alerts) and pruning of what nothing reads any more.
    #[command(subcommand)]
    Disk(crate::cmd::disk::DiskCmd),
    /// The upgrade base of a CI run, and the `previous/` overlay guard.
    #[command(subcommand)]
    Base(crate::cmd::base::BaseCmd),
    /// Per-run Keycloak realms on the warm keycloak: create, delete, reap.
    #[command(subcommand)]
    Realm(crate::cmd::realm::RealmCmd),
}

#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// The app (`warm-<recipe>` for a canonical).
    pub app: String,
    /// The version to let through, e.g. `2.0.0+2.0.0`.
    pub version: String,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Validate a config file and print it normalized (defaults filled in).
    Check {
        /// The file to check; defaults to --config.
        file: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// Apps to reconcile, by name (`warm-<recipe>` for a canonical).
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub apps: Vec<String>,
    /// Reconcile every configured app.
    #[arg(long)]
    pub all: bool,
    /// Wait for an app's lock instead of exiting 75 (busy) at once.
    #[arg(long)]
    pub wait: bool,
    /// Write the Prometheus textfile-collector file here after the run (overrides the
    /// config's `metrics_file`).
    #[arg(long)]
    pub metrics_file: Option<PathBuf>,
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
