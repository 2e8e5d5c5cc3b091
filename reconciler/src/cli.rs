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
                  5 not recovered, 75 busy (another run holds the app's lock)."
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
    /// Release a held (or earlier failed) version of an app through the safety gate.
    Approve(ApproveArgs),
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
}
