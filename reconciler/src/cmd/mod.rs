//! One file per command group: each turns parsed arguments into calls of the library modules
//! and prints the result (text, or JSON with `--json`).

mod approve;
mod config;
mod reconcile;
mod snapshot;

use crate::cli::{Cli, Command};

/// Runs a parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    let global = cli.global;
    match cli.command {
        Command::Config(c) => config::run(&global, c),
        Command::Approve(a) => approve::run(&global, a),
        Command::Reconcile(a) => reconcile::run(&global, a),
        Command::Snapshot(c) => snapshot::run(&global, c),
    }
}

/// Prints a value as pretty JSON on stdout.
pub(crate) fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    use anyhow::Context;
    let text = serde_json::to_string_pretty(value).context("serializing the output")?;
    println!("{text}");
    Ok(())
}
