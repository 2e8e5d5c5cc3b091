//! One file per command group: each turns parsed arguments into calls of the library modules
//! and prints the result (text, or JSON with `--json`).

pub mod alerts;
mod approve;
pub mod base;
pub mod canonical;
mod config;
pub mod disk;
pub mod quick;
pub mod realm;
mod reconcile;
mod snapshot;
pub mod status;
pub mod sweep;

use crate::cli::{Cli, Command};

/// Runs a parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    let global = cli.global;
    match cli.command {
        Command::Config(c) => config::run(&global, c),
        Command::Approve(a) => approve::run(&global, a),
        Command::Canonical(c) => canonical::run(&global, c),
        Command::Quick(a) => quick::run(&global, a),
        Command::Sweep(a) => sweep::run(&global, a),
        Command::Reconcile(a) => reconcile::run(&global, a),
        Command::Snapshot(c) => snapshot::run(&global, c),
        Command::Alerts(c) => alerts::run(&global, c),
        Command::Status(a) => status::run(&global, a),
        Command::Disk(c) => disk::run(&global, c),
        Command::Base(c) => base::run(&global, c),
        Command::Realm(c) => realm::run(&global, c),
    }
}

/// Prints a value as pretty JSON on stdout.
pub(crate) fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    use anyhow::Context;
    let text = serde_json::to_string_pretty(value).context("serializing the output")?;
    println!("{text}");
    Ok(())
}
