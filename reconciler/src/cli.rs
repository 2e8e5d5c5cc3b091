//! The command line, declared with clap's derive API, and its dispatch to `cmd`. Each command's
//! own arguments live beside its code in `cmd/`; nothing there imports this file.

use clap::{Parser, Subcommand};

use crate::cmd::{self, Global};

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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Inspect the config file.
    #[command(subcommand)]
    Config(cmd::config::ConfigCmd),
    /// Bring apps to their newest safe version through the health gate, rolling back on failure.
    Reconcile(cmd::reconcile::ReconcileArgs),
    /// Snapshots of an app's volumes, or of plain directories.
    #[command(subcommand)]
    Snapshot(cmd::snapshot::SnapshotCmd),
    /// Release a held (or earlier failed) version of an app through the safety gate.
    Approve(cmd::approve::ApproveArgs),
    /// Canonical deployments: list them, promote a cold run into the registry, rewarm one.
    #[command(subcommand)]
    Canonical(cmd::canonical::CanonicalCmd),
    /// The quick lane: upgrade the canonical's known-good data to a ref and run a test command.
    Quick(cmd::quick::QuickArgs),
    /// The nightly cold sweep: test enrolled recipes from scratch, promoting green runs.
    Sweep(cmd::sweep::SweepArgs),
    /// Alert files: list, acknowledge, or poll them for the CI's builder loop.
    #[command(subcommand)]
    Alerts(cmd::alerts::AlertsCmd),
    /// Per app: versions, health now, holds, last run, snapshot and pending alerts.
    Status(cmd::status::StatusArgs),
    /// Free-space watch (`disk-low` alerts) and pruning of what nothing reads any more.
    #[command(subcommand)]
    Disk(cmd::disk::DiskCmd),
    /// The upgrade base of a CI run, and the `previous/` overlay guard.
    #[command(subcommand)]
    Base(cmd::base::BaseCmd),
    /// Per-run Keycloak realms on the warm keycloak: create, delete, reap.
    #[command(subcommand)]
    Realm(cmd::realm::RealmCmd),
}

/// Runs a parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    let global = cli.global;
    match cli.command {
        Command::Config(c) => cmd::config::run(&global, c),
        Command::Approve(a) => cmd::approve::run(&global, a),
        Command::Canonical(c) => cmd::canonical::run(&global, c),
        Command::Quick(a) => cmd::quick::run(&global, a),
        Command::Sweep(a) => cmd::sweep::run(&global, a),
        Command::Reconcile(a) => cmd::reconcile::run(&global, a),
        Command::Snapshot(c) => cmd::snapshot::run(&global, c),
        Command::Alerts(c) => cmd::alerts::run(&global, c),
        Command::Status(a) => cmd::status::run(&global, a),
        Command::Disk(c) => cmd::disk::run(&global, c),
        Command::Base(c) => cmd::base::run(&global, c),
        Command::Realm(c) => cmd::realm::run(&global, c),
    }
}
