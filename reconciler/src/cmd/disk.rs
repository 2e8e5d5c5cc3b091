//! `ci-warm disk check|prune`.

use clap::Subcommand;

use super::Global;
use crate::config::Config;
use crate::ops::status::short_bytes;
use crate::ops::{disk, prune};
use crate::platform::exit;

#[derive(Debug, Subcommand)]
pub enum DiskCmd {
    /// Free space of the state dir's and Docker's filesystems; a `disk-low` alert once per
    /// threshold crossing.
    Check,
    /// Remove stale `.tmp-*` leftovers, old acknowledged alerts and snapshots of apps no
    /// longer configured.
    Prune {
        /// List what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

pub fn run(global: &Global, cmd: DiskCmd) -> anyhow::Result<u8> {
    let config = Config::load(&global.config)?;
    match cmd {
        DiskCmd::Check => {
            let checked = disk::check(&config)?;
            // Keeps the free-space metrics as fresh as the check's timer, not the hourly reconcile.
            crate::ops::metrics::after_reconcile(&config, None, &[]);
            if global.json {
                super::print_json(&checked)?;
            } else {
                for c in &checked {
                    let paths: Vec<String> =
                        c.fs.paths.iter().map(|p| p.display().to_string()).collect();
                    println!(
                        "{}: {:.1}% free ({} of {}): {}{}",
                        paths.join(", "),
                        c.fs.free_percent,
                        short_bytes(c.fs.free_bytes),
                        short_bytes(c.fs.size_bytes),
                        c.level.as_str(),
                        c.alert
                            .as_ref()
                            .map(|a| format!(" (alert {a})"))
                            .unwrap_or_default()
                    );
                }
            }
            Ok(exit::OK)
        }
        DiskCmd::Prune { dry_run } => {
            let plan = prune::prune(&config, dry_run)?;
            if global.json {
                super::print_json(&serde_json::json!({
                    "dry_run": dry_run,
                    "items": plan.items,
                    "skipped": plan.skipped,
                }))?;
            } else {
                let verb = if dry_run { "would remove" } else { "removed" };
                for i in &plan.items {
                    println!(
                        "{verb} {} ({}, {})",
                        i.path.display(),
                        serde_json::to_value(i.what)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default(),
                        short_bytes(i.bytes)
                    );
                }
                for s in &plan.skipped {
                    println!("skipped app {}: {}", s.app, s.why);
                }
                let total: u64 = plan.items.iter().map(|i| i.bytes).sum();
                println!(
                    "{verb} {} item(s), {}",
                    plan.items.len(),
                    short_bytes(total)
                );
            }
            Ok(exit::OK)
        }
    }
}
